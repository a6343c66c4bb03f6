"""Checking out a commit into a directory (``ostree checkout``).

All filesystem operations go through directory file descriptors (``dir_fd``/``O_NOFOLLOW``), so a
name from a dirtree, or a symlink already in the destination, can never make a checkout write
outside its destination directory.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import attrs

from .core import ObjectType
from .errors import FormatError, RepoError
from .fileio import os_error, read_file
from .formats.content import parse_ostreemeta
from .repo import OSTREEMETA_XATTR, Repo, RepoMode, bare_user_symlink_target

_CHUNK = 256 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PROGRESS_EVERY = 200  # files between two progress callbacks
_WORKERS = 2  # threads filling directories
_MAX_QUEUED = 64  # directories waiting with an open fd; beyond that a worker fills them inline


@attrs.frozen
class CheckoutOptions:
    """``--user-mode``, ``--union``, ``--force-copy``, ``--require-hardlinks``, ``--subpath``."""

    user_mode: bool = False
    union: bool = False
    force_copy: bool = False
    require_hardlinks: bool = False
    subpath: str | None = None


class _Checkout:
    def __init__(self, repo: Repo, opts: CheckoutOptions,
                 progress: Callable[[int], None] | None = None) -> None:
        self.repo = repo
        self.opts = opts
        self.progress = progress
        self.written = 0  # files (and symlinks) written; set by report_end
        self._count = itertools.count(1)  # next() on it is atomic: the workers share it
        self._progress_lock = threading.Lock()
        # Without a callback the per-file check never fires: one int comparison per file.
        self._next_report = _PROGRESS_EVERY if progress is not None else sys.maxsize
        # Directories waiting for a worker: (open fd, dirtree, dirmeta, existed before).
        self._queue: list[tuple[int, str, str, bool]] = []
        self._cond = threading.Condition()
        self._busy = 0
        self._error: BaseException | None = None
        mode = repo.mode
        # As in ostree, bare-user-only checkouts are always user mode.
        self.user_mode = (opts.user_mode or os.geteuid() != 0
                          or mode is RepoMode.BARE_USER_ONLY)
        self.can_link = not opts.force_copy and (
            (mode is RepoMode.BARE and not opts.user_mode)
            or (mode in (RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY) and self.user_mode)
        )
        if opts.require_hardlinks and not self.can_link:
            raise RepoError(
                f"hardlinks are not possible from a {mode.value} repository in this mode"
            )

    # -- helpers

    def _wrote_file(self) -> None:
        n = next(self._count)
        if n >= self._next_report:
            with self._progress_lock:
                if n >= self._next_report:
                    self._next_report = n + _PROGRESS_EVERY
                    assert self.progress is not None
                    self.progress(n)

    def report_end(self) -> None:
        self.written = next(self._count) - 1
        if self.progress is not None:
            self.progress(self.written)

    def _remove_existing(self, dfd: int, name: str) -> None:
        try:
            st = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise RepoError(f"cannot replace directory {name} with a file")
        os.unlink(name, dir_fd=dfd)

    def file(self, dfd: int, name: str, csum: str) -> None:
        if self.opts.union:
            self._remove_existing(dfd, name)
        if self.can_link and self._link(dfd, name, csum):
            return
        header, stream = self.repo.open_content(csum)
        if header.is_symlink:
            os.symlink(header.symlink_target, name, dir_fd=dfd)
            if not self.user_mode:
                with contextlib.suppress(OSError):
                    os.chown(name, header.uid, header.gid, dir_fd=dfd, follow_symlinks=False)
            return
        assert stream is not None
        perm = header.mode & 0o7777
        if self.user_mode:  # no setuid files in user checkouts; keep them readable to us
            perm = (perm & ~(stat.S_ISUID | stat.S_ISGID)) | stat.S_IRUSR
        with stream:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=dfd)
            try:
                while chunk := stream.read(_CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                if not self.user_mode:
                    os.fchown(fd, header.uid, header.gid)
                    for xname, value in header.xattrs:
                        with contextlib.suppress(OSError):
                            os.setxattr(fd, xname[:-1], value)
                os.fchmod(fd, perm)
            finally:
                os.close(fd)

    def _link(self, dfd: int, name: str, csum: str) -> bool:
        """Hardlink (or, for bare-user symlink objects, re-create) ``csum`` as ``name``; False
        where ostree copies instead: empty files (hardlinking them hits EMLINK) and, in user
        mode, files we could not read.

        The hot path of a checkout: one lstat, (bare-user) one getxattr and one link per file,
        on plain string paths."""
        src = self.repo.object_file(ObjectType.FILE, csum)
        try:
            st = os.lstat(src)
            mode = st.st_mode
            if self.repo.mode is RepoMode.BARE_USER:
                mode = parse_ostreemeta(os.getxattr(src, OSTREEMETA_XATTR,
                                                    follow_symlinks=False))[2]
                if stat.S_ISLNK(mode):
                    self._symlink_from_bare_user(dfd, name, src, csum)
                    return True
        except FileNotFoundError:
            raise RepoError(f"missing file object {csum}") from None
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                raise FormatError(f"file object {csum} lacks {OSTREEMETA_XATTR}") from exc
            raise RepoError(f"cannot read file object {csum}: {exc.strerror}") from exc
        if not stat.S_ISLNK(mode) and (
            st.st_size == 0 or (self.user_mode and not mode & stat.S_IRUSR)
        ):
            return False
        try:
            os.link(src, name, dst_dir_fd=dfd, follow_symlinks=False)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
                raise
            if self.opts.require_hardlinks:
                raise RepoError(f"cannot hardlink {name}: {exc.strerror}") from exc
        return False

    @staticmethod
    def _symlink_from_bare_user(dfd: int, name: str, src: str, csum: str) -> None:
        os.symlink(bare_user_symlink_target(read_file(src), csum), name, dir_fd=dfd)

    # -- directories
    #
    # Directories are filled by _WORKERS threads (the caller's and helpers) taking them from a
    # shared LIFO queue. The kernel work of a checkout (link, open, write, mkdir) releases the
    # GIL, so two threads keep both cores busy where ostree uses one. A parent creates and opens
    # each subdirectory itself and hands over the open fd, so nothing is ever looked up by path;
    # it sets its own mode and times once its entries exist, as before (entries created inside a
    # child do not touch the parent's mtime).

    def directory(self, dest: Path, tree_csum: str, meta_csum: str) -> None:
        """Check out a tree as the new (or, with ``union``, existing) directory ``dest``."""
        existed = False
        try:
            os.mkdir(dest, 0o700)
        except FileExistsError:
            if not self.opts.union:
                raise RepoError(f"destination {dest} already exists", path=str(dest)) from None
            existed = True
        self._queue.append((os.open(dest, _DIR_FLAGS), tree_csum, meta_csum, existed))
        helpers = [threading.Thread(target=self._work, name="pyostree-checkout", daemon=True)
                   for _ in range(_WORKERS - 1)]
        for thread in helpers:
            thread.start()
        try:
            self._work()
        except BaseException as exc:  # e.g. KeyboardInterrupt while waiting: stop the helpers
            with self._cond:
                if self._error is None:
                    self._error = exc
            raise
        finally:
            with self._cond:
                self._cond.notify_all()
            for thread in helpers:
                thread.join()
            for fd, *_ in self._queue:  # left over after an error
                os.close(fd)
            self._queue.clear()
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._queue and self._busy and self._error is None:
                    cond.wait()
                if self._error is not None or not self._queue:
                    cond.notify_all()
                    return
                task = self._queue.pop()
                self._busy += 1
            try:
                self._fill(*task)
            except BaseException as exc:
                with cond:
                    if self._error is None:
                        self._error = exc
            finally:
                with cond:
                    self._busy -= 1
                    cond.notify_all()

    def _fill(self, dfd: int, tree_csum: str, meta_csum: str, existed: bool) -> None:
        """Write one directory's entries (``dfd`` is ours to close)."""
        try:
            meta = self.repo.load_dirmeta(meta_csum)
            tree = self.repo.load_dirtree(tree_csum)
            if not existed and not self.user_mode:
                for xname, value in meta.xattrs:
                    with contextlib.suppress(OSError):
                        os.setxattr(dfd, xname[:-1], value)
            for fname, fcsum in tree.files:
                self.file(dfd, fname, fcsum)
                self._wrote_file()
            for dname, dtree, dmeta in tree.dirs:
                if self._error is not None:
                    return
                child_existed = False
                try:
                    os.mkdir(dname, 0o700, dir_fd=dfd)
                except FileExistsError:
                    if not self.opts.union:
                        raise
                    child_existed = True
                child = os.open(dname, _DIR_FLAGS, dir_fd=dfd)
                if len(self._queue) < _MAX_QUEUED:
                    with self._cond:
                        self._queue.append((child, dtree, dmeta, child_existed))
                        self._cond.notify()
                else:  # bound the open fds: fill this one here
                    self._fill(child, dtree, dmeta, child_existed)
            # Like ostree: directories that were already there keep their metadata.
            if not existed:
                # bare-user-only repos hold no setuid, sticky or world-writable directories.
                perm = meta.mode & (0o775 if self.repo.mode is RepoMode.BARE_USER_ONLY
                                    else 0o7777)
                os.fchmod(dfd, perm)
                if not self.user_mode:
                    os.fchown(dfd, meta.uid, meta.gid)
                if not self.opts.force_copy:
                    os.utime(dfd, ns=(0, 0))
        finally:
            os.close(dfd)


