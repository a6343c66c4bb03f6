"""prune, fsck, refs and show options, judged by the real ostree (2022.7).

Each option runs with the real ``ostree`` and with pyostree on identical copies of a repository
the real ``ostree commit`` made (several branches and histories, fixed timestamps, a remote ref,
an orphan commit, static deltas); what they print and what they leave on disk (every file
under objects/, deltas/, refs/ and state/) must be the same. Where pyostree deliberately differs
(documented in docs/user-guide.md) the test says what it checks instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyostree import gvariant as gv
from pyostree.core import ObjectType
from pyostree.formats.objects import Commit
from pyostree.repo import Repo

from .corehelpers import needs_ostree, ostree, run_cli, run_pyostree_process

pytestmark = [pytest.mark.interop, needs_ostree]

# main: five commits; dev: three of its own; origin:main is main^^; an orphan commit has no ref.
MAIN_TS = [f"2021-0{i}-01T00:00:00Z" for i in range(1, 6)]
DEV_TS = [f"2021-0{i}-15T00:00:00Z" for i in range(2, 5)]


def _write(root: Path, files: dict[str, str]) -> Path:
    if root.exists():
        shutil.rmtree(root)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _commit(repo: Path, tree: Path, *args: str) -> str:
    return str(ostree(f"--repo={repo}", "commit", "--owner-uid=0", "--owner-gid=0", *args,
                      tree).stdout.strip())


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """An archive repository with branch histories, a remote ref, an orphan, deltas, detached
    metadata and a commitpartial marker; returns its path and the commits."""
    base = tmp_path_factory.mktemp("maint")
    repo = base / "repo"
    ostree(f"--repo={repo}", "init", "--mode=archive")
    tree = base / "tree"
    main: list[str] = []
    for i, ts in enumerate(MAIN_TS):
        files = {"usr/share/common.txt": "shared by every commit\n",
                 "usr/lib/version": f"main {i}\n", f"usr/lib/added-{i}.txt": "x" * (400 * i),
                 "etc/config": f"conf {i // 2}\n"}
        _write(tree, files)
        main.append(_commit(repo, tree, "-b", "main", f"--timestamp={ts}",
                            f"--subject=main {i}"))
    dev: list[str] = []
    for i, ts in enumerate(DEV_TS):
        _write(tree, {"usr/share/common.txt": "shared by every commit\n",
                      "dev/version": f"dev {i}\n" * (i + 1)})
        dev.append(_commit(repo, tree, "-b", "dev", f"--timestamp={ts}", f"--subject=dev {i}"))
    _write(tree, {"orphan/only-here": "orphan\n"})
    orphan = _commit(repo, tree, "--orphan", "--timestamp=2020-06-01T00:00:00Z")
    ostree(f"--repo={repo}", "refs", "--create=origin:main", main[2])
    ostree(f"--repo={repo}", "static-delta", "generate", "main")
    ostree(f"--repo={repo}", "static-delta", "generate", f"--from={main[1]}", f"--to={main[2]}")
    ostree(f"--repo={repo}", "static-delta", "generate", "--empty", f"--to={dev[1]}")
    Repo.open(repo).write_detached_metadata(main[0], {"note": gv.Variant("s", "old")})
    (repo / "state" / f"{main[1]}.commitpartial").write_bytes(b"")
    return {"repo": repo, "main": main, "dev": dev, "orphan": orphan}


def _copy(src: object, dest: Path) -> Path:
    assert isinstance(src, Path)
    shutil.copytree(src, dest, symlinks=True)
    return dest


def disk_state(repo: Path) -> dict[str, str]:
    """Every file under objects/, deltas/, refs/ and state/: its size, or for a symlink its
    target, or for a ref its contents; plus whether core.tombstone-commits is on."""
    out: dict[str, str] = {}
    for sub in ("objects", "deltas", "refs", "state"):
        for dirpath, _, filenames in os.walk(repo / sub):
            for name in filenames:
                path = Path(dirpath) / name
                rel = str(path.relative_to(repo))
                if path.is_symlink():
                    out[rel] = "-> " + os.readlink(path)
                elif sub == "refs":
                    out[rel] = path.read_text()
                else:
                    out[rel] = str(path.stat().st_size)
    out["tombstone-commits"] = str(Repo.open(repo).config.get_bool("core", "tombstone-commits"))
    return out


def both(tmp_path: Path, src: object, *args: str) -> tuple[Path, Path, tuple[int, bytes, str],
                                                          subprocess.CompletedProcess[bytes]]:
    """Run ``ostree ARGS`` and ``pyostree ARGS`` on two copies of ``src``."""
    theirs, ours = _copy(src, tmp_path / "o"), _copy(src, tmp_path / "p")
    expected = ostree(f"--repo={theirs}", *args, check=False, text=False)
    got = run_cli(f"--repo={ours}", *args)
    return theirs, ours, got, expected


def progressless(out: bytes) -> bytes:
    """ostree fsck's stdout less its progress lines (printed at most once a second)."""
    return b"".join(line for line in out.splitlines(keepends=True)
                    if not line.startswith(b"fsck objects ("))


