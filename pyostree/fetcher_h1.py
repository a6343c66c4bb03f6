"""A lean HTTP/1.1 transport for ``BaseFetcher``: asyncio protocols, no HTTP library.

A pull is tens of thousands of small GETs against one server, so the per-request cost of the
client decides its speed. aiohttp spends ~200 µs of CPU per request in URL objects, header
multidicts, tracing hooks and its connector; this transport spends a fraction of that: one
pooled keep-alive connection per request in flight, the request head written in one
``transport.write``, the response head parsed with ``bytes.split``, the body handed on as it
arrives. ``BaseFetcher`` keeps every policy (redirects, caps, retries, timeouts, decoding).

What it speaks: HTTP/1.1 over TCP or TLS (``ssl`` module, SNI, the fetcher's context), bodies
framed by Content-Length, chunked transfer coding or connection close, keep-alive reuse, 1xx
interim answers skipped. Not spoken: proxies (``make_fetcher`` picks aiohttp when one is
configured), HTTP/2, pipelining. Everything from the server is untrusted: the response head is
capped at 64 KiB and 100 fields, chunk-size lines at 1 KiB, and anything malformed ends the
connection with :class:`ProtocolError` (a transient fetch error: retried).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit

from pyostree.errors import FetchError, TransientFetchError
from pyostree.fetcher import BaseFetcher, FetchConfig, describe, tls_verify_error

MAX_HEAD = 64 * 1024
MAX_FIELDS = 100
MAX_CHUNK_LINE = 1024
# Stop reading the socket while this much body waits for the consumer (flow control).
PAUSE_AT = 1024 * 1024
_NO_BODY = frozenset({204, 304})
# Characters sent as they are in a request target; everything else is percent-encoded.
_TARGET_SAFE = "/%:@!$&'()*+,;=-._~?"


class ProtocolError(Exception):
    """The server broke HTTP/1.1 framing (or closed the connection mid-answer)."""


class _Conn(asyncio.Protocol):
    """One connection, one exchange at a time. The parser is a small state machine driven by
    ``data_received``; body bytes queue in ``_body`` until ``_Response.chunks`` takes them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False  # set when an answer ended cleanly and keep-alive allows it
        self.used = False  # has carried an exchange (a failure may be a stale keep-alive)
        self._head = bytearray()
        self._state = "idle"  # idle, head, length, chunk-size, chunk-data, chunk-end,
        #                       trailer, close, done
        self._remaining = 0  # body bytes left (length) or chunk bytes left (chunk-data)
        self._chunkbuf = bytearray()
        self._body: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._got_any = False  # any byte of this exchange's answer arrived
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._keep_alive = False
        self.status = 0
        self.headers: dict[str, str] = {}

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._got_any = True
        try:
            self._feed(data)
        except ProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        if self._state == "close":  # the end of a body framed by connection close
            self._state = "done"
            self._wake()
        elif self._state not in ("idle", "done"):
            self._fail(ProtocolError(self._cut_short()))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._state == "close" and exc is None:
            self._state = "done"
            self._wake()
        elif self._state not in ("idle", "done"):
            if exc is None:
                exc = ProtocolError(self._cut_short())
            self._fail(exc)

    # -- one exchange ---------------------------------------------------------------------

    async def exchange(self, head: bytes) -> None:
        """Send a request head and wait for the status line and fields of the answer."""
        assert self.transport is not None
        self.reusable = False
        self._state = "head"
        self._head.clear()
        self._body = []
        self._buffered = 0
        self._got_any = False
        self._error = None
        self.transport.write(head)
        while self._state == "head" and self._error is None:
            await self._wait()
        if self._error is not None:
            raise self._error

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            if self._body:
                parts, self._body = self._body, []
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                for part in parts:
                    yield part
            elif self._error is not None:
                raise self._error
            elif self._state == "done":
                return
            else:
                await self._wait()

    def release(self) -> bool:
        """End the exchange; True if the connection can carry another one."""
        self.reusable = self._state == "done" and self._keep_alive and not self.closed
        self.used = True
        if self._state == "done":
            self._state = "idle"
        if not self.reusable:
            self.close()
        return self.reusable

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def stale(self) -> bool:
        """True if a reused connection failed before any byte of the answer: the server had
        closed it while it sat idle, so the request can go out again on a new connection."""
        return self.used and not self._got_any

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._state = "done"
        self._keep_alive = False
        self.close()
        self._wake()

    def _cut_short(self) -> str:
        if self._state == "head":
            return "connection closed before a complete response head"
        return "connection closed in the middle of the body"

    # -- parsing --------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        state = self._state
        if state == "length":  # the hot path: a body of known length
            self._take_length(data)
        elif state == "head":
            self._head += data
            self._parse_head()
        elif state == "close":
            self._deliver(data)
        elif state in ("chunk-size", "chunk-data", "chunk-end", "trailer"):
            self._chunkbuf += data
            self._parse_chunks()
        elif state == "done":
            # Bytes after a complete answer (or unasked for): the connection is out of step.
            self._keep_alive = False
            self.close()
        else:
            raise ProtocolError("data from the server with no request outstanding")

    def _parse_head(self) -> None:
        while True:
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    raise ProtocolError(f"response head larger than {MAX_HEAD} bytes")
                return
            if end > MAX_HEAD:
                raise ProtocolError(f"response head larger than {MAX_HEAD} bytes")
            head = bytes(self._head[:end])
            rest = bytes(self._head[end + 4:])
            self._head.clear()
            lines = head.split(b"\r\n")
            status, keep_alive = _status_line(lines[0])
            if 100 <= status < 200:  # interim (100 Continue, 103 Early Hints): skip it
                if status == 101:
                    raise ProtocolError("unexpected 101 Switching Protocols")
                self._head += rest
                continue
            self.status = status
            self.headers = _fields(lines[1:])
            connection = self.headers.get("connection", "").lower()
            if "close" in connection:
                keep_alive = False
            elif "keep-alive" in connection:
                keep_alive = True
            self._keep_alive = keep_alive
            self._start_body(rest)
            self._wake()
            return

    def _start_body(self, rest: bytes) -> None:
        headers = self.headers
        te = headers.get("transfer-encoding")
        if self.status in _NO_BODY:
            self._state = "done"
            if rest:
                self._keep_alive = False
        elif te is not None:
            if te.lower().rsplit(",", 1)[-1].strip() == "chunked":
                self._state = "chunk-size"
                self._chunkbuf = bytearray(rest)
                self._parse_chunks()
            else:  # a coding we do not decode: the body runs to the close (RFC 9112 §6.3)
                self._state = "close"
                self._keep_alive = False
                if rest:
                    self._deliver(rest)
        elif "content-length" in headers:
            self._remaining = _content_length(headers["content-length"])
            self._state = "length"
            if self._remaining == 0:
                self._state = "done"
                if rest:
                    self._keep_alive = False
            elif rest:
                self._take_length(rest)
        else:
            self._state = "close"
            self._keep_alive = False
            if rest:
                self._deliver(rest)

    def _take_length(self, data: bytes) -> None:
        remaining = self._remaining
        if len(data) >= remaining:
            if len(data) > remaining:  # more than announced: cut, never reuse
                data = data[:remaining]
                self._keep_alive = False
            self._remaining = 0
            self._state = "done"
        else:
            self._remaining = remaining - len(data)
        self._deliver(data)

    def _parse_chunks(self) -> None:
        buf = self._chunkbuf
        pos = 0
        while True:
            state = self._state
            if state == "chunk-size":
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    if len(buf) - pos > MAX_CHUNK_LINE:
                        raise ProtocolError("chunk-size line too long")
                    break
                line = bytes(buf[pos:nl]).split(b";", 1)[0].strip()
                if not line or len(line) > 16 or line.strip(b"0123456789abcdefABCDEF"):
                    raise ProtocolError(f"bad chunk size {line[:20]!r}")
                pos = nl + 2
                self._remaining = int(line, 16)
                self._state = "chunk-data" if self._remaining else "trailer"
            elif state == "chunk-data":
                n = min(self._remaining, len(buf) - pos)
                if n == 0:
                    break
                self._deliver(bytes(buf[pos:pos + n]))
                pos += n
                self._remaining -= n
                if self._remaining == 0:
                    self._state = "chunk-end"
            elif state == "chunk-end":
                if len(buf) - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                pos += 2
                self._state = "chunk-size"
            elif state == "trailer":  # trailer fields are read and ignored
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    if len(buf) - pos > MAX_HEAD:
                        raise ProtocolError("chunked trailer too long")
                    break
                empty = nl == pos
                pos = nl + 2
                if empty:
                    self._state = "done"
                    if pos < len(buf):
                        self._keep_alive = False
                    self._wake()
                    break
            else:
                break
        del buf[:pos]

    def _deliver(self, data: bytes) -> None:
        if data:
            self._body.append(data)
            self._buffered += len(data)
            if self._buffered >= PAUSE_AT and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
        self._wake()


