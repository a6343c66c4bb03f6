"""Execute static delta parts: the opcode interpreter (S o w r R c B).

The interpreter knows nothing of repositories: it talks to a :class:`DeltaTarget`, which the
repository layer implements.  Every object is rebuilt, its OSTree checksum computed and
compared with the part's object list *before* it is handed to the target, so a target only
ever receives verified objects.  Regular files assembled by ops are hashed as they are written:
up to 1 MiB in memory, larger ones to ``target.temp_file()``, never held whole in memory.

A payload is either in memory (:func:`execute_part`) or in a file (:func:`execute_payload_file`,
where only the framing has been parsed): then blob ranges are read with ``os.pread`` as the ops
need them, large objects in 1 MiB pieces, and the op stream through a small window.

Every offset and length is checked: blob slices against the blob, reads from a source object
against its size, writes against the declared file size, the total against the header's
``usize``, table indices against the tables and the entry index against the object list.
Each op consumes at least one byte of the op stream, so the loop is bounded by its length.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import stat
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO, Protocol

import attrs

from . import gvariant
from .errors import ChecksumError, FormatError
from .formats.bspatch import bspatch
from .formats.delta import (
    OBJ_FILE,
    OP_BSPATCH,
    OP_CLOSE,
    OP_OPEN,
    OP_OPEN_SPLICE_AND_CLOSE,
    OP_SET_READ_SOURCE,
    OP_UNSET_READ_SOURCE,
    OP_WRITE,
    PartHeader,
    PartPayload,
    PayloadLayout,
)
from .formats.varint import decode_varint

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = [
    "ContentMeta",
    "DeltaTarget",
    "content_checksum_header",
    "execute_part",
    "execute_payload_file",
]

_CHUNK = 1024 * 1024  # largest piece of a blob or source read at once
_OPS_WINDOW = 64 * 1024  # op stream bytes read at once from a payload file
_MAX_OP_BYTES = 64  # an op is at most 1 + 4 * 10 bytes (opcode, four 10-byte varints)
_PATCH_IN_MEMORY = 4 * 1024 * 1024  # larger bsdiff patches are mapped, not copied
# Largest metadata object a part may carry (the cap of the object path, and of libostree).
_MAX_METADATA_OBJECT = 10 * 1024 * 1024
_MAX_SYMLINK_TARGET = 64 * 1024  # far above PATH_MAX
_MODE_BITS = 0o177777  # file type + permission/setuid/setgid/sticky bits


@attrs.frozen(kw_only=True)
class ContentMeta:
    """What a content object is besides its data: ownership, mode, symlink target, xattrs.

    ``size`` is the data length (0 for symlinks); ``rdev`` is always 0 in OSTree.
    """

    uid: int
    gid: int
    mode: int
    symlink_target: str = ""
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    size: int = 0
    rdev: int = 0

    @property
    def is_symlink(self) -> bool:
        """True for a symlink, False for a regular file."""
        return stat.S_ISLNK(self.mode)


def content_checksum_header(meta: ContentMeta) -> bytes:
    """The start of a content object's checksum stream (§2.5), before the file data.

    BE u32 length, 4 zero bytes, then ``(uuuusa(ayay))`` with uid/gid/mode big-endian,
    rdev 0, the symlink target and the xattrs sorted by name.
    """
    xattrs = sorted(meta.xattrs)
    header = gvariant.encode(
        "(uuuusa(ayay))",
        (
            gvariant.swap32(meta.uid),
            gvariant.swap32(meta.gid),
            gvariant.swap32(meta.mode),
            gvariant.swap32(meta.rdev),
            meta.symlink_target,
            [list(x) for x in xattrs],
        ),
    )
    return len(header).to_bytes(4, "big") + bytes(4) + header


class DeltaTarget(Protocol):
    """Where executed objects go; the repository layer implements this."""

    def has_object(self, objtype: int, csum: str) -> bool:
        """True if the object is already stored (it is then skipped, ops still checked)."""
        ...

    def open_content_source(self, csum: str) -> BinaryIO:
        """The raw file data of an existing local regular-file content object (seekable).

        Raises :class:`~pyostree.errors.ObjectNotFoundError` if it is missing.  The
        interpreter closes it.
        """
        ...

    def write_metadata_object(self, objtype: int, csum: str, data: bytes) -> None:
        """Store a metadata object whose sha256 has been verified to be ``csum``."""
        ...

    def write_content_object(
        self, csum: str, meta: ContentMeta, data: bytes | memoryview | BinaryIO | None
    ) -> None:
        """Store a verified content object: ``data`` is None for symlinks, the whole file data
        for regular files of at most 1 MiB (the target may keep a reference), else a file at
        offset 0 (a read-only view of the part or a file from :meth:`temp_file`) that the
        interpreter closes after this call returns.
        """
        ...

    def temp_file(self) -> BinaryIO:
        """A fresh writable, seekable temporary file (in the repository's tmp dir), for
        regular files of more than 1 MiB."""
        ...


class _BlobReader(io.RawIOBase):
    """A read-only, seekable file over ``length`` bytes at ``start`` of a blob (no copy)."""

    def __init__(self, read_into: Callable[[memoryview, int], int], length: int) -> None:
        super().__init__()
        self._read_into = read_into
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        target = memoryview(buffer).cast("B")
        n = min(len(target), self._length - self._pos)
        if n <= 0:
            return 0
        got = self._read_into(target[:n], self._pos)
        self._pos += got
        return got

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


class _MemoryBlob:
    """The blob of a payload held in memory."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self.size = len(data)

    def read(self, offset: int, length: int) -> bytes | memoryview:
        return self._view[offset : offset + length]

    def reader(self, offset: int, length: int) -> BinaryIO:
        view = self._view[offset : offset + length]

        def read_into(buffer: memoryview, pos: int) -> int:
            n = len(buffer)
            buffer[:] = view[pos : pos + n]
            return n

        return io.BufferedReader(_BlobReader(read_into, length))

    @contextlib.contextmanager
    def view(self, offset: int, length: int) -> Iterator[memoryview]:
        yield self._view[offset : offset + length]


class _FileBlob:
    """The blob of a payload kept in a file, read range by range with ``os.pread``."""

    def __init__(self, fd: int, base: int, size: int) -> None:
        self._fd = fd
        self._base = base
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, self._base + offset)
        while len(data) < length:  # a short read only happens at the end of the file
            more = os.pread(self._fd, length - len(data), self._base + offset + len(data))
            if not more:
                raise FormatError("delta part payload file is shorter than its blob")
            data += more
        return data

    def reader(self, offset: int, length: int) -> BinaryIO:
        start = self._base + offset

        def read_into(buffer: memoryview, pos: int) -> int:
            n = os.preadv(self._fd, [buffer], start + pos)
            if n <= 0:
                raise FormatError("delta part payload file is shorter than its blob")
            return n

        return io.BufferedReader(_BlobReader(read_into, length), buffer_size=_CHUNK)

    @contextlib.contextmanager
    def view(self, offset: int, length: int) -> Iterator[memoryview]:
        """A bytes-like view of a range: a copy if small, else a read-only mapping."""
        if length <= _PATCH_IN_MEMORY:
            yield memoryview(self.read(offset, length))
            return
        start = self._base + offset
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(
            self._fd, start + length - aligned, offset=aligned, access=mmap.ACCESS_READ
        )
        try:
            with memoryview(mapping) as whole:
                yield whole[start - aligned :]
        finally:
            # Views that escaped (a traceback) keep the mapping alive until they are freed.
            with contextlib.suppress(BufferError):
                mapping.close()


