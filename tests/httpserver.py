"""A fault-injecting HTTP(S) server on 127.0.0.1 for fetcher and pull tests.

``FaultServer`` serves a directory (plus in-memory files set with ``put``) over HTTP/1.1 with
keep-alive, ETag/Last-Modified and 304 answers. Tests attach a ``Fault`` to a path (glob or
predicate) to make the server misbehave: wrong status, random failures, truncated or endless
bodies, lying Content-Length, trickled bytes, redirects, dropped connections and delays. Every
request is logged. ``make_pki`` writes a throwaway CA and certificates for HTTPS tests.

Only the standard library and ``cryptography`` are used, so the server knows nothing of the
client libraries under test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import email.utils
import fnmatch
import hashlib
import os
import random
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Matcher = str | Callable[[str], bool]


@dataclasses.dataclass
class Fault:
    """How the server misbehaves for matching requests. Unset fields mean normal behaviour."""

    status: int | None = None  # answer this status (with a short text body) instead of the file
    retry_after: str | None = None  # Retry-After header value sent with ``status``
    fail_rate: float = 0.0  # probability (seeded RNG) of answering ``fail_status`` instead
    fail_status: int = 500
    seed: int = 0
    delay: float = 0.0  # seconds to wait before answering
    truncate_at: int | None = None  # send this many body bytes, then close (full Content-Length)
    drop_at: int | None = None  # send this many body bytes, then reset the connection (RST)
    content_length: int | None = None  # send this Content-Length instead of the true one
    no_content_length: bool = False  # no Content-Length: the body ends when the connection closes
    trickle_headers: float | None = None  # send the status line and headers at this many B/s
    trickle_body: float | None = None  # send the body at this many B/s
    endless: bool = False  # body never ends (no Content-Length unless ``content_length``)
    body: bytes | None = None  # replace the body (an HTML error page, a zstd frame, ...)
    redirect: str | None = None  # answer ``redirect_status`` with this Location
    redirect_status: int = 302
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers
    times: int | None = None  # only the first N matching requests get the fault

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Claim one use of the fault; False once ``times`` is spent."""
        with self._lock:
            if self.times is None:
                return True
            if self.times <= 0:
                return False
            self.times -= 1
            return True

    def random_failure(self) -> bool:
        with self._lock:
            return self.fail_rate > 0 and self._rng.random() < self.fail_rate


