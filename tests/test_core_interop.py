"""The real ostree (2022.7) judges pyostree, and pyostree reads what ostree writes.

* pyostree commits give the very checksums ``ostree commit`` gives, and pass ``ostree fsck``;
* ostree repositories pass ``pyostree fsck`` and check out identically with both tools;
* the read-only commands print exactly what ostree prints.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyostree import gvariant as gv
from pyostree.core import ObjectType
from pyostree.maintenance import fsck
from pyostree.repo import Repo

from .corehelpers import (
    IS_ROOT,
    local_dir,
    make_tree,
    needs_ostree,
    ostree,
    run_cli,
    snapshot,
    user_xattrs_ok,
)

pytestmark = [pytest.mark.interop, needs_ostree]

TS = "2024-03-04T05:06:07Z"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A module directory on a filesystem with user.* xattrs when one is available."""
    with local_dir(tmp_path_factory.mktemp("interop")) as base:
        yield base


@pytest.fixture(scope="module")
def xattrs(work: Path) -> bool:
    return user_xattrs_ok(work)


@pytest.fixture(scope="module")
def tree(work: Path, xattrs: bool) -> Path:
    return make_tree(work / "tree", xattrs=xattrs)


@pytest.fixture(scope="module")
def tree2(work: Path, tree: Path) -> Path:
    """The tree with some changes, for a second commit."""
    dest = work / "tree2"
    shutil.copytree(tree, dest, symlinks=True)
    (dest / "readme.txt").write_bytes(b"changed\n")
    (dest / "new-file").write_bytes(b"new\n")
    shutil.rmtree(dest / "a" / "b")
    return dest


MODES_FOR_COMMIT = [
    ("archive", []),
    ("archive", ["--owner-uid=42", "--owner-gid=43", "--add-metadata-string=version=3.1",
                 "--add-metadata-string=x=y", "--add-metadata=n=[uint32 1, 2]",
                 "--add-metadata=t=(true, 'x', 1.5)", "--bind-ref=zzz", "--bind-ref=other",
                 "-m", "a body\n\nwith lines\n"]),
    ("archive", ["--canonical-permissions"]),
    ("archive", ["--no-bindings", "--no-xattrs"]),
    ("bare-user", []),
    ("bare-user", ["--canonical-permissions"]),
    ("bare-user-only", []),
    pytest.param("bare", [], marks=pytest.mark.skipif(not IS_ROOT, reason="bare needs root")),
    pytest.param("bare", ["--owner-uid=7", "--owner-gid=8"],
                 marks=pytest.mark.skipif(not IS_ROOT, reason="bare needs root")),
]


@pytest.mark.parametrize(("mode", "opts"), MODES_FOR_COMMIT)
def test_commit_checksums_match_ostree(mode: str, opts: list[str], work: Path, tree: Path,
                                       tree2: Path, tmp_path: Path) -> None:
    if mode != "archive" and not user_xattrs_ok(work):
        pytest.skip("needs user.* xattrs")
    theirs = tmp_path / "theirs"
    ours = Path(tempfile.mkdtemp(dir=work, prefix="ours-"))
    shutil.rmtree(ours)
    ostree(f"--repo={theirs}", "init", f"--mode={mode}")
    assert run_cli(f"--repo={ours}", "init", f"--mode={mode}")[0] == 0
    args = ["commit", "-b", "main", f"--timestamp={TS}", "-s", "subject", *opts]
    for src in (tree, tree2):  # the second commit has the first as parent
        expected = ostree(f"--repo={theirs}", *args, src).stdout.strip()
        code, out, err = run_cli(f"--repo={ours}", *args, src)
        assert (code, err) == (0, "")
        assert out.decode().strip() == expected
    assert Repo.open(ours).load_commit(expected).parent is not None
    ostree(f"--repo={ours}", "fsck")
    shutil.rmtree(ours)