_Blob = _MemoryBlob | _FileBlob


class _OpStream:
    """The op stream, held whole or read from a file through a small window."""

    def __init__(self, data: bytes, size: int, read_at: Callable[[int, int], bytes]) -> None:
        self._buf = data
        self._start = 0  # stream offset of _buf[0]
        self.pos = 0  # index into _buf
        self._size = size
        self._read_at = read_at

    @classmethod
    def from_bytes(cls, data: bytes) -> _OpStream:
        return cls(data, len(data), lambda _offset, _n: b"")

    @property
    def offset(self) -> int:
        return self._start + self.pos

    def more(self) -> bool:
        """True if an op follows; then the window holds all of it (at most 41 bytes)."""
        buf = self._buf
        if len(buf) - self.pos < _MAX_OP_BYTES:
            loaded = self._start + len(buf)
            if loaded < self._size:
                chunk = self._read_at(loaded, min(_OPS_WINDOW, self._size - loaded))
                if not chunk:
                    raise FormatError("delta part payload file is shorter than its ops")
                self._buf = buf[self.pos :] + chunk
                self._start += self.pos
                self.pos = 0
        return self.pos < len(self._buf)

    def opcode(self) -> int:
        code = self._buf[self.pos]
        self.pos += 1
        return code

    def arg(self) -> int:
        value, self.pos = decode_varint(self._buf, self.pos)
        return value


