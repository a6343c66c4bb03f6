"""Requests per second of the pyostree fetcher back-ends on loopback.

Serves N small files from separate server processes (aiohttp.web by default, nginx, or the
threaded tests/httpserver.py), so the server's GIL is not the client's; then fetches them all
with each back-end and prints the best of three runs in req/s. ``--raw`` adds plain
aiohttp/httpx loops without pyostree's policy layer, to show its overhead.

    python benchmarks/fetcher_throughput.py [--files 2000] [--size 200] [--servers 2] [--raw]
                                            [--server aiohttp|nginx|threaded]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Coroutine
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyostree.fetcher import FetchConfig, make_fetcher


def _serve(kind: str, files: int, size: int, port_q: mp.Queue[int], stop: Event) -> None:
    if kind == "aiohttp":
        _serve_aiohttp(files, size, port_q, stop)
        return
    if kind == "nginx":
        _serve_nginx(files, size, port_q, stop)
        return
    from tests.httpserver import FaultServer

    with FaultServer() as srv:
        for i in range(files):
            srv.put(f"/objects/{i:06d}", bytes([i % 256]) * size)
        port_q.put(srv.port)
        stop.wait()


_NGINX_CONF = """
{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
    }}
}}
"""


def _serve_nginx(files: int, size: int, port_q: mp.Queue[int], stop: Event) -> None:
    """nginx (if installed): the fastest server, so the numbers are the client's."""
    import os
    import shutil
    import socket
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        www = Path(tmp, "www", "objects")
        www.mkdir(parents=True)
        for i in range(files):
            (www / f"{i:06d}").write_bytes(bytes([i % 256]) * size)
        user = "user root root;\n" if os.geteuid() == 0 else ""
        conf = Path(tmp, "nginx.conf")
        conf.write_text(_NGINX_CONF.format(user=user, tmp=tmp, port=port))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        proc = subprocess.Popen([nginx, "-p", tmp, "-c", str(conf), "-e", f"{tmp}/error.log"])
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            port_q.put(port)
            stop.wait()
        finally:
            proc.terminate()
            proc.wait(5)


def _serve_aiohttp(files: int, size: int, port_q: mp.Queue[int], stop: Event) -> None:
    """A faster server (aiohttp.web, C parser) so the client is what gets measured."""
    from aiohttp import web

    blobs = {f"/objects/{i:06d}": bytes([i % 256]) * size for i in range(files)}

    async def handle(request: web.Request) -> web.Response:
        data = blobs.get(request.path)
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data)

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_q.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await runner.cleanup()

    asyncio.run(run())


async def _pyostree(backend: str, urls: list[str], inflight: int) -> int:
    cfg = FetchConfig(max_in_flight=inflight)
    async with make_fetcher(cfg, backend=backend) as f:
        res = await asyncio.gather(*(f.fetch_bytes(u, max_size=1 << 20) for u in urls))
    return sum(len(r.data or b"") for r in res)


async def _raw_aiohttp(urls: list[str], inflight: int) -> int:
    import aiohttp

    sem = asyncio.Semaphore(inflight)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight)) as s:

        async def one(u: str) -> int:
            async with sem, s.get(u) as r:
                return len(await r.read())

        return sum(await asyncio.gather(*(one(u) for u in urls)))


async def _raw_httpx(urls: list[str], inflight: int) -> int:
    import httpx

    sem = asyncio.Semaphore(inflight)
    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    async with httpx.AsyncClient(limits=limits) as c:

        async def one(u: str) -> int:
            async with sem:
                return len((await c.get(u)).content)

        return sum(await asyncio.gather(*(one(u) for u in urls)))


def _measure(
    runs: dict[str, Callable[[], Coroutine[Any, Any, int]]], n: int, expect: int, rounds: int
) -> None:
    """Warm each variant up once, then interleave ``rounds`` timed runs (so a load spike on a
    shared machine hits every variant alike) and print the best and the median."""
    for run in runs.values():
        asyncio.run(run())
    rates: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            got = asyncio.run(run())
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            assert got == expect, (got, expect)
            rates[name].append(n / dt)
            cpu[name].append(dc / n * 1e6)
    # Client CPU per request is the steadier figure on a shared machine; 1e6 / it is the
    # rate one client core could sustain against an infinitely fast server.
    for name, r in rates.items():
        r.sort()
        c = sorted(cpu[name])[len(cpu[name]) // 2]
        print(
            f"{name:<18} best {r[-1]:7.0f} req/s  median {r[len(r) // 2]:7.0f} req/s  "
            f"client CPU {c:6.0f} µs/req (≈{1e6 / c:6.0f} req/s per core)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--raw", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--server", choices=["aiohttp", "nginx", "threaded"], default="aiohttp")
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    port_q: mp.Queue[int] = ctx.Queue()  # type: ignore[assignment]
    procs = [
        ctx.Process(
            target=_serve, args=(args.server, args.files, args.size, port_q, stop), daemon=True
        )
        for _ in range(args.servers)
    ]
    for p in procs:
        p.start()
    ports = [port_q.get(timeout=30) for _ in procs]
    urls = [f"http://127.0.0.1:{ports[i % len(ports)]}/objects/{i:06d}" for i in range(args.files)]
    expect = args.files * args.size
    runs: dict[str, Callable[[], Coroutine[Any, Any, int]]] = {
        "pyostree/aiohttp": lambda: _pyostree("aiohttp", urls, args.inflight),
        "pyostree/httpx": lambda: _pyostree("httpx", urls, args.inflight),
    }
    if args.raw:
        runs["raw aiohttp"] = lambda: _raw_aiohttp(urls, args.inflight)
        runs["raw httpx"] = lambda: _raw_httpx(urls, args.inflight)
    print(
        f"{args.files} files of {args.size} B, {args.inflight} in flight, "
        f"{args.servers} {args.server} server(s), {args.rounds} rounds"
    )
    try:
        _measure(runs, args.files, expect, args.rounds)
    finally:
        stop.set()
        for p in procs:
            p.join(5)


if __name__ == "__main__":
    main()