def fails_once(process: bool, *args: str | Path) -> tuple[int, str]:
    """Run pyostree (as a real process, or in-process): (exit code, stderr)."""
    if not process:
        code, _, err = run_cli(*args)
        return code, err
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # share compiled bytecode between the processes
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(),
                                              f"pyostree-test-pycache-{os.getuid()}")
    proc = run_pyostree_process(*args, env=env)
    return proc.returncode, proc.stderr


def assert_one_error(result: tuple[int, str], needle: str) -> None:
    code, stderr = result
    assert code != 0
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert needle in lines[0], (needle, lines[0])


# ------------------------------------------------------------------------------------- prune

PRUNES = [
    [], ["--refs-only"], ["--refs-only", "--depth=0"], ["--refs-only", "--depth=1"],
    ["--refs-only", "--depth=1", "--no-prune"], ["--depth=0"], ["--refs-only", "--depth=-7"],
    ["--keep-younger-than=2021-03-10 00:00:00 +0000"], ["--keep-younger-than=March 10 2021"],
    ["--keep-younger-than=@1614556800"], ["--keep-younger-than=1 week ago"],
    ["--keep-younger-than=2021-03-10", "--no-prune"],
    ["--only-branch=main", "--depth=0"], ["--only-branch=main", "--only-branch=dev", "--depth=1"],
    ["--only-branch=dev", "--depth=0"], ["--retain-branch-depth=main=1", "--depth=0"],
    ["--only-branch=dev", "--retain-branch-depth=main=2", "--depth=0"],
    ["--keep-younger-than=2021-04-01", "--retain-branch-depth=dev=-1"],
    ["--retain-branch-depth=dev=0", "--retain-branch-depth=dev=1 trailing", "--depth=0"],
    ["--commit-only", "--refs-only", "--depth=0"], ["--commit-only", "--only-branch=main",
                                                    "--depth=1"],
    ["--commit-only", "--keep-younger-than=2021-03-10"], ["--commit-only"],
    ["--delete-commit=ORPHAN"], ["--delete-commit=MAIN3", "--refs-only"],
    ["--static-deltas-only", "--delete-commit=MAIN4"],
]


@pytest.mark.parametrize("args", PRUNES, ids=[" ".join(a) or "plain" for a in PRUNES])
def test_prune_matches_ostree(args: list[str], history: dict[str, object],
                              tmp_path: Path) -> None:
    main = history["main"]
    assert isinstance(main, list)
    names = {"ORPHAN": str(history["orphan"]), "MAIN3": main[1], "MAIN4": main[4]}
    args = [re.sub(r"ORPHAN|MAIN\d", lambda m: names[m[0]], a) for a in args]
    theirs, ours, (code, out, err), expected = both(tmp_path, history["repo"], "prune", *args)
    assert (code, err) == (expected.returncode, ""), err
    assert out == expected.stdout
    assert disk_state(ours) == disk_state(theirs)
    ostree(f"--repo={ours}", "fsck")


