"""GVariant serialisation in normal form, as OSTree uses it.

Pure functions over bytes: :func:`decode` and :func:`encode`. Python values map as
``y u i t x n q h`` → ``int``, ``b`` → ``bool``, ``s o g`` → ``str``, ``ay`` → ``bytes``,
other arrays → ``list``, ``a{..}`` → ``dict`` (insertion order kept, so bytes round-trip),
tuples → ``tuple``, ``m`` → ``None`` or the value, ``v`` → :class:`Variant`.

Integers are read and written little-endian (GVariant's host order on the machines OSTree
targets). Fields OSTree stores big-endian are swapped by the format layer with
:func:`swap32`/:func:`swap64`.

:func:`decode` is strict: after decoding it re-encodes and requires the very same bytes, so
anything that is not in normal form (non-zero padding, oversized framing offsets, overlapping
offsets, stray NULs …) raises :class:`~pyostree.errors.FormatError`, never ``IndexError``.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import attrs

from .errors import FormatError

__all__ = [
    "GType",
    "Variant",
    "byteswap",
    "decode",
    "encode",
    "parse_type",
    "swap32",
    "swap64",
]

_FIXED_BASIC: dict[str, tuple[int, str]] = {
    "y": (1, "<B"),
    "b": (1, "<B"),
    "n": (2, "<h"),
    "q": (2, "<H"),
    "i": (4, "<i"),
    "u": (4, "<I"),
    "h": (4, "<i"),
    "x": (8, "<q"),
    "t": (8, "<Q"),
    "d": (8, "<d"),
}
_STRINGS = "sog"
MAX_DEPTH = 64


@attrs.frozen
class Variant:
    """A boxed value of type ``v``: its type string and its Python value."""

    type: str
    value: Any


@attrs.frozen
class GType:
    """A parsed GVariant type: code, children, alignment and fixed size (0 = variable)."""

    string: str
    code: str  # one of the basic codes, 'a', 'm', '(', '{', 'v'
    children: tuple[GType, ...]
    alignment: int
    fixed_size: int


def swap32(value: int) -> int:
    """Byte-swap a 32-bit unsigned integer (BE ↔ LE)."""
    return int.from_bytes(value.to_bytes(4, "little"), "big")


def swap64(value: int) -> int:
    """Byte-swap a 64-bit unsigned integer (BE ↔ LE)."""
    return int.from_bytes(value.to_bytes(8, "little"), "big")


def _align(pos: int, alignment: int) -> int:
    return (pos + alignment - 1) & ~(alignment - 1)


def _parse_one(s: str, i: int, depth: int) -> tuple[GType, int]:
    if depth > MAX_DEPTH:
        raise FormatError("GVariant type nested too deeply")
    if i >= len(s):
        raise FormatError(f"incomplete GVariant type {s!r}")
    c = s[i]
    if c in _FIXED_BASIC:
        size = _FIXED_BASIC[c][0]
        return GType(c, c, (), size, size), i + 1
    if c in _STRINGS:
        return GType(c, c, (), 1, 0), i + 1
    if c == "v":
        return GType("v", "v", (), 8, 0), i + 1
    if c in "am":
        child, j = _parse_one(s, i + 1, depth + 1)
        return GType(s[i:j], c, (child,), child.alignment, 0), j
    if c in "({":
        close = ")" if c == "(" else "}"
        children: list[GType] = []
        j = i + 1
        while True:
            if j >= len(s):
                raise FormatError(f"unterminated GVariant type {s!r}")
            if s[j] == close:
                j += 1
                break
            child, j = _parse_one(s, j, depth + 1)
            children.append(child)
        if c == "{" and (
            len(children) != 2
            or (children[0].code not in _FIXED_BASIC and children[0].code not in _STRINGS)
        ):
            raise FormatError(f"invalid dict entry type {s[i:j]!r}")
        alignment = max((ch.alignment for ch in children), default=1)
        fixed = 0
        if all(ch.fixed_size for ch in children):
            pos = 0
            for ch in children:
                pos = _align(pos, ch.alignment) + ch.fixed_size
            fixed = max(_align(pos, alignment), 1)
        return GType(s[i:j], c, tuple(children), alignment, fixed), j
    raise FormatError(f"invalid GVariant type character {c!r} in {s!r}")


@lru_cache(maxsize=256)
def parse_type(type_string: str) -> GType:
    """Parse a complete single GVariant type string, or raise :class:`FormatError`."""
    gtype, end = _parse_one(type_string, 0, 0)
    if end != len(type_string):
        raise FormatError(f"trailing characters in GVariant type {type_string!r}")
    return gtype


def _offset_size(total: int) -> int:
    if total == 0:
        return 0
    if total <= 0xFF:
        return 1
    if total <= 0xFFFF:
        return 2
    if total <= 0xFFFFFFFF:
        return 4
    return 8


def _read_offset(data: bytes, pos: int, osz: int) -> int:
    return int.from_bytes(data[pos : pos + osz], "little")


# ---------------------------------------------------------------------------- framing helpers
#
# Building blocks for hand-written codecs of hot, fixed shapes (dirtrees, file headers): they
# frame alignment-1 containers exactly as the generic encoder does, so a fast decoder can prove
# normal form by re-encoding with them and comparing bytes.


def frame(body: bytes, ends: Sequence[int]) -> bytes:
    """``body`` followed by its framing offsets ``ends``, sized as normal form requires."""
    count = len(ends)
    if count == 0:
        return body
    if len(body) + count <= 0xFF:  # the common case: one-byte offsets
        return body + bytes(ends)
    osz = pick_offset_size(len(body), count)
    return body + struct.pack(f"<{count}{OFFSET_CODES[osz]}", *ends)


# struct codes of little-endian framing offsets by size
OFFSET_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def decode_string(raw: bytes) -> str:
    """The text of a GVariant string without its terminating NUL: no NUL inside, UTF-8."""
    if 0 in raw:
        raise FormatError("GVariant string contains a NUL byte")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError("GVariant string is not valid UTF-8") from exc


def offset_size(total: int) -> int:
    """Size of each framing offset in a serialised container of ``total`` bytes."""
    return _offset_size(total)


def read_tail_offset(data: bytes, index: int = 1) -> tuple[int, int]:
    """The ``index``-th framing offset counted from the end of ``data``, and the offset size.

    Raises :class:`FormatError` if ``data`` is too short to hold it."""
    osz = _offset_size(len(data))
    start = len(data) - index * osz
    if osz == 0 or start < 0:
        raise FormatError("GVariant container too short for its framing offsets")
    return int.from_bytes(data[start : start + osz], "little"), osz


def array_ends(data: bytes) -> Sequence[int]:
    """Element ends of an array of variable-size, alignment-1 elements, its framing checked
    as normal form requires (offset size, table bounds). The ends themselves must still be
    checked to rise by the caller; then every one is in bounds."""
    n = len(data)
    if not n:
        return ()
    osz = _offset_size(n)
    last_end = int.from_bytes(data[n - osz :], "little")
    if last_end > n - osz or (n - last_end) % osz:
        raise FormatError("GVariant array framing offset out of range")
    count = (n - last_end) // osz
    if pick_offset_size(last_end, count) != osz:
        raise FormatError("GVariant array framing offsets are not of their normal size")
    ends: Sequence[int] = (data[last_end:] if osz == 1
                           else struct.unpack_from(f"<{count}{OFFSET_CODES[osz]}", data, last_end))
    if max(ends) != last_end:
        raise FormatError("GVariant array framing offsets out of order")
    return ends


def split_array(data: bytes) -> list[bytes]:
    """Elements of an array of variable-size, alignment-1 elements (framing checked; the
    elements' own normal form is the caller's)."""
    items = []
    start = 0
    for end in array_ends(data):
        if end < start:
            raise FormatError("GVariant array framing offsets out of order")
        items.append(data[start:end])
        start = end
    return items


# ---------------------------------------------------------------------------- decoding


def _decode(t: GType, data: bytes, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise FormatError("GVariant value nested too deeply")
    code = t.code
    n = len(data)
    if code in _FIXED_BASIC:
        if n != t.fixed_size:
            raise FormatError(f"GVariant {code!r} needs {t.fixed_size} bytes, got {n}")
        value = struct.unpack(_FIXED_BASIC[code][1], data)[0]
        if code == "b":
            if value > 1:
                raise FormatError("GVariant boolean is not 0 or 1")
            return bool(value)
        return value
    if code in _STRINGS:
        if n == 0 or data[-1] != 0:
            raise FormatError("GVariant string is not NUL-terminated")
        return decode_string(data[:-1])
    if code == "v":
        sep = data.rfind(b"\0")
        if sep < 0:
            raise FormatError("GVariant variant has no type separator")
        try:
            tstr = data[sep + 1 :].decode("ascii")
        except UnicodeDecodeError as exc:
            raise FormatError("GVariant variant type is not ASCII") from exc
        child = parse_type(tstr)
        return Variant(tstr, _decode(child, data[:sep], depth + 1))
    if code == "m":
        child = t.children[0]
        if n == 0:
            return None
        if child.fixed_size:
            return _decode(child, data, depth + 1)
        if data[-1] != 0:
            raise FormatError("GVariant maybe lacks its trailing NUL")
        return _decode(child, data[:-1], depth + 1)
    if code == "a":
        return _decode_array(t, data, depth)
    return _decode_tuple(t, data, depth)


def _decode_array(t: GType, data: bytes, depth: int) -> Any:
    child = t.children[0]
    n = len(data)
    if child.code == "y":
        return bytes(data)
    # Fast paths: xattrs, signatures and the commit's ostree.sizes table (tens of thousands of
    # entries); decode() proves normal form by re-encoding as always.
    if child.string == "ay":
        return split_array(data)
    if child.string == "(ayay)":
        return [_split_ayay(elem) for elem in split_array(data)]
    items: list[Any] = []
    if child.fixed_size:
        size = child.fixed_size
        if n % size:
            raise FormatError(f"GVariant array of {t.string!r} has a partial element")
        items = [_decode(child, data[i : i + size], depth + 1) for i in range(0, n, size)]
    elif n:
        osz = _offset_size(n)
        last_end = _read_offset(data, n - osz, osz)
        if last_end > n or (n - last_end) % osz:
            raise FormatError("GVariant array framing offset out of range")
        count = (n - last_end) // osz
        if count == 0:
            raise FormatError("GVariant array has no elements but is not empty")
        start = 0
        for k in range(count):
            end = _read_offset(data, last_end + k * osz, osz)
            start = _align(start, child.alignment)
            if start > end or end > last_end:
                raise FormatError("GVariant array framing offsets out of order")
            items.append(_decode(child, data[start:end], depth + 1))
            start = end
    if child.code == "{":
        result: dict[Any, Any] = {}
        for key, value in items:
            if key in result:
                raise FormatError(f"GVariant dictionary has a duplicate key {key!r}")
            result[key] = value
        return result
    return items


def _split_ayay(elem: bytes) -> tuple[bytes, bytes]:
    if not elem:
        raise FormatError("GVariant '(ayay)' element is empty")
    end, osz = read_tail_offset(elem)
    if end > len(elem) - osz:
        raise FormatError("GVariant '(ayay)' member 0 is out of bounds")
    return elem[:end], elem[end : len(elem) - osz]


def _decode_tuple(t: GType, data: bytes, depth: int) -> tuple[Any, ...]:
    n = len(data)
    if t.fixed_size and n != t.fixed_size:
        raise FormatError(f"GVariant {t.string!r} needs {t.fixed_size} bytes, got {n}")
    osz = _offset_size(n)
    offsets_end = n  # the offset table grows down from the end
    values: list[Any] = []
    pos = 0
    last = len(t.children) - 1
    for idx, child in enumerate(t.children):
        pos = _align(pos, child.alignment)
        if child.fixed_size:
            end = pos + child.fixed_size
        elif idx == last:
            end = offsets_end
        else:
            offsets_end -= osz
            if offsets_end < 0:
                raise FormatError("GVariant tuple framing offsets out of range")
            end = _read_offset(data, offsets_end, osz)
        if pos > end or end > offsets_end:
            raise FormatError(f"GVariant {t.string!r} member {idx} is out of bounds")
        values.append(_decode(child, data[pos:end], depth + 1))
        pos = end
    return tuple(values)


def decode(type_string: str, data: bytes | bytearray | memoryview) -> Any:
    """Decode ``data`` as ``type_string``; raise :class:`FormatError` unless in normal form."""
    gtype = parse_type(type_string)
    raw = bytes(data)
    try:
        value = _decode(gtype, raw, 0)
    except RecursionError as exc:  # pragma: no cover - bounded by MAX_DEPTH
        raise FormatError("GVariant value nested too deeply") from exc
    if _encode(gtype, value) != raw:
        raise FormatError(f"GVariant {type_string!r} data is not in normal form")
    return value


# ---------------------------------------------------------------------------- encoding


def pick_offset_size(body: int, count: int) -> int:
    """Normal-form size of each of ``count`` framing offsets after a ``body`` of that size."""
    if count == 0:
        return 0
    for osz, limit in ((1, 0xFF), (2, 0xFFFF), (4, 0xFFFFFFFF)):
        if body + count * osz <= limit:
            return osz
    return 8


def _frame(body: bytearray, ends: list[int]) -> bytes:
    osz = pick_offset_size(len(body), len(ends))
    for end in ends:
        body += end.to_bytes(osz, "little")
    return bytes(body)


def _encode_ayay_array(value: Any) -> bytes:
    parts = []
    ends = []
    pos = 0
    for first, second in value:
        elem = frame(bytes(first) + bytes(second), (len(first),))
        parts.append(elem)
        pos += len(elem)
        ends.append(pos)
    return frame(b"".join(parts), ends)


def _encode(t: GType, value: Any) -> bytes:
    code = t.code
    if code in _FIXED_BASIC:
        try:
            return struct.pack(_FIXED_BASIC[code][1], value)
        except struct.error as exc:
            raise ValueError(f"cannot encode {value!r} as {code!r}") from exc
    if code in _STRINGS:
        raw: bytes = value.encode("utf-8")
        if b"\0" in raw:
            raise ValueError("GVariant strings cannot contain NUL")
        return raw + b"\0"
    if code == "v":
        if not isinstance(value, Variant):
            raise TypeError(f"expected Variant, got {type(value).__name__}")
        return _encode(parse_type(value.type), value.value) + b"\0" + value.type.encode()
    if code == "m":
        if value is None:
            return b""
        child = t.children[0]
        inner = _encode(child, value)
        return inner if child.fixed_size else inner + b"\0"
    if code == "a":
        child = t.children[0]
        if child.code == "y":
            return bytes(value)  # type: ignore[no-any-return]
        if child.string == "ay":
            items = [bytes(item) for item in value]
            return frame(b"".join(items), list(itertools.accumulate(map(len, items))))
        if child.string == "(ayay)":
            return _encode_ayay_array(value)
        items = list(value.items()) if child.code == "{" else list(value)
        if child.fixed_size:
            return b"".join(_encode(child, item) for item in items)
        body = bytearray()
        ends: list[int] = []
        for item in items:
            pad = _align(len(body), child.alignment) - len(body)
            body += b"\0" * pad
            body += _encode(child, item)
            ends.append(len(body))
        return _frame(body, ends)
    # tuple or dict entry
    if len(value) != len(t.children):
        raise ValueError(f"{t.string!r} needs {len(t.children)} members, got {len(value)}")
    body = bytearray()
    ends = []
    last = len(t.children) - 1
    for idx, (child, item) in enumerate(zip(t.children, value, strict=True)):
        body += b"\0" * (_align(len(body), child.alignment) - len(body))
        body += _encode(child, item)
        if not child.fixed_size and idx != last:
            ends.append(len(body))
    if t.fixed_size:
        body += b"\0" * (t.fixed_size - len(body))
        return bytes(body)
    ends.reverse()
    return _frame(body, ends)


def encode(type_string: str, value: Any) -> bytes:
    """Serialise ``value`` as ``type_string`` in normal form."""
    return _encode(parse_type(type_string), value)


# ---------------------------------------------------------------------------- byte swapping


def _byteswap(t: GType, value: Any) -> Any:
    code = t.code
    if code in _FIXED_BASIC:
        if t.fixed_size == 1:
            return value
        fmt = _FIXED_BASIC[code][1]
        return struct.unpack(">" + fmt[1:], struct.pack(fmt, value))[0]
    if code in _STRINGS:
        return value
    if code == "v":
        return Variant(value.type, _byteswap(parse_type(value.type), value.value))
    if code == "m":
        return None if value is None else _byteswap(t.children[0], value)
    if code == "a":
        child = t.children[0]
        if child.code == "y":
            return value
        if child.code == "{":
            key_t, val_t = child.children
            return {_byteswap(key_t, k): _byteswap(val_t, v) for k, v in value.items()}
        return [_byteswap(child, item) for item in value]
    return tuple(_byteswap(c, v) for c, v in zip(t.children, value, strict=True))


def byteswap(type_string: str, value: Any) -> Any:
    """``g_variant_byteswap``: every multi-byte number swapped (the ostree tool prints metadata
    this way on little-endian hosts, so its big-endian fields read naturally)."""
    return _byteswap(parse_type(type_string), value)
