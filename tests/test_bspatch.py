"""bsdiff patches as used inside static deltas: applying (bounded) and generating.

Real ostree-made patches are applied in tests/test_delta_formats.py (interop), where every
bsdiff object of a real delta is rebuilt and checked against the real repository.
"""

from __future__ import annotations

import io
import lzma
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyostree.errors import FormatError
from pyostree.formats.bspatch import (
    BSDIFF_MAX_INPUT,
    _add_bytes,
    _sub_bytes,
    bsdiff,
    bspatch,
    decode_offtin,
    encode_offtin,
)


def ctrl(diff_len: int, extra_len: int, seek: int) -> bytes:
    return encode_offtin(diff_len) + encode_offtin(extra_len) + encode_offtin(seek)


def apply(old: bytes | io.BytesIO, patch: bytes, new_size: int) -> bytes:
    out: list[bytes] = []
    bspatch(old, patch, new_size, out.append)
    return b"".join(out)


def test_offtin_is_sign_magnitude() -> None:
    assert encode_offtin(1) == b"\1" + bytes(7)
    assert encode_offtin(-1) == b"\1" + bytes(6) + b"\x80"
    assert encode_offtin(-(2**63 - 1)) == b"\xff" * 8
    assert decode_offtin(bytes(7) + b"\x80") == 0  # negative zero
    for v in (0, 5, -5, 2**40, -(2**40), 2**63 - 1):
        assert decode_offtin(encode_offtin(v)) == v
    with pytest.raises(ValueError):
        encode_offtin(2**63)


def test_swar_byte_arithmetic_matches_naive() -> None:
    rng = random.Random(3)
    for n in (0, 1, 7, 8, 9, 1000, 65536):
        a, b = rng.randbytes(n), rng.randbytes(n)
        assert _add_bytes(a, b) == bytes((x + y) & 0xFF for x, y in zip(a, b, strict=True))
        assert _sub_bytes(a, b) == bytes((x - y) & 0xFF for x, y in zip(a, b, strict=True))
    edge = bytes([0, 0x7F, 0x80, 0xFF] * 4)
    rev = bytes([0xFF, 0x80, 0x7F, 0, 1, 0x81, 0x7E, 0xFE] * 2)
    assert _add_bytes(edge, rev) == bytes((x + y) & 0xFF for x, y in zip(edge, rev, strict=True))
    assert _sub_bytes(edge, rev) == bytes((x - y) & 0xFF for x, y in zip(edge, rev, strict=True))


def test_hand_made_patch() -> None:
    old = b"abcdef"
    # diff 3 bytes against "abc" (+0,+0,+1), extra "XY", skip 1 old byte; then diff 2 against
    # "ef" (+1, +0).
    patch = ctrl(3, 2, 1) + b"\0\0\1" + b"XY" + ctrl(2, 0, 0) + b"\1\0"
    assert apply(old, patch, 7) == b"abdXYff"
    assert apply(io.BytesIO(old), patch, 7) == b"abdXYff"


def test_old_reads_outside_the_old_data_count_as_zero() -> None:
    old = b"\x10\x20\x30"
    # start 2 bytes before old, read 7 bytes: 2 before, 3 inside, 2 past the end
    patch = ctrl(0, 0, -2) + ctrl(7, 0, 0) + bytes([1, 2, 3, 4, 5, 6, 7])
    expected = bytes([1, 2, 0x13, 0x24, 0x35, 6, 7])
    assert apply(old, patch, 7) == expected
    assert apply(io.BytesIO(old), patch, 7) == expected
    far = ctrl(0, 0, 10**15) + ctrl(3, 0, 0) + b"abc"
    assert apply(old, far, 3) == b"abc"


def test_output_is_streamed_in_bounded_chunks() -> None:
    old = bytes(300_000)
    new = bytes(range(256)) * 1200
    patch = bsdiff(old, new)
    chunks: list[bytes] = []
    bspatch(old, patch, len(new), chunks.append)
    assert b"".join(chunks) == new
    assert max(len(c) for c in chunks) <= 64 * 1024


def test_empty_new_file() -> None:
    assert apply(b"old", b"", 0) == b""
    assert bsdiff(b"old", b"") == b""
    with pytest.raises(FormatError, match="trailing"):
        apply(b"old", ctrl(0, 0, 0), 0)