def test_orphan_commit_matches_ostree(tmp_path: Path, tree: Path) -> None:
    ostree(f"--repo={tmp_path / 'o'}", "init", "--mode=archive")
    run_cli(f"--repo={tmp_path / 'p'}", "init", "--mode=archive")
    args = ["commit", "--orphan", f"--timestamp={TS}", "--tree=dir=" + str(tree / "a")]
    expected = ostree(f"--repo={tmp_path / 'o'}", *args).stdout.strip()
    assert run_cli(f"--repo={tmp_path / 'p'}", *args)[1].decode().strip() == expected


@pytest.fixture(scope="module")
def ostree_repos(work: Path, tree: Path, tree2: Path) -> dict[str, Path]:
    """Repositories written by the real ostree, one per mode, with two commits on main."""
    repos = {}
    modes = ["archive", "bare-user", "bare-user-only"] + (["bare"] if IS_ROOT else [])
    for mode in modes:
        if mode != "archive" and not user_xattrs_ok(work):
            continue
        repo = work / f"ostree-{mode}"
        ostree(f"--repo={repo}", "init", f"--mode={mode}")
        for src, subject in ((tree, "one"), (tree2, "two")):
            ostree(f"--repo={repo}", "commit", "-b", "main", f"--timestamp={TS}",
                   "-s", subject, src)
        repos[mode] = repo
    return repos


@pytest.mark.parametrize("mode", ["archive", "bare-user", "bare-user-only", "bare"])
def test_pyostree_fsck_accepts_ostree_repos(mode: str, ostree_repos: dict[str, Path]) -> None:
    if mode not in ostree_repos:
        pytest.skip(f"no {mode} repository here")
    result = fsck(Repo.open(ostree_repos[mode]))
    assert (result.errors, result.commits) == ([], 2)
    code, out, err = run_cli(f"--repo={ostree_repos[mode]}", "fsck")
    assert code == 0 and err == ""
    assert b"no errors found" in out


CHECKOUTS = [
    ("archive", []),
    ("archive", ["-U"]),
    ("archive", ["--subpath=/a"]),
    ("archive", ["--subpath=/readme.txt"]),
    ("archive", ["-U", "--union"]),
    ("bare-user", ["-U"]),
    ("bare-user", ["-U", "-C"]),
    ("bare-user", ["-U", "--union", "--subpath=/bin"]),
    ("bare-user", []),
    ("bare-user-only", []),
    ("bare", []),
    ("bare", ["-C"]),
    ("bare", ["-U"]),
    ("bare", ["--union"]),
    ("bare", ["-H", "--subpath=/home"]),
]


def _prepopulate(dest: Path) -> None:
    """What --union checkouts are run over: a file to replace, one to keep, a shared dir."""
    (dest / "a").mkdir(parents=True)
    (dest / "readme.txt").write_bytes(b"old contents\n")
    (dest / "keep-me").write_bytes(b"mine\n")
    (dest / "a" / "mine").write_bytes(b"mine too\n")
    os.chmod(dest / "a", 0o700)


def _linked(root: Path, repo: Path) -> dict[str, bool]:
    """For every regular file of a checkout: is it a hardlink of a repository object?"""
    inodes = {os.lstat(p).st_ino for p in (repo / "objects").glob("*/*.file")}
    return {str(p.relative_to(root)): os.lstat(p).st_ino in inodes
            for p in root.rglob("*") if stat.S_ISREG(os.lstat(p).st_mode)}


@pytest.mark.parametrize(("mode", "opts"), CHECKOUTS, ids=[
    f"{m}{''.join(o) or '-default'}" for m, o in CHECKOUTS])
def test_checkout_matches_ostree(mode: str, opts: list[str], ostree_repos: dict[str, Path],
                                 work: Path) -> None:
    if mode not in ostree_repos:
        pytest.skip(f"no {mode} repository here")
    repo = ostree_repos[mode]
    base = Path(tempfile.mkdtemp(dir=work, prefix="co-"))
    theirs, ours = base / "theirs", base / "ours"
    if "--union" in opts:
        _prepopulate(theirs)
        _prepopulate(ours)
    ostree(f"--repo={repo}", "checkout", *opts, "main", theirs)
    code, _, err = run_cli(f"--repo={repo}", "checkout", *opts, "main", ours)
    assert (code, err) == (0, "")
    ownership = IS_ROOT or "-U" in opts
    assert snapshot(ours, ownership=ownership) == snapshot(theirs, ownership=ownership)
    if mode != "archive":
        assert _linked(ours, repo) == _linked(theirs, repo)
    shutil.rmtree(base)


