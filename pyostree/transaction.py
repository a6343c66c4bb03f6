"""Repository transactions: verified objects are staged, synced, then renamed into ``objects/``.

An object never appears under ``objects/`` before its bytes are durable: objects are written to
temp files in ``tmp/staging-<boot-id>-<random>/``, renamed to ``XX/REST.EXT`` there (the layout
of ``objects/``) once verified, and :meth:`Transaction.commit` runs ``syncfs`` before moving them
(libostree does the same). A prefix directory that ``objects/`` lacks moves with one rename.
A crashed transaction leaves a staging directory; the next transaction re-verifies every object
in it before adopting it, so nothing is fetched twice and nothing unverified is trusted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from .core import ObjectType, is_checksum
from .errors import ChecksumError, FormatError, PyOstreeError, RepoError
from .fileio import file_lock, os_error, syncfs
from .formats.content import (
    ContentHasher,
    FileHeader,
    archive_header_length,
    new_compressor,
    parse_archive_header,
)
from .formats.objects import parse_object
from .repo import OSTREEMETA_XATTR, Repo, RepoMode

_CHUNK = 256 * 1024
_PREFIXES = frozenset(f"{i:02x}" for i in range(256))


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        return "noboot"


class _VerifiedDigest:
    """Stands in for a :class:`ContentHasher` when the caller has already verified the data."""

    __slots__ = ("_csum",)

    def __init__(self, csum: str) -> None:
        self._csum = csum

    def update(self, chunk: bytes | memoryview) -> None:
        pass

    def hexdigest(self) -> str:
        return self._csum


class ContentWriter:
    """Streams one content object into the staging area in the repository's own format.

    With ``checksum`` the caller vouches that the data it writes hashes to it (the delta
    executor verifies every object before writing it), so the data is not hashed twice. With
    ``expected``, :meth:`finish` checks the data against it. Either way the temp file is made in
    the object's own staging directory, so staging it is a rename within one directory: a
    rename across directories takes the filesystem-wide rename lock, and two storer threads
    then wait for each other.
    """

    def __init__(self, txn: Transaction, header: FileHeader, *, checksum: str | None = None,
                 expected: str | None = None) -> None:
        if txn.check_content is not None:
            txn.check_content(header, checksum or expected or "")
        self.txn = txn
        self.header = header
        self.expected = expected
        self.hasher: ContentHasher | _VerifiedDigest = (
            ContentHasher(header) if checksum is None else _VerifiedDigest(checksum))
        self.size = 0
        mode = txn.repo.mode
        self.path = txn.new_temp_file(checksum or expected)
        self._compressor = new_compressor() if mode.is_archive else None
        self._fd = -1
        if header.is_symlink:
            if mode is RepoMode.ARCHIVE:
                self._open()
                self._write_raw(header.archive_header())
            elif mode is RepoMode.BARE_USER:
                self._open()
                self._write_raw(header.symlink_target.encode() + b"\0")
        else:
            self._open()
            if self._compressor is not None:
                self._write_raw(header.archive_header())

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                               0o644)
        except OSError as exc:
            raise os_error(exc, "creating a staging file") from exc

    def _write_raw(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise os_error(exc, "writing an object") from exc

    def write(self, chunk: bytes | memoryview) -> None:
        if self.header.is_symlink:
            if chunk:
                raise FormatError("symlink objects have no data")
            return
        self.hasher.update(chunk)
        self.size += len(chunk)
        if self._compressor is not None:
            self._write_raw(self._compressor.compress(chunk))
        else:
            self._write_raw(chunk)

    def write_all(self, chunks: Iterable[bytes | memoryview]) -> str:
        """Write every chunk, then :meth:`finish`; on any failure nothing is left behind."""
        try:
            for chunk in chunks:
                self.write(chunk)
        except BaseException:
            self.abort()
            raise
        return self.finish()

    def finish(self) -> str:
        """Verify the checksum (against ``expected``, when the constructor was given one) and
        stage the object."""
        expected = self.expected
        try:
            if not self.header.is_symlink and self.size != self.header.size:
                raise FormatError(
                    f"file object has {self.size} bytes, header says {self.header.size}"
                )
            csum = self.hasher.hexdigest()
            if expected is not None and csum != expected:
                raise ChecksumError(
                    f"corrupted file object; checksum expected={expected} actual={csum}",
                    expected=expected, actual=csum,
                )
            if self._compressor is not None and not self.header.is_symlink:
                self._write_raw(self._compressor.flush())
            self._apply_metadata()
        except BaseException:
            self.abort()
            raise
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.txn.stage(self.path, ObjectType.FILE, csum)
        return csum

    def _apply_metadata(self) -> None:
        h = self.header
        mode = self.txn.repo.mode
        try:
            if mode is RepoMode.ARCHIVE:
                return
            if h.is_symlink and mode in (RepoMode.BARE, RepoMode.BARE_USER_ONLY):
                os.symlink(h.symlink_target, self.path)
                if mode is RepoMode.BARE:
                    os.lchown(self.path, h.uid, h.gid)
                    for name, value in h.xattrs:
                        os.setxattr(self.path, name[:-1], value, follow_symlinks=False)
                os.utime(self.path, ns=(0, 0), follow_symlinks=False)
                return
            fd = self._fd
            if mode is RepoMode.BARE_USER:
                perm = 0o644 if h.is_symlink else (h.mode & 0o775) | stat.S_IRUSR
                os.fchmod(fd, perm)
                os.setxattr(fd, OSTREEMETA_XATTR, h.ostreemeta())
            elif mode is RepoMode.BARE_USER_ONLY:
                os.fchmod(fd, h.mode & 0o775 | stat.S_IRUSR)
            else:
                os.fchown(fd, h.uid, h.gid)
                os.fchmod(fd, h.mode & 0o7777)
                for name, value in h.xattrs:
                    os.setxattr(fd, name[:-1], value)
            os.utime(fd, ns=(0, 0))
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise RepoError(
                    f"the filesystem of {self.txn.repo.path} does not support the xattrs "
                    f"{mode.value} mode needs"
                ) from exc
            raise os_error(exc, "writing object metadata") from exc

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class Transaction:
    """A set of objects written together; use as a context manager (commit on success)."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self._lock = threading.Lock()
        # The staging directory itself records what is staged (``XX/REST.EXT`` files, named as
        # in ``objects/``): no per-object state in memory, which matters for trees of tens of
        # thousands of objects.
        self._n_staged = 0
        self._dirs: set[str] = set()  # prefix directories made in the staging directory
        self._counter = 0
        self._lock_cm: contextlib.AbstractContextManager[None] | None = None
        self.staging: Path | None = None
        # ``staging`` as a string ending in "/": the per-object paths are built with plain
        # string formatting (a pathlib join costs more than the lstat it feeds).
        self._prefix = ""
        # ``pull --per-object-fsync``: fsync each object as it is staged, so dirty data never
        # piles up for the one syncfs of :meth:`commit` (which still runs).
        self.per_object_fsync = False
        # ``commit --fsync=false``: :meth:`commit` skips its syncfs calls.
        self.fsync = True
        # A policy every content object written here must pass (``pull --bareuseronly-files``):
        # called with its header and checksum before anything is written; raises to refuse.
        self.check_content: Callable[[FileHeader, str], None] | None = None

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> Transaction:
        self.begin()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort(keep_staged=True)

    @classmethod
    def join(cls, repo: Repo, staging: Path) -> Transaction:
        """Write into the staging directory of a transaction that another process began (and
        will commit): the pull's helper process. The joined object only stages objects."""
        txn = cls(repo)
        txn.staging = staging
        txn._prefix = f"{staging}/"
        return txn

    def add_staged(self, count: int) -> None:
        """Count objects another process staged here (see :meth:`join`)."""
        with self._lock:
            self._n_staged += count

    def begin(self) -> None:
        tmp = self.repo.tmp_dir
        try:
            tmp.mkdir(exist_ok=True)
            self.staging = tmp / f"staging-{boot_id()}-{secrets.token_hex(6)}"
            self.staging.mkdir()
            self._prefix = f"{self.staging}/"
        except OSError as exc:
            raise os_error(exc, "creating a staging directory") from exc
        self._lock_cm = file_lock(self.staging / ".lock", what="staging directory")
        self._lock_cm.__enter__()
        self._adopt_stale()

    def _adopt_stale(self) -> None:
        """Re-verify objects left by crashed transactions; keep the good ones, drop the rest."""
        assert self.staging is not None
        for old in sorted(self.repo.tmp_dir.glob("staging-*")):
            if old == self.staging or not old.is_dir():
                continue
            try:
                cm = file_lock(old / ".lock", timeout=0, what="staging")
                cm.__enter__()
            except PyOstreeError:
                continue  # another live transaction owns it
            try:
                for entry in os.scandir(old):
                    name = entry.name
                    if _is_prefix_dir(entry):
                        for sub in os.scandir(entry.path):
                            if not sub.name.startswith("tmp-"):
                                self._adopt_one(Path(sub.path), name + sub.name)
                    elif name != ".lock" and not name.startswith("tmp-"):
                        self._adopt_one(Path(entry.path), name)  # the flat layout of old
            finally:
                cm.__exit__(None, None, None)
            shutil.rmtree(old, ignore_errors=True)

    def _adopt_one(self, path: Path, name: str) -> None:
        """Adopt ``path``, named ``CSUM.EXT``, if it is the verified object it claims to be."""
        stem, _, ext = name.partition(".")
        try:
            otype = ObjectType.from_extension(ext)
        except FormatError:
            return
        if not is_checksum(stem) or self.repo.has_object(otype, stem):
            return
        try:
            if otype.is_meta:
                data = path.read_bytes()
                if otype in (ObjectType.COMMIT_META, ObjectType.TOMBSTONE_COMMIT):
                    parse_object(otype, data)
                elif hashlib.sha256(data).hexdigest() != stem:
                    return
                else:
                    parse_object(otype, data)
            elif verify_staged_content(self.repo, path) != stem:
                return
        except (PyOstreeError, OSError, ValueError):
            return
        with contextlib.suppress(OSError, PyOstreeError):
            self._prefix_dir(stem)
            os.rename(path, self._staged_file(otype, stem))
            with self._lock:
                self._n_staged += 1

    def new_temp_path(self, csum: str | None = None) -> Path:
        return Path(self.new_temp_file(csum))

    def new_temp_file(self, csum: str | None = None) -> str:
        """A fresh name for a temp file in the staging directory (not created).

        Given the checksum of the object it will hold, the name is in that object's prefix
        directory: creating a file locks its directory while the kernel allocates the inode,
        so writers in different directories do not wait for each other."""
        assert self.staging is not None, "transaction not begun"
        with self._lock:
            self._counter += 1
            n = self._counter
        if csum is None:
            return f"{self._prefix}tmp-{os.getpid()}-{threading.get_ident()}-{n}"
        prefix = self._prefix_dir(csum)
        return f"{prefix}/tmp-{os.getpid()}-{threading.get_ident()}-{n}"

    def _prefix_dir(self, csum: str) -> str:
        """The staging directory ``XX`` of an object, made if needed."""
        prefix = csum[:2]
        path = self._prefix + prefix
        if prefix not in self._dirs:
            try:
                os.mkdir(path)
            except FileExistsError:
                pass
            except OSError as exc:
                raise os_error(exc, "creating a staging directory") from exc
            with self._lock:
                self._dirs.add(prefix)
        return path

    def _staged_file(self, objtype: ObjectType, csum: str) -> str:
        """Where a staged object lives: ``XX/REST.EXT`` as in ``objects/`` (``.filez``...)."""
        ext = "filez" if objtype is ObjectType.FILE and self.repo.mode.is_archive else (
            objtype.extension)
        return f"{self._prefix}{csum[:2]}/{csum[2:]}.{ext}"

    def stage(self, path: str | Path, objtype: ObjectType, csum: str) -> None:
        """Move a verified temp file into the staging area under its final name."""
        assert self.staging is not None
        self._prefix_dir(csum)
        try:
            if self.per_object_fsync:
                _fsync_file(path)
            os.rename(path, self._staged_file(objtype, csum))
        except OSError as exc:
            raise os_error(exc, "staging an object") from exc
        with self._lock:
            self._n_staged += 1

    def has_object(self, objtype: ObjectType, csum: str) -> bool:
        lexists = os.path.lexists
        return lexists(self.repo.object_file(objtype, csum)) or bool(
            self._prefix and lexists(self._staged_file(objtype, csum)))

    def staged_path(self, objtype: ObjectType, csum: str) -> Path | None:
        if not self._prefix:
            return None
        path = self._staged_file(objtype, csum)
        return Path(path) if os.path.lexists(path) else None

    # -------------------------------------------------------------- writers

    def write_metadata(self, objtype: ObjectType, data: bytes, expected: str | None = None, *,
                       verified: bool = False) -> str:
        """Checksum, validate and stage a metadata object. Commitmeta/tombstones need a name.

        ``verified`` says the caller has already checked ``data`` against ``expected`` and
        parsed it (the pull parses every dirtree as it arrives), so neither is done twice."""
        verified = verified and expected is not None
        if objtype in (ObjectType.COMMIT_META, ObjectType.TOMBSTONE_COMMIT):
            if expected is None:
                raise ValueError("detached metadata needs the commit checksum")
            csum = expected
        elif verified:
            assert expected is not None
            csum = expected
        else:
            csum = hashlib.sha256(data).hexdigest()
            if expected is not None and csum != expected:
                raise ChecksumError(
                    f"corrupted {objtype.extension} object; checksum expected={expected} "
                    f"actual={csum}", expected=expected, actual=csum,
                )
        if not verified:
            parse_object(objtype, data)
        if objtype is not ObjectType.COMMIT_META and self.has_object(objtype, csum):
            return csum
        path = self.new_temp_file(csum)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise os_error(exc, f"writing {objtype.extension} object") from exc
        # Detached metadata is mutable: a newer copy replaces the staged one (rename).
        self.stage(path, objtype, csum)
        return csum

    def content_writer(self, header: FileHeader) -> ContentWriter:
        return ContentWriter(self, header)

    def write_content(
        self, header: FileHeader, chunks: Iterable[bytes], expected: str | None = None
    ) -> str:
        if expected is not None and self.has_object(ObjectType.FILE, expected):
            for _ in chunks:
                pass
            return expected
        return ContentWriter(self, header, expected=expected).write_all(chunks)

    def stage_archive_file(self, path: Path, expected: str) -> None:
        """Stage a ``.filez`` file verbatim (archive repos only); the caller verified it."""
        if not self.repo.mode.is_archive:
            raise ValueError("stage_archive_file needs an archive repository")
        self.stage(path, ObjectType.FILE, expected)

    # -------------------------------------------------------------- commit / abort

    def commit(self) -> int:
        """Sync the staged objects to disk, then rename them into ``objects/``."""
        assert self.staging is not None
        repo = self.repo
        count = 0
        try:
            if self._n_staged and self.fsync:
                syncfs(self.staging)
            with os.scandir(self.staging) as entries:
                prefixes = [e.name for e in entries if _is_prefix_dir(e)]  # not .lock, tmp-*
            for prefix in prefixes:
                count += self._commit_prefix(prefix)
            if count and self.fsync:
                syncfs(repo.objects_dir)
        except OSError as exc:
            raise os_error(exc, "committing the transaction") from exc
        self._n_staged = 0
        self._finish()
        return count

    def _commit_prefix(self, prefix: str) -> int:
        """Move the staged objects ``XX/*`` into ``objects/XX/``; return how many there were.

        Where ``objects/XX`` does not exist yet (or is empty) the directory moves whole."""
        src = self._prefix + prefix
        dest = f"{self.repo.objects_dir}/{prefix}"
        names = []
        for name in os.listdir(src):
            if name.startswith("tmp-"):  # left by a writer that failed; never an object
                os.unlink(f"{src}/{name}")
            else:
                names.append(name)
        if not names:
            return 0
        try:
            os.rename(src, dest)
            return len(names)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        for name in names:
            os.rename(f"{src}/{name}", f"{dest}/{name}")
        return len(names)

    def abort(self, *, keep_staged: bool = False) -> None:
        """Drop the transaction. With ``keep_staged`` the next transaction may re-verify and
        reuse what was staged (resume); otherwise the staging directory is removed."""
        if self.staging is None:
            return
        for entry in [*self.staging.glob("tmp-*"), *self.staging.glob("??/tmp-*")]:
            with contextlib.suppress(OSError):
                entry.unlink()
        staging = self.staging
        self._finish()
        if not keep_staged or not self._n_staged:
            shutil.rmtree(staging, ignore_errors=True)

    def _finish(self) -> None:
        if self._lock_cm is not None:
            self._lock_cm.__exit__(None, None, None)
            self._lock_cm = None
        if self.staging is not None and not self._n_staged:
            shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None
        self._prefix = ""
        self._dirs = set()


