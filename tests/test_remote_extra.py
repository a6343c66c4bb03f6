"""``remote gpg-list-keys``, ``remote add-cookie|delete-cookie|list-cookies`` and the cookies a
pull sends, judged by the real ``ostree`` 2022.7 (and, for the Cookie header of arbitrary URLs,
by the real ``curl``: the libcurl libostree fetches with).

Keys are made by the real ``gpg``; pulls go to a real loopback :class:`FaultServer`, whose
request log shows the headers of every request. Hostname rules (subdomains, exact hosts,
``secure`` over plain http) are exercised through the server acting as an HTTP proxy, so
``http://repo.example.test/`` needs no DNS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyostree.formats.cookies import cookie_header, parse_jar

from .httpserver import FaultServer, RequestRecord
from .pullhelpers import (
    TS_V2,
    GpgHome,
    GpgKey,
    assert_one_error,
    cli,
    commit,
    init_repo,
    listing,
    needs_gpg,
    needs_ostree,
    ostree,
    pyostree,
    pyostree_env,
    read_refs,
    summary_update,
    write_tree,
)

pytestmark = [pytest.mark.interop, needs_ostree]

CURL = shutil.which("curl")
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2


def ostree_in(repo: Path, *args: str, check: bool = True,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real ostree run inside ``repo``: its ``list-cookies`` reads ``NAME.cookies.txt``
    relative to the working directory (a libostree 2022.7 bug), so that is the repository."""
    assert shutil.which("ostree")
    proc = subprocess.run(["ostree", f"--repo={repo}", *args], capture_output=True, text=True,
                          cwd=repo, check=False, env=env, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"ostree {args} failed: {proc.stderr}")
    return proc


def new_repo(path: Path, *remotes: str, url: str = "http://127.0.0.1:1/") -> Path:
    init_repo(path)
    for name in remotes:
        ostree(f"--repo={path}", "remote", "add", "--no-gpg-verify", name, url)
    return path


# --------------------------------------------------------------------------- gpg-list-keys


@dataclass
class Keys:
    home: GpgHome
    alice: GpgKey  # three user ids (one revoked, the newest primary), two subkeys, expires
    bob: GpgKey  # two user ids, the first flagged primary after the second was added
    old: GpgKey  # made in 2020, expired after a day; subkeys expire in 2039 and never
    carol: GpgKey  # revoked

    def bundle(self, path: Path, *keys: GpgKey) -> Path:
        path.write_bytes(b"".join(k.public.read_bytes() for k in keys))
        return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    if shutil.which("gpg") is None:
        pytest.skip("needs the real gpg binary")
    home = GpgHome.create(tmp_path_factory.mktemp("gpg") / "home")
    alice = home.gen("alice", expire="2y")
    home.gpg("--quick-add-uid", alice.fpr, "Alice Second (laptop) <Alice.Second@Example.ORG>")
    home.gpg("--quick-add-uid", alice.fpr, "alice without mail")
    home.gpg("--quick-add-key", alice.fpr, "ed25519", "sign", "1y")
    home.gpg("--quick-add-key", alice.fpr, "cv25519", "encr", "never")
    home.gpg("--quick-revoke-uid", alice.fpr, "Alice Second (laptop) <Alice.Second@Example.ORG>")
    bob = home.gen("bob")
    home.gpg("--quick-add-uid", bob.fpr, "Bob Zweiter <bob.two@example.net>")
    home.gpg("--quick-set-primary-uid", bob.fpr, "Bob Signer <bob@example.org>")
    old = home.gen("old", created="20200101T000000", expire="1d")
    home.gpg("--quick-add-key", old.fpr, "cv25519", "encr", "20y",
             faked_time="20200101T000100")
    home.gpg("--quick-add-key", old.fpr, "ed25519", "sign", "never",
             faked_time="20200101T000200")
    carol = home.gen("carol")
    home.revoke(carol)
    for key in (alice, bob, old, carol):
        home.export(key)
    yield Keys(home, alice, bob, old, carol)
    home.close()


