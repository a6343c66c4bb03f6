"""Static delta formats: naming, superblock, part headers, part files and part payloads.

Pure code over bytes (no files, no sockets).  Reading is strict: every checksum is 32 bytes,
object records are 33 bytes with a valid type, part versions are 0, fallbacks are content
objects, and the embedded to-commit must hash to the to-checksum.  Writing gives the exact
normal-form bytes back (``from_bytes(x).to_bytes() == x``).

Part files are ``(yay)``: a compression byte (``0`` none, ``'x'`` xz) and the payload.  They are
decompressed under a hard output cap (:func:`part_payload_limit`), so an xz bomb raises
:class:`FormatError` long before memory runs out.  :func:`decompress_part_into` streams the
payload out in bounded pieces, and :meth:`PayloadLayout.parse` reads only a payload's framing
and small tables through a ``read_at(offset, n)`` callable, so the (large) blob can stay on disk.

Integer byte order: the superblock timestamp and the payload mode table are always big-endian;
part-header and fallback numbers follow the superblock's ``ostree.endianness`` (``'l'``/``'B'``),
guessed like libostree when the key is absent.  Values in these classes are always native.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import lzma
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, overload

import attrs

from .. import gvariant
from ..errors import ChecksumError, FormatError
from ..gvariant import Variant, swap32, swap64
from .varint import decode_varint, encode_varint

__all__ = [
    "COMMIT_TYPE",
    "COMPRESSION_NONE",
    "COMPRESSION_XZ",
    "ENDIANNESS_KEY",
    "FALLBACK_TYPE",
    "MAX_PAYLOAD_TABLES",
    "OBJ_COMMIT",
    "OBJ_DIRMETA",
    "OBJ_DIRTREE",
    "OBJ_FILE",
    "OP_BSPATCH",
    "OP_CLOSE",
    "OP_OPEN",
    "OP_OPEN_SPLICE_AND_CLOSE",
    "OP_SET_READ_SOURCE",
    "OP_UNSET_READ_SOURCE",
    "OP_WRITE",
    "PART_HEADER_TYPE",
    "PAYLOAD_TYPE",
    "SIGNED_MAGIC",
    "SIGNED_TYPE",
    "SUPERBLOCK_TYPE",
    "XZ_MEMLIMIT",
    "DeltaSuperblock",
    "Fallback",
    "ObjectList",
    "PartBuilder",
    "PartHeader",
    "PartPayload",
    "PartSource",
    "PayloadLayout",
    "Reader",
    "decompress_part",
    "decompress_part_into",
    "delta_dir",
    "delta_index_path",
    "delta_name",
    "delta_part_path",
    "delta_superblock_path",
    "encode_part_file",
    "mb64_decode",
    "mb64_encode",
    "open_part",
    "parse_delta_name",
    "part_payload_limit",
    "unwrap_signed_superblock",
    "wrap_signed_superblock",
]

COMMIT_TYPE = "(a{sv}aya(say)sstayay)"
PART_HEADER_TYPE = "(uayttay)"
FALLBACK_TYPE = "(yaytt)"
SUPERBLOCK_TYPE = f"(a{{sv}}tayay{COMMIT_TYPE}aya{PART_HEADER_TYPE}a{FALLBACK_TYPE})"
PAYLOAD_TYPE = "(a(uuu)aa(ayay)ayay)"
SIGNED_TYPE = "(taya{sv})"
SIGNED_MAGIC = 0x4F535453474E4454  # "OSTSGNDT" read big-endian
_SIGNED_MAGIC_BYTES = b"OSTSGNDT"
ENDIANNESS_KEY = "ostree.endianness"

OBJ_FILE = 1
OBJ_DIRTREE = 2
OBJ_DIRMETA = 3
OBJ_COMMIT = 4
_PART_OBJTYPES = frozenset({OBJ_FILE, OBJ_DIRTREE, OBJ_DIRMETA, OBJ_COMMIT})
_OBJECT_RECORD = 33

COMPRESSION_NONE = 0
COMPRESSION_XZ = ord("x")

OP_OPEN_SPLICE_AND_CLOSE = ord("S")
OP_OPEN = ord("o")
OP_WRITE = ord("w")
OP_SET_READ_SOURCE = ord("r")
OP_UNSET_READ_SOURCE = ord("R")
OP_CLOSE = ord("c")
OP_BSPATCH = ord("B")

#: Memory liblzma may use to decompress one part (preset 9 needs ~65 MiB).
XZ_MEMLIMIT = 128 * 1024 * 1024
#: Most bytes the mode and xattr tables of one part may take together (they are read whole).
MAX_PAYLOAD_TABLES = 16 * 1024 * 1024
_READ_CHUNK = 256 * 1024
_OUT_CHUNK = 256 * 1024

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_MB64 = re.compile(r"[A-Za-z0-9+_]{43}\Z")


# ---------------------------------------------------------------------------- naming


def _require_hex(csum: str) -> str:
    if not isinstance(csum, str) or not _HEX64.match(csum):
        raise ValueError(f"not a sha256 hex checksum: {csum!r}")
    return csum


def _hex_validator(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise ValueError(f"{attr.name} is not a sha256 hex checksum: {value!r}")


def _csum_hex(raw: bytes, what: str) -> str:
    if len(raw) != 32:
        raise FormatError(f"{what} checksum has {len(raw)} bytes, expected 32")
    return raw.hex()


def mb64_encode(csum: str) -> str:
    """The "modified base64" of a hex checksum: base64, no padding, ``/`` → ``_``."""
    raw = bytes.fromhex(_require_hex(csum))
    return base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", "_")


def mb64_decode(text: str) -> str:
    """Turn a 43-character mb64 name back into a hex checksum, or raise FormatError."""
    if not _MB64.match(text):
        raise FormatError(f"invalid mb64 checksum {text!r}")
    try:
        raw = base64.b64decode(text.replace("_", "/") + "=", validate=True)
    except binascii.Error as exc:
        raise FormatError(f"invalid mb64 checksum {text!r}") from exc
    csum = raw.hex()
    if len(raw) != 32 or mb64_encode(csum) != text:
        raise FormatError(f"non-canonical mb64 checksum {text!r}")
    return csum


def delta_name(from_csum: str | None, to_csum: str) -> str:
    """The textual delta name: ``FROM-TO``, or ``TO`` for a delta from empty."""
    _require_hex(to_csum)
    return to_csum if from_csum is None else f"{_require_hex(from_csum)}-{to_csum}"


def parse_delta_name(name: str) -> tuple[str | None, str]:
    """Split a delta name into ``(from or None, to)``; raise FormatError if malformed."""
    first, sep, second = name.partition("-")
    parts = (first, second) if sep else (first,)
    if not all(_HEX64.match(p) for p in parts):
        raise FormatError(f"invalid static delta name {name!r}")
    return (first, second) if sep else (None, first)


def delta_dir(from_csum: str | None, to_csum: str) -> str:
    """``deltas/XX/REST`` (from empty) or ``deltas/FF/FROMREST-TO`` (mb64 names)."""
    to = mb64_encode(to_csum)
    if from_csum is None:
        return f"deltas/{to[:2]}/{to[2:]}"
    frm = mb64_encode(from_csum)
    return f"deltas/{frm[:2]}/{frm[2:]}-{to}"


def delta_superblock_path(from_csum: str | None, to_csum: str) -> str:
    """Repository-relative path of a delta's superblock."""
    return f"{delta_dir(from_csum, to_csum)}/superblock"