class _OpenFile:
    """A regular file being assembled by o/w/B ops, hashed as it is written.

    Files of at most 1 MiB are collected in memory; larger ones go to ``target.temp_file()``.
    """

    def __init__(
        self, csum: str, meta: ContentMeta, hasher: _Hash, skip: bool, target: DeltaTarget
    ) -> None:
        self.csum = csum
        self.meta = meta
        self.size = meta.size
        self.written = 0
        self.skip = skip
        self.hasher = hasher
        self.chunks: list[bytes] = []
        self.tmp: BinaryIO | None = None
        if not skip and self.size > _CHUNK:
            self.tmp = target.temp_file()

    def room(self, length: int) -> None:
        if self.written + length > self.size:
            raise FormatError(
                f"delta writes past the declared size {self.size} of object {self.csum}"
            )

    def write(self, data: bytes | memoryview) -> None:
        self.room(len(data))
        self.written += len(data)
        if self.skip:
            return
        self.hasher.update(data)
        if self.tmp is not None:
            self.tmp.write(data)
        else:
            self.chunks.append(bytes(data))

    def data(self) -> bytes | BinaryIO:
        """The complete data: bytes, or the temp file rewound to its start."""
        if self.tmp is None:
            return b"".join(self.chunks)
        self.tmp.flush()
        self.tmp.seek(0)
        return self.tmp

    def close(self) -> None:
        self.chunks = []
        if self.tmp is not None:
            self.tmp.close()
            self.tmp = None


def _with_size(meta: ContentMeta, size: int) -> ContentMeta:
    """``attrs.evolve(meta, size=size)`` for a regular file's metadata, without its overhead."""
    return ContentMeta(uid=meta.uid, gid=meta.gid, mode=meta.mode, xattrs=meta.xattrs, size=size)


def _checked_digest(csum: str, actual: str) -> None:
    if actual != csum:
        raise ChecksumError(
            f"delta produced object {actual} where {csum} was expected",
            expected=csum,
            actual=actual,
        )


_Kind = tuple[ContentMeta, "_Hash | None"]


