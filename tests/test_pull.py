"""Pulls from repositories built by the real ostree: modes, options, mirrors, signatures,
downgrade and binding checks, and resuming after SIGKILL.

Every failure case ends with the checks of :class:`tests.pullhelpers.PullCase`: one ``error:``
line from a real process, refs unmoved, ``pyostree fsck`` and ``ostree fsck`` clean, nothing
written outside the repository, and a rerun against the healed server succeeding.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .httpserver import Fault, FaultServer
from .pullhelpers import (
    TS_V2,
    GpgHome,
    GpgKey,
    PullCase,
    checksums_in,
    cli,
    commit,
    content_requests,
    copy_repo,
    detached_signed_by,
    file_of,
    flip_byte,
    fsck_both,
    gate_content,
    init_repo,
    ls_tree,
    make_client,
    merge_signatures,
    missing_objects,
    needs_gpg,
    needs_ostree,
    object_rel,
    ostree,
    point_ref,
    pyostree_env,
    read_refs,
    sigkill,
    staged_checksums,
    start_pull,
    summary_update,
    tamper_signature,
    wait_until,
    write_tree,
)

pytestmark = [pytest.mark.interop, needs_ostree, needs_gpg]

KILL_TRIALS = int(os.environ.get("PYOSTREE_KILL_TRIALS", "100"))


@dataclass
class World:
    """The server repository (archive, made by ostree) and everything derived from it."""

    repo: Path
    gpg: GpgHome
    good: GpgKey
    other: GpgKey  # never imported by clients
    expired: GpgKey
    revoked: GpgKey
    c1: str  # main v1
    c2: str  # main v2 (parent c1), the head
    elsewhere: str  # tree v1, bound to the ref "elsewhere"
    old_summary: bytes  # signed summary from before c2
    old_sig: bytes
    meta: dict[str, bytes]  # variants of c2's .commitmeta

    @property
    def trusted(self) -> list[GpgKey]:
        return [self.good, self.expired, self.revoked]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("pullworld")
    gpg = GpgHome.create(base / "gnupg")
    try:
        good = gpg.gen("good")
        other = gpg.gen("other")
        expired = gpg.gen("expired", created="20200101T000000!", expire="30d")
        revoked = gpg.gen("revoked")
        repo = init_repo(base / "srv")
        sign = [f"--gpg-sign={good.fpr}", f"--gpg-homedir={gpg.home}"]
        c1 = commit(repo, write_tree(base / "v1", 1, nfiles=16), "main", subject="v1",
                    extra=sign)
        summary_update(repo, gpg, good)
        old_time = time.time()
        old_summary, old_sig = file_of(repo, "summary"), file_of(repo, "summary.sig")
        c2 = commit(repo, write_tree(base / "v2", 2, nfiles=16), "main", subject="v2",
                    timestamp=TS_V2, extra=sign)
        elsewhere = commit(repo, base / "v1", "elsewhere", extra=sign)
        scratch = base / "scratch"
        meta = {
            "good": file_of(repo, object_rel(c2, "commitmeta")),
            "unknown": detached_signed_by(repo, c2, gpg, [other], scratch),
            "unknown+good": detached_signed_by(repo, c2, gpg, [other, good], scratch),
            "revoked": detached_signed_by(repo, c2, gpg, [revoked], scratch),
            "c1": file_of(repo, object_rel(c1, "commitmeta")),
        }
        with gpg.faked_time("20200110T000000!"):
            meta["expired"] = detached_signed_by(repo, c2, gpg, [expired], scratch)
        gpg.revoke(revoked)
        meta["tampered"] = tamper_signature(meta["good"])
        meta["tampered+good"] = merge_signatures(meta["tampered"], meta["good"])
        # The healthy summary must be strictly newer than the old one (whole seconds).
        time.sleep(max(0.0, int(old_time) + 1.05 - time.time()))
        summary_update(repo, gpg, good)
        yield World(repo, gpg, good, other, expired, revoked, c1, c2, elsewhere,
                    old_summary, old_sig, meta)
    finally:
        gpg.close()


@pytest.fixture
def srv(world: World) -> Iterator[FaultServer]:
    with FaultServer(world.repo) as server:
        yield server


def new_case(world: World, srv: FaultServer, tmp_path: Path, *, mode: str = "archive",
             gpg_verify: bool = True, gpg_verify_summary: bool = False,
             url: str | None = None, options: dict[str, str] | None = None) -> PullCase:
    client = make_client(tmp_path / "client", url or srv.url, mode=mode,
                         gpg_verify=gpg_verify, gpg_verify_summary=gpg_verify_summary,
                         keys=world.trusted if gpg_verify or gpg_verify_summary else (),
                         options=options)
    return PullCase(tmp_path, client, srv, watch=[world.repo])


ORIGIN_MAIN = "remotes/origin/main"


# --------------------------------------------------------------------------- plain pulls


@pytest.mark.parametrize("mode", ["archive", "bare-user"])
def test_pull_matches_server(world: World, srv: FaultServer, tmp_path: Path, mode: str) -> None:
    case = new_case(world, srv, tmp_path, mode=mode)
    case.succeed(["pull", "origin", "main", "elsewhere"])
    refs = read_refs(case.client)
    server_refs = read_refs(world.repo)
    assert {k.replace("remotes/origin/", "heads/"): v for k, v in refs.items()} == server_refs
    for ref in ("main", "elsewhere"):
        assert ls_tree(case.client, f"origin:{ref}") == ls_tree(world.repo, ref)
    assert not list((case.client / "state").glob("*.commitpartial"))
    # Nothing new: the second pull fetches no object.
    srv.clear_log()
    case.succeed(["pull", "origin", "main"])
    assert not [r for r in srv.requests if r.path.startswith("/objects/")
                and not r.path.endswith(".commitmeta")]


def test_pull_ref_at_commit(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    case.succeed(["pull", "origin", f"main@{world.c1}"])
    assert read_refs(case.client) == {ORIGIN_MAIN: world.c1}
    assert ls_tree(case.client, world.c1) == ls_tree(world.repo, world.c1)
    assert not srv.requests_for("/summary"), "a pinned pull needs no summary"
    case.fail(["pull", "origin", "main@" + "ab" * 31], "checksum")
    case.heal_and_rerun(["pull", "origin", "main"], {ORIGIN_MAIN: world.c2})


def test_commit_metadata_only(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    case.succeed(["pull", "--commit-metadata-only", "origin", "main"])
    assert (case.client / "state" / f"{world.c2}.commitpartial").exists()
    assert (case.client / object_rel(world.c2, "commit")).exists()
    fetched = [r.path for r in srv.requests]
    assert not [p for p in fetched if p.endswith((".filez", ".dirtree", ".dirmeta"))], fetched
    assert read_refs(case.client) == {ORIGIN_MAIN: world.c2}
    case.succeed(["pull", "origin", "main"])
    assert not (case.client / "state" / f"{world.c2}.commitpartial").exists()
    assert ls_tree(case.client, world.c2) == ls_tree(world.repo, world.c2)


def test_depth_one(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    case.succeed(["pull", "--depth=1", "origin", "main"])
    log = ostree(f"--repo={case.client}", "log", "origin:main").stdout
    assert world.c1 in log and world.c2 in log
    assert ls_tree(case.client, world.c1) == ls_tree(world.repo, world.c1)
    assert not list((case.client / "state").glob("*.commitpartial"))


def test_mirror(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    case.succeed(["pull", "--mirror", "origin", "main"])
    assert read_refs(case.client) == {"heads/main": world.c2}
    assert ls_tree(case.client, "main") == ls_tree(world.repo, "main")


def test_pull_local(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path, mode="bare-user", gpg_verify=False)
    case.succeed(["pull-local", str(world.repo), "main"])
    assert read_refs(case.client) == {"heads/main": world.c2}
    assert ls_tree(case.client, "main") == ls_tree(world.repo, "main")
    assert not srv.requests, "pull-local must not use the network"
    case.fail(["pull-local", str(world.repo), "no-such-ref"], "no-such-ref")


@pytest.mark.parametrize("dead", ["refused", "404"])
def test_mirrorlist_dead_first_mirror(world: World, srv: FaultServer, tmp_path: Path,
                                      dead: str) -> None:
    with FaultServer() as broken:
        broken.add_fault("/*", Fault(status=404))
        first = "http://127.0.0.1:1/gone" if dead == "refused" else broken.url + "/repo"
        srv.put("/mirrorlist", f"# mirrors\n\n{first}\nftp://127.0.0.1/x\n{srv.url}\n".encode())
        case = new_case(world, srv, tmp_path, url=f"mirrorlist={srv.url}/mirrorlist",
                        options={})
        case.succeed(["pull", "--network-retries=1", "origin", "main"])
        assert read_refs(case.client) == {ORIGIN_MAIN: world.c2}
        assert content_requests(srv.requests)
        # A mirror list naming no usable mirror is one clear error.
        srv.put("/mirrorlist", b"# nothing\nftp://127.0.0.1/x\n")
        case.fail(["pull", "origin", "elsewhere"], "mirror")
        srv.put("/mirrorlist", f"{srv.url}\n".encode())
        case.heal_and_rerun(["pull", "origin", "elsewhere"],
                            {ORIGIN_MAIN: world.c2, "remotes/origin/elsewhere": world.elsewhere})


def test_contenturl(world: World, srv: FaultServer, tmp_path: Path) -> None:
    with FaultServer(world.repo) as content:
        case = new_case(world, srv, tmp_path, options={"contenturl": content.url})
        case.succeed(["pull", "origin", "main"])
        meta_paths = {r.path for r in srv.requests}
        content_paths = {r.path for r in content.requests}
        assert not [p for p in meta_paths if p.endswith((".filez", ".dirtree", ".dirmeta",
                                                         ".commit"))], meta_paths
        assert {"/summary", "/summary.sig"} <= meta_paths
        assert any(p.endswith(".commitmeta") for p in meta_paths)
        assert any(p.endswith(".filez") for p in content_paths)
        assert "/summary" not in content_paths
        assert ls_tree(case.client, "origin:main") == ls_tree(world.repo, "main")


# --------------------------------------------------------------------------- signatures


def commitmeta_path(world: World) -> str:
    return "/" + object_rel(world.c2, "commitmeta")


@pytest.mark.parametrize(("variant", "needles"), [
    pytest.param("unknown", ("GPG verification of commit",), id="unknown-key"),
    pytest.param("tampered", ("GPG verification of commit",), id="tampered"),
    pytest.param("c1", ("GPG verification of commit",), id="other-bytes"),
    pytest.param("expired", ("GPG verification of commit", "expired"), id="expired-key"),
    pytest.param("revoked", ("GPG verification of commit", "revoked"), id="revoked-key"),
    pytest.param("missing", ("no signatures found",), id="unsigned"),
])
def test_bad_commit_signature(world: World, srv: FaultServer, tmp_path: Path, variant: str,
                              needles: tuple[str, ...]) -> None:
    case = new_case(world, srv, tmp_path)
    if variant == "missing":
        srv.add_fault(commitmeta_path(world), Fault(status=404))
    else:
        srv.add_fault(commitmeta_path(world), Fault(body=world.meta[variant]))
    case.fail(["pull", "origin", "main"], world.c2, *needles)
    assert not content_requests(srv.requests), "content fetched for an unverified commit"
    case.heal_and_rerun(["pull", "origin", "main"], {ORIGIN_MAIN: world.c2})


@pytest.mark.parametrize("variant", ["unknown+good", "tampered+good"])
def test_one_good_signature_is_enough(world: World, srv: FaultServer, tmp_path: Path,
                                      variant: str) -> None:
    case = new_case(world, srv, tmp_path)
    srv.add_fault(commitmeta_path(world), Fault(body=world.meta[variant]))
    out = case.succeed(["pull", "--json", "origin", "main"])
    assert world.good.fpr[-16:].lower() in out.lower()
    assert read_refs(case.client) == {ORIGIN_MAIN: world.c2}


def test_signed_summary_good(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path, gpg_verify_summary=True)
    case.succeed(["pull", "origin", "main"])
    assert read_refs(case.client) == {ORIGIN_MAIN: world.c2}
    # An idle second pull revalidates the cached summary with one conditional request.
    srv.clear_log()
    case.succeed(["pull", "origin", "main"])
    assert [r.status for r in srv.requests_for("/summary.sig")] == [304]
    assert not srv.requests_for("/summary")


@pytest.mark.parametrize("variant", ["tampered-sig", "flipped-summary", "html-sig",
                                     "missing-sig", "other-key"])
def test_signed_summary_bad(world: World, srv: FaultServer, tmp_path: Path,
                            variant: str) -> None:
    case = new_case(world, srv, tmp_path, gpg_verify_summary=True)
    sig = file_of(world.repo, "summary.sig")
    summary = file_of(world.repo, "summary")
    needle = "summary"
    if variant == "tampered-sig":
        srv.add_fault("/summary.sig", Fault(body=tamper_signature(sig)))
    elif variant == "flipped-summary":
        at = summary.index(bytes.fromhex(world.c2)) + 5  # inside a checksum: still parses
        srv.add_fault("/summary", Fault(body=flip_byte(summary, at)))
    elif variant == "html-sig":
        srv.add_fault("/summary.sig", Fault(body=b"<html><body>Welcome!</body></html>\n"))
    elif variant == "missing-sig":
        srv.add_fault("/summary.sig", Fault(status=404))
    else:
        srv.add_fault("/summary.sig", Fault(body=world.old_sig))
    case.fail(["pull", "origin", "main"], needle)
    assert not srv.requests_for("/" + object_rel(world.c2, "commit"))
    case.heal_and_rerun(["pull", "origin", "main"], {ORIGIN_MAIN: world.c2})


def test_replayed_older_summary_refused(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path, gpg_verify_summary=True)
    cli("--repo", case.client, "pull", "origin", "main")
    # put(), not Fault(body=): a Fault keeps the file's ETag, and the client would get a 304.
    srv.put("/summary", world.old_summary)
    srv.put("/summary.sig", world.old_sig)
    case.fail(["pull", "origin", "main"], "older")
    assert read_refs(case.client) == {ORIGIN_MAIN: world.c2}
    srv.put("/summary", file_of(world.repo, "summary"))
    srv.put("/summary.sig", file_of(world.repo, "summary.sig"))
    case.heal_and_rerun(["pull", "origin", "main"], {ORIGIN_MAIN: world.c2})


def test_timestamp_check_refuses_downgrade(world: World, srv: FaultServer,
                                           tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    cli("--repo", case.client, "pull", "origin", "main")
    point_ref(srv, "main", world.c1)
    srv.clear_log()
    case.fail(["pull", "--timestamp-check", "origin", "main"], "downgrade", world.c1)
    fetched = [r.path for r in srv.requests]
    assert "/" + object_rel(world.c1, "commit") in fetched
    assert not [p for p in fetched if p.endswith((".filez", ".dirtree", ".dirmeta"))], fetched
    case.heal_and_rerun(["pull", "--timestamp-check", "origin", "main"],
                        {ORIGIN_MAIN: world.c2})


def test_ref_binding_refused(world: World, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(world, srv, tmp_path)
    point_ref(srv, "main", world.elsewhere)
    case.fail(["pull", "origin", "main"], "bound", "elsewhere")
    assert not content_requests(srv.requests)
    case.heal_and_rerun(["pull", "origin", "main"], {ORIGIN_MAIN: world.c2})


# --------------------------------------------------------------------------- SIGKILL and resume


@pytest.mark.parametrize("mode", ["archive", "bare-user"])
def test_resume_after_sigkill(world: World, srv: FaultServer, tmp_path: Path, mode: str) -> None:
    case = new_case(world, srv, tmp_path, mode=mode)
    gate = gate_content(srv, free=5)
    proc = start_pull(case.client, ["pull", "origin", "main"], case.env)
    try:
        assert wait_until(lambda: len(staged_checksums(case.client)) >= 5, timeout=30), \
            "the pull did not stage the first objects"
        time.sleep(0.1)
    finally:
        sigkill(proc)
        gate.set()
    stored = staged_checksums(case.client)
    assert stored
    assert read_refs(case.client) == {}
    fsck_both(case.client)
    srv.clear_log()
    case.heal_and_rerun(["pull", "origin", "main"], {ORIGIN_MAIN: world.c2})
    refetched = checksums_in(srv.requests, "filez")
    assert refetched, "the rerun fetched nothing"
    assert not refetched & stored, f"refetched objects stored before the kill: {refetched & stored}"
    assert ls_tree(case.client, "origin:main") == ls_tree(world.repo, "main")
    assert not list(case.client.glob("tmp/staging-*")), "staging left after a good pull"


def kill_trials(world: World, tmp_path: Path, trials: int, seed: int, *,
                max_kills: int = 1) -> None:
    """``trials`` fresh clients; each pull is SIGKILLed after a random number of requests
    (1 to ``max_kills`` times); after each kill the repo must fsck with the ref unmoved, and
    a plain rerun must then complete it."""
    rng = random.Random(seed)
    env = pyostree_env(tmp_path)
    interrupted = 0
    with FaultServer(world.repo) as server:
        server.add_fault(lambda p: p.startswith("/objects/"), Fault(delay=0.005))
        for trial in range(trials):
            mode = "archive" if trial % 2 == 0 else "bare-user"
            client = make_client(tmp_path / f"c{trial}", server.url, mode=mode,
                                 gpg_verify=True, keys=world.trusted)
            for _ in range(1 + rng.randrange(max_kills)):
                server.clear_log()
                proc = start_pull(client, ["pull", "--depth=1", "origin", "main"], env)
                want = rng.randrange(1, 45)
                wait_until(lambda p=proc, n=want: p.poll() is not None  # type: ignore[misc]
                           or len(server.wait_for_requests(0)) >= n, timeout=30)
                time.sleep(rng.random() * 0.03)
                sigkill(proc)
                interrupted += proc.returncode == -9
                refs = read_refs(client)
                # The ref moves only once everything is stored (the kill may still land in
                # the clean-up after that, as with libostree).
                assert refs in ({}, {ORIGIN_MAIN: world.c2}), refs
                if refs:
                    for csum in (world.c2, world.c1):
                        assert not missing_objects(client, world.repo, csum)
                fsck_both(client)
            cli("--repo", client, "pull", "--depth=1", "origin", "main")
            assert read_refs(client) == {ORIGIN_MAIN: world.c2}
            fsck_both(client)
            assert ls_tree(client, world.c1) == ls_tree(world.repo, world.c1)
    print(f"{interrupted} of the kills interrupted a running pull")
    assert interrupted >= trials // 2, "the kills came too late to test anything"


def test_sigkill_loop(world: World, tmp_path: Path) -> None:
    kill_trials(world, tmp_path, 3, seed=1)


@pytest.mark.slow
def test_sigkill_loop_long(world: World, tmp_path: Path) -> None:
    kill_trials(world, tmp_path, KILL_TRIALS, seed=int(os.environ.get("PYOSTREE_KILL_SEED", "2")),
                max_kills=2)


def test_cached_copy_of_client(world: World, srv: FaultServer, tmp_path: Path) -> None:
    """A repository copied mid-pull (staging and all) still completes: staging is re-verified."""
    case = new_case(world, srv, tmp_path)
    gate = gate_content(srv, free=3)
    proc = start_pull(case.client, ["pull", "origin", "main"], case.env)
    try:
        assert wait_until(lambda: len(staged_checksums(case.client)) >= 3)
    finally:
        sigkill(proc)
        gate.set()
    twin = copy_repo(case.client, tmp_path / "twin")
    staged = next(twin.glob("tmp/staging-*"))
    victim = next(p for p in staged.glob("??/*") if p.name.endswith((".file", ".filez")))
    victim.write_bytes(flip_byte(victim.read_bytes(), 20))
    srv.clear_faults()
    cli("--repo", twin, "pull", "origin", "main")
    fsck_both(twin)
    assert ls_tree(twin, "origin:main") == ls_tree(world.repo, "main")
