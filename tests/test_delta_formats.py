"""Static delta formats (naming, superblock, parts, payloads), varints and the part executor.

Unit tests build deltas with :class:`PartBuilder`; interop tests parse and execute every part
of real deltas made by ostree 2022.7 (tests/data/make-delta-fixtures.sh) and compare each
rebuilt object with the real repository's.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import random
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pyostree.deltaexec as deltaexec
from pyostree import gvariant
from pyostree.deltaexec import ContentMeta, content_checksum_header, execute_part
from pyostree.errors import ChecksumError, FormatError, ObjectNotFoundError
from pyostree.formats import delta as D
from pyostree.formats.bspatch import bsdiff, bspatch
from pyostree.formats.varint import decode_varint, encode_varint
from pyostree.gvariant import Variant, swap32, swap64

from .deltahelpers import MemoryDeltaTarget, content_csum, sha

OSTREE = shutil.which("ostree")
needs_ostree = pytest.mark.skipif(OSTREE is None, reason="needs the real ostree binary")
FIXTURE_SCRIPT = Path(__file__).parent / "data" / "make-delta-fixtures.sh"

SPLICE, OPEN, WRITE = D.OP_OPEN_SPLICE_AND_CLOSE, D.OP_OPEN, D.OP_WRITE
SET_SRC, UNSET_SRC, CLOSE, PATCH = (
    D.OP_SET_READ_SOURCE,
    D.OP_UNSET_READ_SOURCE,
    D.OP_CLOSE,
    D.OP_BSPATCH,
)


# ---------------------------------------------------------------------------- helpers


def ops(*items: int | tuple[int, ...]) -> bytes:
    """Op stream from opcodes and argument tuples: ops(OPEN, (0, 0, 10), WRITE, (10, 0))."""
    out = bytearray()
    for item in items:
        if isinstance(item, tuple):
            for arg in item:
                out += encode_varint(arg)
        else:
            out.append(item)
    return bytes(out)


def make_commit(tag: str = "x", ts: int = 1_700_000_000) -> bytes:
    value: tuple[Any, ...] = (
        {"version": Variant("s", tag)},
        b"",
        [],
        f"subject {tag}",
        "",
        swap64(ts),
        hashlib.sha256(b"tree" + tag.encode()).digest(),
        hashlib.sha256(b"meta" + tag.encode()).digest(),
    )
    return gvariant.encode(D.COMMIT_TYPE, value)


def xz_multiblock(block_data: bytes, count: int) -> bytes:
    """An xz stream of ``count`` copies of one block: a bomb built without compressing it all."""
    one = lzma.compress(block_data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, preset=0)
    footer = one[-12:]
    backward = (int.from_bytes(footer[4:8], "little") + 1) * 4
    index = one[-12 - backward : -12]
    block = one[12 : -12 - backward]
    nrec, pos = decode_varint(index, 1)  # xz multibyte integers are protobuf varints
    assert nrec == 1
    unpadded, pos = decode_varint(index, pos)
    usize, _ = decode_varint(index, pos)
    body = b"\0" + encode_varint(count) + (encode_varint(unpadded) + encode_varint(usize)) * count
    body += bytes(-len(body) % 4)
    new_index = body + zlib.crc32(body).to_bytes(4, "little")
    flags = footer[8:10]
    size_field = (len(new_index) // 4 - 1).to_bytes(4, "little")
    new_footer = zlib.crc32(size_field + flags).to_bytes(4, "little") + size_field + flags + b"YZ"
    return one[:12] + block * count + new_index + new_footer


# ---------------------------------------------------------------------------- varint


def test_varint_round_trip_and_lengths() -> None:
    rng = random.Random(1)
    values = [0, 1, 127, 128, 300, 2**32, 2**63, 2**64 - 1] + [
        rng.getrandbits(64) for _ in range(200)
    ]
    for v in values:
        enc = encode_varint(v)
        assert len(enc) <= 10
        assert decode_varint(b"\xaa" + enc + b"\xff", 1) == (v, 1 + len(enc))
    assert encode_varint(300) == b"\xac\x02"
    assert len(encode_varint(2**64 - 1)) == 10
    assert decode_varint(b"\x80\x00") == (0, 2)  # non-minimal, accepted like libostree


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80", b"\xff" * 9, b"\xff" * 10 + b"\x01", b"\xff" * 9 + b"\x02", b"\x80" * 11],
)
def test_varint_rejects_truncated_overlong_and_overflowing(data: bytes) -> None:
    with pytest.raises(FormatError):
        decode_varint(data)


def test_varint_encode_rejects_out_of_range() -> None:
    for bad in (-1, 2**64):
        with pytest.raises(ValueError):
            encode_varint(bad)


# ---------------------------------------------------------------------------- naming

DOC_TO_MB64 = "9V8GSJbzfojac5I4wJanwO4sObZgm7LMvY3bd+giV7k"
DOC_FROM_MB64 = "PBdG8b5ylsuJK43582Cx2fJDPCedt2ptYkUDeqvL8tE"


def test_mb64_and_paths_match_the_documented_example() -> None:
    to = D.mb64_decode(DOC_TO_MB64)
    frm = D.mb64_decode(DOC_FROM_MB64)
    assert to.startswith("f55f0648") and to.endswith("57b9")
    assert frm.startswith("3c1746f1") and frm.endswith("f2d1")
    assert D.mb64_encode(to) == DOC_TO_MB64
    assert D.delta_superblock_path(None, to) == f"deltas/9V/{DOC_TO_MB64[2:]}/superblock"
    assert D.delta_part_path(frm, to, 0) == f"deltas/PB/{DOC_FROM_MB64[2:]}-{DOC_TO_MB64}/0"
    assert D.delta_dir(frm, to) == f"deltas/PB/{DOC_FROM_MB64[2:]}-{DOC_TO_MB64}"
    assert D.delta_index_path(to) == f"delta-indexes/9V/{DOC_TO_MB64[2:]}.index"


def test_mb64_uses_underscore_for_slash() -> None:
    csum = (b"\xff" * 32).hex()
    enc = D.mb64_encode(csum)
    assert "/" not in enc and "_" in enc and len(enc) == 43
    assert D.mb64_decode(enc) == csum
    rng = random.Random(2)
    for _ in range(100):
        c = rng.randbytes(32).hex()
        assert D.mb64_decode(D.mb64_encode(c)) == c


@pytest.mark.parametrize(
    "bad",
    [
        DOC_TO_MB64[:-1],
        DOC_TO_MB64 + "A",
        DOC_TO_MB64[:-1] + "/",
        DOC_TO_MB64[:-1] + "=",
        DOC_TO_MB64[:-1] + "l",  # non-zero padding bits: not the canonical encoding
        "",
    ],
)
def test_mb64_decode_rejects(bad: str) -> None:
    with pytest.raises(FormatError):
        D.mb64_decode(bad)


def test_delta_names() -> None:
    a, b = "a" * 64, "b" * 64
    assert D.delta_name(None, b) == b
    assert D.delta_name(a, b) == f"{a}-{b}"
    assert D.parse_delta_name(f"{a}-{b}") == (a, b)
    assert D.parse_delta_name(b) == (None, b)
    for bad in ("", "-", a + "-", f"{a}-{b}-{a}", "A" * 64, a[:-1], f"{a}-{b[:-1]}"):
        with pytest.raises(FormatError):
            D.parse_delta_name(bad)
    with pytest.raises(ValueError):
        D.delta_name("nothex", b)


# ---------------------------------------------------------------------------- superblock


def sample_superblock(**kwargs: Any) -> D.DeltaSuperblock:
    commit = make_commit()
    part = D.PartHeader(
        version=0,
        checksum="1" * 64,
        size=100,
        usize=1000,
        objects=((D.OBJ_DIRTREE, "2" * 64), (D.OBJ_FILE, "3" * 64)),
    )
    args: dict[str, Any] = {
        "from_checksum": "4" * 64,
        "to_checksum": sha(commit),
        "commit": commit,
        "parts": [part],
        "fallbacks": [
            D.Fallback(objtype=1, checksum="5" * 64, compressed_size=7, uncompressed_size=9)
        ],
        "timestamp": 1_700_000_123,
    }
    args.update(kwargs)
    return D.DeltaSuperblock.build(**args)


def test_superblock_build_round_trip_and_byte_order() -> None:
    sb = sample_superblock(user_metadata={"custom": Variant("s", "v")})
    raw = sb.to_bytes()
    again = D.DeltaSuperblock.from_bytes(raw)
    assert again == sb and again.to_bytes() == raw
    assert list(sb.metadata) == ["custom", D.ENDIANNESS_KEY]
    # The timestamp is big-endian on disk, the part numbers little-endian with 'l'.
    assert swap64(1_700_000_123).to_bytes(8, "little") in raw
    assert (1000).to_bytes(8, "little") in raw

    swapped = sample_superblock(endianness="B")
    raw_b = swapped.to_bytes()
    assert (1000).to_bytes(8, "big") in raw_b and (1000).to_bytes(8, "little") not in raw_b
    parsed = D.DeltaSuperblock.from_bytes(raw_b)
    assert (
        parsed.endianness == "B" and parsed.parts == sb.parts and parsed.fallbacks == sb.fallbacks
    )


def _raw_superblock(sb: D.DeltaSuperblock) -> list[Any]:
    return list(gvariant.decode(D.SUPERBLOCK_TYPE, sb.to_bytes()))


def test_superblock_without_endianness_key_uses_libostree_guess() -> None:
    for endianness in ("l", "B"):
        value = _raw_superblock(sample_superblock(endianness=endianness))
        del value[0][D.ENDIANNESS_KEY]
        parsed = D.DeltaSuperblock.from_bytes(gvariant.encode(D.SUPERBLOCK_TYPE, tuple(value)))
        assert parsed.endianness == endianness
        assert parsed.parts[0].usize == 1000 and parsed.parts[0].size == 100


def test_superblock_inline_parts_and_commitmeta() -> None:
    commitmeta = gvariant.encode("a{sv}", {"ostree.gpgsigs": Variant("aay", [b"sig"])})
    part_file = b"\0" + D.PartPayload((), (), b"", b"").to_bytes()
    header = D.PartHeader(0, sha(part_file), len(part_file), 0, ())
    sb = sample_superblock(parts=[header], inline_parts=[part_file], commitmeta=commitmeta)
    again = D.DeltaSuperblock.from_bytes(sb.to_bytes())
    assert again.inline_part(0) == part_file and again.inline_part(1) is None
    assert again.commitmeta == commitmeta
    assert list(again.metadata)[1:] == [f"{again.directory}/0", f"{again.directory}/commitmeta"]
    assert again.directory == D.delta_dir("4" * 64, sb.to_checksum)
    assert again.name == f"{'4' * 64}-{sb.to_checksum}"


def _mutated(mutate: Any) -> bytes:
    value = _raw_superblock(sample_superblock())
    mutate(value)
    return gvariant.encode(D.SUPERBLOCK_TYPE, tuple(value))


def _set_part(value: list[Any], index: int, item: Any) -> None:
    part = list(value[6][0])
    part[index] = item
    value[6][0] = tuple(part)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda v: v.__setitem__(2, b"\1" * 31), id="from-31-bytes"),
        pytest.param(lambda v: v.__setitem__(3, b"\1" * 33), id="to-33-bytes"),
        pytest.param(lambda v: v.__setitem__(5, b"\1" * 10), id="recurse-not-64"),
        pytest.param(lambda v: _set_part(v, 0, 1), id="part-version-1"),
        pytest.param(lambda v: _set_part(v, 1, b"\1" * 31), id="part-csum-31"),
        pytest.param(lambda v: _set_part(v, 4, b"\1" * 34), id="objects-not-33"),
        pytest.param(lambda v: _set_part(v, 4, b"\5" + b"\1" * 32), id="objtype-5"),
        pytest.param(lambda v: _set_part(v, 4, b"\0" + b"\1" * 32), id="objtype-0"),
        pytest.param(lambda v: v[7].__setitem__(0, (2, b"\1" * 32, 1, 1)), id="fallback-meta"),
        pytest.param(lambda v: v[7].__setitem__(0, (1, b"\1" * 3, 1, 1)), id="fallback-csum"),
        pytest.param(
            lambda v: v[0].__setitem__(D.ENDIANNESS_KEY, Variant("y", ord("x"))), id="endian-x"
        ),
        pytest.param(
            lambda v: v[0].__setitem__(D.ENDIANNESS_KEY, Variant("s", "l")), id="endian-type"
        ),
    ],
)
def test_superblock_rejects_malformed(mutate: Any) -> None:
    with pytest.raises(FormatError):
        D.DeltaSuperblock.from_bytes(_mutated(mutate))


def test_superblock_rejects_bad_embedded_entries() -> None:
    sb = sample_superblock()
    for key, value in (
        (f"{sb.directory}/0", Variant("ay", b"x")),
        (f"{sb.directory}/7", Variant("(yay)", (0, b""))),
        (f"{sb.directory}/commitmeta", Variant("s", "x")),
    ):
        raw = _mutated(lambda v, k=key, val=value: v[0].__setitem__(k, val))
        with pytest.raises(FormatError):
            D.DeltaSuperblock.from_bytes(raw)


def test_superblock_rejects_commit_that_does_not_match_to() -> None:
    other = hashlib.sha256(b"other").digest()
    with pytest.raises(ChecksumError) as info:
        D.DeltaSuperblock.from_bytes(_mutated(lambda v: v.__setitem__(3, other)))
    assert info.value.expected == other.hex()


def test_superblock_rejects_garbage_and_truncation() -> None:
    raw = sample_superblock().to_bytes()
    for bad in (b"", raw[:-1], raw[: len(raw) // 2], raw + b"\0", b"\xff" * 64):
        with pytest.raises(FormatError):
            D.DeltaSuperblock.from_bytes(bad)


def test_signed_superblock_wrapper() -> None:
    raw = sample_superblock().to_bytes()
    assert D.unwrap_signed_superblock(raw) is None
    sigs = {"ostree.sign.ed25519": [b"\1" * 64, b"\2" * 64]}
    wrapped = D.wrap_signed_superblock(raw, sigs)
    assert wrapped[:8] == b"OSTSGNDT"
    unwrapped = D.unwrap_signed_superblock(wrapped)
    assert unwrapped == (raw, {"ostree.sign.ed25519": (b"\1" * 64, b"\2" * 64)})
    bad = gvariant.encode(
        D.SIGNED_TYPE, (swap64(D.SIGNED_MAGIC), raw, {"ostree.sign.x": Variant("s", "no")})
    )
    for hostile in (bad, wrapped[:-3], b"OSTSGNDT"):
        with pytest.raises(FormatError):
            D.unwrap_signed_superblock(hostile)


# ---------------------------------------------------------------------------- payloads


@pytest.mark.parametrize("blob_size", [0, 10, 240, 300, 70_000])
def test_payload_round_trip_matches_gvariant(blob_size: int) -> None:
    payload = D.PartPayload(
        modes=((0, 0, 0o100644), (1000, 1000, 0o120777)),
        xattrs=((), ((b"user.a\0", b"1"), (b"user.b\0", b""))),
        blob=bytes(range(256)) * (blob_size // 256) + b"z" * (blob_size % 256),
        ops=b"opsbytes",
    )
    raw = payload.to_bytes()
    expected = gvariant.encode(
        D.PAYLOAD_TYPE,
        (
            [(swap32(u), swap32(g), swap32(m)) for u, g, m in payload.modes],
            [list(x) for x in payload.xattrs],
            payload.blob,
            payload.ops,
        ),
    )
    assert raw == expected
    assert D.PartPayload.from_bytes(raw) == payload


@pytest.mark.parametrize(
    "bad",
    [b"", b"\0\0", b"\5\0\0", b"\0\0\x09", b"abc\x03\x02\x01", b"\1" * 5 + b"\5\5\5"],
)
def test_payload_rejects_bad_framing(bad: bytes) -> None:
    with pytest.raises(FormatError):
        D.PartPayload.from_bytes(bad)


# ---------------------------------------------------------------------------- part files


def _header_for(part_file: bytes, usize: int = 1000, n: int = 1) -> D.PartHeader:
    return D.PartHeader(0, sha(part_file), len(part_file), usize, ((1, "a" * 64),) * n)


def test_part_file_compression_kinds() -> None:
    payload = D.PartPayload(((0, 0, 0o100644),), ((),), b"hello" * 100, b"S")
    raw = payload.to_bytes()
    for kind in (D.COMPRESSION_NONE, D.COMPRESSION_XZ):
        part_file = D.encode_part_file(raw, kind)
        assert part_file[0] == kind
        assert D.decompress_part(part_file, max_output=len(raw)) == raw
        assert D.open_part(part_file, _header_for(part_file)) == payload
        assert D.open_part(io.BytesIO(part_file), _header_for(part_file)) == payload
    with pytest.raises(FormatError):
        D.decompress_part(b"g" + raw, max_output=10**6)
    with pytest.raises(FormatError):
        D.decompress_part(b"", max_output=10**6)
    with pytest.raises(FormatError):  # one byte over the cap
        D.decompress_part(D.encode_part_file(raw), max_output=len(raw) - 1)
    with pytest.raises(FormatError):
        D.decompress_part(D.encode_part_file(raw, D.COMPRESSION_NONE), max_output=len(raw) - 1)


def test_part_file_truncated_corrupt_or_trailing_xz() -> None:
    part_file = D.encode_part_file(os.urandom(5000))
    for bad in (
        part_file[:-1],
        part_file[: len(part_file) // 2],
        part_file + b"\0",
        part_file + part_file[1:],  # a second xz stream
        part_file[:40] + bytes([part_file[40] ^ 1]) + part_file[41:],
    ):
        with pytest.raises(FormatError):
            D.decompress_part(bad, max_output=10**6)


def test_xz_bomb_is_stopped_at_the_cap() -> None:
    block = bytes(16 * 1024 * 1024)
    small = xz_multiblock(b"abc" * 1000, 3)
    assert lzma.decompress(small) == b"abc" * 3000  # the construction is a valid xz stream
    bomb = b"x" + xz_multiblock(block, 64)  # 1 GiB of zeros in ~150 KB
    assert len(bomb) < 1_000_000
    header = _header_for(bomb, usize=1000)
    limit = D.part_payload_limit(header)
    assert limit < 4 * 1024 * 1024
    with pytest.raises(FormatError, match="exceeds its limit"):
        D.decompress_part(bomb, max_output=limit)
    with pytest.raises(FormatError, match="exceeds its limit"):
        D.open_part(bomb, header)
    with pytest.raises(FormatError, match="exceeds its limit"):
        D.open_part(io.BytesIO(bomb), header)


def test_xz_memory_limit_is_enforced() -> None:
    # An xz block header claiming a 4 GiB dictionary: refused before anything is allocated.
    one = lzma.compress(b"a" * 1000, format=lzma.FORMAT_XZ, preset=0)
    head = bytearray(one[12 : 12 + (one[12] + 1) * 4])
    pos = 2
    for flag in (0x40, 0x80):  # optional compressed / uncompressed size fields
        if head[1] & flag:
            _, pos = decode_varint(head, pos)
    filter_id, pos = decode_varint(head, pos)
    props_size, pos = decode_varint(head, pos)
    assert (filter_id, props_size) == (0x21, 1)  # LZMA2, one property byte: the dict size
    head[pos] = 40
    head[-4:] = zlib.crc32(head[:-4]).to_bytes(4, "little")
    hostile = b"x" + one[:12] + bytes(head) + one[12 + len(head) :]
    with pytest.raises(FormatError, match=r"[Mm]emory"):
        D.decompress_part(hostile, max_output=10**6)
    assert D.decompress_part(b"x" + one, max_output=10**6) == b"a" * 1000


def test_part_checksum_and_size_mismatch() -> None:
    part_file = D.encode_part_file(D.PartPayload((), (), b"data", b"").to_bytes())
    header = _header_for(part_file)
    tampered = part_file[:-5] + bytes([part_file[-5] ^ 0x40]) + part_file[-4:]
    for source in (tampered, io.BytesIO(tampered)):
        with pytest.raises(ChecksumError) as info:
            D.open_part(source, header)
        assert info.value.expected == header.checksum
    longer = part_file + b"\0"
    for source2 in (longer, io.BytesIO(longer)):
        with pytest.raises(ChecksumError):
            D.open_part(source2, header)
    # Inline parts are not checked against the header.
    assert D.open_part(part_file, D.PartHeader(0, "0" * 64, 1, 1000, ()), verify_checksum=False)


# ---------------------------------------------------------------------------- executor


def test_content_checksum_header_matches_documented_bytes() -> None:
    meta = ContentMeta(uid=0, gid=0, mode=0o100644, size=3)
    head = content_checksum_header(meta)
    assert head.hex() == "00000012000000000000000000000000000081a4000000000011"
    csum = content_csum(meta, b"hi\n")
    assert csum.startswith("fbf7cf77") and csum.endswith("e259")
    link = ContentMeta(uid=0, gid=0, mode=0o120777, symlink_target="a")
    assert content_csum(link, b"").startswith("438802d9")
    assert content_csum(link, b"").endswith("3e0a")
    # xattrs are hashed sorted by name, whatever order they come in
    x1 = ContentMeta(uid=0, gid=0, mode=0o100644, xattrs=((b"user.b\0", b"2"), (b"user.a\0", b"1")))
    x2 = ContentMeta(uid=0, gid=0, mode=0o100644, xattrs=((b"user.a\0", b"1"), (b"user.b\0", b"2")))
    assert content_checksum_header(x1) == content_checksum_header(x2)


class Built:
    """A synthetic part covering every op, plus the seeded target and expected objects."""

    def __init__(self) -> None:
        rng = random.Random(7)
        self.target = MemoryDeltaTarget()
        old = rng.randbytes(300_000)
        self.source_meta = ContentMeta(uid=0, gid=0, mode=0o100644, size=len(old))
        self.source = self.target.add_content(self.source_meta, old)
        new = bytearray(old)
        for off in range(1000, len(new), 9000):
            new[off] ^= 0x55
        self.expected: dict[str, tuple[ContentMeta, bytes]] = {}
        b = D.PartBuilder()
        dirtree = gvariant.encode("(a(say)a(sayay))", ([("f", b"\1" * 32)], []))
        self.dirtree = sha(dirtree)
        b.add_metadata(D.OBJ_DIRTREE, self.dirtree, dirtree)
        self.dirtree_bytes = dirtree
        for meta, data in (
            (ContentMeta(uid=0, gid=0, mode=0o100644, size=6), b"hello\n"),
            (ContentMeta(uid=0, gid=0, mode=0o100755, size=0), b""),
            (
                ContentMeta(uid=5, gid=6, mode=0o104755, xattrs=((b"user.x\0", b"1"),), size=3),
                b"abc",
            ),
            (ContentMeta(uid=0, gid=0, mode=0o120777, symlink_target="../target"), b"../target"),
        ):
            csum = content_csum(meta, data)
            b.add_content(csum, meta.uid, meta.gid, meta.mode, meta.xattrs, data)
            self.expected[csum] = (meta, b"" if meta.is_symlink else data)
        # bsdiff-built file
        meta = ContentMeta(uid=0, gid=0, mode=0o100644, size=len(new))
        self.bsdiff_csum = content_csum(meta, bytes(new))
        b.add_bsdiff(self.bsdiff_csum, 0, 0, 0o100644, (), len(new), self.source, bsdiff(old, new))
        self.expected[self.bsdiff_csum] = (meta, bytes(new))
        # rollsum-style file: pieces of the source and new bytes from the blob
        data = old[:100_000] + b"NEW" * 10 + old[150_000:] + b"!"
        meta = ContentMeta(
            uid=0, gid=0, mode=0o100600, xattrs=((b"user.q\0", b"v"),), size=len(data)
        )
        self.rollsum_csum = content_csum(meta, data)
        b.open_file(self.rollsum_csum, 0, 0, 0o100600, meta.xattrs, len(data))
        b.write_source(self.source, 0, 100_000)
        b.write_blob(b"NEW" * 10)
        b.write_source(self.source, 150_000, 150_000)
        b.write_blob(b"!")
        b.close_file()
        self.expected[self.rollsum_csum] = (meta, data)
        self.builder = b
        self.part_file, self.header = b.finish()
        self.payload = D.open_part(self.part_file, self.header)


def test_builder_ops_follow_ostree_patterns() -> None:
    built = Built()
    ops_bytes = built.payload.ops
    assert ops_bytes.count(bytes([SPLICE])) >= 5
    assert (
        bytes([SET_SRC]) in ops_bytes
        and bytes([PATCH]) in ops_bytes
        and bytes([UNSET_SRC]) in ops_bytes
    )
    assert len(built.header.objects) == 7
    assert built.header.usize == len(built.dirtree_bytes) + sum(
        len(d) for m, d in built.expected.values() if not m.is_symlink
    )
    assert built.payload.modes[0] == (0, 0, 0o100644)


def count_bspatch_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def counting_bspatch(*args: Any) -> None:
        calls.append(1)
        bspatch(*args)

    monkeypatch.setattr(deltaexec, "bspatch", counting_bspatch)
    return calls


def test_execute_synthetic_part_builds_every_object(monkeypatch: pytest.MonkeyPatch) -> None:
    built = Built()
    target = built.target
    calls = count_bspatch_calls(monkeypatch)
    assert execute_part(built.payload, built.header, target) == 7
    assert calls == [1]
    assert target.metadata[(D.OBJ_DIRTREE, built.dirtree)] == built.dirtree_bytes
    for csum, expected in built.expected.items():
        assert target.content[csum] == expected
    # The bsdiff and rollsum files are small: assembled in memory, no temp file.
    assert target.temp_files == [] and target.all_closed()
    # Running it again writes nothing: every object is already there.
    assert execute_part(built.payload, built.header, target) == 0


def test_execute_skips_objects_the_target_has_without_reading_sources() -> None:
    built = Built()
    target = built.target
    for csum, (meta, data) in built.expected.items():
        target.content[csum] = (meta, data)
    target.metadata[(D.OBJ_DIRTREE, built.dirtree)] = built.dirtree_bytes
    assert execute_part(built.payload, built.header, target) == 0
    assert target.sources == [] and target.temp_files == [] and target.writes == []


def test_execute_empty_part_is_skipped() -> None:
    header = D.PartHeader(0, "0" * 64, 0, 0, ())
    assert (
        execute_part(D.PartPayload((), (), b"", b"\xff garbage"), header, MemoryDeltaTarget()) == 0
    )


def test_execute_detects_wrong_object_checksum_before_writing() -> None:
    built = Built()
    objects = list(built.header.objects)
    for index in range(len(objects)):
        bad = list(objects)
        bad[index] = (bad[index][0], "f" * 64)
        header = D.PartHeader(
            0, built.header.checksum, built.header.size, built.header.usize, tuple(bad)
        )
        target = Built().target
        with pytest.raises(ChecksumError) as info:
            execute_part(built.payload, header, target)
        assert info.value.expected == "f" * 64
        assert "f" * 64 not in target.writes and len(target.writes) == index
        assert target.all_closed()


MODES = ((0, 0, 0o100644), (0, 0, 0o120777), (0, 0, 0o040755), (0, 0, 0o020644), (0, 0, 0o1100644))


def run_hostile(
    op_bytes: bytes,
    blob: bytes = b"0123456789" * 10,
    objects: tuple[tuple[int, str], ...] = ((1, "a" * 64),),
    usize: int = 10**6,
    target: MemoryDeltaTarget | None = None,
) -> MemoryDeltaTarget:
    target = target or MemoryDeltaTarget()
    payload = D.PartPayload(MODES, ((), ((b"a\0", b""), (b"a\0", b"x"))), blob, op_bytes)
    header = D.PartHeader(0, "0" * 64, 1, usize, objects)
    with pytest.raises(FormatError):
        execute_part(payload, header, target)
    assert target.all_closed()
    return target


SRC_META = ContentMeta(uid=0, gid=0, mode=0o100644, size=50)


def seeded() -> tuple[MemoryDeltaTarget, bytes]:
    target = MemoryDeltaTarget()
    csum = target.add_content(SRC_META, bytes(range(50)))
    return target, bytes.fromhex(csum)


@pytest.mark.parametrize(
    "op_bytes",
    [
        pytest.param(ops(OPEN, (0, 0)), id="truncated-varint"),
        pytest.param(ops(OPEN, (0, 0, 10)) + b"\x77\x85", id="truncated-mid-varint"),
        pytest.param(ops(0xFF), id="unknown-opcode"),
        pytest.param(ops(ord("g")), id="unknown-opcode-g"),
        pytest.param(ops(OPEN, (0, 0, 10), WRITE, (20, 0)), id="write-past-size"),
        pytest.param(
            ops(OPEN, (0, 0, 10), WRITE, (5, 0), WRITE, (6, 0)), id="second-write-past-size"
        ),
        pytest.param(ops(OPEN, (0, 0, 10), WRITE, (5, 0), CLOSE), id="close-short"),
        pytest.param(ops(OPEN, (0, 0, 10), WRITE, (10, 95), CLOSE), id="blob-read-past-end"),
        pytest.param(ops(OPEN, (0, 0, 10), WRITE, (10, 2**64 - 1), CLOSE), id="blob-offset-huge"),
        pytest.param(ops(SPLICE, (0, 0, 10, 95)), id="splice-past-blob"),
        pytest.param(ops(SPLICE, (9, 0, 1, 0)), id="mode-index-out-of-range"),
        pytest.param(ops(SPLICE, (0, 9, 1, 0)), id="xattr-index-out-of-range"),
        pytest.param(ops(SPLICE, (0, 1, 1, 0)), id="duplicate-xattr-names"),
        pytest.param(ops(SPLICE, (2, 0, 1, 0)), id="directory-mode"),
        pytest.param(ops(SPLICE, (3, 0, 1, 0)), id="device-mode"),
        pytest.param(ops(SPLICE, (4, 0, 1, 0)), id="mode-with-extra-bits"),
        pytest.param(ops(SPLICE, (1, 0, 0, 0)), id="empty-symlink-target"),
        pytest.param(ops(OPEN, (1, 0, 5)), id="open-symlink"),
        pytest.param(ops(OPEN, (0, 0, 10), OPEN, (0, 0, 10)), id="open-twice"),
        pytest.param(ops(OPEN, (0, 0, 10), SPLICE, (0, 0, 1, 0)), id="splice-while-open"),
        pytest.param(ops(OPEN, (0, 0, 10)), id="ends-with-open-file"),
        pytest.param(ops(CLOSE), id="close-without-open"),
        pytest.param(ops(WRITE, (1, 0)), id="write-without-open"),
        pytest.param(ops(OPEN, (0, 0, 10), PATCH, (0, 10)), id="bspatch-without-source"),
        pytest.param(ops(SET_SRC, (99,)), id="read-source-past-blob"),
        pytest.param(ops(OPEN, (0, 0, 2**40)), id="open-beyond-usize"),
        pytest.param(b"", id="no-ops-for-an-object"),
    ],
)
def test_execute_rejects_hostile_ops(op_bytes: bytes) -> None:
    run_hostile(op_bytes)


def test_execute_rejects_ops_past_the_object_list() -> None:
    meta = ContentMeta(uid=0, gid=0, mode=0o100644, size=1)
    csum = content_csum(meta, b"0")
    target = run_hostile(ops(SPLICE, (0, 0, 1, 0), SPLICE, (0, 0, 1, 0)), objects=((1, csum),))
    assert target.writes == [csum]  # the first object was fine and verified
    run_hostile(ops(SPLICE, (5,)), objects=((2, "a" * 64),))  # truncated metadata splice
    run_hostile(ops(OPEN, (0, 0, 1)), objects=((3, "a" * 64),))  # open on a metadata entry


def test_execute_bounds_total_output_by_usize() -> None:
    meta = ContentMeta(uid=0, gid=0, mode=0o100644, size=10)
    csum = content_csum(meta, b"0123456789")
    run_hostile(ops(SPLICE, (0, 0, 10, 0)), objects=((1, csum),), usize=9)
    payload = D.PartPayload(MODES, ((),), b"0123456789", ops(SPLICE, (0, 0, 10, 0)))
    header = D.PartHeader(0, "0" * 64, 1, 10, ((1, csum),))
    assert execute_part(payload, header, MemoryDeltaTarget()) == 1


def test_execute_rejects_bad_read_source_use() -> None:
    target, src = seeded()
    blob = src + b"x" * 40
    # Source offset out of range: the source has 50 bytes.
    run_hostile(
        ops(SET_SRC, (0,), OPEN, (0, 0, 10), WRITE, (10, 45), CLOSE), blob=blob, target=target
    )
    run_hostile(
        ops(SET_SRC, (0,), OPEN, (0, 0, 10), WRITE, (10, 2**63), CLOSE), blob=blob, target=target
    )
    # A missing source object is the target's error to raise.
    missing = MemoryDeltaTarget()
    with pytest.raises(ObjectNotFoundError):
        execute_part(
            D.PartPayload(
                MODES, ((),), blob, ops(SET_SRC, (0,), OPEN, (0, 0, 10), WRITE, (10, 0), CLOSE)
            ),
            D.PartHeader(0, "0" * 64, 1, 100, ((1, "a" * 64),)),
            missing,
        )
    assert missing.all_closed()
    # bspatch after data was written, and a patch that overruns the size.
    target2, _ = seeded()
    run_hostile(
        ops(SET_SRC, (0,), OPEN, (0, 0, 10), WRITE, (1, 0), PATCH, (32, 8)),
        blob=blob,
        target=target2,
    )
    overrun = b"".join(v.to_bytes(8, "little") for v in (0, 11, 0)) + b"z" * 11
    run_hostile(
        ops(SET_SRC, (0,), OPEN, (0, 0, 10), PATCH, (32, len(overrun)), CLOSE),
        blob=src + overrun,
        target=target2,
    )
    run_hostile(
        ops(SET_SRC, (0,), OPEN, (0, 0, 10), PATCH, (32, 100), CLOSE), blob=blob, target=target2
    )


def test_execute_read_source_writes_copy_from_the_source() -> None:
    target, src = seeded()
    data = bytes(range(20, 30)) + b"xyz"
    meta = ContentMeta(uid=0, gid=0, mode=0o100644, size=len(data))
    csum = content_csum(meta, data)
    payload = D.PartPayload(
        MODES,
        ((),),
        src + b"xyz",
        ops(SET_SRC, (0,), OPEN, (0, 0, 13), WRITE, (10, 20), UNSET_SRC, WRITE, (3, 32), CLOSE),
    )
    header = D.PartHeader(0, "0" * 64, 1, 100, ((1, csum),))
    assert execute_part(payload, header, target) == 1
    assert target.content[csum] == (meta, data)
    assert target.all_closed()


def test_execute_symlink_target_must_be_text() -> None:
    for target_bytes in (b"a\0b", b"\xff\xfe"):
        run_hostile(ops(SPLICE, (1, 0, len(target_bytes), 0)), blob=target_bytes)


# ---------------------------------------------------------------------------- real deltas


def _objpath(repo: Path, csum: str, ext: str) -> Path:
    return repo / "objects" / csum[:2] / f"{csum[2:]}.{ext}"


_META_EXT = {D.OBJ_DIRTREE: "dirtree", D.OBJ_DIRMETA: "dirmeta", D.OBJ_COMMIT: "commit"}


def read_filez(repo: Path, csum: str) -> tuple[ContentMeta, bytes]:
    """Read an archive-mode ``.filez``: header, then raw-deflate data (§2.6)."""
    raw = _objpath(repo, csum, "filez").read_bytes()
    hlen = int.from_bytes(raw[:4], "big")
    assert raw[4:8] == bytes(4)
    size, uid, gid, mode, rdev, target, xattrs = gvariant.decode(
        "(tuuuusa(ayay))", raw[8 : 8 + hlen]
    )
    body = raw[8 + hlen :]
    data = zlib.decompress(body, -15) if body else b""
    assert len(data) == swap64(size) and rdev == 0
    meta = ContentMeta(
        uid=swap32(uid),
        gid=swap32(gid),
        mode=swap32(mode),
        symlink_target=target,
        xattrs=tuple(sorted((bytes(k), bytes(v)) for k, v in xattrs)),
        size=len(data),
    )
    return meta, data


def reachable(repo: Path, commit: str) -> Iterator[tuple[int, str]]:
    yield D.OBJ_COMMIT, commit
    value = gvariant.decode(D.COMMIT_TYPE, _objpath(repo, commit, "commit").read_bytes())
    stack = [(bytes(value[6]).hex(), bytes(value[7]).hex())]
    while stack:
        tree, meta = stack.pop()
        yield D.OBJ_DIRTREE, tree
        yield D.OBJ_DIRMETA, meta
        files, dirs = gvariant.decode(
            "(a(say)a(sayay))", _objpath(repo, tree, "dirtree").read_bytes()
        )
        for _name, csum in files:
            yield D.OBJ_FILE, bytes(csum).hex()
        stack.extend((bytes(t).hex(), bytes(m).hex()) for _n, t, m in dirs)


def seeded_from(repo: Path, commit: str | None) -> MemoryDeltaTarget:
    """A memory target holding every object of ``commit`` (read from the real repo)."""
    target = MemoryDeltaTarget()
    if commit is not None:
        for objtype, csum in reachable(repo, commit):
            if objtype == D.OBJ_FILE:
                target.content[csum] = read_filez(repo, csum)
            else:
                path = _objpath(repo, csum, _META_EXT[objtype])
                target.metadata[(objtype, csum)] = path.read_bytes()
    return target


@pytest.fixture(scope="session")
def real_deltas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if OSTREE is None:
        pytest.skip("needs the real ostree binary")
    out = tmp_path_factory.mktemp("deltas") / "fx"
    subprocess.run(["sh", str(FIXTURE_SCRIPT), str(out)], check=True, capture_output=True)
    return out


VARIANTS = [
    "empty-a",
    "empty-b",
    "ab",
    "ab-inline",
    "ab-nobsdiff",
    "ab-swap",
    "ab-chunk0",
    "ab-fallback",
    "ab-signed",
]


def load_superblock(path: Path) -> tuple[D.DeltaSuperblock, dict[str, tuple[bytes, ...]]]:
    raw = path.read_bytes()
    sigs: dict[str, tuple[bytes, ...]] = {}
    unwrapped = D.unwrap_signed_superblock(raw)
    if unwrapped is not None:
        inner, sigs = unwrapped
        assert D.wrap_signed_superblock(inner, sigs) == raw
        raw = inner
    sb = D.DeltaSuperblock.from_bytes(raw)
    assert sb.to_bytes() == raw
    return sb, sigs


@needs_ostree
@pytest.mark.interop
def test_real_superblocks_parse_and_round_trip(real_deltas: Path) -> None:
    commit_a, commit_b = (real_deltas / "commits").read_text().split()
    repo = real_deltas / "repo"
    sbs = {}
    for name in VARIANTS:
        sb, sigs = load_superblock(real_deltas / "deltas" / name / "superblock")
        sbs[name] = sb
        assert sb.to_checksum == (commit_a if name == "empty-a" else commit_b)
        assert sb.from_checksum == (None if name.startswith("empty") else commit_a)
        assert sb.commit == _objpath(repo, sb.to_checksum, "commit").read_bytes()
        assert (name == "ab-signed") == bool(sigs)
        assert all(p.version == 0 for p in sb.parts)
    assert sbs["ab-swap"].endianness == "B" and sbs["ab"].endianness == "l"
    assert sbs["ab-swap"].parts == sbs["ab"].parts
    assert len(sbs["ab-chunk0"].parts) == sum(len(p.objects) for p in sbs["ab"].parts)
    assert list(load_superblock(real_deltas / "deltas/ab-signed/superblock")[1]) == [
        "ostree.sign.dummy"
    ]
    # commitmeta is embedded for B (it has detached metadata), not for A
    assert sbs["empty-a"].commitmeta is None
    commitmeta = sbs["ab"].commitmeta
    assert commitmeta == _objpath(repo, commit_b, "commitmeta").read_bytes()
    # fallbacks: the 1.1 MB new file, with its real .filez size
    (fb,) = sbs["ab-fallback"].fallbacks
    assert fb.compressed_size == _objpath(repo, fb.checksum, "filez").stat().st_size
    assert fb.uncompressed_size == 1_100_000
    # inline parts are the very part files of the regular delta
    inline = sbs["ab-inline"]
    assert inline.inline_part(0) is not None and inline.parts[0].size == len(
        inline.inline_part(0) or b""
    )


@needs_ostree
@pytest.mark.interop
@pytest.mark.parametrize("name", VARIANTS)
def test_real_delta_parts_execute_to_the_real_objects(
    real_deltas: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = real_deltas / "repo"
    delta = real_deltas / "deltas" / name
    sb, _sigs = load_superblock(delta / "superblock")
    target = seeded_from(repo, sb.from_checksum)
    seeded_count = len(target.content) + len(target.metadata)
    patches = count_bspatch_calls(monkeypatch)
    total = 0
    for index, header in enumerate(sb.parts):
        inline = sb.inline_part(index)
        if inline is not None:
            assert sha(inline) == header.checksum
            payload = D.open_part(inline, header, verify_checksum=False)
        else:
            with open(delta / str(index), "rb") as f:
                payload = D.open_part(f, header)
        assert len(payload.to_bytes()) <= D.part_payload_limit(header)
        part_file = inline or (delta / str(index)).read_bytes()
        assert payload.to_bytes() == D.decompress_part(part_file, max_output=10**8)
        total += execute_part(payload, header, target)
        for objtype, csum in header.objects:
            if objtype == D.OBJ_FILE:
                assert target.content[csum] == read_filez(repo, csum)
            else:
                real = _objpath(repo, csum, _META_EXT[objtype]).read_bytes()
                assert target.metadata[(objtype, csum)] == real
    assert total == sum(len(p.objects) for p in sb.parts)
    assert len(target.content) + len(target.metadata) == seeded_count + total
    assert target.all_closed()
    # Together with the fallbacks and the embedded commit, the to-commit is complete.
    have = {c for c in target.content} | {c for _t, c in target.metadata}
    have |= {f.checksum for f in sb.fallbacks} | {sb.to_checksum}
    assert {c for _t, c in reachable(repo, sb.to_checksum)} <= have
    if name in ("ab", "ab-chunk0", "ab-inline", "ab-swap", "ab-signed", "ab-fallback"):
        assert patches, "expected a bsdiff object"
    if name.startswith("ab"):
        assert target.sources, "expected read-source (rollsum or bsdiff) ops"
    if name == "ab-nobsdiff":
        # two rollsum files, each rebuilt from its own source
        assert not patches and len(set(target.source_csums)) == 2, target.source_csums


@needs_ostree
@pytest.mark.interop
def test_real_part_tampering_is_detected(real_deltas: Path) -> None:
    delta = real_deltas / "deltas" / "ab"
    sb, _ = load_superblock(delta / "superblock")
    part_file = (delta / "0").read_bytes()
    header = sb.parts[0]
    for bad in (part_file[:-1], part_file[:100] + b"\0" + part_file[101:]):
        with pytest.raises(ChecksumError):
            D.open_part(bad, header)
    with pytest.raises(FormatError):
        D.open_part(part_file[:-10], header, verify_checksum=False)
    # Truncated payloads (ops cut short) fail in the executor, never with IndexError.
    payload = D.open_part(part_file, header)
    for cut in (1, len(payload.ops) // 3, len(payload.ops) // 2):
        short = D.PartPayload(payload.modes, payload.xattrs, payload.blob, payload.ops[:-cut])
        target = seeded_from(real_deltas / "repo", sb.from_checksum)
        with pytest.raises(FormatError):
            execute_part(short, header, target)
        assert target.all_closed()


def files_by_path(repo: Path, commit: str) -> dict[str, str]:
    """path → content checksum for every file and symlink of ``commit``."""
    value = gvariant.decode(D.COMMIT_TYPE, _objpath(repo, commit, "commit").read_bytes())
    out: dict[str, str] = {}
    stack = [("", bytes(value[6]).hex())]
    while stack:
        prefix, tree = stack.pop()
        files, dirs = gvariant.decode(
            "(a(say)a(sayay))", _objpath(repo, tree, "dirtree").read_bytes()
        )
        out.update({f"{prefix}/{name}": bytes(csum).hex() for name, csum in files})
        stack.extend((f"{prefix}/{name}", bytes(t).hex()) for name, t, _m in dirs)
    return out


def build_delta_like_ostree(
    repo: Path, frm: str, to: str, out: Path, **options: Any
) -> dict[str, int]:
    """Write a from→to delta made only by pyostree's builders; count the kinds of objects."""
    kinds = {"whole": 0, "bsdiff": 0, "copy": 0}
    from_objects = set(reachable(repo, frm))
    new = [o for o in dict.fromkeys(reachable(repo, to)) if o not in from_objects]
    new = [o for o in new if o != (D.OBJ_COMMIT, to)]
    old_by_path = files_by_path(repo, frm)
    path_of = {csum: path for path, csum in files_by_path(repo, to).items()}
    builder = D.PartBuilder()
    for objtype, csum in sorted(new, key=lambda o: o[0] == D.OBJ_FILE):
        if objtype != D.OBJ_FILE:
            builder.add_metadata(
                objtype, csum, _objpath(repo, csum, _META_EXT[objtype]).read_bytes()
            )
            continue
        meta, data = read_filez(repo, csum)
        source = old_by_path.get(path_of[csum])
        old_meta, old = read_filez(repo, source) if source else (None, b"")
        if (
            source is None
            or old_meta is None
            or meta.is_symlink
            or old_meta.is_symlink
            or len(old) < 1000
        ):
            payload = meta.symlink_target.encode() if meta.is_symlink else data
            builder.add_content(csum, meta.uid, meta.gid, meta.mode, meta.xattrs, payload)
            kinds["whole"] += 1
        elif len(builder.objects) % 2:
            kinds["bsdiff"] += 1
            patch = bsdiff(old, data)
            builder.add_bsdiff(
                csum, meta.uid, meta.gid, meta.mode, meta.xattrs, len(data), source, patch
            )
        else:  # rollsum-like: copy the common prefix from the source, ship the rest
            kinds["copy"] += 1
            prefix = next((i for i, (x, y) in enumerate(zip(old, data, strict=False)) if x != y), 0)
            builder.open_file(csum, meta.uid, meta.gid, meta.mode, meta.xattrs, len(data))
            builder.write_source(source, 0, prefix)
            builder.write_blob(data[prefix:])
            builder.close_file()
    compression = options.pop("compression", D.COMPRESSION_XZ)
    part_file, header = builder.finish(compression)
    commitmeta = _objpath(repo, to, "commitmeta")
    inline = options.pop("inline", False)
    sb = D.DeltaSuperblock.build(
        from_checksum=frm,
        to_checksum=to,
        commit=_objpath(repo, to, "commit").read_bytes(),
        parts=[header],
        timestamp=1_700_000_000,
        commitmeta=commitmeta.read_bytes() if commitmeta.exists() else None,
        inline_parts=[part_file] if inline else None,
        **options,
    )
    out.mkdir(parents=True)
    (out / "superblock").write_bytes(sb.to_bytes())
    if not inline:
        (out / "0").write_bytes(part_file)
    return kinds


