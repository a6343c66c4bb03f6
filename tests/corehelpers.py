"""Shared helpers for the core tests: the checked-in fixtures, test trees, and running the CLIs.

The fixtures in ``tests/data/fixtures`` were made by ``tests/data/make-fixtures.sh`` with the real
ostree. git keeps bytes and symlinks but not the owner, mode or xattrs of the bare-mode content
objects, so :func:`restore_repo` puts those back from ``manifest.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyostree.cli import main as cli_main
from pyostree.repo import Repo

FIXTURES = Path(__file__).parent / "data" / "fixtures"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "manifest.json").read_text())
MODES = ("archive", "bare", "bare-user", "bare-user-only")
COMMITS_FIRST_SECOND = (MANIFEST["commits"]["first"], MANIFEST["commits"]["second"])
OSTREE = shutil.which("ostree")
IS_ROOT = os.geteuid() == 0
TS1 = 1704067200  # 2024-01-01T00:00:00Z, the fixtures' first commit
TS2 = 1706877296  # 2024-02-02T12:34:56Z, the fixtures' second commit

needs_ostree = pytest.mark.skipif(OSTREE is None, reason="needs the real ostree binary")


def user_xattrs_ok(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory``'s filesystem takes user.* xattrs on files and directories."""
    probe = Path(tempfile.mkdtemp(dir=directory, prefix=".xattr-probe"))
    try:
        os.setxattr(probe, "user.probe", b"1")
        (probe / "f").write_bytes(b"")
        os.setxattr(probe / "f", "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


@contextlib.contextmanager
def local_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path`` if it takes user xattrs, else a directory on the local disk (/var/tmp)
    when that takes them (else ``tmp_path`` still)."""
    if user_xattrs_ok(tmp_path) or not user_xattrs_ok("/var/tmp"):
        yield tmp_path
        return
    work = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="pyostree-test-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def restore_repo(mode: str, dest: Path) -> Repo:
    """Copy the fixture repository of ``mode`` to ``dest`` and restore what git lost."""
    shutil.copytree(FIXTURES / mode, dest, symlinks=True)
    for sub in ("tmp", "state", "extensions", "refs/heads", "refs/remotes", "refs/mirrors"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    entries = MANIFEST["content"].get(mode, {})
    if entries and mode != "bare-user-only":
        needs_xattrs = mode == "bare-user" or any(e.get("xattrs") for e in entries.values())
        if needs_xattrs and not user_xattrs_ok(dest):
            pytest.skip(f"{dest} does not take user.* xattrs")
        if mode == "bare" and not IS_ROOT:
            pytest.skip("restoring a bare repository needs root (object owners)")
    for rel, entry in entries.items():
        path = dest / "objects" / rel
        if "target" in entry:
            assert os.readlink(path) == entry["target"]
            if IS_ROOT:
                os.lchown(path, entry["uid"], entry["gid"])
            os.utime(path, ns=(0, 0), follow_symlinks=False)
            continue
        for name, value in entry["xattrs"].items():
            os.setxattr(path, name, bytes.fromhex(value))
        if IS_ROOT:
            os.chown(path, entry["uid"], entry["gid"])
        os.chmod(path, stat.S_IMODE(entry["mode"]))
        os.utime(path, ns=(0, 0))
    return Repo.open(dest)


def metadata_objects(mode: str) -> list[Path]:
    """Every metadata object of a fixture repository."""
    exts = (".commit", ".dirtree", ".dirmeta", ".commitmeta", ".tombstone-commit")
    return sorted(p for p in (FIXTURES / mode / "objects").glob("*/*") if p.name.endswith(exts))


def object_checksum(path: Path) -> str:
    return path.parent.name + path.name.partition(".")[0]


def make_tree(root: Path, *, xattrs: bool, large: bool = True, owners: bool = IS_ROOT,
              seed: int = 7) -> Path:
    """A tree with every kind of entry ostree handles (what the interop tests commit)."""
    rng = random.Random(seed)
    root.mkdir(parents=True)

    def write(rel: str, data: bytes, mode: int = 0o644) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, mode)
        return path

    write("readme.txt", b"hello world\n")
    write("bin/tool", b"#!/bin/sh\nexit 0\n", 0o755)
    write("bin/setuid", b"suid\n", 0o4755)
    write("empty", b"")
    write("private", b"mine\n", 0o600)
    write("a/b/c/d/deep.txt", b"nested\n" * 50)
    write("caf\u00e9/\u00fcnicode \u2603.txt", b"utf-8\n")
    write("sp ace/with space", b"space\n")
    (root / "emptydir").mkdir()
    (root / "a" / "emptysub").mkdir()
    os.symlink("readme.txt", root / "link")
    os.symlink("/absolute/target", root / "bin" / "abs-link")
    os.symlink("../readme.txt", root / "a" / "up-link")
    os.symlink("a/b", root / "dirlink")
    if large:
        with open(root / "large.bin", "wb") as fh:
            for _ in range(24):  # 1.5 MiB, streamed
                fh.write(rng.randbytes(64 * 1024))
    if xattrs:
        conf = write("etc/with-xattrs", b"x\n")
        os.setxattr(conf, "user.zz", b"last")
        os.setxattr(conf, "user.aa", b"first\x00binary\xff")
        os.setxattr(root / "etc", "user.dir", b"d")
    if owners:
        owned = write("home/user/file", b"owned\n", 0o640)
        os.chown(owned, 1000, 1001)
        os.chown(owned.parent, 1000, 1001)
        os.lchown(root / "link", 1000, 1000)
    for sub in (root, root / "a"):
        os.chmod(sub, 0o755)
    return root


def run_cli(*args: str | os.PathLike[str]) -> tuple[int, bytes, str]:
    """Run ``pyostree ARGS`` in-process: (exit code, stdout bytes, stderr text)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    err = io.StringIO()
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = cli_main([str(a) for a in args])
    finally:
        sys.stdout, sys.stderr = old_out, old_err
    out.flush()
    raw = out.buffer
    assert isinstance(raw, io.BytesIO)
    return code, raw.getvalue(), err.getvalue()


def run_pyostree_process(*args: str | os.PathLike[str],
                         cwd: str | os.PathLike[str] | None = None,
                         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pyostree ARGS`` as a real process."""
    return subprocess.run([sys.executable, "-m", "pyostree", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, check=False)


def ostree(*args: str | os.PathLike[str], check: bool = True,
           text: bool = True) -> subprocess.CompletedProcess[Any]:
    """Run the real ostree."""
    assert OSTREE is not None
    proc = subprocess.run([OSTREE, *map(str, args)], capture_output=True, text=text,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"ostree {' '.join(map(str, args))} failed: {proc.stderr}")
    return proc


def snapshot(root: Path, *, ownership: bool = True) -> dict[str, tuple[Any, ...]]:
    """What a checkout looks like: per path, type, permission bits, owner, data, xattrs."""
    result: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = os.lstat(path)
            owner = (st.st_uid, st.st_gid) if ownership else ()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ("l", os.readlink(path), owner)
                continue
            names = sorted(n for n in os.listxattr(path) if not n.startswith("security."))
            xattrs = tuple((n, os.getxattr(path, n)) for n in names)
            kind = "d" if stat.S_ISDIR(st.st_mode) else "-"
            data = path.read_bytes() if kind == "-" else b""
            result[rel] = (kind, oct(stat.S_IMODE(st.st_mode)), owner, data, xattrs)
    return result


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]
