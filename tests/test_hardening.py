"""A hostile or broken server: corrupted objects, lying headers, endless and huge bodies,
redirect tricks, crafted dirtrees and ref names, and a hostile local system (a second pull
holding the lock, a read-only repository, a full filesystem).

Each failure case ends with the checks of :class:`tests.pullhelpers.PullCase`: one ``error:``
line from a real ``python -m pyostree`` process, refs unmoved, ``pyostree fsck`` and
``ostree fsck`` clean, nothing written outside the repository, and a rerun against the healed
server succeeding without cleanup.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyostree.errors import TooLargeError
from pyostree.pull import PullOptions, pull
from pyostree.remoteconfig import get_remote
from pyostree.repo import Repo

from .httpserver import Fault, FaultServer
from .pullhelpers import (
    DirEntries,
    FileEntries,
    MiB,
    PullCase,
    TreeMutator,
    assert_one_error,
    commit,
    craft_tree,
    file_of,
    flip_byte,
    fsck_both,
    gate_content,
    init_repo,
    ls_tree,
    make_client,
    needs_ostree,
    object_rel,
    ostree,
    point_ref,
    read_refs,
    run_measured,
    serve_objects,
    start_pull,
    summary_with_ref,
    tree_objects,
    wait_until,
    write_tree,
)

pytestmark = [pytest.mark.interop, needs_ostree]

ORIGIN_MAIN = "remotes/origin/main"
HTML = b"<!DOCTYPE html><html><head><title>Welcome</title></head><body>It works!</body></html>\n"
ZEROS_SIZE = 130 * MiB


@dataclass
class World:
    repo: Path
    main: str  # committed with --generate-sizes
    plain: str  # the same tree without ostree.sizes
    large: str  # a 2 MiB incompressible file (for the full-filesystem case)
    objects: dict[str, list[str]]  # main's objects by extension


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("hardworld")
    repo = init_repo(base / "srv")
    tree = write_tree(base / "tree", 1, nfiles=8)
    main = commit(repo, tree, "main", extra=["--generate-sizes"])
    plain = commit(repo, tree, "plain")
    big = base / "big"
    big.mkdir()
    (big / "blob").write_bytes(os.urandom(2 * MiB))
    large = commit(repo, big, "large")
    ostree(f"--repo={repo}", "static-delta", "generate", "--empty", "--to=main")
    ostree(f"--repo={repo}", "summary", "-u")
    return World(repo, main, plain, large, tree_objects(repo, main))


@pytest.fixture(scope="module")
def zeros() -> bytes:
    """130 MiB of zeros; calloc'd, so only the pages the server actually sends are touched."""
    return bytes(ZEROS_SIZE)


@pytest.fixture
def srv(world: World) -> Iterator[FaultServer]:
    with FaultServer(world.repo) as server:
        yield server


def new_case(world: World, srv: FaultServer, tmp_path: Path, *, mode: str = "archive",
             url: str | None = None, options: dict[str, str] | None = None) -> PullCase:
    client = make_client(tmp_path / "client", url or srv.url, mode=mode, options=options)
    return PullCase(tmp_path, client, srv, watch=[world.repo])


def subdir_tree(world: World) -> str:
    """The dirtree of directory ``a`` of main (a dirtree that is not the root)."""
    repo = Repo.open(world.repo)
    root = repo.load_dirtree(repo.load_commit(world.main).root_tree)
    return next(t for name, t, _ in root.dirs if name == "a")


def a_file(world: World) -> str:
    """A content object of main larger than a few hundred bytes (the random file)."""
    repo = Repo.open(world.repo)
    sizes = {c: repo.read_content_header(c).size for c in world.objects["filez"]}
    return max(sizes, key=lambda c: sizes[c])


PULL = ["pull", "origin", "main"]


# --------------------------------------------------------------------------- corrupted objects


@pytest.mark.parametrize("ext", ["filez", "dirtree", "dirmeta", "commit"])
def test_corrupted_object(world: World, srv: FaultServer, tmp_path: Path, ext: str) -> None:
    case = new_case(world, srv, tmp_path)
    csum = {"filez": a_file(world), "dirtree": subdir_tree(world),
            "dirmeta": world.objects["dirmeta"][0], "commit": world.main}[ext]
    rel = object_rel(csum, ext)
    srv.add_fault("/" + rel, Fault(body=flip_byte(file_of(world.repo, rel))))
    case.fail(PULL, csum)
    case.heal_and_rerun(PULL, {ORIGIN_MAIN: world.main})


