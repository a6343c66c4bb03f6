"""Deploy under faults: a full disk (a small tmpfs in a private mount namespace) and two
deploys at once on the same sysroot. Both go through the command line, as an admin would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyostree.repo import Repo
from pyostree.sysroot import Sysroot

from . import realostree as ro
from .test_deploy import _check_consistent, new_sysroot, py_commit

ROOT = Path(__file__).resolve().parent.parent
OS = "testos"


def _env(run_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OSTREE_SYSROOT_DEBUG"] = "mutable-deployments"
    env["PYOSTREE_RUN_DIR"] = str(run_dir)
    env.pop("PYOSTREE_DEBUG", None)
    return env


def _can_unshare_tmpfs(tmp_path: Path) -> str | None:
    """None if a tmpfs can be mounted in a private mount namespace, else why not."""
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare or mount not installed"
    probe = tmp_path / "probe"
    probe.mkdir()
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        f"mount -t tmpfs -o size=1m tmpfs {probe} && touch {probe}/x"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return f"cannot mount a tmpfs in a private mount namespace: {r.stderr.strip()}"
    assert not (probe / "x").exists(), "the tmpfs leaked out of the namespace"
    return None


# The whole full-disk scenario runs in one process inside `unshare -m`: the tmpfs goes away
# with the namespace. It prints one JSON object with what it saw.
_ENOSPC_SCENARIO = r"""
import json, os, subprocess, sys
sys.path.insert(0, {root!r})
from pyostree.sysroot import Sysroot

mnt, src = {mnt!r}, {src!r}
sysroot = os.path.join(mnt, "sysroot")
out = {{}}