@pytest.mark.parametrize("args", [
    ["--only-branch=origin:main", "--depth=0"],
    ["--retain-branch-depth=main=3", "--retain-branch-depth=origin:main=-1", "--depth=0"],
], ids=["only-branch", "retain"])
def test_prune_keeps_every_refs_full_depth(args: list[str], history: dict[str, object],
                                           tmp_path: Path) -> None:
    """origin:main is main^^; in both cases main (the first: as a ref --only-branch leaves
    alone) or origin:main (the second) must keep all its history. ostree follows each ref only
    until it meets a commit it already kept, so when it takes the ref with the shorter depth
    first it deletes main^^^ and main^^^^ (it does in the first case); pyostree keeps every
    ref's whole depth, whatever the order: what it keeps is a superset of what ostree keeps."""
    theirs, ours, (code, _, err), _ = both(tmp_path, history["repo"], "prune", *args)
    assert code == 0, err
    main = history["main"]
    assert isinstance(main, list)
    repo = Repo.open(ours)
    assert all(repo.has_object(ObjectType.COMMIT, c) for c in main)
    assert set(disk_state(theirs).items()) <= set(disk_state(ours).items())
    ostree(f"--repo={ours}", "fsck")


@pytest.mark.parametrize("process,args,needle", [
    (True, ["--keep-younger-than=the day after never"], "Could not parse 'the day after never'"),
    (False, ["--keep-younger-than=2021-02-30"], "Could not parse '2021-02-30'"),
    (True, ["--retain-branch-depth=main=BACON"], "Invalid depth BACON"),
    (False, ["--retain-branch-depth=main"], "Invalid value main, must specify BRANCH=DEPTH"),
    (False, ["--only-branch=BACON"], "Refspec 'BACON' not found"),
    (False, ["--static-deltas-only"], "--static-deltas-only requires --delete-commit"),
], ids=["date", "bad-day", "depth", "no-depth", "branch", "deltas-only"])
def test_prune_errors_delete_nothing(process: bool, args: list[str], needle: str,
                                     history: dict[str, object], tmp_path: Path) -> None:
    """ostree fails the same way; pyostree does too, with every check made before anything is
    deleted (here with --delete-commit of the orphan, which ostree deletes before it reads
    the date or the depths)."""
    extra = [] if "--static-deltas-only" in args else [f"--delete-commit={history['orphan']}"]
    repo = _copy(history["repo"], tmp_path / "p")
    before = disk_state(repo)
    assert_one_error(fails_once(process, f"--repo={repo}", "prune", "--refs-only", *extra,
                                *args), needle)
    assert disk_state(repo) == before
    real = ostree(f"--repo={_copy(history['repo'], tmp_path / 'o')}", "prune", *args,
                  check=False)
    assert real.returncode != 0 and needle in real.stderr


# ------------------------------------------------------------------------------------- fsck


def complete(history: dict[str, object], dest: Path) -> Path:
    """A copy of the history without its commitpartial marker: pyostree's fsck says "Commit X
    is partial" (it checks the objects a partial commit has), ostree "1 partial commits not
    verified"."""
    repo = _copy(history["repo"], dest)
    for marker in (repo / "state").glob("*.commitpartial"):
        marker.unlink()
    return repo


def test_fsck_verify_bindings_matches_ostree(history: dict[str, object], tmp_path: Path) -> None:
    # Every ref's commit is bound to it (origin:main as "main"): both pass.
    src = complete(history, tmp_path / "src")
    _, _, (code, out, err), expected = both(tmp_path / "ok", src, "fsck", "--verify-bindings")
    assert (code, err, out) == (expected.returncode, "", progressless(expected.stdout))
    assert code == 0
    # A ref whose commit is bound to another ref fails --verify-bindings, with ostree's line.
    ostree(f"--repo={src}", "refs", "--create=copy", "dev")
    _, _, (code, out, err), expected = both(tmp_path / "bind", src, "fsck", "--verify-bindings")
    assert code != 0 and expected.returncode != 0
    assert out == progressless(expected.stdout) == b"Validating refs...\n"
    assert err == expected.stderr.decode()
    assert "no requested ref \u2018copy\u2019 in ref binding metadata (\u2018dev\u2019)" in err


