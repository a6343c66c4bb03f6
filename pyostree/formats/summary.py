"""The repository ``summary``, its ``summary.sig`` and the per-target delta indexes.

* ``summary`` is ``(a(s(taya{sv}))a{sv})``: refs sorted by name with (commit size, binary
  checksum, metadata), then the repository metadata (reference §3.3).
* ``summary.sig`` is ``a{sv}`` with ``ostree.gpgsigs`` and ``ostree.sign.<engine>`` (``aay``).
* ``delta-indexes/XX/REST.index`` is ``a{sv}`` with ``ostree.static-deltas`` (§3.4).

libostree builds every ``a{sv}`` here with ``GVariantDict``, whose output order is the
iteration order of a GLib ``GHashTable``. :func:`glib_hash_order` reproduces that order, so
:func:`build_summary`, :func:`build_delta_index` and :meth:`SummarySig.with_signature` give
the very bytes ``ostree summary -u`` (2022.7, GLib 2.74) writes.

Pure: no file I/O.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from .. import gvariant
from ..core import checksum_from_bytes, checksum_to_bytes, validate_ref
from ..errors import FormatError
from ..gvariant import Variant, swap64

__all__ = [
    "KEY_STATIC_DELTAS",
    "SUMMARY_TYPE",
    "DeltaIndex",
    "Summary",
    "SummaryRef",
    "SummarySig",
    "build_delta_index",
    "build_summary",
    "glib_hash_order",
    "gvariant_dict",
    "validate_delta_name",
]

SUMMARY_TYPE = "(a(s(taya{sv}))a{sv})"
_REFS_TYPE = "a(s(taya{sv}))"

KEY_STATIC_DELTAS = "ostree.static-deltas"
KEY_LAST_MODIFIED = "ostree.summary.last-modified"
KEY_EXPIRES = "ostree.summary.expires"
KEY_MODE = "ostree.summary.mode"
KEY_TOMBSTONE_COMMITS = "ostree.summary.tombstone-commits"
KEY_INDEXED_DELTAS = "ostree.summary.indexed-deltas"
KEY_COLLECTION_ID = "ostree.summary.collection-id"
KEY_COLLECTION_MAP = "ostree.summary.collection-map"
KEY_COMMIT_TIMESTAMP = "ostree.commit.timestamp"
KEY_COMMIT_VERSION = "ostree.commit.version"
KEY_GPGSIGS = "ostree.gpgsigs"
SIGN_KEY_PREFIX = "ostree.sign."

_SUMMARY_META_TYPES = {
    KEY_STATIC_DELTAS: "a{sv}",
    KEY_LAST_MODIFIED: "t",
    KEY_EXPIRES: "t",
    KEY_MODE: "s",
    KEY_TOMBSTONE_COMMITS: "b",
    KEY_INDEXED_DELTAS: "b",
    KEY_COLLECTION_ID: "s",
    KEY_COLLECTION_MAP: "a{sa(s(taya{sv}))}",
}
_REF_META_TYPES = {KEY_COMMIT_TIMESTAMP: "t", KEY_COMMIT_VERSION: "s"}
#: g_date_time_new_from_unix_utc() refuses times after 9999-12-31T23:59:59Z.
_MAX_DATETIME = 253402300799
_DELTA_NAME_RE = re.compile(r"(?:[0-9a-f]{64}-)?[0-9a-f]{64}")

# ---------------------------------------------------------------------------- GLib hash order

_PRIME_MOD = (
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521,
    131071, 262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393,
    67108859, 134217689, 268435399, 536870909, 1073741789, 2147483647,
)  # fmt: skip
_M32 = 0xFFFFFFFF
_MIN_SHIFT = 3


def _g_str_hash(key: str) -> int:
    """GLib's ``g_str_hash`` (djb2 over *signed* chars)."""
    h = 5381
    for b in key.encode("utf-8"):
        h = (h * 33 + (b - 256 if b >= 0x80 else b)) & _M32
    return h