def delta_part_path(from_csum: str | None, to_csum: str, index: int) -> str:
    """Repository-relative path of part ``index`` (decimal, no padding)."""
    if index < 0:
        raise ValueError("part index must not be negative")
    return f"{delta_dir(from_csum, to_csum)}/{index}"


def delta_index_path(to_csum: str) -> str:
    """``delta-indexes/XX/REST.index`` for the deltas whose target is ``to_csum``."""
    to = mb64_encode(to_csum)
    return f"delta-indexes/{to[:2]}/{to[2:]}.index"


# ---------------------------------------------------------------------------- superblock


def _swap32_if(swap: bool, value: int) -> int:
    return swap32(value) if swap else value


def _swap64_if(swap: bool, value: int) -> int:
    return swap64(value) if swap else value


class ObjectList(Sequence[tuple[int, str]]):
    """A part's object list, ``(object type, hex checksum)`` pairs, kept as its 33-byte records.

    A superblock lists every object of the delta: for 24,000 objects this takes 0.8 MB where
    tuples of hex strings take 4 MB.  Equal to a tuple or list of the same pairs.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        """``raw``: the records of a superblock, checked (:class:`FormatError`)."""
        if len(raw) % _OBJECT_RECORD:
            raise FormatError("delta part object list is not a multiple of 33 bytes")
        for objtype in raw[::_OBJECT_RECORD]:
            if objtype not in _PART_OBJTYPES:
                raise FormatError(f"invalid object type {objtype} in a delta part object list")
        self._raw = bytes(raw)

    @classmethod
    def of(cls, value: Iterable[tuple[int, str]]) -> ObjectList:
        """From pairs (or another list); an invalid pair raises :class:`ValueError`."""
        if isinstance(value, ObjectList):
            return value
        if isinstance(value, str | bytes):
            raise ValueError("objects must be (type, checksum) pairs")
        out = bytearray()
        for item in value:
            if (
                not isinstance(item, tuple)
                or len(item) != 2
                or item[0] not in _PART_OBJTYPES
                or not isinstance(item[1], str)
                or not _HEX64.match(item[1])
            ):
                raise ValueError(f"invalid part object entry {item!r}")
            out.append(item[0])
            out += bytes.fromhex(item[1])
        return cls(bytes(out))

    @property
    def raw(self) -> bytes:
        """The records as in the superblock: type byte, then the 32-byte checksum."""
        return self._raw

    def __len__(self) -> int:
        return len(self._raw) // _OBJECT_RECORD

    @overload
    def __getitem__(self, index: int) -> tuple[int, str]: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[tuple[int, str], ...]: ...

    def __getitem__(self, index: int | slice) -> tuple[int, str] | tuple[tuple[int, str], ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("object list index out of range")
        start = index * _OBJECT_RECORD
        raw = self._raw
        return raw[start], raw[start + 1 : start + _OBJECT_RECORD].hex()

    def __iter__(self) -> Iterator[tuple[int, str]]:
        raw = self._raw
        for start in range(0, len(raw), _OBJECT_RECORD):
            yield raw[start], raw[start + 1 : start + _OBJECT_RECORD].hex()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ObjectList):
            return self._raw == other._raw
        if isinstance(other, tuple | list):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"ObjectList({list(self)!r})"


def _u64_validator(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise ValueError(f"{attr.name} must be an unsigned 64-bit integer")


def _object_list(value: Iterable[tuple[int, str]]) -> ObjectList:
    return ObjectList.of(value)


@attrs.frozen
class PartHeader:
    """One ``(uayttay)`` entry: part version, sha256 of the part file, sizes, object list."""

    version: int = attrs.field(validator=attrs.validators.in_((0,)))
    checksum: str = attrs.field(validator=_hex_validator)
    size: int = attrs.field(validator=_u64_validator)
    usize: int = attrs.field(validator=_u64_validator)
    objects: ObjectList = attrs.field(converter=_object_list)

    @classmethod
    def from_value(cls, value: tuple[Any, ...], *, swap: bool) -> PartHeader:
        """Build from a decoded ``(uayttay)`` tuple; ``swap`` if the numbers are byte-swapped."""
        version, csum, size, usize, objects = value
        version = _swap32_if(swap, version)
        if version != 0:
            raise FormatError(f"unsupported delta part version {version}")
        return cls(
            version=version,
            checksum=_csum_hex(csum, "delta part"),
            size=_swap64_if(swap, size),
            usize=_swap64_if(swap, usize),
            objects=ObjectList(objects),
        )

    def to_value(self, *, swap: bool) -> tuple[Any, ...]:
        """The ``(uayttay)`` tuple, numbers byte-swapped if ``swap``."""
        objects = self.objects.raw
        return (
            _swap32_if(swap, self.version),
            bytes.fromhex(self.checksum),
            _swap64_if(swap, self.size),
            _swap64_if(swap, self.usize),
            objects,
        )


@attrs.frozen
class Fallback:
    """One ``(yaytt)`` entry: a content object fetched whole instead of through a part."""

    objtype: int = attrs.field(validator=attrs.validators.in_((OBJ_FILE,)))
    checksum: str = attrs.field(validator=_hex_validator)
    compressed_size: int = attrs.field(validator=_u64_validator)
    uncompressed_size: int = attrs.field(validator=_u64_validator)

    @classmethod
    def from_value(cls, value: tuple[Any, ...], *, swap: bool) -> Fallback:
        """Build from a decoded ``(yaytt)`` tuple."""
        objtype, csum, csize, usize = value
        if objtype != OBJ_FILE:
            raise FormatError(f"delta fallback object has type {objtype}, only files allowed")
        return cls(
            objtype=objtype,
            checksum=_csum_hex(csum, "delta fallback"),
            compressed_size=_swap64_if(swap, csize),
            uncompressed_size=_swap64_if(swap, usize),
        )

    def to_value(self, *, swap: bool) -> tuple[Any, ...]:
        """The ``(yaytt)`` tuple."""
        return (
            self.objtype,
            bytes.fromhex(self.checksum),
            _swap64_if(swap, self.compressed_size),
            _swap64_if(swap, self.uncompressed_size),
        )


def _guess_byteswapped(raw_parts: Sequence[tuple[Any, ...]]) -> bool:
    """libostree's heuristic for superblocks without ``ostree.endianness``."""
    total_size = 0
    total_objects = 0
    for _version, _csum, size, usize, objects in raw_parts:
        total_objects += len(objects) // _OBJECT_RECORD
        total_size += size
        if size > usize and (usize == 0 or size / usize > 1.2):
            return True
    return total_objects > 0 and total_size // total_objects > 0xFFFFFFFF