def test_fsck_verify_back_refs_matches_ostree(history: dict[str, object],
                                              tmp_path: Path) -> None:
    """The older commits of a branch are bound to a ref that now points elsewhere: both fail
    at the first such commit (which one ostree meets first depends on its hash table)."""
    src = complete(history, tmp_path / "src")
    _, _, (code, out, err), expected = both(tmp_path / "a", src, "fsck", "--verify-back-refs")
    assert code != 0 and expected.returncode != 0
    assert out == progressless(expected.stdout)
    pattern = (r"error: Ref \u2018(main|dev)\u2019 in bindings for commit [0-9a-f]{64} does not "
               r"resolve to that commit\n")
    assert re.fullmatch(pattern, err) and re.fullmatch(pattern, expected.stderr.decode())
    # With history pruned to the ref's commits, both pass and print the same.
    ostree(f"--repo={src}", "prune", "--refs-only", "--depth=0")
    ostree(f"--repo={src}", "refs", "--delete", "origin:main")
    ostree(f"--repo={src}", "prune", "--refs-only", "--depth=0")
    _, _, (code, out, err), expected = both(tmp_path / "b", src, "fsck", "--verify-back-refs")
    assert (code, err) == (expected.returncode, "") == (0, "")
    assert out == progressless(expected.stdout)


def test_fsck_add_tombstones(history: dict[str, object], tmp_path: Path) -> None:
    """ostree 2022.7 records the commit whose parent is missing and then deletes that commit
    (leaving the ref on a missing commit); pyostree adds the tombstone for the missing parent
    and deletes nothing. Both turn on core.tombstone-commits and print one line a tombstone."""
    src = _copy(history["repo"], tmp_path / "src")
    ostree(f"--repo={src}", "prune", "--refs-only", "--depth=0")
    theirs, ours, (code, out, err), expected = both(tmp_path, src, "fsck", "--add-tombstones")
    assert (code, err) == (0, "") and expected.returncode == 0
    repo = Repo.open(ours)
    commits = {c for c, t in repo.iter_objects() if t is ObjectType.COMMIT}
    parents = sorted({p for c in commits if (p := repo.load_commit(c).parent) not in commits
                      and p is not None})
    assert len(parents) == 3  # main, origin:main and dev each lost their history
    lines = [f"Adding tombstone for commit {p}\n".encode() for p in parents]
    assert [ln for ln in out.splitlines(keepends=True) if ln.startswith(b"Adding")] == lines
    assert len([ln for ln in expected.stdout.splitlines() if ln.startswith(b"Adding")]) == 3
    assert all(repo.has_object(ObjectType.TOMBSTONE_COMMIT, p) for p in parents)
    assert {c for c, t in repo.iter_objects() if t is ObjectType.COMMIT} == commits
    assert disk_state(ours)["tombstone-commits"] == disk_state(theirs)["tombstone-commits"] \
        == "True"
    ostree(f"--repo={ours}", "fsck")
    # Run again: nothing more to add.
    code, out, _ = run_cli(f"--repo={ours}", "fsck", "--add-tombstones")
    assert code == 0 and b"Adding" not in out


def test_fsck_all_reports_every_corruption(history: dict[str, object], tmp_path: Path) -> None:
    src = _copy(history["repo"], tmp_path / "src")
    corrupt = []
    for path in sorted(src.glob("objects/*/*.filez"), key=lambda p: -p.stat().st_size)[:2]:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x55
        path.write_bytes(bytes(data))
        corrupt.append(path.parent.name + path.name.partition(".")[0])
    for flags, count in (([], 1), (["--all"], 2), (["-a"], 2)):
        _, _, (code, _, err), expected = both(tmp_path / str(flags), src, "fsck", *flags)
        assert code != 0 and expected.returncode != 0
        for text in (err, expected.stderr.decode()):
            named = set(re.findall(r"fsck content object ([0-9a-f]{64})|corrupted file object "
                                   r"([0-9a-f]{64})", text))
            found = {a or b for a, b in named}
            assert len(found) == count and found <= set(corrupt), text


