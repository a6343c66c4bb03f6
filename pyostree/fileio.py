"""Durable file primitives: atomic writes, directory fsync, syncfs and flock-based locks.

Every durable write in pyostree goes through :func:`atomic_write` (:func:`atomic_writer` for
streamed output, or the staging area of a repository transaction, which ends in :func:`syncfs`).
ENOSPC becomes :class:`NoSpaceError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import LockError, NoSpaceError, RepoError

_libc: ctypes.CDLL | None = None


def _get_libc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        # libc.so.6 first: find_library() runs ldconfig in a subprocess.
        with contextlib.suppress(OSError):
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if _libc is None:
            from ctypes.util import find_library  # imports subprocess: only on this path

            name = find_library("c")
            if name:
                with contextlib.suppress(OSError):
                    _libc = ctypes.CDLL(name, use_errno=True)
    return _libc


def limit_malloc_arenas(n: int = 1) -> None:
    """Ask glibc for at most ``n`` malloc arenas (``mallopt(M_ARENA_MAX)``).

    Each thread otherwise gets its own arena, and the freed memory of the pull's worker
    threads lingers there: on small devices one arena keeps peak RSS down. Call it before
    starting threads; a no-op where glibc's mallopt is not available.
    """
    libc = _get_libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is not None:
        m_arena_max = -8
        with contextlib.suppress(OSError, ValueError):
            mallopt(m_arena_max, n)


def os_error(exc: OSError, what: str) -> RepoError:
    """Translate an OSError into a one-line pyostree error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpaceError(f"no space left on device while {what}", path=str(exc.filename or ""))
    if exc.errno == errno.EROFS:
        return RepoError(f"read-only file system while {what}", path=str(exc.filename or ""))
    if exc.errno in (errno.EACCES, errno.EPERM):
        return RepoError(f"permission denied while {what}: {exc.filename}", path=str(exc.filename))
    return RepoError(f"{what}: {exc.strerror or exc}", path=str(exc.filename or ""))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush the whole filesystem holding ``path`` (falls back to ``sync()``)."""
    libc = _get_libc()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc is not None and hasattr(libc, "syncfs") and libc.syncfs(fd) == 0:
            return
        os.sync()
    finally:
        os.close(fd)


def read_file(path: str | os.PathLike[str], *, bufsize: int = 64 * 1024) -> bytes:
    """A whole (small) file's bytes with raw ``os.read`` calls: cheaper than ``open().read()``
    per file, which matters when reading thousands of metadata objects."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, bufsize)
        if len(data) < bufsize:
            return data
        pieces = [data]
        while chunk := os.read(fd, bufsize):
            pieces.append(chunk)
        return b"".join(pieces)
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, fsync: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync the directory."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}-{time.monotonic_ns()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        if fsync:
            fsync_dir(target.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise os_error(exc, f"writing {target}") from exc


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[BinaryIO]:
    """Stream a new ``path`` into place: the block writes a temp file next to it, which is then
    fsynced and renamed over ``path`` (and the directory fsynced). If the block raises, the
    temp file is removed and ``path`` is left as it was. The mode is 0666 minus the umask, as
    for a file made with ``open()``; :func:`atomic_write` is the same for bytes in memory."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}-{time.monotonic_ns()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise os_error(exc, f"writing {target}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            try:
                fh.flush()
                if fsync:
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise os_error(exc, f"writing {target}") from exc
        try:
            os.replace(tmp, target)
            if fsync:
                fsync_dir(target.parent)
        except OSError as exc:
            raise os_error(exc, f"writing {target}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_symlink(target: str, path: str | os.PathLike[str]) -> None:
    """Point the symlink ``path`` at ``target`` atomically (create a temp link, rename)."""
    link = Path(path)
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise os_error(exc, f"updating symlink {link}") from exc


@contextlib.contextmanager
def file_lock(
    path: str | os.PathLike[str], *, exclusive: bool = True, timeout: float = 30.0, what: str = ""
) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing); :class:`LockError` after ``timeout``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES) and not exclusive:
            yield
            return
        raise os_error(exc, f"opening lock {path}") from exc
    try:
        op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, op)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockError(
                        f"{what or path} is locked by another process", path=str(path)
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        yield
    finally:
        os.close(fd)