def _optional_csum(value: str | None) -> None:
    if value is not None:
        _require_hex(value)


@attrs.frozen
class DeltaSuperblock:
    """A parsed static delta superblock.

    ``metadata`` is the complete ``a{sv}`` in file order (user keys, ``ostree.endianness``,
    inline parts, ``commitmeta``); ``commit`` is the embedded to-commit's bytes;
    ``endianness`` is ``'l'`` or ``'B'`` (from the key or libostree's guess).
    """

    metadata: dict[str, Variant]
    timestamp: int = attrs.field(validator=_u64_validator)
    from_checksum: str | None = attrs.field(validator=lambda _i, _a, v: _optional_csum(v))
    to_checksum: str = attrs.field(validator=_hex_validator)
    commit: bytes
    parts: tuple[PartHeader, ...]
    fallbacks: tuple[Fallback, ...]
    endianness: str = attrs.field(default="l")
    recurse: bytes = b""

    @endianness.validator
    def _check_endianness(self, _attr: object, value: str) -> None:
        if value not in ("l", "B"):
            raise ValueError(f"endianness must be 'l' or 'B', not {value!r}")
        flag = self.metadata.get(ENDIANNESS_KEY)
        if flag is not None and flag != Variant("y", ord(value)):
            raise ValueError("endianness does not match the ostree.endianness metadata")

    # -- derived facts

    @property
    def name(self) -> str:
        """``FROM-TO`` or ``TO``."""
        return delta_name(self.from_checksum, self.to_checksum)

    @property
    def directory(self) -> str:
        """The repository-relative delta directory (``deltas/…``)."""
        return delta_dir(self.from_checksum, self.to_checksum)

    def inline_part(self, index: int) -> bytes | None:
        """The part file bytes of inline part ``index``, or None if it is not inline."""
        value = self.metadata.get(f"{self.directory}/{index}")
        return None if value is None else gvariant.encode("(yay)", value.value)

    @property
    def commitmeta(self) -> bytes | None:
        """The to-commit's detached metadata (serialized ``a{sv}``), if it was embedded."""
        value = self.metadata.get(f"{self.directory}/commitmeta")
        return None if value is None else gvariant.encode("a{sv}", value.value)

    # -- bytes

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> DeltaSuperblock:
        """Parse and validate a (plain, unsigned) superblock."""
        meta, ts, frm, to, commit, recurse, raw_parts, raw_fallbacks = gvariant.decode(
            SUPERBLOCK_TYPE, data
        )
        from_csum = None if len(frm) == 0 else _csum_hex(frm, "delta from-commit")
        to_csum = _csum_hex(to, "delta to-commit")
        if len(recurse) % 64:
            raise FormatError("delta superblock recursion list is not a multiple of 64 bytes")
        commit_bytes = gvariant.encode(COMMIT_TYPE, commit)
        actual = hashlib.sha256(commit_bytes).hexdigest()
        if actual != to_csum:
            raise ChecksumError(
                "embedded commit does not match the delta's to-checksum",
                expected=to_csum,
                actual=actual,
            )
        flag = meta.get(ENDIANNESS_KEY)
        if flag is None:
            endianness = "B" if _guess_byteswapped(raw_parts) else "l"
        elif flag.type == "y" and flag.value in (ord("l"), ord("B")):
            endianness = chr(flag.value)
        else:
            raise FormatError("invalid ostree.endianness value in delta superblock")
        swap = endianness == "B"
        parts = tuple(PartHeader.from_value(p, swap=swap) for p in raw_parts)
        fallbacks = tuple(Fallback.from_value(f, swap=swap) for f in raw_fallbacks)
        _check_embedded(meta, delta_dir(from_csum, to_csum), len(parts))
        return cls(
            metadata=meta,
            timestamp=swap64(ts),
            from_checksum=from_csum,
            to_checksum=to_csum,
            commit=commit_bytes,
            parts=parts,
            fallbacks=fallbacks,
            endianness=endianness,
            recurse=recurse,
        )

    def to_bytes(self) -> bytes:
        """The exact serialized superblock."""
        swap = self.endianness == "B"
        value = (
            self.metadata,
            swap64(self.timestamp),
            b"" if self.from_checksum is None else bytes.fromhex(self.from_checksum),
            bytes.fromhex(self.to_checksum),
            gvariant.decode(COMMIT_TYPE, self.commit),
            self.recurse,
            [p.to_value(swap=swap) for p in self.parts],
            [f.to_value(swap=swap) for f in self.fallbacks],
        )
        return gvariant.encode(SUPERBLOCK_TYPE, value)

    @classmethod
    def build(
        cls,
        *,
        from_checksum: str | None,
        to_checksum: str,
        commit: bytes,
        parts: Sequence[PartHeader],
        fallbacks: Sequence[Fallback] = (),
        timestamp: int,
        endianness: str = "l",
        user_metadata: Mapping[str, Variant] | None = None,
        inline_parts: Sequence[bytes] | None = None,
        commitmeta: bytes | None = None,
    ) -> DeltaSuperblock:
        """Assemble a superblock in the key order ostree writes.

        ``inline_parts`` are complete part files (one per part header) to embed;
        ``commitmeta`` is the to-commit's serialized detached metadata.
        """
        if hashlib.sha256(commit).hexdigest() != to_checksum:
            raise ValueError("commit bytes do not hash to to_checksum")
        directory = delta_dir(from_checksum, to_checksum)
        meta: dict[str, Variant] = dict(user_metadata or {})
        meta[ENDIANNESS_KEY] = Variant("y", ord(endianness))
        if inline_parts is not None:
            if len(inline_parts) != len(parts):
                raise ValueError("need exactly one inline part file per part header")
            for i, part_file in enumerate(inline_parts):
                if not part_file:
                    raise ValueError("empty part file")
                meta[f"{directory}/{i}"] = Variant("(yay)", (part_file[0], bytes(part_file[1:])))
        if commitmeta is not None:
            meta[f"{directory}/commitmeta"] = Variant("a{sv}", gvariant.decode("a{sv}", commitmeta))
        return cls(
            metadata=meta,
            timestamp=timestamp,
            from_checksum=from_checksum,
            to_checksum=to_checksum,
            commit=bytes(commit),
            parts=tuple(parts),
            fallbacks=tuple(fallbacks),
            endianness=endianness,
        )


