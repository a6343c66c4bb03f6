"""httpx transport for ``BaseFetcher``: used for HTTP/2 or when aiohttp is missing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from pyostree.errors import FetchError, TransientFetchError
from pyostree.fetcher import BaseFetcher, FetchConfig, describe, tls_verify_error


class _Response:
    __slots__ = ("_resp", "status")

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code

    def header(self, name: str) -> str | None:
        value: str | None = self._resp.headers.get(name)
        return value

    def chunks(self) -> AsyncIterator[bytes]:
        return self._resp.aiter_raw()

    async def aclose(self) -> None:
        await self._resp.aclose()


class HttpxFetcher(BaseFetcher):
    """``BaseFetcher`` over an ``httpx.AsyncClient`` created on first use."""

    backend_name = "httpx"

    def __init__(self, config: FetchConfig) -> None:
        super().__init__(config)
        self._client: httpx.AsyncClient | None = None

    def _get_client(self) -> httpx.AsyncClient:
        client = self._client
        if client is None or client.is_closed:
            cfg = self.config
            client = httpx.AsyncClient(
                http2=cfg.http2,
                verify=self._ssl,
                proxy=cfg.proxy,
                timeout=httpx.Timeout(None, connect=cfg.connect_timeout),
                limits=httpx.Limits(
                    max_connections=cfg.max_in_flight,
                    max_keepalive_connections=cfg.max_in_flight,
                ),
                follow_redirects=False,
                trust_env=False,
                # Cookies come from the remote's jar only (BaseFetcher adds them), as with
                # libostree: what servers set is neither kept nor sent back.
                cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
            )
            self._client = client
        return client

    async def _open(self, url: str, headers: dict[str, str]) -> _Response:
        client = self._get_client()
        request = client.build_request("GET", url, headers=headers)
        return _Response(await client.send(request, stream=True))

    def _translate(self, exc: Exception, url: str) -> FetchError:
        verify = tls_verify_error(exc, url)
        if verify is not None:
            return verify
        if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol | ValueError):
            return FetchError(f"{url}: invalid URL ({describe(exc)})", url=url)
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            return TransientFetchError(f"{url}: timed out ({describe(exc)})", url=url)
        return TransientFetchError(f"{url}: {describe(exc)}", url=url)

    async def _aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