# ---------------------------------------------------------------------------- CLI output


@pytest.fixture(scope="module")
def cli_repo(work: Path, tree: Path, tree2: Path) -> Path:
    """An archive repo made by ostree with the shapes of history the commands print."""
    repo = work / "cli-repo"
    ostree(f"--repo={repo}", "init", "--mode=archive")
    first = ostree(f"--repo={repo}", "commit", "-b", "main", "--timestamp=2020-01-01T00:00:00Z",
                   "-s", "", tree).stdout.strip()  # no subject
    ostree(f"--repo={repo}", "commit", "-b", "main", "--timestamp=2021-06-07T08:09:10Z",
           "-s", "Second: 'quoted' \"both\"", "-m", "Body line 1\n\n  indented\ttab\n",
           "--add-metadata-string=version=2.0.1", tree2)
    ostree(f"--repo={repo}", "commit", "-b", "main", f"--timestamp={TS}",
           "-s", "multi\nline subject", *[f"--add-metadata={k}={v}" for k, v in METADATA], tree)
    for ref in ("foo/bar", "foo/baz/qux", "foobar", "a"):
        ostree(f"--repo={repo}", "refs", f"--create={ref}", first)
    for ref in ("origin:main", "origin:sub/x", "other:main2"):
        ostree(f"--repo={repo}", "refs", f"--create={ref}", "main")
    return repo


# GVariant text values stored with --add-metadata; `show --print-metadata-key` must print each
# exactly as GLib does, byte-swapped and not (-B).
METADATA = [
    ("str", "'plain'"), ("apos", "\"it's\""), ("both", "\"both ' and \\\" quotes\""),
    ("esc", "'tab\\tnl\\nbs\\\\ bell\\a cr\\r vt\\v ff\\f bs\\b'"),
    ("uni", "'caf\\u00e9 \\u2603 \\U0001f600'"), ("ctrl", "'\\u0001\\u007f\\u0085'"),
    ("fmt", "'zero\\u200bwidth'"), ("nbsp", "'no\\u00a0break\\u2028sep'"),
    ("pua", "'\\ue000'"), ("empty", "''"),
    ("bstr", "b'bytes'"), ("bstr2", "b'new\\nline \\\\ \\\"q\\\"'"), ("bstr3", "b\"it's\""),
    ("bstr4", "b'\\001\\177\\200\\377'"), ("bempty", "b''"), ("ay", "[byte 0x00, 0xff]"),
    ("ay0", "@ay []"), ("aay", "[b'x', b'', [byte 0x01]]"),
    ("ai", "[1, -2, 3]"), ("au", "[uint32 1, 2]"), ("at", "[uint64 18446744073709551615]"),
    ("ax", "[int64 -9223372036854775808, 0]"), ("an", "[int16 -1, 256]"),
    ("aq", "[uint16 65535, 1]"), ("ah", "[handle 3]"), ("ad", "[0.1, 1.0, 1e100, -0.0]"),
    ("adspecial", "[inf, -inf, nan]"), ("y", "byte 0x41"), ("u", "uint32 7"),
    ("t", "uint64 1234567890123"), ("b", "true"), ("d", "3.25"),
    ("o", "objectpath '/org/x'"), ("g", "signature 'a{sv}'"),
    ("as", "['a', 'b\\'c']"), ("as0", "@as []"),
    ("tuple", "(1, 'x', true, uint64 5)"), ("tuple1", "(byte 0x01,)"), ("unit", "()"),
    ("dict", "{'k': <1>, 'j': <'v'>}"), ("dictsu", "{'a': uint32 1, 'b': 2}"),
    ("dictis", "{1: 'a', 2: 'b'}"), ("dict0", "@a{sv} {}"),
    ("nested", "<<int16 -5>>"), ("vlist", "[<1>, <'x'>, <@ay []>]"),
    ("maybe", "@ms nothing"), ("just", "@ms 'x'"), ("amaybe", "[@mi nothing, 1]"),
    ("deep", "{'a': <{'b': <[(1, [byte 0x02])]>}>}"), ("aai", "[[1, 2], @ai [], [3]]"),
    ("atuple", "[(1, 'a'), (uint32 2, 'b')]"),
]

