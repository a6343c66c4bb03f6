"""Property tests: random bytes and mutated real objects fed to every parser. Only pyostree
errors may escape, and whatever is accepted must serialise back to the very same bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyostree import gvariant as gv
from pyostree.errors import PyOstreeError
from pyostree.formats.content import (
    ArchiveInflater,
    FileHeader,
    parse_archive_header,
    parse_file_header,
    parse_ostreemeta,
)
from pyostree.formats.objects import (
    Commit,
    DirMeta,
    DirTree,
    parse_metadata,
    serialize_metadata,
)
from pyostree.gvtext import format_variant, parse_text

from .corehelpers import FIXTURES, metadata_objects

FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

OSTREE_TYPES = [
    "(a{sv}aya(say)sstayay)", "(a(say)a(sayay))", "(uuua(ayay))", "a{sv}", "(uuuusa(ayay))",
    "(tuuuusa(ayay))", "(a(ss)a{sv})", "(a(s(taya{sv}))a{sv})", "(uayttay)", "aay", "as",
    "(yaytt)", "a(uuu)", "v", "ay", "(bsu)", "mv", "a{ss}", "((ty)as)",
]

PARSERS: dict[str, Callable[[bytes], Any]] = {
    "commit": Commit.from_bytes,
    "dirtree": DirTree.from_bytes,
    "dirmeta": DirMeta.from_bytes,
    "metadata": parse_metadata,
    "archive": parse_archive_header,
    "file": parse_file_header,
    "ostreemeta": parse_ostreemeta,
}

REAL_OBJECTS = [p.read_bytes() for p in metadata_objects("archive")]
REAL_OBJECTS += [p.read_bytes()[:400] for p in sorted((FIXTURES / "archive" / "objects")
                                                      .glob("*/*.filez"))]
REAL_OBJECTS += [FileHeader(0, 0, 0o100644, xattrs=((b"user.a\0", b"v"),)).checksum_header(),
                 FileHeader(1, 2, 0o100755, xattrs=((b"user.a\0", b"v"),)).ostreemeta()]


def _only_pyostree_errors(parse: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return parse(data)
    except PyOstreeError:
        return None


def _check_roundtrip(name: str, data: bytes, value: Any) -> None:
    """Anything a strict parser accepts is in normal form: it serialises back identically."""
    if value is None:
        return
    if name in ("commit", "dirtree", "dirmeta"):
        assert value.to_bytes() == data
    elif name == "metadata":
        assert serialize_metadata(value) == data
    elif name == "archive":
        header, end = value
        assert header.archive_header() == data[:end]
    elif name == "file":
        header, end = value
        assert header.checksum_header() == data[:end]


@FUZZ
@given(data=st.binary(max_size=300), type_string=st.sampled_from(OSTREE_TYPES))
def test_gvariant_decode_random_bytes(data: bytes, type_string: str) -> None:
    value = _only_pyostree_errors(lambda d: gv.decode(type_string, d), data)
    if value is not None:
        assert gv.encode(type_string, value) == data
        swapped = gv.byteswap(type_string, value)
        # As bytes: a 'v' may hold a NaN double, which is not equal to itself.
        assert gv.encode(type_string, gv.byteswap(type_string, swapped)) == data
        format_variant(type_string, value)


@FUZZ
@given(data=st.binary(max_size=300), name=st.sampled_from(sorted(PARSERS)))
def test_parsers_random_bytes(data: bytes, name: str) -> None:
    _check_roundtrip(name, data, _only_pyostree_errors(PARSERS[name], data))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(REAL_OBJECTS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 4))]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


@FUZZ
@given(data=mutated(), name=st.sampled_from(sorted(PARSERS)))
def test_parsers_mutated_real_objects(data: bytes, name: str) -> None:
    _check_roundtrip(name, data, _only_pyostree_errors(PARSERS[name], data))


@FUZZ
@given(data=mutated(), type_string=st.sampled_from(OSTREE_TYPES[:6]))
def test_gvariant_decode_mutated_real_objects(data: bytes, type_string: str) -> None:
    value = _only_pyostree_errors(lambda d: gv.decode(type_string, d), data)
    if value is not None:
        assert gv.encode(type_string, value) == data


@FUZZ
@given(body=st.binary(max_size=200), size=st.integers(0, 300),
       split=st.integers(1, 64))
def test_archive_inflater_random_bodies(body: bytes, size: int, split: int) -> None:
    inflater = ArchiveInflater(size)
    try:
        out = b"".join(piece for i in range(0, len(body), split)
                       for piece in inflater.chunks(body[i:i + split]))
        inflater.finish()
    except PyOstreeError:
        return
    assert len(out) == size


@FUZZ
@given(text=st.text(max_size=40))
def test_gvariant_text_parser_random_text(text: str) -> None:
    try:
        variant = parse_text(text)
    except PyOstreeError:
        return
    printed = format_variant(variant.type, variant.value)
    again = parse_text(printed)
    # Compared as serialised bytes: 'nan' parses to a double that is not equal to itself.
    assert again.type == variant.type
    assert gv.encode(again.type, again.value) == gv.encode(variant.type, variant.value)


_BASIC = {
    "y": st.integers(0, 255), "b": st.booleans(), "n": st.integers(-(2**15), 2**15 - 1),
    "q": st.integers(0, 2**16 - 1), "i": st.integers(-(2**31), 2**31 - 1),
    "u": st.integers(0, 2**32 - 1), "x": st.integers(-(2**63), 2**63 - 1),
    "t": st.integers(0, 2**64 - 1), "h": st.integers(-(2**31), 2**31 - 1),
    "d": st.floats(allow_nan=False), "s": st.text(max_size=8).filter(lambda s: "\0" not in s),
}


def _types(depth: int = 0) -> st.SearchStrategy[str]:
    basic = st.sampled_from(sorted(_BASIC))
    if depth >= 3:
        return basic
    inner = _types(depth + 1)
    return st.one_of(
        basic,
        inner.map(lambda t: "a" + t),
        st.just("v"),
        st.lists(inner, min_size=1, max_size=3).map(lambda ts: "(" + "".join(ts) + ")"),
        st.tuples(st.sampled_from(["s", "u", "y", "t"]), inner).map(
            lambda kv: "a{" + kv[0] + kv[1] + "}"),
    )


def _values(type_string: str, depth: int = 0) -> st.SearchStrategy[Any]:
    gtype = gv.parse_type(type_string)
    if gtype.code in _BASIC:
        return _BASIC[gtype.code]
    if gtype.code == "v":
        if depth > 2:
            return st.just(gv.Variant("u", 1))
        return st.sampled_from(["s", "ai", "(ub)", "v"]).flatmap(
            lambda t: _values(t, depth + 1).map(lambda v: gv.Variant(t, v)))
    if gtype.code == "a":
        child = gtype.children[0]
        if child.code == "y":
            return st.binary(max_size=8)
        if child.code == "{":
            key, val = child.children
            return st.dictionaries(_values(key.string, depth + 1),
                                   _values(val.string, depth + 1), max_size=3)
        return st.lists(_values(child.string, depth + 1), max_size=3)
    return st.tuples(*[_values(c.string, depth + 1) for c in gtype.children])


@FUZZ
@given(data=st.data(), type_string=_types())
def test_gvariant_values_roundtrip(data: st.DataObject, type_string: str) -> None:
    """encode/decode, and print/parse in the text format, give the same value back."""
    value = data.draw(_values(type_string))
    raw = gv.encode(type_string, value)
    assert gv.decode(type_string, raw) == value
    assert gv.encode(type_string, gv.decode(type_string, raw)) == raw
    text = format_variant(type_string, value)
    assert parse_text(text, type_string).value == value
    assert gv.byteswap(type_string, gv.byteswap(type_string, value)) == value
