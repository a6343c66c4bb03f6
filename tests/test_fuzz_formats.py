"""Property tests for the parsers test_core_fuzz.py does not cover: summaries, delta
superblocks and parts, key files, BLS entries, origins, remotes, GPG keyrings and
signatures, ed25519 key files, varints and bspatch.

Every parser gets random input *and* mutations (bit flips, byte changes, insertions,
deletions, truncations, splices) of real valid input built with pyostree itself. Only
:class:`PyOstreeError` may escape, and where a format round-trips, whatever is accepted must
serialise back to the very same bytes.

``PYOSTREE_FUZZ_EXAMPLES=N`` runs N examples per test (default: a few seconds in all);
``--hypothesis-show-statistics`` reports how many inputs each parser saw.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyostree import gpg
from pyostree.errors import PyOstreeError
from pyostree.formats import delta as dl
from pyostree.formats.bls import (
    BootEntry,
    Kargs,
    ostree_entry_filename,
    parse_entry_filename,
)
from pyostree.formats.bspatch import bsdiff, bspatch
from pyostree.formats.keyfile import KeyFile
from pyostree.formats.summary import (
    DeltaIndex,
    Summary,
    SummarySig,
    build_delta_index,
    build_summary,
)
from pyostree.formats.varint import decode_varint, encode_varint
from pyostree.gvariant import Variant
from pyostree.remotes import Remote
from pyostree.sign import parse_key_file, parse_public_key_file

from .corehelpers import FIXTURES

EXAMPLES = int(os.environ.get("PYOSTREE_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GPG_DIR = Path(__file__).parent / "data" / "gpg"

T = TypeVar("T")


# ---------------------------------------------------------------------------- mutations


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A real seed with one to eight random edits."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "splice":
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(other)))
            data[pos:pos] = other[start : start + draw(st.integers(1, 64))]
    return bytes(data)


def inputs(seeds: list[bytes], max_size: int = 2048) -> st.SearchStrategy[bytes]:
    """Random bytes, or mutations of the seeds (and the unmodified seeds themselves)."""
    return st.one_of(st.binary(max_size=max_size), mutated(seeds), st.sampled_from(seeds))


def texts(seeds: list[str]) -> st.SearchStrategy[str]:
    """Random text, or mutated seeds decoded leniently."""
    as_bytes = [s.encode() for s in seeds]
    return st.one_of(
        st.text(max_size=512),
        st.text(alphabet=st.sampled_from(list("[]=#;\\ \t\r\n\"'abcdefz019-_.+/:@")), max_size=256),
        mutated(as_bytes).map(lambda b: b.decode("utf-8", "replace")),
    )


def only_pyostree_errors(parse: Callable[[], T]) -> T | None:
    try:
        return parse()
    except PyOstreeError:
        return None


# ---------------------------------------------------------------------------- seeds

COMMIT_PATH = sorted((FIXTURES / "archive" / "objects").glob("*/*.commit"))[0]
COMMIT = COMMIT_PATH.read_bytes()
COMMIT_CSUM = COMMIT_PATH.parent.name + COMMIT_PATH.name.split(".")[0]
assert hashlib.sha256(COMMIT).hexdigest() == COMMIT_CSUM
FROM_CSUM = "ab" * 32
COMMITMETA = sorted((FIXTURES / "archive" / "objects").glob("*/*.commitmeta"))[0].read_bytes()


def _part(compression: int) -> tuple[bytes, dl.PartHeader, bytes]:
    builder = dl.PartBuilder()
    builder.add_metadata(dl.OBJ_COMMIT, COMMIT_CSUM, COMMIT)
    builder.add_content("cd" * 32, 0, 0, 0o100644, [(b"user.a\0", b"v")], b"hello world\n")
    builder.add_content("ef" * 32, 0, 0, 0o120777, [], b"target")
    builder.open_file("12" * 32, 1000, 1000, 0o100755, [], 10)
    builder.write_blob(b"01234")
    builder.write_source("34" * 32, 3, 5)
    builder.close_file()
    builder.add_bsdiff("56" * 32, 0, 0, 0o100644, [], 12, "78" * 32,
                       bsdiff(b"hello world\n", b"hello there\n"))
    part_file, header = builder.finish(compression, preset=0)
    return part_file, header, builder.payload().to_bytes()


PART_XZ, HEADER_XZ, PAYLOAD = _part(dl.COMPRESSION_XZ)
PART_RAW, HEADER_RAW, _ = _part(dl.COMPRESSION_NONE)
SUPERBLOCKS = [
    dl.DeltaSuperblock.build(from_checksum=None, to_checksum=COMMIT_CSUM, commit=COMMIT,
                             parts=[HEADER_XZ], timestamp=1704067200).to_bytes(),
    dl.DeltaSuperblock.build(
        from_checksum=FROM_CSUM, to_checksum=COMMIT_CSUM, commit=COMMIT,
        parts=[HEADER_RAW, HEADER_XZ],
        fallbacks=[dl.Fallback(objtype=dl.OBJ_FILE, checksum="9a" * 32,
                               compressed_size=10, uncompressed_size=20)],
        timestamp=1704067200, inline_parts=[PART_RAW, PART_XZ], commitmeta=COMMITMETA,
        user_metadata={"user.key": Variant("s", "value")},
    ).to_bytes(),
]
SIGNED_SUPERBLOCKS = [
    dl.wrap_signed_superblock(SUPERBLOCKS[0], {"ostree.sign.ed25519": [b"s" * 64]}),
    dl.wrap_signed_superblock(SUPERBLOCKS[1], {"ostree.sign.ed25519": [b"s" * 64, b"t" * 64],
                                               "ostree.sign.dummy": [b"x"]}),
]

DELTA_NAMES = {
    dl.delta_name(None, COMMIT_CSUM): "11" * 32,
    dl.delta_name(FROM_CSUM, COMMIT_CSUM): "22" * 32,
}
SUMMARIES = [
    build_summary({"os/stable": (COMMIT_CSUM, len(COMMIT), 1704067200, "1.0"),
                   "os/testing": (FROM_CSUM, 1234, None, None),
                   "remote:skipped": (FROM_CSUM, 1, 1, None)},
                  last_modified=1704067300, mode="archive-z2", deltas=DELTA_NAMES,
                  collection_id="org.example.Os",
                  extra_metadata={"xa.title": Variant("s", "x")}).to_bytes(),
    build_summary({}, last_modified=0).to_bytes(),
]
DELTA_INDEXES = [build_delta_index(DELTA_NAMES).to_bytes(), build_delta_index({}).to_bytes()]
GPG_SIGS = [(GPG_DIR / name).read_bytes() for name in ("sig-good.gpg", "sig-rsa.gpg")]
SUMMARY_SIGS = [
    SummarySig.build(gpg=GPG_SIGS, sign={"ed25519": [b"e" * 64]}).to_bytes(),
    SummarySig.build().to_bytes(),
]

KEYFILES = [
    '[core]\nrepo_version=1\nmode=archive-z2\n\n[remote "origin"]\nurl=http://127.0.0.1/repo\n'
    "gpg-verify=false\n# comment\nbranches=a;b\\;c;\nxa.name[de]=Wert\\sx\\n\n",
    "[origin]\nrefspec=origin:os/stable\n\n[libostree-transient]\npinned=true\n",
    "[origin]\nrefspec=os/stable\nunlocked=hotfix\noverride-commit=" + COMMIT_CSUM + "\n",
    "\n  # leading\r\n[g]\r\n k = v \r\nnofinalnewline=1",
]
REMOTE_KEYS = [
    "url", "contenturl", "metalink", "gpg-verify", "gpg-verify-summary", "gpgkeypath",
    "sign-verify", "sign-verify-summary", "verification-ed25519-key",
    "verification-ed25519-file", "tls-ca-path", "tls-client-cert-path", "tls-client-key-path",
    "tls-permissive", "proxy", "http2", "branches", "collection-id", "unconfigured-state",
    "custom-backend", "xa.title",
]
REMOTE_VALUES = [
    "http://127.0.0.1:8080/repo", "mirrorlist=http://127.0.0.1/list", "file:///srv/repo",
    "true", "false", "1", "0", "yes", "ed25519", "ed25519;dummy", "a;b\\;c;", "/etc/k.gpg;/x",
    "", "\\", "\\s\\t\\n\\r\\\\", "\\x", "org.example.Os", "ftp://x",
]

BOOT_ENTRIES = [
    BootEntry.build(title="Test OS 1.0 (ostree:0)", version="2",
                    options="root=/dev/vda1 rw quiet splash init=/x ostree=/ostree/boot.1/testos/"
                    + COMMIT_CSUM + "/0", linux="/ostree/testos-" + COMMIT_CSUM + "/vmlinuz-5.0",
                    initrd="/ostree/testos-x/initramfs-5.0.img", devicetree="/dtb/x.dtb",
                    overlay_initrds=["/ostree/initramfs-overlays/a.img"],
                    extra=[("fdtdir", "/dtb")]).to_text(),
    "# comment\n\ntitle  spaced\nversion\t1\nnovalue\noptions a=\"b c\" d\n",
]
KARGS = ['root=UUID=1234 rw quiet "x=a b" y="c d" e=\'f\' --', "a= =b === \"\" '' \t\n z",
         "console=ttyS0,115200 init=/sbin/init ostree=/ostree/boot.1/os/x/0"]
ENTRY_NAMES = [ostree_entry_filename(1, "testos"), ostree_entry_filename(12, None),
               ostree_entry_filename(3, "os-x", 2, 1), ostree_entry_filename(0, "a", 5)]
ED25519_KEYFILES = [
    "# trusted\nIIeyt9gjjNmGN6d3V6NmmC4nsu0ZvHBZkMmpSmu9qYs=\n\n  "
    "6nNbWkXa8E2zHkRfA6P2YbKS3FUlvSNmbFU1e2KwbDw=  \n",
    "ZmFrZQ==\n#x\n",
]


# ---------------------------------------------------------------------------- summary


@FUZZ
@given(inputs(SUMMARIES, 4096))
def test_summary(data: bytes) -> None:
    summary = only_pyostree_errors(lambda: Summary.from_bytes(data))
    if summary is not None:
        assert summary.to_bytes() == data
        for prop in ("refs", "last_modified", "expires", "static_deltas", "mode", "collection_id",
                     "collection_map"):
            only_pyostree_errors(lambda p=prop: getattr(summary, p))  # type: ignore[misc]


@FUZZ
@given(inputs(DELTA_INDEXES))
def test_delta_index(data: bytes) -> None:
    index = only_pyostree_errors(lambda: DeltaIndex.from_bytes(data))
    if index is not None:
        assert index.to_bytes() == data
        assert isinstance(index.deltas, dict)


@FUZZ
@given(inputs(SUMMARY_SIGS, 4096))
def test_summary_sig(data: bytes) -> None:
    sig = only_pyostree_errors(lambda: SummarySig.from_bytes(data))
    if sig is not None:
        assert sig.to_bytes() == data
        assert all(isinstance(s, bytes) for s in sig.gpg_signatures + sig.ed25519_signatures)


# ---------------------------------------------------------------------------- deltas


@FUZZ
@given(inputs(SUPERBLOCKS + SIGNED_SUPERBLOCKS, 8192))
def test_delta_superblock(data: bytes) -> None:
    sb = only_pyostree_errors(lambda: dl.DeltaSuperblock.from_bytes(data))
    if sb is not None:
        assert sb.to_bytes() == data


@FUZZ
@given(inputs(SIGNED_SUPERBLOCKS + SUPERBLOCKS, 8192))
def test_unwrap_signed_superblock(data: bytes) -> None:
    result = only_pyostree_errors(lambda: dl.unwrap_signed_superblock(data))
    if result is not None:
        superblock, sigs = result
        assert dl.wrap_signed_superblock(superblock, sigs) == data
        only_pyostree_errors(lambda: dl.DeltaSuperblock.from_bytes(superblock))


@FUZZ
@given(inputs([PAYLOAD], 4096))
def test_part_payload(data: bytes) -> None:
    payload = only_pyostree_errors(lambda: dl.PartPayload.from_bytes(data))
    if payload is not None:
        assert payload.to_bytes() == data


@FUZZ
@given(inputs([PART_XZ, PART_RAW], 4096), st.sampled_from([0, 1, 64, 4096, 1 << 20]))
def test_decompress_part(data: bytes, max_output: int) -> None:
    out = only_pyostree_errors(lambda: dl.decompress_part(data, max_output=max_output))
    if out is not None:
        assert len(out) <= max_output


@FUZZ
@given(inputs([PART_XZ, PART_RAW], 4096), st.booleans(), st.booleans())
def test_open_part(data: bytes, verify: bool, stream: bool) -> None:
    import io

    header = HEADER_XZ if data[:1] == b"x" else HEADER_RAW
    source: Any = io.BytesIO(data) if stream else data
    payload = only_pyostree_errors(
        lambda: dl.open_part(source, header, verify_checksum=verify, max_output=8192))
    if payload is not None:
        if verify:
            assert data in (PART_XZ, PART_RAW)
        assert isinstance(payload.ops, bytes)


# ---------------------------------------------------------------------------- key files


@FUZZ
@given(texts(KEYFILES))
def test_keyfile(text: str) -> None:
    kf = only_pyostree_errors(lambda: KeyFile.parse(text))
    if kf is None:
        return
    assert kf.to_text() == text
    for group in kf.groups():
        for key in kf.keys(group):
            only_pyostree_errors(lambda g=group, k=key: kf.get(g, k))  # type: ignore[misc]
            only_pyostree_errors(lambda g=group, k=key: kf.get_bool(g, k))  # type: ignore[misc]
            only_pyostree_errors(lambda g=group, k=key: kf.get_int(g, k))  # type: ignore[misc]
            only_pyostree_errors(lambda g=group, k=key: kf.get_list(g, k))  # type: ignore[misc]


@FUZZ
@given(texts(KEYFILES[1:3]))
def test_origin(text: str) -> None:
    """What the sysroot reads from a deployment's ``.origin``."""
    kf = only_pyostree_errors(lambda: KeyFile.parse(text))
    if kf is None:
        return
    only_pyostree_errors(lambda: kf.get("origin", "refspec"))
    only_pyostree_errors(lambda: kf.get("origin", "override-commit"))
    only_pyostree_errors(lambda: kf.get_raw("origin", "unlocked"))
    only_pyostree_errors(lambda: kf.get_bool("libostree-transient", "pinned"))


