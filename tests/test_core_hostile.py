"""Hostile bytes and hostile repositories: every one is refused with a specific pyostree error,
the CLI says so in one ``error:`` line, and a checkout never writes outside its destination."""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import struct
import zlib
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyostree import gvariant as gv
from pyostree.checkout import CheckoutOptions, checkout, resolve_path
from pyostree.core import ObjectType, validate_filename
from pyostree.errors import ChecksumError, FormatError, PyOstreeError, RepoError
from pyostree.formats.content import (
    ArchiveInflater,
    FileHeader,
    parse_archive_header,
    parse_file_header,
    parse_ostreemeta,
)
from pyostree.formats.objects import (
    COMMIT_TYPE,
    DIRMETA_TYPE,
    DIRTREE_TYPE,
    Commit,
    DirMeta,
    DirTree,
    parse_metadata,
)
from pyostree.maintenance import fsck, verify_object
from pyostree.repo import Repo, RepoMode

from .corehelpers import COMMITS_FIRST_SECOND, error_lines, restore_repo, run_cli, snapshot

CSUM = hashlib.sha256(b"x").digest()
EMPTY_META = bytes.fromhex("446a0ef11b7cc167f3b603e585c7eeeeb675faa412d5ec73f62988eb0b6c5488")


def _commit(**fields: object) -> bytes:
    value = {"meta": {}, "parent": b"", "related": [], "subject": "s", "body": "",
             "ts": 0, "tree": CSUM, "dmeta": CSUM}
    value.update(fields)
    return gv.encode(COMMIT_TYPE, tuple(value.values()))


def _dirtree(files: list[tuple[str, bytes]], dirs: list[tuple[str, bytes, bytes]] | None = None,
             ) -> bytes:
    return gv.encode(DIRTREE_TYPE, (files, dirs or []))


# ---------------------------------------------------------------------------- GVariant


GOOD_COMMIT = _commit(meta={"version": gv.Variant("s", "1")})


@pytest.mark.parametrize("data", [
    GOOD_COMMIT[:-1], GOOD_COMMIT[:10], GOOD_COMMIT[1:], b"", b"\0", GOOD_COMMIT + b"\0",
], ids=["drop-last", "prefix", "drop-first", "empty", "nul", "extra-byte"])
def test_truncated_or_extended_commit(data: bytes) -> None:
    with pytest.raises(FormatError):
        Commit.from_bytes(data)


def test_non_zero_padding_is_not_normal_form() -> None:
    # In the commit, bytes 3..7 pad the body string up to the 8-aligned timestamp.
    data = _commit(subject="s", body="")
    assert data[3:8] == b"\0" * 5
    bad = data[:4] + b"\x01" + data[5:]
    with pytest.raises(FormatError, match="normal form"):
        Commit.from_bytes(bad)


def test_oversized_framing_offsets_are_not_normal_form() -> None:
    # An `as` with 2-byte offsets where 1-byte offsets fit: same values, not normal form.
    normal = gv.encode("as", ["a", "bc"])
    assert normal == b"a\0bc\0\x02\x05"
    wide = b"a\0bc\0" + struct.pack("<HH", 2, 5)
    with pytest.raises(FormatError):
        gv.decode("as", wide)
    assert gv.decode("as", normal) == ["a", "bc"]


