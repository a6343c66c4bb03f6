"""Comparing two trees as ``ostree diff`` does: commits of a repository and directories on disk.

A side is a commit's tree (:class:`RepoTree`) or a directory (:class:`LocalTree`);
:func:`open_tree` tells them apart as ostree does. :func:`diff_trees` walks both together,
holding one directory listing of each side per level, and yields ostree's findings in
ostree's order: for each directory of the first tree, its entries in enumeration order (``D``
when the second tree lacks the name; ``M`` when the types or checksums differ; a directory
present on both sides is compared right away, depth first), then the entries only the second
tree has (``A``, followed by everything below an added directory). :func:`format_diff` prints
them like ``ostree diff``: every ``M``, then every ``D``, then every ``A``.

Entries are compared by checksum: a commit's come from its dirtrees; a directory's are computed
as ``ostree commit`` would (owner, mode, xattrs and data; the dirmeta of a directory).
Enumeration order is what ostree sees: a commit lists its files, then its directories, each
sorted by name; GLib lists a directory on disk in chunks of 1000 readdir entries, each chunk
sorted by inode number (:mod:`pyostree.glibdir`).
"""

from __future__ import annotations

import abc
import enum
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import TypeAlias

import attrs

from .commit import disk_identity
from .core import ObjectType
from .errors import RepoError
from .fileio import os_error
from .formats.objects import DirTree
from .glibdir import glib_enumeration_order
from .maintenance import walk_commit
from .repo import Repo, RepoMode

_CHUNK = 256 * 1024


class Change(enum.Enum):
    """What ``ostree diff`` says about a path (the letter it prints)."""

    MODIFIED = "M"
    REMOVED = "D"
    ADDED = "A"


@attrs.frozen
class DiffItem:
    """One finding; ``path`` is below the compared roots, without a leading ``/``."""

    change: Change
    path: str


@attrs.frozen
class DiffOptions:
    """``--no-xattrs``, ``--owner-uid`` and ``--owner-gid``. As in ostree, the owner options
    apply to the files of the *second* tree when it is a directory on disk (never the first)."""

    ignore_xattrs: bool = False
    owner_uid: int | None = None
    owner_gid: int | None = None


@attrs.frozen
class Entry:
    """A file or directory of one side: ``ref`` is its checksum (a commit's: the content
    checksum, or the dirmeta checksum of a directory) or its path (on disk, with ``st``)."""

    is_dir: bool
    ref: str
    tree: str = ""  # a commit directory's dirtree checksum
    st: os.stat_result | None = None


class Listing(abc.ABC):
    """The entries of one directory of a tree."""

    @abc.abstractmethod
    def entries(self) -> Iterable[tuple[str, Entry]]:
        """(name, entry) in the order ostree enumerates them."""

    @abc.abstractmethod
    def get(self, name: str) -> Entry | None:
        """The entry called ``name``, or None."""


class Tree(abc.ABC):
    """One side of a diff."""

    native: bool  # a directory on disk: ostree prints its paths relative to it, without "/"
    root: Entry

    @property
    def ignores_xattrs(self) -> bool:
        """Whether comparing with this tree leaves xattrs out (as ostree: for a repository in
        bare-user-only mode or with ``core.disable-xattrs``)."""
        return False

    @abc.abstractmethod
    def listing(self, entry: Entry) -> Listing:
        """The entries of the directory ``entry``."""

    @abc.abstractmethod
    def identity(self, entry: Entry, *, owner_uid: int | None, owner_gid: int | None,
                 ignore_xattrs: bool) -> object:
        """What decides whether ``entry`` is modified: equal values mean the same object."""


class RepoTree(Tree):
    """The tree of a commit (any rev: ref, ``REMOTE:REF``, checksum, ``REV^``)."""

    native = False

    def __init__(self, repo: Repo, rev: str) -> None:
        self.repo = repo
        csum = repo.resolve_rev(rev)
        assert csum is not None
        self.commit = csum
        commit = repo.load_commit(csum)
        self.root = Entry(True, commit.root_meta, commit.root_tree)

    @property
    def ignores_xattrs(self) -> bool:
        return (self.repo.mode is RepoMode.BARE_USER_ONLY
                or self.repo.config.get_bool("core", "disable-xattrs", False))

    def listing(self, entry: Entry) -> Listing:
        return _RepoListing(self.repo.load_dirtree(entry.tree))

    def identity(self, entry: Entry, *, owner_uid: int | None, owner_gid: int | None,
                 ignore_xattrs: bool) -> object:
        return entry.ref


class _RepoListing(Listing):
    def __init__(self, dirtree: DirTree) -> None:
        self._entries = [(name, Entry(False, csum)) for name, csum in dirtree.files]
        self._entries += [(name, Entry(True, meta, tree)) for name, tree, meta in dirtree.dirs]
        self._by_name = dict(self._entries)

    def entries(self) -> Iterable[tuple[str, Entry]]:
        return self._entries

    def get(self, name: str) -> Entry | None:
        return self._by_name.get(name)


class LocalTree(Tree):
    """A directory on disk."""

    native = True

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            st = os.stat(path)
        except OSError as exc:
            raise os_error(exc, f"reading {path}") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise RepoError(f"{path}: not a directory", path=path)
        self.root = Entry(True, path, st=st)

    def listing(self, entry: Entry) -> Listing:
        return _LocalListing(entry.ref)

    def identity(self, entry: Entry, *, owner_uid: int | None, owner_gid: int | None,
                 ignore_xattrs: bool) -> object:
        assert entry.st is not None
        return disk_identity(entry.ref, entry.st, owner_uid=owner_uid, owner_gid=owner_gid,
                              ignore_xattrs=ignore_xattrs)