def _status_line(line: bytes) -> tuple[int, bool]:
    """(status, keep-alive by default) from ``HTTP/1.x NNN reason``."""
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit() or (
            rest[3:4] not in (b"", b" ")):
        raise ProtocolError(f"bad status line {line[:60]!r}")
    return int(code), version == b"HTTP/1.1"


def _fields(lines: list[bytes]) -> dict[str, str]:
    if len(lines) > MAX_FIELDS:
        raise ProtocolError(f"more than {MAX_FIELDS} header fields")
    fields: dict[str, str] = {}
    for raw in lines:
        name, sep, value = raw.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name:
            raise ProtocolError(f"bad header line {raw[:60]!r}")
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        old = fields.get(key)
        if old is None:
            fields[key] = text
        elif key == "content-length":
            if old != text:
                raise ProtocolError("conflicting Content-Length fields")
        else:
            fields[key] = f"{old}, {text}"
    return fields


def _content_length(raw: str) -> int:
    if not raw.isdigit() or not raw.isascii():
        raise ProtocolError(f"bad Content-Length {raw[:30]!r}")
    return int(raw)


class _Response:
    """The ``RawResponse`` of one exchange; ``aclose`` hands the connection back."""

    __slots__ = ("_conn", "_pool", "status")

    def __init__(self, conn: _Conn, pool: list[_Conn]) -> None:
        self._conn = conn
        self._pool = pool
        self.status = conn.status

    def header(self, name: str) -> str | None:
        return self._conn.headers.get(name.lower())

    def chunks(self) -> AsyncIterator[bytes]:
        return self._conn.body()

    async def aclose(self) -> None:
        conn = self._conn
        if conn.release():
            self._pool.append(conn)