@pytest.mark.parametrize(("type_string", "data", "match"), [
    ("as", b"a\0\x09", "framing offset"),  # offset past the end
    ("as", b"ab\0c\0\x06\x05", "out of order"),  # first element ends past the table
    ("(say)", b"a\0\xff", "out of bounds"),  # tuple offset outside the data
    ("b", b"\x02", "boolean"),
    ("s", b"abc", "NUL-terminated"),
    ("s", b"a\0b\0", "NUL byte"),
    ("s", b"\xff\0", "UTF-8"),
    ("v", b"\x01\0zz", "type"),
    ("v", b"abc", "separator"),
    ("a{sv}", gv.encode("a(sv)", [("k", gv.Variant("u", 1)), ("k", gv.Variant("u", 2))]),
     "duplicate"),
    ("u", b"\0\0\0", "needs 4 bytes"),
    ("at", b"\0" * 12, "partial element"),
])
def test_malformed_gvariant(type_string: str, data: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        gv.decode(type_string, data)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(FormatError):
        gv.decode("v", b"\0" + b"".join([b"\0v"] * 200))
    with pytest.raises(FormatError):
        gv.parse_type("a" * 100 + "y")


# ---------------------------------------------------------------------------- commits


@pytest.mark.parametrize(("fields", "match"), [
    ({"parent": CSUM[:31]}, "parent checksum"),
    ({"parent": CSUM + b"\0"}, "parent checksum"),
    ({"tree": CSUM[:31]}, "length 31"),
    ({"dmeta": b""}, "length 0"),
    ({"meta": {"": gv.Variant("s", "x")}}, "empty metadata key"),
    ({"related": [("../x", CSUM)]}, "invalid file name"),
    ({"related": [("ok", CSUM[:31])]}, "length 31"),
])
def test_bad_commit_fields(fields: dict[str, object], match: str) -> None:
    with pytest.raises(FormatError, match=match):
        Commit.from_bytes(_commit(**fields))


# ---------------------------------------------------------------------------- dirtrees


@pytest.mark.parametrize("name", ["../x", ".", "..", "a/b", "", "/abs", "x/"])
def test_dirtree_rejects_unsafe_names(name: str) -> None:
    with pytest.raises(FormatError, match="invalid file name"):
        DirTree.from_bytes(_dirtree([(name, CSUM)]))
    with pytest.raises(FormatError, match="invalid file name"):
        DirTree.from_bytes(_dirtree([], [(name, CSUM, CSUM)]))
    with pytest.raises(FormatError):
        validate_filename(name)


@pytest.mark.parametrize(("files", "dirs", "match"), [
    ([("a", CSUM), ("a", CSUM)], [], "sorted and unique"),
    ([("b", CSUM), ("a", CSUM)], [], "sorted and unique"),
    ([], [("b", CSUM, CSUM), ("a", CSUM, CSUM)], "sorted and unique"),
    ([], [("a", CSUM, CSUM), ("a", CSUM, CSUM)], "sorted and unique"),
    ([("a", CSUM)], [("a", CSUM, CSUM)], "both a file and a directory"),
    ([("\u00e9", CSUM), ("z", CSUM)], [], "sorted"),  # bytewise order: "z" < "\xc3\xa9"
    ([("a", CSUM[:31])], [], "length 31"),
    ([], [("a", CSUM, CSUM[:31])], "length 31"),
    ([], [("a", CSUM + b"\0", CSUM)], "length 33"),
])
def test_dirtree_rejects_bad_listings(files: list[tuple[str, bytes]],
                                      dirs: list[tuple[str, bytes, bytes]], match: str) -> None:
    with pytest.raises(FormatError, match=match):
        DirTree.from_bytes(_dirtree(files, dirs))


def test_dirtree_accepts_bytewise_order() -> None:
    data = _dirtree([("Z", CSUM), ("a", CSUM), ("z", CSUM), ("\u00e9", CSUM)])
    assert DirTree.from_bytes(data).to_bytes() == data


# ---------------------------------------------------------------------------- dirmeta, xattrs


@pytest.mark.parametrize(("value", "match"), [
    ((0, 0, gv.swap32(0o100644), []), "directory mode"),
    ((0, 0, gv.swap32(0o040755 | 0o200000), []), "directory mode"),
    ((0, 0, gv.swap32(0o040755), [(b"user.b\0", b""), (b"user.a\0", b"")]), "sorted"),
    ((0, 0, gv.swap32(0o040755), [(b"user.a\0", b""), (b"user.a\0", b"")]), "sorted"),
    ((0, 0, gv.swap32(0o040755), [(b"user.a", b"")]), "xattr name"),
    ((0, 0, gv.swap32(0o040755), [(b"\0", b"")]), "xattr name"),
    ((0, 0, gv.swap32(0o040755), [(b"us\0er\0", b"")]), "xattr name"),
])
def test_bad_dirmeta(value: tuple[object, ...], match: str) -> None:
    with pytest.raises(FormatError, match=match):
        DirMeta.from_bytes(gv.encode(DIRMETA_TYPE, value))


def test_wrong_object_type() -> None:
    dirtree = _dirtree([("a", CSUM)])
    dirmeta = DirMeta(0, 0, 0o40755).to_bytes()
    with pytest.raises(FormatError):
        Commit.from_bytes(dirtree)
    with pytest.raises(FormatError):
        DirTree.from_bytes(dirmeta)
    with pytest.raises(FormatError):
        DirMeta.from_bytes(GOOD_COMMIT)
    with pytest.raises(FormatError):
        parse_metadata(dirmeta)


# ---------------------------------------------------------------------------- content objects


def _archive(header: tuple[object, ...], body: bytes = b"") -> bytes:
    raw = gv.encode("(tuuuusa(ayay))", header)
    return struct.pack(">I", len(raw)) + b"\0" * 4 + raw + body


REG = gv.swap32(0o100644)


@pytest.mark.parametrize(("data", "match"), [
    (b"\0\0\0", "truncated"),
    (struct.pack(">I", 100) + b"\0" * 4 + b"\0" * 10, "truncated"),
    (struct.pack(">I", 2**31) + b"\0" * 4, "too large"),
    (b"\0\0\0\0\0\0\0\1", "padding"),
    (_archive((0, 0, 0, gv.swap32(0o020644), 0, "", [])), "mode"),  # char device
    (_archive((0, 0, 0, gv.swap32(0o010644), 0, "", [])), "mode"),  # fifo
    (_archive((0, 0, 0, gv.swap32(0o100644 | 0o1000000), 0, "", [])), "mode"),
    (_archive((0, 0, 0, REG, gv.swap32(5), "", [])), "device"),
    (_archive((gv.swap64(3), 0, 0, gv.swap32(0o120777), 0, "t", [])), "symlink object with"),
    (_archive((0, 0, 0, gv.swap32(0o120777), 0, "", [])), "without a target"),
    (_archive((0, 0, 0, REG, 0, "target", [])), "symlink target"),
    (_archive((0, 0, 0, REG, 0, "", [(b"b\0", b""), (b"a\0", b"")])), "sorted"),
])
def test_bad_archive_headers(data: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        parse_archive_header(data)


def test_bad_checksum_stream_header_and_ostreemeta() -> None:
    good = FileHeader(0, 0, 0o100644).checksum_header()
    assert parse_file_header(good)[0] == FileHeader(0, 0, 0o100644)
    with pytest.raises(FormatError):
        parse_file_header(good[:-1])
    with pytest.raises(FormatError):
        parse_ostreemeta(b"\0" * 11)
    with pytest.raises(FormatError, match="mode"):
        parse_ostreemeta(gv.encode("(uuua(ayay))", (0, 0, gv.swap32(0o060600), [])))
    with pytest.raises(FormatError):
        FileHeader(0, 0, 0o040755)


def _deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush()


@pytest.mark.parametrize(("size", "body", "match"), [
    (5, _deflate(b"hello") + b"junk", "trailing data"),
    (4, _deflate(b"hello"), "larger"),
    (6, _deflate(b"hello"), "has 5 bytes"),
    (5, _deflate(b"hello")[:-2], "truncated"),
    (5, b"\xff\xff\xff\xff", "corrupt"),
])
def test_bad_compressed_bodies(size: int, body: bytes, match: str) -> None:
    inflater = ArchiveInflater(size)
    with pytest.raises(FormatError, match=match):
        for i in range(0, len(body), 3):
            for _ in inflater.chunks(body[i:i + 3]):
                pass
        inflater.finish()


def test_zip_bomb_is_inflated_in_bounded_pieces() -> None:
    body = _deflate(b"\0" * (8 << 20))
    inflater = ArchiveInflater(1 << 20)
    with pytest.raises(FormatError, match="larger"):
        for piece in inflater.chunks(body):
            assert len(piece) <= 256 * 1024
    assert inflater.produced <= (1 << 20) + 1


# ---------------------------------------------------------------------------- repositories


def _objects(repo: Repo, ext: str) -> list[Path]:
    return sorted(repo.objects_dir.glob(f"*/*.{ext}"))


def test_corrupted_objects_fsck_and_delete(tmp_path: Path) -> None:
    repo = restore_repo("archive", tmp_path / "repo")
    filez = next(p for p in _objects(repo, "filez") if p.stat().st_size > 60)
    dirtree = next(p for p in _objects(repo, "dirtree") if p.stat().st_size > 40)
    for path in (filez, dirtree):
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x55
        path.write_bytes(bytes(data))
    fcsum = filez.parent.name + filez.name.split(".")[0]
    with pytest.raises(PyOstreeError, match=fcsum):
        verify_object(repo, ObjectType.FILE, fcsum)
    tcsum = dirtree.parent.name + dirtree.name.split(".")[0]
    with pytest.raises(ChecksumError) as info:
        verify_object(repo, ObjectType.DIRTREE, tcsum)
    assert info.value.expected == tcsum
    result = fsck(repo)
    assert len(result.errors) == 2
    assert any(fcsum in e for e in result.errors) and any(tcsum in e for e in result.errors)

    code, out, err = run_cli(f"--repo={repo.path}", "fsck")
    assert code == 1 and "Traceback" not in err
    assert all(line.startswith("error: ") for line in error_lines(err))
    code, _, err = run_cli(f"--repo={repo.path}", "fsck", "--delete")
    assert code == 1
    assert not filez.exists() and not dirtree.exists()
    assert all(repo.is_partial(c) for c in COMMITS_FIRST_SECOND)
    code, out, err = run_cli(f"--repo={repo.path}", "fsck")
    assert (code, err) == (0, "")
    assert b"is partial" in out


@pytest.mark.parametrize("what", ["commit", "dirtree", "dirmeta", "filez"])
def test_cli_on_corrupted_repo_prints_one_error(what: str, tmp_path: Path) -> None:
    repo = restore_repo("archive", tmp_path / "repo")
    csum = repo.resolve_rev("main") or ""
    commit = repo.load_commit(csum)
    path = {
        "commit": repo.object_path(ObjectType.COMMIT, csum),
        "dirtree": repo.object_path(ObjectType.DIRTREE, commit.root_tree),
        "dirmeta": repo.object_path(ObjectType.DIRMETA, commit.root_meta),
        "filez": repo.object_path(ObjectType.FILE,
                                  dict(repo.load_dirtree(commit.root_tree).files)["hello.txt"]),
    }[what]
    path.write_bytes(path.read_bytes()[:-2])
    for cmd in (["ls", "-R", "main"], ["checkout", "main", str(tmp_path / "co")],
                ["cat", "main", "/hello.txt"], ["log", "main"]):
        code, _, err = run_cli(f"--repo={repo.path}", *cmd)
        if code == 0:  # the command did not need the broken object
            continue
        lines = error_lines(err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (cmd, err)
        assert "Traceback" not in err
    assert not (tmp_path / "co").exists()  # a failed checkout leaves nothing behind


def _store(repo: Repo, objtype: ObjectType, data: bytes) -> str:
    """Write a metadata object without any validation (what an attacker controls)."""
    csum = hashlib.sha256(data).hexdigest()
    path = repo.object_path(objtype, csum)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return csum


def _hostile_repo(tmp_path: Path, name: str) -> tuple[Repo, str]:
    repo = Repo.create(tmp_path / "repo", RepoMode.ARCHIVE)
    with repo.transaction() as txn:
        fcsum = txn.write_content(FileHeader(0, 0, 0o100644, size=4), [b"evil"])
    tree = _store(repo, ObjectType.DIRTREE, _dirtree([(name, bytes.fromhex(fcsum))]))
    meta = _store(repo, ObjectType.DIRMETA, DirMeta(0, 0, 0o40755).to_bytes())
    commit = _store(repo, ObjectType.COMMIT, Commit({}, None, (), "", "", 0, tree, meta).to_bytes())
    repo.set_ref("main", commit)
    return repo, commit


@pytest.mark.parametrize("name", ["..", "../escaped", "a/b", "."])
def test_checkout_refuses_traversal(name: str, tmp_path: Path) -> None:
    repo, _ = _hostile_repo(tmp_path, name)
    before = sorted(os.listdir(tmp_path))
    dest = tmp_path / "dest"
    with pytest.raises(FormatError):
        checkout(repo, "main", dest)
    assert sorted(os.listdir(tmp_path)) == before
    code, _, err = run_cli(f"--repo={repo.path}", "checkout", "main", dest)
    assert code != 0 and len(error_lines(err)) == 1 and err.startswith("error: ")
    assert sorted(os.listdir(tmp_path)) == before
    assert not list(tmp_path.rglob("escaped"))


def test_union_checkout_does_not_follow_symlinks(tmp_path: Path) -> None:
    repo = restore_repo("archive", tmp_path / "repo")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "hello.txt").write_bytes(b"precious\n")
    (outside / "conf").write_bytes(b"precious\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside / "hello.txt", dest / "hello.txt")  # a file the commit has
    os.symlink(outside, dest / "etc")  # a directory the commit has
    with pytest.raises(PyOstreeError):
        checkout(repo, "main", dest, CheckoutOptions(union=True))
    assert sorted(os.listdir(outside)) == ["conf", "hello.txt"]
    assert (outside / "hello.txt").read_bytes() == b"precious\n"
    assert (outside / "conf").read_bytes() == b"precious\n"
    # The file symlink was replaced, not written through.
    assert stat.S_ISREG(os.lstat(dest / "hello.txt").st_mode)
    code, _, err = run_cli(f"--repo={repo.path}", "checkout", "--union", "main", dest)
    assert code != 0 and len(error_lines(err)) == 1
    assert (outside / "conf").read_bytes() == b"precious\n"


def test_union_checkout_over_symlinked_destination_root(tmp_path: Path) -> None:
    repo = restore_repo("archive", tmp_path / "repo")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "dest")
    with pytest.raises(RepoError):
        checkout(repo, "main", tmp_path / "dest", CheckoutOptions(union=True))
    assert os.listdir(outside) == []


def test_subpath_traversal_is_refused(tmp_path: Path) -> None:
    repo = restore_repo("archive", tmp_path / "repo")
    with pytest.raises(RepoError):
        checkout(repo, "main", tmp_path / "d", CheckoutOptions(subpath="/etc/../../x"))
    assert not (tmp_path / "d").exists()


def test_symlink_target_is_never_followed_on_checkout(tmp_path: Path) -> None:
    """A symlink in the commit pointing outside, then a file of the same path below it."""
    repo = Repo.create(tmp_path / "repo", RepoMode.ARCHIVE)
    outside = tmp_path / "outside"
    outside.mkdir()
    with repo.transaction() as txn:
        link = txn.write_content(FileHeader(0, 0, 0o120777, str(outside)), [])
        evil = txn.write_content(FileHeader(0, 0, 0o100644, size=4), [b"evil"])
    sub = _store(repo, ObjectType.DIRTREE, _dirtree([("pwned", bytes.fromhex(evil))]))
    meta = _store(repo, ObjectType.DIRMETA, DirMeta(0, 0, 0o40755).to_bytes())
    # "d" is both a symlink (file list) and a directory: refused by the parser.
    tree = _store(repo, ObjectType.DIRTREE, _dirtree(
        [("d", bytes.fromhex(link))], [("d", bytes.fromhex(sub), bytes.fromhex(meta))]))
    commit = _store(repo, ObjectType.COMMIT, Commit({}, None, (), "", "", 0, tree, meta).to_bytes())
    with pytest.raises(FormatError):
        checkout(repo, commit, tmp_path / "dest")
    assert os.listdir(outside) == []


@pytest.mark.parametrize("kind", ["name", "target"])
def test_commit_refuses_names_that_are_not_utf8(kind: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    if kind == "name":
        (Path(os.fsdecode(bytes(src) + b"/bad\xffname"))).write_bytes(b"")
    else:
        os.symlink(b"target\xfe", bytes(src) + b"/link")
    repo = Repo.create(tmp_path / "repo", RepoMode.ARCHIVE)
    code, out, err = run_cli(f"--repo={repo.path}", "commit", "-b", "m", src)
    assert code == 1 and out == b""
    assert len(error_lines(err)) == 1 and "not valid UTF-8" in err
    assert repo.list_refs() == {}


def test_bare_user_only_symlink_object_not_utf8(tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "repo", RepoMode.BARE_USER_ONLY)
    csum = "ab" * 32
    path = repo.object_path(ObjectType.FILE, csum)
    path.parent.mkdir()
    os.symlink(b"\xff\xfe", bytes(path))
    with pytest.raises(FormatError, match="not UTF-8"):
        repo.open_content(csum)
    with pytest.raises(FormatError):
        verify_object(repo, ObjectType.FILE, csum)


# ---------------------------------------------------------------------------- dirtree fast codec
# DirTree has a hand-written codec; it must agree with the generic GVariant codec byte for byte,
# on valid trees and on every corruption of them.

_names = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=["Cs"]),
                 min_size=1, max_size=300).filter(lambda n: n not in (".", ".."))


@settings(max_examples=150, deadline=None)
@given(st.lists(_names, max_size=12, unique=True), st.lists(_names, max_size=12, unique=True),
       st.binary(min_size=32, max_size=32))
def test_dirtree_codec_matches_generic(files: list[str], dirs: list[str], csum: bytes) -> None:
    dirs = [d for d in dirs if d not in files]
    files.sort(key=str.encode)
    dirs.sort(key=str.encode)
    data = gv.encode(DIRTREE_TYPE, ([(n, csum) for n in files], [(n, csum, csum) for n in dirs]))
    tree = DirTree.from_bytes(data)
    assert [f[0] for f in tree.files] == files and [d[0] for d in tree.dirs] == dirs
    assert tree.to_bytes() == data


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_dirtree_codec_rejects_what_generic_rejects(data: st.DataObject) -> None:
    big = "x" * data.draw(st.sampled_from([1, 200, 300]))
    base = gv.encode(DIRTREE_TYPE, ([("a", CSUM), (big, CSUM)], [("d", CSUM, CSUM)]))
    raw = bytearray(base)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    blob = bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw)
    try:
        files, dirs = gv.decode(DIRTREE_TYPE, blob)
        expected = [n.encode() for n, _ in files], [n.encode() for n, _, _ in dirs]
    except FormatError:
        expected = None
    try:
        tree = DirTree.from_bytes(blob)
        got = [n.encode() for n, _ in tree.files], [n.encode() for n, _, _ in tree.dirs]
    except FormatError:
        got = None
    if got is not None:  # anything the fast codec accepts, the generic one reads the same
        assert got == expected
    elif expected is not None:  # only listing rules (names, order, checksum sizes) may differ
        with pytest.raises(FormatError, match=r"file name|sorted|both a file|checksum"):
            DirTree.from_bytes(blob)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=300)), max_size=8),
       st.data())
