"""Content (file) objects: headers, the checksum stream, archive ``.filez`` and bare-user meta.

The checksum of a content object is sha256 over ``BE u32 len | 4 zero bytes | (uuuusa(ayay))``
followed by the file data. Archive objects store ``(tuuuusa(ayay))`` (with the size) and a raw
deflate body. Everything here works on bytes and incremental state; callers stream the data.
"""

from __future__ import annotations

import functools
import hashlib
import stat
import struct
import zlib
from collections.abc import Iterable, Iterator

import attrs

from .. import gvariant as gv
from ..errors import FormatError
from .objects import Xattrs, validate_xattrs

FILE_HEADER_TYPE = "(uuuusa(ayay))"
ARCHIVE_HEADER_TYPE = "(tuuuusa(ayay))"
OSTREEMETA_TYPE = "(uuua(ayay))"
ARCHIVE_COMPRESSION_LEVEL = 6
MAX_HEADER_SIZE = 10 * 1024 * 1024
INFLATE_PIECE = 256 * 1024
_ALLOWED_MODE_BITS = stat.S_IFMT(0o170000) | 0o7777


@attrs.frozen
class FileHeader:
    """Metadata of a content object. ``size`` is the data length (0 for symlinks)."""

    uid: int
    gid: int
    mode: int
    symlink_target: str = ""
    xattrs: Xattrs = ()
    size: int = 0
    rdev: int = 0

    def __attrs_post_init__(self) -> None:
        validate_mode(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def checksum_header(self) -> bytes:
        """The framed header that starts the checksum stream."""
        body = _header_body(
            struct.pack(">IIII", self.uid, self.gid, self.mode, self.rdev),
            self.symlink_target, self.xattrs,
        )
        return struct.pack(">I", len(body)) + b"\0\0\0\0" + body

    def archive_header(self) -> bytes:
        """The framed header of a ``.filez`` object."""
        body = _header_body(
            struct.pack(">QIIII", self.size, self.uid, self.gid, self.mode, self.rdev),
            self.symlink_target, self.xattrs,
        )
        return struct.pack(">I", len(body)) + b"\0\0\0\0" + body

    def ostreemeta(self) -> bytes:
        """The ``user.ostreemeta`` xattr value of a bare-user object."""
        return _ostreemeta(self.uid, self.gid, self.mode, self.xattrs)


# A tree has only a handful of distinct (owner, mode, xattrs) combinations, and encoding the
# GVariant for each of its tens of thousands of objects took ~7% of a pull's storer time.
@functools.lru_cache(maxsize=256)
def _ostreemeta(uid: int, gid: int, mode: int, xattrs: Xattrs) -> bytes:
    return gv.encode(OSTREEMETA_TYPE, (gv.swap32(uid), gv.swap32(gid), gv.swap32(mode),
                                       list(xattrs)))


# The headers ``(uuuusa(ayay))`` and ``(tuuuusa(ayay))`` by hand (one per file object, so hot):
# big-endian integers, the NUL-terminated target, the xattrs, one framing offset for the end of
# the target. Equal to gv.encode of FILE_HEADER_TYPE / ARCHIVE_HEADER_TYPE with swapped
# integers (tests/test_core_hostile.py compares them).


def _header_body(fixed: bytes, target: str, xattrs: Xattrs) -> bytes:
    raw = target.encode("utf-8")
    if b"\0" in raw:
        raise ValueError("GVariant strings cannot contain NUL")
    head = fixed + raw + b"\0"
    return gv.frame(head + gv.encode("a(ayay)", xattrs) if xattrs else head, (len(head),))


def _split_header_body(body: bytes, fixed: int) -> tuple[bytes, bytes, Xattrs]:
    """(fixed integers, target bytes, xattrs) of a header body; normal form is the caller's
    re-encoding check."""
    s_end, osz = gv.read_tail_offset(body)
    if not fixed < s_end <= len(body) - osz or body[s_end - 1] != 0:
        raise FormatError("content object header is out of bounds")
    xattrs = gv.decode("a(ayay)", body[s_end : len(body) - osz])
    return body[:fixed], body[fixed : s_end - 1], tuple(xattrs)


def validate_mode(mode: int) -> None:
    if mode & ~_ALLOWED_MODE_BITS or not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise FormatError(f"invalid content object mode {mode:o}")


def _frame_length(data: bytes) -> int:
    if len(data) < 8:
        raise FormatError("truncated content object header")
    length: int = struct.unpack_from(">I", data)[0]
    if data[4:8] != b"\0\0\0\0":
        raise FormatError("content object header padding is not zero")
    if length > MAX_HEADER_SIZE:
        raise FormatError("content object header too large")
    return length


def _check_symlink(mode: int, target: str, size: int) -> None:
    if stat.S_ISLNK(mode):
        if not target:
            raise FormatError("symlink object without a target")
        if size:
            raise FormatError("symlink object with data")
    elif target:
        raise FormatError("regular file object with a symlink target")


def archive_header_length(prefix: bytes) -> int:
    """Total bytes (frame + header) of an archive header, from at least its first 8 bytes."""
    return 8 + _frame_length(prefix)


def parse_archive_header(data: bytes) -> tuple[FileHeader, int]:
    """Parse a ``.filez`` header; return it and the offset where the deflate body starts."""
    length = _frame_length(data)
    if len(data) < 8 + length:
        raise FormatError("truncated archive content header")
    body = bytes(data[8 : 8 + length])
    fixed, raw_target, xattrs = _split_header_body(body, 24)
    size, uid, gid, mode, rdev = struct.unpack(">QIIII", fixed)
    target = gv.decode_string(raw_target)
    validate_mode(mode)
    if rdev:
        raise FormatError("content object with a device number")
    _check_symlink(mode, target, size)
    header = FileHeader(uid, gid, mode, target, validate_xattrs(xattrs), size)
    if header.archive_header()[8:] != body:
        raise FormatError(f"GVariant {ARCHIVE_HEADER_TYPE!r} data is not in normal form")
    return header, 8 + length


def parse_file_header(data: bytes) -> tuple[FileHeader, int]:
    """Parse a checksum-stream (``bare`` ``.file`` in some tools) header; return it and its end."""
    length = _frame_length(data)
    if len(data) < 8 + length:
        raise FormatError("truncated content header")
    body = bytes(data[8 : 8 + length])
    fixed, raw_target, xattrs = _split_header_body(body, 16)
    uid, gid, mode, rdev = struct.unpack(">IIII", fixed)
    target = gv.decode_string(raw_target)
    validate_mode(mode)
    if rdev:
        raise FormatError("content object with a device number")
    _check_symlink(mode, target, 0)
    header = FileHeader(uid, gid, mode, target, validate_xattrs(xattrs))
    if header.checksum_header()[8:] != body:
        raise FormatError(f"GVariant {FILE_HEADER_TYPE!r} data is not in normal form")
    return header, 8 + length


def parse_ostreemeta(data: bytes) -> tuple[int, int, int, Xattrs]:
    """The ``user.ostreemeta`` xattr: uid, gid, mode, xattrs."""
    if len(data) == 12:
        # Fast path for the common shape (no xattrs): exactly three BE u32s is the one
        # normal-form encoding, so nothing else needs checking.
        uid, gid, mode = struct.unpack(">III", data)
        validate_mode(mode)
        return uid, gid, mode, ()
    uid, gid, mode, xattrs = gv.decode(OSTREEMETA_TYPE, data)
    mode = gv.swap32(mode)
    validate_mode(mode)
    return gv.swap32(uid), gv.swap32(gid), mode, validate_xattrs(xattrs)


class ContentHasher:
    """Incremental content checksum: feed the header, then the data chunks."""

    __slots__ = ("_hash",)

    def __init__(self, header: FileHeader) -> None:
        self._hash = hashlib.sha256(header.checksum_header())

    def update(self, chunk: bytes | memoryview) -> None:
        self._hash.update(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def content_checksum(header: FileHeader, chunks: Iterable[bytes] = ()) -> str:
    hasher = ContentHasher(header)
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


def new_compressor() -> zlib._Compress:
    """Raw deflate as libostree writes archive bodies (byte-identical output)."""
    return zlib.compressobj(ARCHIVE_COMPRESSION_LEVEL, zlib.DEFLATED, -15)


class ArchiveInflater:
    """Inflate a ``.filez`` body incrementally with a hard cap on the output size.

    :meth:`chunks` yields the output in pieces of at most 256 KiB, so memory stays bounded
    however well the data compresses; :meth:`feed` joins them (only for small inputs).
    """

    __slots__ = ("_dec", "_expected", "produced")

    def __init__(self, expected_size: int) -> None:
        self._dec = zlib.decompressobj(-15)
        self._expected = expected_size
        self.produced = 0

    def chunks(self, chunk: bytes) -> Iterator[bytes]:
        data = chunk
        while True:
            if self._dec.eof:
                if data:
                    raise FormatError("trailing data after compressed file content")
                return
            limit = min(self._expected - self.produced + 1, INFLATE_PIECE)
            try:
                out = self._dec.decompress(data, limit)
            except zlib.error as exc:
                raise FormatError(f"corrupt compressed file content: {exc}") from exc
            self.produced += len(out)
            if self.produced > self._expected:
                raise FormatError("compressed file content is larger than its header says")
            if self._dec.eof and self._dec.unused_data:
                raise FormatError("trailing data after compressed file content")
            if out:
                yield out
            tail = self._dec.unconsumed_tail
            if not tail:
                return
            if not out and tail == data:  # pragma: no cover - zlib always makes progress
                raise FormatError("compressed file content does not inflate")
            data = tail

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self.chunks(chunk))

    def finish(self) -> None:
        if not self._dec.eof:
            raise FormatError("truncated compressed file content")
        if self.produced != self._expected:
            raise FormatError(
                f"compressed file content has {self.produced} bytes, header says {self._expected}"
            )
