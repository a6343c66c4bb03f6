"""Shutdown inhibitor locks and reboots, through systemd-logind.

While it writes a deployment the updater holds a ``--what=shutdown`` block inhibitor (from
``org.freedesktop.login1.Manager.Inhibit``, which hands back a file descriptor; the lock lasts
until every copy of it is closed). If logind's D-Bus API cannot be reached with our own client,
``systemd-inhibit`` is tried; if that fails too the updater carries on with a warning.

Before rebooting it waits until nobody else holds a shutdown block inhibitor, so a
``systemd-inhibit --what=shutdown $SHELL`` delays the reboot until that shell exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import time
from collections.abc import Callable, Collection, Iterator, Sequence

import attrs

from ..errors import PyOstreeError
from .dbus import Connection, DBusError, system_bus_address
from .hooks import stderr_fd

__all__ = [
    "LOGIND_NAME",
    "InhibitLock",
    "InhibitorInfo",
    "Logind",
    "RebootError",
    "acquire_shutdown_lock",
    "blocking_shutdown_inhibitors",
    "run_reboot",
    "shutdown_inhibited",
    "wait_for_inhibitors",
]

log = logging.getLogger("pyostree.updater")

LOGIND_NAME = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
LOGIND_MANAGER = "org.freedesktop.login1.Manager"
WHO = "pyostree-update"
SYSTEMD_INHIBIT = "systemd-inhibit"
FALLBACK_START_TIMEOUT = 10.0


class RebootError(PyOstreeError):
    """The reboot command failed."""


@attrs.frozen
class InhibitorInfo:
    what: str
    who: str
    why: str
    mode: str
    uid: int
    pid: int

    @property
    def blocks_shutdown(self) -> bool:
        return self.mode == "block" and "shutdown" in self.what.split(":")

    def describe(self) -> str:
        return f"{self.who!r} (pid {self.pid}: {self.why})"


class Logind:
    """A thin client for the logind Manager methods the updater needs."""

    def __init__(self, address: str | None = None, *, timeout: float = 10.0) -> None:
        self.address = address or system_bus_address()
        self.timeout = timeout

    def _connect(self) -> Connection:
        return Connection.open(self.address, timeout=self.timeout)

    def inhibit(self, what: str, who: str, why: str, mode: str = "block") -> int:
        """Take an inhibitor lock; return its fd (closing it releases the lock)."""
        with self._connect() as conn:
            reply = conn.call_message(LOGIND_NAME, LOGIND_PATH, LOGIND_MANAGER, "Inhibit",
                                      "ssss", (what, who, why, mode), timeout=self.timeout)
        if reply.signature != "h" or len(reply.fds) != 1:
            reply.close_fds()
            raise DBusError("logind's Inhibit reply carried no file descriptor")
        return reply.fds[0]

    def list_inhibitors(self) -> list[InhibitorInfo]:
        with self._connect() as conn:
            reply = conn.call_message(LOGIND_NAME, LOGIND_PATH, LOGIND_MANAGER,
                                      "ListInhibitors", timeout=self.timeout)
        reply.close_fds()
        if reply.signature != "a(ssssuu)":
            raise DBusError(f"logind's ListInhibitors answered with {reply.signature!r}")
        return [InhibitorInfo(*row) for row in reply.body[0]]


class InhibitLock:
    """A held inhibitor lock: an fd from logind, or a running ``systemd-inhibit``."""

    def __init__(self, *, fd: int | None = None,
                 process: subprocess.Popen[bytes] | None = None) -> None:
        self._fd = fd
        self._process = process

    @property
    def via(self) -> str:
        return "logind" if self._fd is not None else SYSTEMD_INHIBIT

    @property
    def pid(self) -> int | None:
        """The pid logind records for this lock, if it is not ours."""
        return self._process.pid if self._process is not None else None

    @property
    def held(self) -> bool:
        return self._fd is not None or self._process is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._process is not None:
            proc, self._process = self._process, None
            if proc.stdin is not None:
                proc.stdin.close()  # the child's `cat` sees EOF and exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> InhibitLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _systemd_inhibit_lock(why: str, command: str) -> InhibitLock | None:
    argv = [command, "--what=shutdown", "--mode=block", f"--who={WHO}", f"--why={why}",
            "sh", "-c", "echo ready && exec cat >/dev/null"]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    except OSError as exc:
        log.warning("cannot run %s: %s", command, exc)
        return None
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], FALLBACK_START_TIMEOUT)
    line = proc.stdout.readline() if ready else b""
    if line.strip() == b"ready":
        return InhibitLock(process=proc)
    lock = InhibitLock(process=proc)
    lock.release()
    log.warning("%s could not take the lock (exit code %s)", command, proc.returncode)
    return None


def acquire_shutdown_lock(why: str, *, address: str | None = None,
                          systemd_inhibit: str = SYSTEMD_INHIBIT) -> InhibitLock | None:
    """Take a shutdown block inhibitor; None (with a warning) when neither way works."""
    try:
        fd = Logind(address).inhibit("shutdown", WHO, why, "block")
    except DBusError as exc:
        log.info("logind's D-Bus API is not reachable (%s); trying %s", exc, systemd_inhibit)
    else:
        return InhibitLock(fd=fd)
    lock = _systemd_inhibit_lock(why, systemd_inhibit)
    if lock is None:
        log.warning("continuing without a shutdown inhibitor lock")
    return lock


@contextlib.contextmanager
def shutdown_inhibited(why: str, *, address: str | None = None,
                       systemd_inhibit: str = SYSTEMD_INHIBIT) -> Iterator[InhibitLock | None]:
    """Hold a shutdown block inhibitor for the duration of the ``with`` block."""
    lock = acquire_shutdown_lock(why, address=address, systemd_inhibit=systemd_inhibit)
    if lock is not None:
        log.info("holding a shutdown inhibitor lock (via %s)", lock.via)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def blocking_shutdown_inhibitors(address: str | None = None, *,
                                 ignore_pids: Collection[int] = ()
                                 ) -> list[InhibitorInfo] | None:
    """Other processes' shutdown block inhibitors; None when logind cannot be asked."""
    try:
        infos = Logind(address).list_inhibitors()
    except DBusError as exc:
        log.warning("cannot list shutdown inhibitors (%s)", exc)
        return None
    own = {os.getpid(), *ignore_pids}
    return [i for i in infos if i.blocks_shutdown and i.pid not in own]