class H1Fetcher(BaseFetcher):
    """``BaseFetcher`` over plain asyncio connections (HTTP/1.1, keep-alive pool)."""

    backend_name = "h1"

    def __init__(self, config: FetchConfig) -> None:
        if config.proxy:
            raise ValueError("the h1 fetcher does not speak to proxies")
        super().__init__(config)
        # Idle keep-alive connections per (scheme, host, port). The in-flight semaphore of
        # BaseFetcher bounds how many exist at once.
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._heads: tuple[dict[str, str], bytes] | None = None
        self._all: set[_Conn] = set()

    async def _open(self, url: str, headers: dict[str, str]) -> _Response:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        if not host:
            raise ValueError(f"no host in {url}")
        port = parts.port or (443 if scheme == "https" else 80)
        target = quote(parts.path or "/", safe=_TARGET_SAFE)
        if parts.query:
            target += "?" + quote(parts.query, safe=_TARGET_SAFE)
        host_field = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            host_field += f":{port}"
        head = b"".join((f"GET {target} HTTP/1.1\r\nHost: {host_field}\r\n".encode("ascii"),
                         self._fields(headers)))
        key = (scheme, host, port)
        idle = self._idle.setdefault(key, [])
        while True:
            conn = None
            while idle and conn is None:
                conn = idle.pop()
                if conn.closed:
                    conn = None
            if conn is None:
                conn = await self._connect(scheme, host, port)
            try:
                await conn.exchange(head)
            except (ProtocolError, OSError):
                conn.close()
                if conn.stale():
                    continue  # the server dropped an idle connection: try a fresh one
                raise
            except BaseException:
                conn.close()
                raise
            return _Response(conn, idle)

    def _fields(self, headers: dict[str, str]) -> bytes:
        cached = self._heads
        if cached is not None and cached[0] is headers:
            return cached[1]
        lines = []
        for name, value in headers.items():
            if any(c in f"{name}{value}" for c in "\r\n\0"):
                raise ValueError(f"bad header {name!r}")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        block = "".join(lines).encode("latin-1")
        self._heads = (headers, block)
        return block

    async def _connect(self, scheme: str, host: str, port: int) -> _Conn:
        loop = asyncio.get_running_loop()
        tls = self._ssl if scheme == "https" else None
        conn = _Conn(loop)
        async with asyncio.timeout(self.config.connect_timeout):
            await loop.create_connection(lambda: conn, host, port, ssl=tls,
                                         server_hostname=host if tls is not None else None)
        self._all.add(conn)
        if len(self._all) > 4 * self.config.max_in_flight:
            self._all = {c for c in self._all if not c.closed}
        return conn

    def _translate(self, exc: Exception, url: str) -> FetchError:
        verify = tls_verify_error(exc, url)
        if verify is not None:
            return verify
        if isinstance(exc, ValueError | UnicodeError) and not isinstance(exc, ssl.SSLError):
            return FetchError(f"{url}: invalid URL ({describe(exc)})", url=url)
        if isinstance(exc, TimeoutError):
            return TransientFetchError(f"{url}: timed out ({describe(exc)})", url=url)
        return TransientFetchError(f"{url}: {describe(exc)}", url=url)

    async def _aclose(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
