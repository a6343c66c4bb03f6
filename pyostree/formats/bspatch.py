"""The bsdiff patch format used inside static deltas (the ``B`` opcode).

This is the "mendsley bsdiff" stream with no header, no magic and no bzip2 (the whole delta
part is xz-compressed instead).  A patch is a sequence of blocks::

    ctrl    three 8-byte "offtin" integers: sign-magnitude, low 63 bits LE magnitude, bit 63 sign
    diff    ctrl[0] bytes; new[i] = diff[i] + old[oldpos + i] (mod 256), old past its ends reads 0
    extra   ctrl[1] bytes copied verbatim
    then    oldpos += ctrl[0] + ctrl[2]

:func:`bspatch` applies a patch with hard bounds and streams the result through a callback;
:func:`bsdiff` is a simple block-matching generator of valid patches (correct, not optimal).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import BinaryIO

from ..errors import FormatError

__all__ = ["BSDIFF_MAX_INPUT", "bsdiff", "bspatch", "decode_offtin", "encode_offtin"]

#: :func:`bsdiff` refuses inputs larger than this (callers ship such files whole instead).
BSDIFF_MAX_INPUT = 16 * 1024 * 1024

_CHUNK = 64 * 1024
_CTRL_SIZE = 24
_SIGN = 1 << 63
_MAX_MAGNITUDE = _SIGN - 1

OldData = bytes | bytearray | memoryview | BinaryIO


def decode_offtin(data: bytes | memoryview) -> int:
    """Decode one 8-byte sign-magnitude integer."""
    raw = int.from_bytes(data[:8], "little")
    magnitude = raw & _MAX_MAGNITUDE
    return -magnitude if raw & _SIGN else magnitude


def encode_offtin(value: int) -> bytes:
    """Encode an integer as 8-byte sign-magnitude (the format bsdiff uses)."""
    if abs(value) > _MAX_MAGNITUDE:
        raise ValueError(f"offtin value out of range: {value}")
    raw = -value | _SIGN if value < 0 else value
    return raw.to_bytes(8, "little")


def _masks(n: int) -> tuple[int, int]:
    return int.from_bytes(b"\x80" * n, "little"), int.from_bytes(b"\x7f" * n, "little")


_FULL_MASKS = _masks(_CHUNK)


def _add_bytes(a: bytes | memoryview, b: bytes | memoryview) -> bytes:
    """Bytewise ``(a[i] + b[i]) & 0xFF`` on equal-length inputs, in one big-int pass (SWAR)."""
    n = len(a)
    high, low = _FULL_MASKS if n == _CHUNK else _masks(n)
    x = int.from_bytes(a, "little")
    y = int.from_bytes(b, "little")
    return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(n, "little")


def _sub_bytes(a: bytes | memoryview, b: bytes | memoryview) -> bytes:
    """Bytewise ``(a[i] - b[i]) & 0xFF`` on equal-length inputs (SWAR)."""
    n = len(a)
    high, low = _FULL_MASKS if n == _CHUNK else _masks(n)
    x = int.from_bytes(a, "little")
    y = int.from_bytes(b, "little")
    return (((x | high) - (y & low)) ^ ((x ^ y ^ high) & high)).to_bytes(n, "little")


class _OldSource:
    """Random access to the old data; reads outside ``[0, size)`` give zero bytes."""

    def __init__(self, old: OldData) -> None:
        self._file: BinaryIO | None = None
        self._buf: memoryview | None = None
        if isinstance(old, bytes | bytearray | memoryview):
            self._buf = memoryview(old).cast("B")
            self.size = len(self._buf)
        else:
            self._file = old
            self.size = old.seek(0, io.SEEK_END)

    def read_at(self, pos: int, n: int) -> bytes | memoryview:
        lo = max(pos, 0)
        hi = min(pos + n, self.size)
        if lo >= hi:
            return bytes(n)
        if self._buf is not None:
            data: bytes | memoryview = self._buf[lo:hi]
        else:
            assert self._file is not None
            self._file.seek(lo)
            parts = []
            want = hi - lo
            while want:
                got = self._file.read(want)
                if not got:
                    raise FormatError("bspatch source shorter than its reported size")
                parts.append(got)
                want -= len(got)
            data = b"".join(parts)
        if lo == pos and hi == pos + n:
            return data
        return bytes(lo - pos) + bytes(data) + bytes(pos + n - hi)


def bspatch(
    old: OldData,
    patch: bytes | bytearray | memoryview,
    new_size: int,
    write: Callable[[bytes], object],
) -> None:
    """Apply ``patch`` to ``old``, passing exactly ``new_size`` bytes to ``write`` in chunks.

    ``old`` is a bytes-like object or a seekable binary file.  Raises :class:`FormatError` for
    a truncated patch, negative lengths, blocks that would overrun ``new_size`` or trailing
    bytes after the last block.  The loop is bounded: every block consumes 24 patch bytes.
    """
    if new_size < 0:
        raise ValueError("new_size must not be negative")
    src = _OldSource(old)
    pv = memoryview(patch).cast("B")
    plen = len(pv)
    pos = 0
    newpos = 0
    oldpos = 0
    while newpos < new_size:
        if pos + _CTRL_SIZE > plen:
            raise FormatError("bsdiff patch truncated in a control block")
        diff_len = decode_offtin(pv[pos : pos + 8])
        extra_len = decode_offtin(pv[pos + 8 : pos + 16])
        seek = decode_offtin(pv[pos + 16 : pos + 24])
        pos += _CTRL_SIZE
        if diff_len < 0 or extra_len < 0:
            raise FormatError("bsdiff patch has a negative block length")
        if newpos + diff_len + extra_len > new_size:
            raise FormatError("bsdiff patch writes past the end of the new file")
        if pos + diff_len + extra_len > plen:
            raise FormatError("bsdiff patch truncated in a data block")
        done = 0
        while done < diff_len:
            n = min(_CHUNK, diff_len - done)
            write(_add_bytes(pv[pos : pos + n], src.read_at(oldpos + done, n)))
            pos += n
            done += n
        newpos += diff_len
        oldpos += diff_len
        done = 0
        while done < extra_len:
            n = min(_CHUNK, extra_len - done)
            write(bytes(pv[pos : pos + n]))
            pos += n
            done += n
        newpos += extra_len
        oldpos += seek
    if pos != plen:
        raise FormatError("bsdiff patch has trailing data")


# ---------------------------------------------------------------------------- generator


def _common_prefix(a: memoryview, ai: int, b: memoryview, bi: int) -> int:
    """Length of the common run ``a[ai:] == b[bi:]``."""
    length = 0
    step = 64
    while True:
        n = min(step, len(a) - ai - length, len(b) - bi - length)
        if n <= 0:
            return length
        x = int.from_bytes(a[ai + length : ai + length + n], "little") ^ int.from_bytes(
            b[bi + length : bi + length + n], "little"
        )
        if x:
            return length + ((x & -x).bit_length() - 1) // 8
        length += n
        step = min(step * 2, _CHUNK)


def _common_suffix(a: memoryview, aend: int, b: memoryview, bend: int, limit: int) -> int:
    """Length (at most ``limit``) of the common run ending at ``a[aend]`` and ``b[bend]``."""
    length = 0
    step = 64
    while length < limit:
        n = min(step, limit - length)
        x = int.from_bytes(a[aend - length - n : aend - length], "big") ^ int.from_bytes(
            b[bend - length - n : bend - length], "big"
        )
        if x:
            return length + ((x & -x).bit_length() - 1) // 8
        length += n
        step = min(step * 2, _CHUNK)
    return limit


_Match = tuple[int, int, int]  # (new start, old start, length)
_MERGE_GAP = 32


def _find_matches(old: memoryview, new: memoryview) -> list[_Match]:
    block = 16 if len(old) <= 2 * 1024 * 1024 else 32
    if len(old) < block or len(new) < block:
        return []
    index: dict[bytes, int] = {}
    for i in range((len(old) - block) // block * block, -1, -block):
        index[bytes(old[i : i + block])] = i  # going backwards: the first occurrence wins
    newb = bytes(new)
    get = index.get
    matches: list[_Match] = []
    p = 0
    last_end = 0
    stop = len(newb) - block
    while p <= stop:
        hit = get(newb[p : p + block])
        if hit is None:
            p += 1
            continue
        back = _common_suffix(old, hit, new, p, min(hit, p - last_end))
        length = back + block + _common_prefix(old, hit + block, new, p + block)
        start_new, start_old = p - back, hit - back
        if matches:
            prev_new, prev_old, prev_len = matches[-1]
            gap = start_new - (prev_new + prev_len)
            if start_old - start_new == prev_old - prev_new and gap <= _MERGE_GAP:
                # Same alignment after a few changed bytes: one diff block covers both.
                matches[-1] = (prev_new, prev_old, start_new + length - prev_new)
                p = last_end = start_new + length
                continue
        matches.append((start_new, start_old, length))
        p = last_end = start_new + length
    return matches


def _ctrl(diff_len: int, extra_len: int, seek: int) -> bytes:
    return encode_offtin(diff_len) + encode_offtin(extra_len) + encode_offtin(seek)


def bsdiff(old: bytes | bytearray | memoryview, new: bytes | bytearray | memoryview) -> bytes:
    """Make a patch that turns ``old`` into ``new`` (block matching; exact, not minimal).

    Raises ``ValueError`` when either input exceeds :data:`BSDIFF_MAX_INPUT`.
    """
    ov = memoryview(old).cast("B")
    nv = memoryview(new).cast("B")
    if len(ov) > BSDIFF_MAX_INPUT or len(nv) > BSDIFF_MAX_INPUT:
        raise ValueError("bsdiff input too large")
    matches = _find_matches(ov, nv)
    out = bytearray()
    if not matches:
        if len(nv):
            out += _ctrl(0, len(nv), 0) + nv
        return bytes(out)
    first_new, first_old, _ = matches[0]
    if first_new or first_old:
        out += _ctrl(0, first_new, first_old) + nv[:first_new]
    for k, (start_new, start_old, length) in enumerate(matches):
        if k + 1 < len(matches):
            extra_end, next_old = matches[k + 1][0], matches[k + 1][1]
            seek = next_old - (start_old + length)
        else:
            extra_end, seek = len(nv), 0
        out += _ctrl(length, extra_end - start_new - length, seek)
        for off in range(0, length, _CHUNK):
            n = min(_CHUNK, length - off)
            out += _sub_bytes(
                nv[start_new + off : start_new + off + n], ov[start_old + off : start_old + off + n]
            )
        out += nv[start_new + length : extra_end]
    return bytes(out)
