"""A helper process that fetches and stores a share of a pull's content objects.

A loose-object pull spends most of its time running Python code (HTTP requests and their
bookkeeping), and one CPython process runs Python code on one core at a time. So a pull forks
one helper at its start, before it has any thread or event loop, and hands it content objects
while the walk goes on; the two processes then use two cores.

The helper changes nothing about trust. It is given a checksum that the parent took from a
verified dirtree, fetches the object over its own connections, verifies it against that
checksum in its storer threads and stages it in the parent's staging directory, exactly as
the parent would. The parent alone decides when the transaction commits, and only after the
helper has reported every object it was given as stored.

The two talk over a socket pair, in pickled frames (a 4-byte length, then the pickle); they
are the same program, forked, so nothing untrusted crosses it:

    parent -> helper  ("start", staging_dir, content_urls_prefixes, workers)
                      ("get", csum, rel_path, max_archived, max_unpacked)
                      ("flush",)            -- reply once everything given so far is stored
                      end of stream         -- stop (abandoning any work in progress)
    helper -> parent  ("fetched", csum, size)
                      ("flushed", count)    -- objects stored since the last flush
                      ("error", class_name, message)

``PYOSTREE_PULL_HELPER=0`` in the environment turns the helper off (one process, as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import errors
from .errors import PyOstreeError
from .fetcher import BaseFetcher, FetchConfig, fetcher_class, make_fetcher
from .pullstore import STORE_MAX_BYTES, STORE_MAX_JOBS, STORE_THREADS, Storer, fetch_content
from .repo import Repo
from .transaction import Transaction

_FRAME = struct.Struct(">I")
_MAX_FRAME = 1 << 20
# Content objects the helper may have been given and not yet reported as fetched, per worker:
# enough that it never waits for the parent to hand it more.
_BACKLOG_PER_WORKER = 4
_EXIT_WAIT = 30.0


def helper_wanted(url: str) -> bool:
    """Whether a pull from ``url`` should fork a helper: an HTTP(S) remote, at least two CPUs
    to run on, no other thread in this process (forking copies only the calling thread), and
    not turned off with ``PYOSTREE_PULL_HELPER=0``."""
    if os.environ.get("PYOSTREE_PULL_HELPER", "1") == "0" or not hasattr(os, "fork"):
        return False
    if not url.startswith(("http://", "https://", "mirrorlist=")):
        return False
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return cpus >= 2 and threading.active_count() == 1


class PullHelper:
    """The parent's end: forks the helper and hands it content objects."""

    def __init__(self, pid: int, sock: socket.socket, workers: int) -> None:
        self.pid = pid
        self._sock: socket.socket | None = sock
        self.workers = workers
        self.backlog = workers * _BACKLOG_PER_WORKER
        self.outstanding = 0  # given to the helper, not yet reported fetched
        self.error: BaseException | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._flushed: asyncio.Future[int] | None = None
        self._on_fetched: Callable[[str, int], None] | None = None

    @classmethod
    def fork(cls, repo: Repo, config: FetchConfig) -> PullHelper | None:
        """Fork the helper (call before any thread or event loop exists); None if the
        system refuses (the pull then runs in one process)."""
        fetcher_class(config)  # imports the HTTP stack now, so the helper shares its pages
        try:
            parent_sock, child_sock = socket.socketpair()
        except OSError:
            return None
        # Objects that exist now are left alone by the garbage collector (in both processes)
        # until the helper is gone: its passes would write to, and so copy, every page the two
        # processes share.
        gc.freeze()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:  # EAGAIN, ENOMEM
            gc.unfreeze()
            parent_sock.close()
            child_sock.close()
            return None
        if pid == 0:  # the helper
            code = 70
            try:
                parent_sock.close()
                code = _helper_main(child_sock, repo, config, parent)
            finally:
                os._exit(code)
        child_sock.close()
        return cls(pid, parent_sock, min(config.max_in_flight, 16))

    @property
    def started(self) -> bool:
        return self._writer is not None

    async def start(self, staging: Path, on_fetched: Callable[[str, int], None],
                    bases: list[str]) -> None:
        assert self._sock is not None
        self._on_fetched = on_fetched
        reader, self._writer = await asyncio.open_connection(sock=self._sock)
        self._sock = None
        self._reader_task = asyncio.create_task(self._read(reader))
        self._send(("start", str(staging), bases, self.workers))

    def has_room(self) -> bool:
        return self.error is None and self.outstanding < self.backlog

    def give(self, csum: str, rel: str, max_archived: int, max_unpacked: int) -> None:
        self.outstanding += 1
        self._send(("get", csum, rel, max_archived, max_unpacked))

    async def flush(self) -> int:
        """Wait until the helper has stored everything given to it; return how many objects
        it stored since the last flush. Raises the helper's first error."""
        if not self.started:
            return 0
        self._flushed = asyncio.get_running_loop().create_future()
        self._send(("flush",))
        try:
            return await self._flushed
        finally:
            self._flushed = None

    def _send(self, msg: tuple[Any, ...]) -> None:
        if self.error is not None:
            raise self.error
        assert self._writer is not None
        if self._writer.is_closing():
            raise PyOstreeError("the pull's helper process ended unexpectedly")
        _write_frame(self._writer, msg)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while (msg := await _read_frame(reader)) is not None:
                kind = msg[0]
                if kind == "fetched":
                    self.outstanding -= 1
                    assert self._on_fetched is not None
                    self._on_fetched(msg[1], msg[2])
                elif kind == "flushed":
                    if self._flushed is not None and not self._flushed.done():
                        self._flushed.set_result(msg[1])
                elif kind == "error":
                    self._fail(_rebuild_error(msg[1], msg[2]))
            self._fail(PyOstreeError("the pull's helper process ended unexpectedly"))
        except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
            self._fail(PyOstreeError(f"lost the pull's helper process: {exc}"))

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if self._flushed is not None and not self._flushed.done():
            self._flushed.set_exception(self.error)

    async def close(self) -> None:
        """Stop the helper and reap it (its work in progress is abandoned)."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self.error = self.error or PyOstreeError("the pull's helper process is closed")
        await asyncio.get_running_loop().run_in_executor(None, _reap, self.pid)
        gc.unfreeze()


def _reap(pid: int) -> None:
    """Wait for the helper to exit (it does once its socket closes); kill it if it hangs."""
    deadline = time.monotonic() + _EXIT_WAIT
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _write_frame(writer: asyncio.StreamWriter, msg: tuple[Any, ...]) -> None:
    data = pickle.dumps(msg, pickle.HIGHEST_PROTOCOL)
    writer.write(_FRAME.pack(len(data)) + data)


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    try:
        head = await reader.readexactly(_FRAME.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise EOFError("truncated frame") from None
        return None
    (length,) = _FRAME.unpack(head)
    if length > _MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    try:
        return pickle.loads(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        raise EOFError("truncated frame") from None


def _rebuild_error(name: str, message: str) -> BaseException:
    """The helper's error as the same kind of exception in the parent (the CLI maps error
    classes to messages and exit codes)."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, PyOstreeError):
        try:
            return cls(message)
        except TypeError:
            pass
    return PyOstreeError(message)