def _check_embedded(meta: Mapping[str, Variant], directory: str, n_parts: int) -> None:
    """Inline parts and commitmeta of this delta must have the right types."""
    prefix = directory + "/"
    for key, value in meta.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if rest == "commitmeta":
            if value.type != "a{sv}":
                raise FormatError("delta commitmeta is not of type a{sv}")
        elif rest.isdigit() and rest.isascii():
            if value.type != "(yay)":
                raise FormatError(f"inline delta part {rest} is not of type (yay)")
            if int(rest) >= n_parts:
                raise FormatError(f"inline delta part {rest} has no part header")


def unwrap_signed_superblock(
    data: bytes | bytearray | memoryview,
) -> tuple[bytes, dict[str, tuple[bytes, ...]]] | None:
    """Split an ``OSTSGNDT`` wrapper into (superblock bytes, signatures); None if unwrapped."""
    if bytes(data[:8]) != _SIGNED_MAGIC_BYTES:
        return None
    _magic, superblock, sigs = gvariant.decode(SIGNED_TYPE, data)
    out: dict[str, tuple[bytes, ...]] = {}
    for key, value in sigs.items():
        if value.type != "aay":
            raise FormatError(f"signed superblock entry {key!r} is not of type aay")
        out[key] = tuple(value.value)
    return superblock, out


def wrap_signed_superblock(superblock: bytes, signatures: Mapping[str, Sequence[bytes]]) -> bytes:
    """The ``(taya{sv})`` wrapper holding ``superblock`` and ``{key: [signature, …]}``."""
    sigs = {key: Variant("aay", [bytes(s) for s in value]) for key, value in signatures.items()}
    return gvariant.encode(SIGNED_TYPE, (swap64(SIGNED_MAGIC), bytes(superblock), sigs))


# ---------------------------------------------------------------------------- part payload


def _offset_size(total: int) -> int:
    if total <= 0xFF:
        return 1
    if total <= 0xFFFF:
        return 2
    if total <= 0xFFFFFFFF:
        return 4
    return 8


def _framed_offset_size(body: int, offsets: int) -> int:
    """The offset size GVariant's serializer picks for ``body`` bytes followed by
    ``offsets`` framing offsets: the smallest with which the whole still fits."""
    for size, limit in ((1, 0xFF), (2, 0xFFFF), (4, 0xFFFFFFFF)):
        if body + offsets * size <= limit:
            return size
    return 8


Mode = tuple[int, int, int]
Xattrs = tuple[tuple[bytes, bytes], ...]


