"""Property tests for the parsers added with ostree's remaining commands: the delta op
counter (``static-delta show``), cookie jars (``remote list-cookies`` and pulls), dates
(``prune --keep-younger-than``) and tar headers (``export``). Random input may only raise
:class:`PyOstreeError`; what is accepted must be consistent."""

from __future__ import annotations

import contextlib
import io
import tarfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyostree.datespec import parse_date
from pyostree.errors import PyOstreeError
from pyostree.formats import delta as dl
from pyostree.formats import tar
from pyostree.formats.cookies import cookie_header, ostree_entries, parse_jar

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
NOW = 1_795_000_000.0

_OBJECTS = st.lists(st.tuples(st.sampled_from([dl.OBJ_FILE, dl.OBJ_DIRTREE, dl.OBJ_DIRMETA]),
                              st.just("ab" * 32)), max_size=6)


@FUZZ
@given(ops=st.binary(max_size=200), objects=_OBJECTS)
def test_count_ops_random_streams(ops: bytes, objects: list[tuple[int, str]]) -> None:
    try:
        counts = dl.count_ops(ops, objects)
    except PyOstreeError:
        return
    assert len(counts) == len(dl.OP_COUNT_NAMES)
    assert sum(counts) <= len(ops)  # every op takes at least its opcode byte


@FUZZ
@given(sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=5))
def test_count_ops_counts_what_a_builder_wrote(sizes: list[int]) -> None:
    builder = dl.PartBuilder()
    for i, size in enumerate(sizes):
        builder.add_content(f"{i:064x}", 0, 0, 0o100644, (), b"x" * size)
    payload = builder.payload()
    counts = dl.count_ops(payload.ops, builder.objects)
    assert counts == (len(sizes), 0, 0, 0, 0, 0, 0)


_JAR_LINE = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
    ["TRUE", "FALSE", "/", ".example.com", "#HttpOnly_x.test", "0", "99999999999"])),
    max_size=8).map("\t".join)


@FUZZ
@given(lines=st.lists(_JAR_LINE, max_size=6), url_path=st.text(max_size=10))
def test_cookie_jars_random_text(lines: list[str], url_path: str) -> None:
    text = "\n".join(lines)
    with contextlib.suppress(PyOstreeError):
        ostree_entries(text)
    try:
        cookies = parse_jar(text, NOW)
    except PyOstreeError:
        return
    header = cookie_header(cookies, "http://www.example.com/" + url_path.lstrip("/"), NOW)
    assert header is None or (header.isascii() and "\n" not in header)


@FUZZ
@given(text=st.text(max_size=40))
def test_dates_random_text(text: str) -> None:
    try:
        value = parse_date(text, NOW)
    except PyOstreeError:
        return
    assert isinstance(value, int)


@FUZZ
@given(name=st.binary(min_size=1, max_size=300).filter(lambda b: b"\0" not in b),
       link=st.binary(max_size=200).filter(lambda b: b"\0" not in b),
       kind=st.sampled_from([tar.REGTYPE, tar.DIRTYPE, tar.SYMTYPE]),
       size=st.integers(0, 3000), mode=st.integers(0, 0o7777),
       uid=st.integers(0, 2**21 - 1), mtime=st.integers(0, 2**33 - 1))
def test_tar_headers_read_back(name: bytes, link: bytes, kind: bytes, size: int, mode: int,
                               uid: int, mtime: int) -> None:
    """Any member pyostree writes is read back by Python's tarfile as what was meant."""
    size = size if kind == tar.REGTYPE else 0
    link = link if kind == tar.SYMTYPE else b""
    out = tar.member_header(name, typeflag=kind, mode=mode, uid=uid, gid=uid, size=size,
                            mtime=mtime, linkname=link)
    out += b"d" * size + tar.padding(size)
    out += tar.end_of_archive(len(out))
    with tarfile.open(fileobj=io.BytesIO(out), encoding="utf-8",
                      errors="surrogateescape") as tf:
        (member,) = tf.getmembers()
    assert member.name.encode("utf-8", "surrogateescape").rstrip(b"/") == name.rstrip(b"/") \
        or name.rstrip(b"/") == b""
    assert (member.mode, member.uid, member.size, member.mtime) == (mode, uid, size, mtime)
    if kind == tar.SYMTYPE:
        assert member.linkname.encode("utf-8", "surrogateescape") == link