# --------------------------------------------------------------------------- the helper


def _helper_main(sock: socket.socket, repo: Repo, config: FetchConfig, parent: int) -> int:
    # Ctrl-C reaches the whole process group: the parent handles it and closes the socket.
    # SIGTERM (systemd stops every process of a service) ends the helper at once, whatever
    # handler the parent had installed (the updater's only sets its stop event).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(parent)
    # Once the parent has stopped (after an error it reports itself), writes to it fail and
    # asyncio would log about them on the terminal the two share.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        asyncio.run(_Helper(repo, config).serve(sock))
    except BaseException:  # the parent reports errors; a helper never prints
        return 1
    return 0


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when the parent dies: a pull that is killed
    (SIGKILL, OOM) must not leave a helper writing into its staging directory."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the call above
        os._exit(1)


class _Helper:
    def __init__(self, repo: Repo, config: FetchConfig) -> None:
        self.repo = repo
        self.config = config
        self.todo: deque[tuple[str, str, int, int]] = deque()
        self.more = asyncio.Event()  # set when todo gets work
        self.idle = asyncio.Event()  # set when todo is empty and no worker is busy
        self.busy = 0
        self.stored = 0
        self.failed = False
        self.writer: asyncio.StreamWriter | None = None

    async def serve(self, sock: socket.socket) -> None:
        reader, self.writer = await asyncio.open_connection(sock=sock)
        msg = await _read_frame(reader)
        if msg is None or msg[0] != "start":
            return
        _, staging, self.bases, workers = msg
        txn = Transaction.join(self.repo, Path(staging))
        fetcher = make_fetcher(self.config)
        storer = Storer(STORE_THREADS, STORE_MAX_BYTES, STORE_MAX_JOBS)
        tasks = [asyncio.create_task(self.worker(fetcher, storer, txn)) for _ in range(workers)]
        try:
            while (msg := await _read_frame(reader)) is not None:
                if msg[0] == "get":
                    self.todo.append(msg[1:])
                    self.more.set()
                elif msg[0] == "flush":
                    await self.flush(storer)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            storer.close()
            await fetcher.close()

    async def worker(self, fetcher: BaseFetcher, storer: Storer, txn: Transaction) -> None:
        while True:
            while not self.todo:
                self.more.clear()
                await self.more.wait()
            csum, rel, max_archived, max_unpacked = self.todo.popleft()
            self.busy += 1
            try:
                if self.failed or storer.error is not None:
                    size = 0  # after an error: report it fetched, do nothing
                else:
                    size = await fetch_content(fetcher, storer, txn,
                                               [f"{b}/{rel}" for b in self.bases],
                                               csum, max_archived, max_unpacked)
                    self.stored += 1
            except Exception as exc:  # sent to the parent, which raises it
                self.report_error(exc)
                size = 0
            finally:
                self.busy -= 1
            self.send(("fetched", csum, size))
            if not self.todo and not self.busy:
                self.idle.set()

    async def flush(self, storer: Storer) -> None:
        while self.todo or self.busy:
            self.idle.clear()
            await self.idle.wait()
        await storer.drain()
        if storer.error is not None:
            self.report_error(storer.error)
        elif not self.failed:
            self.send(("flushed", self.stored))
            self.stored = 0

    def report_error(self, exc: BaseException) -> None:
        if not self.failed:
            self.failed = True
            self.send(("error", type(exc).__name__, str(exc)))

    def send(self, msg: tuple[Any, ...]) -> None:
        assert self.writer is not None
        if self.writer.is_closing():  # the parent is gone or has stopped listening
            return
        _write_frame(self.writer, msg)
