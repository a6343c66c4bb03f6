"""Hook directories: executables run in sorted order; the first failure stops the run.

``post-apply.d/`` runs after a new deployment is written (arguments: old and new deployment
paths); ``post-update-check.d/`` runs on the first boot of a new deployment once it passed its
health checks (arguments: previous and booted deployment paths). Hook output goes to stderr.

Hooks and health checks also get ``PYOSTREE_SYSROOT``, ``PYOSTREE_OSNAME``,
``PYOSTREE_OLD_DEPLOYMENT``, ``PYOSTREE_NEW_DEPLOYMENT`` and ``PYOSTREE_COMMIT`` (the new or
booted commit) in their environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from ..errors import PyOstreeError

__all__ = [
    "POST_APPLY",
    "POST_UPDATE_CHECK",
    "HookError",
    "HookResult",
    "list_executables",
    "run_executable",
    "run_hooks",
    "stderr_fd",
]

log = logging.getLogger("pyostree.updater")

POST_APPLY = "post-apply.d"
POST_UPDATE_CHECK = "post-update-check.d"
TIMEOUT_EXIT = 124  # reported when a hook is killed for running too long


class HookError(PyOstreeError):
    """A hook exited non-zero (``hook`` is its path, ``returncode`` its status)."""

    exit_code = 7

    def __init__(self, message: str, *, hook: str = "", returncode: int = 0) -> None:
        super().__init__(message)
        self.hook = hook
        self.returncode = returncode


@attrs.frozen
class HookResult:
    name: str  # "post-apply.d/10-foo"
    returncode: int  # negative: killed by that signal
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return f"exit code {self.returncode}"


def list_executables(directory: Path) -> list[Path]:
    """Executable regular files in ``directory`` by name; hidden and backup files skipped."""
    try:
        entries = sorted(directory.iterdir(), key=lambda p: p.name)
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        log.warning("%s is not a directory; no hooks run", directory)
        return []
    found = []
    for path in entries:
        if path.name.startswith(".") or path.name.endswith(("~", ".dpkg-old", ".rpmsave")):
            continue
        if not path.is_file():
            continue
        if not os.access(path, os.X_OK):
            log.warning("skipping %s: not executable", path)
            continue
        found.append(path)
    return found


def run_executable(path: Path, args: Sequence[str], *, env: Mapping[str, str] | None = None,
                   timeout: float | None = None) -> HookResult:
    """Run one hook or check; its stdout and stderr go to our stderr."""
    name = f"{path.parent.name}/{path.name}"
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        err = stderr_fd()
        proc = subprocess.Popen([str(path), *args], stdin=subprocess.DEVNULL,
                                stdout=err, stderr=err,
                                env=full_env, start_new_session=True)
    except OSError as exc:
        log.error("%s: cannot run: %s", name, exc)
        return HookResult(name, 126)
    try:
        return HookResult(name, proc.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return HookResult(name, TIMEOUT_EXIT, timed_out=True)


def stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an in-memory stream
        return 2


def run_hooks(directory: Path, args: Sequence[str], *, env: Mapping[str, str] | None = None,
              timeout: float | None = None) -> list[HookResult]:
    """Run every hook in ``directory`` in order; raise HookError at the first failure."""
    results = []
    for path in list_executables(directory):
        log.info("running hook %s/%s", directory.name, path.name)
        result = run_executable(path, args, env=env, timeout=timeout)
        results.append(result)
        if not result.ok:
            message = f"hook {result.name} failed ({result.describe()})"
            log.error("%s", message)
            raise HookError(message, hook=str(path), returncode=result.returncode)
    return results
