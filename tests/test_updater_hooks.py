"""Hook directories and health checks run real executables."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyostree.updater.exitcodes import ExitCode, exit_code_for
from pyostree.updater.health import run_health_checks
from pyostree.updater.hooks import HookError, list_executables, run_hooks

from .updater_support import write_script


def test_hooks_run_in_sorted_order_with_arguments(tmp_path: Path) -> None:
    hooks = tmp_path / "post-apply.d"
    record = tmp_path / "record"
    for name in ("20-second", "10-first", "30-third"):
        write_script(hooks / name, f'echo "{name} $1 $2 $PYOSTREE_COMMIT" >> "{record}"')
    (hooks / "15-not-executable").write_text("#!/bin/sh\nexit 1\n")
    write_script(hooks / ".hidden", "exit 1")
    write_script(hooks / "25-backup~", "exit 1")
    (hooks / "40-dir").mkdir()
    results = run_hooks(hooks, ["/old", "/new"], env={"PYOSTREE_COMMIT": "abc"})
    assert [r.name for r in results] == [
        "post-apply.d/10-first", "post-apply.d/20-second", "post-apply.d/30-third"]
    assert record.read_text().splitlines() == [
        "10-first /old /new abc", "20-second /old /new abc", "30-third /old /new abc"]


def test_failing_hook_stops_and_carries_its_exit_code(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hooks = tmp_path / "post-apply.d"
    record = tmp_path / "record"
    write_script(hooks / "10-ok", f'echo ok >> "{record}"')
    write_script(hooks / "20-bad", "exit 42")
    write_script(hooks / "30-never", f'echo never >> "{record}"')
    with pytest.raises(HookError) as info:
        run_hooks(hooks, ["/a", "/b"])
    assert info.value.returncode == 42
    assert info.value.hook.endswith("20-bad")
    assert "exit code 42" in str(info.value)
    assert "post-apply.d/20-bad failed (exit code 42)" in caplog.text
    assert record.read_text() == "ok\n"
    assert exit_code_for(info.value) == ExitCode.HOOK_FAILED


def test_hook_timeout_and_signal(tmp_path: Path) -> None:
    write_script(tmp_path / "slow.d" / "10-sleep", "sleep 30")
    with pytest.raises(HookError, match="timed out"):
        run_hooks(tmp_path / "slow.d", [], timeout=0.3)
    write_script(tmp_path / "sig.d" / "10-kill", "kill -TERM $$")
    with pytest.raises(HookError, match="killed by signal 15"):
        run_hooks(tmp_path / "sig.d", [])


def test_missing_directory_means_no_hooks(tmp_path: Path) -> None:
    assert list_executables(tmp_path / "nope") == []
    assert run_hooks(tmp_path / "nope", []) == []


def test_health_required_and_wanted(tmp_path: Path) -> None:
    health = tmp_path / "health"
    write_script(health / "required.d" / "10-ok", "exit 0")
    write_script(health / "wanted.d" / "10-flaky", "exit 3")
    report = run_health_checks(health)
    assert report.healthy
    assert [r.returncode for r in report.wanted] == [3]

    write_script(health / "required.d" / "20-broken", "exit 1")
    write_script(health / "required.d" / "30-after", "exit 0")
    report = run_health_checks(health)
    assert not report.healthy
    # every check runs, even after a failure, so the log shows the whole picture
    assert [r.name for r in report.required] == [
        "required.d/10-ok", "required.d/20-broken", "required.d/30-after"]
    assert [r.name for r in report.failed_required] == ["required.d/20-broken"]


def test_no_health_checks_is_healthy(tmp_path: Path) -> None:
    assert run_health_checks(tmp_path / "none").healthy