class _LocalListing(Listing):
    def __init__(self, path: str) -> None:
        self.path = path

    def entries(self) -> Iterator[tuple[str, Entry]]:
        try:
            with os.scandir(self.path) as it:
                found = [(e.name, e.inode()) for e in it]
        except OSError as exc:
            raise os_error(exc, f"reading {self.path}") from exc
        for name in glib_enumeration_order(found):
            entry = self.get(name)
            if entry is not None:  # removed since the readdir: GLib skips it too
                yield name, entry

    def get(self, name: str) -> Entry | None:
        path = os.path.join(self.path, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise os_error(exc, f"reading {path}") from exc
        return Entry(stat.S_ISDIR(st.st_mode), path, st=st)


def open_tree(arg: str, repo: Callable[[], Repo]) -> Tree:
    """A ``diff`` argument as ostree reads it: a directory when it starts with ``/`` or ``./``,
    otherwise a rev of the repository (``repo()`` is only called then)."""
    if arg.startswith(("/", "./")):
        return LocalTree(arg)
    return RepoTree(repo(), arg)


# A walk step: a finding, or the walk of a subdirectory to run before the next step.
_Steps: TypeAlias = Iterator["DiffItem | _Steps"]


def diff_trees(a: Tree, b: Tree, options: DiffOptions | None = None) -> Iterator[DiffItem]:
    """What changed from ``a`` to ``b``, in ostree's order (see the module docstring). The
    roots themselves are not compared, only what is below them."""
    opts = options or DiffOptions()
    ignore = opts.ignore_xattrs or a.ignores_xattrs or b.ignores_xattrs

    def modified(ca: Entry, cb: Entry) -> bool:
        if ca.is_dir != cb.is_dir:
            return True
        # Both on disk: ostree compares the file types first (and reads no data if they differ).
        if (ca.st is not None and cb.st is not None
                and stat.S_IFMT(ca.st.st_mode) != stat.S_IFMT(cb.st.st_mode)):
            return True
        return (a.identity(ca, owner_uid=None, owner_gid=None, ignore_xattrs=ignore)
                != b.identity(cb, owner_uid=opts.owner_uid, owner_gid=opts.owner_gid,
                              ignore_xattrs=ignore))

    def compare(an: Entry, bn: Entry, prefix: str) -> _Steps:
        if an.tree and an.tree == bn.tree:  # two commit directories with the same contents
            return
        in_a, in_b = a.listing(an), b.listing(bn)
        for name, ca in in_a.entries():
            cb = in_b.get(name)
            if cb is None:
                yield DiffItem(Change.REMOVED, prefix + name)
                continue
            if modified(ca, cb):
                yield DiffItem(Change.MODIFIED, prefix + name)
            if ca.is_dir and cb.is_dir:
                yield compare(ca, cb, f"{prefix}{name}/")
        for name, cb in in_b.entries():
            if in_a.get(name) is None:
                yield DiffItem(Change.ADDED, prefix + name)
                if cb.is_dir:
                    yield added(cb, f"{prefix}{name}/")

    def added(bn: Entry, prefix: str) -> _Steps:
        for name, cb in b.listing(bn).entries():
            yield DiffItem(Change.ADDED, prefix + name)
            if cb.is_dir:
                yield added(cb, f"{prefix}{name}/")

    # Generators on an explicit stack rather than recursion: no depth limit.
    stack = [compare(a.root, b.root, "")]
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
        elif isinstance(step, DiffItem):
            yield step
        else:
            stack.append(step)


def format_diff(a: Tree, b: Tree, items: Iterable[DiffItem]) -> list[str]:
    """``ostree diff``'s lines (``M    /usr/bin/sh``): every M, then D, then A. M and D paths
    are shown as in ``a``, A paths as in ``b``: with a leading ``/`` in a commit, relative to
    the directory on disk."""
    found: dict[Change, list[str]] = {change: [] for change in Change}
    for item in items:
        found[item.change].append(item.path)
    lines = []
    for change in Change:
        tree = b if change is Change.ADDED else a
        lines += [f"{change.value}    {path if tree.native else '/' + path}"
                  for path in found[change]]
    return lines


@attrs.frozen
class CommitStats:
    """``ostree diff --stats``: objects of each commit, and the objects and bytes they share."""

    a_objects: int
    b_objects: int
    common_objects: int
    common_size: int


def commit_stats(repo: Repo, a: str, b: str) -> CommitStats:
    """Compare the objects of commits ``a`` and ``b`` (checksums); the size is what the
    shared objects take in the repository, as ostree counts it (their loose files' sizes)."""
    in_a, in_b = _commit_objects(repo, a), _commit_objects(repo, b)
    common = in_a & in_b
    size = 0
    for objtype, csum in common:
        path = repo.object_file(objtype, csum)
        try:
            size += os.lstat(path).st_size
        except OSError as exc:
            raise os_error(exc, f"querying object {csum}.{objtype.extension}") from exc
    return CommitStats(len(in_a), len(in_b), len(common), size)


def _commit_objects(repo: Repo, csum: str) -> set[tuple[ObjectType, str]]:
    if not repo.has_object(ObjectType.COMMIT, csum):  # ostree counts nothing then
        return set()
    objects = {(ObjectType.COMMIT, csum)}
    objects.update(walk_commit(repo, csum, missing_ok=repo.is_partial(csum)))
    return objects
