"""Streaming delta parts: decompression into a file, framing-only payload parsing, the executor
reading blob ranges from that file, and parts applied to real repositories.

Parts here are bigger than every in-memory threshold of the streaming path (1 MiB pieces, the
64 KiB op window, 4 MiB bsdiff patches kept in memory), and hostile ones must fail before any
decompression (bad checksum, truncated) or leave nothing half-written (xz bomb, a write past an
object's size, an object that does not match its name).
"""

from __future__ import annotations

import errno
import hashlib
import io
import lzma
import os
import random
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyostree import deltas, transaction
from pyostree.core import ObjectType
from pyostree.deltaexec import (
    ContentMeta,
    execute_part,
    execute_payload_file,
)
from pyostree.errors import ChecksumError, FormatError, NoSpaceError
from pyostree.formats import delta as D
from pyostree.formats.bspatch import encode_offtin
from pyostree.formats.content import ContentHasher
from pyostree.formats.varint import encode_varint
from pyostree.repo import Repo, RepoMode

from .deltahelpers import MemoryDeltaTarget, MiB, content_csum

REG = 0o100644


def pseudo_random(seed: int, size: int) -> bytes:
    """Data xz cannot shrink much, made quickly (so parts stay big after compression)."""
    rng = random.Random(seed)
    block = rng.randbytes(64 * 1024)
    out = bytearray()
    while len(out) < size:
        out += block[rng.randrange(len(block)) :] + rng.randbytes(997)
    return bytes(out[:size])


def add_file(b: D.PartBuilder, data: bytes, mode: int = REG) -> str:
    meta = ContentMeta(uid=0, gid=0, mode=mode, size=len(data))
    csum = content_csum(meta, data)
    b.add_content(csum, 0, 0, mode, (), data)
    return csum


def raw_bspatch(new: bytes) -> bytes:
    """A one-block bsdiff patch that ignores the old file: no diff bytes, ``new`` as extra."""
    return encode_offtin(0) + encode_offtin(len(new)) + encode_offtin(0) + new


class BigPart:
    """A part past every in-memory threshold, with the objects it must produce."""

    def __init__(self, target: MemoryDeltaTarget) -> None:
        source_data = pseudo_random(1, 300_000)
        self.source = target.add_content(ContentMeta(uid=0, gid=0, mode=REG, size=300_000),
                                         source_data)
        b = D.PartBuilder()
        self.expected: dict[str, bytes] = {}
        big = pseudo_random(2, 3 * MiB + 17)  # spliced in 1 MiB pieces
        self.expected[add_file(b, big)] = big
        for i in range(300):  # small files: one pread each
            data = b"small %d " % i * (i % 7 + 1)
            self.expected[add_file(b, data)] = data
        target_meta = ContentMeta(uid=0, gid=0, mode=0o120777, symlink_target="to/big")
        link = content_csum(target_meta, b"")
        b.add_content(link, 0, 0, 0o120777, (), b"to/big")
        self.expected[link] = b""
        # A rollsum file of ~20k tiny writes: its ops (> 64 KiB) cross many window refills.
        pieces: list[bytes] = []
        for i in range(20_000):
            pieces.append(bytes([i % 251]) if i % 3 else source_data[i : i + 2])
        rollsum = b"".join(pieces)
        meta = ContentMeta(uid=0, gid=0, mode=0o100600, size=len(rollsum))
        self.rollsum = content_csum(meta, rollsum)
        b.open_file(self.rollsum, 0, 0, 0o100600, (), len(rollsum))
        for i, piece in enumerate(pieces):
            if i % 3:
                b.write_blob(piece)
            else:
                b.write_source(self.source, i, 2)
        b.close_file()
        self.expected[self.rollsum] = rollsum
        # A bspatch file whose patch (5 MiB) is mapped rather than copied.
        patched = pseudo_random(3, 5 * MiB)
        meta = ContentMeta(uid=0, gid=0, mode=REG, size=len(patched))
        self.patched = content_csum(meta, patched)
        b.add_bsdiff(self.patched, 0, 0, REG, (), len(patched), self.source, raw_bspatch(patched))
        self.expected[self.patched] = patched
        self.part_file, self.header = b.finish(preset=0)
        self.payload = D.decompress_part(self.part_file, max_output=10**9)


def layout_of(path: Path, header: D.PartHeader) -> D.PayloadLayout:
    fd = os.open(path, os.O_RDONLY)
    try:
        return D.PayloadLayout.parse(
            os.fstat(fd).st_size,
            lambda offset, n: os.pread(fd, n, offset),
            max_entries=len(header.objects),
        )
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def big() -> Iterator[tuple[BigPart, MemoryDeltaTarget]]:
    target = MemoryDeltaTarget()
    yield BigPart(target), target