CLI_COMMANDS = [
    ["log", "main"], ["log", "--raw", "main"], ["show", "main"], ["show", "main^"],
    ["show", "main^^"], ["show", "-B", "main"], ["show", "--raw", "main"],
    ["ls", "main"], ["ls", "-R", "main"], ["ls", "-R", "-C", "main"], ["ls", "-R", "-X", "main"],
    ["ls", "-d", "main", "/a"], ["ls", "-R", "-d", "main", "/a"], ["ls", "main", "a/b", "/link"],
    ["ls", "-C", "main", "/readme.txt", "/emptydir", "/etc"], ["ls", "main^", "/"],
    ["rev-parse", "main"], ["rev-parse", "main^"], ["rev-parse", "main^^"],
    ["rev-parse", "origin:main"], ["rev-parse", "origin/main"], ["rev-parse", "main2"],
    ["rev-parse", "foo/baz/qux", "main"],
    ["cat", "main", "/readme.txt", "/large.bin", "a/b/c/d/deep.txt"], ["cat", "main", "empty"],
    ["refs"], ["refs", "--list"], ["refs", "foo"], ["refs", "--list", "foo"],
    ["refs", "foo/baz"], ["refs", "foo/bar"], ["refs", "fo"], ["refs", "origin:"],
    ["refs", "origin:sub"], ["refs", "--list", "origin:sub"], ["refs", "nonexistent"],
    # show --raw and -B print every METADATA value; these check the key lookups themselves.
    *[["show", f"--print-metadata-key={k}", "main"] for k in ("esc", "at", "deep", "maybe")],
    *[["show", "-B", f"--print-metadata-key={k}", "main"] for k in ("au", "ad", "dictsu")],
]


def _cmd_id(cmd: list[str]) -> str:
    return " ".join(cmd)


@pytest.mark.parametrize("cmd", CLI_COMMANDS, ids=[_cmd_id(c) for c in CLI_COMMANDS])
def test_cli_output_matches_ostree(cmd: list[str], cli_repo: Path) -> None:
    expected = ostree(f"--repo={cli_repo}", *cmd, text=False)
    code, out, err = run_cli(f"--repo={cli_repo}", *cmd)
    assert code == expected.returncode, err
    if cmd[0] == "refs":  # ostree prints refs in hash-table order
        assert sorted(out.splitlines()) == sorted(expected.stdout.splitlines())
    else:
        assert out == expected.stdout


def test_cli_show_objects_matches_ostree(cli_repo: Path) -> None:
    repo = Repo.open(cli_repo)
    commit = repo.load_commit(repo.resolve_rev("main") or "")
    tree = repo.load_dirtree(commit.root_tree)
    files = dict(tree.files)
    etc = dict((n, t) for n, t, _ in tree.dirs)["etc"]
    targets = [commit.root_tree, commit.root_meta, files["readme.txt"], files["link"],
               files["empty"], *dict(repo.load_dirtree(etc).files).values()]
    for i, csum in enumerate(targets):
        for flags in ([], ["--raw"], ["-B"]) if i < 2 else ([],):
            expected = ostree(f"--repo={cli_repo}", "show", *flags, csum, text=False)
            code, out, _ = run_cli(f"--repo={cli_repo}", "show", *flags, csum)
            assert (code, out.decode()) == (0, expected.stdout.decode()), (csum, flags)