@FUZZ
@given(st.dictionaries(st.sampled_from(REMOTE_KEYS),
                       st.one_of(st.sampled_from(REMOTE_VALUES), st.text(max_size=40)),
                       max_size=10),
       st.text(max_size=12))
def test_remote_from_keyfile_group(mapping: dict[str, str], name: str) -> None:
    remote = only_pyostree_errors(lambda: Remote.from_keyfile_group(name or "r", mapping))
    if remote is not None:
        assert remote.options == mapping
        for key in mapping:
            only_pyostree_errors(lambda k=key: remote.get_option(k))  # type: ignore[misc]


@FUZZ
@given(texts([KEYFILES[0]]))
def test_remote_from_parsed_config(text: str) -> None:
    kf = only_pyostree_errors(lambda: KeyFile.parse(text))
    if kf is None:
        return
    for group in kf.groups():
        items = only_pyostree_errors(lambda g=group: kf.items(g))  # type: ignore[misc]
        if items is not None:
            only_pyostree_errors(lambda i=items: Remote.from_keyfile_group("origin", i))  # type: ignore[misc]


# ---------------------------------------------------------------------------- BLS


@FUZZ
@given(inputs([e.encode() for e in BOOT_ENTRIES], 1024))
def test_boot_entry(data: bytes) -> None:
    entry = only_pyostree_errors(lambda: BootEntry.from_bytes(data))
    if entry is not None:
        # items are what libostree sees; writing them back and reading again is stable
        assert BootEntry.parse(entry.to_text()) == entry
        for key in ("title", "options", "linux", "initrd"):
            entry.get(key)
        only_pyostree_errors(lambda: Kargs.parse(entry.get("options")))