# ------------------------------------------------------------------------------------- refs


def _alias_listing(repo: Path, tool: str, *args: str) -> list[str]:
    if tool == "ostree":
        return sorted(ostree(f"--repo={repo}", "refs", *args).stdout.splitlines())
    code, out, err = run_cli(f"--repo={repo}", "refs", *args)
    assert code == 0, err
    return sorted(out.decode().splitlines())


def test_aliases_interoperate(history: dict[str, object], tmp_path: Path) -> None:
    theirs, ours = _copy(history["repo"], tmp_path / "o"), _copy(history["repo"], tmp_path / "p")
    for alias, target in (("stable", "main"), ("sub/dir/nested", "stable"), ("d", "dev")):
        ostree(f"--repo={theirs}", "refs", f"--create={alias}", "--alias", target)
        code, _, err = run_cli(f"--repo={ours}", "refs", f"--create={alias}", "--alias", target)
        assert (code, err) == (0, "")
    assert disk_state(ours) == disk_state(theirs)  # the same relative symlinks
    for args in (["--alias"], ["--alias", "sub"], ["--alias", "main"], ["--alias", "nope"],
                 [], ["-A", "sub/dir"]):
        for repo in (theirs, ours):  # each tool reads what the other wrote, the same way
            assert _alias_listing(repo, "ostree", *args) == _alias_listing(repo, "pyostree", *args)
    main = ostree(f"--repo={theirs}", "rev-parse", "main").stdout
    for repo in (theirs, ours):
        assert ostree(f"--repo={repo}", "rev-parse", "sub/dir/nested").stdout == main
        assert run_cli(f"--repo={repo}", "rev-parse", "sub/dir/nested")[1].decode() == main
    # The ref an alias names cannot be deleted; re-pointing an alias needs no --force.
    for args in (["--delete", "main"], ["--create=stable", "--alias", "dev"],
                 ["--create=dev", "main"], ["--create=dev", "--force", "main"],
                 ["--delete", "--alias", "sub"], ["--delete", "d"], ["--delete", "main"]):
        real = ostree(f"--repo={theirs}", "refs", *args, check=False)
        code, out, err = run_cli(f"--repo={ours}", "refs", *args)
        assert (code != 0, out.decode(), err) == (real.returncode != 0, real.stdout, real.stderr)
        assert disk_state(ours) == disk_state(theirs), args
    ostree(f"--repo={ours}", "fsck")


@pytest.mark.parametrize("process,setup,args,needle", [
    (True, [["--create=al", "--alias", "main"]], ["--create=main", "--alias", "--force", "al"],
     "loop (main -> al -> main)"),
    (False, [["--create=al", "--alias", "main"], ["--create=al2", "--alias", "al"]],
     ["--create=al", "--alias", "al2"], "loop (al -> al2 -> al)"),
    (False, [], ["--create=main", "--alias", "--force", "main"], "loop (main -> main)"),
    (True, [], ["--create=al", "--alias", "missing"],
     "Cannot create alias to non-existent ref: missing"),
    (False, [], ["--create=origin:x", "--alias", "main"],
     "Cannot create alias to remote ref: origin"),
], ids=["loop", "loop-repoint", "self", "missing", "remote"])
def test_alias_errors(process: bool, setup: list[list[str]], args: list[str], needle: str,
                      history: dict[str, object], tmp_path: Path) -> None:
    repo = _copy(history["repo"], tmp_path / "p")
    for step in setup:
        assert run_cli(f"--repo={repo}", "refs", *step)[0] == 0
    before = disk_state(repo)
    assert_one_error(fails_once(process, f"--repo={repo}", "refs", *args), needle)
    assert disk_state(repo) == before
    ostree(f"--repo={repo}", "refs")  # still readable: no loop was made


