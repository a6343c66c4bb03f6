"""GNU tar headers, laid out as libarchive's ``gnutar`` writer lays them out.

``ostree export`` streams a commit through libarchive in GNU tar format; these functions make
the same 512-byte blocks, so pyostree's archives read back with the same names, types, modes,
owners, times and link targets (and, for the names and sizes ostree handles, the same bytes).
Pure functions on bytes: the caller streams file data between the headers.
"""

from __future__ import annotations

BLOCK_SIZE = 512
RECORD_SIZE = 10240  # libarchive's default bytes per block, the padding of a streamed archive
REGTYPE = b"0"
SYMTYPE = b"2"
DIRTYPE = b"5"

_NAME_SIZE = 100
_LONG_NAME = b"././@LongLink"
_MAGIC = b"ustar  \0"  # GNU magic and version


def _octal(value: int, digits: int) -> bytes:
    """``digits`` octal digits and a NUL; negative values become 0, too large ones all 7s."""
    value = max(value, 0)
    if value >= 8 ** digits:
        return b"7" * digits + b"\0"
    return b"%0*o\0" % (digits, value)


def _number(value: int, digits: int, width: int) -> bytes:
    """Octal when it fits in ``digits``, else GNU base-256 over the whole ``width``."""
    if value < 8 ** digits:
        return _octal(value, digits)
    raw = bytearray((value & ((1 << (8 * width)) - 1)).to_bytes(width, "big"))
    raw[0] |= 0x80
    return bytes(raw)


def header_block(name: bytes, *, typeflag: bytes, mode: int = 0, uid: int = 0, gid: int = 0,
                 size: int = 0, mtime: int = 0, linkname: bytes = b"", uname: bytes = b"",
                 gname: bytes = b"") -> bytes:
    """One header block; ``name`` and ``linkname`` are cut at 100 bytes (see
    :func:`member_header` for the long-name records that carry the rest)."""
    block = b"".join((
        name[:_NAME_SIZE].ljust(_NAME_SIZE, b"\0"),
        _octal(mode & 0o7777, 7),
        _number(uid, 7, 8),
        _number(gid, 7, 8),
        _number(size, 11, 12),
        _octal(mtime, 11),
        b" " * 8,  # the checksum counts its own field as spaces
        typeflag,
        linkname[:_NAME_SIZE].ljust(_NAME_SIZE, b"\0"),
        _MAGIC,
        uname[:32].ljust(32, b"\0"),
        gname[:32].ljust(32, b"\0"),
    )).ljust(BLOCK_SIZE, b"\0")
    checksum = b"%06o\0" % sum(block)
    return block[:148] + checksum + block[155:]


def _long_record(typeflag: bytes, value: bytes, linkname: bytes) -> bytes:
    # libarchive fills in the member's (cut) link name here too, and GNU tar's FreeBSD owner.
    data = value + b"\0"
    return (header_block(_LONG_NAME, typeflag=typeflag, size=len(data), linkname=linkname,
                         uname=b"root", gname=b"wheel") + data + padding(len(data)))


def member_header(name: bytes, *, typeflag: bytes, mode: int, uid: int, gid: int, size: int,
                  mtime: int, linkname: bytes = b"") -> bytes:
    """The blocks that start a member: GNU ``K`` (long link target) and ``L`` (long name)
    records where needed, then its header. A directory's name gets its trailing ``/``."""
    if typeflag == DIRTYPE and name and not name.endswith(b"/"):
        name += b"/"
    if typeflag != REGTYPE:
        size = 0
    out = b""
    if len(linkname) > _NAME_SIZE:
        out += _long_record(b"K", linkname, linkname)
    if len(name) > _NAME_SIZE:
        out += _long_record(b"L", name, linkname)
    return out + header_block(name, typeflag=typeflag, mode=mode, uid=uid, gid=gid, size=size,
                              mtime=mtime, linkname=linkname)


def padding(size: int) -> bytes:
    """The NULs that fill a member's data up to a whole block."""
    return b"\0" * (-size % BLOCK_SIZE)


def end_of_archive(written: int, record_size: int = RECORD_SIZE) -> bytes:
    """Two zero blocks, then zeros up to a whole record. ``written`` is what came before;
    ``record_size=BLOCK_SIZE`` adds nothing more (libarchive writing a regular file)."""
    total = written + 2 * BLOCK_SIZE
    return b"\0" * (2 * BLOCK_SIZE + (-total % record_size))
