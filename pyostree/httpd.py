"""A static HTTP server for a repository directory: the server of ``pyostree trivial-httpd``.

It answers GET and HEAD as libostree's ``ostree-trivial-httpd`` does (directory listings,
``index.html``, 301 to add a directory's slash, Last-Modified, ETag, 304, Range), with the same
test hooks (random 500s and 408s, forced short bodies, basic auth, expected cookies and
headers). Unlike upstream it never serves a path outside its root: ``..`` is refused and so is
any symlink whose target lies outside, also when it is swapped in while the file is opened.
Files are streamed with ``sendfile``, never read whole.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import errno
import html
import os
import random
import re
import socket
import stat
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import attrs

from .errors import UsageError

BASIC_AUTH_USER = "foouser"
BASIC_AUTH_PASSWORD = "barpw"
BASIC_AUTH_REALM = "auth-test"


def _percentage(instance: Any, attribute: Any, value: int) -> None:
    if not 0 <= value <= 99:
        raise ValueError(f"Invalid --{attribute.name.replace('_', '-')}={value}")


def _not_negative(instance: Any, attribute: Any, value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative")


@attrs.frozen
class HttpdConfig:
    """How the server (mis)behaves: upstream's test hooks, all off by default."""

    force_range_requests: bool = False  # send half of an /objects/ file, then close
    require_basic_auth: bool = False  # 401 unless foouser:barpw
    random_500s: int = attrs.field(default=0, validator=_percentage)  # percent of requests
    random_500s_max: int = attrs.field(default=100, validator=_not_negative)
    random_408s: int = attrs.field(default=0, validator=_percentage)
    random_408s_max: int = attrs.field(default=100, validator=_not_negative)
    expected_cookies: tuple[tuple[str, str], ...] = ()  # 403 unless every one is sent
    expected_headers: tuple[tuple[str, str], ...] = ()


class RangeNotSatisfiable(Exception):
    """The Range header asks only for bytes past the end of the file (answer 416)."""


