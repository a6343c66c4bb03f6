"""Writing trees into a commit's transaction: directories, existing commits, the final dirtrees.

:class:`TreeWriter` wraps a :class:`~pyostree.transaction.Transaction` and counts objects the
way ``ostree commit --table-output`` reports them, and (``--generate-sizes``, archive
repositories) records the ``ostree.sizes`` entries libostree records: every content, dirmeta and
dirtree object written since the current ``--tree`` started, whether or not the repository
already had it. The walkers overlay a source onto a :class:`~pyostree.mtree.MutableTree` through
the :class:`~pyostree.commitmodifier.CommitModifier`, in libostree's order of calls (which the
modifier's quirks depend on); :func:`write_mtree` then writes the dirtrees.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable

import attrs

from .commitmodifier import CommitModifier, FileInfo
from .core import ObjectType
from .errors import FormatError, RepoError
from .fileio import os_error
from .formats.content import FileHeader
from .formats.objects import DirMeta, DirTree, Xattrs, sort_xattrs
from .formats.varint import encode_varint
from .mtree import MutableTree
from .repo import Repo, RepoMode, read_xattrs
from .transaction import ContentWriter, Transaction

__all__ = ["CommitStats", "DevinoCache", "TreeWriter", "scan_devino", "write_commit_to_mtree",
           "write_dir_to_mtree", "write_mtree"]

_CHUNK = 256 * 1024
DevinoCache = dict[tuple[int, int], str]


@attrs.define
class CommitStats:
    """What ``ostree commit --table-output`` prints."""

    metadata_total: int = 0
    metadata_written: int = 0
    content_total: int = 0
    content_written: int = 0
    devino_cache_hits: int = 0
    content_bytes_written: int = 0


def utf8_name(text: str, path: str) -> str:
    """OSTree names and symlink targets are UTF-8 strings; refuse what is not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise RepoError(f"{shown}: not valid UTF-8 (OSTree cannot store it)",
                        path=shown) from None
    return text


class TreeWriter:
    """Writes a commit's objects into ``txn``, counting them and (``sizes``) sizing them."""

    def __init__(self, txn: Transaction, *, sizes: bool = False) -> None:
        self.txn = txn
        self.repo = txn.repo
        self.stats = CommitStats()
        # checksum → (object type, stored size, unpacked size); None when not generating.
        self.sizes: dict[str, tuple[ObjectType, int, int]] | None = {} if sizes else None
        self._dirtrees: dict[str, DirTree] = {}

    def start_tree(self) -> None:
        """A new ``--tree`` starts: libostree forgets the sizes recorded so far."""
        if self.sizes is not None:
            self.sizes.clear()

    def _record(self, objtype: ObjectType, csum: str, stored: int, unpacked: int) -> None:
        if self.sizes is not None and csum not in self.sizes:
            self.sizes[csum] = (objtype, stored, unpacked)

    def write_metadata(self, objtype: ObjectType, data: bytes) -> str:
        csum = hashlib.sha256(data).hexdigest()
        self.stats.metadata_total += 1
        if objtype in (ObjectType.DIRTREE, ObjectType.DIRMETA):
            self._record(objtype, csum, len(data), len(data))
        if not self.txn.has_object(objtype, csum):
            self.txn.write_metadata(objtype, data, csum)
            self.stats.metadata_written += 1
        return csum

    def write_dirmeta(self, uid: int, gid: int, mode: int, xattrs: Xattrs) -> str:
        return self.write_metadata(ObjectType.DIRMETA, DirMeta(uid, gid, mode, xattrs).to_bytes())

    def write_content(self, header: FileHeader, chunks: Iterable[bytes]) -> str:
        """Stream one content object; an object the repository (or this transaction) already
        has is not written again."""
        writer = ContentWriter(self.txn, header)
        try:
            for chunk in chunks:
                writer.write(chunk)
            if not header.is_symlink and writer.size != header.size:
                raise FormatError(
                    f"file object has {writer.size} bytes, header says {header.size}")
            csum = writer.hasher.hexdigest()
        except BaseException:
            writer.abort()
            raise
        self.stats.content_total += 1
        need_size = self.sizes is not None and csum not in self.sizes
        if self.txn.has_object(ObjectType.FILE, csum) and not need_size:
            writer.abort()
            return csum
        existed = self.txn.has_object(ObjectType.FILE, csum)
        writer.finish()
        if not existed:
            self.stats.content_written += 1
            self.stats.content_bytes_written += 0 if header.is_symlink else header.size
        if need_size:
            staged = self.txn.staged_path(ObjectType.FILE, csum)
            stored = os.lstat(staged).st_size if staged is not None else 0
            unpacked = len(header.symlink_target.encode()) if header.is_symlink else header.size
            self._record(ObjectType.FILE, csum, stored, unpacked)
        return csum

    def note_existing_content(self) -> None:
        """libostree rewrote a content object it already had (a ``--tree=ref=`` file)."""
        self.stats.content_total += 1

    def load_dirtree(self, csum: str) -> DirTree:
        """A dirtree written by this commit or already in the repository."""
        tree = self._dirtrees.get(csum)
        return tree if tree is not None else self.repo.load_dirtree(csum)

    def write_dirtree(self, tree: DirTree) -> str:
        csum = self.write_metadata(ObjectType.DIRTREE, tree.to_bytes())
        self._dirtrees[csum] = tree
        return csum

    def sizes_metadata(self) -> list[bytes]:
        """The ``ostree.sizes`` entries: checksum, stored and unpacked size as varints, type;
        sorted by checksum."""
        assert self.sizes is not None
        return [bytes.fromhex(csum) + encode_varint(stored) + encode_varint(unpacked)
                + bytes((int(objtype),))
                for csum, (objtype, stored, unpacked) in sorted(self.sizes.items())]