def wait_for_inhibitors(*, address: str | None = None, poll_interval: float = 5.0,
                        max_wait: float = 0.0, ignore_pids: Collection[int] = (),
                        sleep: Callable[[float], bool] | None = None,
                        monotonic: Callable[[], float] = time.monotonic) -> bool:
    """Wait until no other process blocks shutdown; False if ``sleep`` says we were stopped.

    ``sleep(seconds)`` returns True when the wait should end early (a stop request);
    ``max_wait`` > 0 bounds the wait, after which the reboot goes ahead anyway.
    """
    if sleep is None:
        def sleep(seconds: float) -> bool:
            time.sleep(seconds)
            return False
    start = monotonic()
    announced: set[InhibitorInfo] = set()
    while True:
        blockers = blocking_shutdown_inhibitors(address, ignore_pids=ignore_pids)
        if blockers is None:
            log.warning("not waiting for inhibitors: logind cannot be asked")
            return True
        if not blockers:
            if announced:
                log.info("no shutdown inhibitors left")
            return True
        if set(blockers) != announced:
            log.info("reboot delayed by %d shutdown inhibitor(s): %s", len(blockers),
                     ", ".join(b.describe() for b in blockers))
            announced = set(blockers)
        if max_wait > 0 and monotonic() - start >= max_wait:
            log.warning("rebooting despite inhibitors after waiting %.0f s", max_wait)
            return True
        if sleep(poll_interval):
            return False


def run_reboot(command: Sequence[str]) -> None:
    """Run the reboot command; RebootError if it cannot run or fails."""
    log.info("rebooting: %s", " ".join(command))
    try:
        result = subprocess.run(list(command), stdin=subprocess.DEVNULL, stdout=stderr_fd(),
                                check=False)
    except OSError as exc:
        raise RebootError(f"cannot run reboot command {command[0]!r}: {exc}") from None
    if result.returncode != 0:
        raise RebootError(f"reboot command {' '.join(command)!r} failed "
                          f"with exit code {result.returncode}")
