"""HTTP(S) downloads for pulls: one small async interface, two back-ends (aiohttp, httpx).

``BaseFetcher`` owns every policy so both back-ends behave the same: the in-flight limit, byte
caps enforced while streaming, retries with backoff, mirror failover, redirects (followed here,
not by the library), low-speed and deadline aborts, conditional GET, and the mapping of every
foreign exception onto the ``FetchError`` family. A back-end only opens one GET and yields raw
body chunks (see ``RawResponse``). libostree's behaviour is described in
docs/ostree-formats.md §4.1–4.2.

Error mapping (every non-2xx moves on to the next mirror first, as libostree does; a
connection-level error does not, it goes straight to the retry decision)::

    403, 404, 410                        NotFoundError             not retried
    408, 429, 5xx                        TransientHTTPStatusError  retried, Retry-After honoured
    other non-2xx                        HTTPStatusError           not retried
    refused, reset, truncated body,
    connect/low-speed/deadline timeout   TransientFetchError       retried
    body or Content-Length over the cap  TooLargeError             not retried
    bad redirect, TLS verification,
    bad URL, unknown Content-Encoding    FetchError                not retried

Retries restart from the first mirror after an exponential backoff with jitter.
"""

from __future__ import annotations

import abc
import asyncio
import math
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import IO, Protocol, cast
from urllib.parse import urldefrag, urljoin

import attrs

from pyostree.errors import (
    FetchError,
    HTTPStatusError,
    NotFoundError,
    TooLargeError,
    TransientFetchError,
)
from pyostree.formats.cookies import Cookie, cookie_header

try:
    import zstandard as _zstd
except ImportError:  # pragma: no cover - optional dependency
    _zstd = None  # type: ignore[assignment]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NOT_FOUND = frozenset({403, 404, 410})


@attrs.frozen
class FetchConfig:
    """Every limit of the fetcher in one place (defaults follow libostree)."""

    max_in_flight: int = 8
    connect_timeout: float = 30.0
    low_speed_limit: int = 1000  # abort when below this many B/s ...
    low_speed_time: float = 30.0  # ... for this long (also covers stalled or trickled headers)
    request_deadline: float | None = None  # whole-request cap, redirects included
    max_redirects: int = 10
    retries: int = 5  # --network-retries: extra attempts after the first
    backoff_base: float = 0.1
    backoff_max: float = 5.0
    retry_after_cap: float = 30.0
    http2: bool = False
    tls_ca_path: str | None = None  # replaces the system trust store
    tls_client_cert_path: str | None = None
    tls_client_key_path: str | None = None
    tls_permissive: bool = False  # no certificate or hostname verification
    proxy: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    # The remote's cookie jar (REMOTE.cookies.txt): each request carries those that match it.
    cookies: tuple[Cookie, ...] = ()
    user_agent: str = "pyostree/0.1"
    accept_zstd: bool = True  # advertise Content-Encoding zstd when zstandard is importable


@attrs.frozen
class FetchResult:
    """A whole small download. ``data`` is None when the server answered 304."""

    data: bytes | None
    not_modified: bool
    etag: str | None
    last_modified: str | None
    url: str  # the URL that answered, after mirrors and redirects


class TransientHTTPStatusError(TransientFetchError, HTTPStatusError):
    """A retryable HTTP status (408, 429, 5xx); carries ``status`` and ``retry_after``."""

    def __init__(
        self, message: str, *, url: str = "", status: int = 0, retry_after: float | None = None
    ) -> None:
        TransientFetchError.__init__(self, message, url=url, retry_after=retry_after)
        self.status = status


class RawResponse(Protocol):
    """What a back-end hands to the base class for one HTTP exchange (no redirects followed,
    no decoding done)."""

    @property
    def status(self) -> int: ...

    def header(self, name: str) -> str | None: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@attrs.frozen
class _Outcome:
    size: int
    not_modified: bool
    etag: str | None
    last_modified: str | None
    url: str


class _CallerError(Exception):
    """Carries an exception raised by the caller's ``write`` past the network error mapping."""


