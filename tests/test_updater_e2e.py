"""The updater on the real backend: a sysroot, a repository served on 127.0.0.1, pull, deploy,
set-default — everything but the reboot itself (which is simulated by changing the booted
deployment)."""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from pyostree import deploy as D
from pyostree import gvariant as gv
from pyostree.commit import commit_tree
from pyostree.repo import Repo, RepoMode
from pyostree.sysroot import Sysroot
from pyostree.updater import ExitCode, add_update_arguments, run_update
from pyostree.updater.backend import SysrootBackend

from . import realostree as ro
from .httpserver import FaultServer
from .updater_support import UNREACHABLE, recording_command, stop_with_sigterm, write_script

OS = "testos"
REF = "testos/stable"
TS = 1704067200


@attrs.define
class World:
    tmp: Path
    server: Repo
    sysroot: Path
    url: str
    monkeypatch: pytest.MonkeyPatch
    reboots: Path

    def publish(self, version: str, timestamp: int) -> str:
        tree = ro.make_os_tree(self.tmp / f"tree-{version}", version=version, kernel=version)
        return commit_tree(self.server, tree, branch=REF, subject=f"v{version}",
                           timestamp=timestamp, metadata={"version": gv.Variant("s", version)})

    def boot(self, csum: str) -> None:
        """Simulate a reboot into the deployment of ``csum``."""
        for dep in Sysroot(self.sysroot).load().deployments:
            if dep.csum == csum:
                path = Sysroot(self.sysroot).deployment_path(dep)
                self.monkeypatch.setenv("PYOSTREE_BOOTED", str(path))
                return
        raise AssertionError(f"no deployment of {csum}")

    def update(self, *argv: str) -> int:
        parser = argparse.ArgumentParser()
        add_update_arguments(parser)
        return run_update(parser.parse_args([*argv, "--json", f"--sysroot={self.sysroot}"]))

    def csums(self) -> list[str]:
        return [d.csum for d in SysrootBackend(self.sysroot).deployments()]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("OSTREE_SYSROOT_DEBUG", "mutable-deployments")
    monkeypatch.setenv("PYOSTREE_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", UNREACHABLE)
    monkeypatch.delenv("PYOSTREE_BOOTED", raising=False)
    server = Repo.create(tmp_path / "server", mode=RepoMode.ARCHIVE)
    sysroot = tmp_path / "sysroot"
    sysroot.mkdir()
    D.init_fs(sysroot)
    D.os_init(Sysroot(sysroot), OS)
    script, record = recording_command(tmp_path)
    conf = sysroot / "etc/pyostree/updater.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"[updater]\nreboot-command={script}\ndbus-address={UNREACHABLE}\n"
                    "retries=1\nsplay=0\n")
    with FaultServer(tmp_path / "server") as srv:
        url = srv.url_for("/")
        repo = Sysroot(sysroot).repo()
        repo.config.set('remote "origin"', "url", url)
        repo.config.set('remote "origin"', "gpg-verify", "false")
        repo.save_config()
        w = World(tmp_path, server, sysroot, url, monkeypatch, record)
        v1 = w.publish("1.0", TS)
        backend = SysrootBackend(sysroot)
        backend.pull("origin", REF, v1)
        D.deploy(Sysroot(sysroot), OS, v1, origin_refspec=f"origin:{REF}")
        w.boot(v1)
        yield w


def _outcome(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    lines = capsys.readouterr().out.splitlines()
    result: dict[str, object] = json.loads(lines[-1])
    return result


def test_update_then_rollback_on_failed_health_check(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    v1 = world.csums()[0]
    assert world.update("--check") == ExitCode.NO_UPDATE
    v2 = world.publish("2.0", TS + 100)
    assert world.update("--check") == ExitCode.OK
    assert _outcome(capsys)["available"] == v2
    assert world.csums() == [v1]

    assert world.update("--one-shot", "--no-reboot") == ExitCode.REBOOT_REQUIRED
    assert world.csums() == [v2, v1]
    assert world.update("--one-shot", "--no-reboot") == ExitCode.REBOOT_REQUIRED
    assert world.csums() == [v2, v1]  # not deployed twice
    assert world.update("--one-shot") == ExitCode.OK
    assert _outcome(capsys)["result"] == "updated"
    assert world.reboots.read_text() == "called \n"

    world.boot(v2)
    write_script(world.sysroot / "etc/pyostree/health/required.d/10-app", "exit 1")
    assert world.update("--boot-check") == ExitCode.ROLLED_BACK
    assert world.csums() == [v1, v2]  # the previous deployment is the default again
    assert len(world.reboots.read_text().splitlines()) == 2

    world.boot(v1)
    assert world.update("--boot-check") == ExitCode.HEALTH_FAILED  # no loop
    assert world.csums() == [v1, v2]
    assert world.update("--one-shot") == ExitCode.OK
    assert _outcome(capsys)["result"] == "skipped-rolled-back"
    assert len(world.reboots.read_text().splitlines()) == 2


def test_downgrade_refused_and_server_down(world: World,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    world.publish("0.9", TS - 100)
    assert world.update("--one-shot") == ExitCode.DOWNGRADE_REFUSED
    assert len(world.csums()) == 1
    repo = Sysroot(world.sysroot).repo()
    repo.config.set('remote "origin"', "url", "http://127.0.0.1:9/")
    repo.save_config()
    assert world.update("--one-shot") == ExitCode.NETWORK
    assert _outcome(capsys)["result"] == "failed"


def test_daemon_process_stops_on_sigterm(world: World) -> None:
    """`pyostree update` as the service runs it: checks, sleeps, and exits 0 on SIGTERM."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, str(root / "bin/pyostree"), "update", "--json", "--no-reboot",
         f"--sysroot={world.sysroot}", "--check-interval=3600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    first = proc.stdout.readline() if ready else b""
    out, err = stop_with_sigterm(proc)
    assert ready, f"no outcome from the first cycle: {err!r}"
    assert json.loads(first)["result"] == "nothing-to-do"
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["result"] == "stopped"
    assert b"received signal 15; stopping" in err
