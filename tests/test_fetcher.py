"""Contract tests for pyostree.fetcher, run against both back-ends over a loopback server."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import attrs
import pytest

from pyostree.errors import (
    FetchError,
    HTTPStatusError,
    NotFoundError,
    TooLargeError,
    TransientFetchError,
)
from pyostree.fetcher import (
    BaseFetcher,
    FetchConfig,
    TransientHTTPStatusError,
    make_fetcher,
    parse_retry_after,
)
from tests.httpserver import Fault, FaultServer, Pki, make_pki

T = TypeVar("T")
FAST = FetchConfig(backoff_base=0.01, backoff_max=0.05, low_speed_time=5.0)
BODY = bytes(range(256)) * 40  # 10 KiB


@pytest.fixture(params=["aiohttp", "httpx"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[FaultServer]:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "file").write_bytes(BODY)
    with FaultServer(tmp_path) as server:
        yield server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def run(backend: str, config: FetchConfig, body: Callable[[BaseFetcher], Awaitable[T]]) -> T:
    async def main() -> T:
        async with make_fetcher(config, backend=backend) as fetcher:
            return await body(fetcher)

    return asyncio.run(main())


def get(
    backend: str, urls: str | list[str], config: FetchConfig = FAST, *, max_size: int = 1 << 20
) -> bytes:
    res = run(backend, config, lambda f: f.fetch_bytes(urls, max_size=max_size))
    assert res.data is not None
    return res.data


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- plain downloads ------------------------------------------------------------------------


def test_fetch_ok_with_headers(backend: str, srv: FaultServer) -> None:
    cfg = attrs.evolve(FAST, headers=(("X-Extra", "1"),), user_agent="pyostree-test/9")
    res = run(backend, cfg, lambda f: f.fetch_bytes(srv.url_for("/dir/file"), max_size=len(BODY)))
    assert res.data == BODY and not res.not_modified
    assert res.url == srv.url_for("/dir/file")
    assert res.etag and res.last_modified
    (rec,) = srv.requests
    assert rec.headers["user-agent"] == "pyostree-test/9"
    assert rec.headers["x-extra"] == "1"
    assert rec.headers["accept"] == "*/*"
    assert "range" not in rec.headers


def test_fetch_stream_and_empty_file(backend: str, srv: FaultServer) -> None:
    srv.put("/empty", b"")
    got: list[bytes] = []

    async def body(f: BaseFetcher) -> tuple[int, bytes]:
        n = await f.fetch_stream(
            srv.url_for("/dir/file"), got.append, max_size=1 << 20, restart=got.clear
        )
        empty = await f.fetch_bytes(srv.url_for("/empty"), max_size=0)
        assert empty.data is not None
        return n, empty.data

    n, empty = run(backend, FAST, body)
    assert n == len(BODY) and b"".join(got) == BODY and empty == b""



def test_urls_that_need_escaping_and_ones_that_are_escaped(backend: str, srv: FaultServer) -> None:
    """Object URLs go on the wire as they are; anything else is escaped by the library."""
    srv.put("/a b/\u00e4.txt", b"spaced")
    srv.put("/objects/ab/cd.filez", b"plain")
    for url in (srv.url + "/a b/\u00e4.txt", srv.url + "/a%20b/%C3%A4.txt"):
        assert get(backend, url) == b"spaced"
    assert get(backend, srv.url_for("/objects/ab/cd.filez")) == b"plain"
    assert [r.path for r in srv.requests] == ["/a b/\u00e4.txt"] * 2 + ["/objects/ab/cd.filez"]

def test_make_fetcher_picks_backend() -> None:
    assert make_fetcher().backend_name == "aiohttp"
    assert make_fetcher(FetchConfig(http2=True)).backend_name == "httpx"
    with pytest.raises(ValueError):
        make_fetcher(backend="curl")


# -- status codes and retries ---------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404, 410])
def test_not_found_is_not_retried(backend: str, srv: FaultServer, status: int) -> None:
    srv.add_fault("/dir/file", Fault(status=status))
    with pytest.raises(NotFoundError) as info:
        get(backend, srv.url_for("/dir/file"))
    assert info.value.status == status and info.value.url == srv.url_for("/dir/file")
    assert srv.url_for("/dir/file") in str(info.value)
    assert len(srv.requests) == 1


def test_other_4xx_is_not_retried(backend: str, srv: FaultServer) -> None:
    srv.add_fault("/dir/file", Fault(status=400))
    with pytest.raises(HTTPStatusError) as info:
        get(backend, srv.url_for("/dir/file"))
    assert not isinstance(info.value, NotFoundError | TransientFetchError)
    assert info.value.status == 400 and len(srv.requests) == 1


@pytest.mark.parametrize("status", [500, 503, 408, 429])
def test_transient_status_retried_then_ok(backend: str, srv: FaultServer, status: int) -> None:
    srv.add_fault("/dir/file", Fault(status=status, times=2))
    assert get(backend, srv.url_for("/dir/file")) == BODY
    assert [r.status for r in srv.requests] == [status, status, 200]


def test_retries_zero_fails_at_once(backend: str, srv: FaultServer) -> None:
    srv.add_fault("/dir/file", Fault(status=503))
    with pytest.raises(TransientHTTPStatusError) as info:
        get(backend, srv.url_for("/dir/file"), attrs.evolve(FAST, retries=0))
    assert isinstance(info.value, HTTPStatusError) and info.value.status == 503
    assert len(srv.requests) == 1


def test_retries_exhausted(backend: str, srv: FaultServer) -> None:
    srv.add_fault("/dir/file", Fault(status=500))
    with pytest.raises(TransientFetchError):
        get(backend, srv.url_for("/dir/file"), attrs.evolve(FAST, retries=2))
    assert len(srv.requests) == 3


def test_retry_after_is_honoured_and_capped(backend: str, srv: FaultServer) -> None:
    srv.add_fault("/dir/file", Fault(status=429, retry_after="1", times=1))
    t0 = time.monotonic()
    assert get(backend, srv.url_for("/dir/file")) == BODY
    assert time.monotonic() - t0 >= 0.95
    srv.add_fault("/dir/file", Fault(status=503, retry_after="3600", times=1))
    t0 = time.monotonic()
    assert get(backend, srv.url_for("/dir/file"), attrs.evolve(FAST, retry_after_cap=0.2)) == BODY
    assert time.monotonic() - t0 < 2


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("-3") == 0.0


def test_random_failures_with_seeded_rng(backend: str, srv: FaultServer) -> None:
    for i in range(30):
        srv.put(f"/r/{i}", b"%d" % i)
    srv.add_fault("/r/*", Fault(fail_rate=0.3, seed=7))

    async def body(f: BaseFetcher) -> list[bytes | None]:
        res = await asyncio.gather(
            *(f.fetch_bytes(srv.url_for(f"/r/{i}"), max_size=10) for i in range(30))
        )
        return [r.data for r in res]

    assert run(backend, attrs.evolve(FAST, retries=8), body) == [b"%d" % i for i in range(30)]
    statuses = [r.status for r in srv.requests]
    assert 500 in statuses and statuses.count(200) == 30


# -- broken bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["truncate_at", "drop_at"])
def test_broken_body_is_retried(backend: str, srv: FaultServer, kind: str) -> None:
    srv.add_fault("/dir/file", Fault(**{kind: 3000}, times=1))  # type: ignore[arg-type]
    assert get(backend, srv.url_for("/dir/file")) == BODY
    assert len(srv.requests) == 2


def test_truncated_body_without_retry(backend: str, srv: FaultServer) -> None:
    srv.add_fault("/dir/file", Fault(content_length=len(BODY) + 50))
    with pytest.raises(TransientFetchError):
        get(backend, srv.url_for("/dir/file"), attrs.evolve(FAST, retries=0))


def test_body_longer_than_content_length(backend: str, srv: FaultServer) -> None:
    # Never more than Content-Length bytes: the body is cut there (checksums catch it later),
    # or the parser flags the extra bytes (aiohttp does when they arrive in the same read).
    srv.add_fault("/dir/file", Fault(content_length=100))
    try:
        data = get(backend, srv.url_for("/dir/file"), attrs.evolve(FAST, retries=0))
    except TransientFetchError as exc:
        assert len(str(exc)) < 600 and "\n" not in str(exc)
    else:
        assert data == BODY[:100]


def test_stream_restarts_before_retry(backend: str, srv: FaultServer) -> None:
    srv.add_fault("/dir/file", Fault(truncate_at=3000, times=1))
    got = bytearray()
    restarts: list[int] = []

    def restart() -> None:
        restarts.append(len(got))
        got.clear()

    n = run(
        backend,
        FAST,
        lambda f: f.fetch_stream(
            srv.url_for("/dir/file"), got.extend, max_size=len(BODY), restart=restart
        ),
    )
    assert n == len(BODY) and bytes(got) == BODY
    assert len(restarts) == 1 and 0 < restarts[0] <= 3000


def test_write_errors_propagate_unwrapped(backend: str, srv: FaultServer) -> None:
    def write(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as info:
        run(
            backend,
            FAST,
            lambda f: f.fetch_stream(
                srv.url_for("/dir/file"), write, max_size=1 << 20, restart=lambda: None
            ),
        )
    assert not isinstance(info.value, FetchError) and info.value.errno == 28
    assert len(srv.requests) == 1


# -- size caps ------------------------------------------------------------------------------


def test_cap_is_exact(backend: str, srv: FaultServer) -> None:
    assert get(backend, srv.url_for("/dir/file"), max_size=len(BODY)) == BODY
    with pytest.raises(TooLargeError):
        get(backend, srv.url_for("/dir/file"), max_size=len(BODY) - 1)


@pytest.mark.parametrize("announced", [True, False])
def test_endless_body_is_cut_at_cap(backend: str, srv: FaultServer, announced: bool) -> None:
    srv.add_fault("/big", Fault(endless=True, content_length=10**12 if announced else None))
    seen = [0]

    def write(data: bytes) -> None:
        seen[0] += len(data)

    t0 = time.monotonic()
    with pytest.raises(TooLargeError):
        run(
            backend,
            FAST,
            lambda f: f.fetch_stream(
                srv.url_for("/big"), write, max_size=200_000, restart=lambda: None
            ),
        )
    assert time.monotonic() - t0 < 3
    assert seen[0] <= 200_000
    if announced:
        assert seen[0] == 0  # refused on the header, before any byte is passed on
    assert len(srv.wait_for_requests(1)) == 1  # TooLargeError is never retried


# -- redirects ------------------------------------------------------------------------------


def test_redirects_are_followed(backend: str, srv: FaultServer) -> None:
    srv.add_fault("/a", Fault(redirect="/b", redirect_status=301))
    srv.add_fault("/b", Fault(redirect="dir/file", redirect_status=307))  # relative
    res = run(backend, FAST, lambda f: f.fetch_bytes(srv.url_for("/a"), max_size=1 << 20))
    assert res.data == BODY and res.url == srv.url_for("/dir/file")
    assert [r.path for r in srv.requests] == ["/a", "/b", "/dir/file"]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"/a": "/a"}, "loop"),
        ({"/a": "/b", "/b": "/a"}, "loop"),
        ({"/a": "ftp://127.0.0.1/x"}, "non-HTTP"),
        ({"/a": "file:///etc/passwd"}, "non-HTTP"),
        ({f"/a{'' if i == 0 else i}": f"/a{i + 1}" for i in range(6)}, "more than 3 redirects"),
    ],
)
def test_bad_redirects_are_refused(
    backend: str, srv: FaultServer, rules: dict[str, str], message: str
) -> None:
    for path, location in rules.items():
        srv.add_fault(path, Fault(redirect=location))
    with pytest.raises(FetchError, match=message) as info:
        get(backend, srv.url_for("/a"), attrs.evolve(FAST, max_redirects=3))
    assert not isinstance(info.value, TransientFetchError | HTTPStatusError)
    assert len(srv.requests) <= 4  # not retried


# -- speed and deadlines --------------------------------------------------------------------

SLOW = attrs.evolve(FAST, low_speed_limit=1000, low_speed_time=0.5, retries=0)


@pytest.mark.parametrize(
    ("kind", "value"), [("trickle_body", 300), ("trickle_headers", 30), ("delay", 5)]
)
def test_low_speed_abort(backend: str, srv: FaultServer, kind: str, value: float) -> None:
    srv.add_fault("/dir/file", Fault(**{kind: value}))  # type: ignore[arg-type]
    t0 = time.monotonic()
    with pytest.raises(TransientFetchError, match="too slow"):
        get(backend, srv.url_for("/dir/file"), SLOW)
    assert 0.4 < time.monotonic() - t0 < 2


def test_slow_but_fast_enough(backend: str, srv: FaultServer) -> None:
    srv.put("/small", BODY[:3000])
    srv.add_fault("/small", Fault(trickle_body=5000))
    assert get(backend, srv.url_for("/small"), SLOW) == BODY[:3000]


def test_request_deadline(backend: str, srv: FaultServer) -> None:
    srv.add_fault("/dir/file", Fault(delay=5))
    cfg = attrs.evolve(SLOW, low_speed_limit=0, request_deadline=0.3)
    t0 = time.monotonic()
    with pytest.raises(TransientFetchError, match=r"longer than 0\.3 s"):
        get(backend, srv.url_for("/dir/file"), cfg)
    assert time.monotonic() - t0 < 1.5


# -- conditional requests -------------------------------------------------------------------


def test_conditional_get(backend: str, srv: FaultServer) -> None:
    url = srv.url_for("/dir/file")

    async def body(f: BaseFetcher) -> None:
        first = await f.fetch_bytes(url, max_size=1 << 20)
        by_etag = await f.fetch_bytes(url, max_size=1 << 20, etag=first.etag)
        assert by_etag.not_modified and by_etag.data is None and by_etag.url == url
        lm = first.last_modified
        assert lm is not None
        by_date = await f.fetch_bytes(url, max_size=1 << 20, last_modified=lm.replace("GMT", "UTC"))
        assert by_date.not_modified and by_date.data is None
        stale = await f.fetch_bytes(url, max_size=1 << 20, etag='"stale"')
        assert not stale.not_modified and stale.data == BODY

    run(backend, FAST, body)
    recs = srv.requests
    assert [r.status for r in recs] == [200, 304, 304, 200]
    assert "if-none-match" in recs[1].headers and "if-modified-since" in recs[2].headers


# -- mirrors --------------------------------------------------------------------------------


def test_mirrors_fail_over_on_status(backend: str, srv: FaultServer) -> None:
    srv.add_fault("/m2/*", Fault(status=500))
    srv.put("/m3/x", b"third")
    mirrors = [srv.url_for("/m1/x"), srv.url_for("/m2/x"), srv.url_for("/m3/x")]
    res = run(backend, FAST, lambda f: f.fetch_bytes(mirrors, max_size=100))
    assert res.data == b"third" and res.url == mirrors[2]
    assert [r.status for r in srv.requests] == [404, 500, 200]


def test_mirrors_all_fail_raise_last_error(backend: str, srv: FaultServer) -> None:
    srv.add_fault("/m2/*", Fault(status=503))
    mirrors = [srv.url_for("/m1/x"), srv.url_for("/m2/x")]
    with pytest.raises(TransientHTTPStatusError) as info:
        get(backend, mirrors, attrs.evolve(FAST, retries=1))
    assert info.value.url == mirrors[1]
    assert [r.path for r in srv.requests] == ["/m1/x", "/m2/x"] * 2  # whole list retried


def test_connection_error_is_wrapped(backend: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}/x"
    with pytest.raises(TransientFetchError) as info:
        get(backend, url, attrs.evolve(FAST, retries=1))
    assert info.value.url == url and url in str(info.value)
    assert "\n" not in str(info.value)


def test_non_http_url_is_refused(backend: str) -> None:
    with pytest.raises(FetchError, match="only http"):
        get(backend, "file:///etc/passwd")


def test_unknown_content_encoding(backend: str, srv: FaultServer) -> None:
    srv.add_fault("/dir/file", Fault(headers=(("Content-Encoding", "gzip"),)))
    with pytest.raises(FetchError, match="Content-Encoding"):
        get(backend, srv.url_for("/dir/file"))


def test_zstd_encoding(backend: str, srv: FaultServer) -> None:
    zstd = pytest.importorskip("zstandard")
    data = BODY * 10
    enc = (("Content-Encoding", "zstd"),)
    srv.add_fault("/z", Fault(body=zstd.ZstdCompressor().compress(data), headers=enc))
    srv.add_fault("/bomb", Fault(body=zstd.ZstdCompressor().compress(bytes(50 << 20)), headers=enc))
    assert get(backend, srv.url_for("/z")) == data
    assert srv.requests[0].headers["accept-encoding"] == "zstd"
    with pytest.raises(TooLargeError):
        get(backend, srv.url_for("/bomb"), max_size=1 << 20)


def test_proxy(backend: str, srv: FaultServer) -> None:
    target = f"http://127.0.0.1:{closed_port()}/dir/file"
    assert get(backend, target, attrs.evolve(FAST, proxy=srv.url)) == BODY
    (rec,) = srv.requests
    assert rec.proxied and rec.path == "/dir/file"


# -- TLS ------------------------------------------------------------------------------------


def test_tls_with_right_ca(backend: str, srv: FaultServer, pki: Pki, tmp_path: Path) -> None:
    with FaultServer(tmp_path, pki=pki) as tls:
        cfg = attrs.evolve(FAST, tls_ca_path=str(pki.ca_cert))
        assert get(backend, tls.url_for("/dir/file"), cfg) == BODY
        if backend == "httpx":  # HTTP/2 asked for; ALPN settles on HTTP/1.1 with this server
            assert get(backend, tls.url_for("/dir/file"), attrs.evolve(cfg, http2=True)) == BODY
        # https -> http downgrade is refused even when the target exists.
        tls.add_fault("/down", Fault(redirect=srv.url_for("/dir/file")))
        with pytest.raises(FetchError, match="https to http"):
            get(backend, tls.url_for("/down"), cfg)


@pytest.mark.parametrize("case", ["other-ca", "system-ca", "wrong-host"])
def test_tls_verification_failures(backend: str, pki: Pki, tmp_path: Path, case: str) -> None:
    ca = {"other-ca": str(pki.other_ca_cert), "system-ca": None, "wrong-host": str(pki.ca_cert)}
    with FaultServer(tmp_path, pki=pki, wrong_host=case == "wrong-host") as tls:
        cfg = attrs.evolve(FAST, tls_ca_path=ca[case])
        with pytest.raises(FetchError, match="certificate verification failed") as info:
            get(backend, tls.url_for("/x"), cfg)
        assert not isinstance(info.value, TransientFetchError)  # not retried
        assert tls.requests == []
        # tls_permissive accepts it.
        with pytest.raises(NotFoundError):
            get(backend, tls.url_for("/x"), attrs.evolve(cfg, tls_permissive=True))


def test_tls_client_certificate(backend: str, pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"secret")
    with FaultServer(tmp_path, pki=pki, require_client_cert=True) as tls:
        cfg = attrs.evolve(FAST, tls_ca_path=str(pki.ca_cert), retries=0)
        with pytest.raises(FetchError):
            get(backend, tls.url_for("/f"), cfg)
        cfg = attrs.evolve(
            cfg,
            tls_client_cert_path=str(pki.client_cert),
            tls_client_key_path=str(pki.client_key),
        )
        assert get(backend, tls.url_for("/f"), cfg) == b"secret"


def test_aiohttp_default_contexts_trust_nothing() -> None:
    """fetcher_aiohttp loads aiohttp without its two import-time TLS contexts reading the
    system trust store: they trust nothing (fail closed), and contexts made afterwards, ours
    included, load it as usual. (A fresh interpreter: here aiohttp may be loaded already.)"""
    code = (
        "import ssl, json\n"
        "import pyostree.fetcher_aiohttp\n"
        "import aiohttp.connector as c\n"
        "from pyostree.fetcher import FetchConfig, make_ssl_context\n"
        "print(json.dumps([c._SSL_CONTEXT_VERIFIED.cert_store_stats(),\n"
        "                  c._SSL_CONTEXT_VERIFIED.verify_mode == ssl.CERT_REQUIRED,\n"
        "                  ssl.create_default_context().cert_store_stats(),\n"
        "                  make_ssl_context(FetchConfig()).cert_store_stats()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    theirs, required, default, ours = json.loads(out)
    assert theirs["x509_ca"] == 0 and required
    assert default == ours
    system = ssl.create_default_context().cert_store_stats()
    assert ours == system, "pyostree's own context lost the system trust store"


def test_bad_tls_files() -> None:
    with pytest.raises(FetchError, match="TLS files"):
        make_fetcher(FetchConfig(tls_ca_path="/nonexistent/ca.pem"))


# -- concurrency ----------------------------------------------------------------------------


def test_many_concurrent_requests(backend: str, srv: FaultServer) -> None:
    n = 300
    for i in range(n):
        srv.put(f"/c/{i}", b"%d" % i * (i % 50))
    srv.add_fault("/c/*", Fault(delay=0.002))

    async def body(f: BaseFetcher) -> list[bytes | None]:
        res = await asyncio.gather(
            *(f.fetch_bytes(srv.url_for(f"/c/{i}"), max_size=1000) for i in range(n))
        )
        return [r.data for r in res]

    assert run(backend, attrs.evolve(FAST, max_in_flight=4), body) == [
        b"%d" % i * (i % 50) for i in range(n)
    ]
    assert 2 <= srv.peak_in_flight <= 4
    assert len(srv.requests) == n
