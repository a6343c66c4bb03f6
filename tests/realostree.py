"""Running the real ``ostree`` safely from tests: fake OS trees, commits, and ``ostree admin``.

``ostree admin`` freezes (FIFREEZE) the filesystem holding ``/boot`` when run as root, so it is
never run on a sysroot on the machine's disk. :func:`run_admin_scenario` runs a whole shell
scenario inside ``unshare -m`` on a private tmpfs (``$T``), with
``OSTREE_SYSROOT_DEBUG=mutable-deployments``; tmpfs has no freeze, so ostree falls back to
``syncfs``. Everything on the tmpfs vanishes when the namespace exits, so the scenario copies
what the test needs into ``$OUT`` (a directory on disk), e.g. with :data:`EXPORT_LAYOUT`.

Plain repository commands (``ostree init``, ``commit``, ``pull-local``, ``refs``) never freeze
anything and run directly through :func:`ostree`; :func:`ostree` refuses ``admin``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

OSTREE = shutil.which("ostree")
UNSHARE = shutil.which("unshare")

KVER = "6.1.0-test"

#: Shell snippet: copy a sysroot's boot configuration and bootlinks (not the deployments) from
#: ``$SYSROOT`` to ``$OUT/$NAME``; symlinks stay symlinks.
EXPORT_LAYOUT = r"""
export_layout() {
  ( cd "$1" && tar -cf - boot ostree/boot.* \
      $(ls -d ostree/deploy/*/deploy/*.origin 2>/dev/null) ) |
    ( mkdir -p "$2" && cd "$2" && tar -xf - )
}
"""


def can_run_admin() -> bool:
    """True when the real ostree is installed and we may make a private tmpfs (root)."""
    return OSTREE is not None and UNSHARE is not None and os.geteuid() == 0


needs_ostree = pytest.mark.skipif(OSTREE is None, reason="needs the real ostree binary")
needs_admin = pytest.mark.skipif(
    not can_run_admin(), reason="needs the real ostree, unshare and root (private tmpfs)"
)


def ostree(*args: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a non-admin ``ostree`` command and return the completed process (text)."""
    assert OSTREE is not None, "ostree is not installed"
    if args and str(args[0]) == "admin":
        raise ValueError("ostree admin must run inside run_admin_scenario()")
    return subprocess.run(
        [OSTREE, *map(str, args)], check=check, capture_output=True, text=True, timeout=120
    )


def make_os_tree(
    dest: Path, *, version: str, kernel: str = "v1", etc: Mapping[str, str] | None = None,
    pretty_name: str = "TestOS Linux", kver: str = KVER, initramfs: bool = True,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """A tiny fake OS: kernel + initramfs under ``usr/lib/modules/KVER``, ``usr/lib/os-release``,
    default config in ``usr/etc`` and the usual top-level directories."""
    if dest.exists():
        shutil.rmtree(dest)
    mod = dest / "usr/lib/modules" / kver
    mod.mkdir(parents=True)
    (mod / "vmlinuz").write_text(f"FAKEKERNEL {kernel}\n")
    if initramfs:
        (mod / "initramfs.img").write_text(f"FAKEINITRD {kernel}\n")
    (dest / "usr/lib/os-release").write_text(
        f'NAME="TestOS"\nID=testos\nPRETTY_NAME="{pretty_name}"\nVERSION_ID={version}\n'
    )
    (dest / "usr/bin").mkdir(parents=True)
    (dest / "usr/bin/hello").write_text(f"#!/bin/sh\necho hello {version}\n")
    (dest / "usr/bin/hello").chmod(0o755)
    for name in ("var", "sysroot", "boot", "dev", "proc", "run", "sys", "tmp"):
        (dest / name).mkdir()
    (dest / "ostree").symlink_to("sysroot/ostree")
    (dest / "usr/etc").mkdir()
    for rel, text in (etc or {"os.conf": f"version={version}\n"}).items():
        path = dest / "usr/etc" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for rel, text in (extra or {}).items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return dest


def init_repo(path: Path, mode: str = "bare") -> Path:
    ostree("init", f"--repo={path}", f"--mode={mode}")
    return path


def commit(repo: Path, tree: Path, branch: str, *, version: str | None = None,
           subject: str = "", extra_args: tuple[str, ...] = ()) -> str:
    """``ostree commit`` (root-owned files, fixed timestamp so runs are reproducible)."""
    args = [f"--repo={repo}", "commit", f"--branch={branch}", "--owner-uid=0", "--owner-gid=0",
            "--timestamp=2024-01-01 00:00:00 UTC", f"--subject={subject or branch}",
            *extra_args]
    if version is not None:
        args.append(f"--add-metadata-string=version={version}")
    ostree(*args, str(tree))
    return ostree(f"--repo={repo}", "rev-parse", branch).stdout.strip()


def pull_local(dest_repo: Path, src_repo: Path, *refs: str) -> None:
    ostree(f"--repo={dest_repo}", "pull-local", str(src_repo), *refs)


def run_admin_scenario(
    workdir: Path, script: str, *, env: Mapping[str, str] | None = None, timeout: float = 180,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh, ``set -e``) in a private mount namespace on a fresh tmpfs.

    Variables for the script: ``$T`` the tmpfs mount point (its own directory under
    ``workdir``, hidden from everyone else), ``$OUT`` = ``workdir/out`` on disk for results,
    ``$OSTREE`` the binary, and the shell function ``export_layout SYSROOT DEST``.
    """
    if not can_run_admin():
        pytest.skip("needs the real ostree, unshare and root")
    mnt = workdir / "tmpfs"
    out = workdir / "out"
    mnt.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    prologue = (
        "set -e\n"
        f"T={shlex.quote(str(mnt))}\nOUT={shlex.quote(str(out))}\n"
        f"OSTREE={shlex.quote(str(OSTREE))}\n"
        'mount -t tmpfs -o mode=0755 pyostree-test "$T"\n'
        "export OSTREE_SYSROOT_DEBUG=mutable-deployments\n"
        + EXPORT_LAYOUT
    )
    full_env = dict(os.environ)
    full_env.pop("OSTREE_SYSROOT", None)
    full_env.update(env or {})
    assert UNSHARE is not None
    result = subprocess.run(
        [UNSHARE, "--mount", "--propagation", "private", "sh", "-c", prologue + script],
        capture_output=True, text=True, timeout=timeout, env=full_env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"admin scenario failed ({result.returncode}):\nSTDOUT:\n{result.stdout}\n"
            f"STDERR:\n{result.stderr}"
        )
    return result


def snapshot_layout(root: Path) -> dict[str, tuple[str, str]]:
    """``relative path -> (kind, content)`` for a sysroot's boot configuration and bootlinks:
    ``boot/loader*``, ``boot/boot``, ``ostree/boot.*`` and origin files (not ``boot/ostree``
    file contents, only their names and sizes)."""
    result: dict[str, tuple[str, str]] = {}
    wanted = [root / "boot", *sorted((root / "ostree").glob("boot.*"))]
    wanted += sorted((root / "ostree/deploy").glob("*/deploy/*.origin"))
    for top in wanted:
        if not os.path.lexists(top):
            continue
        paths = [top] if top.is_symlink() or not top.is_dir() else [top, *top.rglob("*")]
        for path in paths:
            rel = str(path.relative_to(root))
            if path.is_symlink():
                result[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                result[rel] = ("dir", "")
            elif rel.startswith("boot/ostree/"):
                result[rel] = ("file", f"{path.stat().st_size} bytes")
            else:
                result[rel] = ("file", path.read_text())
    return result
