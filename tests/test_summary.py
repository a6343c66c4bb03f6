"""summary, summary.sig and delta indexes: strict parsing, exact bytes, and ostree's own output."""

from __future__ import annotations

import base64
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyostree import gvariant
from pyostree.errors import FormatError
from pyostree.formats.summary import (
    SUMMARY_TYPE,
    DeltaIndex,
    Summary,
    SummaryRef,
    SummarySig,
    build_delta_index,
    build_summary,
    glib_hash_order,
    gvariant_dict,
    validate_delta_name,
)
from pyostree.gvariant import Variant, swap64

OSTREE = shutil.which("ostree")
GPG = shutil.which("gpg")
needs_ostree = pytest.mark.skipif(OSTREE is None, reason="needs the real ostree binary")

A = "a" * 64
B = "b" * 64
C = "c" * 64


def _summary_bytes(refs: list[object], meta: dict[str, Variant]) -> bytes:
    return gvariant.encode(SUMMARY_TYPE, (refs, meta))


def _ref(name: str, csum: bytes = bytes(32), meta: dict[str, Variant] | None = None) -> object:
    return (name, (100, csum, meta or {}))


# ---------------------------------------------------------------------------- unit


def test_build_parse_round_trip_and_properties() -> None:
    s = build_summary(
        {"main": (A, 166, 1577923200, "2.0"), "other/x": (B, 118, 1578009600, None)},
        last_modified=1700000000,
        mode="archive-z2",
        deltas={f"{A}-{B}": C, B: A},
        extra_metadata={"ostree.summary.expires": Variant("t", swap64(1800000000))},
    )
    raw = s.to_bytes()
    parsed = Summary.from_bytes(raw)
    assert parsed == s and parsed.to_bytes() == raw
    assert parsed.last_modified == 1700000000 and parsed.expires == 1800000000
    assert parsed.mode == "archive-z2"
    assert parsed.static_deltas == {f"{A}-{B}": C, B: A}
    assert parsed.indexed_deltas is True and parsed.tombstone_commits is False
    main = parsed.lookup("main")
    assert main is not None and main.checksum_hex == A and main.commit_size == 166
    assert main.timestamp == 1577923200 and main.version == "2.0"
    other = parsed.lookup("other/x")
    assert other is not None and other.version is None and other.checksum == B
    assert parsed.lookup("nope") is None and parsed.lookup("") is None
    assert parsed.collection_id is None and parsed.collection_map == {}


def test_build_skips_remote_refs_and_invalid_dates() -> None:
    s = build_summary({"origin:main": (A, 1, 1, None), "z": (B, 2, 2**62, None)}, last_modified=0)
    assert [r.name for r in s.refs] == ["z"]
    assert s.refs[0].timestamp is None
    assert "ostree.static-deltas" not in s.metadata


@pytest.mark.parametrize(
    ("refs", "why"),
    [
        ([_ref("b"), _ref("a")], "sorted"),
        ([_ref("a"), _ref("a")], "sorted"),
        ([_ref("../etc")], "invalid ref"),
        ([_ref("/abs")], "invalid ref"),
        ([_ref("a/../b")], "invalid ref"),
        ([_ref("")], "invalid ref"),
        ([_ref("a", bytes(31))], "length"),
        ([_ref("a", meta={"ostree.commit.timestamp": Variant("u", 1)})], "type"),
    ],
)
def test_strict_ref_checks(refs: list[object], why: str) -> None:
    with pytest.raises(FormatError, match=why):
        Summary.from_bytes(_summary_bytes(refs, {}))


@pytest.mark.parametrize(
    "meta",
    [
        {"ostree.summary.last-modified": Variant("u", 1)},
        {"ostree.summary.mode": Variant("b", True)},
        {"ostree.static-deltas": Variant("a{sv}", {"zz": Variant("ay", bytes(32))})},
        {"ostree.static-deltas": Variant("a{sv}", {A: Variant("ay", bytes(5))})},
        {"ostree.static-deltas": Variant("a{sv}", {A: Variant("s", "x")})},
        {"ostree.summary.collection-map": Variant("a{sa(s(taya{sv}))}", {"c": [_ref("/x")]})},
    ],
)
def test_strict_metadata_checks(meta: dict[str, Variant]) -> None:
    with pytest.raises(FormatError):
        Summary.from_bytes(_summary_bytes([], meta))


