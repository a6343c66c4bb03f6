"""``static-delta show``, ``verify``, ``indexes``, ``reindex`` and the options of ``generate``
(``-n``, ``--swap-endianness``, ``--set-endianness``, ``--filename``, ``--max-bsdiff-size``,
``--sign``), judged by the real ostree: the same ``show`` output byte for byte, the same index
files, and deltas it applies. (Debian's ostree 2022.7 is built without ed25519, so signatures
are checked by pyostree alone; the real ostree still reads and applies a signed delta.)"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyostree.deltas import read_superblock
from pyostree.formats.delta import delta_dir, delta_superblock_path
from pyostree.sign import generate_ed25519_keypair

from .pullhelpers import (
    TS_V2,
    assert_one_error,
    cli,
    commit,
    file_of,
    init_repo,
    ls_tree,
    needs_ostree,
    ostree,
    pyostree,
    pyostree_env,
    write_tree,
)

pytestmark = [pytest.mark.interop, needs_ostree]


@dataclass
class Repo2:
    path: Path  # archive repo: main = v2, parent v1
    v1: str
    v2: str


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Repo2:
    root = tmp_path_factory.mktemp("deltacli")
    repo = init_repo(root / "repo")
    v1 = commit(repo, write_tree(root / "t1", 1, big=200 * 1024), "main", subject="v1")
    v2 = commit(repo, write_tree(root / "t2", 2, big=200 * 1024), "main", subject="v2",
                timestamp=TS_V2)
    return Repo2(repo, v1, v2)


@pytest.fixture
def repo(base: Repo2, tmp_path: Path) -> Repo2:
    path = tmp_path / "repo"
    shutil.copytree(base.path, path, symlinks=True)
    return Repo2(path, base.v1, base.v2)


def show_both(repo: Path, delta: str) -> tuple[str, str]:
    ours = pyostree(f"--repo={repo}", "static-delta", "show", delta)
    assert ours.returncode == 0, ours.stderr
    return ours.stdout, ostree(f"--repo={repo}", "static-delta", "show", delta).stdout


def test_show_inline_delta(repo: Repo2) -> None:
    """ostree 2022.7's show looks for inline parts in files and fails; pyostree reads them
    from the superblock and prints the same lines as for the delta made with files."""
    delta = f"{repo.v1}-{repo.v2}"
    cli("--repo", repo.path, "static-delta", "generate", "--to=main")
    with_files = pyostree(f"--repo={repo.path}", "static-delta", "show", delta).stdout
    cli("--repo", repo.path, "static-delta", "generate", "--inline", "--to=main")
    inline = pyostree(f"--repo={repo.path}", "static-delta", "show", delta).stdout
    assert "openat" in ostree(f"--repo={repo.path}", "static-delta", "show", delta,
                              check=False).stderr

    def parts(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if ln.startswith(("PartPayload", "Number of"))]

    assert parts(inline) == parts(with_files)


@pytest.mark.parametrize("args", [
    ["--empty"], [], ["--disable-bsdiff"], ["--swap-endianness"],
    ["--empty", "--max-chunk-size=1"],
])
def test_show_matches_ostree(repo: Repo2, args: list[str]) -> None:
    """The same output, byte for byte, for deltas made by either tool."""
    delta = repo.v2 if "--empty" in args else f"{repo.v1}-{repo.v2}"
    for maker in ("ostree", "pyostree"):
        if maker == "ostree":
            ostree(f"--repo={repo.path}", "static-delta", "generate", *args, "--to=main")
        else:
            cli("--repo", repo.path, "static-delta", "generate", *args, "--to=main")
        ours, theirs = show_both(repo.path, delta)
        assert ours == theirs, maker
        assert "PartPayloadOps0: openspliceclose=" in ours


def test_generate_prints_like_ostree_and_if_not_exists(repo: Repo2) -> None:
    out = cli("--repo", repo.path, "static-delta", "generate", "main")  # TO as an argument
    assert out == f"Generating static delta:\n  From: {repo.v1}\n  To:   {repo.v2}\n"
    sb = repo.path / delta_superblock_path(repo.v1, repo.v2)
    before = (sb.stat().st_mtime_ns, sb.read_bytes())
    for tool in (cli, ostree):
        args = ["static-delta", "generate", "-n", "--to=main"]
        out = tool(f"--repo={repo.path}", *args)
        text = out if isinstance(out, str) else out.stdout
        assert text == f"Delta {repo.v1}-{repo.v2} already exists.\n"
    assert (sb.stat().st_mtime_ns, sb.read_bytes()) == before


@pytest.mark.parametrize("args", [["--swap-endianness"], ["--set-endianness=B"],
                                  ["--set-endianness=B", "--swap-endianness"]])
def test_endianness_options_applied_by_ostree(repo: Repo2, tmp_path: Path,
                                              args: list[str]) -> None:
    cli("--repo", repo.path, "static-delta", "generate", *args, "--to=main")
    sb, _ = read_superblock(file_of(repo.path, delta_superblock_path(repo.v1, repo.v2)))
    assert sb.endianness == ("l" if len(args) == 2 else "B")
    client = init_repo(tmp_path / "client", "bare-user")
    ostree(f"--repo={client}", "pull-local", str(repo.path), repo.v1)
    ostree(f"--repo={client}", "static-delta", "apply-offline",
           str(repo.path / delta_dir(repo.v1, repo.v2)))
    ostree(f"--repo={client}", "fsck")
    assert ls_tree(client, repo.v2) == ls_tree(repo.path, repo.v2)


def test_filename_writes_outside_the_repository(repo: Repo2, tmp_path: Path) -> None:
    out = tmp_path / "usb"
    out.mkdir()
    cli("--repo", repo.path, "static-delta", "generate", "--empty", "--max-chunk-size=1",
        f"--filename={out / 'superblock'}", "--to=main")
    assert not (repo.path / "deltas").exists() or not any((repo.path / "deltas").iterdir())
    names = sorted(os.listdir(out))
    assert names[-1] == "superblock" and names[:-1] == [str(i) for i in range(len(names) - 1)]
    assert len(names) >= 2
    client = init_repo(tmp_path / "client", "bare-user")
    ostree(f"--repo={client}", "static-delta", "apply-offline", str(out / "superblock"))
    ostree(f"--repo={client}", "fsck")
    assert ls_tree(client, repo.v2) == ls_tree(repo.path, repo.v2)
    # A directory that does not exist is one error line, and nothing is written.
    proc = pyostree(f"--repo={repo.path}", "static-delta", "generate", "--empty",
                    f"--filename={tmp_path / 'nodir' / 'sb'}", "--to=main",
                    env=pyostree_env(tmp_path))
    assert_one_error(proc, "no such directory")
    assert not (tmp_path / "nodir").exists()


def test_max_bsdiff_size(repo: Repo2) -> None:
    """The 200 KiB file is bsdiffed by default and not with --max-bsdiff-size=0."""
    ops = {}
    for size in ("16", "0"):
        cli("--repo", repo.path, "static-delta", "generate", f"--max-bsdiff-size={size}",
            "--to=main")
        ours, theirs = show_both(repo.path, f"{repo.v1}-{repo.v2}")
        assert ours == theirs
        ops[size] = next(ln for ln in ours.splitlines() if ln.startswith("PartPayloadOps0"))
    assert "bspatch=1" in ops["16"] and "bspatch=0" in ops["0"]


def test_signed_delta(repo: Repo2, tmp_path: Path) -> None:
    secret, public = generate_ed25519_keypair()
    _, other_public = generate_ed25519_keypair()
    keys_file = tmp_path / "secret.ed25519"
    keys_file.write_text(secret + "\n")
    cli("--repo", repo.path, "static-delta", "generate", f"--keys-file={keys_file}",
        "--to=main")
    delta = f"{repo.v1}-{repo.v2}"
    ours, theirs = show_both(repo.path, delta)
    assert ours == theirs and "Signed: yes\n" in ours
    env = pyostree_env(tmp_path)
    assert cli("--repo", repo.path, "static-delta", "verify", delta, public) == \
        "Verification OK\n"
    trusted = tmp_path / "keys"
    (trusted / "trusted.ed25519.d").mkdir(parents=True)
    (trusted / "trusted.ed25519.d" / "build").write_text(public + "\n")
    assert cli("--repo", repo.path, "static-delta", "verify", f"--keys-dir={trusted}",
               delta) == "Verification OK\n"
    proc = pyostree(f"--repo={repo.path}", "static-delta", "verify", delta, other_public,
                    env=env)
    assert proc.stdout == "Verification fails\n"
    assert_one_error(proc, "no valid ed25519 signature")
    # The key revoked: no longer good.
    (trusted / "revoked.ed25519").write_text(public + "\n")
    proc = pyostree(f"--repo={repo.path}", "static-delta", "verify", f"--keys-dir={trusted}",
                    delta, env=env)
    assert_one_error(proc, "revoked")
    # apply-offline checks a signed delta against the keys it is given.
    ddir = repo.path / delta_dir(repo.v1, repo.v2)
    client = init_repo(tmp_path / "client", "bare-user")
    ostree(f"--repo={client}", "pull-local", str(repo.path), repo.v1)
    proc = pyostree(f"--repo={client}", "static-delta", "apply-offline", ddir, other_public,
                    env=env)
    assert_one_error(proc, "Delta signature verification failed")
    ostree(f"--repo={client}", "config", "set", "core.sign-verify-deltas", "true")
    proc = pyostree(f"--repo={client}", "static-delta", "apply-offline", ddir, env=env)
    assert_one_error(proc, "Key is mandatory")
    assert repo.v2 not in ostree(f"--repo={client}", "log", repo.v1).stdout
    cli("--repo", client, "static-delta", "apply-offline", ddir, public)
    ostree(f"--repo={client}", "fsck")
    assert ls_tree(client, repo.v2) == ls_tree(repo.path, repo.v2)
    # The real ostree (without ed25519) reads the signed wrapper and applies the delta.
    plain = init_repo(tmp_path / "plain", "bare-user")
    ostree(f"--repo={plain}", "pull-local", str(repo.path), repo.v1)
    ostree(f"--repo={plain}", "static-delta", "apply-offline", str(ddir))
    ostree(f"--repo={plain}", "fsck")


def index_files(repo: Path) -> dict[str, bytes]:
    root = repo / "delta-indexes"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.index"))}


def test_indexes_and_reindex_match_ostree(repo: Repo2, tmp_path: Path) -> None:
    assert cli("--repo", repo.path, "static-delta", "indexes") == "(No static deltas indexes)\n"
    cli("--repo", repo.path, "static-delta", "generate", "--to=main")
    cli("--repo", repo.path, "static-delta", "generate", "--empty", "--to=main")
    cli("--repo", repo.path, "static-delta", "generate", "--empty", f"--to={repo.v1}")
    theirs = tmp_path / "theirs"
    shutil.copytree(repo.path, theirs, symlinks=True)
    cli("--repo", repo.path, "static-delta", "reindex")
    ostree(f"--repo={theirs}", "static-delta", "reindex")
    assert index_files(repo.path) == index_files(theirs)
    assert len(index_files(theirs)) == 2
    listing = cli("--repo", repo.path, "static-delta", "indexes")
    assert sorted(listing.split()) == sorted(
        ostree(f"--repo={theirs}", "static-delta", "indexes").stdout.split()) == sorted(
        [repo.v1, repo.v2])
    assert ostree(f"--repo={repo.path}", "config", "get", "core.indexed-deltas").stdout == \
        "true\n"
    # A delta deleted: its index goes, with --to only that target's.
    for tool_repo, run in ((repo.path, cli), (theirs, ostree)):
        run(f"--repo={tool_repo}", "static-delta", "delete", repo.v1)
        run(f"--repo={tool_repo}", "static-delta", "reindex", f"--to={repo.v1}")
    assert index_files(repo.path) == index_files(theirs)
    assert len(index_files(theirs)) == 1
