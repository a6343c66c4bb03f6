"""Post-boot health check: mark good, roll back once, never loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyostree.updater.config import parse_reboot_policy
from pyostree.updater.exitcodes import ExitCode
from pyostree.updater.service import RunOptions
from pyostree.updater.status import load_status

from .updater_support import UNREACHABLE, Rig, make_commit, write_script

V1, V2, V3 = make_commit(1), make_commit(2), make_commit(3)


@pytest.fixture(autouse=True)
def _no_system_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", UNREACHABLE)


@pytest.fixture
def updated(tmp_path: Path) -> Rig:
    """Booted V1, updated to V2, rebooted: the boot loader now runs V2."""
    rig = Rig.booted_on(tmp_path, V1)
    rig.backend.publish(V2)
    assert rig.updater.run_cycle().result == "updated"
    assert rig.reboot_count() == 1
    rig.backend.reboot()
    assert rig.backend.deployments()[0].booted
    rig.fresh()
    return rig


def _required(rig: Rig, body: str) -> Path:
    return write_script(rig.tmp / "health/required.d/10-service", body)


def test_healthy_new_deployment_is_marked_good(updated: Rig) -> None:
    record = updated.tmp / "post-check.calls"
    _required(updated, "exit 0")
    write_script(updated.tmp / "hooks/post-update-check.d/10-report",
                 f'echo "$1 $2" >> "{record}"')
    outcome = updated.updater.run_boot_check()
    assert (outcome.code, outcome.result, outcome.booted) == (ExitCode.OK, "healthy", V2.csum)
    assert updated.backend.count("boot_complete") == 1
    assert updated.backend.count("set_default") == 0
    old, new = record.read_text().split()
    assert Path(old).name == f"{V1.csum}.0" and Path(new).name == f"{V2.csum}.0"
    status = load_status(updated.status_file)
    assert status.good == V2.csum and status.awaiting_boot_check is None
    # post-update-check hooks run only on the first boot of a deployment
    assert updated.fresh().run_boot_check().result == "healthy"
    assert len(record.read_text().splitlines()) == 1
    assert updated.backend.count("boot_complete") == 2


def test_failing_required_check_rolls_back_exactly_once(updated: Rig) -> None:
    _required(updated, "exit 1")
    write_script(updated.tmp / "health/wanted.d/10-optional", "exit 0")
    outcome = updated.updater.run_boot_check()
    assert (outcome.code, outcome.result) == (ExitCode.ROLLED_BACK, "rolled-back")
    assert updated.backend.calls.count(("set_default", 1)) == 1
    assert [d.csum for d in updated.backend.deployments()] == [V1.csum, V2.csum]
    assert updated.reboot_count() == 2  # the update's reboot, then the rollback's
    assert updated.backend.count("boot_complete") == 0
    status = load_status(updated.status_file)
    assert list(status.rolled_back) == [V2.csum]

    # Second boot, into V1. The check still fails (it is broken in general): no loop.
    updated.backend.reboot()
    outcome = updated.fresh().run_boot_check()
    assert (outcome.code, outcome.result) == (ExitCode.HEALTH_FAILED, "unhealthy")
    assert updated.backend.count("set_default") == 1
    assert updated.reboot_count() == 2

    # The server still offers V2: it is not deployed again.
    updated.backend.publish(V2)
    assert updated.updater.run_cycle().result == "skipped-rolled-back"
    assert updated.backend.count("deploy") == 1


def test_booting_the_bad_deployment_again_does_not_loop(updated: Rig) -> None:
    _required(updated, "exit 1")
    assert updated.updater.run_boot_check().code == ExitCode.ROLLED_BACK
    updated.backend.reboot(1)  # the boot loader ignores the new default and starts V2 again
    outcome = updated.fresh().run_boot_check()
    assert (outcome.code, outcome.result) == (ExitCode.HEALTH_FAILED, "unhealthy")
    assert updated.backend.count("set_default") == 1 and updated.reboot_count() == 2


def test_boot_tries_ran_out(tmp_path: Path) -> None:
    """We rebooted into V2, but the boot loader fell back to V1 (boot counting)."""
    rig = Rig.booted_on(tmp_path, V1)
    rig.backend.publish(V2)
    assert rig.updater.run_cycle().result == "updated"
    rig.backend.reboot(1)  # V2 stays the default entry, V1 runs
    outcome = rig.fresh().run_boot_check()
    assert (outcome.code, outcome.result, outcome.booted) == (
        ExitCode.ROLLED_BACK, "rolled-back", V1.csum)
    assert rig.backend.calls[-2:] == [("set_default", 1), ("boot_complete",)]
    assert [d.csum for d in rig.backend.deployments()] == [V1.csum, V2.csum]
    assert rig.reboot_count() == 1  # already on the good deployment: no extra reboot
    assert V2.csum in load_status(rig.status_file).rolled_back
    outcome = rig.fresh().run_boot_check()
    assert outcome.result == "healthy" and rig.backend.count("set_default") == 1


def test_failing_wanted_check_does_not_roll_back(updated: Rig) -> None:
    _required(updated, "exit 0")
    write_script(updated.tmp / "health/wanted.d/10-nice-to-have", "exit 1")
    outcome = updated.updater.run_boot_check()
    assert outcome.result == "healthy" and updated.backend.count("set_default") == 0


def test_failing_post_update_check_hook(updated: Rig) -> None:
    write_script(updated.tmp / "hooks/post-update-check.d/10-fail", "exit 9")
    outcome = updated.updater.run_boot_check()
    assert (outcome.code, outcome.result) == (ExitCode.HOOK_FAILED, "failed")
    assert "10-fail failed (exit code 9)" in outcome.message
    assert updated.backend.count("boot_complete") == 1  # the boot itself was healthy
    assert updated.backend.count("set_default") == 0


def test_rollback_without_reboot(updated: Rig) -> None:
    _required(updated, "exit 1")
    outcome = updated.fresh(reboot=parse_reboot_policy("none")).run_boot_check()
    assert outcome.code == ExitCode.ROLLED_BACK and "reboot to use it" in outcome.message
    assert updated.reboot_count() == 1
    outcome = updated.fresh().run_boot_check(RunOptions(no_reboot=True))
    assert outcome.code == ExitCode.HEALTH_FAILED  # recorded already: not rolled back twice


def test_unhealthy_ordinary_boot_is_reported_not_rolled_back(tmp_path: Path) -> None:
    rig = Rig.booted_on(tmp_path, V1)
    write_script(tmp_path / "health/required.d/10-x", "exit 1")
    outcome = rig.updater.run_boot_check()
    assert (outcome.code, outcome.result) == (ExitCode.HEALTH_FAILED, "unhealthy")
    assert rig.backend.count("set_default") == 0 and rig.backend.count("boot_complete") == 0


def test_nothing_to_roll_back_to(tmp_path: Path) -> None:
    rig = Rig.booted_on(tmp_path, V1)
    rig.updater._save(awaiting_boot_check=V1.csum)
    write_script(tmp_path / "health/required.d/10-x", "exit 1")
    outcome = rig.fresh().run_boot_check()
    assert outcome.code == ExitCode.HEALTH_FAILED and "nothing to roll back" in outcome.message
