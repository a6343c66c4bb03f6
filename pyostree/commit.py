"""Committing a directory tree into a repository (``ostree commit``)."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from . import gvariant as gv
from .core import ObjectType, validate_ref
from .errors import RepoError
from .fileio import os_error
from .formats.content import FileHeader, content_checksum
from .formats.objects import Commit, DirMeta, DirTree, sort_xattrs
from .repo import Repo, RepoMode, read_xattrs
from .transaction import Transaction

_CHUNK = 256 * 1024


@attrs.frozen
class CommitOptions:
    """How file metadata is recorded (``--owner-uid``, ``--canonical-permissions``, …)."""

    owner_uid: int | None = None
    owner_gid: int | None = None
    canonical_permissions: bool = False
    no_xattrs: bool = False


def _utf8(text: str, path: str) -> str:
    """OSTree names and symlink targets are UTF-8 strings; refuse what is not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise RepoError(f"{shown}: not valid UTF-8 (OSTree cannot store it)",
                        path=shown) from None
    return text


def _canonical(repo: Repo, opts: CommitOptions) -> bool:
    return opts.canonical_permissions or repo.mode is RepoMode.BARE_USER_ONLY


def _file_header(path: str, st: os.stat_result, repo: Repo, opts: CommitOptions) -> FileHeader:
    uid = st.st_uid if opts.owner_uid is None else opts.owner_uid
    gid = st.st_gid if opts.owner_gid is None else opts.owner_gid
    mode = st.st_mode
    xattrs = () if opts.no_xattrs else sort_xattrs(read_xattrs(path))
    if _canonical(repo, opts):
        uid = gid = 0
        xattrs = ()
        if stat.S_ISREG(mode):
            mode = stat.S_IFREG | (mode & 0o755)
    if stat.S_ISLNK(mode):
        return FileHeader(uid, gid, mode, _utf8(os.readlink(path), path), xattrs)
    return FileHeader(uid, gid, mode, "", xattrs, st.st_size)


def _dir_meta(path: str, st: os.stat_result, repo: Repo, opts: CommitOptions) -> DirMeta:
    uid = st.st_uid if opts.owner_uid is None else opts.owner_uid
    gid = st.st_gid if opts.owner_gid is None else opts.owner_gid
    mode = st.st_mode
    xattrs = () if opts.no_xattrs else sort_xattrs(read_xattrs(path))
    if _canonical(repo, opts):
        uid = gid = 0
        xattrs = ()
        mode = stat.S_IFDIR | (mode & 0o755)
    return DirMeta(uid, gid, mode, xattrs)


def disk_identity(
    path: str, st: os.stat_result, *, owner_uid: int | None = None,
    owner_gid: int | None = None, ignore_xattrs: bool = False,
) -> str | tuple[object, ...]:
    """The checksum the file, symlink or directory ``path`` (whose ``lstat`` is ``st``) would
    have in a commit: a content checksum, or a directory's dirmeta checksum, with
    ``owner_uid``/``owner_gid`` in place of its owner. What no commit can hold (a device,
    fifo or socket, a symlink whose target is not UTF-8) gets a tuple of its metadata
    instead, equal only to the same thing on disk."""
    uid = st.st_uid if owner_uid is None else owner_uid
    gid = st.st_gid if owner_gid is None else owner_gid
    mode = st.st_mode
    try:
        xattrs = () if ignore_xattrs else sort_xattrs(read_xattrs(path))
        if stat.S_ISDIR(mode):
            return hashlib.sha256(DirMeta(uid, gid, mode, xattrs).to_bytes()).hexdigest()
        if stat.S_ISLNK(mode):
            target = os.readlink(path)
            try:
                return content_checksum(FileHeader(uid, gid, mode, target, xattrs))
            except UnicodeEncodeError:
                return ("symlink", uid, gid, mode, os.fsencode(target), xattrs)
        if not stat.S_ISREG(mode):
            return ("special", uid, gid, mode, xattrs)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "rb") as fh:
            return content_checksum(FileHeader(uid, gid, mode, "", xattrs, st.st_size),
                                    iter(lambda: fh.read(_CHUNK), b""))
    except OSError as exc:
        raise os_error(exc, f"reading {path}") from exc


