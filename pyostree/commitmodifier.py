"""What ``ostree commit`` changes in the files it commits: the commit modifier and its filter.

ostree runs every entry it commits (directory, file, symlink; from a directory, a tarball or a
commit) through one filter: ``--owner-uid``/``--owner-gid``, ``--mode-ro-executables``,
``--statoverride`` and ``--skip-list``, then canonical permissions (``--canonical-permissions``
or a bare-user-only repository). This module is that filter, with its quirks kept because they
decide checksums: a statoverride "add" line is used up by the first entry it matches (and ostree
looks at a subdirectory twice, so an add line never reaches a subdirectory's dirmeta), while an
``=MODE`` line applies every time. Pure: parsing takes text, the filter takes stat-like values.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping

import attrs

from .errors import RepoError

__all__ = ["CommitModifier", "FileInfo", "StatOverrides", "parse_skip_list",
           "parse_statoverride"]

_C_NUMBER = re.compile(
    r"[ \t\n\v\f\r]*([+-]?(?:0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)"
    r"(?:[pP][+-]?[0-9]+)?|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?))")


@attrs.frozen
class StatOverrides:
    """A parsed ``--statoverride`` file: mode bits to add, and whole modes to set, by path."""

    adds: Mapping[str, int] = attrs.field(factory=dict)
    overrides: Mapping[str, int] = attrs.field(factory=dict)


def _strtod_mode(text: str) -> int:
    """``(guint32)(gint32) g_ascii_strtod (text)``: the number at the start of ``text`` in C
    syntax (decimal, so ``0755`` is 755; hex with 0x), 0 when there is none."""
    match = _C_NUMBER.match(text)
    if match is None:
        return 0
    number = match.group(1)
    try:
        value = float.fromhex(number) if "x" in number.lower() else float(number)
    except (ValueError, OverflowError):
        return 0
    if value != value or abs(value) >= 2**31:  # NaN or out of gint32: undefined in C
        return 0
    return int(value) & 0xFFFFFFFF


def _lines(text: str) -> Iterable[str]:
    """``ot_parse_file_by_line``: split on newlines, skip empty lines (nothing else trimmed)."""
    return (line for line in text.split("\n") if line)


def parse_statoverride(text: str) -> StatOverrides:
    """``--statoverride`` lines ``MODE PATH`` (add MODE's bits) or ``=MODE PATH`` (set)."""
    adds: dict[str, int] = {}
    overrides: dict[str, int] = {}
    for line in _lines(text):
        mode_text, space, path = line.partition(" ")
        if not space:
            raise RepoError("Malformed statoverride file (no space found)")
        if mode_text.startswith("="):
            overrides[path] = _strtod_mode(line[1:])
        else:
            adds[path] = _strtod_mode(line)
    return StatOverrides(adds, overrides)


def parse_skip_list(text: str) -> frozenset[str]:
    """``--skip-list``: one absolute path (as committed, e.g. ``/usr/bin/x``) per line."""
    return frozenset(_lines(text))


@attrs.frozen
class FileInfo:
    """The metadata the filter sees and may change (ostree's ``GFileInfo`` subset)."""

    uid: int
    gid: int
    mode: int
    size: int = 0

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileInfo:
        """Regular files have a size; directories and symlinks 0, as in ostree."""
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        return cls(st.st_uid, st.st_gid, st.st_mode, size)


class CommitModifier:
    """One commit's filter. ``active`` says whether ostree would install a modifier at all
    (it then also rewrites files taken from ``--tree=ref=``); ``skip_xattrs`` whether
    extended attributes are dropped. :meth:`unmatched` lists what the statoverride and
    skip list never matched, which ostree reports as an error."""

    def __init__(
        self, *, owner_uid: int | None = None, owner_gid: int | None = None,
        canonical_permissions: bool = False, no_xattrs: bool = False,
        ro_executables: bool = False, statoverride: StatOverrides | None = None,
        skip_list: Iterable[str] | None = None, flagged: bool = False,
        bare_user_only: bool = False,
    ) -> None:
        self.owner_uid = owner_uid
        self.owner_gid = owner_gid
        self.canonical = canonical_permissions or bare_user_only
        self.skip_xattrs = no_xattrs or self.canonical
        self.tar_skip_xattrs = no_xattrs or bare_user_only  # the tarball importer's own rule
        self.ro_executables = ro_executables
        self._adds = dict(statoverride.adds) if statoverride is not None else None
        self._overrides = dict(statoverride.overrides) if statoverride is not None else None
        self._skip = set(skip_list) if skip_list is not None else None
        # ``flagged``: a modifier flag the filter does not see (--consume, --generate-sizes,
        # --devino-canonical) still makes ostree install the modifier.
        self.active = bool(
            flagged or self.canonical or no_xattrs or ro_executables or owner_uid is not None
            or owner_gid is not None or statoverride is not None or skip_list is not None)

    def apply(self, path: str, info: FileInfo) -> FileInfo | None:
        """The entry at ``path`` (``/`` for the root, else ``/a/b``) as it is committed, or
        None when the skip list drops it (``_ostree_repo_commit_modifier_apply``)."""
        modified, skipped = self.modify(path, info)
        return None if skipped else modified

    def modify(self, path: str, info: FileInfo) -> tuple[FileInfo, bool]:
        """:meth:`apply` as (changed info, whether the skip list matched)."""
        if not self.active:
            return info, False
        uid = info.uid if self.owner_uid is None else self.owner_uid & 0xFFFFFFFF
        gid = info.gid if self.owner_gid is None else self.owner_gid & 0xFFFFFFFF
        mode = info.mode
        if self.ro_executables and stat.S_ISREG(mode) and mode & 0o111:
            mode &= ~0o222
        if self._adds is not None and path in self._adds:
            mode = (mode | self._adds.pop(path)) & 0xFFFFFFFF
        elif self._overrides is not None and path in self._overrides:
            mode = stat.S_IFMT(info.mode) | self._overrides[path]
        skipped = False
        if self._skip is not None and path in self._skip:
            self._skip.discard(path)
            skipped = True
        if self.canonical:
            if stat.S_ISREG(info.mode):
                mode &= stat.S_IFREG | 0o755
            elif stat.S_ISDIR(info.mode):
                mode &= stat.S_IFDIR | 0o755
            uid = gid = 0
        return FileInfo(uid, gid, mode, info.size), skipped

    def unmatched(self) -> str | None:
        """ostree's error for statoverride adds or skip-list paths that matched nothing."""
        if self._adds:
            return "Unmatched statoverride paths: " + ", ".join(sorted(self._adds))
        if self._skip:
            return "Unmatched skip-list paths: " + ", ".join(sorted(self._skip))
        return None
