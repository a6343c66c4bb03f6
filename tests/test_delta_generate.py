"""Deltas pyostree generates with big files in them: files over ``--min-fallback-size`` become
fallback objects the way ``ostree static-delta generate`` makes them, parts are capped by
``--max-chunk-size``, and a file of any size streams through a part without being held in
memory. The real ostree pulls and applies every delta made here."""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import pytest

from pyostree.deltas import read_superblock
from pyostree.formats.delta import OBJ_FILE, DeltaSuperblock, delta_dir, delta_superblock_path

from .httpserver import FaultServer
from .pullhelpers import (
    MiB,
    assert_one_error,
    cli,
    commit,
    file_of,
    fsck_both,
    init_repo,
    ls_tree,
    make_client,
    needs_ostree,
    object_rel,
    ostree,
    pyostree,
    pyostree_env,
    run_measured,
    write_tree,
)

pytestmark = [pytest.mark.interop, needs_ostree]

MB = 1_000_000


def write_big(path: Path, size: int, seed: int) -> None:
    """``size`` bytes that xz squeezes quickly but not to nothing: a 64 KiB random block
    repeated, each copy stamped with its index."""
    block = random.Random(seed).randbytes(64 * 1024)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        written = 0
        index = 0
        while written < size:
            piece = (index.to_bytes(8, "big") + block[8:])[: size - written]
            fh.write(piece)
            written += len(piece)
            index += 1


def content_checksum(repo: Path, rev: str, path: str) -> str:
    """The content object checksum of ``path`` in ``rev`` (``ostree ls -C``)."""
    out = ostree(f"--repo={repo}", "ls", "-C", rev, path).stdout.split()
    return out[4]