# ---------------------------------------------------------------------------- decompression


@pytest.mark.parametrize("compression", [D.COMPRESSION_XZ, D.COMPRESSION_NONE])
def test_decompress_streams_bounded_pieces(compression: int) -> None:
    payload = pseudo_random(4, 3 * MiB + 5)
    part_file = D.encode_part_file(payload, compression, preset=0)
    pieces: list[int] = []
    out = bytearray()

    def write(chunk: bytes) -> None:
        pieces.append(len(chunk))
        out.extend(chunk)

    size = D.decompress_part_into(io.BytesIO(part_file), write, max_output=len(payload))
    assert size == len(payload) and bytes(out) == payload
    assert len(pieces) > 3 and max(pieces) <= 256 * 1024


def test_decompress_bomb_never_writes_past_the_limit() -> None:
    limit = 2 * MiB
    bomb = b"x" + lzma.compress(b"\0" * (64 * MiB), preset=0)
    written = 0

    def write(chunk: bytes) -> None:
        nonlocal written
        written += len(chunk)

    with pytest.raises(FormatError, match="limit"):
        D.decompress_part_into(bomb, write, max_output=limit)
    assert written <= limit


@pytest.mark.parametrize("damage", ["truncated", "trailing", "corrupt", "kind", "empty"])
def test_decompress_rejects_damaged_part_files(damage: str) -> None:
    good = D.encode_part_file(pseudo_random(5, 200_000), preset=0)
    bad = {
        "truncated": good[: len(good) // 2],
        "trailing": good + b"\0",
        "corrupt": good[:100] + bytes([good[100] ^ 0xFF]) + good[101:],
        "kind": b"g" + good[1:],
        "empty": b"",
    }[damage]
    with pytest.raises(FormatError):
        D.decompress_part_into(bad, lambda _chunk: None, max_output=10**7)


# ---------------------------------------------------------------------------- payload framing


def test_layout_matches_in_memory_parse(big: tuple[BigPart, MemoryDeltaTarget]) -> None:
    part, _ = big
    raw = part.payload
    layout = D.PayloadLayout.parse(
        len(raw), lambda offset, n: raw[offset : offset + n], max_entries=len(part.header.objects)
    )
    parsed = D.PartPayload.from_bytes(raw)
    assert (layout.modes, layout.xattrs) == (parsed.modes, parsed.xattrs)
    blob_end = layout.blob_offset + layout.blob_size
    assert raw[layout.blob_offset : blob_end] == parsed.blob
    assert raw[layout.ops_offset : layout.ops_offset + layout.ops_size] == parsed.ops
    assert layout.ops_size > 64 * 1024 and layout.size == len(raw)


def small_payload(entries: int = 1) -> bytes:
    modes = tuple((0, 0, REG + i) for i in range(entries))
    xattrs = tuple(((b"user.k%d\0" % i, b"v"),) for i in range(entries))
    return D.PartPayload(modes, xattrs, b"blob", b"ops").to_bytes()


def parse(raw: bytes, **kw: Any) -> D.PayloadLayout:
    kw.setdefault("max_entries", 10)
    return D.PayloadLayout.parse(len(raw), lambda o, n: raw[o : o + n], **kw)


def test_layout_rejects_hostile_framing() -> None:
    raw = small_payload(2)
    assert len(parse(raw).modes) == 2
    with pytest.raises(FormatError, match="out of range"):
        parse(raw[:-1] + bytes([len(raw)]))  # end of modes past the offset table
    with pytest.raises(FormatError, match="multiple of 12"):
        parse(raw[:-1] + bytes([raw[-1] - 1]))
    with pytest.raises(FormatError, match="too short"):
        parse(b"\0\0")
    with pytest.raises(FormatError, match="more entries"):
        parse(raw, max_entries=1)
    with pytest.raises(FormatError, match="bytes, more than"):
        parse(raw, max_table_bytes=10)
    with pytest.raises(FormatError, match="truncated"):
        D.PayloadLayout.parse(len(raw), lambda o, n: raw[o : o + n][:-1], max_entries=10)
    many_xattrs = D.PartPayload((), tuple(() for _ in range(50)), b"", b"").to_bytes()
    with pytest.raises(FormatError, match="xattr table has more entries"):
        parse(many_xattrs)


# ---------------------------------------------------------------------------- file-backed executor


def test_file_payload_builds_what_the_memory_payload_builds(
    big: tuple[BigPart, MemoryDeltaTarget], tmp_path: Path
) -> None:
    part, seeded = big
    in_memory = MemoryDeltaTarget()
    in_memory.content = dict(seeded.content)
    n = execute_part(D.PartPayload.from_bytes(part.payload), part.header, in_memory)
    payload_path = tmp_path / "payload"
    payload_path.write_bytes(part.payload)
    from_file = MemoryDeltaTarget()
    from_file.content = dict(seeded.content)
    with open(payload_path, "rb") as fh:
        assert (
            execute_payload_file(fh, layout_of(payload_path, part.header), part.header, from_file)
            == n
            == len(part.expected)
        )
    assert from_file.content == in_memory.content
    for csum, data in part.expected.items():
        assert from_file.content[csum][1] == data
    assert all(f.closed for f in from_file.opened)


def test_file_payload_maps_big_patches_and_reads_in_pieces(
    big: tuple[BigPart, MemoryDeltaTarget], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part, seeded = big
    path = tmp_path / "payload"
    path.write_bytes(part.payload)
    reads: list[int] = []
    real_pread = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    target = MemoryDeltaTarget()
    target.content = dict(seeded.content)
    with open(path, "rb") as fh:
        execute_payload_file(fh, layout_of(path, part.header), part.header, target)
    assert max(reads) <= MiB  # the 5 MiB patch was mapped, the 3 MiB file read in pieces
    assert target.content[part.patched][1] == part.expected[part.patched]


def test_file_payload_shorter_than_its_layout(
    big: tuple[BigPart, MemoryDeltaTarget], tmp_path: Path
) -> None:
    part, _ = big
    path = tmp_path / "payload"
    path.write_bytes(part.payload)
    layout = layout_of(path, part.header)
    with open(path, "r+b") as fh:
        fh.truncate(len(part.payload) - 100)
        with pytest.raises(FormatError, match="shorter"):
            execute_payload_file(fh, layout, part.header, MemoryDeltaTarget())


# ---------------------------------------------------------------------------- into repositories


def staged_temp_files(txn: transaction.Transaction) -> list[str]:
    """Files in the staging directory that are not staged objects (``XX/REST.EXT``)."""
    assert txn.staging is not None
    top = [p.name for p in txn.staging.iterdir() if p.name != ".lock" and not p.is_dir()]
    nested = [f"{p.parent.name}/{p.name}" for p in txn.staging.glob("??/tmp-*")]
    return sorted(top + nested)


@pytest.mark.parametrize("mode", [RepoMode.BARE_USER, RepoMode.ARCHIVE])
def test_big_part_into_a_repository(
    tmp_path: Path, mode: RepoMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    b = D.PartBuilder()
    expected: dict[str, bytes] = {}
    for size in (6 * MiB + 3, 1, 0, 4096, MiB, MiB + 1):
        data = pseudo_random(rng.randrange(1000), size)
        expected[add_file(b, data)] = data
    part_file, header = b.finish(preset=0)
    repo = Repo.create(tmp_path / "repo", mode=mode)
    hashed: list[int] = []
    real_hasher = ContentHasher

    def counting_hasher(*args: Any) -> Any:
        hashed.append(1)
        return real_hasher(*args)

    monkeypatch.setattr("pyostree.transaction.ContentHasher", counting_hasher)
    with repo.transaction() as txn:
        with deltas.unpack_part(txn, part_file, header) as unpacked:
            assert staged_temp_files(txn) == []  # the payload file has no name
            assert unpacked.layout.blob_size > 6 * MiB
            assert unpacked.execute(txn) == len(expected)
        assert staged_temp_files(txn) == []
    assert hashed == []  # verified once, by the executor, not again by the repository
    for csum, data in expected.items():
        fh_header, stream = repo.open_content(csum)
        assert stream is not None and fh_header.size == len(data)
        with stream:
            assert stream.read() == data


def test_streaming_keeps_python_memory_small(tmp_path: Path) -> None:
    b = D.PartBuilder()
    for i in range(3):
        add_file(b, pseudo_random(10 + i, 4 * MiB))
    part_file, header = b.finish(preset=0)
    path = tmp_path / "part"
    path.write_bytes(part_file)
    del part_file
    repo = Repo.create(tmp_path / "repo", mode=RepoMode.BARE_USER)
    with repo.transaction() as txn:
        tracemalloc.start()
        try:
            with open(path, "rb") as fh:
                assert deltas.execute_part_file(txn, fh, header) == 3
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 5 * MiB, f"peak {peak} for a 12 MiB payload"


def test_part_is_verified_before_decompression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = D.PartBuilder()
    add_file(b, b"hello")
    part_file, header = b.finish()

    def never(*_args: Any, **_kw: Any) -> Any:
        raise AssertionError("decompressed an unverified part")

    monkeypatch.setattr(lzma, "LZMADecompressor", never)
    repo = Repo.create(tmp_path / "repo", mode=RepoMode.BARE_USER)
    flipped = part_file[:-1] + bytes([part_file[-1] ^ 1])
    with repo.transaction() as txn:
        for bad in (flipped, part_file[:-1], part_file + b"more"):
            path = tmp_path / "bad"
            path.write_bytes(bad)
            with open(path, "rb") as fh, pytest.raises(ChecksumError, match="delta part") as err:
                deltas.execute_part_file(txn, fh, header)
            assert err.value.expected == header.checksum
        assert staged_temp_files(txn) == []


def test_oversized_part_file_is_not_read_whole(tmp_path: Path) -> None:
    b = D.PartBuilder()
    add_file(b, b"x")
    _, header = b.finish()

    class Endless(io.RawIOBase):
        served = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            n = len(buffer)
            buffer[:n] = b"\0" * n
            self.served += n
            return n

    source = Endless()
    repo = Repo.create(tmp_path / "repo", mode=RepoMode.BARE_USER)
    with repo.transaction() as txn, pytest.raises(ChecksumError):
        deltas.execute_part_file(txn, source, header)  # type: ignore[arg-type]
    assert source.served <= header.size + 1


def hostile(kind: str) -> tuple[bytes, D.PartHeader, str]:
    """A part whose first object is fine and whose second is hostile; returns the good csum."""
    b = D.PartBuilder()
    good = add_file(b, b"good object")
    if kind == "bomb":
        payload = b"\0" * (16 * MiB)
        part = b"x" + lzma.compress(payload, preset=0)
        header = D.PartHeader(
            0, hashlib.sha256(part).hexdigest(), len(part), 100, ((D.OBJ_FILE, good),)
        )
        return part, header, good
    data = b"B" * 100
    csum = "ab" * 32 if kind == "wrong-name" else add_file(D.PartBuilder(), data[:10])
    b.open_file(csum, 0, 0, REG, (), 10)
    if kind == "overflow":
        b._op(D.OP_WRITE, 100, b._append_blob(data))  # 100 bytes into a 10-byte object
    else:
        b.write_blob(data[:10])
    b._open = None
    b._op(D.OP_CLOSE)
    part, header = b.finish()
    return part, header, good


@pytest.mark.parametrize(
    ("kind", "error", "needle"),
    [
        ("bomb", FormatError, "limit"),
        ("overflow", FormatError, "past"),
        ("wrong-name", ChecksumError, "expected"),
    ],
)
def test_hostile_parts_leave_nothing_half_written(
    tmp_path: Path, kind: str, error: type[Exception], needle: str
) -> None:
    part, header, good = hostile(kind)
    repo = Repo.create(tmp_path / "repo", mode=RepoMode.BARE_USER)
    with repo.transaction() as txn:
        with pytest.raises(error, match=needle):
            deltas.execute_part_file(txn, part, header)
        assert staged_temp_files(txn) == []
        assert not txn.has_object(ObjectType.FILE, header.objects[-1][1])
    if kind == "bomb":
        assert not repo.has_object(ObjectType.FILE, good)  # nothing was decompressed to run
    else:
        assert repo.has_object(ObjectType.FILE, good)  # verified objects before it are kept


def test_oversized_metadata_and_symlink_targets_are_refused() -> None:
    blob = b"\0" * (11 * MiB)
    meta_part = D.PartPayload(
        (),
        (),
        blob,
        bytes([D.OP_OPEN_SPLICE_AND_CLOSE]) + encode_varint(len(blob)) + encode_varint(0),
    )
    header = D.PartHeader(0, "0" * 64, 1, 10**9, ((D.OBJ_DIRTREE, "a" * 64),))
    with pytest.raises(FormatError, match="too many"):
        execute_part(meta_part, header, MemoryDeltaTarget())
    link_ops = bytes([D.OP_OPEN_SPLICE_AND_CLOSE]) + b"".join(
        encode_varint(v) for v in (0, 0, 100_000, 0)
    )
    link_part = D.PartPayload(((0, 0, 0o120777),), ((),), blob, link_ops)
    header = D.PartHeader(0, "0" * 64, 1, 10**9, ((D.OBJ_FILE, "a" * 64),))
    with pytest.raises(FormatError, match="too long"):
        execute_part(link_part, header, MemoryDeltaTarget())


def test_no_space_for_the_payload_is_a_repository_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = D.PartBuilder()
    add_file(b, pseudo_random(20, 100_000))
    part_file, header = b.finish(preset=0)

    class Full(io.BytesIO):
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **_kw: Full())
    repo = Repo.create(tmp_path / "repo", mode=RepoMode.BARE_USER)
    with repo.transaction() as txn, pytest.raises(NoSpaceError, match="delta part"):
        deltas.execute_part_file(txn, part_file, header)