def test_garbage_and_non_normal_form_rejected() -> None:
    good = build_summary({"a": (A, 1, 1, "v")}, last_modified=5).to_bytes()
    for bad in (b"", b"\x00" * 3, good[:-1], good + b"\x00", b"\xff" * 40):
        with pytest.raises(FormatError):
            Summary.from_bytes(bad)


def test_delta_names() -> None:
    assert validate_delta_name(A) == A
    assert validate_delta_name(f"{A}-{B}") == f"{A}-{B}"
    for bad in ("", A[:-1], A.upper(), f"{A}-", f"-{A}", f"{A}-{B}-{C}"):
        with pytest.raises(FormatError):
            validate_delta_name(bad)


def test_delta_index_build_and_parse() -> None:
    idx = build_delta_index({f"{B}-{A}": C, A: B, f"{C}-{A}": A})
    raw = idx.to_bytes()
    again = DeltaIndex.from_bytes(raw)
    assert again.to_bytes() == raw
    assert again.deltas == idx.deltas
    assert set(again.deltas) == {A, f"{B}-{A}", f"{C}-{A}"}
    with pytest.raises(ValueError):
        build_delta_index({A: B, B: C})
    with pytest.raises(ValueError):
        build_delta_index({A: B}, insertion_order=[A, A])
    one = build_delta_index({A: B, f"{C}-{A}": C}, insertion_order=[f"{C}-{A}", A])
    assert one.deltas == {A: B, f"{C}-{A}": C}
    mixed = gvariant.encode(
        "a{sv}",
        {"ostree.static-deltas": Variant("a{sv}", {A: Variant("ay", bytes(32)),
                                                   B: Variant("ay", bytes(32))})},
    )  # fmt: skip
    with pytest.raises(FormatError, match="different targets"):
        DeltaIndex.from_bytes(mixed)


def test_summary_sig() -> None:
    sig = SummarySig.build(gpg=[b"sig1", b"sig2"], sign={"ed25519": [bytes(64)]})
    raw = sig.to_bytes()
    parsed = SummarySig.from_bytes(raw)
    assert parsed.to_bytes() == raw
    assert parsed.gpg_signatures == (b"sig1", b"sig2")
    assert parsed.ed25519_signatures == (bytes(64),)
    assert parsed.signatures("spki") == ()
    bad = gvariant.encode("a{sv}", {"ostree.gpgsigs": Variant("ay", b"x")})
    with pytest.raises(FormatError):
        SummarySig.from_bytes(bad)
    with pytest.raises(ValueError):
        sig.with_signature("other", b"x")


def test_glib_hash_order_basics() -> None:
    # Known order of ostree's own summary keys (checked against real files below).
    keys = [
        "ostree.static-deltas",
        "ostree.summary.last-modified",
        "ostree.summary.mode",
        "ostree.summary.tombstone-commits",
        "ostree.summary.indexed-deltas",
    ]
    assert glib_hash_order(keys) == [
        "ostree.summary.mode",
        "ostree.summary.last-modified",
        "ostree.summary.tombstone-commits",
        "ostree.static-deltas",
        "ostree.summary.indexed-deltas",
    ]
    many = [f"key{i}" for i in range(200)]
    order = glib_hash_order(many)
    assert sorted(order) == sorted(many)  # resizes lose nothing
    assert glib_hash_order(["a", "b", "a"]) == glib_hash_order(["a", "b"])
    assert gvariant_dict([("a", 1), ("b", 2), ("a", 3)]) == {"a": 3, "b": 2}
    assert glib_hash_order(["é", "ü"]) in (["é", "ü"], ["ü", "é"])


# ---------------------------------------------------------------------------- interop


