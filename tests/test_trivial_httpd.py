"""``pyostree trivial-httpd``, always as a real process found through its ``--port-file``: the
real ``ostree pull`` and ``pyostree pull`` fetch from it (the repository made by the real
``ostree commit``), its HTTP answers (Range, HEAD, conditionals, listings, redirects) and refusals
(``..``, ``%2e%2e``, symlinks pointing out, FIFOs, private files), upstream's test hooks, ``-d``,
``--autoexit``, SIGTERM/SIGINT and usage errors."""

from __future__ import annotations

import base64
import contextlib
import email.utils
import http.client
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .pullhelpers import (
    TS_V2,
    assert_one_error,
    commit,
    fsck_both,
    init_repo,
    make_client,
    needs_ostree,
    ostree,
    pyostree,
    pyostree_env,
    rev_parse,
    summary_update,
    wait_until,
    write_tree,
)

START_TIMEOUT = 15
_ids = itertools.count()


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _stop(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=10)
    return proc.returncode, out, err


@contextlib.contextmanager
def trivial_httpd(tmp: Path, directory: Path, *args: str) -> Iterator[Server]:
    """Start the server on a free port; stop it with SIGTERM, which must end it cleanly."""
    n = next(_ids)
    port_file, log = tmp / f"port-{n}", tmp / f"httpd-{n}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyostree", "trivial-httpd", f"--port-file={port_file}",
         f"--log-file={log}", *args, str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=pyostree_env(tmp))
    try:
        assert wait_until(lambda: port_file.exists() or proc.poll() is not None,
                          timeout=START_TIMEOUT)
        assert proc.poll() is None, proc.communicate()
        yield Server(proc, int(port_file.read_text()), log)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode is None:  # not stopped by the test itself
        code, out, err = _stop(proc)
        assert (code, out, err) == (0, "", ""), err


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def ask(conn: http.client.HTTPConnection, path: str, method: str = "GET",
        **headers: str) -> Answer:
    """One request on a (kept-alive) connection; ``path`` is sent exactly as given."""
    conn.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
    resp = conn.getresponse()
    return Answer(resp.status, resp.headers, resp.read())


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A directory laid out as the refkit guide says (``ostree -> ostree-repo``), holding an
    archive repository with two commits of ``main`` made by the real ostree; and its head."""
    if shutil.which("ostree") is None:
        pytest.skip("needs the real ostree binary")
    site = tmp_path_factory.mktemp("served")
    repo = init_repo(site / "ostree-repo")
    tree = site.parent / f"{site.name}-tree"
    commit(repo, write_tree(tree, 1, big=256 * 1024), "main")
    head = commit(repo, write_tree(tree, 2, big=256 * 1024), "main", timestamp=TS_V2)
    summary_update(repo)
    os.symlink("ostree-repo", site / "ostree")
    return site, head


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """Files for the HTTP checks, with things that must not be served around them."""
    root = tmp_path / "site"
    (root / "objects" / "ab").mkdir(parents=True)
    (root / "sub").mkdir()
    (root / "data.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    os.utime(root / "data.bin", (1_700_000_000, 1_700_000_000))
    (root / "small.txt").write_bytes(b"hello, world\n")
    (root / os.fsdecode(b"caf\xe9")).write_bytes(b"not a UTF-8 name\n")
    (root / "objects" / "ab" / "cdef.filez").write_bytes(bytes(range(256)) * 40)
    (root / "sub" / "index.html").write_bytes(b"<p>index</p>\n")
    (root / "private.txt").write_bytes(b"not world-readable\n")
    (root / "private.txt").chmod(0o600)
    os.mkfifo(root / "fifo")
    (tmp_path / "secret.txt").write_bytes(b"secret\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(b"secret\n")
    os.symlink("small.txt", root / "link-in")
    os.symlink("../secret.txt", root / "link-out")
    os.symlink(tmp_path / "outside", root / "dir-out")
    os.symlink("/etc/passwd", root / "abs-out")
    for d in (root, root / "objects", root / "objects" / "ab", root / "sub"):
        d.chmod(0o755)
    return root


# ------------------------------------------------------------------------------ pulls


@needs_ostree
def test_real_ostree_and_pyostree_pull_from_it(served: tuple[Path, str], tmp_path: Path) -> None:
    site, head = served
    with trivial_httpd(tmp_path, site) as srv:
        url = f"{srv.url}/ostree"  # through the symlink inside the served directory
        real = init_repo(tmp_path / "real")
        ostree(f"--repo={real}", "remote", "add", "--no-gpg-verify", "origin", url)
        ostree(f"--repo={real}", "pull", "origin", "main")
        assert rev_parse(real, "origin:main") == head
        fsck_both(real)

        ours = make_client(tmp_path / "ours", url, mode="bare-user")
        proc = pyostree("--repo", ours, "pull", "origin", "main", env=pyostree_env(tmp_path))
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert rev_parse(ours, "origin:main") == head
        fsck_both(ours)
    log = srv.log.read_text()
    assert "serving at root" in log
    assert "serving /ostree/summary" in log and "  status: OK (200)" in log


@needs_ostree
def test_pull_through_random_500s_and_408s(served: tuple[Path, str], tmp_path: Path) -> None:
    site, head = served
    with trivial_httpd(tmp_path, site, "--random-500s=40", "--random-500s-max=4",
                       "--random-408s=20", "--random-408s-max=2") as srv:
        client = make_client(tmp_path / "client", f"{srv.url}/ostree-repo")
        proc = pyostree("--repo", client, "pull", "--network-retries=7", "origin", "main",
                        env=pyostree_env(tmp_path))
        assert proc.returncode == 0, proc.stderr
        assert rev_parse(client, "origin:main") == head
        fsck_both(client)
    log = srv.log.read_text()
    assert 1 <= log.count("(500)") <= 4, log
    assert log.count("(408)") <= 2, log


@needs_ostree
def test_hooks_with_the_real_clients(served: tuple[Path, str], tmp_path: Path) -> None:
    """The cookie and header a remote sends satisfy --expected-cookies/--expected-header, for
    the real ostree (also with basic auth in the URL) and pyostree."""
    site, head = served
    hooks = ("--expected-cookies=session=s3cr3t", "--expected-header=X-Fleet=lab")
    with trivial_httpd(tmp_path, site, *hooks, "--require-basic-auth") as srv:
        url = f"http://foouser:barpw@127.0.0.1:{srv.port}/ostree-repo"
        real = init_repo(tmp_path / "real")
        ostree(f"--repo={real}", "remote", "add", "--no-gpg-verify", "origin", url)
        assert ostree(f"--repo={real}", "pull", "origin", "main", check=False).returncode != 0
        ostree(f"--repo={real}", "remote", "add-cookie", "origin", "127.0.0.1", "/",
               "session", "s3cr3t")
        ostree(f"--repo={real}", "pull", "--http-header=X-Fleet=lab", "origin", "main")
        assert rev_parse(real, "origin:main") == head
    with trivial_httpd(tmp_path, site, *hooks) as srv:
        ours = make_client(tmp_path / "ours", f"{srv.url}/ostree-repo")
        env = pyostree_env(tmp_path)
        assert pyostree("--repo", ours, "remote", "add-cookie", "origin", "127.0.0.1", "/",
                        "session", "s3cr3t", env=env).returncode == 0
        proc = pyostree("--repo", ours, "pull", "--http-header=X-Fleet=lab", "origin", "main",
                        env=env)
        assert proc.returncode == 0, proc.stderr
        assert rev_parse(ours, "origin:main") == head
    assert "Expected header not found X-Fleet" not in srv.log.read_text()


# ------------------------------------------------------------------------------ HTTP


def test_http_answers(site: Path, tmp_path: Path) -> None:
    data = (site / "data.bin").read_bytes()
    size = len(data)
    with trivial_httpd(tmp_path, site) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        full = ask(conn, "/data.bin")
        assert (full.status, full.body == data) == (200, True)
        assert full.headers["Content-Length"] == str(size)
        assert full.headers["Last-Modified"] == email.utils.formatdate(1_700_000_000,
                                                                      usegmt=True)
        etag, modified = full.headers["ETag"], full.headers["Last-Modified"]
        head = ask(conn, "/data.bin", "HEAD")
        assert (head.status, head.headers["Content-Length"], head.body) == (200, str(size), b"")
        assert head.headers["ETag"] == etag

        for spec, first, last in [("bytes=100-199", 100, 199), ("bytes=-10", size - 10, size - 1),
                                  ("bytes=3145000-", 3145000, size - 1), ("bytes=0-0", 0, 0),
                                  (f"bytes=10-{size + 50}", 10, size - 1),
                                  (f"bytes=-{size + 1}", 0, size - 1)]:
            part = ask(conn, "/data.bin", Range=spec)
            assert (part.status, part.body == data[first:last + 1]) == (206, True), spec
            assert part.headers["Content-Range"] == f"bytes {first}-{last}/{size}", spec
            assert part.headers["Content-Length"] == str(last + 1 - first), spec
        for spec in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0"):
            refused = ask(conn, "/data.bin", Range=spec)
            assert refused.status == 416, spec
            assert refused.headers["Content-Range"] == f"bytes */{size}"
        for spec in ("bytes=9-2", "lines=1-2", "bytes=0-1,5-6", "bytes=x-"):
            whole = ask(conn, "/data.bin", Range=spec)
            assert (whole.status, len(whole.body)) == (200, size), spec
        stale = ask(conn, "/data.bin", Range="bytes=0-9", If_Range='"old"')
        assert (stale.status, len(stale.body)) == (200, size)
        fresh = ask(conn, "/data.bin", Range="bytes=0-9", If_Range=etag)
        assert (fresh.status, fresh.body) == (206, data[:10])
        head_part = ask(conn, "/data.bin", "HEAD", Range="bytes=0-99")
        assert (head_part.status, head_part.headers["Content-Length"]) == (206, "100")

        assert ask(conn, "/data.bin", If_None_Match=etag).status == 304
        assert ask(conn, "/data.bin", If_Modified_Since=modified).status == 304
        earlier = email.utils.formatdate(1_600_000_000, usegmt=True)
        assert ask(conn, "/data.bin", If_Modified_Since=earlier).status == 200
        assert ask(conn, "/data.bin", If_None_Match='"other"',
                   If_Modified_Since=modified).status == 200

        assert ask(conn, "/small.txt").body == b"hello, world\n"
        assert ask(conn, "/link-in").body == b"hello, world\n"
        assert ask(conn, "/small.txt?x=1").body == b"hello, world\n"
        assert ask(conn, "/%73mall.txt").body == b"hello, world\n"
        moved = ask(conn, "/sub")
        assert (moved.status, moved.headers["Location"]) == (301, "/sub/")
        assert ask(conn, "/sub/").body == b"<p>index</p>\n"
        listing = ask(conn, "/objects/ab/")
        assert listing.status == 200 and b'<a href="cdef.filez">' in listing.body
        assert ask(conn, "/caf%E9").body == b"not a UTF-8 name\n"
        assert b'<a href="caf%E9">' in ask(conn, "/").body
        assert ask(conn, "/nope").status == 404
        assert ask(conn, "/small.txt/x").status == 404
        assert ask(conn, "/nope", "HEAD").status == 404
        for path in ("/private.txt", "/fifo", "/link-out", "/dir-out/secret.txt",
                     "/abs-out", "/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt",
                     "/sub/%2e%2e/%2e%2e/secret.txt", "/sub/..%2f..%2fsecret.txt",
                     "/objects/../../secret.txt"):
            answer = ask(conn, path)
            assert answer.status in (403, 404) and b"secret" not in answer.body, path
        assert ask(conn, "/small.txt", "POST").status == 501
        assert ask(conn, "/forged%0A2024-01-01%20-%20serving%20/x").status == 404
        conn.close()
    log = srv.log.read_text()
    assert "serving /data.bin\n" in log and "  status: Partial Content (206)" in log
    assert "serving /forged\\x0a2024-01-01 - serving /x\n" in log  # one line, not two


def test_test_hooks_over_http(site: Path, tmp_path: Path) -> None:
    good = "Basic " + base64.b64encode(b"foouser:barpw").decode()
    bad = "Basic " + base64.b64encode(b"foouser:nope").decode()
    hooks = ("--require-basic-auth", "--expected-cookies=a=1", "--expected-cookies=b=2",
             "--expected-header=X-Test=yes", "--force-range-requests")
    obj = (site / "objects" / "ab" / "cdef.filez").read_bytes()
    with trivial_httpd(tmp_path, site, *hooks) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        denied = ask(conn, "/small.txt")
        assert denied.status == 401
        assert denied.headers["WWW-Authenticate"] == 'Basic realm="auth-test"'
        assert ask(conn, "/small.txt", Authorization=bad).status == 401
        ok = {"Authorization": good, "Cookie": 'a=1; b="2"', "X-Test": "yes"}
        assert ask(conn, "/small.txt", **ok).body == b"hello, world\n"
        for name, value in [("Cookie", "a=1"), ("Cookie", "a=1; b=3"), ("X-Test", "no")]:
            assert ask(conn, "/small.txt", **{**ok, name: value}).status == 403, value
        no_header = {k: v for k, v in ok.items() if k != "X-Test"}
        assert ask(conn, "/small.txt", **no_header).status == 403
        # --force-range-requests: a whole /objects/ file is promised, half is sent
        conn.request("GET", "/objects/ab/cdef.filez", headers=ok)
        resp = conn.getresponse()
        assert resp.getheader("Content-Length") == str(len(obj))
        with pytest.raises(http.client.IncompleteRead) as short:
            resp.read()
        assert short.value.partial == obj[:len(obj) // 2]
        conn.close()
        resumed = ask(conn, "/objects/ab/cdef.filez", Range=f"bytes={len(obj) // 2}-", **ok)
        assert (resumed.status, resumed.body) == (206, obj[len(obj) // 2:])
        assert ask(conn, "/small.txt", **ok).body == b"hello, world\n"  # not under /objects/
        conn.close()
    assert "Expected cookie not found b=2" in srv.log.read_text()


# ------------------------------------------------------------------------------ processes


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def test_daemonize_and_autoexit(site: Path, tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    try:
        # -p -: the port on stdout, and the command returns although the server runs on
        # (it has let go of our pipes, or run() would wait for them).
        proc = pyostree("trivial-httpd", "-d", "--autoexit", "-p", "-", f"--log-file={log}",
                        site, env=pyostree_env(tmp_path), timeout=20)
        assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
        port = int(proc.stdout)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert ask(conn, "/small.txt").body == b"hello, world\n"
        conn.close()
        (site / "small.txt").unlink()  # deleting a file inside is not deleting DIR
        assert not wait_until(lambda: _refused(port), timeout=0.5)
    finally:
        shutil.rmtree(site)
    assert wait_until(lambda: _refused(port), timeout=10), "the daemon did not exit"
    assert wait_until(lambda: "root directory removed, exiting" in log.read_text(), timeout=5)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_it_cleanly(signum: int, site: Path, tmp_path: Path) -> None:
    """With a client idle on a kept-alive connection and another one mid-download."""
    with trivial_httpd(tmp_path, site) as srv:
        idle = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        assert ask(idle, "/small.txt").status == 200
        busy = socket.create_connection(("127.0.0.1", srv.port))
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        busy.sendall(b"GET /data.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert busy.recv(12) == b"HTTP/1.1 200"
        code, out, err = _stop(srv.proc, signum)
        assert (code, out, err) == (0, "", "")
        busy.close()
        idle.close()
        assert _refused(srv.port)


def test_it_ends_with_the_process_that_started_it(site: Path, tmp_path: Path) -> None:
    """Without -d it is a test server that must not outlive its test (upstream's
    PR_SET_PDEATHSIG): killing its parent ends it."""
    port_file = tmp_path / "port"
    parent = subprocess.Popen(
        ["sh", "-c", f'"$0" -m pyostree trivial-httpd -p {port_file} {site} & exec sleep 60',
         sys.executable], env=pyostree_env(tmp_path))
    try:
        assert wait_until(port_file.exists, timeout=START_TIMEOUT)
        port = int(port_file.read_text())
        assert not _refused(port)
    finally:
        parent.kill()
        parent.wait()
    assert wait_until(lambda: _refused(port), timeout=10)


def test_a_symlink_swapped_in_after_the_check_is_refused(site: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the path check cannot see (a directory replaced by a symlink pointing out
    between resolving and opening), simulated in-process by resolving nothing: the opened
    file itself is checked."""
    import threading

    from pyostree import httpd

    server = httpd.TrivialHttpd(site, host="127.0.0.1")
    monkeypatch.setattr(httpd.os.path, "realpath", lambda path: os.path.normpath(path))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        assert ask(conn, "/small.txt").status == 200
        assert ask(conn, "/dir-out/secret.txt").status == 403
        assert ask(conn, "/link-out").status == 403
        conn.close()
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.create_server(("", 0)) as sock:
        yield sock.getsockname()[1]