def glib_hash_order(keys: Iterable[str]) -> list[str]:
    """The iteration order of a GLib 2.74 ``GHashTable`` (``g_str_hash``) after inserting
    ``keys`` in this order. A repeated key keeps its first slot.

    Mirrors ``ghash.c``: open addressing with quadratic probing on ``(hash * 11) % prime``,
    growth when the table is 15/16 full, and ``resize_map``'s in-place re-insertion.
    """
    shift = _MIN_SHIFT
    size, mod, mask = 1 << shift, _PRIME_MOD[shift], (1 << shift) - 1
    hashes = [0] * size
    slots: list[str | None] = [None] * size
    nnodes = noccupied = 0

    def home(h: int) -> int:
        return ((h * 11) & _M32) % mod

    for key in keys:
        h = _g_str_hash(key)
        if h < 2:
            h = 2
        i, step = home(h), 0
        while hashes[i] != 0 and not (hashes[i] == h and slots[i] == key):
            step += 1
            i = (i + step) & mask
        if hashes[i] != 0:
            continue  # already present: the value changes, the slot does not
        hashes[i], slots[i] = h, key
        nnodes += 1
        noccupied += 1
        if (size > nnodes * 4 and size > 1 << _MIN_SHIFT) or size <= noccupied + noccupied // 16:
            old_size = size
            n, shift = int(nnodes * 1.333), 0
            while n:
                shift += 1
                n >>= 1
            shift = max(shift, _MIN_SHIFT)
            size, mod, mask = 1 << shift, _PRIME_MOD[shift], (1 << shift) - 1
            if size > old_size:
                hashes += [0] * (size - old_size)
                slots += [None] * (size - old_size)
            moved = [False] * max(size, old_size)
            for j in range(old_size):
                node_hash = hashes[j]
                if node_hash < 2:
                    hashes[j] = 0
                    continue
                if moved[j]:
                    continue
                hashes[j] = 0
                carried, slots[j] = slots[j], None
                while True:
                    dest, step = home(node_hash), 0
                    while moved[dest]:
                        step += 1
                        dest = (dest + step) & mask
                    moved[dest] = True
                    replaced = hashes[dest]
                    hashes[dest] = node_hash
                    if replaced < 2:
                        slots[dest] = carried
                        break
                    node_hash = replaced
                    carried, slots[dest] = slots[dest], carried
            if size < old_size:
                del hashes[size:], slots[size:]
            noccupied = nnodes
    return [k for h, k in zip(hashes, slots, strict=True) if h >= 2 and k is not None]


_T = TypeVar("_T")


def gvariant_dict(pairs: Iterable[tuple[str, _T]]) -> dict[str, _T]:
    """What ``g_variant_dict_end`` yields after these inserts: last value wins, hash order."""
    values: dict[str, _T] = {}
    sequence: list[str] = []
    for key, value in pairs:
        values[key] = value
        sequence.append(key)
    return {key: values[key] for key in glib_hash_order(sequence)}


# ---------------------------------------------------------------------------- validation


def validate_delta_name(name: str) -> str:
    """``TO`` or ``FROM-TO`` in lowercase hex."""
    if not _DELTA_NAME_RE.fullmatch(name):
        raise FormatError(f"invalid static delta name {name!r}")
    return name


def _check_types(meta: Mapping[str, Any], types: Mapping[str, str], what: str) -> None:
    for key, expected in types.items():
        if key in meta and meta[key].type != expected:
            raise FormatError(f"{what} key {key!r} has type {meta[key].type!r}, not {expected!r}")