def assert_same_listing(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """``remote gpg-list-keys ARGS`` prints the same bytes from both tools; returns them."""
    real = ostree_in(repo, "remote", "gpg-list-keys", *args, env=env)
    ours = pyostree("--repo", repo, "remote", "gpg-list-keys", *args, env=env)
    assert ours.returncode == 0, ours.stderr
    assert ours.stderr == ""
    assert ours.stdout == real.stdout
    return ours.stdout


@needs_gpg
def test_gpg_list_keys_matches_ostree(keys: Keys, tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", "plain")
    bundle = keys.bundle(tmp_path / "keys.gpg", keys.alice, keys.bob, keys.old, keys.carol)
    cli("--repo", repo, "remote", "add", "--no-gpg-verify", f"--gpg-import={bundle}", "ours",
        "http://127.0.0.1:1/")
    env = pyostree_env(tmp_path)
    env["TZ"] = "Asia/Kolkata"  # local time, and not a whole number of hours from UTC
    out = assert_same_listing(repo, "ours", env=env)
    # What the listing shows, so that a test passing on two empty outputs is impossible.
    assert out.count("Key: ") == 4
    assert f"Key: {keys.carol.fpr} (revoked)" in out
    assert "  UID: Alice Second (laptop) <Alice.Second@Example.ORG> (revoked)" in out
    assert "?l=alice.second" in out and "  Expired: " in out and "  Subkey: " in out
    bob_uids = [line for line in out.split(f"Key: {keys.bob.fpr}")[1].splitlines()
                if line.startswith("  UID: ")]
    assert bob_uids[0] == "  UID: Bob Signer <bob@example.org>"  # flagged primary: first

    # Keys the real ostree imported, listed by pyostree; a remote without keys lists nothing.
    ostree(f"--repo={repo}", "remote", "add", "--no-gpg-verify", "theirs", "http://x/")
    ostree(f"--repo={repo}", "remote", "gpg-import", "theirs", "-k", str(bundle))
    assert assert_same_listing(repo, "theirs").count("Key: ") == 4
    assert assert_same_listing(repo, "plain") == ""


@needs_gpg
def test_gpg_list_keys_of_the_global_keyrings(keys: Keys, tmp_path: Path) -> None:
    """Without NAME both list the global keyring directory ($OSTREE_GPG_HOME), and a named
    remote without a keyring of its own does not fall back to it."""
    repo = new_repo(tmp_path / "repo", "plain")
    trusted = tmp_path / "trusted.gpg.d"
    trusted.mkdir()
    keys.bundle(trusted / "vendor.gpg", keys.bob, keys.old)
    env = {**pyostree_env(tmp_path), "OSTREE_GPG_HOME": str(trusted)}
    assert assert_same_listing(repo, env=env).count("Key: ") == 2
    assert assert_same_listing(repo, "plain", env=env) == ""


def test_gpg_list_keys_unknown_remote(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    real = ostree_in(repo, "remote", "gpg-list-keys", "nosuch", check=False)
    proc = pyostree("--repo", repo, "remote", "gpg-list-keys", "nosuch")
    line = assert_one_error(proc, "nosuch")
    assert real.returncode != 0 and line in real.stderr.splitlines()


# --------------------------------------------------------------------------- cookie commands


TRICKY_JAR = (
    "# Netscape HTTP Cookie File\n"
    "example.com\tFALSE\t/\tFALSE\t2584748574\tplain\tvalue\n"
    ".example.com\tTRUE\t/p\tTRUE\t0\tsession\ttwo words\n"
    "#HttpOnly_example.org\tFALSE\t/\tFALSE\t1700000000\thttponly\th\n"
    "  spaced   FALSE /x FALSE 12 sp v\r\n"
    "neg\tFALSE\t/\tFALSE\t-62000000000\tancient\tv\n"
    "big\tFALSE\t/\tFALSE\t99999999999999999999\tsaturated\tv\n"
    "far\tFALSE\t/\tFALSE\t253402300800\tbeyond\tv\n"
    "junk\tFALSE\t/\tFALSE\t0x10\tname\tv\n"
    "short\tFALSE\t/\tFALSE\t5\tnovalue\n"
    "\n"
    "last\tFALSE\t/\tFALSE\t1\tno-newline\tv"
)


def lists_alike(repo: Path, remote: str = "origin") -> str:
    """``remote list-cookies`` gives the same bytes from both tools; returns them."""
    real = ostree_in(repo, "remote", "list-cookies", remote).stdout
    assert cli("--repo", repo, "remote", "list-cookies", remote) == real
    return real


def jar_lines(repo: Path, remote: str = "origin") -> list[list[str]]:
    return [line.split("\t") for line in
            (repo / f"{remote}.cookies.txt").read_text().splitlines()]


def test_cookie_jars_interoperate(tmp_path: Path) -> None:
    ours = new_repo(tmp_path / "ours", "origin")
    theirs = new_repo(tmp_path / "theirs", "origin")
    added = [("example.com", "/", "a", "b"), (".example.com", "/p", "c", "d e"),
             ("127.0.0.1", "/objects", "token", "s3cr=t")]
    before = time.time()
    for cookie in added:
        cli("--repo", ours, "remote", "add-cookie", "origin", *cookie)
        ostree_in(theirs, "remote", "add-cookie", "origin", *cookie)
    # Same lines; the expiry is 25 years from "now", taken a moment apart by the two tools.
    mine, real = jar_lines(ours), jar_lines(theirs)
    assert [line[:4] + line[5:] for line in mine] == [line[:4] + line[5:] for line in real]
    for a, b in zip(mine, real, strict=True):
        assert abs(int(a[4]) - int(b[4])) <= int(time.time() - before) + 1
    assert (ours / "origin.cookies.txt").stat().st_mode & 0o777 == 0o644
    # Each tool reads the other's jar; then each deletes from the other's jar.
    (theirs / "origin.cookies.txt").write_bytes((ours / "origin.cookies.txt").read_bytes())
    listed = lists_alike(theirs)
    assert "Value: d\n" in listed  # ostree's reader stops a value at its first space
    cli("--repo", theirs, "remote", "delete-cookie", "origin", ".example.com", "/p", "c")
    ostree_in(ours, "remote", "delete-cookie", "origin", ".example.com", "/p", "c")
    assert (ours / "origin.cookies.txt").read_bytes() == (
        theirs / "origin.cookies.txt").read_bytes()
    assert lists_alike(ours).count("--\n") == 2


def test_list_cookies_of_a_hand_written_jar(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", "origin")
    (repo / "origin.cookies.txt").write_text(TRICKY_JAR)
    out = lists_alike(repo)
    assert out.count("--\n") == 9 and "Expires: 5-04-19 09:46:40 +0000" in out
    assert lists_alike(new_repo(tmp_path / "empty", "origin")) == ""


def test_cookie_command_errors(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", "origin")
    cli("--repo", repo, "remote", "add-cookie", "origin", "example.com", "/", "a", "b")
    jar = repo / "origin.cookies.txt"
    env = pyostree_env(tmp_path)

    def fails(*args: str, needle: str) -> str:
        before = listing(repo)
        line = assert_one_error(pyostree("--repo", repo, "remote", *args, env=env), needle)
        assert listing(repo) == before, f"{args} changed the repository"
        return line

    for args in (["add-cookie", "nosuch", "example.com", "/", "a", "b"],
                 ["delete-cookie", "nosuch", "example.com", "/", "a"],
                 ["list-cookies", "nosuch"]):
        fails(*args, needle='Remote "nosuch" not found')
    assert not (repo / "nosuch.cookies.txt").exists()
    # Missing arguments: ostree's message (which ostree prints below its usage text).
    for args in (["add-cookie", "origin", "example.com", "/", "a"],
                 ["delete-cookie", "origin", "example.com"], ["list-cookies"]):
        line = fails(*args, needle="must be specified")
        real = ostree_in(repo, "remote", *args, check=False)
        assert real.returncode != 0
        assert line.endswith(real.stderr.splitlines()[-1].removeprefix("error: ")), line
    # A cookie that is not there: ostree's error, and the jar is left alone (ostree rewrites
    # it, or creates an empty one, before it fails).
    line = fails("delete-cookie", "origin", "example.com", "/", "nosuch", needle="not found")
    real = ostree_in(repo, "remote", "delete-cookie", "origin", "example.com", "/", "nosuch",
                     check=False)
    assert real.returncode != 0 and real.stderr.splitlines()[-1] == line
    jar.unlink()
    fails("delete-cookie", "origin", "example.com", "/", "a", needle="Cookie not found in jar")
    assert not jar.exists()
    fails("add-cookie", "origin", "example.com", "/", "a", "two\nlines", needle="newlines")
    (repo / "origin.cookies.txt").write_bytes(b"bad\tFALSE\t/\tFALSE\t0\tn\t\xff\n")
    fails("list-cookies", "origin", needle="invalid UTF-8")


# --------------------------------------------------------------------------- pulls


@dataclass
class World:
    src: Path  # archive repo: main = v2 (parent v1), a static delta v1 -> v2
    v1: str
    v2: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("cookieworld")
    src = init_repo(base / "src")
    v1 = commit(src, write_tree(base / "t1", 1, nfiles=6, big=8192), "main")
    v2 = commit(src, write_tree(base / "t2", 2, nfiles=6, big=8192), "main", timestamp=TS_V2)
    ostree(f"--repo={src}", "static-delta", "generate", "--to=main")
    summary_update(src)
    return World(src, v1, v2)


def jar_for(host: str, now: int) -> str:
    """Cookies of which some apply to ``host``'s requests, some to other hosts or paths."""
    rows = [
        (host, "FALSE", "/", "FALSE", 0, "session", "s1"),
        (host, "FALSE", "/", "FALSE", now + 3600, "spaced", "a value with spaces"),
        (host, "FALSE", "/objects", "FALSE", now + 3600, "objects", "o"),
        (host, "FALSE", "/objects/", "FALSE", now + 3600, "objects_slash", "os"),
        (host, "FALSE", "/obj", "FALSE", now + 3600, "prefix_only", "never"),
        (host, "FALSE", "/deltas", "FALSE", now + 3600, "deltas", "d"),
        (host, "FALSE", "/elsewhere", "FALSE", now + 3600, "other_path", "never"),
        (host, "FALSE", "/", "TRUE", now + 3600, "secure", "x"),
        (host, "FALSE", "/", "FALSE", now - 3600, "expired", "never"),
        (host, "FALSE", "/", "FALSE", now + 3600, "session", "s2-replaces-s1"),
        ("otherhost.test", "FALSE", "/", "FALSE", 0, "other_host", "never"),
        (".example.test", "TRUE", "/", "FALSE", 0, "subdomains", "sd"),
        ("example.test", "FALSE", "/", "FALSE", 0, "parent_only", "pn"),
        ("REPO.Example.TEST", "FALSE", "/", "FALSE", 0, "upper", "u"),
        ("ample.test", "TRUE", "/", "FALSE", 0, "not_a_label", "never"),
        (".test", "TRUE", "/", "FALSE", 0, "one_label", "ol"),
    ]
    lines = ["# Netscape HTTP Cookie File"]
    lines += ["\t".join(map(str, row)) for row in rows]
    lines.append(f"#HttpOnly_{host}\tFALSE\t/\tFALSE\t0\thttponly\th")
    return "\n".join(lines) + "\n"


def pull_log(srv: FaultServer, client: Path, tool: str, *args: str,
             env: dict[str, str] | None = None) -> tuple[list[RequestRecord], str]:
    """Requests one pull made (and its stdout), by ``ostree`` or ``pyostree``."""
    srv.clear_log()
    if tool == "ostree":
        proc = ostree(f"--repo={client}", "pull", *args)
    else:
        proc = pyostree("--repo", client, "pull", *args, env=env)
        assert proc.returncode == 0, proc.stderr
    return srv.requests, proc.stdout


def cookies_by_path(*logs: list[RequestRecord]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for log in logs:
        for rec in log:
            out[rec.path] = rec.headers.get("cookie")
    return out


def make_cookie_client(path: Path, url: str, jar: str, options: dict[str, str]) -> Path:
    """A bare-user repo (archive repos do not use static deltas) whose remote has ``jar``."""
    init_repo(path, "bare-user")
    args = [f"--set={k}={v}" for k, v in options.items()]
    ostree(f"--repo={path}", "remote", "add", "--no-gpg-verify", *args, "origin", url)
    (path / "origin.cookies.txt").write_text(jar)
    return path


def two_pulls(srv: FaultServer, world: World, client: Path, tool: str,
              env: dict[str, str] | None = None) -> tuple[list[RequestRecord], ...]:
    """Pull v1 (objects), then v2 (through the static delta)."""
    first, _ = pull_log(srv, client, tool, "origin", f"main@{world.v1}", env=env)
    second, _ = pull_log(srv, client, tool, "origin", "main", env=env)
    assert read_refs(client)["remotes/origin/main"] == world.v2
    assert any(r.path.startswith("/deltas/") for r in second), "the delta was not used"
    return first, second


def test_pull_sends_the_jars_cookies(world: World, tmp_path: Path) -> None:
    """Direct pulls from 127.0.0.1 (aiohttp, the helper process fetching content): every
    request carries the jar's cookies for its path, and the real ostree sends the same."""
    now = int(time.time())
    jar = jar_for("127.0.0.1", now)
    with FaultServer(world.src) as srv:
        client = make_cookie_client(tmp_path / "ours", srv.url, jar, {})
        env = pyostree_env(tmp_path)
        srv.clear_log()
        proc = pyostree("--repo", client, "pull", "--json", "origin", f"main@{world.v1}",
                        env=env)
        assert proc.returncode == 0, proc.stderr
        first = srv.requests
        if TWO_CPUS:  # content came from the helper, which got the same cookies
            assert json.loads(proc.stdout)["objects-fetched-by-helper"] > 0
        second, _ = pull_log(srv, client, "pyostree", "origin", "main", env=env)
        assert any(r.path.startswith("/deltas/") for r in second)
        ours = cookies_by_path(first, second)
        theirs = cookies_by_path(*two_pulls(srv, world, make_cookie_client(
            tmp_path / "theirs", srv.url, jar, {}), "ostree"))
    for path, header in ours.items():
        assert header, f"{path} was requested without cookies"
        sent = dict(part.split("=", 1) for part in header.split("; "))
        assert sent["session"] == "s2-replaces-s1" and "never" not in sent.values(), header
        assert ("objects" in sent) == path.startswith("/objects/"), (path, header)
        assert ("deltas" in sent) == path.startswith("/deltas/"), (path, header)
        assert "secure" in sent  # libcurl counts loopback http as a secure context
    common = set(ours) & set(theirs)
    assert len(common) >= len(ours) - 1  # ostree also fetches /config
    assert {p: ours[p] for p in common} == {p: theirs[p] for p in common}


def test_pull_through_a_proxy_by_host_name(world: World, tmp_path: Path) -> None:
    """Host-name rules (subdomains, exact hosts, ``secure`` only over https), through the
    server as an HTTP proxy; httpx back-end (http2=true) and no helper process."""
    jar = jar_for("repo.example.test", int(time.time()))
    with FaultServer(world.src) as srv:
        options = {"proxy": f"http://127.0.0.1:{srv.port}"}
        url = "http://repo.example.test/"
        client = make_cookie_client(tmp_path / "ours", url, jar, {**options, "http2": "true"})
        env = {**pyostree_env(tmp_path), "PYOSTREE_PULL_HELPER": "0"}
        ours = cookies_by_path(*two_pulls(srv, world, client, "pyostree", env=env))
        theirs = cookies_by_path(*two_pulls(
            srv, world, make_cookie_client(tmp_path / "theirs", url, jar, options), "ostree"))
        assert all(r.proxied for r in srv.requests)
    summary = ours["/summary"] or ""
    sent = dict(part.split("=", 1) for part in summary.split("; "))
    assert {"subdomains", "upper", "session", "httponly"} <= set(sent)
    assert not {"parent_only", "not_a_label", "one_label", "other_host", "secure"} & set(sent)
    common = set(ours) & set(theirs)
    assert len(common) >= len(ours) - 1
    assert {p: ours[p] for p in common} == {p: theirs[p] for p in common}


def test_remote_summary_sends_cookies(world: World, tmp_path: Path) -> None:
    with FaultServer(world.src) as srv:
        client = make_cookie_client(tmp_path / "c", srv.url, "", {})
        cli("--repo", client, "remote", "add-cookie", "origin", "127.0.0.1", "/", "k", "v")
        srv.clear_log()
        cli("--repo", client, "remote", "refs", "origin")
        assert [r.headers.get("cookie") for r in srv.requests] == ["k=v"]


@pytest.mark.skipif(CURL is None, reason="needs the real curl binary")
def test_cookie_header_matches_libcurl(tmp_path: Path) -> None:
    """:func:`cookie_header` for assorted URLs against what curl (libostree's libcurl)
    sends with the same jar, through the loopback server as a proxy."""
    now = int(time.time())
    text = jar_for("repo.example.test", now) + jar_for("localhost", now)
    jar = tmp_path / "jar.txt"
    jar.write_text(text)
    urls = ["http://repo.example.test/", "http://repo.example.test/objects",
            "http://repo.example.test/objects/ab/cd.filez", "http://repo.example.test/obj",
            "http://repo.example.test/objectsX", "http://repo.example.test/deltas/a?x=/b",
            "http://REPO.example.test:8080/elsewhere/x", "http://deep.sub.example.test/",
            "http://example.test/", "http://localhost/objects/", "http://otherhost.test/"]
    cookies = parse_jar(text, now)
    with FaultServer(tmp_path) as srv:
        for url in urls:
            srv.clear_log()
            subprocess.run([CURL or "curl", "-s", "-o", os.devnull, "-b", str(jar),
                            "-x", f"http://127.0.0.1:{srv.port}", url], check=True, timeout=30)
            (rec,) = srv.requests
            assert cookie_header(cookies, url, now) == rec.headers.get("cookie"), url