def run(*args):
    r = subprocess.run([sys.executable, "-m", "pyostree", *args], capture_output=True,
                       text=True, check=False)
    return {{"args": list(args), "rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}}

def must(*args):
    r = run(*args)
    if r["rc"] != 0:
        raise SystemExit(json.dumps({{"setup_failed": r}}))
    return r

def state():
    s = Sysroot(sysroot, mutable_deployments=True).load()
    return [d.csum for d in s.deployments]

subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs", mnt], check=True)
os.mkdir(sysroot)
must("admin", "init-fs", sysroot)
must("admin", "--sysroot=" + sysroot, "os-init", "testos")
repo = "--repo=" + os.path.join(sysroot, "ostree/repo")
must(repo, "pull-local", src, "testos/1.0")
must("admin", "--sysroot=" + sysroot, "deploy", "--os=testos", "testos/1.0")
out["before"] = state()
must(repo, "pull-local", src, "testos/2.0")
st = os.statvfs(mnt)
out["free_before_deploy"] = st.f_bavail * st.f_frsize
out["full"] = run("admin", "--sysroot=" + sysroot, "deploy", "--os=testos", "testos/2.0")
out["after_full"] = state()
subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True)
out["rerun"] = run("admin", "--sysroot=" + sysroot, "deploy", "--os=testos", "testos/2.0")
out["after_rerun"] = state()
from tests.test_deploy import _check_consistent
from pathlib import Path
_check_consistent(Path(sysroot), {{{c1!r}: "1.0", {c2!r}: "2.0"}})
out["entries"] = sorted(os.listdir(os.path.join(sysroot, "boot/loader/entries")))
print(json.dumps(out))
"""


def test_enospc_during_deploy_keeps_the_old_default(tmp_path: Path) -> None:
    """A deploy whose /etc copy does not fit fails with one clear line and exit 5, before the
    commit point: the previous default still boots a complete deployment. With more space a
    plain rerun succeeds."""
    why = _can_unshare_tmpfs(tmp_path)
    if why is not None:
        pytest.skip(why)
    src = tmp_path / "src"
    Repo.create(src)
    v1 = ro.make_os_tree(tmp_path / "t1", version="1.0", kernel="v1")
    v2 = ro.make_os_tree(tmp_path / "t2", version="2.0", kernel="v2")
    # /etc is a full copy of usr/etc (not hardlinks): 1.8 MiB that fit in the repository
    # once but not twice on a 3 MiB file system.
    (v2 / "usr/etc/big.bin").write_bytes(os.urandom(1800 * 1024))
    c1 = py_commit(src, v1, "1.0", branch="testos/1.0")
    c2 = py_commit(src, v2, "2.0", branch="testos/2.0")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = _ENOSPC_SCENARIO.format(root=str(ROOT), mnt=str(mnt), src=str(src), c1=c1, c2=c2)
    r = subprocess.run(["unshare", "-m", sys.executable, "-c", script], capture_output=True,
                       text=True, check=False, env=_env(tmp_path / "run"), cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["before"] == [c1]
    assert out["free_before_deploy"] < 1800 * 1024

    full = out["full"]
    assert full["rc"] == 5, full
    lines = full["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), full["stderr"]
    assert "no space" in lines[0].lower()
    assert "Traceback" not in full["stderr"] + full["stdout"]
    # the old default is untouched (and was checked complete inside the namespace, below)
    assert out["after_full"] == [c1]

    assert out["rerun"]["rc"] == 0, out["rerun"]
    assert out["after_rerun"] == [c2, c1]
    assert len(out["entries"]) == 2


# ---------------------------------------------------------------------------- the lock


def _two_commits(tmp_path: Path) -> tuple[Sysroot, dict[str, str]]:
    sysroot = new_sysroot(tmp_path / "sysroot")
    versions = {}
    for v, kernel in (("1.0", "v1"), ("2.0", "v2")):
        tree = ro.make_os_tree(tmp_path / f"tree{v}", version=v, kernel=kernel)
        versions[py_commit(sysroot.repo_path, tree, v, branch=f"testos/{v}")] = v
    return sysroot, versions


def _deploy_cli(sysroot: Path, rev: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pyostree", "admin", f"--sysroot={sysroot}", "deploy",
         f"--os={OS}", rev],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def test_deploy_waits_for_the_sysroot_lock(tmp_path: Path) -> None:
    """While another process holds ``ostree/lock`` a deploy waits and changes nothing; it
    goes ahead as soon as the lock is released."""
    sysroot, versions = _two_commits(tmp_path)
    env = _env(tmp_path / "run")
    with sysroot.lock():
        child = _deploy_cli(sysroot.path, "testos/1.0", env)
        time.sleep(1.5)
        assert child.poll() is None, child.communicate()
        assert not (sysroot.path / "ostree/deploy" / OS / "deploy").exists() or not list(
            (sysroot.path / "ostree/deploy" / OS / "deploy").iterdir())
        assert not (sysroot.path / "boot/loader").exists()
    _stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    assert stderr == ""
    after = _check_consistent(sysroot.path, versions)
    assert versions[after.deployments[0].csum] == "1.0"


def test_two_deploys_at_once_are_serialized(tmp_path: Path) -> None:
    """Two deploys started together on one sysroot: each either completes or fails with one
    clean error line; the result is one consistent boot list with both deployments."""
    sysroot, versions = _two_commits(tmp_path)
    env = _env(tmp_path / "run")
    for _round in range(3):
        a = _deploy_cli(sysroot.path, "testos/1.0", env)
        b = _deploy_cli(sysroot.path, "testos/2.0", env)
        results = [(*p.communicate(timeout=120), p.returncode) for p in (a, b)]
        for stdout, stderr, rc in results:
            assert "Traceback" not in stderr
            if rc == 0:
                assert stdout.startswith("Deployed testos ")
            else:
                lines = stderr.splitlines()
                assert len(lines) == 1 and lines[0].startswith("error: ") and "lock" in stderr
        assert any(rc == 0 for _o, _e, rc in results)
        after = _check_consistent(sysroot.path, versions)
        assert sorted(versions[d.csum] for d in after.deployments) == ["1.0", "2.0"]
        deploy_dir = sysroot.path / "ostree/deploy" / OS / "deploy"
        assert {p.name for p in deploy_dir.iterdir()} == {
            d.name for d in after.deployments} | {d.name + ".origin" for d in after.deployments}
        assert sorted(os.listdir(sysroot.path / "boot")) == [
            "boot", "loader", f"loader.{after.bootversion}", "ostree"]