def _payload_framing(size: int, tail: bytes | memoryview) -> tuple[int, int, int, int]:
    """Member ends of a payload of ``size`` bytes from its last ``3 * osz`` bytes (``tail``):
    ``(end of modes, end of xattrs, end of blob, start of the offset table)``."""
    osz = _offset_size(size)
    table = size - 3 * osz
    if table < 0 or len(tail) != 3 * osz:
        raise FormatError("delta part payload is too short")
    end_modes = int.from_bytes(tail[2 * osz :], "little")
    end_xattrs = int.from_bytes(tail[osz : 2 * osz], "little")
    end_blob = int.from_bytes(tail[:osz], "little")
    if _framed_offset_size(table, 3) != osz:  # e.g. 2-byte offsets where 1-byte ones fit
        raise FormatError("delta part payload framing is not in normal form")
    if not end_modes <= end_xattrs <= end_blob <= table:
        raise FormatError("delta part payload framing offsets out of range")
    if end_modes % 12:
        raise FormatError("delta part mode table is not a multiple of 12 bytes")
    return end_modes, end_xattrs, end_blob, table


def _parse_modes(raw: bytes | memoryview) -> tuple[Mode, ...]:
    return tuple(
        (
            int.from_bytes(raw[i : i + 4], "big"),
            int.from_bytes(raw[i + 4 : i + 8], "big"),
            int.from_bytes(raw[i + 8 : i + 12], "big"),
        )
        for i in range(0, len(raw), 12)
    )


def _parse_xattrs(raw: bytes | memoryview) -> tuple[Xattrs, ...]:
    entries = gvariant.decode("aa(ayay)", raw)
    return tuple(tuple((bytes(k), bytes(v)) for k, v in entry) for entry in entries)


def _array_length(raw: bytes | memoryview) -> int:
    """Element count of a serialized array of variable-size elements (its framing only)."""
    if not raw:
        return 0
    osz = _offset_size(len(raw))
    if len(raw) < osz:
        raise FormatError("delta part xattr table is too short")
    last_end = int.from_bytes(raw[-osz:], "little")
    if last_end > len(raw) or (len(raw) - last_end) % osz:
        raise FormatError("delta part xattr table has invalid framing")
    return (len(raw) - last_end) // osz


@attrs.frozen
class PayloadLayout:
    """A payload's framing without its blob: the mode and xattr tables, and where the blob and
    the op stream lie (byte offsets from the start of the payload).

    :meth:`parse` reads only the offset table and the two tables, so a payload kept in a file
    can be executed without holding its blob (or its op stream) in memory.
    """

    size: int
    modes: tuple[Mode, ...]
    xattrs: tuple[Xattrs, ...]
    blob_offset: int
    blob_size: int
    ops_offset: int
    ops_size: int

    @classmethod
    def parse(
        cls,
        size: int,
        read_at: Callable[[int, int], bytes],
        *,
        max_entries: int,
        max_table_bytes: int = MAX_PAYLOAD_TABLES,
    ) -> PayloadLayout:
        """Parse the framing of a ``size``-byte payload through ``read_at(offset, n)``.

        Each table may have at most ``max_entries`` entries (a part's tables are deduplicated,
        so a generator never needs more than the part has objects) and both together at most
        ``max_table_bytes`` bytes; more raises :class:`FormatError`, as do short reads.
        """

        def read_exact(offset: int, n: int) -> bytes:
            data = read_at(offset, n)
            if len(data) != n:
                raise FormatError("delta part payload is truncated")
            return data

        osz = _offset_size(size)
        if size < 3 * osz:
            raise FormatError("delta part payload is too short")
        end_modes, end_xattrs, end_blob, table = _payload_framing(
            size, read_exact(size - 3 * osz, 3 * osz)
        )
        if end_xattrs > max_table_bytes:
            raise FormatError(
                f"delta part tables take {end_xattrs} bytes, more than {max_table_bytes}"
            )
        if end_modes // 12 > max_entries:
            raise FormatError("delta part mode table has more entries than the part has objects")
        raw_xattrs = read_exact(end_modes, end_xattrs - end_modes)
        if _array_length(raw_xattrs) > max_entries:
            raise FormatError("delta part xattr table has more entries than the part has objects")
        return cls(
            size=size,
            modes=_parse_modes(read_exact(0, end_modes)),
            xattrs=_parse_xattrs(raw_xattrs),
            blob_offset=end_xattrs,
            blob_size=end_blob - end_xattrs,
            ops_offset=end_blob,
            ops_size=table - end_blob,
        )


@attrs.frozen
class PartPayload:
    """The decompressed ``(a(uuu)aa(ayay)ayay)``: modes (native ints), xattrs, blob, ops."""

    modes: tuple[Mode, ...]
    xattrs: tuple[Xattrs, ...]
    blob: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    ops: bytes

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> PartPayload:
        """Parse a payload held in memory; the blob is copied once (no re-encoding)."""
        mv = memoryview(data).cast("B")
        n = len(mv)
        osz = _offset_size(n)
        end_modes, end_xattrs, end_blob, table = _payload_framing(n, mv[max(0, n - 3 * osz) :])
        return cls(
            modes=_parse_modes(mv[:end_modes]),
            xattrs=_parse_xattrs(mv[end_modes:end_xattrs]),
            blob=bytes(mv[end_xattrs:end_blob]),
            ops=bytes(mv[end_blob:table]),
        )

    def to_bytes(self) -> bytes:
        """The serialized payload (what a part file compresses)."""
        head, tail = payload_frame(self.modes, self.xattrs, len(self.blob), self.ops)
        return b"".join((head, self.blob, tail))


def payload_frame(
    modes: Sequence[Mode], xattrs: Sequence[Xattrs], blob_size: int, ops: bytes | bytearray
) -> tuple[bytes, bytes]:
    """The serialized payload around its blob: ``head + blob + tail`` is the payload.

    Only the blob's size is needed, so a builder can keep a large blob outside memory and
    stream it between the two."""
    raw_modes = b"".join(
        uid.to_bytes(4, "big") + gid.to_bytes(4, "big") + mode.to_bytes(4, "big")
        for uid, gid, mode in modes
    )
    raw_xattrs = gvariant.encode("aa(ayay)", [list(entry) for entry in xattrs])
    head = raw_modes + raw_xattrs
    ends = [len(raw_modes), len(head), len(head) + blob_size]
    osz = _framed_offset_size(len(head) + blob_size + len(ops), 3)
    table = b"".join(end.to_bytes(osz, "little") for end in reversed(ends))
    return head, bytes(ops) + table