@pytest.mark.parametrize(
    ("patch", "new_size"),
    [
        pytest.param(b"", 1, id="empty-patch"),
        pytest.param(ctrl(1, 0, 0)[:23], 1, id="truncated-ctrl"),
        pytest.param(ctrl(-1, 2, 0) + b"xx", 1, id="negative-diff"),
        pytest.param(ctrl(0, -1, 0), 1, id="negative-extra"),
        pytest.param(ctrl(5, 0, 0) + b"\0" * 5, 4, id="diff-past-new-size"),
        pytest.param(ctrl(2, 3, 0) + b"\0" * 5, 4, id="extra-past-new-size"),
        pytest.param(ctrl(4, 0, 0) + b"\0" * 3, 4, id="truncated-diff"),
        pytest.param(ctrl(0, 4, 0) + b"\0" * 3, 4, id="truncated-extra"),
        pytest.param(ctrl(0, 4, 0) + b"\0" * 5, 4, id="trailing-bytes"),
        pytest.param(ctrl(2**62, 0, 0), 10, id="huge-diff"),
        pytest.param(ctrl(0, 2**62, 0), 2**63, id="huge-extra-truncated"),
        pytest.param(ctrl(0, 0, 0) * 1000, 1, id="zero-blocks-run-out"),
    ],
)
def test_hostile_patches(patch: bytes, new_size: int) -> None:
    produced = 0

    def write(data: bytes) -> None:
        nonlocal produced
        produced += len(data)

    with pytest.raises(FormatError):
        bspatch(b"0123456789", patch, new_size, write)
    assert produced <= new_size


def test_negative_new_size_is_misuse() -> None:
    with pytest.raises(ValueError):
        bspatch(b"", b"", -1, lambda _d: None)


def test_short_source_file_is_an_error() -> None:
    class Liar(io.BytesIO):
        def read(self, n: int | None = -1, /) -> bytes:
            return b""

    with pytest.raises(FormatError):
        apply(Liar(b"abc"), ctrl(3, 0, 0) + b"\0\0\0", 3)


def _mutate(rng: random.Random, data: bytes, edits: int) -> bytes:
    new = bytearray(data)
    for _ in range(edits):
        pos = rng.randrange(len(new) + 1)
        kind = rng.randrange(3)
        if kind == 0 and new:
            new[min(pos, len(new) - 1)] ^= rng.randrange(1, 256)
        elif kind == 1:
            new[pos:pos] = rng.randbytes(rng.randrange(1, 64))
        else:
            del new[pos : pos + rng.randrange(1, 64)]
    return bytes(new)


def test_bsdiff_round_trips() -> None:
    rng = random.Random(11)
    cases = [
        (b"", b""),
        (b"", b"new"),
        (b"old", b""),
        (b"same" * 100, b"same" * 100),
        (bytes(5000), bytes(6000)),
        (bytes(5000), b"\1" * 5000),
        (rng.randbytes(3000), rng.randbytes(3000)),
        (b"ab" * 3000, b"ba" * 3000),
    ]
    for _ in range(150):
        size = rng.randrange(0, 5000)
        old = rng.randbytes(size) if rng.random() < 0.6 else bytes(rng.choices(b"xyz", k=size))
        cases.append((old, _mutate(rng, old, rng.randrange(0, 12))))
    for old, new in cases:
        assert apply(old, bsdiff(old, new), len(new)) == new


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=600), st.integers(0, 2**32))
def test_bsdiff_round_trips_hypothesis(a: bytes, b: bytes, seed: int) -> None:
    new = _mutate(random.Random(seed), a, 3) + b
    assert apply(a, bsdiff(a, new), len(new)) == new


def test_bsdiff_is_fast_and_small_on_similar_megabyte_inputs() -> None:
    rng = random.Random(5)
    old = rng.randbytes(1 << 20)
    new = bytearray(old)
    for off in range(100, len(new), 3072):
        new[off] = (new[off] + 1) & 0xFF
    new[500_000:500_000] = b"inserted" * 100
    del new[800_000:801_000]
    start = time.monotonic()
    patch = bsdiff(old, bytes(new))
    similar_time = time.monotonic() - start
    assert apply(old, patch, len(new)) == bytes(new)
    assert len(lzma.compress(patch)) < 20_000  # vs ~1 MiB for the file itself
    start = time.monotonic()
    unrelated = rng.randbytes(1 << 20)
    assert apply(old, bsdiff(old, unrelated), len(unrelated)) == unrelated
    unrelated_time = time.monotonic() - start
    assert similar_time < 5 and unrelated_time < 10


def test_bsdiff_refuses_oversized_input() -> None:
    big = memoryview(bytes(BSDIFF_MAX_INPUT + 1))
    with pytest.raises(ValueError):
        bsdiff(big, b"x")
    with pytest.raises(ValueError):
        bsdiff(b"x", big)