@pytest.mark.parametrize(("args", "needle", "code"), [
    (["--frobnicate", "DIR"], "unrecognized arguments", 2),
    (["MISSING"], "No such file or directory", 2),
    (["FILE"], "Not a directory", 2),
    (["--random-500s=100", "DIR"], "--random-500s", 2),
    (["--random-408s=-1", "DIR"], "--random-408s", 2),
    (["--port=70000", "DIR"], "port", 2),
    (["-P", "eighty", "DIR"], "port", 2),
    (["--expected-header=novalue", "DIR"], "KEY=VALUE", 2),
    (["-d", "--log-file=-", "DIR"], "Cannot use --log-file=- and --daemonize", 2),
    (["--log-file=DIR/no/such/log", "DIR"], "cannot open log file", 1),
    (["-P", "BUSY", "DIR"], "cannot listen on port", 1),
    (["-d", "-P", "BUSY", "DIR"], "cannot listen on port", 1),
    (["--port-file=DIR/no/such/port", "DIR"], "no/such/port", 1),
])
def test_usage_errors(args: list[str], needle: str, code: int, tmp_path: Path,
                      busy_port: int) -> None:
    (tmp_path / "file").write_text("x")
    names = {"DIR": str(tmp_path), "MISSING": str(tmp_path / "missing"),
             "FILE": str(tmp_path / "file"), "BUSY": str(busy_port)}
    argv = [names.get(a, a.replace("DIR/", f"{tmp_path}/")) for a in args]
    proc = pyostree("trivial-httpd", *argv, env=pyostree_env(tmp_path), timeout=20)
    assert_one_error(proc, needle)
    assert proc.returncode == code
    assert proc.stdout == ""