class _Executor:
    def __init__(
        self,
        modes: tuple[tuple[int, int, int], ...],
        xattrs: tuple[tuple[tuple[bytes, bytes], ...], ...],
        blob: _Blob,
        ops: _OpStream,
        header: PartHeader,
        target: DeltaTarget,
    ) -> None:
        self.modes = modes
        self.xattrs = xattrs
        self.blob = blob
        self.ops = ops
        self.header = header
        self.target = target
        self.entry = 0
        self.written = 0
        self.produced = 0
        self.file: _OpenFile | None = None
        self.source_csum: str | None = None
        self.source: BinaryIO | None = None
        self.source_size = 0
        # (mode index, xattr index) → metadata without size, and for regular files the sha256
        # state after the checksum header (copied per object instead of re-encoding it).
        self.kinds: dict[tuple[int, int], _Kind] = {}

    # -- helpers

    def arg(self) -> int:
        return self.ops.arg()

    def check_blob(self, offset: int, length: int) -> None:
        if offset + length > self.blob.size:
            raise FormatError(
                f"delta op references blob bytes {offset}+{length} beyond its size {self.blob.size}"
            )

    def blob_slice(self, offset: int, length: int) -> bytes | memoryview:
        self.check_blob(offset, length)
        return self.blob.read(offset, length)

    def blob_chunks(self, offset: int, length: int) -> Iterator[bytes | memoryview]:
        self.check_blob(offset, length)
        for start in range(0, length, _CHUNK):
            yield self.blob.read(offset + start, min(_CHUNK, length - start))

    def current(self) -> tuple[int, str]:
        if self.entry >= len(self.header.objects):
            raise FormatError("delta ops go past the end of the part's object list")
        return self.header.objects[self.entry]

    def account(self, size: int) -> None:
        self.produced += size
        if self.produced > self.header.usize:
            raise FormatError(
                f"delta part produces more than its declared {self.header.usize} bytes"
            )

    def kind(self, mode_idx: int, xattr_idx: int) -> _Kind:
        kind = self.kinds.get((mode_idx, xattr_idx))
        if kind is not None:
            return kind
        if mode_idx >= len(self.modes):
            raise FormatError(f"delta mode index {mode_idx} out of range")
        if xattr_idx >= len(self.xattrs):
            raise FormatError(f"delta xattr index {xattr_idx} out of range")
        uid, gid, mode = self.modes[mode_idx]
        if mode & ~_MODE_BITS or not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise FormatError(f"delta content object has invalid mode {mode:#o}")
        xattrs = self.xattrs[xattr_idx]
        names = [name for name, _value in xattrs]
        if len(set(names)) != len(names):
            raise FormatError("delta xattr list has duplicate names")
        meta = ContentMeta(uid=uid, gid=gid, mode=mode, xattrs=tuple(sorted(xattrs)))
        hasher = None if meta.is_symlink else hashlib.sha256(content_checksum_header(meta))
        kind = self.kinds[(mode_idx, xattr_idx)] = (meta, hasher)
        return kind

    def close_source(self) -> None:
        if self.source is not None:
            self.source.close()
        self.source = None
        self.source_csum = None

    def open_source(self) -> BinaryIO:
        if self.source is None:
            if self.source_csum is None:
                raise FormatError("delta op needs a read source but none is set")
            self.source = self.target.open_content_source(self.source_csum)
            self.source_size = self.source.seek(0, io.SEEK_END)
        return self.source

    def open_file(self) -> _OpenFile:
        if self.file is None:
            raise FormatError("delta op needs an open file but none is open")
        return self.file

    # -- ops

    def op_splice(self) -> None:
        if self.file is not None:
            raise FormatError("delta splice op while a file is open")
        objtype, csum = self.current()
        if objtype != OBJ_FILE:
            self.splice_metadata(objtype, csum)
        else:
            self.splice_content(csum)
        self.entry += 1

    def splice_metadata(self, objtype: int, csum: str) -> None:
        length, offset = self.arg(), self.arg()
        self.check_blob(offset, length)
        if length > _MAX_METADATA_OBJECT:
            raise FormatError(f"delta metadata object {csum} has {length} bytes, too many")
        self.account(length)
        if self.target.has_object(objtype, csum):
            return
        data = bytes(self.blob.read(offset, length))
        _checked_digest(csum, hashlib.sha256(data).hexdigest())
        self.target.write_metadata_object(objtype, csum, data)
        self.written += 1

    def splice_content(self, csum: str) -> None:
        mode_idx, xattr_idx, size, offset = self.arg(), self.arg(), self.arg(), self.arg()
        self.check_blob(offset, size)
        meta, prefix = self.kind(mode_idx, xattr_idx)
        if prefix is None:  # a symlink: the blob holds its target
            if size > _MAX_SYMLINK_TARGET:
                raise FormatError(f"delta symlink target of {size} bytes is too long")
            meta = attrs.evolve(meta, symlink_target=_symlink_target(self.blob.read(offset, size)))
            if self.target.has_object(OBJ_FILE, csum):
                return
            _checked_digest(csum, hashlib.sha256(content_checksum_header(meta)).hexdigest())
            self.target.write_content_object(csum, meta, None)
            self.written += 1
            return
        self.account(size)
        if self.target.has_object(OBJ_FILE, csum):
            return
        meta = _with_size(meta, size)
        hasher = prefix.copy()
        if size <= _CHUNK:
            data = self.blob.read(offset, size)
            hasher.update(data)
            _checked_digest(csum, hasher.hexdigest())
            self.target.write_content_object(csum, meta, data)
        else:  # hash it piece by piece, then let the target read it the same way
            for chunk in self.blob_chunks(offset, size):
                hasher.update(chunk)
            _checked_digest(csum, hasher.hexdigest())
            with self.blob.reader(offset, size) as reader:
                self.target.write_content_object(csum, meta, reader)
        self.written += 1

    def op_open(self) -> None:
        if self.file is not None:
            raise FormatError("delta open op while a file is already open")
        objtype, csum = self.current()
        if objtype != OBJ_FILE:
            raise FormatError("delta open op on a metadata object")
        mode_idx, xattr_idx, size = self.arg(), self.arg(), self.arg()
        meta, prefix = self.kind(mode_idx, xattr_idx)
        if prefix is None:
            raise FormatError("delta open op for something that is not a regular file")
        self.account(size)
        skip = self.target.has_object(OBJ_FILE, csum)
        self.file = _OpenFile(csum, _with_size(meta, size), prefix.copy(), skip, self.target)

    def op_write(self) -> None:
        length, offset = self.arg(), self.arg()
        file = self.open_file()
        file.room(length)
        if self.source_csum is None:
            self.check_blob(offset, length)
            if file.skip:
                file.written += length
                return
            for chunk in self.blob_chunks(offset, length):
                file.write(chunk)
            return
        if file.skip:
            file.written += length
            return
        source = self.open_source()
        if offset + length > self.source_size:
            raise FormatError(
                f"delta write reads {offset}+{length} beyond the source's size {self.source_size}"
            )
        source.seek(offset)
        remaining = length
        while remaining:
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                raise FormatError("delta read source is shorter than its size")
            file.write(chunk)
            remaining -= len(chunk)

    def op_set_read_source(self) -> None:
        offset = self.arg()
        csum = bytes(self.blob_slice(offset, 32)).hex()
        self.close_source()
        self.source_csum = csum

    def op_close(self) -> None:
        file = self.open_file()
        try:
            if file.written != file.size:
                raise FormatError(
                    f"delta closed object {file.csum} after {file.written} of {file.size} bytes"
                )
            if not file.skip:
                _checked_digest(file.csum, file.hasher.hexdigest())
                self.target.write_content_object(file.csum, file.meta, file.data())
                self.written += 1
        finally:
            file.close()
            self.file = None
        self.close_source()
        self.entry += 1

    def op_bspatch(self) -> None:
        offset, length = self.arg(), self.arg()
        self.check_blob(offset, length)
        file = self.open_file()
        if file.written:
            raise FormatError("delta bspatch op on a file that already has data")
        if self.source_csum is None:
            raise FormatError("delta bspatch op without a read source")
        if file.skip:
            file.written = file.size
            return
        with self.blob.view(offset, length) as patch:
            bspatch(self.open_source(), patch, file.size, file.write)

    def run(self) -> int:
        if not self.header.objects:
            return 0  # libostree skips empty parts without looking at them
        dispatch = {
            OP_OPEN_SPLICE_AND_CLOSE: self.op_splice,
            OP_OPEN: self.op_open,
            OP_WRITE: self.op_write,
            OP_SET_READ_SOURCE: self.op_set_read_source,
            OP_UNSET_READ_SOURCE: self.close_source,
            OP_CLOSE: self.op_close,
            OP_BSPATCH: self.op_bspatch,
        }
        ops = self.ops
        try:
            while ops.more():
                opcode = ops.opcode()
                handler = dispatch.get(opcode)
                if handler is None:
                    raise FormatError(
                        f"unknown delta opcode {opcode:#x} at offset {ops.offset - 1}"
                    )
                handler()
            if self.file is not None:
                raise FormatError("delta part ended with a file still open")
            if self.entry != len(self.header.objects):
                raise FormatError(
                    f"delta part built {self.entry} of its {len(self.header.objects)} objects"
                )
        finally:
            if self.file is not None:
                self.file.close()
            self.close_source()
        return self.written


