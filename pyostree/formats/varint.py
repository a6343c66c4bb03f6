"""Protobuf-style unsigned varints, as used by delta opcodes and ``ostree.sizes``.

Each byte carries 7 bits, least-significant group first; bit 0x80 means "more follows".
A uint64 takes at most 10 bytes.  Non-minimal encodings are accepted (libostree accepts
them too); values that do not fit in 64 bits are not.
"""

from __future__ import annotations

from ..errors import FormatError

__all__ = ["MAX_VARINT_LEN", "decode_varint", "encode_varint"]

MAX_VARINT_LEN = 10
_U64_MAX = (1 << 64) - 1


def decode_varint(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode one varint at ``data[pos:]``; return ``(value, position after it)``."""
    result = 0
    shift = 0
    end = len(data)
    for i in range(MAX_VARINT_LEN):
        if pos + i >= end:
            raise FormatError("unexpected end of data in varint")
        byte = data[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result > _U64_MAX:
                raise FormatError("varint does not fit in 64 bits")
            return result, pos + i + 1
        shift += 7
    raise FormatError("varint longer than 10 bytes")


def encode_varint(value: int) -> bytes:
    """Encode an unsigned 64-bit integer as a minimal varint."""
    if not 0 <= value <= _U64_MAX:
        raise ValueError(f"varint value out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
