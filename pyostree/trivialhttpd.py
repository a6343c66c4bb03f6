"""The ``trivial-httpd`` program around :class:`pyostree.httpd.TrivialHttpd`, as libostree's
``ostree-trivial-httpd`` runs it: the port file, the log file, ``--daemonize`` (the caller
returns once the server listens, or fails with the server's own error), ``--autoexit`` and,
without ``--daemonize``, ending with the process that started it. SIGTERM and SIGINT stop the
server cleanly (exit 0).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import attrs

from .errors import PyOstreeError, UsageError
from .fileio import atomic_write
from .httpd import HttpdConfig, RequestLog, TrivialHttpd, check_directory, serve_until


@attrs.frozen
class ServeOptions:
    """Where and how to run: ``port_file`` and ``log_file`` may be ``-`` for stdout;
    ``end_with_parent`` (not with ``daemonize``) makes the process get SIGTERM when its parent
    ends, as the upstream command does (Linux only)."""

    directory: str = "."
    port: int = 0
    port_file: str | None = None
    log_file: str | None = None
    daemonize: bool = False
    autoexit: bool = False
    end_with_parent: bool = False


def run_trivial_httpd(options: ServeOptions, config: HttpdConfig | None = None) -> int:
    """Serve ``options.directory`` until stopped; returns the exit code (0).

    With ``daemonize`` this returns 0 as soon as a detached server listens (the server itself
    never returns here). Fork-based: call it from a process that runs no other threads."""
    if options.daemonize and options.log_file == "-":
        raise UsageError("Cannot use --log-file=- and --daemonize at the same time")
    check_directory(options.directory)
    config = config or HttpdConfig()
    if not options.daemonize:
        if options.end_with_parent:
            _end_with_parent()
        return _serve(options, config, lambda: None)
    status_fd = _fork_daemon()
    if status_fd is None:
        return 0  # the caller: the server is listening
    code = 1
    reported = False

    def ready() -> None:
        nonlocal reported
        sys.stdout.flush()
        reported = True
        _report(status_fd, 0, "")
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # so that $(pyostree trivial-httpd -d -p -) returns
            os.dup2(devnull, fd)
        os.close(devnull)

    try:
        code = _serve(options, config, ready)
    except BaseException as exc:
        code = getattr(exc, "exit_code", 1)
        if not reported:
            message = str(exc) if isinstance(exc, PyOstreeError) else (
                f"{type(exc).__name__}: {exc}")
            _report(status_fd, code or 1, message)
    finally:
        os._exit(code)


def _serve(options: ServeOptions, config: HttpdConfig, ready: Callable[[], None]) -> int:
    stop = threading.Event()
    with _stopped_by_signals(stop), _log_stream(options.log_file) as stream:
        log = RequestLog(stream)
        try:
            server = TrivialHttpd(options.directory, config, port=options.port, log=log)
        except OSError as exc:
            raise PyOstreeError(f"cannot listen on port {options.port}: "
                                f"{exc.strerror or exc}") from exc
        try:
            if options.port_file == "-":
                sys.stdout.write(f"{server.port}\n")
                sys.stdout.flush()
            elif options.port_file:
                atomic_write(options.port_file, f"{server.port}\n".encode(), fsync=False)
            ready()
            log(f"serving at root {options.directory}")
        except BaseException:
            server.server_close()
            raise
        serve_until(server, stop, watch=Path(options.directory) if options.autoexit else None)
    return 0


@contextlib.contextmanager
def _log_stream(path: str | None) -> Iterator[TextIO | None]:
    if path is None or path == "-":
        yield sys.stdout if path else None
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise PyOstreeError(f"cannot open log file {path}: {exc.strerror or exc}") from exc
    with open(fd, "a", encoding="utf-8", errors="replace") as stream:
        yield stream


@contextlib.contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (in the main thread; elsewhere they are left alone)."""
    previous: dict[signal.Signals, Any] = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)


def _end_with_parent() -> None:
    """As upstream (it is a test server): SIGTERM when the parent process ends (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _fork_daemon() -> int | None:
    """Double-fork a detached server. In the server return the fd to report its status on; in
    the caller return None once it reports success, or raise the error it reports."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.setsid()
        if os.fork():
            os._exit(0)
        return write_fd
    os.close(write_fd)
    os.waitpid(pid, 0)
    chunks = []
    with open(read_fd, "rb") as pipe:
        while chunk := pipe.read(4096):
            chunks.append(chunk)
    data = b"".join(chunks)
    if data[:1] == b"\0":
        return None
    error = PyOstreeError(data[1:].decode("utf-8", "replace")
                          or "Child process closed pipe without writing status")
    error.exit_code = data[0] if data else 1
    raise error


def _report(fd: int, code: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, bytes([min(code, 255)]) + message.encode())
        os.close(fd)