def test_ayay_array_fast_path_matches_generic(items: list[tuple[bytes, bytes]],
                                              data: st.DataObject) -> None:
    # a(ayay) (xattrs, ostree.sizes) has a fast path in gvariant; build the same bytes with the
    # generic tuple encoder per element, then check decoding, including of corrupted copies.
    elem_t = gv.parse_type("(ayay)")
    elems = [gv._encode(elem_t, item) for item in items]
    ends = list(itertools.accumulate(len(e) for e in elems))
    blob = gv.frame(b"".join(elems), ends)
    assert gv.encode("a(ayay)", items) == blob
    assert gv.decode("a(ayay)", blob) == [tuple(i) for i in items]
    firsts = [first for first, _ in items]  # aay (signatures, ostree.sizes) has one too
    aay = gv.frame(b"".join(firsts), list(itertools.accumulate(len(f) for f in firsts)))
    assert gv.encode("aay", firsts) == aay
    assert gv.decode("aay", aay) == firsts
    if blob:
        raw = bytearray(blob)
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        try:
            value = gv.decode("a(ayay)", bytes(raw))
        except FormatError:
            return
        assert gv.encode("a(ayay)", value) == bytes(raw)


_xattr_lists = st.dictionaries(st.binary(min_size=1, max_size=20).filter(lambda b: b"\0" not in b),
                               st.binary(max_size=300), max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.booleans(),
       st.integers(0, 0o7777), st.text(st.characters(blacklist_characters="\0",
                                                     blacklist_categories=["Cs"]), max_size=300),
       _xattr_lists, st.integers(0, 2**64 - 1), st.data())