def test_cli_detached_metadata_matches_ostree(cli_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(cli_repo, repo, symlinks=True)
    csum = Repo.open(repo).resolve_rev("main") or ""
    Repo.open(repo).write_detached_metadata(csum, {
        "ostree.gpgsigs": gv.Variant("aay", [b"\x88\x01\x02", b"\x89\x00"]),
    })
    for cmd in (["show", "--print-detached-metadata-key=ostree.gpgsigs", "main"],
                ["show", "-B", "--print-detached-metadata-key=ostree.gpgsigs", "main"]):
        expected = ostree(f"--repo={repo}", *cmd)
        code, out, _ = run_cli(f"--repo={repo}", *cmd)
        assert (code, out.decode()) == (0, expected.stdout)


def test_add_metadata_text_gives_ostree_checksums(tmp_path: Path, tree: Path) -> None:
    """--add-metadata parses GVariant text as ostree does: same values, same commit."""
    ostree(f"--repo={tmp_path / 'o'}", "init", "--mode=archive")
    run_cli(f"--repo={tmp_path / 'p'}", "init", "--mode=archive")
    args = ["commit", "-b", "m", f"--timestamp={TS}",
            *[f"--add-metadata={k}={v}" for k, v in METADATA], "--tree=dir=" + str(tree / "bin")]
    expected = ostree(f"--repo={tmp_path / 'o'}", *args).stdout.strip()
    code, out, err = run_cli(f"--repo={tmp_path / 'p'}", *args)
    assert (code, err, out.decode().strip()) == (0, "", expected)


def test_tombstone_matches_ostree(tmp_path: Path, tree: Path) -> None:
    """prune --delete-commit with core.tombstone-commits leaves ostree's very tombstone."""
    objects: dict[str, bytes] = {}
    for name, run in (("o", None), ("p", run_cli)):
        repo = tmp_path / name
        ostree(f"--repo={repo}", "init", "--mode=archive")
        ostree(f"--repo={repo}", "config", "set", "core.tombstone-commits", "true")
        csum = ostree(f"--repo={repo}", "commit", "-b", "gone", f"--timestamp={TS}",
                      tree / "a").stdout.strip()
        ostree(f"--repo={repo}", "refs", "--delete", "gone")
        if run is None:
            ostree(f"--repo={repo}", "prune", f"--delete-commit={csum}")
        else:
            assert run(f"--repo={repo}", "prune", f"--delete-commit={csum}")[0] == 0
        path = repo / "objects" / csum[:2] / f"{csum[2:]}.tombstone-commit"
        objects[name] = path.read_bytes()
        assert not Repo.open(repo).has_object(ObjectType.COMMIT, csum)
        ostree(f"--repo={repo}", "fsck")
    assert objects["o"] == objects["p"]


@pytest.mark.parametrize("prefix", ["foo", "origin:sub", "foo/bar", "nonexistent"])
def test_refs_delete_matches_ostree(prefix: str, cli_repo: Path, tmp_path: Path) -> None:
    results = []
    for name, runner in (("o", None), ("p", run_cli)):
        repo = tmp_path / name
        shutil.copytree(cli_repo / "refs", repo / "refs")
        shutil.copy(cli_repo / "config", repo / "config")
        (repo / "objects").mkdir()
        if runner is None:
            code = ostree(f"--repo={repo}", "refs", "--delete", prefix, check=False).returncode
        else:
            code = runner(f"--repo={repo}", "refs", "--delete", prefix)[0]
        results.append((code, sorted(ostree(f"--repo={repo}", "refs").stdout.split())))
    assert results[0] == results[1]


def test_log_of_partial_history_matches_ostree(cli_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(cli_repo, repo, symlinks=True)
    oldest = Repo.open(repo).resolve_rev("main^^") or ""
    Repo.open(repo).object_path(ObjectType.COMMIT, oldest).unlink()
    expected = ostree(f"--repo={repo}", "log", "main")
    code, out, _ = run_cli(f"--repo={repo}", "log", "main")
    assert (code, out.decode()) == (0, expected.stdout)
    assert "<< History beyond this commit not fetched >>" in expected.stdout