def test_refs_collections(history: dict[str, object], tmp_path: Path) -> None:
    repo = history["repo"]
    assert ostree(f"--repo={repo}", "refs", "-c").stdout == ""  # no collection ID, no mirrors
    assert run_cli(f"--repo={repo}", "refs", "-c") == (0, b"", "")
    coll = tmp_path / "coll"
    ostree(f"--repo={coll}", "init", "--mode=archive", "--collection-id=org.example.Os")
    ostree(f"--repo={coll}", "commit", "-b", "main", "--timestamp=2021-01-01T00:00:00Z",
           "--tree=dir=" + str(_write(tmp_path / "t", {"a": "a\n"})))
    ostree(f"--repo={coll}", "refs", "--collections", "--create=org.example.Mirror:m/x", "main")
    code, out, err = run_cli(f"--repo={coll}", "refs", "--collections",
                             "--create=org.example.Mirror:m/y", "main")
    assert (code, err) == (0, "")
    for args in (["-c"], ["-c", "org.example.Mirror"], ["-c", "org.example.Os"]):
        real = ostree(f"--repo={coll}", "refs", *args).stdout
        assert sorted(run_cli(f"--repo={coll}", "refs", *args)[1].decode().splitlines()) == \
            sorted(real.splitlines())
    assert run_cli(f"--repo={coll}", "refs", "-c", "--delete", "org.example.Mirror")[0] == 0
    assert ostree(f"--repo={coll}", "refs", "-c").stdout == "(org.example.Os, main)\n"
    _, _, (code, out, err), expected = both(tmp_path / "fsck", coll, "fsck", "--verify-bindings")
    assert (code, out) == (expected.returncode, progressless(expected.stdout))


# ------------------------------------------------------------------------------------- show


@pytest.fixture(scope="module")
def sized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A commit with ostree.sizes (``--generate-sizes``) and one with related objects."""
    base = tmp_path_factory.mktemp("sizes")
    repo = base / "repo"
    ostree(f"--repo={repo}", "init", "--mode=archive")
    files = {f"f{i}": os.urandom(300 * i).hex() for i in range(12)}
    files["empty"] = ""
    ostree(f"--repo={repo}", "commit", "-b", "main", "--generate-sizes",
           "--timestamp=2021-01-01T00:00:00Z", "--tree=dir=" + str(_write(base / "t", files)))
    r = Repo.open(repo)
    head = r.resolve_rev("main") or ""
    commit = r.load_commit(head)
    related = Commit(metadata={}, parent=None, related=(("debug", head), ("x-other", head[::-1])),
                     subject="related", body="", timestamp=1609459200, root_tree=commit.root_tree,
                     root_meta=commit.root_meta)
    data = related.to_bytes()
    path = r.object_path(ObjectType.COMMIT, related.checksum)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    r.set_ref("related", related.checksum)
    yield repo


def test_show_options_match_ostree(sized: Path, tmp_path: Path) -> None:
    repo = Repo.open(sized)
    head = repo.load_commit(repo.resolve_rev("main") or "")
    dirmeta = repo.object_path(ObjectType.DIRMETA, head.root_meta)
    commit_file = repo.object_path(ObjectType.COMMIT, repo.resolve_rev("related") or "")
    cases = [["--print-sizes", "main"], ["--print-related", "related"],
             ["--print-related", "main"], ["--print-sizes", "related"],
             ["--print-variant-type=(uuua(ayay))", str(dirmeta)],
             ["--print-variant-type=(a{sv}aya(say)sstayay)", str(commit_file)]]
    for args in cases:
        expected = ostree(f"--repo={sized}", "show", *args, check=False, text=False)
        code, out, err = run_cli(f"--repo={sized}", "show", *args)
        assert (code != 0, out) == (expected.returncode != 0, expected.stdout), args
        assert err.encode() == expected.stderr, args
    # "needed" counts what the repository lacks: delete two objects and ask again.
    copy = _copy(sized, tmp_path / "copy")
    for path in sorted(copy.glob("objects/*/*.filez"))[:2]:
        path.unlink()
    expected = ostree(f"--repo={copy}", "show", "--print-sizes", "main", text=False)
    assert run_cli(f"--repo={copy}", "show", "--print-sizes", "main") == (0, expected.stdout, "")
    assert b"(needed/total): 2/" in expected.stdout