def test_missing_dirtree_is_not_retried(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    tree = subdir_tree(world)
    path = "/" + object_rel(tree, "dirtree")
    srv.add_fault(path, Fault(status=404))
    case.fail(PULL, object_rel(tree, "dirtree"), "404")
    assert len(srv.requests_for(path)) == 1, "a 404 must not be retried"
    case.heal_and_rerun(PULL, {ORIGIN_MAIN: world.main})


@pytest.mark.parametrize("target", ["ref", "summary", "dirtree"])
def test_html_page_instead_of_data(world: World, srv: FaultServer, tmp_path: Path,
                                   target: str) -> None:
    case = new_case(world, srv, tmp_path)
    if target == "ref":
        point_ref(srv, "main", HTML)
        needles: tuple[str, ...] = ("main", "not a checksum")
    elif target == "summary":
        srv.add_fault("/summary", Fault(body=HTML))
        needles = ("summary",)
    else:
        tree = subdir_tree(world)
        srv.add_fault("/" + object_rel(tree, "dirtree"), Fault(body=HTML))
        needles = (tree,)
    case.fail(PULL, *needles)
    case.heal_and_rerun(PULL, {ORIGIN_MAIN: world.main})


def test_html_summary_sig_without_verification(world: World, srv: FaultServer,
                                               tmp_path: Path) -> None:
    """Without gpg-verify-summary the signature is not used: the pull works, and a later
    pull (with the junk cached) does too."""
    case = new_case(world, srv, tmp_path)
    srv.add_fault("/summary.sig", Fault(body=HTML))
    case.succeed(PULL)
    assert read_refs(case.client) == {ORIGIN_MAIN: world.main}
    case.heal_and_rerun(["pull", "origin", "plain"],
                        {ORIGIN_MAIN: world.main, "remotes/origin/plain": world.plain})


# --------------------------------------------------------------------------- flaky servers


def test_random_500s(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    srv.add_fault("/*", Fault(fail_rate=0.3, seed=7))
    case.fail(["pull", "--network-retries=0", *PULL[1:]], "500")
    srv.clear_faults()
    srv.add_fault("/*", Fault(fail_rate=0.3, seed=8))
    srv.clear_log()
    case.succeed(["pull", "--network-retries=12", *PULL[1:]])
    assert any(r.status == 500 for r in srv.requests), "the fault did not fire"
    assert read_refs(case.client) == {ORIGIN_MAIN: world.main}
    assert ls_tree(case.client, "origin:main") == ls_tree(world.repo, "main")


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after(world: World, srv: FaultServer, tmp_path: Path, status: int) -> None:
    case = new_case(world, srv, tmp_path)
    tree = subdir_tree(world)
    path = "/" + object_rel(tree, "dirtree")
    # A server that keeps answering it: one retry, then a clear error.
    srv.add_fault(path, Fault(status=status, retry_after="1"))
    case.fail(["pull", "--network-retries=1", *PULL[1:]], str(status))
    assert len(srv.requests_for(path)) == 2
    # Once: the default retries win, after waiting as told.
    seen: list[float] = []

    def transient() -> None:
        srv.add_fault(path, Fault(status=status, retry_after="1", times=1))

        def stamp(p: str) -> bool:
            if p == path:
                seen.append(time.monotonic())
            return False

        srv.add_fault(stamp, Fault())  # newest rule: sees every request first
        srv.clear_log()

    case.heal_and_rerun(PULL, {ORIGIN_MAIN: world.main}, then=transient)
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.9, f"Retry-After not honoured: {seen}"
    assert [r.status for r in srv.requests_for(path)] == [status, 200]


def test_connection_cut_mid_object(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    csum = a_file(world)
    path = "/" + object_rel(csum, "filez")
    srv.add_fault(path, Fault(drop_at=2000))
    case.fail(["pull", "--network-retries=0", *PULL[1:]], object_rel(csum, "filez"))

    def transient() -> None:
        srv.add_fault(path, Fault(drop_at=2000, times=1))
        srv.clear_log()

    case.heal_and_rerun(PULL, {ORIGIN_MAIN: world.main}, then=transient)
    assert [r.status for r in srv.requests_for(path)] == [200, 200]


@pytest.mark.parametrize("lie", ["larger", "smaller"])
def test_content_length_lies(world: World, srv: FaultServer, tmp_path: Path, lie: str) -> None:
    """``plain`` has no ostree.sizes: only the Content-Length says how long the body is."""
    case = new_case(world, srv, tmp_path)
    csum = a_file(world)
    rel = object_rel(csum, "filez")
    size = len(file_of(world.repo, rel))
    args = ["pull", "--network-retries=1", "origin", "plain"]
    if lie == "larger":
        srv.add_fault("/" + rel, Fault(content_length=size + 100))
        line = case.fail(args, rel)
        assert "truncated" in line or str(size + 100) in line, line
        assert len(srv.requests_for("/" + rel)) == 2, "a truncated body is retried"
    else:
        srv.add_fault("/" + rel, Fault(content_length=size - 10))
        # httpx stops at the Content-Length (then the checksum fails); aiohttp refuses the
        # extra bytes. Either way the object is named.
        line = case.fail(args)
        assert csum in line or rel in line, line
    case.heal_and_rerun(args, {"remotes/origin/plain": world.plain})


def test_trickling_server(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    srv.add_fault("/" + object_rel(a_file(world), "filez"), Fault(trickle_body=10))
    start = time.monotonic()
    case.fail(["pull", "--low-speed-time=1", "--network-retries=0", *PULL[1:]], "too slow")
    assert time.monotonic() - start < 30
    case.heal_and_rerun(PULL, {ORIGIN_MAIN: world.main})


# --------------------------------------------------------------------------- endless bodies


def test_endless_content_object_with_sizes(world: World, srv: FaultServer,
                                           tmp_path: Path) -> None:
    """``--generate-sizes`` commits give each content object an exact cap."""
    case = new_case(world, srv, tmp_path)
    csum = a_file(world)
    path = "/" + object_rel(csum, "filez")
    srv.add_fault(path, Fault(endless=True))
    start = time.monotonic()
    case.fail(PULL, object_rel(csum, "filez"), "limit")
    assert time.monotonic() - start < 30
    exact = len(file_of(world.repo, object_rel(csum, "filez")))
    assert all(r.bytes_sent <= exact + 4 * MiB for r in srv.requests_for(path))
    case.heal_and_rerun(PULL, {ORIGIN_MAIN: world.main})


def test_endless_content_object_library_cap(world: World, srv: FaultServer,
                                            tmp_path: Path) -> None:
    """Without ostree.sizes the cap is ``PullOptions.max_content_size``."""
    case = new_case(world, srv, tmp_path)
    csum = a_file(world)
    srv.add_fault("/" + object_rel(csum, "filez"), Fault(endless=True))
    repo = Repo.open(case.client)
    with pytest.raises(TooLargeError, match="limit"):
        pull(repo, get_remote(repo, "origin"), ["plain"],
             PullOptions(max_content_size=256 * 1024, network_retries=0))
    assert read_refs(case.client) == {}
    fsck_both(case.client)
    srv.clear_faults()
    pull(repo, get_remote(repo, "origin"), ["plain"], PullOptions(max_content_size=256 * 1024))
    assert read_refs(case.client) == {"remotes/origin/plain": world.plain}
    fsck_both(case.client)


def test_endless_dirtree(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    tree = subdir_tree(world)
    srv.add_fault("/" + object_rel(tree, "dirtree"), Fault(endless=True))
    case.fail(PULL, object_rel(tree, "dirtree"), "limit")
    case.heal_and_rerun(PULL, {ORIGIN_MAIN: world.main})


# --------------------------------------------------------------------------- redirects


@pytest.mark.parametrize("kind", ["loop", "self", "ftp"])
def test_bad_redirects(world: World, srv: FaultServer, tmp_path: Path, kind: str) -> None:
    case = new_case(world, srv, tmp_path)
    tree = subdir_tree(world)
    path = "/" + object_rel(tree, "dirtree")
    if kind == "loop":
        srv.add_fault(path, Fault(redirect=srv.url_for("/hop1")))
        srv.add_fault("/hop1", Fault(redirect=srv.url_for("/hop2")))
        srv.add_fault("/hop2", Fault(redirect=srv.url_for("/hop1")))
        needle = "redirect"
    elif kind == "self":
        srv.add_fault(path, Fault(redirect=srv.url_for(path)))
        needle = "redirect"
    else:
        srv.add_fault(path, Fault(redirect="ftp://127.0.0.1/x.dirtree"))
        needle = "ftp://"
    case.fail(PULL, needle)
    assert len(srv.requests) < 50
    case.heal_and_rerun(PULL, {ORIGIN_MAIN: world.main})


# --------------------------------------------------------------------------- crafted trees


def _add_file(name: str) -> TreeMutator:
    """Add a file entry ``name`` (``DUP``: a second copy of the first entry)."""
    def mutate(files: FileEntries, dirs: DirEntries) -> tuple[FileEntries, DirEntries]:
        extra = [(name, files[0][1])] if name != "DUP" else [files[0]]
        return sorted([*files, *extra], key=lambda e: e[0].encode()), dirs
    return mutate


@pytest.mark.parametrize(("name", "where", "needle"), [
    pytest.param("..", (), "'..'", id="dotdot-at-root"),
    pytest.param("..", ("a", "b"), "'..'", id="dotdot-in-a/b"),
    pytest.param("x/y", ("a",), "'x/y'", id="slash-in-a"),
    pytest.param("DUP", ("a",), "unique", id="duplicate-in-a"),
    pytest.param("", (), "''", id="empty-name"),
])
def test_crafted_dirtree_names(world: World, srv: FaultServer, tmp_path: Path, name: str,
                               where: tuple[str, ...], needle: str) -> None:
    case = new_case(world, srv, tmp_path)
    bad_commit, objects = craft_tree(world.repo, world.main, where, _add_file(name))
    serve_objects(srv, objects)
    point_ref(srv, "main", bad_commit)
    case.fail(PULL, needle)
    assert not (case.client / "x").exists()
    case.heal_and_rerun(PULL, {ORIGIN_MAIN: world.main})


@pytest.mark.parametrize("mirror", [False, True], ids=["remote-refs", "mirror"])
def test_summary_with_hostile_ref_names(world: World, srv: FaultServer, tmp_path: Path,
                                        mirror: bool) -> None:
    case = new_case(world, srv, tmp_path)
    summary = file_of(world.repo, "summary")
    for name in ("../../../../../../escaped", "../../x"):
        summary = summary_with_ref(summary, name, world.main)
    srv.add_fault("/summary", Fault(body=summary))
    args = ["pull", *(["--mirror"] if mirror else []), "origin"]
    case.fail(args, "ref name")
    case.heal_and_rerun(args, {("heads/main" if mirror else ORIGIN_MAIN): world.main})


# --------------------------------------------------------------------------- huge bodies


HUGE_TARGETS = ["commit", "dirtree", "summary", "summary.sig", "ref", "config", "superblock"]


@pytest.mark.parametrize("length", ["content-length", "no-content-length"])
@pytest.mark.parametrize("target", HUGE_TARGETS)
def test_130mib_of_zeros(world: World, srv: FaultServer, tmp_path: Path, zeros: bytes,
                         target: str, length: str) -> None:
    """Cut off at the cap, quickly, without holding the body in memory."""
    mode = "bare-user" if target == "superblock" else "archive"
    url = None
    if target == "config":
        srv.put("/mirrorlist", f"{srv.url}\n".encode())
        url = f"mirrorlist={srv.url}/mirrorlist"
    case = new_case(world, srv, tmp_path, mode=mode, url=url)
    path = {
        "commit": "/" + object_rel(world.main, "commit"),
        "dirtree": "/" + object_rel(subdir_tree(world), "dirtree"),
        "summary": "/summary",
        "summary.sig": "/summary.sig",
        "ref": "/refs/heads/main",
        "config": "/config",
        "superblock": "/deltas/*/superblock",
    }[target]
    if target == "ref":
        point_ref(srv, "main", world.main)
    srv.add_fault(path, Fault(body=zeros, no_content_length=length == "no-content-length"))
    refs = read_refs(case.client)
    before = case.snapshot()
    proc, seconds, rss = run_measured(
        [sys.executable, "-m", "pyostree", "--repo", str(case.client), "pull",
         "--network-retries=0", "origin", "main"], case.env)
    line = assert_one_error(proc, "limit")
    print(f"{target} {length}: {seconds:.1f} s, peak RSS {rss / MiB:.0f} MiB: {line}")
    assert seconds < 30, f"took {seconds:.1f} s"
    assert rss < 120 * MiB, f"peak RSS {rss / MiB:.0f} MiB"
    sent = sum(r.bytes_sent for r in srv.requests if r.path != "/mirrorlist")
    assert sent < 64 * MiB, f"the server sent {sent / MiB:.0f} MiB"
    assert read_refs(case.client) == refs
    case.check_intact(before)
    case.heal_and_rerun(PULL, {ORIGIN_MAIN: world.main})


# --------------------------------------------------------------------------- local system


def test_two_pulls_at_once(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    gate = gate_content(srv, free=1)
    first = start_pull(case.client, PULL, case.env)
    waiting = None
    try:
        # Once a content object arrived, the first pull is inside its transaction (locked).
        assert wait_until(lambda: any(r.path.endswith(".filez")
                                      for r in srv.wait_for_requests(0)))
        # A second pull with a short lock timeout fails cleanly on the lock ...
        config = (case.client / "config").read_text()
        (case.client / "config").write_text(
            config.replace("[core]\n", "[core]\nlock-timeout-secs=1\n", 1))
        second = case.run("pull", "origin", "plain")
        assert_one_error(second, "locked")
        (case.client / "config").write_text(config)
        # ... and one with the default timeout waits for the first and then succeeds.
        waiting = start_pull(case.client, ["pull", "origin", "plain"], case.env)
        time.sleep(0.5)
        assert waiting.poll() is None, "the second pull did not wait for the lock"
    finally:
        gate.set()
    assert waiting is not None
    assert first.wait(60) == 0, first.stderr.read() if first.stderr else ""
    assert waiting.wait(60) == 0, waiting.stderr.read() if waiting.stderr else ""
    for p in (first, waiting):
        if p.stderr:
            p.stderr.close()
    assert read_refs(case.client) == {ORIGIN_MAIN: world.main,
                                      "remotes/origin/plain": world.plain}
    fsck_both(case.client)


UNSHARE = shutil.which("unshare")
needs_unshare = pytest.mark.skipif(
    UNSHARE is None or os.geteuid() != 0, reason="needs root and unshare (private mounts)")


def in_namespace(script: str, env: dict[str, str], timeout: float = 120
                 ) -> subprocess.CompletedProcess[str]:
    assert UNSHARE is not None
    return subprocess.run([UNSHARE, "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)


@needs_unshare
def test_read_only_repository(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    repo = shlex.quote(str(case.client))
    before = case.snapshot()
    refs = read_refs(case.client)
    proc = in_namespace(
        f"mount --bind {repo} {repo} && mount -o remount,bind,ro {repo} {repo} && "
        f"exec {shlex.quote(sys.executable)} -m pyostree --repo={repo} pull origin main",
        case.env)
    if "mount:" in proc.stderr:
        pytest.skip(f"cannot make a read-only bind mount: {proc.stderr.strip()}")
    assert_one_error(proc, "read-only")
    assert read_refs(case.client) == refs
    case.check_intact(before)
    case.heal_and_rerun(PULL, {ORIGIN_MAIN: world.main})


@needs_unshare
def test_no_space_left(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    mnt = tmp_path / "small"
    mnt.mkdir()
    out = tmp_path / "results"
    out.mkdir()
    py = shlex.quote(sys.executable)
    ost = shlex.quote(shutil.which("ostree") or "ostree")
    q = shlex.quote
    script = f"""
set -u
M={q(str(mnt))}; O={q(str(out))}
mount -t tmpfs -o size=1M pyostree-enospc "$M" || {{ echo nomount > "$O/skip"; exit 0; }}
cp -a {q(str(case.client))} "$M/repo"
step() {{ name=$1; shift; "$@" > "$O/$name.out" 2> "$O/$name.err"; echo $? > "$O/$name.rc"; }}
step pull1 {py} -m pyostree --repo="$M/repo" pull origin large
step fsck1 {ost} --repo="$M/repo" fsck
step pyfsck1 {py} -m pyostree --repo="$M/repo" fsck -q
ls -R "$M/repo/refs" > "$O/refs1"
mount -o remount,size=64M "$M"
step pull2 {py} -m pyostree --repo="$M/repo" pull origin large
step fsck2 {ost} --repo="$M/repo" fsck
step pyfsck2 {py} -m pyostree --repo="$M/repo" fsck -q
cat "$M/repo/refs/remotes/origin/large" > "$O/refs2" 2>/dev/null || true
"""
    proc = in_namespace(script, case.env, timeout=180)
    if (out / "skip").exists():
        pytest.skip("cannot mount a tmpfs in a private namespace")
    assert proc.returncode == 0, proc.stderr

    def result(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            [], int((out / f"{name}.rc").read_text()), (out / f"{name}.out").read_text(),
            (out / f"{name}.err").read_text())

    assert_one_error(result("pull1"), "no space")
    for name in ("fsck1", "pyfsck1", "pull2", "fsck2", "pyfsck2"):
        r = result(name)
        assert r.returncode == 0, f"{name}: {r.stdout} {r.stderr}"
    assert "large" not in (out / "refs1").read_text()
    assert (out / "refs2").read_text().strip() == world.large
    assert not (mnt / "repo").exists(), "the tmpfs leaked out of the namespace"