# ---------------------------------------------------------------------------- final dirtrees


def write_mtree(writer: TreeWriter, tree: MutableTree) -> tuple[str, str]:
    """Write the dirtrees of ``tree`` that changed (children first, without recursion: a
    tarball can nest thousands deep); return (dirtree, dirmeta) of its root."""
    stack: list[tuple[MutableTree, bool]] = [(tree, False)]
    while stack:
        node, children_done = stack.pop()
        if node.metadata_checksum is None:
            raise RepoError("Can't commit an empty tree")
        if node.contents_checksum is not None:
            continue
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in node.subdirs.values())
            continue
        dirs: dict[str, tuple[str, str]] = {}
        for name, child in node.subdirs.items():
            assert child.contents_checksum is not None and child.metadata_checksum is not None
            dirs[name] = (child.contents_checksum, child.metadata_checksum)
        node.set_contents_checksum(writer.write_dirtree(DirTree.build(node.files, dirs)))
    assert tree.contents_checksum is not None and tree.metadata_checksum is not None
    return tree.contents_checksum, tree.metadata_checksum


# ---------------------------------------------------------------------------- directories


def scan_devino(repo: Repo) -> DevinoCache:
    """(device, inode) → checksum of every loose ``.file`` object (``ostree_repo_scan_hardlinks``:
    files of a ``checkout -H`` are hardlinks to these). Archive repositories have none."""
    cache: DevinoCache = {}
    try:
        prefixes = [e for e in os.scandir(repo.objects_dir) if len(e.name) == 2]
        for prefix in prefixes:
            with os.scandir(prefix.path) as entries:
                for entry in entries:
                    stem, dot, ext = entry.name.partition(".")
                    if dot and ext == "file" and len(stem) == 62:
                        st = entry.stat(follow_symlinks=False)
                        cache[(st.st_dev, st.st_ino)] = prefix.name + stem
    except OSError as exc:
        raise os_error(exc, f"scanning {repo.objects_dir}") from exc
    return cache


def _child_path(rel: str, name: str) -> str:
    return f"{rel}{name}" if rel == "/" else f"{rel}/{name}"


def _file_chunks(path: str) -> Iterable[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


class _DirWalker:
    """``write_dfd_iter_to_mtree_internal`` and friends, over one directory tree."""

    def __init__(self, writer: TreeWriter, modifier: CommitModifier,
                 devino: DevinoCache | None, devino_canonical: bool) -> None:
        self.writer = writer
        self.mod = modifier
        self.devino = devino
        self.devino_canonical = devino_canonical
        self.bare_user = writer.repo.mode is RepoMode.BARE_USER

    def _xattrs(self, path: str) -> Xattrs:
        return () if self.mod.skip_xattrs else sort_xattrs(read_xattrs(path))

    def walk_dir(self, path: str, rel: str, mtree: MutableTree, st: os.stat_result) -> None:
        info = self.mod.apply(rel, FileInfo.from_stat(st))
        if info is None:
            return
        mtree.set_metadata_checksum(
            self.writer.write_dirmeta(info.uid, info.gid, info.mode, self._xattrs(path)))
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: utf8_name(e.name, e.path).encode())
        for entry in entries:
            est = entry.stat(follow_symlinks=False)
            child_rel = _child_path(rel, entry.name)
            if stat.S_ISDIR(est.st_mode):
                # ostree filters a subdirectory here (to skip it) and again for its dirmeta.
                if self.mod.apply(child_rel, FileInfo.from_stat(est)) is None:
                    continue
                self.walk_dir(entry.path, child_rel, mtree.ensure_dir(entry.name), est)
            elif stat.S_ISREG(est.st_mode) or stat.S_ISLNK(est.st_mode):
                self._write_file(entry.path, entry.name, child_rel, est, mtree)
            else:
                raise RepoError(f"Not a regular file or symlink: {entry.path}",
                                path=entry.path)

    def _write_file(self, path: str, name: str, rel: str, st: os.stat_result,
                    mtree: MutableTree) -> None:
        loose = self.devino.get((st.st_dev, st.st_ino)) if self.devino else None
        if loose is not None and self.devino_canonical:
            mtree.replace_file(name, loose)
            self.writer.stats.devino_cache_hits += 1
            return
        info = FileInfo.from_stat(st)
        source_xattrs: Xattrs | None = None
        target = ""
        if loose is not None and self.bare_user:
            # A hardlink into a bare-user repository: the object's ostreemeta has the real
            # owner, mode and xattrs.
            header = self.writer.repo.read_content_header(loose)
            info = FileInfo(header.uid, header.gid, header.mode,
                            0 if header.is_symlink else header.size)
            source_xattrs = header.xattrs
        mod_info = self.mod.apply(rel, info)
        if mod_info is None:
            return
        if stat.S_ISLNK(info.mode):
            target = utf8_name(os.readlink(path), path)
        if self.mod.skip_xattrs:
            xattrs: Xattrs = ()
        elif source_xattrs is not None:
            xattrs = source_xattrs
        else:
            xattrs = sort_xattrs(read_xattrs(path))
        if loose is not None and mod_info == info and not self.mod.skip_xattrs:
            mtree.replace_file(name, loose)
            self.writer.stats.devino_cache_hits += 1
            return
        size = 0 if stat.S_ISLNK(info.mode) else st.st_size
        header = FileHeader(mod_info.uid, mod_info.gid, mod_info.mode, target, xattrs, size)
        chunks: Iterable[bytes] = () if header.is_symlink else _file_chunks(path)
        mtree.replace_file(name, self.writer.write_content(header, chunks))


