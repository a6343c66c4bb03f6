"""The update cycle and daemon loop, against an in-memory backend (and a real bus for locks)."""

from __future__ import annotations

import errno
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyostree.errors import NoSpaceError, NotFoundError, SignatureError
from pyostree.updater.config import parse_reboot_policy
from pyostree.updater.exitcodes import ExitCode
from pyostree.updater.inhibit import Logind
from pyostree.updater.service import RunOptions
from pyostree.updater.status import load_status

from .updater_support import (
    UNREACHABLE,
    MemoryBackend,
    Rig,
    inhibitor_holder,
    logind_bus,
    make_commit,
    make_updater,
    write_script,
)

V1, V2, V3 = make_commit(1), make_commit(2), make_commit(3)


@pytest.fixture(autouse=True)
def _no_system_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", UNREACHABLE)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig.booted_on(tmp_path, V1)


def test_one_shot_update(rig: Rig) -> None:
    rig.backend.publish(V2)
    outcome = rig.updater.run_cycle()
    assert (outcome.code, outcome.result) == (ExitCode.OK, "updated")
    assert outcome.booted == V1.csum and outcome.pending == V2.csum
    assert [c[0] for c in rig.backend.calls] == ["remote_commit", "pull", "deploy"]
    assert rig.backend.calls[-1] == ("deploy", "testos", V2.csum, "origin:os/stable")
    assert rig.reboot_count() == 1
    deps = rig.backend.deployments()
    assert [d.csum for d in deps] == [V2.csum, V1.csum] and deps[1].booted
    status = load_status(rig.status_file)
    assert status.last_result == "updated" and status.last_check is not None
    assert (status.current, status.pending, status.available) == (V1.csum, V2.csum, V2.csum)
    assert status.awaiting_boot_check == V2.csum


def test_nothing_to_do(rig: Rig) -> None:
    rig.backend.publish(V1)
    outcome = rig.updater.run_cycle()
    assert (outcome.code, outcome.result) == (ExitCode.OK, "nothing-to-do")
    assert rig.backend.count("pull") == rig.backend.count("deploy") == 0
    assert rig.reboot_count() == 0
    assert json.loads(rig.status_file.read_text())["last_result"] == "nothing-to-do"


def test_check_only_reports_without_changing_anything(rig: Rig) -> None:
    check = RunOptions(check_only=True)
    rig.backend.publish(V1)
    assert rig.updater.run_cycle(check).code == ExitCode.NO_UPDATE
    rig.backend.publish(V2)
    outcome = rig.updater.run_cycle(check)
    assert (outcome.code, outcome.result, outcome.available) == (
        ExitCode.OK, "update-available", V2.csum)
    assert rig.backend.count("pull") == rig.backend.count("deploy") == 0
    rig.updater.run_cycle(RunOptions(no_reboot=True))
    assert rig.updater.run_cycle(check).code == ExitCode.REBOOT_REQUIRED
    rig.backend.publish(make_commit(0))
    assert rig.updater.run_cycle(check).code == ExitCode.DOWNGRADE_REFUSED


def test_idempotent_pending_deployment_is_not_redeployed(rig: Rig) -> None:
    hook_record = rig.tmp / "hook.calls"
    write_script(rig.tmp / "hooks/post-apply.d/10-record", f'echo "$1 $2" >> "{hook_record}"')
    rig.backend.publish(V2)
    opts = RunOptions(no_reboot=True)
    first = rig.updater.run_cycle(opts)
    assert (first.code, first.result) == (ExitCode.REBOOT_REQUIRED, "reboot-required")
    second = rig.fresh().run_cycle(opts)
    assert second.code == ExitCode.REBOOT_REQUIRED and second.pending == V2.csum
    assert rig.backend.count("pull") == 1 and rig.backend.count("deploy") == 1
    old, new = hook_record.read_text().split()
    assert Path(old).name == f"{V1.csum}.0" and Path(new).name == f"{V2.csum}.0"
    assert Path(new).is_dir()
    # a later run that may reboot reboots into the pending deployment without redoing anything
    third = rig.fresh().run_cycle()
    assert third.result == "updated" and rig.reboot_count() == 1
    assert rig.backend.count("deploy") == 1
    assert len(hook_record.read_text().splitlines()) == 1