#: ``ostree static-delta show``'s names for the op counts of :func:`count_ops`, in order.
OP_COUNT_NAMES = ("openspliceclose", "open", "write", "setread", "unsetread", "close", "bspatch")
_OP_ARGS = {  # opcode: (index in OP_COUNT_NAMES, varint arguments)
    OP_OPEN: (1, 3),
    OP_WRITE: (2, 2),
    OP_SET_READ_SOURCE: (3, 1),
    OP_UNSET_READ_SOURCE: (4, 0),
    OP_CLOSE: (5, 0),
    OP_BSPATCH: (6, 2),
}


def count_ops(ops: bytes | bytearray | memoryview, objects: Sequence[tuple[int, str]]
              ) -> tuple[int, ...]:
    """How many ops of each kind (:data:`OP_COUNT_NAMES`) a part's op stream holds, read the
    way the executor reads it (``S`` takes two arguments for a metadata object, four for a
    content object). Raises :class:`FormatError` on an unknown opcode or a truncated op."""
    counts = [0] * len(OP_COUNT_NAMES)
    pos = 0
    n_objects = 0
    while pos < len(ops):
        code = ops[pos]
        pos += 1
        if code == OP_OPEN_SPLICE_AND_CLOSE:
            index = 0
            is_meta = n_objects < len(objects) and objects[n_objects][0] != OBJ_FILE
            nargs = 2 if is_meta else 4
            n_objects += 1
        elif code in _OP_ARGS:
            index, nargs = _OP_ARGS[code]
            n_objects += code == OP_OPEN
        else:
            raise FormatError(f"unknown delta op {code:#04x}")
        for _ in range(nargs):
            _, pos = decode_varint(ops, pos)
        counts[index] += 1
    return tuple(counts)


# ---------------------------------------------------------------------------- part files


class Reader(Protocol):
    """Anything with ``read(n) -> bytes`` (a file, a response body …)."""

    def read(self, n: int, /) -> bytes: ...


PartSource = bytes | bytearray | memoryview | Reader


def part_payload_limit(header: PartHeader) -> int:
    """The largest decompressed payload accepted for ``header``.

    The blob holds at most the objects' bytes (``usize``) plus per-object extras (symlink
    targets, source checksums, bsdiff control blocks) and the tables; twice ``usize`` plus
    4 KiB per object plus 1 MiB covers every generator we know of with room to spare.
    """
    return 2 * header.usize + 4096 * len(header.objects) + (1 << 20)


def _as_read(source: PartSource) -> Callable[[int], bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        mv = memoryview(source).cast("B")
        pos = 0

        def read(n: int) -> bytes:
            nonlocal pos
            chunk = bytes(mv[pos : pos + n])
            pos += len(chunk)
            return chunk

        return read
    return source.read


def decompress_part_into(
    source: PartSource,
    write: Callable[[bytes], object],
    *,
    max_output: int,
    memlimit: int = XZ_MEMLIMIT,
) -> int:
    """Decode a part file (compression byte + payload), passing the payload to ``write``.

    Reads ``source`` in chunks and hands ``write`` pieces of at most 256 KiB, so memory stays
    bounded (besides the xz dictionary, which liblzma fills only as far as output is made).
    Never produces more than ``max_output`` bytes: a larger payload (an xz bomb) raises
    :class:`FormatError`, as do truncated or trailing data, unknown compression types and
    corrupt xz streams.  Returns the payload size.
    """
    read = _as_read(source)
    kind = read(1)
    if not kind:
        raise FormatError("empty delta part file")
    total = 0
    if kind[0] == COMPRESSION_NONE:
        while chunk := read(_READ_CHUNK):
            total += len(chunk)
            if total > max_output:
                raise FormatError(f"delta part payload exceeds its limit of {max_output} bytes")
            write(chunk)
        return total
    if kind[0] != COMPRESSION_XZ:
        raise FormatError(f"unknown delta part compression type {kind[0]:#x}")
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=memlimit)
    try:
        while not dec.eof:
            if dec.needs_input:
                chunk = read(_READ_CHUNK)
                if not chunk:
                    raise FormatError("delta part xz stream is truncated")
            else:
                chunk = b""
            out = dec.decompress(chunk, max_length=min(_OUT_CHUNK, max_output - total + 1))
            total += len(out)
            if total > max_output:
                raise FormatError(f"delta part payload exceeds its limit of {max_output} bytes")
            if out:
                write(out)
    except lzma.LZMAError as exc:
        raise FormatError(f"corrupt xz data in delta part: {exc}") from exc
    if dec.unused_data or read(1):
        raise FormatError("trailing data after the xz stream in a delta part")
    return total


def decompress_part(source: PartSource, *, max_output: int, memlimit: int = XZ_MEMLIMIT) -> bytes:
    """:func:`decompress_part_into` collecting the payload in memory (small parts only)."""
    chunks: list[bytes] = []
    decompress_part_into(source, chunks.append, max_output=max_output, memlimit=memlimit)
    return b"".join(chunks)


