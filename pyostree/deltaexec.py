"""Execute static delta parts: the opcode interpreter (S o w r R c B).

The interpreter knows nothing of repositories: it talks to a :class:`DeltaTarget`, which the
repository layer implements.  Every object is rebuilt, its OSTree checksum computed and
compared with the part's object list *before* it is handed to the target, so a target only
ever receives verified objects.  Regular files assembled by ops are written to
``target.temp_file()`` while they are hashed, never held whole in memory.

Every offset and length is checked: blob slices against the blob, reads from a source object
against its size, writes against the declared file size, the total against the header's
``usize``, table indices against the tables and the entry index against the object list.
Each op consumes at least one byte of the op stream, so the loop is bounded by its length.
"""

from __future__ import annotations

import hashlib
import io
import stat
from typing import BinaryIO, Protocol

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
)
from .formats.varint import decode_varint

__all__ = ["ContentMeta", "DeltaTarget", "content_checksum_header", "execute_part"]

_CHUNK = 64 * 1024
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

    def write_content_object(self, csum: str, meta: ContentMeta, data: BinaryIO | None) -> None:
        """Store a verified content object; ``data`` (None for symlinks) is at offset 0.

        ``data`` is either a read-only view of the part or a file from :meth:`temp_file`;
        the interpreter closes it after this call returns.
        """
        ...

    def temp_file(self) -> BinaryIO:
        """A fresh writable, seekable temporary file (in the repository's tmp dir)."""
        ...


