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
from collections.abc import Callable, Iterable
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


WHITEOUT_PREFIX = ".wh."  # Docker/OCI whiteout: remove NAME (--whiteouts)
OPAQUE_WHITEOUT = ".wh..wh..opq"  # empty the directory first (--whiteouts)
PASSTHROUGH_WHITEOUT_PREFIX = ".ostree-wh."  # becomes an overlayfs char 0:0 device


class PathNotFoundError(RepoError):
    """A ``--subpath`` that is not in the commit (``--allow-noent`` makes it a no-op)."""


@attrs.frozen
class CheckoutOptions:
    """The options of ``ostree checkout``.

    At most one of ``union`` (overwrite files), ``union_add`` (keep existing files) and
    ``union_identical`` (existing files must be identical; needs ``require_hardlinks``).
    ``skip_list`` holds paths relative to the checked-out root as ostree's filter sees them:
    ``/`` for the root, ``/dir/`` for directories, ``/dir/file`` for anything else."""

    user_mode: bool = False
    union: bool = False
    force_copy: bool = False
    require_hardlinks: bool = False
    subpath: str | None = None
    union_add: bool = False
    union_identical: bool = False
    process_whiteouts: bool = False
    process_passthrough_whiteouts: bool = False
    allow_noent: bool = False
    bareuseronly_dirs: bool = False
    skip_list: frozenset[str] = frozenset()

    def __attrs_post_init__(self) -> None:
        if self.union + self.union_add + self.union_identical > 1:
            raise ValueError("at most one of union, union_add and union_identical")
        if self.require_hardlinks and self.force_copy:
            raise ValueError("require_hardlinks and force_copy exclude each other")
        if self.union_identical and not self.require_hardlinks:
            raise ValueError("union_identical requires require_hardlinks")

    @property
    def merge(self) -> bool:
        """Whether existing directories are merged into (any of the union modes)."""
        return self.union or self.union_add or self.union_identical


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
        opts = self.opts
        if (opts.process_whiteouts or opts.process_passthrough_whiteouts) and (
            name.startswith((WHITEOUT_PREFIX, PASSTHROUGH_WHITEOUT_PREFIX))
        ) and self._whiteout(dfd, name, csum):
            return
        if opts.union_add or opts.union_identical:
            try:
                st = os.lstat(name, dir_fd=dfd)
            except FileNotFoundError:
                pass
            else:
                if opts.union_identical:
                    self._check_identical(dfd, name, csum, st)
                return  # --union-add keeps what is there
        elif opts.union:
            if opts.process_whiteouts:  # OCI semantics: a file may replace a directory
                rm_rf_at(dfd, name)
            else:
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

    def _whiteout(self, dfd: int, name: str, csum: str) -> bool:
        """Handle ``name`` if it is a whiteout to process; False if it is an ordinary entry."""
        header, stream = self.repo.open_content(csum)
        if stream is not None:
            stream.close()
        if header.is_symlink:
            return False
        if self.opts.process_whiteouts and name.startswith(WHITEOUT_PREFIX):
            target = _whiteout_target(name, WHITEOUT_PREFIX)
            rm_rf_at(dfd, target)
            return True
        if not (self.opts.process_passthrough_whiteouts
                and name.startswith(PASSTHROUGH_WHITEOUT_PREFIX)):
            return False
        target = _whiteout_target(name, PASSTHROUGH_WHITEOUT_PREFIX)
        perm = header.mode & 0o7777
        try:
            os.mknod(target, stat.S_IFCHR | perm, 0, dir_fd=dfd)
        except FileExistsError:
            if self.opts.union_add:
                return True
            if self.opts.union_identical:
                st = os.lstat(target, dir_fd=dfd)
                if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0) or (
                    not self.user_mode and ((st.st_uid, st.st_gid) != (header.uid, header.gid)
                                            or stat.S_IMODE(st.st_mode) != perm)
                ):
                    raise RepoError(f"existing destination file {target} does not match "
                                    "the whiteout device") from None
                return True
            if not self.opts.union:
                raise RepoError(f"Creating whiteout char device {target}: File exists") from None
            os.unlink(target, dir_fd=dfd)
            os.mknod(target, stat.S_IFCHR | perm, 0, dir_fd=dfd)
        if not self.user_mode:
            for xname, value in header.xattrs:
                with contextlib.suppress(OSError):
                    os.setxattr(f"/proc/self/fd/{dfd}/{target}", xname[:-1], value,
                                follow_symlinks=False)
            os.chown(target, header.uid, header.gid, dir_fd=dfd, follow_symlinks=False)
            os.chmod(target, perm, dir_fd=dfd)
        return True

    def _check_identical(self, dfd: int, name: str, csum: str, st: os.stat_result) -> None:
        """``--union-identical``: ``name`` exists; it must be the object ``csum`` (the same
        inode, or the same checksum), else the checkout fails."""
        from .commit import disk_identity

        src = f"{self._objects}{csum[:2]}/{csum[2:]}.file"
        with contextlib.suppress(OSError):
            src_st = os.lstat(src)
            if (src_st.st_dev, src_st.st_ino) == (st.st_dev, st.st_ino):
                return
        header, stream = self.repo.open_content(csum)
        if stream is not None:
            stream.close()
        if header.is_symlink:
            if stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=dfd) == header.symlink_target:
                return
        elif stat.S_ISREG(st.st_mode):
            ignore = self.repo.mode is RepoMode.BARE_USER_ONLY
            if disk_identity(f"/proc/self/fd/{dfd}/{name}", st, ignore_xattrs=ignore) == csum:
                return
        raise RepoError(f"{name}: File exists and differs from object {csum} "
                        "(--union-identical)")

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

    def _prepare_dir(self, parent_fd: int, name: str, tree_csum: str) -> None:
        """Before a directory is made: with ``--whiteouts``, an opaque whiteout in it empties
        what is there, and with ``--union`` a non-directory in its place goes."""
        if not self.opts.process_whiteouts:
            return
        if any(f == OPAQUE_WHITEOUT for f, _ in self.repo.load_dirtree(tree_csum).files):
            rm_rf_at(parent_fd, name)
        elif self.opts.union:
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISDIR(os.lstat(name, dir_fd=parent_fd).st_mode):
                    rm_rf_at(parent_fd, name)

    def directory(self, dest: Path, tree_csum: str, meta_csum: str) -> None:
        """Check out a tree as the new (or, with a union mode, existing) directory ``dest``."""
        if "/" in self.opts.skip_list:
            return
        existed = False
        parent = os.open(dest.parent, _DIR_FLAGS & ~os.O_NOFOLLOW)
        try:
            self._prepare_dir(parent, dest.name, tree_csum)
            try:
                os.mkdir(dest.name, 0o700, dir_fd=parent)
            except FileExistsError:
                if not self.opts.merge:
                    raise RepoError(f"destination {dest} already exists",
                                    path=str(dest)) from None
                existed = True
            root_fd = os.open(dest.name, _DIR_FLAGS, dir_fd=parent)
        finally:
            os.close(parent)
        stack = [(root_fd, tree_csum, meta_csum, existed, "/")]
        try:
            while stack:
                self._fill(*stack.pop(), stack)
        finally:
            for fd, *_ in stack:  # left over after an error
                os.close(fd)

    def _fill(self, dfd: int, tree_csum: str, meta_csum: str, existed: bool, path: str,
              stack: list[tuple[int, str, str, bool, str]]) -> None:
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
            skip = self.opts.skip_list
            for fname, fcsum in tree.files:
                if not skip or path + fname not in skip:
                    file(dfd, fname, fcsum)
            self._wrote_files(len(tree.files))  # progress is reported per directory
            for dname, dtree, dmeta in tree.dirs:
                child_path = f"{path}{dname}/"
                if skip and child_path in skip:
                    continue
                self._prepare_dir(dfd, dname, dtree)
                child_existed = False
                try:
                    os.mkdir(dname, 0o700, dir_fd=dfd)
                except FileExistsError:
                    if not self.opts.merge:
                        raise
                    child_existed = True
                child = os.open(dname, _DIR_FLAGS, dir_fd=dfd)
                if len(stack) < _MAX_QUEUED:
                    stack.append((child, dtree, dmeta, child_existed, child_path))
                else:  # bound the open fds: fill this one now
                    self._fill(child, dtree, dmeta, child_existed, child_path, stack)
            # Like ostree: directories that were already there keep their metadata.
            if not existed:
                # bare-user-only repos hold no setuid, sticky or world-writable directories.
                # (and --bareuseronly-dirs asks for the same).
                perm = meta.mode & (0o775 if self.repo.mode is RepoMode.BARE_USER_ONLY
                                    or self.opts.bareuseronly_dirs else 0o7777)
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
            raise PathNotFoundError(f"no such file or directory: {subpath}")
    return tree, meta, None