def open_part(
    source: PartSource,
    header: PartHeader,
    *,
    verify_checksum: bool = True,
    max_output: int | None = None,
) -> PartPayload:
    """Check a part file against its header, decompress it under a cap, and parse it.

    With ``verify_checksum`` (all but inline parts) the size and sha256 must match the
    header; a mismatch raises :class:`ChecksumError`, and nothing is parsed before that.
    """
    limit = part_payload_limit(header) if max_output is None else max_output
    if not verify_checksum:
        return PartPayload.from_bytes(decompress_part(source, max_output=limit))
    if isinstance(source, bytes | bytearray | memoryview):
        _check_part_digest(len(source), hashlib.sha256(source).hexdigest(), header)
        return PartPayload.from_bytes(decompress_part(source, max_output=limit))
    hasher = hashlib.sha256()
    total = 0
    base_read = source.read

    def read(n: int) -> bytes:
        nonlocal total
        chunk = base_read(n)
        total += len(chunk)
        if total > header.size:
            raise ChecksumError(
                "delta part is larger than its header says",
                expected=header.checksum,
            )
        hasher.update(chunk)
        return chunk

    class _Hashing:
        def read(self, n: int, /) -> bytes:
            return read(n)

    try:
        payload = decompress_part(_Hashing(), max_output=limit)
    except FormatError:
        # Tampered data usually fails to decompress first; report it as what it is.
        while read(_READ_CHUNK):
            pass
        _check_part_digest(total, hasher.hexdigest(), header)
        raise
    _check_part_digest(total, hasher.hexdigest(), header)
    return PartPayload.from_bytes(payload)


def _check_part_digest(size: int, digest: str, header: PartHeader) -> None:
    if size != header.size or digest != header.checksum:
        raise ChecksumError(
            f"delta part checksum mismatch (size {size}, header says {header.size})",
            expected=header.checksum,
            actual=digest,
        )


def encode_part_file(
    payload: bytes, compression: int = COMPRESSION_XZ, *, preset: int = 6
) -> bytes:
    """Make a part file: the compression byte then the (xz-compressed) payload."""
    encoder = PartFileEncoder(compression, preset=preset)
    return b"".join((encoder.update(payload), encoder.finish()))


class PartFileEncoder:
    """Makes a part file from a payload fed in pieces: ``update()`` and ``finish()`` return
    the part file's bytes as they come; ``size`` and ``checksum`` describe the whole file."""

    def __init__(self, compression: int = COMPRESSION_XZ, *, preset: int = 6) -> None:
        if compression not in (COMPRESSION_NONE, COMPRESSION_XZ):
            raise ValueError(f"unsupported delta part compression {compression!r}")
        self._xz = (
            lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=preset)
            if compression == COMPRESSION_XZ
            else None
        )
        self._hash = hashlib.sha256()
        self.size = 0
        self._pending = b"x" if self._xz is not None else b"\0"

    def _out(self, data: bytes) -> bytes:
        if self._pending:
            data, self._pending = self._pending + data, b""
        self._hash.update(data)
        self.size += len(data)
        return data

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._out(self._xz.compress(data) if self._xz is not None else bytes(data))

    def finish(self) -> bytes:
        return self._out(self._xz.flush() if self._xz is not None else b"")

    @property
    def checksum(self) -> str:
        return self._hash.hexdigest()


# ---------------------------------------------------------------------------- building


