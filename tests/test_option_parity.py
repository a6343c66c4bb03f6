"""Options pyostree shares with ``ostree``, judged by the real ostree 2022.7.

``remote add`` (``--force``, ``--sign-verify``, ``--no-sign-verify``, ``--collection-id``,
``--custom-backend``) must write the very bytes ostree writes; ``remote delete --sysroot``
must delete what ostree deletes; the new ``pull``/``pull-local`` options must fetch, accept and
refuse what ostree does (compared through the loopback server's request log and ostree's own
error lines); ``admin status --verify`` and ``admin upgrade --stage`` must print what ostree
prints, run by the real ``ostree admin`` on a private tmpfs only.

Failures end with the checks of :class:`tests.pullhelpers.PullCase` (one ``error:`` line from a
real process, refs unmoved, ``pyostree fsck`` and ``ostree fsck`` clean, nothing written outside
the repository).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyostree import deploy as D
from pyostree.core import ObjectType
from pyostree.errors import SignatureError
from pyostree.remotes import RemoteSet
from pyostree.repo import Repo
from pyostree.sysroot import Sysroot
from pyostree.upgrade import upgrade

from . import realostree as ro
from .corehelpers import run_cli
from .httpserver import FaultServer
from .pullhelpers import (
    TS_V2,
    GpgHome,
    PullCase,
    cli,
    commit,
    flip_byte,
    fsck_both,
    init_repo,
    needs_gpg,
    needs_ostree,
    ostree,
    read_refs,
    repo_objects,
    summary_update,
    write_tree,
)

pytestmark = [pytest.mark.interop, needs_ostree]

URL = "http://127.0.0.1:1/repo"


def _words(line: str) -> str:
    """A line with its whitespace runs made one space: pyostree's one-line errors collapse
    them (ostree's dates pad a one-digit day with a space and a FIGURE SPACE)."""
    return " ".join(line.split())


def _ostree_error(proc: object) -> str:
    """The ``error:`` line of a failed real ostree (after any usage text it printed)."""
    assert getattr(proc, "returncode", 0) != 0, "ostree succeeded where it should fail"
    lines = [ln for ln in str(getattr(proc, "stderr", "")).splitlines() if ln.strip()]
    return lines[-1]


def _py_error(*args: str | Path) -> str:
    """Run pyostree in-process: it must fail with exactly one ``error:`` line."""
    code, out, err = run_cli(*args)
    assert code != 0, f"pyostree succeeded: {out!r}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --------------------------------------------------------------------------- remote add/delete


ADD_STEPS: list[list[str]] = [
    ["--set=q=1", "--contenturl=mirrorlist=http://127.0.0.1:1/list",
     "--collection-id=org.example.Os", "o", URL, "main", "devel"],
    ["--sign-verify=dummy=inline:AAAA", "--sign-verify=dummy=file:/etc/k.pub",
     "--no-gpg-verify", "--set=sign-verify=true", "--set=gpg-verify=true", "--set=branches=x",
     "--collection-id=org.example.Signed", "signed", URL, "b1"],
    ["--no-sign-verify", "--set=proxy= odd;value", "nosign", "mirrorlist=http://127.0.0.1:1/l"],
    ["--force", "--no-gpg-verify", "o", "http://127.0.0.1:2/moved", "b3"],
    ["--if-not-exists", "o", "http://127.0.0.1:3/ignored"],
    ["--custom-backend=flatpak", "cb"],
    ["--force", "--custom-backend=other", "--set=a=b", "nosign"],
    ["--force", "fresh", "metalink=http://127.0.0.1:1/m.xml"],
]


def test_remote_add_writes_the_bytes_ostree_writes(tmp_path: Path) -> None:
    theirs = init_repo(tmp_path / "theirs", "bare")
    ours = init_repo(tmp_path / "ours", "bare")
    for step in ADD_STEPS:
        ostree(f"--repo={theirs}", "remote", "add", *step)
        cli("--repo", ours, "remote", "add", *step)
        assert (ours / "config").read_bytes() == (theirs / "config").read_bytes(), step
    # ostree reads what we wrote; and pyostree reads it as ostree does
    got = ostree(f"--repo={ours}", "config", "get", 'remote "signed".collection-id').stdout
    assert got == "org.example.Signed\n"
    assert ostree(f"--repo={ours}", "remote", "show-url", "o").stdout == "http://127.0.0.1:2/moved\n"
    assert ostree(f"--repo={ours}", "remote", "list").stdout.split() == [
        "cb", "fresh", "nosign", "o", "signed"]
    remotes = RemoteSet.load((ours / "config").read_text())
    assert remotes.get("o").collection_id is None  # --force replaced the whole group
    assert remotes.get("signed").sign_verify == ("dummy,dummy",)  # ostree's own quirk
    assert remotes.get("nosign").custom_backend == "other"
    assert not remotes.get("o").gpg_verify and remotes.get("o").branches == ("b3",)


def test_sign_verify_ed25519_is_written_as_ostree_writes_its_engines(tmp_path: Path) -> None:
    """The ostree here may lack ed25519 (built without libsodium): then its output for the
    ``dummy`` engine, with the engine's name changed, is what ed25519 must look like."""
    key = "Mjr1FKRfgLKvGZ5HoO4CbVZ1Rb3kHzjT+pC3TfDN2w8="
    theirs = init_repo(tmp_path / "theirs", "bare")
    ours = init_repo(tmp_path / "ours", "bare")
    args = [f"--sign-verify=ed25519=inline:{key}", "--sign-verify=ed25519=file:/k", "r", URL]
    real = ostree(f"--repo={theirs}", "remote", "add", *args, check=False)
    if real.returncode != 0:
        assert "not implemented" in real.stderr
        ostree(f"--repo={theirs}", "remote", "add",
               *[a.replace("ed25519", "dummy") for a in args])
        expected = (theirs / "config").read_text().replace("dummy", "ed25519")
    else:
        expected = (theirs / "config").read_text()
    cli("--repo", ours, "remote", "add", *args)
    assert (ours / "config").read_text() == expected
    remote = RemoteSet.load(expected).get("r")
    assert remote.verification_ed25519_key == key
    assert remote.verification_ed25519_file == "/k"


@pytest.mark.parametrize("args", [
    ["--if-not-exists", "--force", "x", URL],
    ["--sign-verify=dummy=inline:A", "--no-sign-verify", "x", URL],
    ["--sign-verify=nosuch=inline:A", "x", URL],
    ["--sign-verify=dummy", "x", URL],
    ["--sign-verify=dummy=bogus:A", "x", URL],
    ["x"],
    ["o", URL],
], ids=["force+if-not-exists", "sign+no-sign", "unknown-engine", "no-keyref", "bad-keyref",
        "no-url", "exists"])
def test_remote_add_refuses_what_ostree_refuses(tmp_path: Path, args: list[str]) -> None:
    theirs = init_repo(tmp_path / "theirs", "bare")
    ours = init_repo(tmp_path / "ours", "bare")
    for repo in (theirs, ours):
        ostree(f"--repo={repo}", "remote", "add", "o", URL)
    before = (ours / "config").read_bytes()
    expected = _ostree_error(ostree(f"--repo={theirs}", "remote", "add", *args, check=False))
    assert _py_error("--repo", ours, "remote", "add", *args) == expected
    assert (ours / "config").read_bytes() == before


def corrupt_filez(path: Path) -> None:
    """Flip a byte in the compressed data of an archive content object (past its header)."""
    data = path.read_bytes()
    start = 8 + int.from_bytes(data[:4], "big")
    assert len(data) > start + 2, "no data to corrupt"
    path.write_bytes(flip_byte(data, start + (len(data) - start) // 2))


def _fake_deployment_root(path: Path) -> Path:
    """A sysroot that ostree loads as "not physical" (it has a ``sysroot`` directory, as a
    deployment does): ostree then keeps its remotes in ``etc/ostree/remotes.d``."""
    path.mkdir()
    cli("admin", "init-fs", path)
    cli("admin", "os-init", f"--sysroot={path}", "testos")
    (path / "sysroot").mkdir(exist_ok=True)
    return path


def test_sysroot_force_and_delete_match_ostree(tmp_path: Path) -> None:
    theirs = _fake_deployment_root(tmp_path / "theirs")
    ours = _fake_deployment_root(tmp_path / "ours")
    steps: list[Sequence[str]] = [
        ("remote", "add", "--set=gpg-verify=false", "r1", URL, "main"),
        ("remote", "add", "--force", "--collection-id=org.example.Os", "r1", URL),
        ("remote", "add", "r2", URL),
    ]
    for step in steps:
        ostree(f"--sysroot={theirs}", *step)
        cli(*step[:2], f"--sysroot={ours}", *step[2:])

    def state(root: Path) -> dict[str, bytes]:
        files = sorted((root / "etc/ostree/remotes.d").iterdir())
        return {p.name: p.read_bytes() for p in [*files, root / "ostree/repo/config"]}

    assert state(ours) == state(theirs)
    assert set(state(ours)) == {"r1.conf", "r2.conf", "config"}
    for root in (theirs, ours):  # the remote's keyring goes with it
        (root / "ostree/repo/r1.trustedkeys.gpg").write_bytes(b"")
    ostree(f"--sysroot={theirs}", "remote", "delete", "r1")
    cli("remote", "delete", f"--sysroot={ours}", "r1")
    assert state(ours) == state(theirs) and "r1.conf" not in state(ours)
    assert not (ours / "ostree/repo/r1.trustedkeys.gpg").exists()
    ostree(f"--sysroot={theirs}", "remote", "delete", "--if-exists", "r1")
    cli("remote", "delete", f"--sysroot={ours}", "--if-exists", "r1")
    expected = _ostree_error(ostree(f"--sysroot={theirs}", "remote", "delete", "r1",
                                    check=False))
    assert _py_error("remote", "delete", f"--sysroot={ours}", "r1") == expected


# --------------------------------------------------------------------------- pulls


@dataclass
class World:
    srv: Path  # archive repo made by ostree: main = c1 <- c2, wide (a setuid file)
    cache: Path  # archive repo holding c1 only
    deltas: Path  # a copy of srv with a from-scratch static delta to c2
    c1: str
    c2: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("parity")
    srv = init_repo(base / "srv")
    c1 = commit(srv, write_tree(base / "v1", 1), "main", subject="v1")
    c2 = commit(srv, write_tree(base / "v2", 2), "main", subject="v2", timestamp=TS_V2)
    wide = write_tree(base / "wide", 1, big=0)
    (wide / "suid").write_text("#!/bin/sh\n")
    (wide / "suid").chmod(0o4755)
    commit(srv, wide, "wide")
    summary_update(srv)
    cache = init_repo(base / "cache")
    ostree(f"--repo={cache}", "pull-local", srv, c1)
    deltas = base / "deltas"
    shutil.copytree(srv, deltas, symlinks=True)
    ostree(f"--repo={deltas}", "static-delta", "generate", "--empty", "main")
    summary_update(deltas)
    return World(srv, cache, deltas, c1, c2)


@pytest.fixture
def srv(world: World) -> Iterator[FaultServer]:
    with FaultServer(world.srv) as server:
        yield server


def twins(tmp_path: Path, url: str, mode: str = "archive") -> tuple[Path, Path]:
    """Two identical clients with the remote ``origin``: pyostree's and the real ostree's."""
    out = []
    for name in ("ours", "theirs"):
        repo = init_repo(tmp_path / name, mode)
        ostree(f"--repo={repo}", "remote", "add", "--no-gpg-verify", "origin", url)
        out.append(repo)
    return out[0], out[1]


def object_requests(srv: FaultServer) -> set[str]:
    return {r.path for r in srv.requests if r.path.startswith("/objects/")}


def test_timestamp_check_from_rev_refuses_as_ostree(world: World, srv: FaultServer,
                                                    tmp_path: Path) -> None:
    ours, theirs = twins(tmp_path, srv.url)
    cli("--repo", ours, "pull", "origin", "main")
    ostree(f"--repo={theirs}", "pull", "origin", "main")
    case = PullCase(tmp_path, ours, srv, watch=[world.srv])
    cases = [
        ["--timestamp-check-from-rev=origin:main", "origin", f"main@{world.c1}"],
        # parents are checked too: c2 itself is fine, its parent is older than it
        ["--depth=1", f"--timestamp-check-from-rev={world.c2}", "origin", "main"],
        ["--timestamp-check-from-rev=nosuchref", "origin", "main"],
        [f"--timestamp-check-from-rev={'a' * 64}", "origin", "main"],
    ]
    for args in cases:
        srv.clear_log()
        line = case.fail(["pull", *args])
        if args[0].startswith("--timestamp-check-from-rev=origin"):
            # nothing but the commit (and its detached metadata) was fetched
            assert {p.rsplit(".", 1)[1] for p in object_requests(srv)} <= {"commit",
                                                                          "commitmeta"}
        expected = _ostree_error(ostree(f"--repo={theirs}", "pull", *args, check=False))
        assert _words(line).lower() == _words(expected).lower(), (line, expected)
    # the same commit, or a newer one, is fine
    ok = ["--timestamp-check-from-rev=origin:main", "origin", "main"]
    case.succeed(["pull", *ok])
    ostree(f"--repo={theirs}", "pull", *ok)
    assert read_refs(ours) == read_refs(theirs) == {"remotes/origin/main": world.c2}


def test_localcache_repo_fetches_nothing_the_cache_holds(world: World, srv: FaultServer,
                                                         tmp_path: Path) -> None:
    ours, theirs = twins(tmp_path, srv.url)
    requested = {}
    for who, repo in (("ours", ours), ("theirs", theirs)):
        srv.clear_log()
        args = ["pull", "-L", str(world.cache), "origin", "main"]
        if who == "ours":
            cli("--repo", repo, *args)
        else:
            ostree(f"--repo={repo}", *args)
        requested[who] = object_requests(srv)
    assert requested["ours"] == requested["theirs"]  # the same objects as ostree ...
    cached = {f"/{p.relative_to(world.cache)}" for p in world.cache.glob("objects/*/*")}
    assert requested["ours"] and not requested["ours"] & cached  # ... none of the cached ones
    assert read_refs(ours) == read_refs(theirs) == {"remotes/origin/main": world.c2}
    assert repo_objects(ours) == repo_objects(theirs)
    fsck_both(ours)


def test_localcache_objects_are_verified(world: World, srv: FaultServer,
                                         tmp_path: Path) -> None:
    bad = tmp_path / "badcache"
    shutil.copytree(world.cache, bad, symlinks=True)
    c2_files = set(Repo.open(world.srv).load_dirtree(
        Repo.open(world.srv).load_commit(world.c2).root_tree).files)
    shared = max((p for p in bad.glob("objects/*/*.filez")
                  if any(p.parent.name + p.name.split(".")[0] == c for _, c in c2_files)),
                 key=lambda p: p.stat().st_size)
    corrupt_filez(shared)
    ours, theirs = twins(tmp_path, srv.url)
    case = PullCase(tmp_path, ours, srv, watch=[world.srv, bad])
    case.fail(["pull", "-L", str(bad), "origin", "main"], "corrupted")
    assert ostree(f"--repo={theirs}", "pull", "-L", str(bad), "origin", "main",
                  check=False).returncode != 0


def test_bareuseronly_files_refused_as_ostree(world: World, srv: FaultServer,
                                              tmp_path: Path) -> None:
    ours, theirs = twins(tmp_path, srv.url, mode="bare-user")
    case = PullCase(tmp_path, ours, srv, watch=[world.srv])
    for args in (["pull", "--bareuseronly-files", "origin", "wide"],
                 ["pull-local", "--bareuseronly-files", str(world.srv), "wide"]):
        line = case.fail(args, "invalid mode")
        assert line == _ostree_error(ostree(f"--repo={theirs}", *args, check=False))
    # files within 0775 pass
    cli("--repo", ours, "pull", "--bareuseronly-files", "origin", "main")
    ostree(f"--repo={theirs}", "pull", "--bareuseronly-files", "origin", "main")
    assert read_refs(ours) == read_refs(theirs)


def test_pull_local_untrusted_refuses_a_corrupted_object(world: World, srv: FaultServer,
                                                         tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(world.cache, src, symlinks=True)
    biggest = max(src.glob("objects/*/*.filez"), key=lambda p: p.stat().st_size)
    corrupt_filez(biggest)
    ours, theirs = twins(tmp_path, srv.url)
    case = PullCase(tmp_path, ours, srv, watch=[src])
    case.fail(["pull-local", "--untrusted", str(src), world.c1], "corrupted")
    assert ostree(f"--repo={theirs}", "pull-local", "--untrusted", src, world.c1,
                  check=False).returncode != 0
    # Without --untrusted ostree copies the corrupted object; pyostree verifies anyway.
    case.fail(["pull-local", str(src), world.c1], "corrupted")
    ostree(f"--repo={theirs}", "pull-local", src, world.c1)
    assert ostree(f"--repo={theirs}", "fsck", check=False).returncode != 0


def test_pull_local_options_as_ostree(world: World, srv: FaultServer, tmp_path: Path) -> None:
    ours, theirs = twins(tmp_path, "http://127.0.0.1:1/unused", mode="bare-user")
    failing = [
        ["--gpg-verify-summary", str(world.srv), "main"],
        ["--gpg-verify", str(world.srv), "main"],
        ["--remote=origin", "--gpg-verify-summary", str(world.srv), "main"],
        ["--require-static-deltas", str(world.srv), "main"],
    ]
    for args in failing:
        line = _py_error("--repo", ours, "pull-local", *args)
        expected = _ostree_error(ostree(f"--repo={theirs}", "pull-local", *args, check=False))
        if "remote name" in expected:
            assert line == expected
    assert read_refs(ours) == read_refs(theirs) == {}
    args = ["--commit-metadata-only", "--disable-verify-bindings", "--per-object-fsync",
            str(world.srv), "main"]
    cli("--repo", ours, "pull-local", *args)
    ostree(f"--repo={theirs}", "pull-local", *args)
    assert read_refs(ours) == read_refs(theirs) == {"heads/main": world.c2}
    assert repo_objects(ours) == repo_objects(theirs)  # the commit and its metadata only
    fsck_both(ours)
    # a delta, applied from a local repository, into fresh repositories
    (tmp_path / "deltas").mkdir()
    ours, theirs = twins(tmp_path / "deltas", "http://127.0.0.1:1/unused", mode="bare-user")
    args = ["--require-static-deltas", "--per-object-fsync", str(world.deltas), "main"]
    result = json.loads(cli("--repo", ours, "pull-local", "--json", *args))
    ostree(f"--repo={theirs}", "pull-local", *args)
    assert result["deltas"] == [world.c2]
    assert read_refs(ours) == read_refs(theirs) == {"heads/main": world.c2}
    assert repo_objects(ours) == repo_objects(theirs)
    fsck_both(ours)


def test_accepted_pull_options_and_cache_dir(world: World, srv: FaultServer,
                                             tmp_path: Path) -> None:
    ours, theirs = twins(tmp_path, srv.url)
    for repo in (ours, theirs):
        (repo / "mycache").mkdir()
    args = ["--per-object-fsync", "--untrusted", "--http-trusted", "--update-frequency=50",
            "origin", "main"]
    cli("--repo", ours, "pull", f"--cache-dir={ours / 'mycache'}", *args)
    ostree(f"--repo={theirs}", "pull", f"--cache-dir={theirs / 'mycache'}", *args)
    assert read_refs(ours) == read_refs(theirs)
    assert repo_objects(ours) == repo_objects(theirs)
    assert (ours / "mycache/summaries/origin").is_file()
    assert not (ours / "tmp/cache/summaries").exists()
    fsck_both(ours)
    # remote refs/summary read through the same cache
    refs = ostree(f"--repo={theirs}", "remote", "refs", f"--cache-dir={theirs / 'mycache'}",
                  "origin").stdout
    assert cli("--repo", ours, "remote", "refs", f"--cache-dir={ours / 'mycache'}",
               "origin") == refs
    summary = cli("--repo", ours, "remote", "summary", f"--cache-dir={ours / 'mycache'}",
                  "origin")
    assert world.c2 in summary
    # a cache directory must exist, for both
    missing = tmp_path / "missing"
    for cmd in (["pull", f"--cache-dir={missing}", "origin", "main"],
                ["remote", "refs", f"--cache-dir={missing}", "origin"]):
        assert str(missing) in _py_error("--repo", ours, *cmd)
        assert str(missing) in _ostree_error(ostree(f"--repo={theirs}", *cmd, check=False))
    assert not missing.exists()


def test_custom_backend_remote_is_not_pulled(tmp_path: Path) -> None:
    ours, theirs = twins(tmp_path, URL)
    args = ["remote", "add", "--custom-backend=flatpak", "cb"]
    ostree(f"--repo={theirs}", *args)
    cli("--repo", ours, *args)
    expected = _ostree_error(ostree(f"--repo={theirs}", "pull", "cb", "main", check=False))
    assert _py_error("--repo", ours, "pull", "cb", "main") == expected


# --------------------------------------------------------------------------- admin

OS = "testos"
REF = "testos/stable"


def _signed_sysroot(tmp: Path, gpg: GpgHome) -> tuple[Path, Path, str, str]:
    """A sysroot (made by pyostree) deployed from ``origin:testos/stable``, whose commit c1 is
    GPG-signed, with c2 pulled but not deployed; and the source repository."""
    key = gpg.gen("parity")
    src = ro.init_repo(tmp / "src", "archive")
    sign = (f"--gpg-sign={key.fpr}", f"--gpg-homedir={gpg.home}")
    c1 = ro.commit(src, ro.make_os_tree(tmp / "t1", version="1.0"), REF, version="1.0",
                   extra_args=sign)
    root = tmp / "sys"
    root.mkdir()
    D.init_fs(root)
    sysroot = Sysroot(root, mutable_deployments=True, run_dir=root / "run/ostree")
    D.os_init(sysroot, OS)
    repo = root / "ostree/repo"
    cli("--repo", repo, "remote", "add", "origin", f"file://{src}")
    cli("--repo", repo, "remote", "gpg-import", "origin", key.public)
    cli("--repo", repo, "pull", "origin", REF)
    D.deploy(sysroot, OS, f"origin:{REF}", kargs=["root=LABEL=root"])
    c2 = ro.commit(src, ro.make_os_tree(tmp / "t2", version="2.0"), REF, version="2.0",
                   extra_args=sign)
    cli("--repo", repo, "pull", "origin", REF)
    return root, src, c1, c2


@needs_gpg
@ro.needs_admin
def test_admin_status_verify_and_upgrade_stage_as_ostree(tmp_path: Path) -> None:
    gpg = GpgHome.create(tmp_path / "gnupg")
    try:
        root, _, _, c2 = _signed_sysroot(tmp_path, gpg)
    finally:
        gpg.close()
    states = {"signed": tmp_path / "state-signed"}
    shutil.copytree(root, states["signed"], symlinks=True)
    # a newer deployment of a local ref: it has no remote to verify against
    repo = Repo.open(root / "ostree/repo")
    repo.set_ref("testos/local", c2)
    D.deploy(Sysroot(root, mutable_deployments=True).load(), OS, "testos/local")
    states["unverifiable"] = root

    ours: dict[str, tuple[int, str, str]] = {}
    for name, path in states.items():
        code, out, err = run_cli("admin", "status", "--verify", f"--sysroot={path}")
        ours[f"status-{name}"] = (code, out.decode(), err)
    code, out, err = run_cli("admin", "upgrade", "--stage", "--deploy-only", f"--os={OS}",
                             f"--sysroot={states['signed']}")
    ours["stage"] = (code, out.decode(), err)

    script = "".join(
        f'cp -a {path} "$T/{name}"\n'
        f'$OSTREE admin status --verify --sysroot="$T/{name}" > "$OUT/status-{name}.out" '
        f'2> "$OUT/status-{name}.err" && echo 0 > "$OUT/status-{name}.rc" '
        f'|| echo $? > "$OUT/status-{name}.rc"\n'
        for name, path in states.items())
    script += (
        '$OSTREE admin upgrade --stage --deploy-only --os=testos --sysroot="$T/signed" '
        '> "$OUT/stage.out" 2> "$OUT/stage.err" && echo 0 > "$OUT/stage.rc" '
        '|| echo $? > "$OUT/stage.rc"\n')
    ro.run_admin_scenario(tmp_path / "real", script)
    out_dir = tmp_path / "real/out"
    for name, (code, stdout, stderr) in ours.items():
        real_rc = int((out_dir / f"{name}.rc").read_text())
        real_out = (out_dir / f"{name}.out").read_text()
        real_err = (out_dir / f"{name}.err").read_text()
        assert (code == 0) == (real_rc == 0), (name, stderr, real_err)
        assert stdout == real_out, name
        if real_rc:
            assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
            assert _words(stderr) == _words(real_err.splitlines()[-1]), name
    assert "GPG: Good signature from" in ours["status-signed"][1]


def test_upgrade_stage_stages_the_new_commit(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    root.mkdir()
    D.init_fs(root)
    sysroot = Sysroot(root, mutable_deployments=True, run_dir=root / "run/ostree")
    D.os_init(sysroot, OS)
    repo = root / "ostree/repo"
    src = ro.init_repo(tmp_path / "src", "archive")
    c1 = ro.commit(src, ro.make_os_tree(tmp_path / "t1", version="1.0"), REF, version="1.0")
    ro.pull_local(repo, src, REF)
    d1 = D.deploy(sysroot, OS, REF)
    c2 = ro.commit(src, ro.make_os_tree(tmp_path / "t2", version="2.0"), REF, version="2.0")
    ro.pull_local(repo, src, REF)
    booted = Sysroot(root, booted=sysroot.deployment_path(d1), mutable_deployments=True,
                     run_dir=sysroot.run_dir).load()
    result = upgrade(booted, stage=True)
    assert result.deployed and result.target == c2 and result.current == c1
    assert [(d.csum, d.staged) for d in booted.load().deployments] == [(c2, True),
                                                                       (c1, False)]
    assert booted.staged_path.exists()
    assert upgrade(booted, stage=True).deployed is False  # staged already: nothing new


def test_ed25519_verification_line_names_the_key(tmp_path: Path) -> None:
    """libostree's line for an ed25519 signature, ``ed25519: Signature verified successfully
    with key 'HEX'`` (the hex of the public key that verified it)."""
    from pyostree import sign
    from pyostree.verify import TrustSettings, describe_commit_verification

    secret, public = sign.generate_ed25519_keypair()
    _, other_public = sign.generate_ed25519_keypair()
    repo = init_repo(tmp_path / "repo")
    csum = commit(repo, write_tree(tmp_path / "t", 1, big=0), "main")
    cli("--repo", repo, "sign", "main", secret)
    r = Repo.open(repo)
    data = r.load_metadata_bytes(ObjectType.COMMIT, csum)
    settings = TrustSettings(remote="o", gpg_verify=False, sign_verify=True,
                             ed25519_keys=(other_public, public))
    text = describe_commit_verification(settings, ("ed25519",), data,
                                        r.load_detached_metadata(csum))
    expected_key = sign.parse_ed25519_public_key(public).hex()
    assert text == f"ed25519: Signature verified successfully with key '{expected_key}'"
    with pytest.raises(SignatureError, match="Can't verify commit: ed25519"):
        describe_commit_verification(
            TrustSettings(remote="o", gpg_verify=False, ed25519_keys=(other_public,)),
            ("ed25519",), data, r.load_detached_metadata(csum))

