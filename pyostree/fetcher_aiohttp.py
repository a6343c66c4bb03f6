"""aiohttp transport for ``BaseFetcher``: the fast path (HTTP/1.1, one pooled session)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Iterator

from yarl import URL

from pyostree.errors import FetchError, TransientFetchError
from pyostree.fetcher import BaseFetcher, FetchConfig, describe, tls_verify_error


@contextlib.contextmanager
def _no_trust_store() -> Iterator[None]:
    """TLS contexts made inside get no trust anchors at all (they fail closed if used).

    aiohttp makes a default verified and unverified context when its connector module loads,
    reading the system trust store twice: about 50 ms and 3 MB in every pull, though pyostree
    never uses them (each https request passes its own context, see ``_open``)."""
    cls = ssl.SSLContext
    saved = cls.load_default_certs, cls.set_default_verify_paths

    def skip(self: ssl.SSLContext, *args: object) -> None:
        return None

    cls.load_default_certs = skip  # type: ignore[method-assign,assignment]
    cls.set_default_verify_paths = skip  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        cls.load_default_certs, cls.set_default_verify_paths = saved  # type: ignore[method-assign]


with _no_trust_store():
    import aiohttp


# A URL made only of these characters is already in the form it goes on the wire (ASCII, no
# spaces, "%" only in escapes): object URLs are, so yarl is told not to re-encode them, which
# halves what building the URL costs (5 -> 2.5 us; 24k of them in a full pull).
_WIRE_READY = re.compile(
    r"https?://[A-Za-z0-9.:\[\]-]+(?:/(?:[A-Za-z0-9._~/!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*)?",
    re.IGNORECASE)


class _Response:
    __slots__ = ("_resp", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status

    def header(self, name: str) -> str | None:
        return self._resp.headers.get(name)

    def chunks(self) -> AsyncIterator[bytes]:
        return self._resp.content.iter_any()

    async def aclose(self) -> None:
        # release() keeps a fully read connection alive; anything unread closes it.
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


class AiohttpFetcher(BaseFetcher):
    """``BaseFetcher`` over an ``aiohttp.ClientSession`` created on first use."""

    backend_name = "aiohttp"

    def __init__(self, config: FetchConfig) -> None:
        super().__init__(config)
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            cfg = self.config
            # The TLS context goes with each https request (_open): building one loads the
            # system trust store (~45 ms), which a plain-HTTP pull never needs.
            connector = aiohttp.TCPConnector(limit=cfg.max_in_flight, ttl_dns_cache=300)
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout),
                auto_decompress=False,
                trust_env=False,
                # Cookies come from the remote's jar only (BaseFetcher adds them), as with
                # libostree: what servers set is neither kept nor sent back.
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept-Encoding", "User-Agent"),
                read_bufsize=1 << 18,
            )
            self._session = session
        return session

    async def _open(self, url: str, headers: dict[str, str]) -> _Response:
        session = self._get_session()
        target: str | URL = URL(url, encoded=True) if _WIRE_READY.fullmatch(url) else url
        if url[:6].lower() == "https:":
            resp = await session.get(target, headers=headers, allow_redirects=False,
                                     proxy=self.config.proxy, ssl=self._ssl)
        else:
            resp = await session.get(target, headers=headers, allow_redirects=False,
                                     proxy=self.config.proxy)
        return _Response(resp)

    def _translate(self, exc: Exception, url: str) -> FetchError:
        verify = tls_verify_error(exc, url)
        if verify is not None:
            return verify
        if isinstance(exc, aiohttp.InvalidURL | ValueError):
            return FetchError(f"{url}: invalid URL ({describe(exc)})", url=url)
        if isinstance(exc, asyncio.TimeoutError):
            return TransientFetchError(f"{url}: timed out ({describe(exc)})", url=url)
        return TransientFetchError(f"{url}: {describe(exc)}", url=url)

    async def _aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
