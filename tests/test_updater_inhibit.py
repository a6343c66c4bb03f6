"""Shutdown inhibitors against a real dbus-daemon running the logind mock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyostree.updater.inhibit import (
    InhibitorInfo,
    Logind,
    RebootError,
    acquire_shutdown_lock,
    blocking_shutdown_inhibitors,
    run_reboot,
    shutdown_inhibited,
    wait_for_inhibitors,
)

from .updater_support import LogindBus, inhibitor_holder, logind_bus, recording_command

UNREACHABLE = "unix:path=/nonexistent/pyostree-no-bus"


@pytest.fixture
def bus() -> Iterator[LogindBus]:
    with logind_bus() as b:
        yield b


def _events(bus: LogindBus) -> list[dict[str, object]]:
    if not bus.log.exists():
        return []
    return [json.loads(line) for line in bus.log.read_text().splitlines()]


def _wait_until(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_our_lock_is_visible_and_released(bus: LogindBus) -> None:
    logind = Logind(bus.address)
    with shutdown_inhibited("writing a deployment", address=bus.address) as lock:
        assert lock is not None and lock.via == "logind"
        infos = logind.list_inhibitors()
        assert infos == [InhibitorInfo("shutdown", "pyostree-update", "writing a deployment",
                                       "block", os.getuid(), os.getpid())]
        # our own lock never blocks our own reboot
        assert blocking_shutdown_inhibitors(bus.address) == []
    assert _wait_until(lambda: logind.list_inhibitors() == [])
    assert [e["event"] for e in _events(bus)] == ["inhibit", "release"]


def test_only_other_shutdown_block_locks_count(bus: LogindBus) -> None:
    with inhibitor_holder(bus.address, what="sleep:idle", mode="block"), \
            inhibitor_holder(bus.address, what="shutdown", mode="delay"):
        assert len(Logind(bus.address).list_inhibitors()) == 2
        assert blocking_shutdown_inhibitors(bus.address) == []
    with inhibitor_holder(bus.address, what="sleep:shutdown") as holder:
        blockers = blocking_shutdown_inhibitors(bus.address)
        assert blockers is not None and [b.pid for b in blockers] == [holder.pid]
        assert blocking_shutdown_inhibitors(bus.address, ignore_pids=[holder.pid]) == []


def test_reboot_waits_for_other_inhibitor(bus: LogindBus, tmp_path: Path) -> None:
    script, record = recording_command(tmp_path)
    done = threading.Event()
    stop = threading.Event()

    def reboot_when_allowed() -> None:
        if wait_for_inhibitors(address=bus.address, poll_interval=0.05, sleep=stop.wait):
            run_reboot([str(script), "now"])
        done.set()

    with inhibitor_holder(bus.address) as holder:
        thread = threading.Thread(target=reboot_when_allowed)
        thread.start()
        time.sleep(0.6)
        assert not record.exists(), "rebooted while another process held a shutdown lock"
        assert not done.is_set()
        assert holder.stdin is not None
        holder.stdin.close()  # the holder exits: its fd closes, logind drops the lock
        assert done.wait(5), "the reboot did not follow the release"
    thread.join()
    assert record.read_text() == "called now\n"


def test_real_systemd_inhibit_delays_the_reboot(bus: LogindBus, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`systemd-inhibit --what=shutdown $SHELL` (the documented way) delays the reboot."""
    if shutil.which("systemd-inhibit") is None:
        pytest.skip("systemd-inhibit is not installed")
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
    proc = subprocess.Popen(["systemd-inhibit", "--what=shutdown", "--who=admin",
                             "--why=maintenance", "sleep", "30"], env=env)
    try:
        assert _wait_until(lambda: bool(blocking_shutdown_inhibitors(bus.address)))
        stop = threading.Event()
        timer = threading.Timer(0.5, proc.terminate)
        timer.start()
        start = time.monotonic()
        assert wait_for_inhibitors(address=bus.address, poll_interval=0.05, sleep=stop.wait)
        assert time.monotonic() - start >= 0.4
        timer.join()
    finally:
        proc.kill()
        proc.wait()


def test_wait_gives_up_after_max_wait_and_stops_on_request(bus: LogindBus) -> None:
    with inhibitor_holder(bus.address):
        stop = threading.Event()
        start = time.monotonic()
        assert wait_for_inhibitors(address=bus.address, poll_interval=0.05, max_wait=0.3,
                                   sleep=stop.wait)
        assert 0.25 <= time.monotonic() - start < 3
        stop.set()
        assert not wait_for_inhibitors(address=bus.address, poll_interval=0.05,
                                       sleep=stop.wait)


def test_systemd_inhibit_fallback(bus: LogindBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """When our client cannot reach logind, `systemd-inhibit` takes the lock instead."""
    if shutil.which("systemd-inhibit") is None:
        pytest.skip("systemd-inhibit is not installed")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    lock = acquire_shutdown_lock("fallback test", address=UNREACHABLE)
    assert lock is not None and lock.via == "systemd-inhibit" and lock.pid is not None
    try:
        infos = Logind(bus.address).list_inhibitors()
        assert [(i.who, i.why, i.pid) for i in infos] == [
            ("pyostree-update", "fallback test", lock.pid)]
        assert blocking_shutdown_inhibitors(bus.address, ignore_pids=[lock.pid]) == []
    finally:
        lock.release()
    assert _wait_until(lambda: Logind(bus.address).list_inhibitors() == [])


def test_no_logind_at_all_is_not_fatal(monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", UNREACHABLE)
    with shutdown_inhibited("x", address=UNREACHABLE,
                            systemd_inhibit="/nonexistent/systemd-inhibit") as lock:
        assert lock is None
    assert "continuing without a shutdown inhibitor lock" in caplog.text
    assert blocking_shutdown_inhibitors(UNREACHABLE) is None
    assert wait_for_inhibitors(address=UNREACHABLE, poll_interval=0.01)


def test_reboot_command_failure(tmp_path: Path) -> None:
    with pytest.raises(RebootError, match="exit code 3"):
        run_reboot(["sh", "-c", "exit 3"])
    with pytest.raises(RebootError, match="cannot run"):
        run_reboot([str(tmp_path / "missing")])
