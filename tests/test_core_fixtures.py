"""Real bytes made by the real ostree (tests/data/make-fixtures.sh): every object type, every repo
mode. pyostree must parse each object, write it back byte for byte, and hash it to its name."""

from __future__ import annotations

import hashlib
import os
import stat
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from pyostree import gvariant as gv
from pyostree.commit import CommitOptions, commit_tree
from pyostree.core import EMPTY_DIRTREE, ObjectType
from pyostree.formats.content import (
    FileHeader,
    content_checksum,
    new_compressor,
    parse_archive_header,
    parse_ostreemeta,
)
from pyostree.formats.objects import (
    Commit,
    DirMeta,
    DirTree,
    parse_metadata,
    parse_object,
    serialize_metadata,
    signatures_from_metadata,
    tombstone_bytes,
)
from pyostree.maintenance import fsck, verify_object, walk_commit
from pyostree.repo import Repo, RepoMode
from pyostree.transaction import verify_staged_content

from .corehelpers import (
    FIXTURES,
    MANIFEST,
    MODES,
    TS1,
    TS2,
    local_dir,
    metadata_objects,
    object_checksum,
    restore_repo,
)

COMMITS = MANIFEST["commits"]
BUO_COMMITS = MANIFEST["commits_bare_user_only"]
ALL_METADATA = [p for mode in MODES for p in metadata_objects(mode)]


def _commits(mode: str) -> dict[str, str]:
    commits: dict[str, str] = BUO_COMMITS if mode == "bare-user-only" else COMMITS
    return commits


def test_fixture_set_is_complete() -> None:
    assert MANIFEST["ostree"] == "2022.7"
    exts = {p.name.partition(".")[2] for p in ALL_METADATA}
    assert exts == {"commit", "dirtree", "dirmeta", "commitmeta", "tombstone-commit"}
    assert list((FIXTURES / "archive" / "objects").glob("*/*.filez"))
    for mode in ("bare", "bare-user", "bare-user-only"):
        assert MANIFEST["content"][mode], mode
    size = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert size < 1_000_000


@pytest.mark.parametrize("path", ALL_METADATA,
                         ids=[f"{p.parts[-4]}/{p.name[:8]}.{p.name.partition('.')[2]}"
                              for p in ALL_METADATA])
def test_metadata_object_roundtrip(path: Path) -> None:
    data = path.read_bytes()
    csum = object_checksum(path)
    ext = path.name.partition(".")[2]
    otype = ObjectType.from_extension(ext)
    parsed = parse_object(otype, data)
    if otype in (ObjectType.COMMIT_META, ObjectType.TOMBSTONE_COMMIT):
        assert isinstance(parsed, dict)
        assert serialize_metadata(parsed) == data
        if otype is ObjectType.TOMBSTONE_COMMIT:
            assert data == tombstone_bytes(csum)
        else:
            sigs = signatures_from_metadata(parsed, "ostree.gpgsigs")
            assert sigs and all(s[0] & 0x80 for s in sigs)  # OpenPGP packets
        return
    parsers: dict[ObjectType, Any] = {
        ObjectType.COMMIT: Commit.from_bytes, ObjectType.DIRTREE: DirTree.from_bytes,
        ObjectType.DIRMETA: DirMeta.from_bytes}
    obj = parsers[otype](data)
    assert obj == parsed
    assert obj.to_bytes() == data
    assert hashlib.sha256(data).hexdigest() == csum
    if isinstance(obj, Commit):
        assert obj.checksum == csum


def test_commit_fields() -> None:
    objects = FIXTURES / "archive" / "objects"
    first = Commit.from_bytes((objects / COMMITS["first"][:2] /
                               f"{COMMITS['first'][2:]}.commit").read_bytes())
    second = Commit.from_bytes((objects / COMMITS["second"][:2] /
                                f"{COMMITS['second'][2:]}.commit").read_bytes())
    assert (first.parent, first.metadata, first.subject, first.body, first.timestamp) == (
        None, {}, "first", "", TS1)
    assert second.parent == COMMITS["first"]
    assert (second.subject, second.body, second.timestamp) == (
        "second", "A body\nwith two lines", TS2)
    assert second.version == "2.0"
    assert second.ref_bindings == ["main"]
    assert second.metadata["ostree.endoflife-count"] == gv.Variant("u", 7)
    assert second.metadata["numbers"] == gv.Variant("ai", [1, 2, 3])
    assert second.metadata["flags"] == gv.Variant("(bst)", (True, "x", 2**64 - 1))
    # Key order is the writer's, and must survive a round trip.
    assert list(second.metadata) == ["version", "ostree.endoflife-count", "numbers", "flags",
                                     "ostree.ref-binding"]