def _fsync_file(path: str | Path) -> None:
    """fsync a regular file (a symlink, in bare repositories, has no data to sync)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_prefix_dir(entry: os.DirEntry[str]) -> bool:
    """A ``XX`` object prefix directory (two lowercase hex digits)."""
    return entry.name in _PREFIXES and entry.is_dir(follow_symlinks=False)


def verify_staged_content(repo: Repo, path: Path) -> str:
    """Recompute the checksum of a content object file in the repository's format."""
    mode = repo.mode
    if mode.is_archive:
        from .formats.content import ArchiveInflater

        with open(path, "rb") as fh:
            prefix = fh.read(8)
            length = archive_header_length(prefix)
            header, _ = parse_archive_header(prefix + fh.read(length - 8))
            hasher = ContentHasher(header)
            if header.is_symlink:
                if fh.read(1):
                    raise FormatError("symlink object with a body")
                return hasher.hexdigest()
            inflater = ArchiveInflater(header.size)
            while chunk := fh.read(_CHUNK):
                for piece in inflater.chunks(chunk):
                    hasher.update(piece)
            inflater.finish()
            return hasher.hexdigest()
    # Bare modes: read the staged file the way Repo.open_content reads objects.
    from .repo import bare_user_symlink_target, read_symlink, read_xattrs

    st = os.lstat(path)
    if mode is RepoMode.BARE_USER:
        from .formats.content import parse_ostreemeta

        uid, gid, fmode, xattrs = parse_ostreemeta(
            os.getxattr(path, OSTREEMETA_XATTR, follow_symlinks=False)
        )
        if stat.S_ISLNK(fmode):
            target = bare_user_symlink_target(path.read_bytes(), path.name)
            return ContentHasher(FileHeader(uid, gid, fmode, target)).hexdigest()
        header = FileHeader(uid, gid, fmode, "", xattrs, st.st_size)
    elif stat.S_ISLNK(st.st_mode):
        uid, gid = (0, 0) if mode is RepoMode.BARE_USER_ONLY else (st.st_uid, st.st_gid)
        from .formats.objects import sort_xattrs

        xattrs = () if mode is RepoMode.BARE_USER_ONLY else sort_xattrs(read_xattrs(str(path)))
        return ContentHasher(
            FileHeader(uid, gid, st.st_mode, read_symlink(path, path.name), xattrs)
        ).hexdigest()
    else:
        from .formats.objects import sort_xattrs

        if mode is RepoMode.BARE_USER_ONLY:
            header = FileHeader(0, 0, st.st_mode, "", (), st.st_size)
        else:
            header = FileHeader(st.st_uid, st.st_gid, st.st_mode, "",
                                sort_xattrs(read_xattrs(str(path))), st.st_size)
    hasher = ContentHasher(header)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def copy_stream(src: IO[bytes]) -> Iterable[bytes]:
    while chunk := src.read(_CHUNK):
        yield chunk