def superblock(repo: Path, to: str) -> DeltaSuperblock:
    return read_superblock(file_of(repo, delta_superblock_path(None, to)))[0]


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An archive repo: small files, a 1.5 MB file and a 4.5 MB file."""
    base = tmp_path_factory.mktemp("biggen")
    tree = write_tree(base / "tree", 1, nfiles=6)
    write_big(tree / "data" / "mid.bin", 1_500_000, 1)
    write_big(tree / "data" / "big.bin", 4_500_000, 2)
    repo = init_repo(base / "repo")
    return repo, commit(repo, tree, "main", subject="big")


def test_fallbacks_and_capped_parts_pulled_by_ostree(big_repo: tuple[Path, str],
                                                     tmp_path: Path) -> None:
    src, rev = big_repo
    repo = tmp_path / "server"
    shutil.copytree(src, repo, symlinks=True)
    cli("--repo", repo, "static-delta", "generate", "--empty", f"--to={rev}",
        "--min-fallback-size=2", "--max-chunk-size=1")
    sb = superblock(repo, rev)
    big = content_checksum(repo, rev, "/data/big.bin")
    mid = content_checksum(repo, rev, "/data/mid.bin")
    assert [(f.objtype, f.checksum) for f in sb.fallbacks] == [(OBJ_FILE, big)]
    (fallback,) = sb.fallbacks
    assert fallback.uncompressed_size == 4_500_000
    assert fallback.compressed_size == (repo / object_rel(big, "filez")).stat().st_size
    # The 1.5 MB file is in a part of its own; every other part stays under 1 MB.
    for header in sb.parts:
        if (OBJ_FILE, mid) in header.objects:
            assert len(header.objects) == 1
        else:
            assert header.usize <= 1 * MB
    assert len(sb.parts) >= 2
    ostree(f"--repo={repo}", "summary", "-u")
    with FaultServer(repo) as srv:
        client = init_repo(tmp_path / "ostree-client", "bare-user")
        ostree(f"--repo={client}", "remote", "add", "--no-gpg-verify", "origin", srv.url)
        ostree(f"--repo={client}", "pull", "origin", "main")
        fetched = [r.path for r in srv.requests]
        assert "/" + object_rel(big, "filez") in fetched, "the fallback object is fetched loose"
        assert any(p.startswith("/deltas/") and p.endswith("/0") for p in fetched)
        ours = make_client(tmp_path / "py-client", srv.url, mode="bare-user")
        cli("--repo", ours, "pull", "origin", "main")
    ostree(f"--repo={client}", "fsck")
    fsck_both(ours)
    assert ls_tree(client, rev) == ls_tree(src, rev) == ls_tree(ours, rev)


def test_default_fallback_size_is_ostrees(big_repo: tuple[Path, str], tmp_path: Path) -> None:
    """With no options both tools make the 4.5 MB file, and only it, a fallback object."""
    src, rev = big_repo
    theirs = tmp_path / "theirs"
    ours = tmp_path / "ours"
    shutil.copytree(src, theirs, symlinks=True)
    shutil.copytree(src, ours, symlinks=True)
    ostree(f"--repo={theirs}", "static-delta", "generate", "--empty", f"--to={rev}")
    cli("--repo", ours, "static-delta", "generate", "--empty", f"--to={rev}")
    expected = superblock(theirs, rev).fallbacks
    assert [f.checksum for f in expected] == [content_checksum(src, rev, "/data/big.bin")]
    assert superblock(ours, rev).fallbacks == expected


def _generate_measured(tmp_path: Path, size: int) -> tuple[Path, str, int]:
    tree = tmp_path / f"tree{size}"
    write_big(tree / "big.bin", size, 3)
    repo = init_repo(tmp_path / f"repo{size}")
    rev = commit(repo, tree, "main")
    proc, _, rss = run_measured(
        [sys.executable, "-m", "pyostree", f"--repo={repo}", "static-delta", "generate",
         "--empty", f"--to={rev}", "--min-fallback-size=0", "--max-chunk-size=1"],
        pyostree_env(tmp_path), timeout=240)
    assert proc.returncode == 0, proc.stderr
    return repo, rev, rss


def test_generate_memory_does_not_grow_with_file_size(tmp_path: Path) -> None:
    """A 40 MB file in a part costs no more memory than a 12 MB one: the blob is spooled to
    disk and compressed from there, and the file is read in chunks. (The xz encoder itself
    grows to about 100 MiB over its first 8 MiB of input, its dictionary, so both files are
    past that.)"""
    _, _, small_rss = _generate_measured(tmp_path, 12 * MB)
    repo, rev, big_rss = _generate_measured(tmp_path, 40 * MB)
    print(f"peak RSS: 12 MB file {small_rss / MiB:.1f} MiB, 40 MB file {big_rss / MiB:.1f} MiB")
    assert big_rss - small_rss < 12 * MiB
    big = content_checksum(repo, rev, "/big.bin")
    (header,) = [h for h in superblock(repo, rev).parts if (OBJ_FILE, big) in h.objects]
    assert header.usize == 40 * MB
    # The real ostree applies the delta, and the file comes out whole.
    client = init_repo(tmp_path / "client", "bare-user")
    ostree(f"--repo={client}", "static-delta", "apply-offline", str(repo / delta_dir(None, rev)))
    ostree(f"--repo={client}", "fsck")
    assert ls_tree(client, rev) == ls_tree(repo, rev)


def test_failed_generate_keeps_the_delta_already_there(big_repo: tuple[Path, str],
                                                       tmp_path: Path) -> None:
    """A generate that fails half way (an object gone) says so in one line and leaves the
    earlier delta, and nothing else, in place."""
    src, rev = big_repo
    repo = tmp_path / "repo"
    shutil.copytree(src, repo, symlinks=True)
    cli("--repo", repo, "static-delta", "generate", "--empty", f"--to={rev}")
    ddir = repo / delta_dir(None, rev)
    before = {p.name: p.read_bytes() for p in ddir.iterdir()}
    (repo / object_rel(content_checksum(repo, rev, "/data/mid.bin"), "filez")).unlink()
    proc = pyostree(f"--repo={repo}", "static-delta", "generate", "--empty", f"--to={rev}",
                    env=pyostree_env(tmp_path))
    assert_one_error(proc)
    assert {p.name: p.read_bytes() for p in ddir.iterdir()} == before
    assert sorted(p.name for p in ddir.parent.iterdir()) == [ddir.name]
    assert [p.name for p in (repo / "tmp").iterdir()] == ["cache"]  # as ostree init made it


def test_changed_big_file_is_bsdiffed_not_a_fallback(tmp_path: Path) -> None:
    """As in ostree, a file over the fallback size that has a bsdiff source (same name, a
    similar size) goes into a part as a patch; it is not fetched whole."""
    tree = write_tree(tmp_path / "tree", 1, nfiles=4)
    write_big(tree / "big.bin", 2_500_000, 4)
    repo = init_repo(tmp_path / "repo")
    v1 = commit(repo, tree, "main", subject="v1")
    with (tree / "big.bin").open("r+b") as fh:
        fh.seek(1_000_000)
        fh.write(b"version two")
    v2 = commit(repo, tree, "main", subject="v2")
    theirs = tmp_path / "theirs"
    shutil.copytree(repo, theirs, symlinks=True)
    cli("--repo", repo, "static-delta", "generate", f"--from={v1}", f"--to={v2}",
        "--min-fallback-size=1")
    ostree(f"--repo={theirs}", "static-delta", "generate", f"--from={v1}", f"--to={v2}",
           "--min-fallback-size=1")
    ours = read_superblock(file_of(repo, delta_superblock_path(v1, v2)))[0]
    assert read_superblock(file_of(theirs, delta_superblock_path(v1, v2)))[0].fallbacks == ()
    assert ours.fallbacks == ()
    assert sum(h.size for h in ours.parts) < 100_000, "the 2.5 MB file went in as a patch"
    client = init_repo(tmp_path / "client", "bare-user")
    ostree(f"--repo={client}", "pull-local", str(repo), v1)
    ostree(f"--repo={client}", "static-delta", "apply-offline", str(repo / delta_dir(v1, v2)))
    ostree(f"--repo={client}", "fsck")
    assert ls_tree(client, v2) == ls_tree(repo, v2)
