"""A private nginx (the Debian binary) serving one directory on a free loopback port.

The server gets its own config, pid, error log, temp dirs and access log in a temporary directory,
runs in the foreground as our child (``daemon off``) and is stopped by its PID.  Every request is
logged unbuffered as one line, so the traffic of one measured command is the slice of the access
log written while it ran: :meth:`NginxServer.log_offset` before, :meth:`traffic_since` after.

    python benchmarks/server.py DIR      # serve DIR until Ctrl-C
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# One line per request: connection serial, status, body bytes, total bytes, protocol, method, uri.
LOG_FORMAT = ("$connection $status $body_bytes_sent $bytes_sent $server_protocol $request_method "
              "$uri")

CONFIG = """\
{user}worker_processes {workers};
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format bench '{log_format}';
    access_log {tmp}/access.log bench;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    types {{ }}
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    server_tokens off;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


@dataclass(slots=True)
class Traffic:
    """What the server did for one slice of its access log."""

    requests: int = 0
    body_bytes: int = 0
    bytes_sent: int = 0
    connections: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    protocols: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"requests": self.requests, "body_bytes": self.body_bytes,
                "bytes_sent": self.bytes_sent, "connections": self.connections,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "protocols": dict(self.protocols), "by_kind": dict(sorted(self.by_kind.items()))}


def request_kind(path: str) -> str:
    """Classify an OSTree URL path: ``summary``, ``config``, ``delta``, ``object.<type>``, …"""
    parts = path.strip("/").split("/")
    if parts[0] == "objects" and len(parts) == 3:
        return "object." + parts[2].rpartition(".")[2]
    if parts[0] in ("deltas", "delta-indexes"):
        return "delta" if parts[0] == "deltas" else "delta-index"
    return parts[0] if len(parts) == 1 else parts[0] + "/"


def parse_access_log(text: str) -> Traffic:
    """Sum the lines of an access log written with :data:`LOG_FORMAT`."""
    t = Traffic()
    conns: set[str] = set()
    for line in text.splitlines():
        fields = line.split(" ", 6)
        if len(fields) != 7:
            continue
        conn, status, body, sent, proto, _method, uri = fields
        t.requests += 1
        t.body_bytes += int(body)
        t.bytes_sent += int(sent)
        conns.add(conn)
        t.statuses[int(status)] = t.statuses.get(int(status), 0) + 1
        t.protocols[proto] = t.protocols.get(proto, 0) + 1
        kind = request_kind(uri)
        t.by_kind[kind] = t.by_kind.get(kind, 0) + 1
    t.connections = len(conns)
    return t


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NginxServer:
    """nginx serving ``root`` read-only on 127.0.0.1; use as a context manager."""

    def __init__(self, root: Path, *, workers: int = 1) -> None:
        self.root = root.resolve()
        self.workers = workers
        self.tmp: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "access.log"

    def start(self, timeout: float = 10.0) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        last_error = ""
        for _attempt in range(5):
            self.port = free_port()
            conf = self.tmp / "nginx.conf"
            user = "user root root;\n" if os.geteuid() == 0 else ""
            conf.write_text(CONFIG.format(user=user, workers=self.workers, tmp=self.tmp,
                                          log_format=LOG_FORMAT, port=self.port, root=self.root))
            self.access_log.touch()
            with open(self.tmp / "stderr.log", "ab") as stderr:
                self.proc = subprocess.Popen(
                    [NGINX, "-p", str(self.tmp), "-c", str(conf), "-e",
                     str(self.tmp / "error.log")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
            if self._wait_ready(timeout):
                self.reset_log()
                return
            last_error = self._stop_proc()
        raise RuntimeError(f"nginx did not start: {last_error.strip()[-500:]}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("HEAD", "/config")
                conn.getresponse().read()
                conn.close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def reset_log(self) -> None:
        """Empty the access log (nginx appends, so it goes on writing at the new end)."""
        with open(self.access_log, "r+b") as f:
            f.truncate(0)

    def _stop_proc(self) -> str:
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        err = ""
        for name in ("stderr.log", "error.log"):
            if self.tmp is not None and (self.tmp / name).exists():
                err += (self.tmp / name).read_text(errors="replace")
        return err

    def stop(self) -> None:
        self._stop_proc()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def log_offset(self) -> int:
        return self.access_log.stat().st_size

    def traffic_since(self, offset: int, settle: float = 0.05) -> Traffic:
        """Traffic logged after ``offset``; waits until the log stops growing (≤ 1 s)."""
        size = self.log_offset()
        for _ in range(20):
            time.sleep(settle)
            new = self.log_offset()
            if new == size:
                break
            size = new
        with open(self.access_log, "rb") as f:
            f.seek(offset)
            data = f.read(size - offset)
        # Only whole lines: a line being written right now belongs to nobody yet.
        return parse_access_log(data[: data.rfind(b"\n") + 1].decode(errors="replace"))

    def __enter__(self) -> NginxServer:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: server.py DIR", file=sys.stderr)
        return 2
    with NginxServer(Path(args[0])) as srv:
        print(f"serving {args[0]} at {srv.url}/ (access log {srv.access_log}); Ctrl-C stops")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