def resolve_path(repo: Repo, tree: str, meta: str, subpath: str) -> tuple[str, str, str | None]:
    """Walk ``subpath`` down from a (tree, meta) root: (tree, meta, file_csum_if_a_file)."""
    parts = [p for p in subpath.split("/") if p and p != "."]
    for i, part in enumerate(parts):
        if part == "..":
            raise RepoError(f"invalid subpath {subpath!r}")
        dirtree = repo.load_dirtree(tree)
        for dname, dt, dm in dirtree.dirs:
            if dname == part:
                tree, meta = dt, dm
                break
        else:
            for fname, fcsum in dirtree.files:
                if fname == part and i == len(parts) - 1:
                    return tree, meta, fcsum
            raise RepoError(f"no such file or directory: {subpath}")
    return tree, meta, None


def checkout(
    repo: Repo, rev: str, dest: str | os.PathLike[str], options: CheckoutOptions | None = None,
    *, progress: Callable[[int], None] | None = None,
) -> str:
    """Check out ``rev`` into ``dest`` (which must not exist, unless ``union``). Returns the commit.

    On failure a new destination is removed again, so nothing half-written is left behind.
    ``progress``, if given, is called with the number of files written so far, every
    ~200 files and once more at the end.
    """
    opts = options or CheckoutOptions()
    csum = repo.resolve_rev(rev)
    assert csum is not None
    target = Path(dest)
    existed = os.path.lexists(target)
    if existed and not opts.union:
        raise RepoError(f"destination {target} already exists", path=str(target))
    try:
        commit = repo.load_commit(csum)
        tree, meta = commit.root_tree, commit.root_meta
        work = _Checkout(repo, opts, progress)
        if opts.subpath:
            tree, meta, file_csum = resolve_path(repo, tree, meta, opts.subpath)
            if file_csum is not None:
                os.makedirs(target, exist_ok=True)
                dfd = os.open(target, _DIR_FLAGS)
                try:
                    work.file(dfd, opts.subpath.rstrip("/").split("/")[-1], file_csum)
                    work._wrote_file()
                finally:
                    os.close(dfd)
                work.report_end()
                return csum
        work.directory(target, tree, meta)
        work.report_end()
    except BaseException as exc:
        if not existed:
            shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, OSError):
            raise os_error(exc, f"checking out into {target}") from exc
        if isinstance(exc, FormatError):
            raise
        raise
    return csum