_NO_FAULT = Fault()


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it. ``headers`` has lower-case names."""

    method: str
    path: str
    status: int
    bytes_sent: int
    headers: dict[str, str]
    proxied: bool = False


@dataclasses.dataclass(frozen=True)
class Pki:
    """Paths of a throwaway PKI: a CA, certificates signed by it, and an unrelated CA."""

    ca_cert: Path
    server_cert: Path  # SAN 127.0.0.1 and localhost
    server_key: Path
    wrong_host_cert: Path  # SAN wrong.invalid only, same CA
    wrong_host_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path  # a CA that signed nothing we serve


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pyostree-test"
    sys_version = ""
    timeout = 30  # idle keep-alive connections end after this
    server: _Server

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.server.tls_context is not None:
            self.request = self.server.tls_context.wrap_socket(self.request, server_side=True)
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)
            if isinstance(self.connection, ssl.SSLSocket):
                # The raw socket was detached by wrap_socket; the TLS socket is closed here.
                self.server.abortive.discard(self.connection)
                self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    # -- answering -----------------------------------------------------------------------

    def _serve(self, *, head: bool) -> None:
        srv = self.server.owner
        path, proxied = _request_path(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._sent = 0
        self._status = 0
        with srv._lock:
            srv._in_flight += 1
            srv.peak_in_flight = max(srv.peak_in_flight, srv._in_flight)
        try:
            self._answer(srv, path, headers, head)
        except (OSError, ssl.SSLError):
            self.close_connection = True
        finally:
            with srv._lock:
                srv._in_flight -= 1
                srv._log.append(
                    RequestRecord(self.command, path, self._status, self._sent, headers, proxied)
                )
                srv._logged.notify_all()

    def _answer(self, srv: FaultServer, path: str, headers: dict[str, str], head: bool) -> None:
        fault = srv._fault_for(path)
        if fault is not None and fault.delay and srv._stop.wait(fault.delay):
            self.close_connection = True
            return
        extra = list(fault.headers) if fault else []
        if fault is not None and fault.random_failure():
            self._send(fault, fault.fail_status, extra, b"random failure\n", head)
            return
        if fault is not None and fault.status is not None:
            if fault.retry_after is not None:
                extra.append(("Retry-After", fault.retry_after))
            body = fault.body if fault.body is not None else f"status {fault.status}\n".encode()
            self._send(fault, fault.status, extra, body, head)
            return
        if fault is not None and fault.redirect is not None:
            extra.append(("Location", fault.redirect))
            self._send(fault, fault.redirect_status, extra, b"moved\n", head)
            return
        found = srv._lookup(path)
        if found is None and (fault is None or (fault.body is None and not fault.endless)):
            self._send(fault, 404, extra, b"not found\n", head)
            return
        data, etag, mtime = found if found is not None else (b"", '"x"', srv._started)
        if fault is not None and fault.body is not None:
            data = fault.body
        last_modified = email.utils.formatdate(mtime, usegmt=True)
        extra += [("ETag", etag), ("Last-Modified", last_modified)]
        if _not_modified(headers, etag, mtime):
            self._send(None, 304, extra, b"", head=True)
            return
        self._send(fault, 200, extra, data, head)

    def _send(
        self,
        fault: Fault | None,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        head: bool,
    ) -> None:
        """Write a whole response by hand so faults can bend any part of it."""
        self._status = status
        f = fault or _NO_FAULT
        length: int | None = len(body)
        if f.content_length is not None:
            length = f.content_length
        elif f.no_content_length or f.endless:
            length = None
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('X',))[0]}"]
        lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
        lines.append("Server: pyostree-test")
        lines += [f"{k}: {v}" for k, v in headers]
        if length is not None and status != 304:
            lines.append(f"Content-Length: {length}")
        broken = (
            length is None
            or length != len(body)
            or f.endless
            or f.truncate_at is not None
            or f.drop_at is not None
        )
        if broken and status != 304:
            lines.append("Connection: close")
            self.close_connection = True
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if head or status == 304:
            self._write(head_bytes, f.trickle_headers)
            return
        if not broken and f.trickle_headers is None and f.trickle_body is None:
            self.wfile.write(head_bytes + body)  # one send: no Nagle/delayed-ACK stall
            self._sent += len(body)
            return
        self._write(head_bytes, f.trickle_headers)
        if f.endless:
            chunk = bytes(range(256)) * 256
            while not self.server.owner._stop.is_set():
                self._write(chunk, f.trickle_body, count=True)
            return
        stop = f.drop_at if f.drop_at is not None else f.truncate_at
        self._write(body[:stop] if stop is not None else body, f.trickle_body, count=True)
        if f.drop_at is not None:
            # SO_LINGER 0 makes close() send RST; skip the polite shutdown in _Server.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.server.abortive.add(self.connection)

    def _write(self, data: bytes, rate: float | None, *, count: bool = False) -> None:
        if rate is None:
            self.wfile.write(data)
            if count:
                self._sent += len(data)
            return
        piece = max(1, int(rate / 20))
        stop = self.server.owner._stop
        for i in range(0, len(data), piece):
            part = data[i : i + piece]
            self.wfile.write(part)
            if count:
                self._sent += len(part)
            if stop.wait(len(part) / rate):
                raise ConnectionAbortedError("server stopping")


def _request_path(raw: str) -> tuple[str, bool]:
    """The path of a request target; absolute-form targets (sent to a proxy) are accepted."""
    proxied = raw.startswith(("http://", "https://"))
    path = urllib.parse.urlsplit(raw).path if proxied else raw.split("?", 1)[0]
    return urllib.parse.unquote(path or "/"), proxied


def _not_modified(headers: dict[str, str], etag: str, mtime: float) -> bool:
    inm = headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return "*" in tags or etag in tags
    ims = headers.get("if-modified-since")
    if ims is not None:
        try:
            since = email.utils.parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=datetime.UTC)
        return int(mtime) <= since.timestamp()
    return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, owner: FaultServer, tls_context: ssl.SSLContext | None) -> None:
        self.owner = owner
        self.tls_context = tls_context
        self.connections: set[socket.socket] = set()
        self.abortive: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def track(self, sock: socket.socket, *, add: bool) -> None:
        with self._conn_lock:
            if add:
                self.connections.add(sock)
            else:
                self.connections.discard(sock)

    def shutdown_request(self, request: Any) -> None:
        if request in self.abortive:
            self.abortive.discard(request)
            request.close()
            return
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # client hang-ups and failed TLS handshakes are expected in fault tests

    def close_all(self) -> None:
        with self._conn_lock:
            conns = list(self.connections)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class FaultServer:
    """Threaded HTTP(S) server on 127.0.0.1 with per-path faults and a request log.

    Use as a context manager::

        with FaultServer(tmp_path) as srv:
            srv.add_fault("/objects/*", Fault(status=500, times=2))
            url = srv.url_for("/objects/ab/cd.filez")
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        pki: Pki | None = None,
        wrong_host: bool = False,
        require_client_cert: bool = False,
    ) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self._files: dict[str, tuple[bytes, float]] = {}
        self._faults: list[tuple[Matcher, Fault]] = []
        self._log: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._logged = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._started = time.time()
        self._in_flight = 0
        self.peak_in_flight = 0
        tls = None
        if pki is not None:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert, key = (
                (pki.wrong_host_cert, pki.wrong_host_key)
                if wrong_host
                else (pki.server_cert, pki.server_key)
            )
            tls.load_cert_chain(cert, key)
            if require_client_cert:
                tls.verify_mode = ssl.CERT_REQUIRED
                tls.load_verify_locations(pki.ca_cert)
        self.scheme = "https" if tls else "http"
        self._httpd = _Server(self, tls)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.close_all()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- content and faults --------------------------------------------------------------

    @property
    def url(self) -> str:
        host = "localhost" if self.scheme == "https" else "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}"

    def url_for(self, path: str) -> str:
        return self.url + "/" + path.lstrip("/")

    def put(self, path: str, data: bytes, mtime: float | None = None) -> str:
        """Serve ``data`` at ``path`` (in memory, ahead of the directory); returns its URL."""
        with self._lock:
            self._files["/" + path.lstrip("/")] = (data, self._started if mtime is None else mtime)
        return self.url_for(path)

    def add_fault(self, match: Matcher, fault: Fault) -> Fault:
        """Attach ``fault`` to paths matching a glob or predicate; the newest rule wins."""
        with self._lock:
            self._faults.insert(0, (match, fault))
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _fault_for(self, path: str) -> Fault | None:
        with self._lock:
            rules = list(self._faults)
        for match, fault in rules:
            hit = fnmatch.fnmatchcase(path, match) if isinstance(match, str) else match(path)
            if hit and fault.take():
                return fault
        return None

    def _lookup(self, path: str) -> tuple[bytes, str, float] | None:
        with self._lock:
            mem = self._files.get(path)
        if mem is not None:
            data, mtime = mem
            return data, '"' + hashlib.sha256(data).hexdigest()[:16] + '"', mtime
        if self.root is None:
            return None
        target = (self.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        st = target.stat()
        return target.read_bytes(), f'"{st.st_mtime_ns:x}-{st.st_size:x}"', st.st_mtime

    # -- request log ---------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """The request log, once no request is being answered (waits up to 5 s): a client
        can see a response end before the server thread has logged it."""
        deadline = time.monotonic() + 5.0
        with self._logged:
            while self._in_flight and (left := deadline - time.monotonic()) > 0:
                self._logged.wait(left)
            return list(self._log)

    def requests_for(self, path: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.path == path]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self.peak_in_flight = 0

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RequestRecord]:
        """Wait until at least ``count`` requests are logged (a response may end after the
        client gave up on it)."""
        deadline = time.monotonic() + timeout
        with self._logged:
            while len(self._log) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._logged.wait(left)
            return list(self._log)


def make_pki(directory: str | os.PathLike[str]) -> Pki:
    """Write a throwaway CA, server/client certificates and an unrelated CA into ``directory``."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def save(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (out / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (out / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def make_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cert, key

    def make_leaf(
        ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
        cn: str,
        sans: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        ca_cert, ca_key = ca
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    ca = make_ca("pyostree test CA")
    other = make_ca("pyostree unrelated CA")
    server = make_leaf(
        ca,
        "localhost",
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        ExtendedKeyUsageOID.SERVER_AUTH,
    )
    wrong = make_leaf(
        ca, "wrong.invalid", [x509.DNSName("wrong.invalid")], ExtendedKeyUsageOID.SERVER_AUTH
    )
    client = make_leaf(ca, "pyostree client", [], ExtendedKeyUsageOID.CLIENT_AUTH)
    save("ca", *ca)
    save("other-ca", *other)
    save("server", *server)
    save("wrong-host", *wrong)
    save("client", *client)
    return Pki(
        ca_cert=out / "ca.pem",
        server_cert=out / "server.pem",
        server_key=out / "server.key",
        wrong_host_cert=out / "wrong-host.pem",
        wrong_host_key=out / "wrong-host.key",
        client_cert=out / "client.pem",
        client_key=out / "client.key",
        other_ca_cert=out / "other-ca.pem",
    )


__all__ = ["Fault", "FaultServer", "Pki", "RequestRecord", "make_pki"]