@needs_ostree
@pytest.mark.interop
@pytest.mark.parametrize(
    "options",
    [{}, {"inline": True, "endianness": "B", "compression": D.COMPRESSION_NONE}],
    ids=["plain", "inline-swapped-uncompressed"],
)
def test_real_ostree_applies_a_delta_built_by_pyostree(
    real_deltas: Path, tmp_path: Path, options: dict[str, Any]
) -> None:
    repo = real_deltas / "repo"
    commit_a, commit_b = (real_deltas / "commits").read_text().split()
    kinds = build_delta_like_ostree(repo, commit_a, commit_b, tmp_path / "delta", **options)
    assert kinds["bsdiff"] and kinds["copy"] and kinds["whole"]
    client = tmp_path / "client"

    def ostree(*args: str) -> str:
        result = subprocess.run(
            ["ostree", f"--repo={client}", *args], check=True, capture_output=True, text=True
        )
        return result.stdout

    ostree("init", "--mode=bare-user")
    ostree("pull-local", str(repo), "v1")
    ostree("static-delta", "apply-offline", str(tmp_path / "delta" / "superblock"))
    assert "no errors found" in ostree("fsck")
    real_listing = subprocess.run(
        ["ostree", f"--repo={repo}", "ls", "-R", "-X", commit_b],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert ostree("ls", "-R", "-X", commit_b) == real_listing
