"""Checking out a commit into a directory (``ostree checkout``).

All filesystem operations go through directory file descriptors (``dir_fd``/``O_NOFOLLOW``), so a
name from a dirtree, or a symlink already in the destination, can never make a checkout write
outside its destination directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import attrs

from .errors import FormatError, RepoError
from .fileio import os_error, read_file
from .formats.content import parse_ostreemeta
from .formats.objects import DirMeta
from .repo import OSTREEMETA_XATTR, Repo, RepoMode, bare_user_symlink_target

_CHUNK = 256 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PROGRESS_EVERY = 200  # files between two progress callbacks
_DIRMETA_CACHE = 256  # parsed dirmeta objects kept per checkout
_MAX_QUEUED = 64  # directories waiting with an open fd; beyond that one is filled at once


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
        self.written = 0  # files (and symlinks) written so far
        # Without a callback the per-file check never fires: one int comparison per file.
        self._next_report = _PROGRESS_EVERY if progress is not None else sys.maxsize
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
        # For the per-file hot path: where file objects live (only bare repos are linked from,
        # so always ``.file``), and whether their mode is in the bare-user xattr.
        self._objects = f"{repo.objects_dir}/"
        self._bare_user = mode is RepoMode.BARE_USER
        # A tree has thousands of directories but a handful of distinct dirmeta objects.
        self._dirmetas: dict[str, DirMeta] = {}

    # -- helpers

    def _wrote_files(self, n: int) -> None:
        self.written += n
        if self.written >= self._next_report:
            self._next_report = self.written + _PROGRESS_EVERY
            assert self.progress is not None
            self.progress(self.written)

    def report_end(self) -> None:
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
        src = f"{self._objects}{csum[:2]}/{csum[2:]}.file"
        try:
            st = os.lstat(src)
            mode = st.st_mode
            if self._bare_user:
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
    # Directories are filled from a LIFO stack (depth first, like a recursive walk) in the
    # calling thread. A parent creates and opens each subdirectory itself and hands over the open
    # fd, so nothing is ever looked up by path; it sets its own mode and times once its entries
    # exist (entries created inside a child do not touch the parent's mtime). Two threads were
    # tried: on a quiet ext4 the kernel part of a checkout is small, and the two threads spent
    # more on handing the GIL back and forth than they gained (0.94 s vs 1.2 s for 24k objects).

    def directory(self, dest: Path, tree_csum: str, meta_csum: str) -> None:
        """Check out a tree as the new (or, with ``union``, existing) directory ``dest``."""
        existed = False
        try:
            os.mkdir(dest, 0o700)
        except FileExistsError:
            if not self.opts.union:
                raise RepoError(f"destination {dest} already exists", path=str(dest)) from None
            existed = True
        stack = [(os.open(dest, _DIR_FLAGS), tree_csum, meta_csum, existed)]
        try:
            while stack:
                self._fill(*stack.pop(), stack)
        finally:
            for fd, *_ in stack:  # left over after an error
                os.close(fd)

    def _fill(self, dfd: int, tree_csum: str, meta_csum: str, existed: bool,
              stack: list[tuple[int, str, str, bool]]) -> None:
        """Write one directory's entries (``dfd`` is ours to close) and push its
        subdirectories, opened, onto ``stack``."""
        try:
            meta = self._dirmetas.get(meta_csum)
            if meta is None:
                meta = self.repo.load_dirmeta(meta_csum)
                if len(self._dirmetas) < _DIRMETA_CACHE:
                    self._dirmetas[meta_csum] = meta
            tree = self.repo.load_dirtree(tree_csum)
            if not existed and not self.user_mode:
                for xname, value in meta.xattrs:
                    with contextlib.suppress(OSError):
                        os.setxattr(dfd, xname[:-1], value)
            file = self.file
            for fname, fcsum in tree.files:
                file(dfd, fname, fcsum)
            self._wrote_files(len(tree.files))  # progress is reported per directory
            for dname, dtree, dmeta in tree.dirs:
                child_existed = False
                try:
                    os.mkdir(dname, 0o700, dir_fd=dfd)
                except FileExistsError:
                    if not self.opts.union:
                        raise
                    child_existed = True
                child = os.open(dname, _DIR_FLAGS, dir_fd=dfd)
                if len(stack) < _MAX_QUEUED:
                    stack.append((child, dtree, dmeta, child_existed))
                else:  # bound the open fds: fill this one now
                    self._fill(child, dtree, dmeta, child_existed, stack)
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
    ``progress``, if given, is called with the number of files written so far, after a
    directory once ~200 more were written, and once more at the end.
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
                    work._wrote_files(1)
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