def test_tree_contents_through_repo_api(tmp_path: Path) -> None:
    repo = restore_repo("archive", tmp_path / "repo")
    commit = repo.load_commit(repo.resolve_rev("main") or "")
    root = repo.load_dirtree(commit.root_tree)
    assert [n for n, _ in root.files] == ["empty", "hello.txt", "link",
                                          "\u00fcn\u00efc\u00f6de.txt"]
    names = [n for n, _, _ in root.dirs]
    assert names == sorted(names, key=str.encode) and "emptydir" in names
    empty = dict((n, (t, m)) for n, t, m in root.dirs)["emptydir"]
    assert empty[0] == EMPTY_DIRTREE
    etc = repo.load_dirmeta(dict((n, m) for n, _, m in root.dirs)["etc"])
    assert stat.S_ISDIR(etc.mode)
    if MANIFEST["xattrs"]:
        assert etc.xattrs == ((b"user.dirattr\0", b"dir\0value"),)
    files = dict(root.files)
    link = repo.read_content_header(files["link"])
    assert link.is_symlink and link.symlink_target == "hello.txt"
    header, stream = repo.open_content(files["hello.txt"])
    assert stream is not None
    with stream:
        assert stream.read() == b"Hello again, OSTree!\n"
    assert header.size == 21 and header.mode == stat.S_IFREG | 0o644


def test_archive_content_objects_hash_to_their_names(tmp_path: Path) -> None:
    repo = restore_repo("archive", tmp_path / "repo")
    paths = sorted((tmp_path / "repo" / "objects").glob("*/*.filez"))
    assert len(paths) >= 10
    kinds = set()
    for path in paths:
        csum = object_checksum(path)
        assert verify_staged_content(repo, path) == csum
        verify_object(repo, ObjectType.FILE, csum)
        data = path.read_bytes()
        header, offset = parse_archive_header(data)
        assert header.archive_header() == data[:offset]
        if header.is_symlink:
            kinds.add("symlink")
            assert offset == len(data)
            continue
        kinds.add("empty" if header.size == 0 else "exec" if header.mode & 0o111 else "regular")
        if header.xattrs:
            kinds.add("xattrs")
        _, stream = repo.open_content(csum)
        assert stream is not None
        with stream:
            body = stream.read()
        assert len(body) == header.size
        assert content_checksum(header, [body]) == csum
        # Python's zlib reproduces libostree's raw deflate byte for byte.
        comp = new_compressor()
        assert comp.compress(body) + comp.flush() == data[offset:]
    expected = {"symlink", "empty", "exec", "regular"}
    if MANIFEST["xattrs"]:
        expected.add("xattrs")
    assert kinds == expected


@pytest.mark.parametrize("mode", ["bare", "bare-user", "bare-user-only"])
def test_bare_content_objects_hash_to_their_names(mode: str, tmp_path: Path) -> None:
    with local_dir(tmp_path) as work:
        repo = restore_repo(mode, work / "repo")
        assert repo.mode is RepoMode.parse(mode)
        for rel in MANIFEST["content"][mode]:
            path = work / "repo" / "objects" / rel
            csum = object_checksum(path)
            assert verify_staged_content(repo, path) == csum, rel
            verify_object(repo, ObjectType.FILE, csum)
            header = repo.read_content_header(csum)
            archived = FIXTURES / "archive" / "objects" / rel.replace(".file", ".filez")
            if archived.exists():  # the same object, stored differently
                assert parse_archive_header(archived.read_bytes())[0] == header
            if mode == "bare-user":
                meta = os.getxattr(path, "user.ostreemeta")
                uid, gid, fmode, xattrs = parse_ostreemeta(meta)
                assert (uid, gid, fmode, xattrs) == (header.uid, header.gid, header.mode,
                                                     header.xattrs)
                assert FileHeader(uid, gid, fmode, xattrs=xattrs).ostreemeta() == meta


@pytest.mark.parametrize("mode", MODES)
def test_fixture_repos_pass_fsck(mode: str, tmp_path: Path) -> None:
    with local_dir(tmp_path) as work:
        repo = restore_repo(mode, work / "repo")
        result = fsck(repo)
        assert result.errors == []
        assert result.commits == 2
        commits = _commits(mode)
        assert repo.resolve_rev("main") == commits["second"]
        assert repo.resolve_rev("main^") == commits["first"]
        for otype, csum in walk_commit(repo, commits["second"]):
            assert repo.has_object(otype, csum)


def test_signed_commitmeta_verifies_with_the_fixture_key() -> None:
    gpg = pytest.importorskip("pyostree.gpg")
    second = COMMITS["second"]
    objects = FIXTURES / "archive" / "objects" / second[:2]
    meta = parse_metadata((objects / f"{second[2:]}.commitmeta").read_bytes())
    keyring = gpg.Keyring.from_bytes((FIXTURES / "gpg-pubkey.asc").read_bytes())
    data = (objects / f"{second[2:]}.commit").read_bytes()
    result = gpg.verify_detached(keyring, data, signatures_from_metadata(meta, "ostree.gpgsigs"))
    assert result.valid