def test_file_header_codec_matches_generic(uid: int, gid: int, link: bool, perm: int,
                                           target: str, xattr_map: dict[bytes, bytes],
                                           size: int, data: st.DataObject) -> None:
    # File headers are hand-encoded; they must equal the generic GVariant encoding, and parsing
    # (also of corrupted copies) must only accept normal form.
    mode = (stat.S_IFLNK if link else stat.S_IFREG) | perm
    target = (target or "t") if link else ""
    size = 0 if link else size
    xattrs = tuple(sorted((k + b"\0", v) for k, v in xattr_map.items()))
    header = FileHeader(uid, gid, mode, target, xattrs, size)
    sw = gv.swap32
    plain = gv.encode("(uuuusa(ayay))", (sw(uid), sw(gid), sw(mode), 0, target, list(xattrs)))
    archive = gv.encode("(tuuuusa(ayay))",
                        (gv.swap64(size), sw(uid), sw(gid), sw(mode), 0, target, list(xattrs)))
    assert header.checksum_header()[8:] == plain
    assert header.archive_header()[8:] == archive
    assert parse_file_header(header.checksum_header()) == (attrs.evolve(header, size=0),
                                                           8 + len(plain))
    assert parse_archive_header(header.archive_header()) == (header, 8 + len(archive))
    raw = bytearray(header.archive_header())
    raw[data.draw(st.integers(8, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        parsed, _ = parse_archive_header(bytes(raw))
    except FormatError:
        return
    assert parsed.archive_header() == bytes(raw)


def _le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def test_dirtree_codec_rejects_oversized_framing_offsets() -> None:
    # Bytes that frame correctly but with wider offsets than normal form allows, at each level:
    # the generic decoder rejects them on re-encoding; the hand-written one must as well.
    name = b"n" * 221  # body 221 + 1 + 32 = 254: one-byte offsets are normal
    elem_wide = name + b"\0" + CSUM + _le(222, 2)  # 256 bytes with a two-byte offset
    files_wide_elem = elem_wide + _le(len(elem_wide), 2)
    elem = gv.frame(b"a\0" + CSUM, (2,))
    files_wide_array = elem * 7 + b"".join(_le(len(elem) * i, 2) for i in range(1, 8))
    padded = files_wide_array + b"\0" * (256 - len(files_wide_array))  # not a valid array
    top_wide = elem + _le(len(elem), 1) + _le(len(elem), 2)  # top offset 2 bytes, 1 suffices
    cases = [files_wide_elem + _le(len(files_wide_elem), 2), files_wide_array + _le(77, 2),
             padded + _le(len(padded), 2), top_wide]
    for blob in cases:
        with pytest.raises(FormatError):
            gv.decode(DIRTREE_TYPE, blob)
        with pytest.raises(FormatError):
            DirTree.from_bytes(blob)


def test_checkout_wide_tree_and_failure_deep_inside(tmp_path: Path) -> None:
    # Checkout fills directories from a bounded stack of open directories: a wide tree (more
    # directories than the stack holds) comes out exactly like its source, and a missing
    # object deep inside fails the whole checkout cleanly: one error, nothing left behind,
    # no file descriptor leaked.
    src = tmp_path / "src"
    for i in range(150):
        sub = src / f"d{i:03}" / "inner"
        sub.mkdir(parents=True)
        (sub / "f").write_bytes(b"x" * i)
        (src / f"d{i:03}" / "g").write_bytes(b"g%d" % i)
    (src / "d007").chmod(0o555)
    repo = Repo.create(tmp_path / "repo", RepoMode.BARE_USER)
    csum = repo.commit(src, branch="main")
    done: list[int] = []
    checkout(repo, "main", tmp_path / "co", CheckoutOptions(user_mode=True),
             progress=done.append)
    def shape(root: Path) -> dict[str, tuple[object, ...]]:  # hardlinks carry user.ostreemeta
        return {k: v[:4] for k, v in snapshot(root, ownership=False).items()}

    assert shape(tmp_path / "co") == shape(src)
    assert done[-1] == 300
    victim = repo.load_dirtree(resolve_path(repo, *_root(repo, csum), "d120/inner")[0])
    repo.object_path(ObjectType.FILE, victim.files[0][1]).unlink()
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RepoError, match="missing file object"):
        checkout(repo, "main", tmp_path / "co2", CheckoutOptions(user_mode=True))
    assert not (tmp_path / "co2").exists()
    assert len(os.listdir("/proc/self/fd")) == fds
    (src / "d007").chmod(0o755)
    (tmp_path / "co" / "d007").chmod(0o755)


def _root(repo: Repo, csum: str) -> tuple[str, str]:
    commit = repo.load_commit(csum)
    return commit.root_tree, commit.root_meta