def _ostree(*args: str, env: dict[str, str] | None = None) -> str:
    assert OSTREE is not None
    return subprocess.run(
        [OSTREE, *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def _unmb64(text: str) -> str:
    return base64.b64decode(text.replace("_", "/") + "=").hex()


def _delta_names_in_readdir_order(repo: Path) -> list[str]:
    """What ostree_repo_list_static_delta_names yields: deltas/XX/REST in readdir order."""
    names = []
    for first in os.listdir(repo / "deltas"):
        for rest in os.listdir(repo / "deltas" / first):
            if (repo / "deltas" / first / rest / "superblock").exists():
                names.append("-".join(_unmb64(p) for p in (first + rest).split("-")))
    return names


def _ref_facts(repo: Path, summary: Summary) -> dict[str, tuple[str, int, int | None, str | None]]:
    """Read every ref's commit ourselves (size, timestamp, version) from the loose objects."""
    facts: dict[str, tuple[str, int, int | None, str | None]] = {}
    for ref in _ostree("refs", f"--repo={repo}").split():
        csum = _ostree("rev-parse", f"--repo={repo}", ref)
        data = (repo / "objects" / csum[:2] / f"{csum[2:]}.commit").read_bytes()
        meta, _, _, _, _, timestamp, _, _ = gvariant.decode("(a{sv}aya(say)sstayay)", data)
        version = meta["version"].value if "version" in meta else None
        facts[ref] = (csum, len(data), swap64(timestamp), version)
    assert sorted(facts) == [r.name for r in summary.refs]
    return facts


@pytest.fixture(scope="module")
def real_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if OSTREE is None:
        pytest.skip("needs the real ostree binary")
    base = tmp_path_factory.mktemp("summary")
    repo = base / "repo"
    _ostree("init", f"--repo={repo}", "--mode=archive")
    commits = []
    for i in range(5):
        tree = base / f"t{i}"
        tree.mkdir()
        for j in range(i + 1):
            (tree / f"f{j}").write_text(f"file {j} of tree {i}\n" * (j + 1))
        args = [f"--timestamp=2020-01-0{i + 1}T00:00:00Z", "-b", "main", str(tree)]
        if i % 2 == 0:
            args.insert(0, f"--add-metadata-string=version={i}.0")
        commits.append(_ostree("commit", f"--repo={repo}", *args))
    _ostree("commit", f"--repo={repo}", "-b", "other/x", "--timestamp=2021-06-01T00:00:00Z",
            str(base / "t0"))  # fmt: skip
    _ostree("commit", f"--repo={repo}", "-b", "a-first", "--timestamp=2021-06-02T00:00:00Z",
            "--add-metadata-string=version=1", str(base / "t1"))  # fmt: skip
    for to in commits[1:]:
        _ostree("static-delta", "generate", f"--repo={repo}", "--empty", f"--to={to}")
    for frm, to in itertools.pairwise(commits):
        _ostree("static-delta", "generate", f"--repo={repo}", f"--from={frm}", f"--to={to}")
    _ostree("static-delta", "generate", f"--repo={repo}", f"--from={commits[0]}",
            f"--to={commits[4]}")  # fmt: skip
    _ostree("summary", f"--repo={repo}", "-u", "-m", "foo='bar'", "-m", "zz=uint32 5")
    yield repo


@pytest.mark.interop
@needs_ostree
def test_real_summary_round_trip_and_rebuild(real_repo: Path) -> None:
    raw = (real_repo / "summary").read_bytes()
    summary = Summary.from_bytes(raw)
    assert summary.to_bytes() == raw
    assert summary.mode == "archive-z2"
    assert len(summary.static_deltas) == 9
    main = summary.lookup("main")
    assert main is not None and main.version == "4.0" and main.timestamp == 1578182400

    rebuilt = build_summary(
        _ref_facts(real_repo, summary),
        last_modified=summary.last_modified or 0,
        mode="archive-z2",
        deltas=[(n, summary.static_deltas[n]) for n in _delta_names_in_readdir_order(real_repo)],
        extra_metadata={"foo": Variant("s", "bar"), "zz": Variant("u", 5)},
    )
    assert rebuilt.to_bytes() == raw


@pytest.mark.interop
@needs_ostree
def test_real_delta_indexes_round_trip_and_rebuild(real_repo: Path) -> None:
    summary = Summary.from_bytes((real_repo / "summary").read_bytes())
    by_target: dict[str, dict[str, str]] = {}
    for name, digest in summary.static_deltas.items():
        by_target.setdefault(name.rsplit("-", 1)[-1], {})[name] = digest
    index_files = sorted((real_repo / "delta-indexes").rglob("*.index"))
    assert len(index_files) == len(by_target) == 4
    for path in index_files:
        raw = path.read_bytes()
        index = DeltaIndex.from_bytes(raw)
        assert index.to_bytes() == raw
        target = _unmb64(path.parent.name + path.name[: -len(".index")])
        assert index.deltas == by_target[target]
        # ostree's insertion order is arbitrary (see build_delta_index); one order matches.
        names = list(by_target[target])
        rebuilt = {
            build_delta_index(by_target[target], insertion_order=order).to_bytes()
            for order in itertools.permutations(names)
        }
        assert raw in rebuilt
        if len(rebuilt) == 1:
            assert build_delta_index(by_target[target]).to_bytes() == raw


@pytest.mark.interop
@needs_ostree
def test_many_metadata_keys_force_hash_table_growth(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _ostree("init", f"--repo={repo}", "--mode=archive")
    _ostree("config", f"--repo={repo}", "set", "core.tombstone-commits", "true")
    extra = [arg for i in range(40) for arg in ("-m", f"x.key-{i}=uint64 {i}")]
    _ostree("summary", f"--repo={repo}", "-u", *extra)
    raw = (repo / "summary").read_bytes()
    summary = Summary.from_bytes(raw)
    assert summary.refs == () and summary.tombstone_commits is True
    rebuilt = build_summary(
        {},
        last_modified=summary.last_modified or 0,
        mode="archive-z2",
        tombstone_commits=True,
        extra_metadata={f"x.key-{i}": Variant("t", i) for i in range(40)},
    )
    assert rebuilt.to_bytes() == raw


@pytest.mark.interop
@needs_ostree
@pytest.mark.skipif(GPG is None, reason="needs gpg")
def test_real_summary_sig(real_repo: Path, tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home), "OSTREE_DUMMY_SIGN_ENABLED": "1"}
    for uid in ("One <one@example.com>", "Two <two@example.com>"):
        subprocess.run(
            [GPG or "gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519",
             "sign", "never"],
            check=True, capture_output=True, env=env,
        )  # fmt: skip
    listing = subprocess.run(
        [GPG or "gpg", "--list-keys", "--with-colons"], check=True, capture_output=True,
        text=True, env=env,
    ).stdout  # fmt: skip
    fprs = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")]
    repo = tmp_path / "repo"
    shutil.copytree(real_repo, repo, symlinks=True)
    _ostree(
        "summary", f"--repo={repo}", "-u", f"--gpg-homedir={home}",
        *[f"--gpg-sign={f}" for f in fprs], "--sign-type=dummy", "--sign=k1", "--sign=k2",
        env=env,
    )  # fmt: skip
    raw = (repo / "summary.sig").read_bytes()
    sig = SummarySig.from_bytes(raw)
    assert sig.to_bytes() == raw
    assert len(sig.gpg_signatures) == 2
    assert sig.signatures("dummy") == (b"k1", b"k2")
    rebuilt = SummarySig.build(gpg=sig.gpg_signatures, sign={"dummy": sig.signatures("dummy")})
    assert rebuilt.to_bytes() == raw
    # The GPG signatures cover the exact summary bytes.
    (tmp_path / "sig.bin").write_bytes(sig.gpg_signatures[0])
    subprocess.run(
        [GPG or "gpg", "--verify", str(tmp_path / "sig.bin"), str(repo / "summary")],
        check=True, capture_output=True, env=env,
    )  # fmt: skip


def test_summary_ref_is_frozen() -> None:
    ref = SummaryRef("a", 1, A)
    with pytest.raises(AttributeError):
        ref.name = "b"  # type: ignore[misc]
