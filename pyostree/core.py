"""Object types, checksum and name validation: the vocabulary every layer shares."""

from __future__ import annotations

import enum
import re

from .errors import FormatError

__all__ = [
    "EMPTY_DIRTREE",
    "ObjectType",
    "checksum_from_bytes",
    "checksum_to_bytes",
    "loose_object_path",
    "validate_checksum",
    "validate_filename",
    "validate_ref",
]

_CSUM_RE = re.compile(r"[0-9a-f]{64}")
_REF_RE = re.compile(r"[\w\d][-._\w\d]*(/[\w\d][-._\w\d]*)*")
_REMOTE_RE = re.compile(r"[\w\d][-._\w\d]*")

EMPTY_DIRTREE = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


class ObjectType(enum.IntEnum):
    """OSTree object types, with their loose-object file extensions."""

    FILE = 1
    DIRTREE = 2
    DIRMETA = 3
    COMMIT = 4
    TOMBSTONE_COMMIT = 5
    COMMIT_META = 6
    PAYLOAD_LINK = 7

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self]

    @property
    def is_meta(self) -> bool:
        return ObjectType.DIRTREE <= self <= ObjectType.COMMIT_META

    @classmethod
    def from_extension(cls, ext: str) -> ObjectType:
        if ext == "filez":
            return cls.FILE
        for otype, name in _EXTENSIONS.items():
            if name == ext:
                return otype
        raise FormatError(f"unknown object extension {ext!r}")


_EXTENSIONS = {
    ObjectType.FILE: "file",
    ObjectType.DIRTREE: "dirtree",
    ObjectType.DIRMETA: "dirmeta",
    ObjectType.COMMIT: "commit",
    ObjectType.TOMBSTONE_COMMIT: "tombstone-commit",
    ObjectType.COMMIT_META: "commitmeta",
    ObjectType.PAYLOAD_LINK: "payload-link",
}


def validate_checksum(csum: str) -> str:
    """Return ``csum`` if it is 64 lowercase hex characters, else raise :class:`FormatError`."""
    if not isinstance(csum, str) or not _CSUM_RE.fullmatch(csum):
        raise FormatError(f"invalid checksum {csum!r}")
    return csum


def is_checksum(text: str) -> bool:
    return bool(_CSUM_RE.fullmatch(text))


def checksum_from_bytes(raw: bytes) -> str:
    """Hex form of a binary checksum, which must be exactly 32 bytes."""
    if len(raw) != 32:
        raise FormatError(f"invalid checksum of length {len(raw)}, expected 32")
    return raw.hex()


def checksum_to_bytes(csum: str) -> bytes:
    return bytes.fromhex(validate_checksum(csum))


def validate_filename(name: str) -> str:
    """A dirtree entry name: non-empty, not ``.``/``..``, no ``/`` and no NUL."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise FormatError(f"invalid file name {name!r} in dirtree")
    return name


def validate_ref(ref: str) -> str:
    """A ref name as libostree accepts it (``a/b-c.d``); no ``..`` or leading ``/``."""
    if not _REF_RE.fullmatch(ref):
        raise FormatError(f"invalid ref name {ref!r}")
    return ref


def validate_remote_name(name: str) -> str:
    if not _REMOTE_RE.fullmatch(name):
        raise FormatError(f"invalid remote name {name!r}")
    return name


def parse_refspec(refspec: str) -> tuple[str | None, str]:
    """Split ``remote:ref`` into (remote, ref); a plain ref gives (None, ref)."""
    remote, sep, ref = refspec.partition(":")
    if not sep:
        return None, validate_ref(refspec)
    if not remote:
        return None, validate_ref(ref)
    return validate_remote_name(remote), validate_ref(ref)


def loose_object_path(csum: str, objtype: ObjectType, *, archive: bool = False) -> str:
    """Relative path of a loose object: ``objects/XX/REST.ext`` (``.filez`` in archives)."""
    ext = objtype.extension
    if archive and objtype == ObjectType.FILE:
        ext = "filez"
    return f"objects/{csum[:2]}/{csum[2:]}.{ext}"
