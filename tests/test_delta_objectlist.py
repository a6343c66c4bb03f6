"""Part object lists kept as their 33-byte superblock records (:class:`ObjectList`)."""

from __future__ import annotations

import hashlib
import sys

import pytest

from pyostree.errors import FormatError
from pyostree.formats import delta as D


def pairs(n: int) -> list[tuple[int, str]]:
    types = (D.OBJ_FILE, D.OBJ_DIRTREE, D.OBJ_DIRMETA, D.OBJ_COMMIT)
    return [(types[i % 4], hashlib.sha256(str(i).encode()).hexdigest()) for i in range(n)]


def test_behaves_like_the_tuple_of_pairs() -> None:
    items = pairs(9)
    objs = D.ObjectList.of(items)
    assert len(objs) == 9 and list(objs) == items
    assert objs == tuple(items) and objs == items and objs != items[:-1]
    assert objs[0] == items[0] and objs[-1] == items[-1] and objs[2:5] == tuple(items[2:5])
    with pytest.raises(IndexError):
        objs[9]
    assert D.ObjectList.of(objs) is objs
    assert D.ObjectList(objs.raw) == objs and hash(D.ObjectList(objs.raw)) == hash(objs)
    assert objs.raw == b"".join(bytes([t]) + bytes.fromhex(c) for t, c in items)
    assert len(D.ObjectList.of(())) == 0


def test_rejects_bad_records_and_pairs() -> None:
    with pytest.raises(FormatError, match="multiple of 33"):
        D.ObjectList(b"\x01" * 32)
    with pytest.raises(FormatError, match="object type 7"):
        D.ObjectList(b"\x07" + bytes(32))
    for bad in ([(1, "AB" * 32)], [(9, "ab" * 32)], [(1, "ab" * 31)], [("x",)], "abc"):
        with pytest.raises(ValueError):
            D.ObjectList.of(bad)  # type: ignore[arg-type]


def test_part_headers_round_trip_and_compare() -> None:
    items = pairs(5)
    header = D.PartHeader(0, "ab" * 32, 10, 20, tuple(items))
    assert isinstance(header.objects, D.ObjectList) and header.objects == tuple(items)
    for swap in (False, True):
        assert D.PartHeader.from_value(header.to_value(swap=swap), swap=swap) == header
    assert header == D.PartHeader(0, "ab" * 32, 10, 20, items)
    with pytest.raises(ValueError):
        D.PartHeader(0, "ab" * 32, 10, 20, ((1, "zz"),))


def test_far_smaller_than_tuples_of_strings() -> None:
    items = pairs(1000)
    as_tuples = tuple(items)
    tuple_bytes = sys.getsizeof(as_tuples) + sum(
        sys.getsizeof(p) + sys.getsizeof(p[1]) for p in as_tuples)
    objs = D.ObjectList.of(items)
    assert sys.getsizeof(objs) + sys.getsizeof(objs.raw) < tuple_bytes / 4