def _whiteout_target(name: str, prefix: str) -> str:
    """The entry a whiteout called ``name`` stands for. ostree takes ``.wh..`` and ``.wh...``
    too, and would then empty the directory or its parent; pyostree refuses them."""
    target = name[len(prefix):]
    if target in ("", ".", ".."):
        raise RepoError(f"Invalid whiteout {name!r}")
    return target


def rm_rf_at(dfd: int, name: str) -> None:
    """Remove ``name`` in the directory ``dfd`` and, if it is a directory, everything in it;
    symlinks are removed, never followed. A missing ``name`` is fine."""
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dfd)
        return
    fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    try:
        for entry in os.listdir(fd):
            rm_rf_at(fd, entry)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dfd)


def parse_checkout_list(data: bytes) -> list[tuple[str, str | None]]:
    """``--from-file``/``--from-stdin`` input: NUL-terminated ``REV``, ``SUBPATH`` pairs, as
    ostree reads them (a missing last subpath means the whole commit; an empty REV ends)."""
    fields = data.split(b"\0")
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(fields) and fields[i]:
        try:
            rev = fields[i].decode("utf-8")
            sub = fields[i + 1].decode("utf-8") if i + 1 < len(fields) else None
        except UnicodeDecodeError:
            raise RepoError("checkout list: entry is not UTF-8") from None
        if sub == "" and i + 2 >= len(fields):
            sub = None  # "REV\0" at the end of the input: no subpath was given
        out.append((rev, sub))
        i += 2
    return out


def checkout_many(repo: Repo, entries: Iterable[tuple[str, str | None]],
                  dest: str | os.PathLike[str], options: CheckoutOptions | None = None) -> None:
    """Check out each (rev, subpath) in turn into ``dest`` (``--from-file``)."""
    opts = options or CheckoutOptions()
    for rev, sub in entries:
        csum = repo.resolve_rev(rev)
        assert csum is not None
        try:
            if sub == "":  # ostree cannot resolve an empty subpath either
                if opts.allow_noent:
                    continue
                raise PathNotFoundError("no such file or directory: /")
            checkout(repo, csum, dest, attrs.evolve(opts, subpath=sub))
        except RepoError as exc:
            raise RepoError(f"Processing tree {csum}: {exc}") from exc


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
    if existed and not opts.merge:
        raise RepoError(f"destination {target} already exists", path=str(target))
    try:
        commit = repo.load_commit(csum)
        tree, meta = commit.root_tree, commit.root_meta
        work = _Checkout(repo, opts, progress)
        if opts.subpath:
            try:
                tree, meta, file_csum = resolve_path(repo, tree, meta, opts.subpath)
            except PathNotFoundError:
                if opts.allow_noent:
                    return csum
                raise
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