_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """The byte range ``(first, last)`` (inclusive) a Range header selects from ``size`` bytes.

    ``None`` means "send the whole file": another unit, a malformed header, or several ranges
    (RFC 9110 lets a server ignore Range). Raises :class:`RangeNotSatisfiable` for a single
    range that starts past the end."""
    unit, sep, specs = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = [p.strip() for p in specs.split(",") if p.strip()]
    if len(parts) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(parts[0])
    if match is None or not (match.group(1) or match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable(value)
        return max(0, size - length), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise RangeNotSatisfiable(value)
    return start, min(int(last), size - 1) if last else size - 1


def entity_tag(st: os.stat_result) -> str:
    """A strong ETag from the file's identity, size and mtime: it changes whenever the file is
    replaced or rewritten, and costs no read (upstream hashes the whole file per request)."""
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def _http_date(value: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def not_modified(headers: Mapping[str, str] | Message, etag: str, mtime: float) -> bool:
    """Whether If-None-Match (first) or If-Modified-Since lets the answer be 304."""
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or etag in tags
    since = headers.get("If-Modified-Since")
    if since is not None:
        when = _http_date(since)
        return when is not None and int(mtime) <= when
    return False


def _if_range_holds(value: str | None, etag: str, last_modified: str) -> bool:
    """If-Range: honour the Range only while the client's validator is still current."""
    if value is None:
        return True
    value = value.strip()
    return value == etag if value.startswith(('"', "W/")) else value == last_modified


def _cookies(headers: Message) -> dict[str, str]:
    """The cookies of every Cookie header (``a=b; c="d"``), quotes removed."""
    out: dict[str, str] = {}
    for header in headers.get_all("Cookie") or []:
        for item in header.split(";"):
            name, sep, value = item.strip().partition("=")
            if sep and name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                out[name.strip()] = value
    return out


def _listing(names: list[str], url_path: str) -> bytes:
    """The HTML index of a directory, entries in byte order like upstream's."""
    title = html.escape(url_path)
    lines = ["<html>", f"<head><title>Index of {title}</title></head>",
             f"<body><h1>Index of {title}</h1>", "<p>"]
    for name in sorted(names, key=os.fsencode):
        href = urllib.parse.quote(os.fsencode(name))
        shown = html.escape(os.fsencode(name).decode("utf-8", "replace"))
        lines.append(f'<a href="{href}">{shown}</a><br>')
    lines += ["</body>", "</html>", ""]
    return "\r\n".join(lines).encode("utf-8", "replace")  # a path that is not UTF-8


def _printable(text: str) -> str:
    """A decoded request path for the log: bytes outside printable ASCII as ``\\xNN``."""
    raw = text.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in raw)


class _Refused(Exception):
    """Answer ``status`` (with extra headers) instead of the file."""

    def __init__(self, status: HTTPStatus, headers: tuple[tuple[str, str], ...] = (),
                 reason: str = "") -> None:
        super().__init__(reason or status.phrase)
        self.status = status
        self.headers = headers
        self.reason = reason


class RequestLog:
    """Upstream's log lines (``2024-01-01 12:00:00.123456 - serving /config``), thread-safe."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        if self._stream is None:
            return
        now = datetime.datetime.now()
        line = f"{now:%Y-%m-%d %H:%M:%S}.{now.microsecond:06d} - {message}\n"
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (OSError, ValueError):
                pass  # a full disk or closed stdout must not take the server down


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pyostree-httpd"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after this
    server: TrivialHttpd

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _handle logs upstream's lines

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log(format % args)

    # -- one request -----------------------------------------------------------------------

    def _handle(self, *, head: bool) -> None:
        url_path = self._url_path()
        self.server.log(f"serving {_printable(url_path)}")
        try:
            status = self._respond(url_path, head=head)
        except _Refused as refused:
            if refused.reason:
                self.server.log(refused.reason)
            status = refused.status
            self._send_status(status, refused.headers, head=head)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
            return
        self.server.log(f"  status: {status.phrase} ({status.value})")

    def _url_path(self) -> str:
        target = self.path
        if not target.startswith("/"):  # absolute form, as sent to a proxy
            target = urllib.parse.urlsplit(target).path or "/"
        return urllib.parse.unquote(target.split("?", 1)[0].split("#", 1)[0],
                                    errors="surrogateescape")

    def _respond(self, url_path: str, *, head: bool) -> HTTPStatus:
        self._check_request()
        if "\0" in url_path:
            raise _Refused(HTTPStatus.BAD_REQUEST)
        if ".." in url_path.split("/"):
            raise _Refused(HTTPStatus.FORBIDDEN)
        self.server.maybe_fail()
        fd, st = self.server.open_path(url_path.lstrip("/"))
        try:
            if stat.S_ISDIR(st.st_mode):
                return self._send_directory(fd, url_path, head=head)
            return self._send_file(fd, st, url_path, head=head)
        finally:
            os.close(fd)

    def _check_request(self) -> None:
        """Basic auth, expected cookies and expected headers, as configured."""
        config = self.server.config
        if config.require_basic_auth and not self._authorized():
            raise _Refused(HTTPStatus.UNAUTHORIZED,
                           (("WWW-Authenticate", f'Basic realm="{BASIC_AUTH_REALM}"'),))
        if config.expected_cookies:
            cookies = _cookies(self.headers)
            for name, value in config.expected_cookies:
                if cookies.get(name) != value:
                    raise _Refused(HTTPStatus.FORBIDDEN,
                                   reason=f"Expected cookie not found {name}={value}")
        for name, value in config.expected_headers:
            found = self.headers.get(name)
            if found is None:
                raise _Refused(HTTPStatus.FORBIDDEN, reason=f"Expected header not found {name}")
            if found != value:
                raise _Refused(HTTPStatus.FORBIDDEN,
                               reason=f"Expected header {name}: {value} but found {found}")

    def _authorized(self) -> bool:
        scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == f"{BASIC_AUTH_USER}:{BASIC_AUTH_PASSWORD}"

    # -- answers ---------------------------------------------------------------------------

    def _send_status(self, status: HTTPStatus, headers: tuple[tuple[str, str], ...] = (), *,
                     head: bool) -> None:
        body = b"" if status in (HTTPStatus.NOT_MODIFIED,) else f"{status.phrase}\n".encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
        if status in (HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.BAD_REQUEST):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def version_string(self) -> str:
        return self.server_version

    def _send_directory(self, fd: int, url_path: str, *, head: bool) -> HTTPStatus:
        if not url_path.endswith("/"):
            location = urllib.parse.quote(url_path, errors="surrogateescape") + "/"
            raise _Refused(HTTPStatus.MOVED_PERMANENTLY, (("Location", location),))
        try:
            index, st = self.server.open_path(url_path.lstrip("/") + "index.html")
        except _Refused as refused:
            if refused.status != HTTPStatus.NOT_FOUND:
                raise
        else:
            try:
                if stat.S_ISDIR(st.st_mode):
                    raise _Refused(HTTPStatus.FORBIDDEN)
                return self._send_file(index, st, url_path + "index.html", head=head)
            finally:
                os.close(index)
        body = _listing(os.listdir(fd), url_path)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
        return HTTPStatus.OK

    def _send_file(self, fd: int, st: os.stat_result, url_path: str, *,
                   head: bool) -> HTTPStatus:
        etag = entity_tag(st)
        last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        validators = (("ETag", etag), ("Last-Modified", last_modified))
        if not_modified(self.headers, etag, st.st_mtime):
            self._send_status(HTTPStatus.NOT_MODIFIED, validators, head=True)
            return HTTPStatus.NOT_MODIFIED
        size = st.st_size
        status, first, count = HTTPStatus.OK, 0, size
        headers = [("Content-Type", "text/html; charset=utf-8" if url_path.endswith(".html")
                    else "application/octet-stream"), ("Accept-Ranges", "bytes"), *validators]
        range_header = self.headers.get("Range")
        if range_header is not None and _if_range_holds(self.headers.get("If-Range"), etag,
                                                         last_modified):
            try:
                selected = parse_range(range_header, size)
            except RangeNotSatisfiable:
                raise _Refused(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                               (("Content-Range", f"bytes */{size}"),)) from None
            if selected is not None:
                first, last = selected
                status, count = HTTPStatus.PARTIAL_CONTENT, last - first + 1
                headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        send = count
        if (self.server.config.force_range_requests and not head and range_header is None
                and "/objects/" in url_path):
            # Promise the whole file, send half, hang up: the client must resume with Range.
            send = size // 2
            headers.append(("Connection", "close"))
            self.close_connection = True
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(count))
        self.end_headers()
        if not head and send:
            with open(fd, "rb", buffering=0, closefd=False) as file:
                sent = self.connection.sendfile(file, first, send)
            if sent != send:  # the file shrank under us: the body is short, so hang up
                self.close_connection = True
        if send != count:
            self.connection.shutdown(socket.SHUT_WR)
        return status


def check_directory(path: str | os.PathLike[str]) -> None:
    """Raise :class:`UsageError` (worded like upstream's) unless ``path`` is a directory."""
    if not os.path.isdir(path):
        what = "Not a directory" if os.path.exists(path) else "No such file or directory"
        raise UsageError(f"opendir({os.fspath(path)}): {what}")


class TrivialHttpd(ThreadingHTTPServer):
    """A threaded static server for ``root`` on ``port`` (0: any free one), on every address
    (IPv6 and IPv4 where the host has both, like libsoup's ``listen_all``)."""

    daemon_threads = True  # stopping does not wait for idle keep-alive connections
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, root: str | os.PathLike[str], config: HttpdConfig | None = None, *,
                 port: int = 0, log: Callable[[str], None] | None = None,
                 host: str | None = None) -> None:
        check_directory(root)
        self.root = os.path.realpath(root)
        self._prefix = self.root.rstrip("/") + "/"
        self.config = config or HttpdConfig()
        self.log: Callable[[str], None] = log or RequestLog(None)
        self._random = random.Random()
        self._lock = threading.Lock()
        self._failures = {500: 0, 408: 0}
        if host is None and socket.has_dualstack_ipv6():
            try:
                self._bind("::", port)
                return
            except OSError as exc:  # IPv6 switched off: IPv4 only
                if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    raise
        self._bind(host or "", port)

    def _bind(self, host: str, port: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):  # hang-ups are routine; anything else is logged
            self.log(f"error answering {client_address[0]}: {type(exc).__name__}: {exc}")

    def maybe_fail(self) -> None:
        """The configured random 500s and 408s, each up to its maximum count."""
        config = self.config
        for status, percent, limit in ((HTTPStatus.INTERNAL_SERVER_ERROR, config.random_500s,
                                        config.random_500s_max),
                                       (HTTPStatus.REQUEST_TIMEOUT, config.random_408s,
                                        config.random_408s_max)):
            with self._lock:
                if (percent and self._failures[status] < limit
                        and self._random.randrange(100) < percent):
                    self._failures[status] += 1
                    raise _Refused(status)

    def inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self._prefix)

    def open_path(self, rel: str) -> tuple[int, os.stat_result]:
        """Open ``rel`` (below the root) for reading; refuse what escapes the root, what is
        neither a regular file nor a directory, and (as upstream) what is not world-readable
        (directories: world-searchable)."""
        real = os.path.realpath(os.path.join(self.root, rel))
        if not self.inside(real):
            raise _Refused(HTTPStatus.FORBIDDEN)
        try:
            before = os.stat(real)
            if not (stat.S_ISREG(before.st_mode) or stat.S_ISDIR(before.st_mode)):
                raise _Refused(HTTPStatus.FORBIDDEN)
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise _Refused(_status_for(exc)) from None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
                raise _Refused(HTTPStatus.NOT_FOUND)  # replaced while we looked
            with_proc = f"/proc/self/fd/{fd}"
            if os.path.exists(with_proc) and not self.inside(os.readlink(with_proc)):
                raise _Refused(HTTPStatus.FORBIDDEN)  # a symlink swapped in mid-way
            wanted = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
            if st.st_mode & wanted != wanted:
                raise _Refused(HTTPStatus.FORBIDDEN)
        except BaseException:
            os.close(fd)
            raise
        return fd, st


def _status_for(exc: OSError) -> HTTPStatus:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
        return HTTPStatus.NOT_FOUND
    if exc.errno in (errno.EACCES, errno.EPERM, errno.ELOOP):
        return HTTPStatus.FORBIDDEN
    return HTTPStatus.INTERNAL_SERVER_ERROR


def serve_until(server: TrivialHttpd, stop: threading.Event, *,
                watch: Path | None = None, interval: float = 0.1) -> None:
    """Serve (in a thread) until ``stop`` is set or ``watch`` is deleted or replaced; then
    close the listening socket. Open connections are cut when the process exits."""
    identity = _identity(watch) if watch is not None else None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="httpd", daemon=True)
    thread.start()
    try:
        while not stop.wait(interval):
            if watch is not None and _identity(watch) != identity:
                server.log("root directory removed, exiting")
                break
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
