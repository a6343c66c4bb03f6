"""Test support for the updater: an in-memory backend and a private bus with a logind mock."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from pyostree.core import parse_refspec
from pyostree.errors import (
    DeployError,
    NotFoundError,
    ObjectNotFoundError,
    TransientFetchError,
)
from pyostree.updater.backend import CommitInfo, Deployment
from pyostree.updater.config import UpdaterConfig
from pyostree.updater.service import Updater

HERE = Path(__file__).resolve().parent


def make_commit(n: int, timestamp: int | None = None) -> CommitInfo:
    csum = hashlib.sha256(f"commit {n}".encode()).hexdigest()
    return CommitInfo(csum, 1_700_000_000 + n * 1000 if timestamp is None else timestamp,
                      f"{n}.0")


@attrs.define
class _Dep:
    osname: str
    csum: str
    serial: int
    refspec: str | None


@attrs.define
class MemoryBackend:
    """An UpdaterBackend that behaves like a sysroot + repo + server, in memory.

    ``server`` maps "remote:ref" to the commit the server offers; ``fail_next`` makes the next
    that many network calls raise TransientFetchError (the server is down).
    """

    root: Path
    server: dict[str, CommitInfo] = attrs.field(factory=dict)
    repo: dict[str, CommitInfo] = attrs.field(factory=dict)
    refs: dict[str, str] = attrs.field(factory=dict)
    deps: list[_Dep] = attrs.field(factory=list)
    booted_key: tuple[str, int] | None = None
    fail_next: int = 0
    calls: list[tuple[object, ...]] = attrs.field(factory=list)
    on_deploy: Callable[[], None] | None = None

    @classmethod
    def booted_on(cls, root: Path, commit: CommitInfo, refspec: str = "origin:os/stable",
                  osname: str = "testos") -> MemoryBackend:
        backend = cls(root)
        backend.repo[commit.csum] = commit
        backend.refs[refspec] = commit.csum
        backend.deps.append(_Dep(osname, commit.csum, 0, refspec))
        backend._mkdir(backend.deps[0])
        backend.booted_key = (commit.csum, 0)
        return backend

    def _path(self, d: _Dep) -> Path:
        return self.root / "ostree" / "deploy" / d.osname / "deploy" / f"{d.csum}.{d.serial}"

    def _mkdir(self, d: _Dep) -> None:
        self._path(d).mkdir(parents=True, exist_ok=True)

    # --- test controls ------------------------------------------------------------------------

    def publish(self, commit: CommitInfo, refspec: str = "origin:os/stable") -> None:
        self.server[refspec] = commit

    def reboot(self, index: int = 0) -> None:
        """The boot loader starts deployment ``index`` (0: the default)."""
        d = self.deps[index]
        self.booted_key = (d.csum, d.serial)

    def count(self, name: str) -> int:
        return sum(1 for c in self.calls if c[0] == name)

    def _network(self) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise TransientFetchError("connection refused", url="http://127.0.0.1:1/")

    # --- UpdaterBackend -----------------------------------------------------------------------

    def deployments(self) -> list[Deployment]:
        return [Deployment(d.osname, d.csum, d.serial, i, d.refspec, self._path(d),
                           booted=(d.csum, d.serial) == self.booted_key)
                for i, d in enumerate(self.deps)]

    def commit_info(self, csum: str) -> CommitInfo:
        try:
            return self.repo[csum]
        except KeyError:
            raise ObjectNotFoundError(f"commit {csum} not found") from None

    def remote_commit(self, remote: str, ref: str) -> CommitInfo:
        self.calls.append(("remote_commit", remote, ref))
        self._network()
        try:
            return self.server[f"{remote}:{ref}"]
        except KeyError:
            raise NotFoundError(f"no ref {ref}", url="http://127.0.0.1/", status=404) from None

    def local_commit(self, remote: str | None, ref: str) -> CommitInfo | None:
        csum = self.refs.get(f"{remote}:{ref}" if remote else ref)
        return None if csum is None else self.repo[csum]

    def pull(self, remote: str, ref: str, csum: str) -> None:
        self.calls.append(("pull", remote, ref, csum))
        self._network()
        commit = self.server[f"{remote}:{ref}"]
        assert commit.csum == csum
        self.repo[csum] = commit
        self.refs[f"{remote}:{ref}"] = csum

    def deploy(self, osname: str, csum: str, refspec: str) -> Deployment:
        self.calls.append(("deploy", osname, csum, refspec))
        if csum not in self.repo:
            raise DeployError(f"commit {csum} is not in the repository")
        assert parse_refspec(refspec)[1]
        if self.on_deploy is not None:
            self.on_deploy()
        serial = 1 + max((d.serial for d in self.deps if d.csum == csum), default=-1)
        new = _Dep(osname, csum, serial, refspec)
        self._mkdir(new)
        keep = [d for d in self.deps if (d.csum, d.serial) == self.booted_key]
        if not keep and self.deps:
            keep = [self.deps[0]]
        self.deps = [new, *keep]
        return self.deployments()[0]

    def set_default(self, index: int) -> None:
        self.calls.append(("set_default", index))
        self.deps.insert(0, self.deps.pop(index))

    def boot_complete(self) -> None:
        self.calls.append(("boot_complete",))


def recording_command(directory: Path, name: str = "reboot") -> tuple[Path, Path]:
    """A script that appends its arguments to a file; returns (script, record file)."""
    record = directory / f"{name}.calls"
    script = directory / f"{name}.sh"
    directory.mkdir(parents=True, exist_ok=True)
    script.write_text(f'#!/bin/sh\necho "called $*" >> "{record}"\n')
    script.chmod(0o755)
    return script, record


def write_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


# --- a private D-Bus bus with the logind mock --------------------------------------------------

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@attrs.frozen
class LogindBus:
    address: str
    log: Path


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().decode().strip() if ready else ""


def stop_with_sigterm(proc: subprocess.Popen[Any], timeout: float = 10) -> tuple[Any, Any]:
    """Send SIGTERM and return the rest of stdout and stderr once ``proc`` exits; kill it if
    it is still running after ``timeout`` (the test then fails on TimeoutExpired)."""
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def logind_bus() -> Iterator[LogindBus]:
    """Start ``dbus-daemon`` on a private socket and the logind mock on it."""
    if shutil.which("dbus-daemon") is None:
        import pytest

        pytest.skip("dbus-daemon is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="pyo-bus-", dir="/tmp"))  # short: sun_path is 108 bytes
    conf = tmp / "bus.conf"
    conf.write_text(BUS_CONFIG.format(socket=tmp / "socket"))
    with (tmp / "daemon.err").open("wb") as err:
        daemon = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork",
                                   "--print-address"], stdout=subprocess.PIPE, stderr=err)
    mock = None
    try:
        address = _read_line(daemon, 10)
        assert address.startswith("unix:"), "dbus-daemon did not print its address"
        log = tmp / "logind.log"
        env = dict(os.environ, PYTHONPATH=str(HERE.parent))
        mock = subprocess.Popen([sys.executable, str(HERE / "logind_mock.py"), "--address",
                                 address, "--log", str(log)], stdout=subprocess.PIPE, env=env)
        assert _read_line(mock, 10) == "READY", "the logind mock did not start"
        yield LogindBus(address, log)
    finally:
        if mock is not None:
            _stop(mock)
        _stop(daemon)
        shutil.rmtree(tmp, ignore_errors=True)


HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from pyostree.updater.inhibit import Logind
fd = Logind({address!r}).inhibit({what!r}, "test-holder", "testing", {mode!r})
print("held", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def inhibitor_holder(address: str, what: str = "shutdown", mode: str = "block"
                     ) -> Iterator[subprocess.Popen[bytes]]:
    """Another process that holds an inhibitor until the context ends (its stdin closes)."""
    code = HOLDER.format(root=str(HERE.parent), address=address, what=what, mode=mode)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert _read_line(proc, 10) == "held"
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        _stop(proc)


# --- an updater over a MemoryBackend, with recorded sleeps and reboots -------------------------

UNREACHABLE = "unix:path=/nonexistent/pyostree-no-bus"


def make_updater(tmp: Path, backend: MemoryBackend, sleeps: list[float], **changes: Any
                 ) -> Updater:
    """An Updater whose reboot command records into ``tmp/reboot.calls`` and whose sleeps are
    recorded instead of slept; logind is unreachable unless ``dbus_address`` is given."""
    script, _ = recording_command(tmp)
    config = UpdaterConfig(
        status_file=tmp / "var/lib/pyostree/update-status.json",
        hooks_dir=tmp / "hooks", health_dir=tmp / "health", reboot_command=(str(script),),
        retry_delay=1, retry_max_delay=3, dbus_address=UNREACHABLE,
        inhibitor_poll_interval=0.05, splay=0)
    config = attrs.evolve(config, **changes)
    updater = Updater(backend, config, sysroot=tmp, systemd_inhibit="/nonexistent/inhibit",
                      rng=random.Random(7),
                      clock=lambda: datetime.datetime(2024, 5, 1, 12, 0))

    def fake_sleep(seconds: float) -> bool:
        sleeps.append(seconds)
        return updater.stop.is_set()

    updater._sleep = fake_sleep  # type: ignore[method-assign]
    return updater


@attrs.define
class Rig:
    tmp: Path
    backend: MemoryBackend
    updater: Updater
    reboots: Path
    sleeps: list[float]

    @classmethod
    def booted_on(cls, tmp: Path, commit: CommitInfo) -> Rig:
        backend = MemoryBackend.booted_on(tmp / "sysroot", commit)
        sleeps: list[float] = []
        return cls(tmp, backend, make_updater(tmp, backend, sleeps), tmp / "reboot.calls",
                   sleeps)

    @property
    def status_file(self) -> Path:
        return self.updater.config.status_file

    def reboot_count(self) -> int:
        return len(self.reboots.read_text().splitlines()) if self.reboots.exists() else 0

    def fresh(self, **config: Any) -> Updater:
        """A new updater process over the same sysroot (re-reads the status file)."""
        self.updater = make_updater(self.tmp, self.backend, self.sleeps, **config)
        return self.updater
