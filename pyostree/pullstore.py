"""Receiving content objects: spooling a download, verifying and storing it in worker threads.

Shared by the pull's event loop (:mod:`pyostree.pull`) and its helper process
(:mod:`pyostree.pullhelper`): both fetch ``.filez`` bodies into a :class:`Spool` and hand them
to a :class:`Storer`, whose threads verify each against its checksum before staging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import ChecksumError, FormatError
from .fetcher import BaseFetcher
from .fileio import os_error
from .formats.content import (
    ArchiveInflater,
    ContentHasher,
    FileHeader,
    archive_header_length,
    parse_archive_header,
)
from .transaction import ContentWriter, Transaction

MiB = 1024 * 1024
SPOOL_LIMIT = 1 * MiB
CHUNK = 256 * 1024
# Storer threads, and how much fetched-but-unstored data may wait for them.
STORE_THREADS = 2
STORE_MAX_BYTES = 4 * MiB
STORE_MAX_JOBS = 256


class Spool:
    """Collects a download in memory, spilling to a staging file past :data:`SPOOL_LIMIT`."""

    def __init__(self, txn: Transaction, max_size: int, csum: str | None = None) -> None:
        self.txn = txn
        self.max_size = max_size
        self.csum = csum  # of the object downloaded: the spill file is made in its directory
        self.parts: list[bytes] = []
        self.size = 0
        self.path: Path | None = None
        self._fh: IO[bytes] | None = None

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        try:
            if self._fh is not None:
                self._fh.write(chunk)
                return
            self.parts.append(chunk)
            if self.size > SPOOL_LIMIT:
                self.path = self.txn.new_temp_path(self.csum)
                self._fh = open(self.path, "wb")  # noqa: SIM115 - closed by finish/discard
                for part in self.parts:
                    self._fh.write(part)
                self.parts = []
        except OSError as exc:  # ENOSPC, EROFS ...: one clear line, not a bare OSError
            raise os_error(exc, "writing a download to the staging area") from exc

    def restart(self) -> None:
        self.discard()
        self.size = 0

    def finish(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError as exc:
                raise os_error(exc, "writing a download to the staging area") from exc

    def open(self) -> IO[bytes]:
        if self.path is not None:
            return open(self.path, "rb")
        import io

        return io.BytesIO(self.data())

    def data(self) -> bytes:
        """The whole body, when it stayed in memory."""
        assert self.path is None
        parts = self.parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def discard(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):  # a full disk fails the flush in close()
                self._fh.close()
            self._fh = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None
        self.parts = []


def store_filez(txn: Transaction, spool: Spool, expected: str, max_unpacked: int) -> None:
    """Verify a downloaded ``.filez`` (header + raw deflate) and store it in the repo's format.

    Runs in a worker thread. The archive header is untrusted: its size only bounds the inflate,
    and the checksum over header fields and data decides."""
    archive = txn.repo.mode.is_archive
    try:
        if spool.path is None:
            _store_filez_bytes(txn, spool.data(), expected, max_unpacked)
            if archive:
                path = txn.new_temp_path(expected)
                try:
                    with open(path, "wb") as out_fh:
                        for part in spool.parts:
                            out_fh.write(part)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                    raise
                txn.stage_archive_file(path, expected)
            return
        with spool.open() as fh:
            _store_filez_stream(txn, fh, expected, max_unpacked)
        if archive:
            path, spool.path = spool.path, None
            txn.stage_archive_file(path, expected)
    finally:
        spool.discard()


def _filez_header(prefix: bytes, expected: str, max_unpacked: int) -> tuple[FileHeader, int]:
    length = archive_header_length(prefix)
    header, _ = parse_archive_header(prefix[:length])
    if header.size > max_unpacked:
        raise FormatError(f"file object {expected} claims {header.size} bytes, more than allowed")
    return header, length


def _store_filez_bytes(txn: Transaction, data: bytes, expected: str, max_unpacked: int) -> None:
    """:func:`store_filez` for a body held in memory (nearly every object): one inflate call
    per 256 KiB of output, no intermediate file object. In archive repositories only the
    checksum is computed here; the caller stages the compressed bytes."""
    header, length = _filez_header(data[:4096], expected, max_unpacked)
    if len(data) < length:  # the header claims more than the first 4 KiB: parse it whole
        raise FormatError(f"file object {expected} is shorter than its header")
    if length > 4096:
        header, length = _filez_header(data, expected, max_unpacked)
    body = data[length:]
    if header.is_symlink:
        if body:
            raise FormatError(f"symlink object {expected} has a body")
        _store_inflated(txn, header, (), expected)
        return
    inflater = ArchiveInflater(header.size)
    _store_inflated(txn, header, inflater.chunks(body), expected)
    inflater.finish()


def _store_filez_stream(txn: Transaction, fh: IO[bytes], expected: str, max_unpacked: int
                        ) -> None:
    prefix = fh.read(8)
    length = archive_header_length(prefix)
    header, _ = _filez_header(prefix + fh.read(length - 8), expected, max_unpacked)
    if header.is_symlink:
        if fh.read(1):
            raise FormatError(f"symlink object {expected} has a body")
        _store_inflated(txn, header, (), expected)
        return
    inflater = ArchiveInflater(header.size)

    def chunks() -> Iterator[bytes]:
        while chunk := fh.read(CHUNK):
            yield from inflater.chunks(chunk)

    _store_inflated(txn, header, chunks(), expected)
    inflater.finish()


def _store_inflated(txn: Transaction, header: FileHeader, chunks: Iterable[bytes | memoryview],
                    expected: str) -> None:
    """Hash the inflated data (archive repos) or write it as a bare object (others)."""
    if not txn.repo.mode.is_archive:
        # Verifies the checksum (and applies txn.check_content); nothing is left behind on
        # failure.
        ContentWriter(txn, header, expected=expected).write_all(chunks)
        return
    if txn.check_content is not None:
        txn.check_content(header, expected)
    hasher = ContentHasher(header)
    for chunk in chunks:
        hasher.update(chunk)
    actual = hasher.hexdigest()
    if actual != expected:
        raise ChecksumError(f"corrupted file object; checksum expected={expected} actual={actual}",
                            expected=expected, actual=actual)


class Storer:
    """Background threads that verify and store fetched objects while the event loop fetches
    the next ones: inflating, hashing and file system calls release the GIL, so storing
    overlaps with the network instead of taking turns with it.

    Jobs are fire-and-forget: the first error is kept in :attr:`error` (the puller stops
    fetching once it is set) and every job still runs, so verified objects stay staged for a
    resumed pull. Memory is bounded by the bytes of queued bodies (:meth:`room`); the event
    loop is woken only when it waits, not once per object."""

    def __init__(self, threads: int, max_bytes: int, max_jobs: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._threads_wanted = threads
        self._threads: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...], int] | None]
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._max_bytes = max_bytes
        self._max_jobs = max_jobs
        self._bytes = 0
        self._count = 0
        # (future, bytes, jobs): the loop is waiting until at most that much is queued.
        self._waiter: tuple[asyncio.Future[None], int, int] | None = None
        self.error: BaseException | None = None

    def submit(self, fn: Callable[..., None], *args: Any, size: int = 0) -> None:
        with self._lock:
            self._bytes += size
            self._count += 1
        if len(self._threads) < self._threads_wanted:
            t = threading.Thread(target=self._run, name="pyostree-store", daemon=True)
            t.start()
            self._threads.append(t)
        self._jobs.put((fn, args, size))

    async def room(self) -> None:
        """Wait until the queue holds less than its byte and job limits (hysteresis: to half
        of them, so a full queue wakes the loop once per batch rather than per object)."""
        if self._bytes < self._max_bytes and self._count < self._max_jobs:
            return
        await self._wait_until(self._max_bytes // 2, self._max_jobs // 2)

    async def drain(self) -> None:
        """Wait until every submitted job has run."""
        await self._wait_until(0, 0)

    async def _wait_until(self, max_bytes: int, max_jobs: int) -> None:
        while True:
            with self._lock:
                if self._bytes <= max_bytes and self._count <= max_jobs:
                    return
                if self._waiter is None:
                    self._waiter = (self._loop.create_future(), max_bytes, max_jobs)
                elif max_jobs < self._waiter[2]:  # drain() joins an earlier room() wait
                    self._waiter = (self._waiter[0], max_bytes, max_jobs)
                fut = self._waiter[0]
            await asyncio.shield(fut)

    def close(self) -> None:
        """Stop the threads once the queue is empty (call after :meth:`drain`)."""
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()
        self._threads = []

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, size = job
            try:
                fn(*args)
            except BaseException as exc:
                with self._lock:
                    if self.error is None:
                        self.error = exc
            with self._lock:
                self._bytes -= size
                self._count -= 1
                waiter = self._waiter
                if waiter is not None and self._bytes <= waiter[1] and self._count <= waiter[2]:
                    self._waiter = None
                    self._loop.call_soon_threadsafe(_resolve, waiter[0])


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def fetch_content(fetcher: BaseFetcher, storer: Storer, txn: Transaction,
                        urls: Sequence[str], csum: str, max_archived: int, max_unpacked: int,
                        ) -> int:
    """Fetch one ``.filez`` and hand it to ``storer`` (its :meth:`Storer.drain` waits until
    it is stored); return the bytes fetched."""
    await storer.room()
    spool = Spool(txn, max_archived, csum)
    try:
        size = await fetcher.fetch_stream(urls, spool.write, max_size=max_archived,
                                          restart=spool.restart)
        spool.finish()
    except BaseException:
        spool.discard()
        raise
    # Only a body held in memory counts against the storer's byte limit.
    storer.submit(_store_content, txn, spool, csum, max_unpacked,
                  size=size if spool.path is None else 0)
    return size


def _store_content(txn: Transaction, spool: Spool, csum: str, max_unpacked: int) -> None:
    try:
        store_filez(txn, spool, csum, max_unpacked)
    except FormatError as exc:
        if csum in str(exc):
            raise
        raise FormatError(f"invalid file object {csum}: {exc}") from None
    except OSError as exc:
        raise os_error(exc, f"storing file object {csum}") from exc
