"""The staging directory of a transaction: ``XX/REST.EXT`` like ``objects/``, prefix directories
moved whole at commit when ``objects/`` lacks them, merged file by file when it has them, temp
files never committed, and crashed staging directories (both layouts) re-verified on adoption."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pyostree.core import ObjectType
from pyostree.errors import ChecksumError
from pyostree.formats.content import FileHeader, content_checksum
from pyostree.repo import Repo, RepoMode
from pyostree.transaction import ContentWriter, Transaction

REG = 0o100644


def write_file(txn: Transaction, data: bytes) -> str:
    header = FileHeader(0, 0, REG, "", (), len(data))
    return txn.write_content(header, [data], content_checksum(header, [data]))


def objects_in(repo: Repo) -> set[str]:
    return {f"{p.parent.name}{p.name.partition('.')[0]}" for p in repo.objects_dir.glob("*/*")}


@pytest.mark.parametrize("mode", [RepoMode.BARE_USER, RepoMode.ARCHIVE])
def test_staged_objects_are_laid_out_as_in_objects(tmp_path: Path, mode: RepoMode) -> None:
    repo = Repo.create(tmp_path / "repo", mode=mode)
    txn = Transaction(repo)
    txn.begin()
    csum = write_file(txn, b"hello")
    assert txn.staging is not None
    ext = "filez" if mode is RepoMode.ARCHIVE else "file"
    staged = txn.staging / csum[:2] / f"{csum[2:]}.{ext}"
    assert staged.is_file()
    assert txn.staged_path(ObjectType.FILE, csum) == staged
    assert txn.has_object(ObjectType.FILE, csum)
    assert not repo.has_object(ObjectType.FILE, csum)
    # Temp files never stay behind, at the top or in the prefix directories.
    assert not list(txn.staging.glob("tmp-*")) and not list(txn.staging.glob("??/tmp-*"))
    assert txn.commit() == 1
    assert repo.object_path(ObjectType.FILE, csum).is_file()
    assert repo.open_content(csum)[0].size == 5


def test_commit_moves_new_prefixes_whole_and_merges_existing_ones(tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "repo", mode=RepoMode.BARE_USER)
    with repo.transaction() as txn:
        first = {write_file(txn, f"old {i}".encode()) for i in range(40)}
    assert objects_in(repo) == first
    txn = Transaction(repo)
    txn.begin()
    second = {write_file(txn, f"new {i}".encode()) for i in range(400)}
    new_prefixes = {c[:2] for c in second} - {c[:2] for c in first}
    shared = {c[:2] for c in second} & {c[:2] for c in first}
    assert new_prefixes and shared  # both cases happen
    assert txn.staging is not None
    staging = txn.staging
    # A stray temp file (a writer that failed) is dropped, never committed.
    stray = staging / next(iter(shared)) / "tmp-1-1"
    stray.write_bytes(b"half")
    assert txn.commit() == len(second)
    assert objects_in(repo) == first | second
    assert not staging.exists()
    for csum in first | second:
        data = repo.open_content(csum)[1]
        assert data is not None
        with data:
            header = repo.read_content_header(csum)
            assert content_checksum(header, [data.read()]) == csum
    assert not list(repo.objects_dir.glob("*/tmp-*"))


def test_metadata_replaces_a_staged_copy(tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "repo", mode=RepoMode.BARE_USER)
    from pyostree import gvariant

    meta1 = gvariant.encode("a{sv}", {"a": gvariant.Variant("s", "1")})
    meta2 = gvariant.encode("a{sv}", {"a": gvariant.Variant("s", "2")})
    commit = "ab" * 32
    with repo.transaction() as txn:
        txn.write_metadata(ObjectType.COMMIT_META, meta1, commit)
        txn.write_metadata(ObjectType.COMMIT_META, meta2, commit)
        staged = txn.staged_path(ObjectType.COMMIT_META, commit)
        assert staged is not None and staged.read_bytes() == meta2
    assert repo.object_path(ObjectType.COMMIT_META, commit).read_bytes() == meta2


def crash(txn: Transaction) -> Path:
    """Leave the staging directory as a killed process would (lock released with the fd)."""
    assert txn.staging is not None
    staging = txn.staging
    assert txn._lock_cm is not None
    txn._lock_cm.__exit__(None, None, None)
    return staging


def test_adoption_reverifies_both_layouts(tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "repo", mode=RepoMode.BARE_USER)
    txn = Transaction(repo)
    txn.begin()
    good = write_file(txn, b"good")
    bad = write_file(txn, b"will be corrupted")
    old = crash(txn)
    corrupted = old / bad[:2] / f"{bad[2:]}.file"
    os.chmod(corrupted, 0o644)
    corrupted.write_bytes(b"garbage")
    (old / good[:2] / "tmp-9-9").write_bytes(b"half-written")
    # The flat layout of older versions: CSUM.EXT at the top.
    flat_data = b"from an older staging directory"
    header = FileHeader(0, 0, REG, "", (), len(flat_data))
    flat = content_checksum(header, [flat_data])
    older = repo.tmp_dir / "staging-old-layout"
    older.mkdir()
    path = older / f"{flat}.file"
    path.write_bytes(flat_data)
    os.setxattr(path, "user.ostreemeta", header.ostreemeta())
    dirtree = b"\0"  # not a dirtree at all: dropped
    (old / "cd").mkdir(exist_ok=True)
    (old / "cd" / f"{hashlib.sha256(dirtree).hexdigest()[2:]}.dirtree").write_bytes(dirtree)

    with repo.transaction() as txn2:
        assert txn2.has_object(ObjectType.FILE, good)
        assert txn2.has_object(ObjectType.FILE, flat)
        assert not txn2.has_object(ObjectType.FILE, bad)
    assert objects_in(repo) == {good, flat}
    assert not list(repo.tmp_dir.glob("staging-*"))


def test_content_writer_with_expected_writes_beside_its_object_and_checks_it(
        tmp_path: Path) -> None:
    """A writer told the expected checksum makes its temp file in the object's own prefix
    directory (so staging it is a same-directory rename) and refuses data that does not hash
    to it, leaving nothing behind."""
    repo = Repo.create(tmp_path / "repo", mode=RepoMode.BARE_USER)
    txn = Transaction(repo)
    txn.begin()
    assert txn.staging is not None
    header = FileHeader(0, 0, REG, "", (), 5)
    good = content_checksum(header, [b"hello"])
    writer = ContentWriter(txn, header, expected=good)
    assert Path(writer.path).parent == txn.staging / good[:2]
    writer.write(b"hello")
    assert writer.finish() == good
    assert txn.staged_path(ObjectType.FILE, good) is not None

    bad = ContentWriter(txn, header, expected="ab" * 32)
    assert Path(bad.path).parent == txn.staging / "ab"
    bad.write(b"hellO")
    with pytest.raises(ChecksumError):
        bad.finish()
    assert not (txn.staging / "ab").exists() or not list((txn.staging / "ab").iterdir())
    txn.abort()