@FUZZ
@given(texts(KARGS))
def test_kargs(text: str) -> None:
    kargs = only_pyostree_errors(lambda: Kargs.parse(text))
    if kargs is not None:
        again = Kargs.parse(kargs.to_string())
        assert again.to_string() == kargs.to_string()


@FUZZ
@given(texts(ENTRY_NAMES))
def test_parse_entry_filename(name: str) -> None:
    parsed = only_pyostree_errors(lambda: parse_entry_filename(name))
    if parsed is not None:
        assert parse_entry_filename(ostree_entry_filename(
            parsed.version, parsed.osname, parsed.tries_left, parsed.tries_done)) == parsed


# ---------------------------------------------------------------------------- trust

GPG_KEYRINGS = [(GPG_DIR / n).read_bytes() for n in
                ("good.asc", "rsa.asc", "subrev.asc", "trusted-ostree.gpg")]
GOOD_KEYRING = gpg.Keyring.from_bytes(GPG_KEYRINGS[0] + GPG_KEYRINGS[1])
SIGNED_DATA = (GPG_DIR / "data.bin").read_bytes()
NOW = datetime(2025, 1, 1, tzinfo=UTC)
GPG_SLOW = settings(FUZZ, max_examples=max(10, EXAMPLES // 3))  # pgpy is slow


@GPG_SLOW
@given(inputs(GPG_KEYRINGS, 4096))
def test_gpg_keyring(data: bytes) -> None:
    only_pyostree_errors(lambda: gpg.Keyring.from_bytes(data))


@GPG_SLOW
@given(st.lists(inputs([*GPG_SIGS, (GPG_DIR / "sig-unknown.gpg").read_bytes()], 1024),
                min_size=1, max_size=3))
def test_gpg_inspect_detached(signatures: list[bytes]) -> None:
    """Garbage signatures are reported as bad, never raised; only the real ones verify."""
    result = gpg.inspect_detached(GOOD_KEYRING, SIGNED_DATA, signatures, now=NOW)
    if not result.valid:
        with pytest.raises(PyOstreeError):
            gpg.verify_detached(GOOD_KEYRING, SIGNED_DATA, signatures, now=NOW)


@FUZZ
@given(st.one_of(inputs([k.encode() for k in ED25519_KEYFILES], 512),
                 texts(ED25519_KEYFILES)))
def test_ed25519_key_file(data: bytes | str) -> None:
    keys = only_pyostree_errors(lambda: parse_key_file(data))
    if keys is not None:
        assert all(k and not k.startswith("#") and k == k.strip() for k in keys)
    public = only_pyostree_errors(lambda: parse_public_key_file(data))
    if public is not None:
        assert all(len(k) == 32 for k in public)


# ---------------------------------------------------------------------------- varint, bspatch


@FUZZ
@given(inputs([encode_varint(v) for v in (0, 1, 127, 128, 300, 2**32, 2**63, 2**64 - 1)], 32),
       st.integers(0, 40))
def test_decode_varint(data: bytes, pos: int) -> None:
    result = only_pyostree_errors(lambda: decode_varint(data, pos))
    if result is not None:
        value, end = result
        assert 0 <= value < 2**64
        assert pos < end <= len(data)


OLD = bytes(range(256)) * 2
NEW = OLD[:100] + b"inserted" + OLD[120:400] + bytes(50)
PATCHES = [bsdiff(OLD, NEW), bsdiff(b"", b"abc"), bsdiff(OLD, b"")]


@FUZZ
@given(inputs(PATCHES, 1024), st.sampled_from([0, 3, len(NEW), 4096]))
def test_bspatch(patch: bytes, new_size: int) -> None:
    out: list[bytes] = []

    def write(chunk: bytes) -> None:
        out.append(bytes(chunk))

    if only_pyostree_errors(lambda: bspatch(OLD, patch, new_size, write)) is None and (
        sum(map(len, out)) != new_size
    ):
        return  # refused (possibly after writing part of the output)
    assert sum(map(len, out)) == new_size


def test_seeds_are_valid() -> None:
    """The seeds themselves parse (otherwise the mutations would test nothing)."""
    for s in SUMMARIES:
        assert Summary.from_bytes(s).to_bytes() == s
    for s in DELTA_INDEXES:
        DeltaIndex.from_bytes(s)
    for s in SUMMARY_SIGS:
        SummarySig.from_bytes(s)
    for s in SUPERBLOCKS:
        assert dl.DeltaSuperblock.from_bytes(s).to_bytes() == s
    for s in SIGNED_SUPERBLOCKS:
        assert dl.unwrap_signed_superblock(s) is not None
    assert dl.PartPayload.from_bytes(PAYLOAD).to_bytes() == PAYLOAD
    assert dl.open_part(PART_XZ, HEADER_XZ).to_bytes() == PAYLOAD
    assert dl.open_part(PART_RAW, HEADER_RAW).to_bytes() == PAYLOAD
    for text in KEYFILES:
        assert KeyFile.parse(text).to_text() == text
    for name in ENTRY_NAMES:
        parse_entry_filename(name)
    assert gpg.inspect_detached(GOOD_KEYRING, SIGNED_DATA, GPG_SIGS[:1], now=NOW).valid
    assert len(parse_public_key_file(ED25519_KEYFILES[0])) == 2
    out: list[bytes] = []
    bspatch(OLD, PATCHES[0], len(NEW), out.append)
    assert b"".join(out) == NEW


def test_mutated_strategy_changes_the_seed() -> None:
    """Guard: the mutation strategy really produces different bytes."""
    seen = set()

    @settings(max_examples=30, database=None)
    @given(mutated([b"0123456789" * 4]))
    def run(data: bytes) -> None:
        seen.add(data)

    run()
    assert len(seen) > 5


def test_part_payload_rejects_non_normal_framing() -> None:
    """257 zero bytes frame an empty payload with 251 bytes of ops using 2-byte offsets; the
    normal form of that value is 254 bytes with 1-byte offsets, and gvariant.decode refuses
    it. A strict parser must refuse it too (or re-serialise it identically)."""
    data = bytes(257)
    with pytest.raises(PyOstreeError):
        dl.PartPayload.from_bytes(data)