class _Pace:
    """Low-speed and deadline bookkeeping for one attempt, driving one ``asyncio.Timeout``.

    The timeout fires at the earlier of the hard deadline and the end of the current window;
    a window is passed once ``low_speed_limit * low_speed_time`` bytes arrived in it, and the
    next window starts then. Only window changes touch the timer, so per-chunk cost is tiny.
    """

    __slots__ = ("_loop", "_need", "_span", "_timer", "got", "hard")

    def __init__(self, config: FetchConfig, timer: asyncio.Timeout) -> None:
        self._loop = asyncio.get_running_loop()
        self._timer = timer
        deadline = config.request_deadline
        self.hard = self._loop.time() + deadline if deadline is not None else math.inf
        enabled = config.low_speed_limit > 0 and config.low_speed_time > 0
        self._span = config.low_speed_time if enabled else math.inf
        self._need = max(1, math.ceil(config.low_speed_limit * config.low_speed_time))
        self.got = 0

    def start(self) -> None:
        """Arm the timer; call once the ``asyncio.Timeout`` has been entered."""
        self._arm(self._loop.time())

    def _arm(self, now: float) -> None:
        when = min(now + self._span, self.hard)
        self._timer.reschedule(None if when == math.inf else when)

    def feed(self, n: int) -> None:
        self.got += n
        if self.got >= self._need:
            self.got = 0
            self._arm(self._loop.time())

    def hard_deadline_hit(self) -> bool:
        return self._loop.time() >= self.hard - 1e-3


