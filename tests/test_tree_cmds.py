"""``pyostree diff`` and ``pyostree export`` against the real ``ostree diff`` and ``ostree export``.

Two versions of a tree with every kind of change (content only, mode only, a file that becomes
a directory, a symlink retargeted, files and directories added and removed, non-ASCII and
long names, xattrs, another owner) are committed by the real ``ostree commit``. ``diff`` must
print exactly what ostree prints, byte for byte, for commits and directories on either side
and with each option; ``export`` must give archives that read back (with :mod:`tarfile`) as
the same members with the same attributes and contents as ostree's. Failures are one
``error:`` line from a real process and leave nothing at ``--output``.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyostree.formats import tar
from pyostree.glibdir import glib_enumeration_order

from .corehelpers import IS_ROOT, needs_ostree, ostree, run_cli, user_xattrs_ok
from .pullhelpers import assert_one_error, pyostree, pyostree_env

pytestmark = [pytest.mark.interop, needs_ostree]

TS = "2024-03-04 05:06:07 UTC"
LONG = "long-" + "n" * 110  # over the 100 bytes of a tar header's name field


def _write(root: Path, rel: str, data: bytes, mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _make_v1(root: Path, *, xattrs: bool) -> None:
    _write(root, "readme.txt", b"hello\n")
    _write(root, "bin/tool", b"#!/bin/sh\nexit 0\n", 0o755)
    _write(root, "bin/script", b"#!/bin/sh\necho hi\n")  # 0755 in v2: mode only
    _write(root, "data/content.txt", b"old\n")  # "new\n" in v2: content only, same size
    _write(root, "empty", b"")
    _write(root, "gone.txt", b"removed in v2\n")
    _write(root, "olddir/sub/file", b"a removed directory\n")
    _write(root, "a/b/c/deep.txt", b"nested\n" * 40)
    _write(root, "typechange", b"a file, then a directory\n")
    _write(root, f"dir/{LONG}", b"a long name\n")
    _write(root, "big.bin", random.Random(5).randbytes(600 * 1024))
    (root / "emptydir").mkdir()
    os.symlink("readme.txt", root / "link")
    os.symlink("readme.txt", root / "relink")  # retargeted in v2
    os.symlink("/" + "t" * 150, root / "longlink")
    if xattrs:
        conf = _write(root, "etc/with-xattrs", b"x\n")
        os.setxattr(conf, "user.zz", b"last")
        os.setxattr(conf, "user.aa", b"first\x00binary\xff")
        os.setxattr(root / "etc", "user.dir", b"d")
    if IS_ROOT:
        owned = _write(root, "home/user/file", b"owned\n", 0o640)
        os.chown(owned, 1000, 1001)
        os.chown(owned.parent, 1000, 1001)
    for d in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
        d.chmod(0o755)


def _make_v2(v1: Path, root: Path) -> None:
    shutil.copytree(v1, root, symlinks=True)
    (root / "bin/script").chmod(0o755)
    (root / "data/content.txt").write_bytes(b"new\n")
    (root / "gone.txt").unlink()
    shutil.rmtree(root / "olddir")
    (root / "typechange").unlink()
    _write(root, "typechange/inside", b"now a directory\n")
    (root / "relink").unlink()
    os.symlink("bin/tool", root / "relink")
    _write(root, "new.txt", b"added\n")
    _write(root, "newdir/x/y.txt", b"added deep\n")
    _write(root, "caf\u00e9/\u00fcnicode \u2603.txt", b"utf-8\n")
    (root / "newdir/emptysub").mkdir()
    for d in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
        d.chmod(0o755)
    (root / "a/b").chmod(0o700)  # a directory's mode changes


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``t1``, ``t2`` (directories) and the repos ``bare``, ``archive`` and ``bare-user-only``,
    each with ``v1`` and ``v2`` (its child) committed from them by the real ostree."""
    root = tmp_path_factory.mktemp("tree-cmds")
    xattrs = user_xattrs_ok(root)
    _make_v1(root / "t1", xattrs=xattrs)
    _make_v2(root / "t1", root / "t2")
    for mode in ("bare", "archive", "bare-user-only"):
        repo = root / mode
        ostree("init", f"--repo={repo}", f"--mode={mode}")
        parent = "none"
        for branch, tree in (("v1", "t1"), ("v2", "t2")):
            parent = ostree(f"--repo={repo}", "commit", f"--branch={branch}",
                            f"--parent={parent}", f"--timestamp={TS}", f"--subject={branch}",
                            root / tree).stdout.strip()
    return root