def test_downgrade_is_refused(rig: Rig) -> None:
    rig.backend.publish(make_commit(0))
    outcome = rig.updater.run_cycle()
    assert (outcome.code, outcome.result) == (ExitCode.DOWNGRADE_REFUSED, "downgrade-refused")
    assert rig.backend.count("pull") == 0 and rig.reboot_count() == 0


def test_retries_with_backoff_when_the_server_is_down(rig: Rig) -> None:
    rig.backend.publish(V2)
    rig.backend.fail_next = 2
    outcome = rig.fresh(retries=5, retry_delay=1, retry_max_delay=3).run_cycle(
        RunOptions(no_reboot=True))
    assert outcome.code == ExitCode.REBOOT_REQUIRED
    assert rig.backend.count("remote_commit") == 3
    assert rig.sleeps == [1, 2]


def test_gives_up_with_network_exit_code(rig: Rig) -> None:
    rig.backend.publish(V2)
    rig.backend.fail_next = 100
    outcome = rig.fresh(retries=4, retry_delay=1, retry_max_delay=3).run_cycle()
    assert (outcome.code, outcome.result) == (ExitCode.NETWORK, "failed")
    assert rig.backend.count("remote_commit") == 4
    assert rig.sleeps == [1, 2, 3]
    assert load_status(rig.status_file).last_result == "failed"


def test_not_found_is_not_retried(rig: Rig) -> None:
    outcome = rig.updater.run_cycle()  # the server has no such ref: 404
    assert outcome.code == ExitCode.NETWORK
    assert rig.backend.count("remote_commit") == 1 and rig.sleeps == []


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NoSpaceError("disk full"), ExitCode.NO_SPACE),
        (OSError(errno.ENOSPC, "No space left on device"), ExitCode.NO_SPACE),
        (SignatureError("bad signature"), ExitCode.VERIFICATION),
        (NotFoundError("gone", status=404), ExitCode.NETWORK),
    ],
)
def test_failures_map_to_exit_codes(rig: Rig, error: Exception, code: ExitCode) -> None:
    rig.backend.publish(V2)

    def fail() -> None:
        raise error

    rig.backend.on_deploy = fail
    outcome = rig.updater.run_cycle()
    assert (outcome.code, outcome.result) == (code, "failed")
    assert rig.reboot_count() == 0


def test_fetch_only_then_apply_only(rig: Rig) -> None:
    rig.backend.publish(V2)
    fetched = rig.updater.run_cycle(RunOptions(fetch_only=True))
    assert (fetched.code, fetched.result) == (ExitCode.OK, "fetched")
    assert rig.backend.count("deploy") == 0 and rig.backend.local_commit("origin", "os/stable")
    calls = rig.backend.count("remote_commit")
    rig.backend.fail_next = 100  # no network from here on
    applied = rig.updater.run_cycle(RunOptions(apply_only=True))
    assert applied.result == "updated" and rig.reboot_count() == 1
    assert rig.backend.count("remote_commit") == calls


def test_failing_post_apply_hook_blocks_the_reboot(rig: Rig) -> None:
    hook = write_script(rig.tmp / "hooks/post-apply.d/50-firmware", "exit 5")
    rig.backend.publish(V2)
    outcome = rig.updater.run_cycle()
    assert (outcome.code, outcome.result) == (ExitCode.HOOK_FAILED, "failed")
    assert "50-firmware failed (exit code 5)" in outcome.message
    assert rig.reboot_count() == 0
    # once the hook is fixed, the next run re-runs it and reboots, without redeploying
    write_script(hook, "exit 0")
    outcome = rig.fresh().run_cycle()
    assert outcome.result == "updated" and rig.reboot_count() == 1
    assert rig.backend.count("deploy") == 1


def test_rolled_back_commit_is_not_redeployed(rig: Rig) -> None:
    rig.updater._save(rolled_back={V2.csum: "2024-05-01T00:00:00+00:00"})
    rig.backend.publish(V2)
    outcome = rig.fresh().run_cycle()
    assert (outcome.code, outcome.result) == (ExitCode.OK, "skipped-rolled-back")
    assert rig.backend.count("pull") == 0 and rig.backend.count("deploy") == 0
    rig.backend.publish(V3)  # a fixed release goes through
    assert rig.updater.run_cycle().result == "updated"