class BaseFetcher(abc.ABC):
    """Fetch URLs under the policies of a ``FetchConfig``; subclasses supply the transport.

    One fetcher holds one connection pool and belongs to the event loop that first uses it;
    share it between all fetches of a pull and close it (or use ``async with``) at the end.
    """

    backend_name = "base"

    def __init__(self, config: FetchConfig) -> None:
        if config.max_in_flight < 1 or config.retries < 0 or config.max_redirects < 0:
            raise ValueError("max_in_flight must be >= 1, retries and max_redirects >= 0")
        self.config = config
        # The system trust store is loaded on first use (plain-HTTP pulls never need it);
        # a context with files of its own is built now, so bad files fail here.
        self._ssl_context = None if _plain_tls(config) else make_ssl_context(config)
        self._sem = asyncio.Semaphore(config.max_in_flight)
        self._rng = random.Random()
        self._zstd = _zstd is not None and config.accept_zstd
        headers = {
            "User-Agent": config.user_agent,
            "Accept": "*/*",
            "Accept-Encoding": "zstd" if self._zstd else "identity",
        }
        for name, value in config.headers:
            headers[name] = value
        self._headers = headers

    @property
    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = make_ssl_context(self.config)
        return self._ssl_context

    # -- what a back-end provides ---------------------------------------------------------

    @abc.abstractmethod
    async def _open(self, url: str, headers: dict[str, str]) -> RawResponse:
        """Send a GET for ``url`` and return once the status line and headers arrived."""

    @abc.abstractmethod
    def _translate(self, exc: Exception, url: str) -> FetchError:
        """Map a foreign exception (library, ssl, OSError) to a ``FetchError``."""

    @abc.abstractmethod
    async def _aclose(self) -> None:
        """Release the session and its connections."""

    # -- public API -----------------------------------------------------------------------

    async def fetch_bytes(
        self,
        urls: str | Sequence[str],
        *,
        max_size: int,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> FetchResult:
        """Download a small file whole; with ``etag``/``last_modified`` a 304 answer gives
        ``FetchResult(data=None, not_modified=True)``."""
        extra: dict[str, str] = {}
        if etag:
            extra["If-None-Match"] = etag
        if last_modified:
            extra["If-Modified-Since"] = last_modified
        parts: list[bytes] = []
        out = await self._fetch(urls, parts.append, parts.clear, max_size, extra)
        data = None if out.not_modified else b"".join(parts)
        return FetchResult(data, out.not_modified, out.etag, out.last_modified, out.url)

    async def fetch_stream(
        self,
        urls: str | Sequence[str],
        write: Callable[[bytes], None],
        *,
        max_size: int,
        restart: Callable[[], None],
    ) -> int:
        """Stream the body into ``write``; ``restart()`` is called before every attempt after
        the first (next mirror or retry), so ``write`` always sees one body from its start.
        Exceptions raised by ``write`` or ``restart`` propagate unchanged. Returns the size."""
        out = await self._fetch(urls, write, restart, max_size, {})
        return out.size

    async def close(self) -> None:
        await self._aclose()

    async def __aenter__(self) -> BaseFetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- policy ---------------------------------------------------------------------------

    async def _fetch(
        self,
        urls: str | Sequence[str],
        write: Callable[[bytes], None],
        restart: Callable[[], None],
        max_size: int,
        extra: dict[str, str],
    ) -> _Outcome:
        mirrors = [urls] if isinstance(urls, str) else list(urls)
        if not mirrors:
            raise ValueError("no URL to fetch")
        if max_size < 0:
            raise ValueError("max_size must not be negative")
        headers = {**self._headers, **extra} if extra else self._headers
        conditional = bool(extra)
        first = True
        attempt = 0
        while True:
            error: FetchError | None = None
            for url in mirrors:
                if not first:
                    restart()
                first = False
                try:
                    return await self._attempt(url, headers, write, max_size, conditional)
                except HTTPStatusError as exc:  # libostree: a non-2xx moves to the next mirror
                    error = exc
                except FetchError as exc:
                    error = exc
                    break
            assert error is not None
            if not isinstance(error, TransientFetchError) or attempt >= self.config.retries:
                raise error
            await asyncio.sleep(self._backoff(attempt, error.retry_after))
            attempt += 1

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        delay = min(cfg.backoff_max, cfg.backoff_base * (2.0**attempt))
        delay *= self._rng.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, cfg.retry_after_cap))
        return delay

    async def _attempt(
        self,
        url: str,
        headers: dict[str, str],
        write: Callable[[bytes], None],
        max_size: int,
        conditional: bool,
    ) -> _Outcome:
        if not url.lower().startswith(("http://", "https://")):
            raise FetchError(f"{url}: only http and https URLs can be fetched", url=url)
        async with self._sem:
            timer = asyncio.timeout(None)
            pace = _Pace(self.config, timer)
            current = [url]  # the URL being requested, for messages
            try:
                async with timer:
                    pace.start()
                    return await self._follow(
                        url, headers, write, max_size, conditional, pace, current
                    )
            except _CallerError as exc:
                raise _unwrap(exc) from None
            except FetchError:
                raise
            except TimeoutError as exc:
                if timer.expired():
                    raise self._timeout_error(current[-1], pace) from None
                raise self._translate(exc, current[-1]) from exc
            except Exception as exc:
                if timer.expired():
                    raise self._timeout_error(current[-1], pace) from None
                raise self._translate(exc, current[-1]) from exc

    def _timeout_error(self, url: str, pace: _Pace) -> TransientFetchError:
        cfg = self.config
        if pace.hard_deadline_hit():
            msg = f"{url}: request took longer than {cfg.request_deadline:g} s"
        else:
            msg = (
                f"{url}: transfer too slow (under {cfg.low_speed_limit} B/s "
                f"for {cfg.low_speed_time:g} s)"
            )
        return TransientFetchError(msg, url=url)

    async def _follow(
        self,
        url: str,
        headers: dict[str, str],
        write: Callable[[bytes], None],
        max_size: int,
        conditional: bool,
        pace: _Pace,
        current: list[str],
    ) -> _Outcome:
        visited = {url}
        for _ in range(self.config.max_redirects + 1):
            resp = await self._open(url, self._with_cookies(url, headers))
            try:
                status = resp.status
                if status not in _REDIRECTS:
                    return await self._read(url, resp, write, max_size, conditional, pace)
                target = self._redirect_target(url, status, resp.header("Location"), visited)
            finally:
                await resp.aclose()
            visited.add(target)
            url = target
            current.append(url)
        raise FetchError(
            f"{current[0]}: more than {self.config.max_redirects} redirects", url=current[0]
        )

    def _with_cookies(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` plus the ``Cookie`` header of the jar's cookies for ``url`` (redirect
        targets get their own), before any Cookie header given as an extra header."""
        if not self.config.cookies:
            return headers
        value = cookie_header(self.config.cookies, url, time.time())
        if value is None:
            return headers
        out = dict(headers)
        for name in [n for n in out if n.lower() == "cookie"]:
            value = f"{value}; {out.pop(name)}"
        out["Cookie"] = value
        return out

    @staticmethod
    def _redirect_target(url: str, status: int, location: str | None, seen: set[str]) -> str:
        if not location:
            raise HTTPStatusError(
                f"{url}: HTTP {status} redirect without a Location", url=url, status=status
            )
        target = urldefrag(urljoin(url, location.strip())).url
        scheme = target.split(":", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise FetchError(f"{url}: refusing redirect to non-HTTP URL {target}", url=url)
        if scheme == "http" and url.lower().startswith("https:"):
            raise FetchError(f"{url}: refusing redirect from https to http ({target})", url=url)
        if target in seen:
            raise FetchError(f"{url}: redirect loop back to {target}", url=url)
        return target

    async def _read(
        self,
        url: str,
        resp: RawResponse,
        write: Callable[[bytes], None],
        max_size: int,
        conditional: bool,
        pace: _Pace,
    ) -> _Outcome:
        status = resp.status
        if status == 304 and conditional:
            return _Outcome(0, True, resp.header("ETag"), resp.header("Last-Modified"), url)
        if not 200 <= status < 300:
            raise _status_error(url, status, resp.header("Retry-After"))
        length = _content_length(url, resp.header("Content-Length"))
        encoding = (resp.header("Content-Encoding") or "identity").strip().lower()
        sink: _CappedSink | _ZstdSink
        if encoding == "identity":
            if length is not None and length > max_size:
                raise TooLargeError(
                    f"{url}: Content-Length {length} exceeds the limit of {max_size} bytes",
                    url=url,
                )
            sink = _CappedSink(write, max_size, url)
        elif encoding == "zstd" and self._zstd:
            sink = _ZstdSink(write, max_size, url)
        else:
            raise FetchError(f"{url}: unsupported Content-Encoding {encoding!r}", url=url)
        received = 0
        feed = sink.write
        async for chunk in resp.chunks():
            received += len(chunk)
            pace.feed(len(chunk))
            feed(chunk)
        if length is not None and received < length:
            raise TransientFetchError(
                f"{url}: body truncated after {received} of {length} bytes", url=url
            )
        size = sink.finish()
        return _Outcome(size, False, resp.header("ETag"), resp.header("Last-Modified"), url)


class _CappedSink:
    """Pass chunks to the caller while counting them against the cap."""

    __slots__ = ("_max", "_url", "_write", "total")

    def __init__(self, write: Callable[[bytes], None], max_size: int, url: str) -> None:
        self._write = write
        self._max = max_size
        self._url = url
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        if self.total > self._max:
            raise TooLargeError(
                f"{self._url}: response exceeds the limit of {self._max} bytes", url=self._url
            )
        try:
            self._write(data)
        except Exception as exc:
            raise _CallerError() from exc

    def finish(self) -> int:
        return self.total


class _ZstdSink:
    """Decode a zstd body on the fly; the cap applies to the decoded bytes, in 64 KiB pieces,
    so a decompression bomb is cut off early. (A body cut short without a Content-Length is
    not detected here; the checksum of the object catches it.)"""

    def __init__(self, write: Callable[[bytes], None], max_size: int, url: str) -> None:
        assert _zstd is not None
        self._out = _CappedSink(write, max_size, url)
        self._url = url
        # An 8 MiB window covers compression levels 1-19 and bounds memory per fetch.
        self._dec = _zstd.ZstdDecompressor(max_window_size=1 << 23).stream_writer(
            cast("IO[bytes]", self._out), write_size=65536, closefd=False
        )

    def write(self, data: bytes) -> None:
        try:
            self._dec.write(data)
        except _zstd.ZstdError as exc:  # type: ignore[union-attr]
            raise FetchError(f"{self._url}: bad zstd body: {exc}", url=self._url) from None

    def finish(self) -> int:
        try:
            self._dec.flush()  # type: ignore[no-untyped-call]
        except _zstd.ZstdError as exc:  # type: ignore[union-attr]
            raise FetchError(f"{self._url}: bad zstd body: {exc}", url=self._url) from None
        return self._out.total


def _unwrap(exc: _CallerError) -> BaseException:
    cause = exc.__cause__
    assert cause is not None
    return cause


def _content_length(url: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise TransientFetchError(f"{url}: bad Content-Length {raw!r}", url=url)
    return value


def _status_error(url: str, status: int, retry_after: str | None) -> HTTPStatusError:
    if status in _NOT_FOUND:
        return NotFoundError(f"{url}: not found (HTTP {status})", url=url, status=status)
    if status in (408, 429) or 500 <= status < 600:
        return TransientHTTPStatusError(
            f"{url}: server answered HTTP {status}",
            url=url,
            status=status,
            retry_after=parse_retry_after(retry_after),
        )
    return HTTPStatusError(f"{url}: server answered HTTP {status}", url=url, status=status)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        import email.utils

        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


_default_ssl: ssl.SSLContext | None = None


def _plain_tls(config: FetchConfig) -> bool:
    """True if ``config`` asks for the system trust store and nothing else."""
    return not (config.tls_ca_path or config.tls_client_cert_path or config.tls_permissive)


def make_ssl_context(config: FetchConfig) -> ssl.SSLContext:
    """The client TLS context for ``config``; unreadable files raise ``FetchError``.

    The system-trust context is built once and shared (loading the store costs ~0.1 s);
    contexts with files of their own are rebuilt so a rotated CA file is re-read."""
    global _default_ssl
    plain = _plain_tls(config)
    if plain and _default_ssl is not None:
        return _default_ssl
    try:
        ctx = ssl.create_default_context(cafile=config.tls_ca_path)
        if config.tls_client_cert_path:
            ctx.load_cert_chain(config.tls_client_cert_path, config.tls_client_key_path)
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(f"cannot load TLS files: {describe(exc)}") from exc
    if config.tls_permissive:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if plain:
        _default_ssl = ctx
    return ctx


def describe(exc: BaseException) -> str:
    """A one-line description of a foreign exception, with its root cause when that adds
    something (httpx says "All connection attempts failed"; the cause says why)."""

    def one(e: BaseException) -> str:
        text = " ".join(str(e).split())
        if len(text) > 160:  # some libraries quote whole payloads in their messages
            text = text[:160] + "…"
        return f"{type(e).__name__}: {text}" if text else type(e).__name__

    root = exc
    seen = {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    top = one(exc)
    if root is exc:
        return top
    inner = one(root).split(": ", 1)[-1]
    return top if inner in top else f"{top} ({one(root)})"


def tls_verify_error(exc: BaseException, url: str) -> FetchError | None:
    """A permanent ``FetchError`` if ``exc`` stems from a failed certificate check."""
    found: ssl.SSLCertVerificationError | None = None
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        inner = getattr(cur, "certificate_error", None)  # aiohttp keeps the ssl error here
        for cand in (cur, inner):
            if isinstance(cand, ssl.SSLCertVerificationError) and (
                found is None or getattr(cand, "verify_message", None)
            ):
                found = cand
        cur = cur.__cause__ or cur.__context__
    if found is None:
        return None
    reason = getattr(found, "verify_message", None) or describe(found)
    return FetchError(f"{url}: TLS certificate verification failed: {reason}", url=url)


def make_fetcher(config: FetchConfig | None = None, *, backend: str | None = None) -> BaseFetcher:
    """A fetcher for ``config``: aiohttp (fast path) unless HTTP/2 is asked for or aiohttp is
    missing, then httpx. ``backend`` ("aiohttp" or "httpx") forces one."""
    config = config or FetchConfig()
    return fetcher_class(config, backend=backend)(config)


def fetcher_class(config: FetchConfig, *, backend: str | None = None) -> type[BaseFetcher]:
    """The class :func:`make_fetcher` uses for ``config`` (importing it loads its HTTP stack)."""
    if backend is None:
        backend = "httpx" if config.http2 else "aiohttp"
        if backend == "aiohttp":
            try:
                import aiohttp  # noqa: F401
            except ImportError:
                backend = "httpx"
    if backend == "aiohttp":
        from pyostree.fetcher_aiohttp import AiohttpFetcher

        return AiohttpFetcher
    if backend == "httpx":
        from pyostree.fetcher_httpx import HttpxFetcher

        return HttpxFetcher
    raise ValueError(f"unknown fetcher backend {backend!r}")


__all__ = [
    "BaseFetcher",
    "FetchConfig",
    "FetchResult",
    "RawResponse",
    "TransientHTTPStatusError",
    "fetcher_class",
    "make_fetcher",
    "parse_retry_after",
]