@pytest.fixture
def in_work(work: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(work)  # ostree takes "./DIR" as a directory, "DIR" as a rev
    yield work


def _same_diff(repo: str, *args: str) -> bytes:
    """Run both diffs; pyostree's stdout must be ostree's, byte for byte. Returns it."""
    real = ostree(f"--repo={repo}", "diff", *args, text=False)
    code, out, err = run_cli(f"--repo={repo}", "diff", *args)
    assert code == 0, err
    assert out == real.stdout, (f"diff {' '.join(args)}:\n--- ostree\n"
                                f"{real.stdout.decode()}--- pyostree\n{out.decode()}")
    return out


def _letters(out: bytes) -> set[str]:
    return {line[:1] for line in out.decode().splitlines()}


# ------------------------------------------------------------------------------------ diff


@pytest.mark.parametrize("mode", ["bare", "archive"])
def test_diff_commits_and_directories(in_work: Path, mode: str) -> None:
    everything = {"M", "D", "A"}
    assert _letters(_same_diff(mode, "v1", "v2")) == everything
    assert _letters(_same_diff(mode, "v2", "v1")) == everything
    assert _same_diff(mode, "v2") == _same_diff(mode, "v1", "v2")  # REV alone: REV^ REV
    assert _same_diff(mode, "v1", "v1") == b""
    assert _letters(_same_diff(mode, "v1", "./t2")) == everything  # rev, dir
    assert _letters(_same_diff(mode, "./t1", "v2")) == everything  # dir, rev
    assert _letters(_same_diff(mode, "./t2", "./t1")) == everything  # dir, dir
    _same_diff(mode, "v2", str(in_work / "t2"))  # an absolute path is a directory too
    _same_diff(mode, "./t1", "v1")
    _same_diff(mode, "--fs-diff", "v1", "v2")


@pytest.mark.parametrize("mode", ["bare", "archive"])
def test_diff_options(in_work: Path, mode: str) -> None:
    # The owner options apply to the second tree only (when it is a directory), as in ostree.
    moved = _same_diff(mode, "--owner-uid=4242", "--owner-gid=4343", "v1", "./t1")
    assert moved.count(b"\n") > 10  # every file and directory now has another owner
    _same_diff(mode, "--owner-uid=4242", "./t1", "v1")
    _same_diff(mode, "--owner-uid=0", "--owner-gid=0", "v2", "./t2")
    _same_diff(mode, "--no-xattrs", "v1", "./t1")
    _same_diff(mode, "--no-xattrs", "./t2", "./t1")
    stats = _same_diff(mode, "--stats", "v1", "v2")
    assert stats.startswith(b"[A] Object Count: ")
    _same_diff(mode, "--stats", "v2")
    _same_diff(mode, "--stats", "--fs-diff", "v1", "v2")
    _same_diff(mode, "--stats", "--fs-diff", "v1", "v1")


def test_diff_bare_user_only_ignores_xattrs(in_work: Path) -> None:
    # ostree leaves xattrs out when a side is a bare-user-only repository (it stores none).
    _same_diff("bare-user-only", "v1", "./t1")
    _same_diff("bare-user-only", "./t2", "v2")


def test_diff_directory_order_is_glibs(in_work: Path, tmp_path: Path) -> None:
    # Over 1000 entries: GLib reads a directory in chunks of 1000, each sorted by inode.
    many = tmp_path / "many"
    shutil.copytree(in_work / "t1", many, symlinks=True)
    rng = random.Random(9)
    for i in range(1500):
        (many / "bin" / f"f{rng.randrange(10**9):09d}-{i}").write_bytes(b"%d\n" % i)
    for name in sorted(os.listdir(many / "a/b/c"))[:1]:
        (many / "a/b/c" / name).unlink()
    out = _same_diff("bare", "v1", str(many))
    assert out.count(b"\nA    ") >= 1499
    _same_diff("bare", str(many), "v1")


def test_glib_order_with_distant_inodes() -> None:
    # Inodes more than 2**31 apart make GLib's comparison inconsistent; then glibc's merge
    # sort decides. With close inodes it is a plain stable sort by inode, chunk by chunk.
    close = [(f"n{i}", (i * 7919) % 1201) for i in range(2500)]
    expected: list[str] = []
    for start in range(0, 2500, 1000):
        expected += [n for n, _ in sorted(close[start:start + 1000], key=lambda e: e[1])]
    assert glib_enumeration_order(close) == expected
    far = [("a", 5), ("b", 5 + 3 * 2**30), ("c", 6), ("d", 2**33 + 1)]
    assert sorted(glib_enumeration_order(far)) == ["a", "b", "c", "d"]


# ------------------------------------------------------------------------------------ export


def _members(data: bytes) -> list[tuple[Any, ...]]:
    """Every member as tarfile reads it: name, type, mode, owner, time, link, data, and the
    pax records (where xattrs would be)."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for m in archive:
            handle = archive.extractfile(m) if m.isreg() else None
            content = handle.read() if handle is not None else b""
            out.append((m.name, m.type, oct(m.mode), m.uid, m.gid, m.uname, m.gname, m.mtime,
                        m.linkname, m.size, content, m.pax_headers))
    return out


def _export(repo: str, *args: str) -> bytes:
    code, out, err = run_cli(f"--repo={repo}", "export", *args)
    assert code == 0, err
    return out


@pytest.mark.parametrize("mode", ["bare", "archive"])
@pytest.mark.parametrize("options", [
    [], ["--subpath=/a"], ["--subpath=dir"], ["--prefix=pre/"], ["--prefix=pre"],
    ["--prefix=out/", "--subpath=/a/b"], ["--no-xattrs"],
], ids=lambda o: " ".join(o) or "plain")
def test_export_matches_ostree(work: Path, mode: str, options: list[str]) -> None:
    repo = str(work / mode)
    real = ostree(f"--repo={repo}", "export", "v2", *options, text=False).stdout
    ours = _export(repo, "v2", *options)
    assert _members(ours) == _members(real)
    assert len(ours) == len(real)  # padded to whole 10240-byte records, as libarchive does
    if not options:  # GNU long-name and long-link records were needed
        assert any(len(m[0]) > 100 for m in _members(ours))
        assert any(len(m[8]) > 100 for m in _members(ours))


def test_export_output_file(work: Path, tmp_path: Path) -> None:
    repo = str(work / "bare")
    ostree(f"--repo={repo}", "export", "v1", f"--output={tmp_path / 'real.tar'}")
    out = tmp_path / "ours.tar"
    out.write_bytes(b"an older file that is replaced")
    code, stdout, err = run_cli(f"--repo={repo}", "export", "v1", "-o", out)
    assert (code, stdout, err) == (0, b"", "")
    real = (tmp_path / "real.tar").read_bytes()
    assert _members(out.read_bytes()) == _members(real)
    assert out.stat().st_size == len(real)  # a regular file is not padded to a record
    assert sorted(os.listdir(tmp_path)) == ["ours.tar", "real.tar"]  # no temp file left
    xattrs = [m for m in _members(real) if m[0] == "etc/with-xattrs"]
    assert not xattrs or xattrs[0][-1] == {}  # ostree's GNU tar has no xattrs; nor has ours


def test_tar_header_numbers_read_back() -> None:
    # Owners and sizes beyond the octal fields use GNU base-256, as libarchive writes them.
    data = tar.member_header(b"x" * 150, typeflag=tar.SYMTYPE, mode=0o120777, uid=2**24,
                             gid=7, size=0, mtime=1700000000, linkname=b"/" + b"t" * 200)
    data += tar.member_header(b"big", typeflag=tar.REGTYPE, mode=0o100644, uid=1, gid=2**31,
                              size=0, mtime=-5)
    data += tar.end_of_archive(len(data))
    assert len(data) % tar.RECORD_SIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        first, second = archive.getmembers()
    assert (first.name, first.uid, first.linkname, first.mode) == (
        "x" * 150, 2**24, "/" + "t" * 200, 0o777)
    assert (second.name, second.gid, second.mtime) == ("big", 2**31, 0)


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("args, needle", [
    (["no-such-ref", "v1"], "no-such-ref"),
    (["v1", "./no-such-dir"], "no-such-dir"),
    (["./t1/readme.txt", "v1"], "not a directory"),
    (["--stats", "./t1", "v1"], "./t1"),
    (["v1^"], "no parent"),
])
def test_diff_errors(in_work: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    proc = pyostree("--repo=bare", "diff", *args, env=pyostree_env(tmp_path))
    assert_one_error(proc, needle)
    assert proc.stdout == ""


@pytest.mark.parametrize("args, needle", [
    (["no-such-ref"], "no-such-ref"),
    (["--subpath=/no/such/dir", "v1"], "no such file"),
    (["--subpath=/readme.txt", "v1"], "not a directory"),
    (["--subpath=../etc", "v1"], "subpath"),
])
def test_export_errors_leave_no_output(work: Path, tmp_path: Path, args: list[str],
                                       needle: str) -> None:
    out = tmp_path / "out" / "x.tar"
    out.parent.mkdir()
    proc = pyostree(f"--repo={work / 'bare'}", "export", *args, f"--output={out}",
                    env=pyostree_env(tmp_path))
    assert_one_error(proc, needle)
    assert os.listdir(out.parent) == []


def test_export_unwritable_output(work: Path, tmp_path: Path) -> None:
    env = pyostree_env(tmp_path)
    (tmp_path / "a-file").write_bytes(b"")
    (tmp_path / "a-dir").mkdir()
    before = sorted(os.listdir(tmp_path))
    for target in (tmp_path / "a-file" / "x.tar", tmp_path / "missing" / "x.tar",
                   tmp_path / "a-dir"):
        proc = pyostree(f"--repo={work / 'bare'}", "export", "v1", "-o", target, env=env)
        assert_one_error(proc, "writing", str(target))
    assert sorted(os.listdir(tmp_path)) == before
    assert os.listdir(tmp_path / "a-dir") == []


def test_export_failing_midway_keeps_the_old_output(work: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(work / "archive", repo, symlinks=True)
    listing = ostree(f"--repo={repo}", "ls", "-C", "v1", "/data/content.txt").stdout.split()
    csum = listing[4]
    (repo / "objects" / csum[:2] / f"{csum[2:]}.filez").unlink()
    out = tmp_path / "out" / "x.tar"
    out.parent.mkdir()
    out.write_bytes(b"the previous archive")
    proc = pyostree(f"--repo={repo}", "export", "v1", f"--output={out}",
                    env=pyostree_env(tmp_path))
    assert_one_error(proc, csum)
    assert os.listdir(out.parent) == ["x.tar"]
    assert out.read_bytes() == b"the previous archive"