class PartBuilder:
    """Accumulates one delta part: the object list, deduplicated tables, blob and opcodes.

    Emits the op patterns ostree emits: ``S`` for whole objects, ``r o B c R`` for bsdiff,
    and ``o`` + ``w``/``r w … R`` + ``c`` for files assembled from pieces.

    The blob is kept in memory unless ``blob_sink`` is given: then every blob byte goes to
    it in order and the part is encoded with :meth:`frame` around the stored blob, so a part
    of any size, or a file of any size in it, never has to fit in memory.
    """

    def __init__(self, blob_sink: Callable[[bytes], object] | None = None) -> None:
        self.objects: list[tuple[int, str]] = []
        self.usize = 0
        self._modes: dict[Mode, int] = {}
        self._xattrs: dict[Xattrs, int] = {}
        self._blob = bytearray()
        self._blob_size = 0
        self._sink = blob_sink
        self._ops = bytearray()
        self._open: tuple[int, int] | None = None  # (declared size, written)
        self._source: str | None = None
        self._source_offsets: dict[str, int] = {}

    @property
    def blob_size(self) -> int:
        """Bytes in the blob so far (a cheap part-size estimate)."""
        return self._blob_size

    def _op(self, code: int, *args: int) -> None:
        self._ops.append(code)
        for arg in args:
            self._ops += encode_varint(arg)

    def _append_blob(self, data: bytes | bytearray | memoryview) -> int:
        offset = self._blob_size
        if self._sink is not None:
            self._sink(bytes(data))
        else:
            self._blob += data
        self._blob_size += len(data)
        return offset

    def _mode_index(self, uid: int, gid: int, mode: int) -> int:
        return self._modes.setdefault((uid, gid, mode), len(self._modes))

    def _xattr_index(self, xattrs: Sequence[tuple[bytes, bytes]]) -> int:
        key = tuple((bytes(k), bytes(v)) for k, v in xattrs)
        return self._xattrs.setdefault(key, len(self._xattrs))

    def _check_closed(self) -> None:
        if self._open is not None:
            raise RuntimeError("a file is still open in this part")

    def add_metadata(self, objtype: int, csum: str, data: bytes | bytearray | memoryview) -> None:
        """A metadata object shipped whole (``S length offset``)."""
        self._check_closed()
        if objtype not in (OBJ_DIRTREE, OBJ_DIRMETA, OBJ_COMMIT):
            raise ValueError(f"not a metadata object type: {objtype}")
        self.objects.append((objtype, _require_hex(csum)))
        self.usize += len(data)
        self._op(OP_OPEN_SPLICE_AND_CLOSE, len(data), self._append_blob(data))

    def add_content(
        self,
        csum: str,
        uid: int,
        gid: int,
        mode: int,
        xattrs: Sequence[tuple[bytes, bytes]],
        data: bytes | bytearray | memoryview,
    ) -> None:
        """A content object shipped whole; ``data`` is the file data or the symlink target."""
        self._check_closed()
        self.objects.append((OBJ_FILE, _require_hex(csum)))
        if mode & 0o170000 == 0o100000:
            self.usize += len(data)
        mode_idx = self._mode_index(uid, gid, mode)
        xattr_idx = self._xattr_index(xattrs)
        self._op(OP_OPEN_SPLICE_AND_CLOSE, mode_idx, xattr_idx, len(data), self._append_blob(data))

    def add_content_chunks(
        self,
        csum: str,
        uid: int,
        gid: int,
        mode: int,
        xattrs: Sequence[tuple[bytes, bytes]],
        size: int,
        chunks: Iterable[bytes],
    ) -> None:
        """A regular file shipped whole, its ``size`` bytes given as ``chunks`` (the same
        ``S`` op as :meth:`add_content`, without holding the file)."""
        self._check_closed()
        if mode & 0o170000 != 0o100000:
            raise ValueError("add_content_chunks is for regular files")
        csum = _require_hex(csum)
        offset = self._blob_size
        for chunk in chunks:
            self._append_blob(chunk)
        if self._blob_size - offset != size:
            raise ValueError(f"file gave {self._blob_size - offset} bytes, not {size}")
        self.objects.append((OBJ_FILE, csum))
        self.usize += size
        mode_idx = self._mode_index(uid, gid, mode)
        xattr_idx = self._xattr_index(xattrs)
        self._op(OP_OPEN_SPLICE_AND_CLOSE, mode_idx, xattr_idx, size, offset)

    def add_bsdiff(
        self,
        csum: str,
        uid: int,
        gid: int,
        mode: int,
        xattrs: Sequence[tuple[bytes, bytes]],
        size: int,
        source_csum: str,
        patch: bytes | bytearray | memoryview,
    ) -> None:
        """A regular file rebuilt by bspatch from a local source object (``r o B c R``)."""
        self._check_closed()
        self.objects.append((OBJ_FILE, _require_hex(csum)))
        self.usize += size
        mode_idx = self._mode_index(uid, gid, mode)
        xattr_idx = self._xattr_index(xattrs)
        self._op(OP_SET_READ_SOURCE, self._append_blob(bytes.fromhex(_require_hex(source_csum))))
        self._op(OP_OPEN, mode_idx, xattr_idx, size)
        self._op(OP_BSPATCH, self._blob_size, len(patch))
        self._append_blob(patch)
        self._op(OP_CLOSE)
        self._op(OP_UNSET_READ_SOURCE)

    def open_file(
        self,
        csum: str,
        uid: int,
        gid: int,
        mode: int,
        xattrs: Sequence[tuple[bytes, bytes]],
        size: int,
    ) -> None:
        """Start a regular file of ``size`` bytes assembled by :meth:`write_blob` and
        :meth:`write_source` (``o``)."""
        self._check_closed()
        self.objects.append((OBJ_FILE, _require_hex(csum)))
        self.usize += size
        self._op(OP_OPEN, self._mode_index(uid, gid, mode), self._xattr_index(xattrs), size)
        self._open = (size, 0)
        self._source_offsets = {}

    def _advance(self, length: int) -> None:
        if self._open is None:
            raise RuntimeError("no file is open")
        size, written = self._open
        if written + length > size:
            raise ValueError("write past the declared file size")
        self._open = (size, written + length)

    def write_blob(self, data: bytes | bytearray | memoryview) -> None:
        """Append new bytes carried in the blob (``w``; ``R`` first if a source is set)."""
        self._advance(len(data))
        if self._source is not None:
            self._op(OP_UNSET_READ_SOURCE)
            self._source = None
        self._op(OP_WRITE, len(data), self._append_blob(data))

    def write_source(self, source_csum: str, offset: int, length: int) -> None:
        """Append ``length`` bytes of a local content object's data (``r`` if needed, ``w``)."""
        self._advance(length)
        if self._source != source_csum:
            blob_offset = self._source_offsets.get(source_csum)
            if blob_offset is None:
                blob_offset = self._append_blob(bytes.fromhex(_require_hex(source_csum)))
                self._source_offsets[source_csum] = blob_offset
            self._op(OP_SET_READ_SOURCE, blob_offset)
            self._source = source_csum
        self._op(OP_WRITE, length, offset)

    def close_file(self) -> None:
        """Finish the open file (``R`` if a source is set, then ``c``)."""
        if self._open is None:
            raise RuntimeError("no file is open")
        size, written = self._open
        if written != size:
            raise ValueError(f"file closed after {written} of {size} bytes")
        if self._source is not None:
            self._op(OP_UNSET_READ_SOURCE)
            self._source = None
        self._op(OP_CLOSE)
        self._open = None

    def frame(self) -> tuple[bytes, bytes]:
        """The payload around the blob (``head + blob + tail``; see :func:`payload_frame`)."""
        self._check_closed()
        return payload_frame(tuple(self._modes), tuple(self._xattrs), self._blob_size, self._ops)

    def header(self, encoder: PartFileEncoder) -> PartHeader:
        """The part's header, once ``encoder`` has encoded the whole payload."""
        return PartHeader(
            version=0,
            checksum=encoder.checksum,
            size=encoder.size,
            usize=self.usize,
            objects=tuple(self.objects),
        )

    def payload(self) -> PartPayload:
        """The part payload built so far (blob kept in memory only)."""
        self._check_closed()
        if self._sink is not None:
            raise RuntimeError("the blob went to a sink: encode the part with frame()")
        return PartPayload(
            modes=tuple(self._modes),
            xattrs=tuple(self._xattrs),
            blob=bytes(self._blob),
            ops=bytes(self._ops),
        )

    def finish(
        self, compression: int = COMPRESSION_XZ, *, preset: int = 6
    ) -> tuple[bytes, PartHeader]:
        """Encode the part file and its header (blob kept in memory only)."""
        encoder = PartFileEncoder(compression, preset=preset)
        part_file = b"".join((encoder.update(self.payload().to_bytes()), encoder.finish()))
        return part_file, self.header(encoder)