def checksum_path(path: str | os.PathLike[str], *, ignore_xattrs: bool = False) -> str:
    """What ``ostree checksum PATH`` prints (see :func:`disk_identity`). What OSTree cannot
    store is refused."""
    name = os.fspath(path)
    try:
        st = os.lstat(name)
    except OSError as exc:
        raise os_error(exc, name) from None
    identity = disk_identity(name, st, ignore_xattrs=ignore_xattrs)
    if not isinstance(identity, str):
        raise RepoError(f"{name}: not a regular file, directory or symlink with a UTF-8 "
                        "target (OSTree cannot store it)", path=name)
    return identity


def write_directory(txn: Transaction, root: Path, opts: CommitOptions) -> tuple[str, str]:
    """Write ``root`` recursively; return (dirtree checksum, dirmeta checksum)."""
    repo = txn.repo
    path = str(root)
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise RepoError(f"{root} is not a directory", path=path)
        meta = _dir_meta(path, st, repo, opts)
        files: dict[str, str] = {}
        dirs: dict[str, tuple[str, str]] = {}
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: _utf8(e.name, e.path).encode())
        for entry in entries:
            est = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(est.st_mode):
                dirs[entry.name] = write_directory(txn, Path(entry.path), opts)
            elif stat.S_ISREG(est.st_mode) or stat.S_ISLNK(est.st_mode):
                header = _file_header(entry.path, est, repo, opts)
                if header.is_symlink:
                    files[entry.name] = txn.write_content(header, ())
                else:
                    with open(entry.path, "rb") as fh:
                        files[entry.name] = txn.write_content(header, iter(
                            lambda fh=fh: fh.read(_CHUNK), b""))  # type: ignore[misc]
            else:
                raise RepoError(f"unsupported file type: {entry.path}", path=entry.path)
    except OSError as exc:
        raise os_error(exc, f"reading {path}") from exc
    tree_csum = txn.write_metadata(ObjectType.DIRTREE, DirTree.build(files, dirs).to_bytes())
    meta_csum = txn.write_metadata(ObjectType.DIRMETA, meta.to_bytes())
    return tree_csum, meta_csum


def parse_timestamp(text: str) -> int:
    """``--timestamp`` values: ``@EPOCH``, an integer, or an ISO 8601 date."""
    import datetime

    value = text.strip()
    if value.startswith("@"):
        value = value[1:]
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RepoError(f"cannot parse timestamp {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return int(dt.timestamp())


def commit_tree(
    repo: Repo,
    src: str | os.PathLike[str],
    *,
    branch: str | None = None,
    subject: str = "",
    body: str = "",
    timestamp: int | None = None,
    parent: str | None = None,
    orphan: bool = False,
    metadata: Mapping[str, gv.Variant] | None = None,
    bindings: bool = True,
    bind_refs: Sequence[str] = (),
    options: CommitOptions | None = None,
) -> str:
    """Commit a directory like ``ostree commit``; update ``branch`` when given.

    As in ostree, the parent defaults to the branch's current commit, and with ``bindings`` a
    branch (or ``orphan``) commit gets ``ostree.ref-binding`` (the branch and ``bind_refs``,
    sorted; empty for an orphan), so the same inputs give the same checksum as the real tool.
    """
    opts = options or CommitOptions()
    if branch is not None:
        validate_ref(branch)
        if parent is None and not orphan:
            parent = repo.read_ref(branch)
    meta: dict[str, gv.Variant] = dict(metadata or {})
    if bindings and (branch is not None or orphan or bind_refs):
        refs = [*([branch] if branch is not None else []), *bind_refs]
        meta["ostree.ref-binding"] = gv.Variant("as", sorted(refs, key=str.encode))
    collection = repo.config.get("core", "collection-id", None)
    if collection and bindings and "ostree.collection-binding" not in meta:
        meta["ostree.collection-binding"] = gv.Variant("s", collection)
    with repo.lock(), repo.transaction() as txn:
        tree, dmeta = write_directory(txn, Path(src), opts)
        commit = Commit(
            metadata=meta,
            parent=parent,
            related=(),
            subject=subject,
            body=body,
            timestamp=int(time.time()) if timestamp is None else timestamp,
            root_tree=tree,
            root_meta=dmeta,
        )
        csum = txn.write_metadata(ObjectType.COMMIT, commit.to_bytes())
    if branch is not None:
        repo.set_ref(branch, csum)
    return csum