def test_reboot_policies(rig: Rig) -> None:
    rig.backend.publish(V2)
    outcome = rig.fresh(reboot=parse_reboot_policy("none")).run_cycle()
    assert outcome.code == ExitCode.REBOOT_REQUIRED and "policy is none" in outcome.message
    outcome = rig.fresh(reboot=parse_reboot_policy("02:00-04:00")).run_cycle()
    assert outcome.code == ExitCode.REBOOT_REQUIRED and "maintenance window" in outcome.message
    assert rig.reboot_count() == 0
    outcome = rig.fresh(reboot=parse_reboot_policy("11:00-13:00")).run_cycle()
    assert outcome.result == "updated" and rig.reboot_count() == 1


def test_daemon_waits_for_the_window(rig: Rig) -> None:
    rig.backend.publish(V2)
    updater = rig.fresh(reboot=parse_reboot_policy("13:30-14:00"))
    outcome = updater.run_daemon(interval=300, max_cycles=1)
    assert outcome.result == "updated" and rig.reboot_count() == 1
    assert 5400 in rig.sleeps  # 12:00 -> 13:30


def test_daemon_loop_with_splay(rig: Rig) -> None:
    updater = rig.fresh(splay=60)
    rig.backend.publish(V1)
    seen: list[str] = []

    def after_cycle(outcome: Any) -> None:
        seen.append(outcome.result)
        if len(seen) == 2:
            rig.backend.publish(V2)  # a release appears between checks

    outcome = updater.run_daemon(interval=300, on_outcome=after_cycle, max_cycles=10)
    assert seen == ["nothing-to-do", "nothing-to-do", "updated"]
    assert outcome.result == "updated" and rig.reboot_count() == 1
    splays = rig.sleeps[0::2]
    assert rig.sleeps[1::2] == [300, 300]
    assert all(0 <= s <= 60 for s in splays) and len(set(splays)) == 3


def test_daemon_stops_on_request(rig: Rig) -> None:
    rig.updater.stop.set()
    outcome = rig.updater.run_daemon(interval=300)
    assert (outcome.code, outcome.result) == (ExitCode.OK, "stopped")
    assert rig.backend.calls == []


def test_no_origin_remote_cannot_check(tmp_path: Path) -> None:
    backend = MemoryBackend.booted_on(tmp_path, V1, refspec="os/stable")
    updater = make_updater(tmp_path, backend, [])
    outcome = updater.run_cycle(RunOptions(check_only=True))
    assert outcome.code == ExitCode.USAGE
    assert updater.run_cycle().result == "nothing-to-do"  # the local ref is the booted commit


@pytest.fixture
def bus() -> Iterator[Any]:
    with logind_bus() as b:
        yield b


def test_lock_held_while_deploying_and_reboot_waits_for_others(rig: Rig, bus: Any) -> None:
    seen_during_deploy: list[Any] = []
    rig.backend.on_deploy = lambda: seen_during_deploy.extend(
        Logind(bus.address).list_inhibitors())
    rig.backend.publish(V2)
    updater = rig.fresh(dbus_address=bus.address)
    updater._sleep = updater.stop.wait  # type: ignore[method-assign,assignment]  # real waits
    result: list[Any] = []
    with inhibitor_holder(bus.address) as holder:
        thread = threading.Thread(target=lambda: result.append(updater.run_cycle()))
        thread.start()
        deadline = time.monotonic() + 5
        while rig.backend.count("deploy") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        assert rig.backend.count("deploy") == 1
        assert rig.reboot_count() == 0, "rebooted while a shutdown inhibitor was held"
        assert holder.stdin is not None
        holder.stdin.close()
        thread.join(10)
    assert not thread.is_alive()
    assert result[0].result == "updated" and rig.reboot_count() == 1
    ours = [i for i in seen_during_deploy if i.who == "pyostree-update"]
    assert len(ours) == 1 and ours[0].mode == "block" and ours[0].what == "shutdown"
    events = [json.loads(line) for line in bus.log.read_text().splitlines()]
    assert [(e["event"], e["who"]) for e in events if e["who"] == "pyostree-update"] == [
        ("inhibit", "pyostree-update"), ("release", "pyostree-update")]