def write_dir_to_mtree(writer: TreeWriter, path: str, mtree: MutableTree,
                       modifier: CommitModifier, *, devino: DevinoCache | None = None,
                       devino_canonical: bool = False) -> None:
    """Overlay the directory ``path`` onto ``mtree`` (``ostree_repo_write_dfd_to_mtree``)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise RepoError(f"{path} is not a directory", path=path)
        _DirWalker(writer, modifier, devino, devino_canonical).walk_dir(path, "/", mtree, st)
    except OSError as exc:
        raise os_error(exc, f"reading {exc.filename or path}") from exc


# ---------------------------------------------------------------------------- commits


def write_commit_to_mtree(writer: TreeWriter, repo: Repo, tree: str, meta: str,
                          mtree: MutableTree, modifier: CommitModifier) -> None:
    """Overlay a committed tree (``--tree=ref=``) onto ``mtree``. Without an active modifier
    directories are taken by checksum; with one, every entry goes through the filter and is
    written again with its new metadata, as ostree does."""
    if modifier.active:
        _filtered_commit_dir(writer, repo, tree, repo.load_dirmeta(meta), "/", mtree, modifier)
    else:
        _merge_commit_dir(writer, repo, tree, meta, mtree)


def _merge_commit_dir(writer: TreeWriter, repo: Repo, tree: str, meta: str,
                      mtree: MutableTree) -> None:
    if mtree.fill_empty_from_dirtree(repo.load_dirtree, tree, meta):
        return
    mtree.set_metadata_checksum(meta)
    dirtree = repo.load_dirtree(tree)
    for name, csum in dirtree.files:
        writer.note_existing_content()
        mtree.replace_file(name, csum)
    for name, sub_tree, sub_meta in dirtree.dirs:
        _merge_commit_dir(writer, repo, sub_tree, sub_meta, mtree.ensure_dir(name))


def _filtered_commit_dir(writer: TreeWriter, repo: Repo, tree: str, dirmeta: DirMeta, rel: str,
                         mtree: MutableTree, mod: CommitModifier) -> None:
    info = mod.apply(rel, FileInfo(dirmeta.uid, dirmeta.gid, dirmeta.mode))
    if info is None:
        return
    xattrs = () if mod.skip_xattrs else dirmeta.xattrs
    mtree.set_metadata_checksum(writer.write_dirmeta(info.uid, info.gid, info.mode, xattrs))
    dirtree = repo.load_dirtree(tree)
    for name, csum in dirtree.files:
        header, stream = repo.open_content(csum)
        try:
            size = 0 if header.is_symlink else header.size
            new = mod.apply(_child_path(rel, name),
                            FileInfo(header.uid, header.gid, header.mode, size))
            if new is None:
                continue
            rewritten = FileHeader(new.uid, new.gid, new.mode, header.symlink_target,
                                   () if mod.skip_xattrs else header.xattrs, header.size)
            chunks: Iterable[bytes] = () if stream is None else _stream_chunks(stream.read)
            mtree.replace_file(name, writer.write_content(rewritten, chunks))
        finally:
            if stream is not None:
                stream.close()
    for name, sub_tree, sub_meta in dirtree.dirs:
        child_rel = _child_path(rel, name)
        sub_dirmeta = repo.load_dirmeta(sub_meta)
        first = FileInfo(sub_dirmeta.uid, sub_dirmeta.gid, sub_dirmeta.mode)
        if mod.apply(child_rel, first) is None:
            continue
        _filtered_commit_dir(writer, repo, sub_tree, sub_dirmeta, child_rel,
                             mtree.ensure_dir(name), mod)


def _stream_chunks(read: Callable[[int], bytes]) -> Iterable[bytes]:
    while chunk := read(_CHUNK):
        yield chunk