def _parse_deltas(value: Mapping[str, Variant], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, digest in value.items():
        validate_delta_name(name)
        if digest.type != "ay":
            raise FormatError(f"{what}: digest of delta {name} is not 'ay'")
        out[name] = checksum_from_bytes(digest.value)
    return out


def _deltas_variant(deltas: Iterable[tuple[str, str]]) -> Variant:
    checked = ((validate_delta_name(n), Variant("ay", checksum_to_bytes(d))) for n, d in deltas)
    return Variant("a{sv}", gvariant_dict(checked))


# ---------------------------------------------------------------------------- summary


@attrs.frozen
class SummaryRef:
    """One ref of the summary: name, commit size, commit checksum (hex) and metadata."""

    name: str
    commit_size: int
    checksum_hex: str
    metadata: dict[str, Variant] = attrs.field(factory=dict)

    @property
    def checksum(self) -> str:
        return self.checksum_hex

    @property
    def timestamp(self) -> int | None:
        """``ostree.commit.timestamp`` (stored big-endian) as Unix seconds."""
        v = self.metadata.get(KEY_COMMIT_TIMESTAMP)
        return swap64(v.value) if v is not None else None

    @property
    def version(self) -> str | None:
        v = self.metadata.get(KEY_COMMIT_VERSION)
        return str(v.value) if v is not None else None

    def _to_value(self) -> tuple[str, tuple[int, bytes, dict[str, Variant]]]:
        return (self.name, (self.commit_size, checksum_to_bytes(self.checksum_hex), self.metadata))


def _parse_refs(entries: Sequence[Any], what: str) -> tuple[SummaryRef, ...]:
    refs: list[SummaryRef] = []
    previous: str | None = None
    for name, (size, csum, meta) in entries:
        try:
            validate_ref(name)
        except FormatError:
            raise FormatError(f"{what}: invalid ref name {name!r}") from None
        if previous is not None and name <= previous:
            raise FormatError(f"{what}: refs are not sorted and unique at {name!r}")
        previous = name
        _check_types(meta, _REF_META_TYPES, f"{what} ref {name}")
        refs.append(SummaryRef(name, size, checksum_from_bytes(csum), meta))
    return tuple(refs)


@attrs.frozen
class Summary:
    """A parsed ``summary`` file; :meth:`to_bytes` gives the same bytes back."""

    refs: tuple[SummaryRef, ...]
    metadata: dict[str, Variant] = attrs.field(factory=dict)

    @classmethod
    def from_bytes(cls, data: bytes) -> Summary:
        """Strict parse: normal form, valid sorted unique ref names, 32-byte checksums and
        the documented types for the well-known metadata keys."""
        refs_value, meta = gvariant.decode(SUMMARY_TYPE, data)
        refs = _parse_refs(refs_value, "summary")
        _check_types(meta, _SUMMARY_META_TYPES, "summary")
        if KEY_STATIC_DELTAS in meta:
            _parse_deltas(meta[KEY_STATIC_DELTAS].value, "summary")
        if KEY_COLLECTION_MAP in meta:
            for cid, entries in meta[KEY_COLLECTION_MAP].value.items():
                _parse_refs(entries, f"summary collection {cid}")
        return cls(refs, meta)

    def to_bytes(self) -> bytes:
        return gvariant.encode(SUMMARY_TYPE, ([r._to_value() for r in self.refs], self.metadata))

    def lookup(self, ref: str) -> SummaryRef | None:
        """Binary search by name, as libostree does."""
        i = bisect.bisect_left(self.refs, ref, key=lambda r: r.name)
        if i < len(self.refs) and self.refs[i].name == ref:
            return self.refs[i]
        return None

    def _get(self, key: str) -> Any:
        v = self.metadata.get(key)
        return v.value if v is not None else None

    @property
    def last_modified(self) -> int | None:
        value = self._get(KEY_LAST_MODIFIED)
        return swap64(value) if value is not None else None

    @property
    def expires(self) -> int | None:
        value = self._get(KEY_EXPIRES)
        return swap64(value) if value is not None else None

    @property
    def static_deltas(self) -> dict[str, str]:
        """Delta name → sha256 (hex) of its ``superblock`` file."""
        value = self._get(KEY_STATIC_DELTAS)
        return _parse_deltas(value, "summary") if value is not None else {}

    @property
    def indexed_deltas(self) -> bool:
        return bool(self._get(KEY_INDEXED_DELTAS))

    @property
    def tombstone_commits(self) -> bool:
        return bool(self._get(KEY_TOMBSTONE_COMMITS))

    @property
    def mode(self) -> str | None:
        value = self._get(KEY_MODE)
        return str(value) if value is not None else None

    @property
    def collection_id(self) -> str | None:
        value = self._get(KEY_COLLECTION_ID)
        return str(value) if value is not None else None

    @property
    def collection_map(self) -> dict[str, tuple[SummaryRef, ...]]:
        value = self._get(KEY_COLLECTION_MAP) or {}
        return {cid: _parse_refs(entries, "summary") for cid, entries in value.items()}


def build_summary(
    refs: Mapping[str, tuple[str, int, int | None, str | None]],
    *,
    last_modified: int,
    mode: str = "bare",
    deltas: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    tombstone_commits: bool = False,
    extra_metadata: Mapping[str, Variant] | None = None,
    collection_id: str | None = None,
) -> Summary:
    """The summary ``ostree_repo_regenerate_summary`` (2022.7) writes.

    ``refs`` maps a ref name to ``(commit checksum, commit object size, commit timestamp,
    commit version or None)``; refs of the form ``remote:ref`` are left out, as ostree does.
    ``deltas`` maps delta names to superblock sha256s; give them in the order ostree lists
    them (readdir order of ``deltas/``): that order only matters when two names collide in
    the hash table. ``extra_metadata`` is ``ostree summary -m``; ``mode`` is ``core.mode``.
    """
    entries: list[SummaryRef] = []
    for name in sorted(refs):
        if ":" in name:
            continue
        csum, size, timestamp, version = refs[name]
        validate_ref(name)
        pairs: list[tuple[str, Variant]] = []
        if timestamp is not None and 0 <= timestamp <= _MAX_DATETIME:
            pairs.append((KEY_COMMIT_TIMESTAMP, Variant("t", swap64(timestamp))))
        if version is not None:
            pairs.append((KEY_COMMIT_VERSION, Variant("s", version)))
        checksum_to_bytes(csum)
        entries.append(SummaryRef(name, size, csum, gvariant_dict(pairs)))

    meta: list[tuple[str, Variant]] = list((extra_metadata or {}).items())
    delta_pairs = list(deltas.items() if isinstance(deltas, Mapping) else deltas)
    if delta_pairs:
        meta.append((KEY_STATIC_DELTAS, _deltas_variant(delta_pairs)))
    meta.append((KEY_LAST_MODIFIED, Variant("t", swap64(last_modified))))
    meta.append((KEY_MODE, Variant("s", mode)))
    meta.append((KEY_TOMBSTONE_COMMITS, Variant("b", tombstone_commits)))
    meta.append((KEY_INDEXED_DELTAS, Variant("b", True)))
    if collection_id is not None:
        meta.append((KEY_COLLECTION_ID, Variant("s", collection_id)))
    return Summary(tuple(entries), gvariant_dict(meta))


# ---------------------------------------------------------------------------- delta index


@attrs.frozen
class DeltaIndex:
    """A ``delta-indexes/…/<T>.index`` file: every delta whose target is T."""

    metadata: dict[str, Variant] = attrs.field(factory=dict)

    @classmethod
    def from_bytes(cls, data: bytes) -> DeltaIndex:
        meta = gvariant.decode("a{sv}", data)
        _check_types(meta, {KEY_STATIC_DELTAS: "a{sv}"}, "delta index")
        if KEY_STATIC_DELTAS in meta:
            deltas = _parse_deltas(meta[KEY_STATIC_DELTAS].value, "delta index")
            targets = {name.rsplit("-", 1)[-1] for name in deltas}
            if len(targets) > 1:
                raise FormatError("delta index lists deltas to different targets")
        return cls(meta)

    def to_bytes(self) -> bytes:
        return gvariant.encode("a{sv}", self.metadata)

    @property
    def deltas(self) -> dict[str, str]:
        """Delta name → sha256 (hex) of its ``superblock``, in file order."""
        v = self.metadata.get(KEY_STATIC_DELTAS)
        return _parse_deltas(v.value, "delta index") if v is not None else {}


def build_delta_index(
    deltas: Mapping[str, str], *, insertion_order: Sequence[str] | None = None
) -> DeltaIndex:
    """The index ``ostree_repo_static_delta_reindex`` writes for deltas sharing one target.

    ostree means to insert the deltas sorted by "from" (the delta from nothing first), which
    is the default here. Its sort is broken in 2022.7 (``g_ptr_array_sort`` with
    ``g_strcmp0`` compares the bytes of the pointers), so its real insertion order follows heap
    addresses; when two names collide in the hash table the entry order of its file can then
    differ from ours. ``insertion_order`` lets a caller (or test) pick the order.
    """
    targets = {validate_delta_name(name).rsplit("-", 1)[-1] for name in deltas}
    if len(targets) > 1:
        raise ValueError("a delta index covers deltas to a single target")
    if insertion_order is None:

        def from_key(name: str) -> tuple[int, str]:
            return (1, name.split("-", 1)[0]) if "-" in name else (0, "")

        names = sorted(deltas, key=from_key)
    else:
        names = list(insertion_order)
        if sorted(names) != sorted(deltas):
            raise ValueError("insertion_order must list each delta exactly once")
    ordered = [(name, deltas[name]) for name in names]
    return DeltaIndex(gvariant_dict([(KEY_STATIC_DELTAS, _deltas_variant(ordered))]))


# ---------------------------------------------------------------------------- summary.sig


@attrs.frozen
class SummarySig:
    """``summary.sig``: ``ostree.gpgsigs`` and ``ostree.sign.<engine>`` lists (``aay``)."""

    metadata: dict[str, Variant] = attrs.field(factory=dict)

    @classmethod
    def from_bytes(cls, data: bytes) -> SummarySig:
        meta = gvariant.decode("a{sv}", data)
        for key, value in meta.items():
            if (key == KEY_GPGSIGS or key.startswith(SIGN_KEY_PREFIX)) and value.type != "aay":
                raise FormatError(f"summary.sig key {key!r} has type {value.type!r}, not 'aay'")
        return cls(meta)

    def to_bytes(self) -> bytes:
        return gvariant.encode("a{sv}", self.metadata)

    def _list(self, key: str) -> tuple[bytes, ...]:
        v = self.metadata.get(key)
        return tuple(v.value) if v is not None else ()

    @property
    def gpg_signatures(self) -> tuple[bytes, ...]:
        """Binary OpenPGP detached signatures over the exact summary bytes."""
        return self._list(KEY_GPGSIGS)

    def signatures(self, engine: str) -> tuple[bytes, ...]:
        """Signatures of a sign-API engine (``ed25519``, ``spki``, ``dummy``)."""
        return self._list(SIGN_KEY_PREFIX + engine)

    @property
    def ed25519_signatures(self) -> tuple[bytes, ...]:
        return self.signatures("ed25519")

    def with_signature(self, key: str, signature: bytes) -> SummarySig:
        """Append one signature under ``key`` as libostree does (a ``GVariantDict`` rebuilt
        from the existing entries, then the grown list inserted)."""
        if key != KEY_GPGSIGS and not key.startswith(SIGN_KEY_PREFIX):
            raise ValueError(f"not a signature key: {key!r}")
        pairs = list(self.metadata.items())
        pairs.append((key, Variant("aay", [*self._list(key), bytes(signature)])))
        return SummarySig(gvariant_dict(pairs))

    @classmethod
    def build(
        cls,
        gpg: Sequence[bytes] = (),
        sign: Mapping[str, Sequence[bytes]] | None = None,
    ) -> SummarySig:
        """What ``ostree summary -u --gpg-sign=… --sign=…`` leaves: GPG signatures first,
        then each engine's signatures, appended one by one."""
        sig = cls()
        for s in gpg:
            sig = sig.with_signature(KEY_GPGSIGS, s)
        for engine, sigs in (sign or {}).items():
            for s in sigs:
                sig = sig.with_signature(SIGN_KEY_PREFIX + engine, s)
        return sig
