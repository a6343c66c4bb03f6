"""Metadata objects: commit, dirtree, dirmeta, detached metadata and tombstones.

Each class is frozen; ``from_bytes`` validates strictly (normal form, checksum lengths, file names,
sorting) and ``to_bytes`` gives the exact normal-form bytes back. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import itertools
import stat
import struct
from collections.abc import Mapping
from typing import Any

import attrs

from .. import gvariant as gv
from ..core import checksum_from_bytes, checksum_to_bytes, validate_filename
from ..errors import FormatError

COMMIT_TYPE = "(a{sv}aya(say)sstayay)"
DIRTREE_TYPE = "(a(say)a(sayay))"
DIRMETA_TYPE = "(uuua(ayay))"
METADATA_TYPE = "a{sv}"

Xattrs = tuple[tuple[bytes, bytes], ...]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def validate_xattrs(xattrs: Any) -> Xattrs:
    """xattrs as ``a(ayay)``: names carry their NUL, sorted by name, unique, non-empty."""
    result = tuple((bytes(k), bytes(v)) for k, v in xattrs)
    prev = None
    for name, _ in result:
        if len(name) < 2 or not name.endswith(b"\0") or b"\0" in name[:-1]:
            raise FormatError(f"invalid xattr name {name!r}")
        if prev is not None and name <= prev:
            raise FormatError("xattrs are not sorted and unique")
        prev = name
    return result


def sort_xattrs(xattrs: Any) -> Xattrs:
    """Normalise xattrs from the filesystem: add the NUL, sort by name."""
    items = []
    for name, value in xattrs:
        raw = name.encode() if isinstance(name, str) else bytes(name)
        if not raw.endswith(b"\0"):
            raw += b"\0"
        items.append((raw, bytes(value)))
    return validate_xattrs(sorted(items))


def _metadata(value: Any) -> dict[str, gv.Variant]:
    for key in value:
        if not key:
            raise FormatError("empty metadata key")
    return dict(value)


@attrs.frozen
class Commit:
    """A commit object ``(a{sv}aya(say)sstayay)``; timestamps are native ints."""

    metadata: Mapping[str, gv.Variant]
    parent: str | None
    related: tuple[tuple[str, str], ...]
    subject: str
    body: str
    timestamp: int
    root_tree: str
    root_meta: str

    @classmethod
    def from_bytes(cls, data: bytes) -> Commit:
        meta, parent, related, subject, body, ts, tree, dmeta = gv.decode(COMMIT_TYPE, data)
        if parent and len(parent) != 32:
            raise FormatError(f"invalid parent checksum of length {len(parent)}")
        return cls(
            metadata=_metadata(meta),
            parent=parent.hex() if parent else None,
            related=tuple((validate_filename(n), checksum_from_bytes(c)) for n, c in related),
            subject=subject,
            body=body,
            timestamp=gv.swap64(ts),
            root_tree=checksum_from_bytes(tree),
            root_meta=checksum_from_bytes(dmeta),
        )

    def to_bytes(self) -> bytes:
        return gv.encode(
            COMMIT_TYPE,
            (
                dict(self.metadata),
                checksum_to_bytes(self.parent) if self.parent else b"",
                [(n, checksum_to_bytes(c)) for n, c in self.related],
                self.subject,
                self.body,
                gv.swap64(self.timestamp),
                checksum_to_bytes(self.root_tree),
                checksum_to_bytes(self.root_meta),
            ),
        )

    @property
    def checksum(self) -> str:
        return sha256_hex(self.to_bytes())

    @property
    def content_checksum(self) -> str:
        """sha256(tree ‖ meta): what ``ostree log`` and ``show`` call the content checksum."""
        return sha256_hex(checksum_to_bytes(self.root_tree) + checksum_to_bytes(self.root_meta))

    def get(self, key: str) -> Any:
        """The unboxed value of a metadata key, or None."""
        variant = self.metadata.get(key)
        return variant.value if variant is not None else None

    @property
    def version(self) -> str | None:
        value = self.get("version")
        return value if isinstance(value, str) else None

    @property
    def ref_bindings(self) -> list[str] | None:
        value = self.get("ostree.ref-binding")
        return list(value) if isinstance(value, list) else None


@attrs.frozen
class DirTree:
    """A directory listing ``(a(say)a(sayay))``; names sorted, unique and safe."""

    files: tuple[tuple[str, str], ...]
    dirs: tuple[tuple[str, str, str], ...]

    @classmethod
    def from_bytes(cls, data: bytes) -> DirTree:
        # Hand-written for this hot shape: every checkout, pull, fsck and prune reads every
        # dirtree. tests/test_core_hostile.py holds it to the generic strict decoder.
        raw_files, raw_dirs = _split_dirtree(bytes(data))
        for entries in (raw_files, raw_dirs):
            if any(a[0] >= b[0] for a, b in itertools.pairwise(entries)):
                raise FormatError("dirtree entries are not sorted and unique")
        files = tuple((_entry_name(name), csum.hex()) for name, csum in raw_files)
        dirs = tuple((_entry_name(name), t.hex(), m.hex()) for name, t, m in raw_dirs)
        if raw_files and raw_dirs and {f[0] for f in files} & {d[0] for d in dirs}:
            raise FormatError("dirtree has a name that is both a file and a directory")
        return cls(files, dirs)

    def to_bytes(self) -> bytes:
        return _encode_dirtree(
            [(n.encode(), checksum_to_bytes(c)) for n, c in self.files],
            [(n.encode(), checksum_to_bytes(t), checksum_to_bytes(m)) for n, t, m in self.dirs],
        )

    @classmethod
    def build(
        cls, files: Mapping[str, str], dirs: Mapping[str, tuple[str, str]]
    ) -> DirTree:
        """Build from unsorted mappings, sorting names bytewise as libostree does."""

        def key(name: str) -> bytes:
            return name.encode()

        return cls(
            tuple((n, files[n]) for n in sorted(files, key=key)),
            tuple((n, *dirs[n]) for n in sorted(dirs, key=key)),
        )


# ---------------------------------------------------------------------------- dirtree codec
#
# ``(a(say)a(sayay))`` by hand: every member has alignment 1, so an element is its bytes plus
# framing offsets (``gv.frame``). Equivalent to ``gv.encode``/``gv.decode`` of DIRTREE_TYPE
# (tests/test_core_hostile.py checks both directions against the generic codec).

def _encode_dirtree(files: list[tuple[bytes, bytes]], dirs: list[tuple[bytes, bytes, bytes]]
                    ) -> bytes:
    frame = gv.frame
    parts: list[bytes] = []
    ends: list[int] = []
    pos = 0
    for name, csum in files:
        elem = frame(name + b"\0" + csum, (len(name) + 1,))
        parts.append(elem)
        pos += len(elem)
        ends.append(pos)
    files_array = frame(b"".join(parts), ends)
    parts = []
    ends = []
    pos = 0
    for name, tree, meta in dirs:
        s_end = len(name) + 1
        elem = frame(name + b"\0" + tree + meta, (s_end + len(tree), s_end))
        parts.append(elem)
        pos += len(elem)
        ends.append(pos)
    return frame(files_array + frame(b"".join(parts), ends), (len(files_array),))


def _split_entries(arr: bytes, members: int) -> list[tuple[bytes, ...]]:
    """``(say)`` (members=1) or ``(sayay)`` (members=2) array elements as (name, checksum...),
    each checksum 32 bytes. Checks everything normal form requires (bounds, NULs, offset sizes)
    explicitly instead of re-encoding, which is what makes this hot loop cheap."""
    out: list[tuple[bytes, ...]] = []
    start = 0
    for end in gv.array_ends(arr):
        size = end - start
        if size <= 0:
            raise FormatError("GVariant array framing offsets out of order")
        osz = 1 if size <= 0xFF else gv.offset_size(size)
        tail = end - osz * members  # this element's framing offsets start here
        if tail < start or gv.pick_offset_size(tail - start, members) != osz:
            raise FormatError("dirtree entry framing offsets are not of their normal size")
        s_end = arr[end - 1] if osz == 1 else int.from_bytes(arr[end - osz : end], "little")
        base = start + s_end  # the first checksum starts after the name's NUL
        if not start < base <= tail or arr[base - 1] != 0:
            raise FormatError("dirtree entry name is out of bounds or not NUL-terminated")
        if members == 2:
            tree_end = start + int.from_bytes(arr[tail : tail + osz], "little")
            if not base <= tree_end <= tail:
                raise FormatError("dirtree entry framing offsets out of order")
            for length in (tree_end - base, tail - tree_end):
                if length != 32:
                    raise FormatError(f"invalid checksum of length {length}, expected 32")
            out.append((arr[start : base - 1], arr[base:tree_end], arr[tree_end:tail]))
        else:
            if tail - base != 32:
                raise FormatError(f"invalid checksum of length {tail - base}, expected 32")
            out.append((arr[start : base - 1], arr[base:tail]))
        start = end
    return out


def _split_dirtree(data: bytes) -> tuple[list[tuple[bytes, ...]], list[tuple[bytes, ...]]]:
    n = len(data)
    osz = gv.offset_size(n)
    split = int.from_bytes(data[n - osz :], "little")
    if not osz or split > n - osz or gv.pick_offset_size(n - osz, 1) != osz:
        raise FormatError("GVariant dirtree framing offset out of range")
    return _split_entries(data[:split], 1), _split_entries(data[split : n - osz], 2)


def _entry_name(raw: bytes) -> str:
    try:
        return validate_filename(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FormatError("GVariant string is not valid UTF-8") from exc


@attrs.frozen
class DirMeta:
    """Directory metadata ``(uuua(ayay))`` with uid, gid, mode (native ints) and xattrs."""

    uid: int
    gid: int
    mode: int
    xattrs: Xattrs = ()

    @classmethod
    def from_bytes(cls, data: bytes) -> DirMeta:
        if len(data) == 12:  # no xattrs: three BE u32s, the only normal form of that size
            uid, gid, mode = struct.unpack(">III", data)
            if not stat.S_ISDIR(mode) or mode & ~(stat.S_IFDIR | 0o7777):
                raise FormatError(f"invalid directory mode {mode:o}")
            return cls(uid, gid, mode, ())
        uid, gid, mode, xattrs = gv.decode(DIRMETA_TYPE, data)
        mode = gv.swap32(mode)
        if not stat.S_ISDIR(mode) or mode & ~(stat.S_IFDIR | 0o7777):
            raise FormatError(f"invalid directory mode {mode:o}")
        return cls(gv.swap32(uid), gv.swap32(gid), mode, validate_xattrs(xattrs))

    def to_bytes(self) -> bytes:
        return gv.encode(
            DIRMETA_TYPE,
            (gv.swap32(self.uid), gv.swap32(self.gid), gv.swap32(self.mode), list(self.xattrs)),
        )


def parse_metadata(data: bytes) -> dict[str, gv.Variant]:
    """Detached metadata (``.commitmeta``) or any ``a{sv}`` blob."""
    return _metadata(gv.decode(METADATA_TYPE, data))


def serialize_metadata(metadata: Mapping[str, gv.Variant]) -> bytes:
    return gv.encode(METADATA_TYPE, dict(metadata))


def signatures_from_metadata(metadata: Mapping[str, gv.Variant], key: str) -> list[bytes]:
    """The ``aay`` signature list under ``key`` (e.g. ``ostree.gpgsigs``), or []."""
    variant = metadata.get(key)
    if variant is None:
        return []
    if variant.type != "aay":
        raise FormatError(f"metadata key {key} has type {variant.type}, expected aay")
    return list(variant.value)


def add_signature(
    metadata: Mapping[str, gv.Variant], key: str, signature: bytes
) -> dict[str, gv.Variant]:
    """Return metadata with ``signature`` appended to the ``aay`` list under ``key``."""
    result = dict(metadata)
    sigs = signatures_from_metadata(metadata, key)
    result[key] = gv.Variant("aay", [*sigs, signature])
    return result


def tombstone_bytes(commit: str) -> bytes:
    """A tombstone-commit object for the deleted ``commit``."""
    return serialize_metadata({"commit": gv.Variant("ay", commit.encode() + b"\0")})


def parse_object(objtype: int, data: bytes) -> Commit | DirTree | DirMeta | dict[str, gv.Variant]:
    """Parse any metadata object by type number (2–6)."""
    if objtype == 2:
        return DirTree.from_bytes(data)
    if objtype == 3:
        return DirMeta.from_bytes(data)
    if objtype == 4:
        return Commit.from_bytes(data)
    if objtype in (5, 6):
        return parse_metadata(data)
    raise FormatError(f"object type {objtype} is not a metadata type")


@attrs.frozen
class ObjectSize:
    """One entry of a commit's ``ostree.sizes``: an object and its archived (compressed) and
    unpacked sizes. ``objtype`` is an ostree object type number (1–9)."""

    checksum: str
    objtype: int
    archived: int
    unpacked: int


def parse_object_sizes(metadata: Mapping[str, gv.Variant]) -> list[ObjectSize]:
    """The ``ostree.sizes`` list of commit metadata, read as ``ostree_commit_get_object_sizes``
    does: each ``ay`` is a 32-byte checksum, two varints (archived, unpacked) and, in newer
    commits, an object type byte (else the object is a file). Raises FormatError."""
    from .varint import decode_varint

    variant = metadata.get("ostree.sizes")
    if variant is None or variant.type != "aay":
        raise FormatError("No metadata key ostree.sizes in commit")
    entries = []
    for raw in variant.value:
        entry = bytes(raw)
        if len(entry) < 34:
            raise FormatError("Could not read ostree.sizes metadata entry")
        try:
            archived, pos = decode_varint(entry, 32)
            unpacked, pos = decode_varint(entry, pos)
        except FormatError:
            raise FormatError("Unexpected EOF reading ostree.sizes varint") from None
        objtype = entry[pos] if pos < len(entry) else 1
        if not 1 <= objtype <= 9:
            raise FormatError(f"Unexpected ostree.sizes object type {objtype}")
        entries.append(ObjectSize(entry[:32].hex(), objtype, archived, unpacked))
    return entries