def test_tombstone_in_repo(tmp_path: Path) -> None:
    repo = restore_repo("archive", tmp_path / "repo")
    doomed = COMMITS["doomed"]
    assert not repo.has_object(ObjectType.COMMIT, doomed)
    assert repo.has_object(ObjectType.TOMBSTONE_COMMIT, doomed)
    verify_object(repo, ObjectType.TOMBSTONE_COMMIT, doomed)
    meta = parse_metadata(repo.load_metadata_bytes(ObjectType.TOMBSTONE_COMMIT, doomed))
    assert meta == {"commit": gv.Variant("ay", doomed.encode() + b"\0")}


@pytest.mark.parametrize("mode", [RepoMode.ARCHIVE, RepoMode.BARE_USER])
def test_large_file_is_streamed(mode: RepoMode, tmp_path: Path) -> None:
    """A 12 MiB file commits, verifies and reads back without being held in memory."""
    with local_dir(tmp_path) as work:
        tree = work / "tree"
        tree.mkdir()
        chunk = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB, poorly compressible pattern
        chunk = bytes(b ^ (i * 7 & 0xFF) for i, b in enumerate(chunk))
        expected = hashlib.sha256()
        with open(tree / "big", "wb") as fh:
            for i in range(192):
                block = chunk[i % 64:] + chunk[: i % 64]
                fh.write(block)
                expected.update(block)
        st = os.stat(tree / "big")
        header = FileHeader(st.st_uid, st.st_gid, st.st_mode, size=st.st_size)
        want = hashlib.sha256(header.checksum_header())
        with open(tree / "big", "rb") as fh:
            while block := fh.read(1 << 20):
                want.update(block)
        repo = Repo.create(work / "repo", mode)
        tracemalloc.start()
        try:
            csum = commit_tree(repo, tree, branch="big", timestamp=0, options=CommitOptions())
            peak_commit = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            tree_csum = repo.load_commit(csum).root_tree
            file_csum = dict(repo.load_dirtree(tree_csum).files)["big"]
            verify_object(repo, ObjectType.FILE, file_csum)
            _, stream = repo.open_content(file_csum)
            assert stream is not None
            got = hashlib.sha256()
            with stream:
                while block := stream.read(1 << 16):
                    got.update(block)
            peak_read = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert file_csum == want.hexdigest()
        assert got.hexdigest() == expected.hexdigest()
        assert st.st_size == 12 * 1024 * 1024
        assert peak_commit < 4 * 1024 * 1024, peak_commit
        assert peak_read < 4 * 1024 * 1024, peak_read


def test_known_bytes_from_the_format_reference() -> None:
    """Worked examples of docs/ostree-formats.md §1.10, §2.5 and §2.6."""
    dirmeta = DirMeta(0, 0, 0o40755)
    assert dirmeta.to_bytes() == bytes.fromhex("00000000" "00000000" "000041ed")
    assert hashlib.sha256(dirmeta.to_bytes()).hexdigest() == (
        "446a0ef11b7cc167f3b603e585c7eeeeb675faa412d5ec73f62988eb0b6c5488")
    empty = DirTree((), ())
    assert empty.to_bytes() == b"\0"
    assert hashlib.sha256(empty.to_bytes()).hexdigest() == EMPTY_DIRTREE
    hi = FileHeader(0, 0, 0o100644, size=3)
    assert hi.checksum_header() == bytes.fromhex(
        "00000012" "00000000" "00000000" "00000000" "000081a4" "00000000" "0011")
    assert content_checksum(hi, [b"hi\n"]).startswith("fbf7cf77")
    assert hi.archive_header() == bytes.fromhex(
        "0000001a" "00000000" "0000000000000003" "00000000" "00000000" "000081a4" "00000000"
        "0019")
    comp = new_compressor()
    assert comp.compress(b"hi\n") + comp.flush() == bytes.fromhex("cbc8e40200")
    link = FileHeader(0, 0, 0o120777, "a")
    assert content_checksum(link).startswith("438802d9")
    # The minimal commit of §1.10: a tree with "a", "l -> a" and an empty "sub".
    tree = DirTree.build({"a": content_checksum(hi, [b"hi\n"]), "l": content_checksum(link)},
                         {"sub": (EMPTY_DIRTREE, hashlib.sha256(dirmeta.to_bytes()).hexdigest())})
    tree_csum = hashlib.sha256(tree.to_bytes()).hexdigest()
    commit = Commit({}, None, (), "s", "", 1704067200, tree_csum,
                    hashlib.sha256(dirmeta.to_bytes()).hexdigest())
    assert len(commit.to_bytes()) == 86
    assert commit.checksum.startswith("342289e4")
    assert commit.to_bytes()[0x50:] == bytes.fromhex("300302000000")
