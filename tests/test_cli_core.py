"""The offline commands: they work end to end, and every failure is one ``error:`` line on
stderr with a non-zero exit code, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .corehelpers import (
    MANIFEST,
    error_lines,
    local_dir,
    make_tree,
    needs_ostree,
    ostree,
    restore_repo,
    run_cli,
    run_pyostree_process,
    user_xattrs_ok,
)

FIRST, SECOND = MANIFEST["commits"]["first"], MANIFEST["commits"]["second"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return restore_repo("archive", tmp_path / "repo").path


def assert_one_error(code: int, err: str, expect: str | None = None) -> None:
    lines = error_lines(err)
    assert code != 0
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    if expect is not None:
        assert expect in lines[0], err


def test_round_trip(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"data\n")
    assert run_cli(f"--repo={repo}", "init", "--mode=archive") == (0, b"", "")
    code, out, err = run_cli(f"--repo={repo}", "commit", "-b", "x/y", "-s", "hi",
                             "--timestamp=@86400", str(src))
    assert (code, err) == (0, "")
    csum = out.decode().strip()
    assert run_cli(f"--repo={repo}", "rev-parse", "x/y")[1].decode() == csum + "\n"
    assert run_cli(f"--repo={repo}", "rev-parse", csum[:6])[1].decode() == csum + "\n"
    assert run_cli(f"--repo={repo}", "refs")[1] == b"x/y\n"
    assert run_cli(f"--repo={repo}", "cat", "x/y", "/d/f")[1] == b"data\n"
    log = run_cli(f"--repo={repo}", "log", "x/y")[1].decode()
    assert log.startswith(f"commit {csum}\n") and "Date:  1970-01-02 00:00:00 +0000" in log
    assert "\n    hi\n" in log
    code, _, err = run_cli(f"--repo={repo}", "checkout", "x/y", str(tmp_path / "co"))
    assert (code, err) == (0, "")
    assert (tmp_path / "co" / "d" / "f").read_bytes() == b"data\n"
    assert run_cli(f"--repo={repo}", "fsck", "-q") == (0, b"", "")
    assert run_cli(f"--repo={repo}", "config", "get", "core.mode")[1] == b"archive-z2\n"
    assert run_cli(f"--repo={repo}", "refs", "--delete", "x")[0] == 0
    assert run_cli(f"--repo={repo}", "refs")[1] == b""
    code, out, _ = run_cli(f"--repo={repo}", "prune", "--refs-only")
    assert code == 0 and b"Deleted" in out


def test_no_repository(tmp_path: Path) -> None:
    assert_one_error(*run_cli(f"--repo={tmp_path / 'nope'}", "log", "main")[::2],
                     expect="not an OSTree repository")
    (tmp_path / "notrepo").mkdir()
    (tmp_path / "notrepo" / "config").write_text("[core]\nrepo_version=2\n")
    assert_one_error(*run_cli(f"--repo={tmp_path / 'notrepo'}", "refs")[::2],
                     expect="repo_version")


def test_no_repository_real_process(tmp_path: Path) -> None:
    """As a real process, in a directory that is not a repository, with no $OSTREE_REPO."""
    env = {k: v for k, v in os.environ.items() if k != "OSTREE_REPO"}
    proc = run_pyostree_process("refs", cwd=tmp_path, env=env)
    assert proc.stdout == ""
    assert_one_error(proc.returncode, proc.stderr)


@pytest.mark.parametrize(("args", "expect"), [
    (["rev-parse", "nosuchref"], "not found"),
    (["rev-parse", "main^^"], "has no parent"),
    (["rev-parse", "0000"], "not found"),
    (["rev-parse", "bad..ref"], "not found"),
    (["log", "nosuchref"], "not found"),
    (["show", "nosuchref"], "not found"),
    (["show", "--print-metadata-key=nokey", "main"], "No such metadata key"),
    (["show", "--print-detached-metadata-key=x", "main^"], "No detached metadata"),
    (["ls", "main", "/no/such/path"], "no such file"),
    (["ls", "nosuchref"], "not found"),
    (["cat", "main", "/etc"], "is a directory"),
    (["cat", "main", "/link"], "symbolic link"),
    (["cat", "main", "/missing"], "no such file"),
    (["checkout", "nosuchref", "dest"], "not found"),
    (["checkout", "--subpath=/nope", "main", "dest2"], "no such file"),
    (["refs", "--create=main", "main"], "already exists"),
    (["refs", "--delete"], "PREFIX"),
    (["refs", "bad:..x"], "invalid"),
    (["commit", "-b", "x", "/nonexistent/dir"], "/nonexistent/dir"),
    (["commit", "SRC"], "--branch"),
    (["commit", "-b", "x", "--add-metadata=k=[1, 'x']", "SRC"], "Parsing"),
    (["commit", "-b", "x", "--add-metadata-string=novalue", "SRC"], "KEY=VALUE"),
    (["commit", "-b", "x", "--timestamp=yesterday-ish", "SRC"], "timestamp"),
    (["commit", "-b", "bad/../branch", "SRC"], "invalid ref"),
    (["config", "get", "core.nokey"], "not found"),
    (["config", "get", "nodot"], "SECTION.KEY"),
    (["prune", "--delete-commit=main"], "referenced"),
    (["rev-parse", "--single"], "Multiple commit objects"),
    (["reset", "nosuchref", "main"], "Invalid ref 'nosuchref'"),
    (["reset", "main", "nosuchrev"], "not found"),
    (["reset", "main", "ab" * 32], "not in the repository"),
    (["checksum", "/nonexistent/file"], "No such file"),
])
def test_command_errors(args: list[str], expect: str, repo: Path, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    args = [str(tmp_path / "src") if a == "SRC" else a for a in args]
    code, _, err = run_cli(f"--repo={repo}", *args)
    assert_one_error(code, err, expect)


def test_checkout_into_existing_destination(repo: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine").write_text("x")
    assert_one_error(*run_cli(f"--repo={repo}", "checkout", "main", dest)[::2],
                     expect="already exists")
    assert os.listdir(dest) == ["mine"]


@pytest.mark.parametrize("args", [
    ["--frobnicate", "refs"],
    ["refs", "--frobnicate"],
    ["nosuchcommand"],
    [],
    ["log"],
    ["init", "--mode=weird"],
    ["ls", "-Q", "main"],
    ["prune", "--depth=abc"],
])
def test_bad_usage(args: list[str], repo: Path) -> None:
    code, out, err = run_cli(f"--repo={repo}", *args)
    assert code == 2
    assert out == b""
    assert_one_error(code, err)


def test_bad_usage_real_process(repo: Path) -> None:
    proc = run_pyostree_process(f"--repo={repo}", "log", "--no-such-option", "main")
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_error(proc.returncode, proc.stderr)
    proc = run_pyostree_process(f"--repo={repo}", "rev-parse", "nosuchref")
    assert proc.returncode == 1 and proc.stdout == ""
    assert_one_error(proc.returncode, proc.stderr, "not found")


def test_help_and_version_exit_zero(repo: Path) -> None:
    code, out, err = run_cli("--version")
    assert (code, err) == (0, "")
    code, out, err = run_cli("log", "--help")
    assert code == 0 and b"usage:" in out


def test_rev_parse_forms(repo: Path, tmp_path: Path) -> None:
    restored = restore_repo("archive", tmp_path / "r2")
    restored.set_ref("origin:remote-only", FIRST)
    restored.set_ref("origin:main", FIRST)
    for rev, want in [("main", SECOND), ("main^", FIRST), (SECOND[:5], SECOND), (FIRST, FIRST),
                      ("origin:main", FIRST), ("origin/main", FIRST), ("remote-only", FIRST),
                      (SECOND + "^", FIRST)]:
        code, out, err = run_cli(f"--repo={restored.path}", "rev-parse", rev)
        assert (code, out.decode(), err) == (0, want + "\n", ""), rev
    code, out, _ = run_cli(f"--repo={restored.path}", "rev-parse", "main", "main^")
    assert out.decode() == f"{SECOND}\n{FIRST}\n"


def test_command_module_table_matches_the_parsers() -> None:
    import argparse
    import importlib

    from pyostree.cli import _MODULES, COMMAND_MODULES

    seen = {}
    for name in _MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"pyostree.cli.{name}").register(sub)
        seen.update(dict.fromkeys(sub.choices, name))
    assert seen == COMMAND_MODULES


def test_a_local_command_loads_no_network_or_deploy_code(tmp_path: Path) -> None:
    # Each command imports only its own module: a checkout must not pay for asyncio, the
    # fetchers, deployments or the updater (start-up time and RSS on small devices).
    import subprocess
    import sys

    repo = restore_repo("bare-user", tmp_path / "repo").path
    script = ("import sys; from pyostree.cli import main; "
              f"code = main(['--repo={repo}', 'checkout', '-U', '{FIRST}', "
              f"'{tmp_path / 'co'}']); "
              "print(code, sorted(m for m in sys.modules if m.split('.')[0] in "
              "('asyncio', 'aiohttp', 'httpx') or m in ('pyostree.pull', 'pyostree.deploy', "
              "'pyostree.updater', 'pyostree.cli.admin_cmds')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "0 []", out
    assert (tmp_path / "co").is_dir()


def test_reset_moves_a_ref_back(repo: Path) -> None:
    assert run_cli(f"--repo={repo}", "rev-parse", "main")[1].decode().strip() == SECOND
    assert run_cli(f"--repo={repo}", "reset", "main", "main^") == (0, b"", "")
    assert run_cli(f"--repo={repo}", "rev-parse", "main")[1].decode().strip() == FIRST
    assert run_cli(f"--repo={repo}", "reset", "main", SECOND) == (0, b"", "")
    assert run_cli(f"--repo={repo}", "rev-parse", "main")[1].decode().strip() == SECOND


def test_failed_reset_leaves_the_ref(repo: Path) -> None:
    ref = repo / "refs" / "heads" / "main"
    before = ref.read_bytes()
    code, _, err = run_cli(f"--repo={repo}", "reset", "main", "cd" * 32)
    assert_one_error(code, err, "not in the repository")
    assert ref.read_bytes() == before


@needs_ostree
def test_checksum_matches_ostree(tmp_path: Path) -> None:
    """Every file, symlink and directory of a tree with every kind of entry (owners, setuid,
    xattrs where the filesystem takes them) checksums as ``ostree checksum`` says, with and
    without ``--ignore-xattrs``."""
    with local_dir(tmp_path) as work:
        root = make_tree(work / "tree", xattrs=user_xattrs_ok(work), large=False)
        paths = [root, *sorted(root.rglob("*"))]
        for options in ([], ["--ignore-xattrs"]):
            ours = [run_cli("checksum", *options, p)[1].decode() for p in paths]
            theirs = [ostree("checksum", *options, p).stdout for p in paths]
            assert ours == theirs
        assert len(set(theirs)) > 10


def test_sign_delete_removes_only_that_keys_signatures(repo: Path) -> None:
    """``sign --delete`` (parsed but ignored by ostree 2022.7) drops the ed25519 signatures
    that verify with the given keys, public or secret, and keeps the others."""
    from pyostree.sign import generate_ed25519_keypair

    (s1, p1), (s2, p2) = generate_ed25519_keypair(), generate_ed25519_keypair()
    assert run_cli(f"--repo={repo}", "sign", "main", s1, s2)[0] == 0
    assert run_cli(f"--repo={repo}", "sign", "--verify", "main", p1)[0] == 0
    code, out, err = run_cli(f"--repo={repo}", "sign", "--delete", "main", p1)
    assert (code, out, err) == (0, b"Signatures deleted: 1\n", "")
    code, _, err = run_cli(f"--repo={repo}", "sign", "--verify", "main", p1)
    assert_one_error(code, err, "no valid ed25519 signature")
    assert run_cli(f"--repo={repo}", "sign", "--verify", "main", p2)[0] == 0
    assert run_cli(f"--repo={repo}", "sign", "--delete", "main", s2)[1] == \
        b"Signatures deleted: 1\n"
    assert run_cli(f"--repo={repo}", "sign", "--delete", "main", s2)[1] == \
        b"Signatures deleted: 0\n"
    code, _, err = run_cli(f"--repo={repo}", "sign", "--verify", "main", p2)
    assert_one_error(code, err)