def _symlink_target(data: bytes | memoryview) -> str:
    raw = bytes(data)
    if not raw or b"\0" in raw:
        raise FormatError("delta symlink target is empty or contains NUL")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError("delta symlink target is not valid UTF-8") from exc


def execute_part(payload: PartPayload, header: PartHeader, target: DeltaTarget) -> int:
    """Run one part's ops against ``target``; return how many objects were written.

    Objects the target already has are skipped (their ops are still checked).  Raises
    :class:`FormatError` for malformed or out-of-bounds ops and :class:`ChecksumError` when a
    rebuilt object does not match its name in the part's object list.
    """
    blob = _MemoryBlob(payload.blob)
    ops = _OpStream.from_bytes(payload.ops)
    return _Executor(payload.modes, payload.xattrs, blob, ops, header, target).run()


def execute_payload_file(
    file: BinaryIO, layout: PayloadLayout, header: PartHeader, target: DeltaTarget
) -> int:
    """:func:`execute_part` for a payload in ``file`` (from offset 0) with the given layout.

    The blob and the op stream are read from the file as the ops need them; the file must
    not change meanwhile.
    """
    fd = file.fileno()
    if os.fstat(fd).st_size < layout.size:
        raise FormatError("delta part payload file is shorter than its layout")
    blob = _FileBlob(fd, layout.blob_offset, layout.blob_size)
    ops_base = layout.ops_offset

    def read_ops(offset: int, n: int) -> bytes:
        return os.pread(fd, n, ops_base + offset)

    ops = _OpStream(b"", layout.ops_size, read_ops)
    return _Executor(layout.modes, layout.xattrs, blob, ops, header, target).run()
