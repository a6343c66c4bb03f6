"""Remote configuration: typed options, RemoteSet add/delete, remotes.d, and real ostree."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pyostree.errors import FormatError, RepoError, UsageError
from pyostree.formats.keyfile import KeyFile
from pyostree.remotes import (
    ConfigWrite,
    Remote,
    RemoteSet,
    parse_remote_group_name,
    read_remotes_d,
    split_remote_url,
    validate_remote_name,
)

OSTREE = shutil.which("ostree")
needs_ostree = pytest.mark.skipif(OSTREE is None, reason="needs the real ostree binary")

CONFIG = """[core]
repo_version=1
mode=archive-z2

[remote "origin"]
url=http://127.0.0.1:8000/repo
branches=main;devel;
contenturl=mirrorlist=http://127.0.0.1:1/ml
tls-permissive=true
gpgkeypath=/a.asc,/b.asc
proxy=http://127.0.0.1:3128
gpg-verify=false
collection-id=org.example.Os

[remote "plain"]
url=file:///srv/repo
"""


def test_remote_fields_from_config() -> None:
    rs = RemoteSet.load(CONFIG)
    assert rs.names() == ["origin", "plain"]
    o = rs.get("origin")
    assert o.url == "http://127.0.0.1:8000/repo" and not o.mirrorlist
    assert o.contenturl == "http://127.0.0.1:1/ml" and o.contenturl_mirrorlist
    assert o.content_url == "http://127.0.0.1:1/ml" and o.content_url_is_mirrorlist
    assert o.branches == ("main", "devel")
    assert o.gpgkeypath == ("/a.asc", "/b.asc")
    assert o.tls_permissive is True and o.gpg_verify is False
    assert o.proxy == "http://127.0.0.1:3128"
    assert o.collection_id == "org.example.Os"
    assert o.source_path is None
    assert o.options["branches"] == "main;devel;"
    assert o.group == 'remote "origin"'
    assert o.keyring_name == "origin.trustedkeys.gpg"
    p = rs.get("plain")
    # libostree defaults
    assert p.gpg_verify is True and p.gpg_verify_summary is False
    assert p.http2 is True and p.tls_permissive is False
    assert p.sign_verify is False and p.sign_verify_summary is False
    assert p.content_url == "file:///srv/repo" and p.gpgkeypath == () and p.branches == ()
    assert "plain" in rs and "nope" not in rs and len(rs) == 2
    with pytest.raises(RepoError, match='Remote "nope" not found'):
        rs.get("nope")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, False),
        ({"sign-verify": ""}, False),
        ({"sign-verify": "true"}, True),
        ({"sign-verify": "1"}, True),
        ({"sign-verify": "false"}, False),
        ({"sign-verify": "ed25519"}, ("ed25519",)),
        ({"sign-verify": "ed25519;spki;"}, ("ed25519", "spki")),
    ],
)
def test_sign_verify_values(raw: dict[str, str], expected: object) -> None:
    assert Remote.from_keyfile_group("r", raw).sign_verify == expected


def test_sign_and_key_options() -> None:
    r = Remote.from_keyfile_group(
        "r",
        {
            "url": "mirrorlist=https://127.0.0.1/list",
            "sign-verify-summary": "true",
            "verification-ed25519-key": "AAAA",
            "verification-ed25519-file": "/etc/k.pub",
            "tls-ca-path": "/ca.pem",
            "tls-client-cert-path": "/c.pem",
            "tls-client-key-path": "/k.pem",
            "http2": "false",
            "gpg-verify-summary": "true",
            "unconfigured-state": "Please\\sconfigure",
            "custom-backend": "x",
            "metalink": "http://127.0.0.1/m.xml",
            "gpgkeypath": "/only.asc",
        },
    )
    assert r.url == "https://127.0.0.1/list" and r.mirrorlist is True
    assert r.sign_verify_summary is True
    assert r.verification_ed25519_key == "AAAA"
    assert r.verification_ed25519_file == "/etc/k.pub"
    assert (r.tls_ca_path, r.tls_client_cert_path, r.tls_client_key_path) == (
        "/ca.pem", "/c.pem", "/k.pem",
    )  # fmt: skip
    assert r.http2 is False and r.gpg_verify_summary is True
    assert r.unconfigured_state == "Please configure"
    assert r.custom_backend == "x" and r.metalink == "http://127.0.0.1/m.xml"
    assert r.gpgkeypath == ("/only.asc",)
    assert r.get_option("unconfigured-state") == "Please configure"
    assert r.get_option("absent", "d") == "d"


@pytest.mark.parametrize(
    "raw",
    [
        {"gpg-verify": "yes"},
        {"http2": "maybe"},
        {"gpgkeypath": "/a;/b,/c"},
        {"url": "bad\\escape\\q"},
        {"branches": "a\\x"},
    ],
)
def test_bad_values_raise_format_error(raw: dict[str, str]) -> None:
    with pytest.raises(FormatError):
        Remote.from_keyfile_group("r", raw)


def test_names_and_urls() -> None:
    assert parse_remote_group_name('remote "a b"c"') == 'a b"c'
    assert parse_remote_group_name("core") is None
    assert parse_remote_group_name('remote ""') is None
    assert split_remote_url("mirrorlist=http://x") == ("http://x", True)
    assert split_remote_url("file:///p") == ("file:///p", False)
    for good in ("origin", "a-b.c_d", "0"):
        assert validate_remote_name(good) == good
    for bad in ("", "a/b", ".x", "-x", "a b", "a:b"):
        with pytest.raises(UsageError):
            validate_remote_name(bad)
    anon = Remote.for_url("file:///srv/repo")
    assert anon.name == "file:///srv/repo" and anon.gpg_verify is False


def test_add_to_repo_config() -> None:
    rs = RemoteSet.load("[core]\nrepo_version=1\nmode=bare\n")
    change = rs.add(
        "new",
        "mirrorlist=http://127.0.0.1/list",
        {"gpg-verify": False, "branches": ["a", "b"], "proxy": " sp"},
    )
    assert change.writes == (ConfigWrite(None, change.remotes.config_text),)
    assert change.remotes.config_text == (
        "[core]\nrepo_version=1\nmode=bare\n\n"
        '[remote "new"]\nurl=mirrorlist=http://127.0.0.1/list\ngpg-verify=false\n'
        "branches=a;b;\nproxy=\\ssp\n"
    )
    new = change.remotes.get("new")
    assert new.mirrorlist and new.branches == ("a", "b") and new.proxy == " sp"
    assert rs.names() == []  # the original set is unchanged
    reloaded = RemoteSet.load(change.remotes.config_text)
    assert reloaded.get("new") == new

    with pytest.raises(RepoError, match="already exists"):
        change.remotes.add("new", "http://127.0.0.1/x")
    same = change.remotes.add("new", "http://127.0.0.1/x", if_not_exists=True)
    assert same.writes == () and same.remotes is change.remotes
    metalink = rs.add("m", "metalink=http://127.0.0.1/m.xml").remotes.get("m")
    assert metalink.metalink == "http://127.0.0.1/m.xml" and metalink.url is None
    for bad_url in ("ftp://x", "127.0.0.1/repo", "file://", "mirrorlist=ftp://x"):
        with pytest.raises(UsageError):
            rs.add("x", bad_url)
    with pytest.raises(UsageError):
        rs.add("a/b", "http://127.0.0.1/")


def test_delete_from_repo_config() -> None:
    rs = RemoteSet.load(CONFIG)
    change = rs.delete("origin")
    assert change.writes == (ConfigWrite(None, change.remotes.config_text),)
    assert change.remotes.names() == ["plain"]
    assert 'remote "origin"' not in change.remotes.config_text
    assert KeyFile.parse(change.remotes.config_text).get("core", "mode") == "archive-z2"
    last = change.remotes.delete("plain").remotes.config_text
    assert last == "[core]\nrepo_version=1\nmode=archive-z2\n"
    with pytest.raises(RepoError, match="not found"):
        rs.delete("nope")
    assert rs.delete("nope", if_exists=True).writes == ()


def test_remotes_d(tmp_path: Path) -> None:
    d1, d2 = tmp_path / "etc", tmp_path / "usr"
    d1.mkdir()
    d2.mkdir()
    (d1 / "b.conf").write_text('[remote "b"]\nurl=http://127.0.0.1/b\n')
    (d1 / "a.conf").write_text(
        '[remote "a1"]\nurl=http://127.0.0.1/a1\n\n[remote "a2"]\nurl=http://127.0.0.1/a2\n'
    )
    (d1 / "ignored.txt").write_text('[remote "t"]\nurl=http://127.0.0.1/t\n')
    (d1 / "dir.conf").mkdir()
    (d2 / "c.conf").write_text('[remote "c"]\nurl=file:///c\n')
    files = read_remotes_d([str(d1), str(d2), str(tmp_path / "missing")])
    assert [Path(p).name for p, _ in files] == ["a.conf", "b.conf", "c.conf"]

    rs = RemoteSet.load(CONFIG, files)
    assert rs.names() == ["a1", "a2", "b", "c", "origin", "plain"]
    assert rs.get("b").source_path == str(d1 / "b.conf")

    # a file holding several remotes is rewritten; a file holding one is removed
    ch = rs.delete("a1")
    assert ch.writes == (
        ConfigWrite(str(d1 / "a.conf"), '[remote "a2"]\nurl=http://127.0.0.1/a2\n'),
    )
    ch = ch.remotes.delete("b")
    assert ch.writes == (ConfigWrite(str(d1 / "b.conf"), None),)
    assert ch.remotes.names() == ["a2", "c", "origin", "plain"]

    add = rs.add("n", "http://127.0.0.1/n", {"gpg-verify": False}, target=str(d1))
    assert add.writes == (
        ConfigWrite(str(d1 / "n.conf"), '[remote "n"]\nurl=http://127.0.0.1/n\ngpg-verify=false\n'),
    )
    assert add.remotes.get("n").source_path == str(d1 / "n.conf")
    assert add.remotes.config_text == CONFIG
    with pytest.raises(RepoError):
        RemoteSet.load(CONFIG, files).add("a", "http://127.0.0.1/", target=str(d1))  # a.conf

    dup = [*files, (str(d2 / "dup.conf"), '[remote "origin"]\nurl=http://127.0.0.1/x\n')]
    with pytest.raises(RepoError, match="Multiple specifications"):
        RemoteSet.load(CONFIG, dup)
    with pytest.raises(FormatError, match=r"bad\.conf"):
        RemoteSet.load(CONFIG, [("/x/bad.conf", "garbage\n")])
    (d2 / "latin1.conf").write_bytes(b'[remote "l"]\nurl=http://\xe9\n')
    with pytest.raises(FormatError, match="UTF-8"):
        read_remotes_d([str(d2)])


# ---------------------------------------------------------------------------- interop


def _ostree(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert OSTREE is not None
    return subprocess.run([OSTREE, *args], check=check, capture_output=True, text=True)


@pytest.mark.interop
@needs_ostree
def test_config_written_by_real_ostree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _ostree("init", f"--repo={repo}", "--mode=archive")
    _ostree(
        "remote", "add", f"--repo={repo}", "--no-gpg-verify",
        "--contenturl=mirrorlist=http://127.0.0.1:1/ml", "--set=tls-permissive=true",
        "--set=gpgkeypath=/a.asc,/b.asc", "--set=proxy=http://127.0.0.1:3128",
        "--set=sign-verify=ed25519", "--set=verification-ed25519-key=AAAA",
        "--collection-id=org.example.Os", "origin", "http://127.0.0.1:8000/repo", "main", "devel",
    )  # fmt: skip
    _ostree("remote", "add", f"--repo={repo}", "mirror", "mirrorlist=http://127.0.0.1:2/list")
    text = (repo / "config").read_text()
    rs = RemoteSet.load(text)
    o = rs.get("origin")
    assert o.url == "http://127.0.0.1:8000/repo"
    assert o.branches == ("main", "devel")
    assert o.contenturl == "http://127.0.0.1:1/ml" and o.contenturl_mirrorlist
    assert o.tls_permissive and not o.gpg_verify
    assert o.gpgkeypath == ("/a.asc", "/b.asc")
    assert o.sign_verify == ("ed25519",) and o.verification_ed25519_key == "AAAA"
    assert o.collection_id == "org.example.Os"
    m = rs.get("mirror")
    assert m.url == "http://127.0.0.1:2/list" and m.mirrorlist and m.gpg_verify

    # The same add through our code writes the very same config text.
    ours = RemoteSet.load("[core]\nrepo_version=1\nmode=archive-z2\n")
    ours = ours.add(
        "origin", "http://127.0.0.1:8000/repo",
        {
            "branches": ["main", "devel"], "contenturl": "mirrorlist=http://127.0.0.1:1/ml",
            "tls-permissive": "true", "gpgkeypath": "/a.asc,/b.asc",
            "proxy": "http://127.0.0.1:3128", "sign-verify": "ed25519",
            "verification-ed25519-key": "AAAA", "gpg-verify": False,
            "collection-id": "org.example.Os",
        },
    ).remotes  # fmt: skip
    ours = ours.add("mirror", "mirrorlist=http://127.0.0.1:2/list").remotes
    assert ours.config_text == text

    # Deleting through our code leaves what ostree would leave.
    _ostree("remote", "delete", f"--repo={repo}", "origin")
    assert ours.delete("origin").remotes.config_text == (repo / "config").read_text()


@pytest.mark.interop
@needs_ostree
def test_config_we_write_is_read_by_real_ostree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _ostree("init", f"--repo={repo}", "--mode=archive")
    rs = RemoteSet.load((repo / "config").read_text())
    change = rs.add("alpha", "http://127.0.0.1:8000/a", {"gpg-verify": False, "branches": ["x"]})
    change = change.remotes.add(
        "beta", "mirrorlist=http://127.0.0.1:8000/list", {"proxy": "  odd;value", "http2": False}
    )
    change = change.remotes.add("gamma", "file:///srv/repo")
    (repo / "config").write_text(change.remotes.config_text)

    listing = _ostree("remote", "list", "-u", f"--repo={repo}").stdout.split()
    assert listing == [
        "alpha", "http://127.0.0.1:8000/a",
        "beta", "mirrorlist=http://127.0.0.1:8000/list",
        "gamma", "file:///srv/repo",
    ]  # fmt: skip
    got = _ostree("config", f"--repo={repo}", "get", 'remote "beta".proxy').stdout
    assert got == "  odd;value\n"
    got = _ostree("config", f"--repo={repo}", "get", 'remote "alpha".gpg-verify').stdout
    assert got == "false\n"
    show = _ostree("remote", "show-url", f"--repo={repo}", "gamma").stdout
    assert show == "file:///srv/repo\n"
    # ostree agrees the remote exists (and refuses a duplicate)
    dup = _ostree("remote", "add", f"--repo={repo}", "alpha", "http://127.0.0.1/", check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr

    change = change.remotes.delete("beta")
    (repo / "config").write_text(change.remotes.config_text)
    listing = _ostree("remote", "list", f"--repo={repo}").stdout.split()
    assert listing == ["alpha", "gamma"]


@pytest.mark.interop
@needs_ostree
def test_remotes_d_with_real_ostree(tmp_path: Path) -> None:
    """Use ostree's own test trick: a deployment with a ``sysroot`` link is "non-physical",
    so ``ostree --sysroot=DEPLOYMENT remote add`` writes ``etc/ostree/remotes.d``."""
    tree = tmp_path / "tree"
    (tree / "usr/lib/modules/6.1.0").mkdir(parents=True)
    (tree / "usr/etc").mkdir()
    (tree / "usr/lib/modules/6.1.0/vmlinuz").write_text("K\n")
    (tree / "usr/lib/os-release").write_text("ID=testos\n")
    sr = tmp_path / "sr"
    sr.mkdir()
    env = {**os.environ, "OSTREE_SYSROOT_DEBUG": "mutable-deployments"}
    _ostree("admin", "init-fs", str(sr))
    _ostree("admin", "os-init", f"--sysroot={sr}", "testos")
    _ostree("commit", f"--repo={sr}/ostree/repo", "-b", "testos/main", str(tree))
    subprocess.run(
        [OSTREE or "ostree", "admin", "deploy", f"--sysroot={sr}", "--os=testos", "testos/main"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    dep = Path(_ostree("admin", f"--sysroot={sr}", "--print-current-dir").stdout.strip())
    (dep / "sysroot").symlink_to(os.path.relpath(sr, dep))
    (dep / "ostree").symlink_to("sysroot/ostree")
    remotes_d = dep / "etc/ostree/remotes.d"

    _ostree(
        f"--sysroot={dep}", "remote", "add", "--set=gpg-verify=false",
        "--set=sign-verify=ed25519", "theirs", "file:///srv/r", "main",
    )  # fmt: skip
    config_text = (sr / "ostree/repo/config").read_text()
    rs = RemoteSet.load(config_text, read_remotes_d([str(remotes_d)]))
    theirs = rs.get("theirs")
    assert theirs.source_path == str(remotes_d / "theirs.conf")
    assert theirs.branches == ("main",) and not theirs.gpg_verify
    assert theirs.sign_verify == ("ed25519",)

    # Our remotes.d file is seen by ostree: it refuses a duplicate and can delete it.
    change = rs.add("ours", "http://127.0.0.1:1/r", {"gpg-verify": False}, target=str(remotes_d))
    (write,) = change.writes
    assert write.path is not None and write.text is not None
    Path(write.path).write_text(write.text)
    dup = subprocess.run(
        [OSTREE or "ostree", f"--sysroot={dep}", "remote", "add", "ours", "http://127.0.0.1/"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert dup.returncode != 0 and str(remotes_d / "ours.conf") in dup.stderr
    _ostree(f"--sysroot={dep}", "remote", "delete", "ours")
    assert not (remotes_d / "ours.conf").exists()
    # ... and a delete through us yields the same effect as ostree's for a one-remote file
    (delete,) = change.remotes.delete("theirs").writes
    assert delete == ConfigWrite(str(remotes_d / "theirs.conf"), None)
