"""`pyostree update` options, --json, the single-instance lock and stable exit codes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pyostree.errors import (
    ChecksumError,
    DeployError,
    FetchError,
    LockError,
    NoSpaceError,
    TransientFetchError,
    UsageError,
)
from pyostree.updater import ExitCode, add_update_arguments, main, run_update
from pyostree.updater.command import single_instance
from pyostree.updater.exitcodes import exit_code_for
from pyostree.updater.hooks import HookError
from pyostree.updater.status import UpdateStatus, load_status, save_status

from .updater_support import (
    UNREACHABLE,
    MemoryBackend,
    make_commit,
    recording_command,
    stop_with_sigterm,
)

V1, V2 = make_commit(1), make_commit(2)


@pytest.fixture(autouse=True)
def _no_system_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", UNREACHABLE)
    monkeypatch.setenv("PATH", "/nonexistent")  # no systemd-inhibit, no systemctl


def test_exit_codes_are_stable() -> None:
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0, "FAILURE": 1, "USAGE": 2, "NETWORK": 3, "VERIFICATION": 4, "NO_SPACE": 5,
        "BUSY": 6, "HOOK_FAILED": 7, "ROLLED_BACK": 8, "HEALTH_FAILED": 9,
        "REBOOT_REQUIRED": 10, "DOWNGRADE_REFUSED": 11, "NO_UPDATE": 77}
    assert exit_code_for(TransientFetchError("down")) == ExitCode.NETWORK
    assert exit_code_for(FetchError("x")) == ExitCode.NETWORK
    assert exit_code_for(ChecksumError("x")) == ExitCode.VERIFICATION
    assert exit_code_for(NoSpaceError("x")) == ExitCode.NO_SPACE
    assert exit_code_for(LockError("x")) == ExitCode.BUSY
    assert exit_code_for(UsageError("x")) == ExitCode.USAGE
    assert exit_code_for(HookError("x", returncode=3)) == ExitCode.HOOK_FAILED
    assert exit_code_for(DeployError("x")) == ExitCode.FAILURE
    assert exit_code_for(RuntimeError("x")) == ExitCode.FAILURE


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_update_arguments(parser)
    return parser.parse_args(argv)


def test_arguments() -> None:
    args = _parse(["--one-shot", "--check-interval=60", "--no-reboot", "--json",
                   "--sysroot=/mnt", "--os=testos"])
    assert args.one_shot and args.no_reboot and args.json and args.check_interval == 60
    assert args.sysroot == Path("/mnt") and args.os == "testos"
    defaults = _parse([])
    assert not defaults.one_shot and defaults.sysroot == Path("/") and defaults.os is None
    with pytest.raises(SystemExit):
        _parse(["--check", "--fetch-only"])
    with pytest.raises(SystemExit):
        _parse(["--check-interval=0"])


def test_arguments_do_not_clash_with_global_options() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sysroot")
    parser.add_argument("--json", action="store_true")
    add_update_arguments(parser)
    assert _parse(["--os=x"]).os == "x"
    assert parser.parse_args(["--json", "--sysroot=/s"]).sysroot == "/s"


def test_main_help_and_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "Exit codes" in capsys.readouterr().out
    assert main(["--bogus"]) == ExitCode.USAGE


def _sysroot(tmp_path: Path, conf: str = "") -> tuple[Path, Path]:
    sysroot = tmp_path / "sysroot"
    script, record = recording_command(tmp_path)
    conf_path = sysroot / "etc/pyostree/updater.conf"
    conf_path.parent.mkdir(parents=True)
    conf_path.write_text(f"[updater]\nreboot-command={script}\ndbus-address={UNREACHABLE}\n"
                         + conf)
    return sysroot, record


def test_run_update_json_outcomes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sysroot, record = _sysroot(tmp_path)
    backend = MemoryBackend.booted_on(sysroot, V1)
    backend.publish(V1)
    base = ["--json", f"--sysroot={sysroot}"]
    assert run_update(_parse([*base, "--check"]), backend=backend) == 77
    out = json.loads(capsys.readouterr().out)
    assert out["result"] == "no-update" and out["exit_code"] == 77 and out["booted"] == V1.csum

    assert run_update(_parse([*base, "--one-shot"]), backend=backend) == 0
    assert json.loads(capsys.readouterr().out)["result"] == "nothing-to-do"

    backend.publish(V2)
    assert run_update(_parse([*base, "--check"]), backend=backend) == 0
    assert json.loads(capsys.readouterr().out)["result"] == "update-available"

    assert run_update(_parse([*base, "--one-shot"]), backend=backend) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["result"] == "updated" and out["pending"] == V2.csum
    assert record.read_text() == "called \n"
    status = load_status(sysroot / "var/lib/pyostree/update-status.json")
    assert status.last_result == "updated" and status.pending == V2.csum


def test_run_update_config_and_lock_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    sysroot, _ = _sysroot(tmp_path, "reboot=whenever\n")
    backend = MemoryBackend.booted_on(sysroot, V1)
    assert run_update(_parse(["--json", f"--sysroot={sysroot}", "--one-shot"]),
                      backend=backend) == ExitCode.USAGE
    assert json.loads(capsys.readouterr().out)["result"] == "failed"

    sysroot, _ = _sysroot(tmp_path / "b")
    backend = MemoryBackend.booted_on(sysroot, V1)
    lock = sysroot / "var/lib/pyostree/update.lock"
    with single_instance(lock):
        code = run_update(_parse([f"--sysroot={sysroot}", "--one-shot"]), backend=backend)
        assert code == ExitCode.BUSY
        assert "another pyostree update is running" in caplog.text
    assert backend.calls == []
    backend.publish(V1)
    assert run_update(_parse([f"--sysroot={sysroot}", "--one-shot"]), backend=backend) == 0


def test_daemon_mode_via_run_update(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sysroot, record = _sysroot(tmp_path, "splay=0\n")
    backend = MemoryBackend.booted_on(sysroot, V1)
    backend.publish(V2)
    code = run_update(_parse(["--json", f"--sysroot={sysroot}", "--check-interval=1"]),
                      backend=backend)
    assert code == 0 and record.exists()  # first cycle updated and requested the reboot
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["result"] for line in lines] == ["updated"]


def test_status_file_is_atomic_and_tolerates_corruption(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    path = tmp_path / "lib/status.json"
    status = UpdateStatus(last_result="updated", rolled_back={"a" * 64: "t"})
    save_status(path, status)
    assert load_status(path) == status
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]  # no temp files left
    assert json.loads(path.read_text())["version"] == 1
    path.write_text('{"last_result": 5, "rolled_back": []')
    assert load_status(path) == UpdateStatus()
    assert "corrupt status file" in caplog.text
    path.write_text('{"last_result": 5, "rolled_back": [], "good": "x"}')
    assert load_status(path) == UpdateStatus(good="x")


def test_sigterm_taken_by_another_thread_still_ends_a_long_sleep() -> None:
    # The kernel may hand SIGTERM to any thread that does not block it; Python then runs the
    # handler only once the main thread runs bytecode again. Here the main thread blocks
    # SIGTERM, so only its helper thread can take it, and the daemon's hour-long sleep must
    # still end within a second or so (a single Event.wait(3600) slept through it).
    script = textwrap.dedent("""
        import logging, signal, threading, time, types
        from pyostree.updater.command import _stop_on_signals
        logging.basicConfig(level=logging.INFO)
        from pyostree.updater.service import Updater
        ns = types.SimpleNamespace(stop=threading.Event())
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        with _stop_on_signals(ns.stop):
            print("ready", flush=True)
            started = time.monotonic()
            stopped = Updater._sleep(ns, 3600)
            print(stopped, time.monotonic() - started, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    time.sleep(0.2)
    out, err = stop_with_sigterm(proc)
    assert ready == "ready\n", err
    stopped, waited = out.split()
    assert proc.returncode == 0, err
    assert stopped == "True" and float(waited) < 3, out
    assert "received signal 15; stopping" in err