class _BlobReader(io.RawIOBase):
    """A read-only, seekable file over a slice of the blob (no copy)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        target = memoryview(buffer).cast("B")
        n = min(len(target), len(self._view) - self._pos)
        if n <= 0:
            return 0
        target[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


class _OpenFile:
    """A regular file being assembled by o/w/B ops, hashed as it is written."""

    def __init__(self, csum: str, meta: ContentMeta, skip: bool, target: DeltaTarget) -> None:
        self.csum = csum
        self.meta = meta
        self.size = meta.size
        self.written = 0
        self.skip = skip
        self.hasher = hashlib.sha256(content_checksum_header(meta))
        self.tmp: BinaryIO | None = None if skip else target.temp_file()

    def room(self, length: int) -> None:
        if self.written + length > self.size:
            raise FormatError(
                f"delta writes past the declared size {self.size} of object {self.csum}"
            )

    def write(self, data: bytes) -> None:
        self.room(len(data))
        self.written += len(data)
        if self.tmp is not None:
            self.hasher.update(data)
            self.tmp.write(data)

    def close(self) -> None:
        if self.tmp is not None:
            self.tmp.close()
            self.tmp = None


def _checked_digest(csum: str, actual: str) -> None:
    if actual != csum:
        raise ChecksumError(
            f"delta produced object {actual} where {csum} was expected",
            expected=csum,
            actual=actual,
        )


class _Executor:
    def __init__(self, payload: PartPayload, header: PartHeader, target: DeltaTarget) -> None:
        self.payload = payload
        self.header = header
        self.target = target
        self.blob = memoryview(payload.blob)
        self.ops = payload.ops
        self.pos = 0
        self.entry = 0
        self.written = 0
        self.produced = 0
        self.file: _OpenFile | None = None
        self.source_csum: str | None = None
        self.source: BinaryIO | None = None
        self.source_size = 0

    # -- helpers

    def arg(self) -> int:
        value, self.pos = decode_varint(self.ops, self.pos)
        return value

    def blob_slice(self, offset: int, length: int) -> memoryview:
        if offset + length > len(self.blob):
            raise FormatError(
                f"delta op references blob bytes {offset}+{length} beyond its size {len(self.blob)}"
            )
        return self.blob[offset : offset + length]

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

    def meta(self, mode_idx: int, xattr_idx: int, size: int) -> ContentMeta:
        if mode_idx >= len(self.payload.modes):
            raise FormatError(f"delta mode index {mode_idx} out of range")
        if xattr_idx >= len(self.payload.xattrs):
            raise FormatError(f"delta xattr index {xattr_idx} out of range")
        uid, gid, mode = self.payload.modes[mode_idx]
        if mode & ~_MODE_BITS or not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise FormatError(f"delta content object has invalid mode {mode:#o}")
        xattrs = self.payload.xattrs[xattr_idx]
        names = [name for name, _value in xattrs]
        if len(set(names)) != len(names):
            raise FormatError("delta xattr list has duplicate names")
        return ContentMeta(uid=uid, gid=gid, mode=mode, xattrs=tuple(sorted(xattrs)), size=size)

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
            length, offset = self.arg(), self.arg()
            data = self.blob_slice(offset, length)
            self.account(length)
            if not self.target.has_object(objtype, csum):
                _checked_digest(csum, hashlib.sha256(data).hexdigest())
                self.target.write_metadata_object(objtype, csum, bytes(data))
                self.written += 1
        else:
            mode_idx, xattr_idx, size, offset = self.arg(), self.arg(), self.arg(), self.arg()
            data = self.blob_slice(offset, size)
            meta = self.meta(mode_idx, xattr_idx, size)
            if meta.is_symlink:
                meta = attrs.evolve(meta, size=0, symlink_target=_symlink_target(data))
            else:
                self.account(size)
            if not self.target.has_object(OBJ_FILE, csum):
                hasher = hashlib.sha256(content_checksum_header(meta))
                if not meta.is_symlink:
                    hasher.update(data)
                _checked_digest(csum, hasher.hexdigest())
                if meta.is_symlink:
                    self.target.write_content_object(csum, meta, None)
                else:
                    with io.BufferedReader(_BlobReader(data)) as reader:
                        self.target.write_content_object(csum, meta, reader)
                self.written += 1
        self.entry += 1

    def op_open(self) -> None:
        if self.file is not None:
            raise FormatError("delta open op while a file is already open")
        objtype, csum = self.current()
        if objtype != OBJ_FILE:
            raise FormatError("delta open op on a metadata object")
        mode_idx, xattr_idx, size = self.arg(), self.arg(), self.arg()
        meta = self.meta(mode_idx, xattr_idx, size)
        if not stat.S_ISREG(meta.mode):
            raise FormatError("delta open op for something that is not a regular file")
        self.account(size)
        skip = self.target.has_object(OBJ_FILE, csum)
        self.file = _OpenFile(csum, meta, skip, self.target)

    def op_write(self) -> None:
        length, offset = self.arg(), self.arg()
        file = self.open_file()
        file.room(length)
        if self.source_csum is None:
            data = self.blob_slice(offset, length)
            if file.skip:
                file.written += length
                return
            for start in range(0, length, _CHUNK):
                file.write(bytes(data[start : start + _CHUNK]))
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
            if file.tmp is not None:
                _checked_digest(file.csum, file.hasher.hexdigest())
                file.tmp.flush()
                file.tmp.seek(0)
                self.target.write_content_object(file.csum, file.meta, file.tmp)
                self.written += 1
        finally:
            file.close()
            self.file = None
        self.close_source()
        self.entry += 1

    def op_bspatch(self) -> None:
        offset, length = self.arg(), self.arg()
        patch = self.blob_slice(offset, length)
        file = self.open_file()
        if file.written:
            raise FormatError("delta bspatch op on a file that already has data")
        if self.source_csum is None:
            raise FormatError("delta bspatch op without a read source")
        if file.skip:
            file.written = file.size
            return
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
        try:
            while self.pos < len(self.ops):
                opcode = self.ops[self.pos]
                handler = dispatch.get(opcode)
                if handler is None:
                    raise FormatError(f"unknown delta opcode {opcode:#x} at offset {self.pos}")
                self.pos += 1
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


def _symlink_target(data: memoryview) -> str:
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
    return _Executor(payload, header, target).run()
