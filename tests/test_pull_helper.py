"""The pull's helper process (:mod:`pyostree.pullhelper`), through real ``pyostree`` processes
against a real HTTP server: it fetches a share of the content objects, its errors reach the
user as one line, and losing it fails the pull cleanly with the repository intact.

In-process pulls (``cli()`` under pytest-xdist, which runs a thread) never fork a helper, so
the other pull tests cover the single-process path too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .httpserver import Fault, FaultServer
from .pullhelpers import (
    PullCase,
    assert_one_error,
    commit,
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
    read_refs,
    start_pull,
    tree_objects,
    wait_until,
    write_tree,
)

two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                              reason="the helper is forked only with two CPUs or more")
pytestmark = [pytest.mark.interop, needs_ostree, two_cpus]

class Served:
    def __init__(self, base: Path) -> None:
        self.repo = init_repo(base / "srv")
        # "small": fewer content objects than the helper's backlog, so the parent hands it
        # every one; "big": many more, so the parent fetches some itself.
        self.small = commit(self.repo, write_tree(base / "small", 1, nfiles=12), "small")
        self.big = commit(self.repo, write_tree(base / "big", 1, nfiles=400), "big")
        self.small_files = len(tree_objects(self.repo, self.small)["filez"])
        self.big_files = len(tree_objects(self.repo, self.big)["filez"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    return Served(tmp_path_factory.mktemp("helperworld"))


@pytest.fixture
def srv(served: Served) -> Iterator[FaultServer]:
    with FaultServer(served.repo) as server:
        yield server


def new_case(served: Served, srv: FaultServer, tmp_path: Path, mode: str = "archive"
             ) -> PullCase:
    client = make_client(tmp_path / "client", srv.url, mode=mode)
    return PullCase(tmp_path, client, srv, watch=[served.repo])


def pull_json(case: PullCase, ref: str, **env: str) -> dict[str, object]:
    case.env.update(env)
    out = case.succeed(["pull", "--json", "origin", ref])
    result: dict[str, object] = json.loads(out)
    return result


@pytest.mark.parametrize("mode", ["archive", "bare-user"])
def test_helper_fetches_a_share(served: Served, srv: FaultServer, tmp_path: Path,
                                mode: str) -> None:
    case = new_case(served, srv, tmp_path, mode)
    result = pull_json(case, "big")
    fetched, by_helper = result["objects-fetched"], result["objects-fetched-by-helper"]
    assert fetched == served.big_files
    assert isinstance(by_helper, int) and 0 < by_helper < served.big_files, result
    assert ls_tree(case.client, "origin:big") == ls_tree(served.repo, "big")
    assert not list(case.client.glob("tmp/staging-*")), "staging left after a good pull"
    fsck_both(case.client)


def test_helper_takes_every_object_of_a_small_pull(served: Served, srv: FaultServer,
                                                   tmp_path: Path) -> None:
    case = new_case(served, srv, tmp_path)
    result = pull_json(case, "small")
    assert result["objects-fetched"] == served.small_files
    assert result["objects-fetched-by-helper"] == served.small_files
    assert ls_tree(case.client, "origin:small") == ls_tree(served.repo, "small")


def test_helper_turned_off(served: Served, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(served, srv, tmp_path)
    result = pull_json(case, "big", PYOSTREE_PULL_HELPER="0")
    assert result["objects-fetched"] == served.big_files
    assert result["objects-fetched-by-helper"] == 0
    assert ls_tree(case.client, "origin:big") == ls_tree(served.repo, "big")


def test_no_helper_work_with_a_static_delta(served: Served, srv: FaultServer,
                                           tmp_path: Path) -> None:
    """A delta brings the content itself: the helper is stopped before the parts are applied
    and fetches nothing."""
    repo = tmp_path / "srv"
    shutil.copytree(served.repo, repo, symlinks=True)
    ostree(f"--repo={repo}", "static-delta", "generate", "--empty", f"--to={served.big}")
    ostree(f"--repo={repo}", "summary", "-u")
    with FaultServer(repo) as delta_srv:
        client = make_client(tmp_path / "client", delta_srv.url, mode="bare-user")
        case = PullCase(tmp_path, client, delta_srv, watch=[repo])
        result = pull_json(case, "big")
    assert result["deltas"] and result["objects-fetched-by-helper"] == 0, result
    assert ls_tree(client, "origin:big") == ls_tree(served.repo, "big")


def test_corrupt_object_found_by_the_helper(served: Served, srv: FaultServer,
                                            tmp_path: Path) -> None:
    """Every content object of the small pull goes to the helper (the test above), so the
    helper is the one that finds this one corrupt."""
    case = new_case(served, srv, tmp_path)
    victim = tree_objects(served.repo, served.small)["filez"][3]
    rel = object_rel(victim, "filez")
    srv.add_fault("/" + rel, Fault(body=flip_byte(file_of(served.repo, rel))))
    case.fail(["pull", "origin", "small"], victim)
    assert read_refs(case.client) == {}
    case.heal_and_rerun(["pull", "origin", "small"], {"remotes/origin/small": served.small})


def helper_pid(parent: int) -> int | None:
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def test_helper_killed_mid_pull(served: Served, srv: FaultServer, tmp_path: Path) -> None:
    case = new_case(served, srv, tmp_path)
    gate = gate_content(srv, free=40)
    proc = start_pull(case.client, ["pull", "origin", "big"], case.env)
    try:
        assert wait_until(lambda: helper_pid(proc.pid) is not None), "no helper was forked"
        assert wait_until(lambda: len(srv.requests) > 45), "the pull stalled"
        pid = helper_pid(proc.pid)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        gate.set()
        _, err = proc.communicate(timeout=60)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_one_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", err.decode()),
                     "helper process")
    assert read_refs(case.client) == {}
    fsck_both(case.client)
    assert helper_pid(proc.pid) is None
    case.heal_and_rerun(["pull", "origin", "big"], {"remotes/origin/big": served.big})
