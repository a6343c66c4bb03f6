"""``pyostree commit``'s options, judged by the real ostree (2022.7).

For the same tree and options both tools must print the same commit checksum (so the commit,
dirtree and dirmeta objects are byte-identical, ``ostree.sizes`` and ``--bootable`` metadata
included) and, with ``--table-output``, the same object statistics. Failures are one ``error:``
line from a real process, the branch does not move and ``ostree fsck`` still passes.
"""

from __future__ import annotations

import base64
import gzip
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyostree import sign, transaction
from pyostree.commitmodifier import FileInfo, parse_statoverride
from pyostree.glibhash import vardict_order
from pyostree.pathfilter import compile_pathname_filter
from pyostree.repo import Repo

from .corehelpers import (
    IS_ROOT,
    error_lines,
    local_dir,
    make_tree,
    needs_ostree,
    ostree,
    run_cli,
    user_xattrs_ok,
)
from .pullhelpers import assert_one_error, pyostree, pyostree_env, read_refs

needs_root = pytest.mark.skipif(not IS_ROOT, reason="bare repositories and owners need root")
TS = "@1700000000"
DATA = Path(__file__).parent / "data"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A module directory on a filesystem with user.* xattrs when one is available."""
    with local_dir(tmp_path_factory.mktemp("commitopts")) as base:
        yield base


@pytest.fixture(scope="module")
def tree(work: Path) -> Path:
    """make_tree plus a kernel (for --bootable) and a hard link (for the tarball)."""
    root = make_tree(work / "tree", xattrs=user_xattrs_ok(work), large=False)
    (root / "usr/lib/modules/6.1.0-9").mkdir(parents=True)
    (root / "usr/lib/modules/6.1.0-9/vmlinuz").write_bytes(b"kernel\n")
    (root / "usr/lib/modules/extra").mkdir()  # no vmlinuz: not a kernel
    (root / "usr/lib/modules/modules.dep").write_bytes(b"")
    os.link(root / "readme.txt", root / "hardlink.txt")
    return root


@pytest.fixture(scope="module")
def tarballs(work: Path, tree: Path) -> dict[str, Path]:
    """The tree as GNU tar (xattrs, hard links, ./ names) writes it, gzip'd by Python's
    tarfile (pax, no ./), and a plain tarball without directory entries."""
    out = {}
    gnu = work / "gnu.tar"
    if shutil.which("tar"):
        subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-C", str(tree), "-cf",
                        str(gnu), "."], check=True)
        out["gnu"] = gnu
    pax = work / "pax.tar.gz"
    with tarfile.open(pax, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(os.listdir(tree)):
            tf.add(tree / name, arcname=name)
    out["pax"] = pax
    flat = work / "flat.tar"
    with tarfile.open(flat, "w") as tf:
        for rel in ("readme.txt", "bin/tool", "a/b/c/d/deep.txt", "link"):
            tf.add(tree / rel, arcname=rel, recursive=False)
    out["flat"] = flat
    return out


def _init(path: Path, mode: str) -> Path:
    ostree(f"--repo={path}", "init", f"--mode={mode}")
    return path


def both(tmp: Path, mode: str, *args: str | os.PathLike[str], setup: tuple[str, ...] = ()
         ) -> tuple[str, str, Path]:
    """Run ``commit ARGS`` with ostree and pyostree on two fresh repositories of ``mode``
    (after a ``commit SETUP`` in each): (ostree's output, pyostree's output, our repo)."""
    theirs, ours = _init(tmp / f"theirs-{mode}", mode), tmp / f"ours-{mode}"
    assert run_cli(f"--repo={ours}", "init", f"--mode={mode}")[0] == 0
    if setup:
        ostree(f"--repo={theirs}", "commit", *setup)
        assert run_cli(f"--repo={ours}", "commit", *setup)[0] == 0
    want = ostree(f"--repo={theirs}", "commit", *args, check=False)
    code, out, err = run_cli(f"--repo={ours}", "commit", *args)
    assert (code == 0) == (want.returncode == 0), (want.stderr, err)
    if code:
        return want.stderr, err, ours
    return want.stdout, out.decode(), ours


def assert_same(tmp: Path, mode: str, *args: str | os.PathLike[str],
                setup: tuple[str, ...] = ()) -> str:
    want, got, ours = both(tmp, mode, "--table-output", *args, setup=setup)
    assert got == want
    ostree(f"--repo={ours}", "fsck")
    return got.splitlines()[0].split()[-1]


# --------------------------------------------------------------------------- directories


DIR_OPTIONS = [
    ["--generate-sizes"],
    ["--generate-sizes", "--canonical-permissions", "--no-bindings"],
    ["--bootable", "--generate-sizes", *(f"--add-metadata-string=k{i}=v{i}" for i in range(12)),
     "--add-metadata=version='1.0'"],
    ["--mode-ro-executables", "--owner-uid=7", "--owner-gid=8"],
    ["--statoverride=STATOVERRIDE", "--skip-list=SKIPLIST", "--generate-sizes"],
]


@pytest.mark.parametrize("opts", DIR_OPTIONS, ids=lambda o: o[0])
@pytest.mark.parametrize("mode", ["archive", "bare-user"])
@pytest.mark.interop
@needs_ostree
def test_directory_commits_match_ostree(mode: str, opts: list[str], tree: Path, work: Path,
                                        tmp_path: Path) -> None:
    if mode != "archive" and not user_xattrs_ok(work):
        pytest.skip("needs user.* xattrs")
    overrides = tmp_path / "statoverride"
    # "1024 /" adds setgid to the root; "=384" sets a mode; an add line on a subdirectory is
    # used up by ostree's first look at it and never reaches its dirmeta.
    overrides.write_text("1024 /\n2048 /bin/tool\n=384 /readme.txt\n=448 /a\n512 /a/b\n\n")
    skips = tmp_path / "skiplist"
    skips.write_text("/private\n/a/b/c\n")
    args = [a.replace("STATOVERRIDE", str(overrides)).replace("SKIPLIST", str(skips))
            for a in opts]
    work_tmp = Path(tempfile.mkdtemp(dir=work))
    try:
        assert_same(work_tmp, mode, "-b", "main", f"--timestamp={TS}", *args, tree)
    finally:
        shutil.rmtree(work_tmp)


@pytest.mark.interop
@needs_ostree
@needs_root
def test_bare_commit_with_sizes_and_owners_matches_ostree(tree: Path, work: Path) -> None:
    work_tmp = Path(tempfile.mkdtemp(dir=work))
    try:
        assert_same(work_tmp, "bare", "-b", "m", f"--timestamp={TS}", "--generate-sizes",
                    "--owner-uid=0", tree)
    finally:
        shutil.rmtree(work_tmp)


def test_bootable_metadata_order_is_glib_hash_order() -> None:
    # What ostree wrote for these keys (see test_directory_commits_match_ostree for more).
    assert vardict_order(["version", "a", "ostree.ref-binding", "ostree.bootable",
                          "ostree.linux"]) == [
        "ostree.linux", "version", "ostree.bootable", "a", "ostree.ref-binding"]
    many = [f"k{i}" for i in range(40)]
    assert sorted(vardict_order(many + many[:5])) == sorted(many)


# --------------------------------------------------------------------------- tarballs


@pytest.mark.parametrize(("name", "opts"), [
    ("gnu", []),
    ("gnu", ["--tar-autocreate-parents", "--owner-uid=3", "--generate-sizes"]),
    ("gnu", ["--canonical-permissions", "--statoverride=STATOVERRIDE"]),
    ("gnu", [r"--tar-pathname-filter=^\./bin/(.*)$,sbin/\1-x", "--no-xattrs"]),
    ("pax", ["--tar-autocreate-parents", r"--tar-pathname-filter=^,usr/"]),
    ("pax", ["--tar-autocreate-parents", "--skip-list=SKIPLIST"]),
    ("flat", []),
    ("flat", ["--tar-autocreate-parents", r"--tar-pathname-filter=(e)(x)?,\U\1\E[\2]\0"]),
])
@pytest.mark.interop
@needs_ostree
def test_tarball_commits_match_ostree(name: str, opts: list[str], tarballs: dict[str, Path],
                                      tmp_path: Path) -> None:
    if name not in tarballs:
        pytest.skip("needs GNU tar")
    (tmp_path / "so").write_text("2048 /bin/tool\n=448 /a\n")
    (tmp_path / "sk").write_text("/a/b/c\n/readme.txt\n")
    args = [a.replace("STATOVERRIDE", str(tmp_path / "so")).replace("SKIPLIST",
                                                                     str(tmp_path / "sk"))
            for a in opts]
    want, got, ours = both(tmp_path, "archive", "--table-output", "-b", "t",
                           f"--timestamp={TS}", *args, f"--tree=tar={tarballs[name]}")
    assert got == want
    if want.startswith("Commit:"):
        ostree(f"--repo={ours}", "fsck")


@pytest.mark.interop
@needs_ostree
def test_tarball_from_stdin(tarballs: dict[str, Path], tmp_path: Path) -> None:
    """``--tree=tar=-`` streams standard input (a real process)."""
    theirs, ours = _init(tmp_path / "theirs", "archive"), _init(tmp_path / "ours", "archive")
    args = ["commit", "-b", "t", f"--timestamp={TS}", "--tar-autocreate-parents", "--tree=tar=-"]
    with open(tarballs["pax"], "rb") as fh:
        want = subprocess.run(["ostree", f"--repo={theirs}", *args], stdin=fh,
                              capture_output=True, check=True)
        fh.seek(0)
        got = subprocess.run([sys.executable, "-m", "pyostree", f"--repo={ours}", *args],
                             stdin=fh, capture_output=True, check=True,
                             env=pyostree_env(tmp_path))
    assert got.stdout == want.stdout


# --------------------------------------------------------------------------- overlays


@pytest.mark.parametrize("opts", [
    ["--base=base", "--tree=dir=TREE", "--generate-sizes"],
    ["--tree=ref=base", "--tree=dir=TREE"],
    ["--tree=dir=TREE", "--tree=ref=base", "--generate-sizes", "--owner-uid=9"],
    ["--tree=ref=base", "--tree=tar=TAR", "--tree=dir=SMALL", "--statoverride=STATOVERRIDE"],
    ["--base=base", "--tree=ref=base", "--generate-sizes"],
], ids=["base", "ref-then-dir", "dir-then-ref-modified", "ref-tar-dir", "base-ref"])
@pytest.mark.interop
@needs_ostree
def test_overlays_match_ostree(opts: list[str], tree: Path, tarballs: dict[str, Path],
                               tmp_path: Path) -> None:
    small = tmp_path / "small"
    (small / "bin").mkdir(parents=True)
    (small / "bin" / "tool").write_bytes(b"replaced\n")
    (tmp_path / "so").write_text("=448 /bin\n2048 /bin/tool\n")
    subs = {"TREE": str(tree), "TAR": str(tarballs["pax"]), "SMALL": str(small),
            "STATOVERRIDE": str(tmp_path / "so")}
    args = []
    for arg in opts:
        for key, value in subs.items():
            arg = arg.replace(key, value)
        args.append(arg)
    setup = ("-b", "base", "--timestamp=@0", "--add-metadata-string=version=7", str(small))
    assert_same(tmp_path, "archive", "-b", "x", f"--timestamp={TS}", *args, setup=setup)


@pytest.mark.interop
@needs_ostree
def test_skip_if_unchanged_and_keep_metadata(tree: Path, tmp_path: Path) -> None:
    setup = ("-b", "m", "--timestamp=@0", "--add-metadata-string=version=7",
             "--add-metadata=n=5", str(tree))
    # Unchanged: no commit, the parent is printed, the branch stays.
    want, got, ours = both(tmp_path, "archive", "-b", "m", f"--timestamp={TS}",
                           "--skip-if-unchanged", tree, setup=setup)
    assert got == want
    parent = got.strip()
    assert Repo.open(ours).read_ref("m") == parent
    commits = [c for c, t in Repo.open(ours).iter_objects() if t.name == "COMMIT"]
    assert commits == [parent]
    # Changed (the body differs, the tree does not: still skipped) / a new tree: a commit.
    other = tmp_path / "other"
    (other / "x").mkdir(parents=True)
    (tmp_path / "again").mkdir()
    want, got, ours = both(tmp_path / "again", "archive", "-b", "m", f"--timestamp={TS}",
                           "--skip-if-unchanged", "--keep-metadata=version",
                           "--keep-metadata=n", "-m", "body", other, setup=setup)
    assert got == want and got.strip() != parent
    assert Repo.open(ours).load_commit(got.strip()).parent == parent
    assert Repo.open(ours).load_commit(got.strip()).version == "7"


@pytest.mark.interop
@needs_ostree
def test_detached_metadata_and_sign_order_match_ostree(tree: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """--add-detached-metadata-string, then each signature appended through a GVariantDict:
    the very .commitmeta bytes (ostree's dummy signature type makes them deterministic)."""
    monkeypatch.setenv("OSTREE_DUMMY_SIGN_ENABLED", "1")
    want, got, ours = both(tmp_path, "archive", "-b", "m", f"--timestamp={TS}",
                           "--add-detached-metadata-string=zz=1",
                           "--add-detached-metadata-string=a=2", "--sign-type=dummy",
                           "--sign=k1", "--sign=k2", tree / "a")
    assert got == want
    csum = got.strip()
    rel = f"objects/{csum[:2]}/{csum[2:]}.commitmeta"
    assert (ours / rel).read_bytes() == (tmp_path / "theirs-archive" / rel).read_bytes()


# --------------------------------------------------------------------------- messages


@pytest.mark.interop
@needs_ostree
def test_body_file_and_editor_match_ostree(tree: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    body = tmp_path / "body"
    body.write_text("First line\n\nSecond paragraph \u2603\n")
    want, got, _ = both(tmp_path, "archive", "-b", "m", f"--timestamp={TS}", "-s", "subj",
                        f"--body-file={body}", tree / "a")
    assert got == want
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\ncat \"$1\" >> \"$CAPTURE\"\n"
                      "printf '# comment\\n\\n  The subject  \\n\\nbody 1\\n# not body\\n"
                      "body 2\\n\\n\\n' > \"$1\"\n")
    editor.chmod(0o755)
    monkeypatch.setenv("OSTREE_EDITOR", str(editor))
    for name in ("theirs", "ours"):
        monkeypatch.setenv("CAPTURE", str(tmp_path / f"capture-{name}"))
        if name == "theirs":
            want = ostree(f"--repo={_init(tmp_path / 'te', 'archive')}", "commit", "-b", "br",
                          "-e", "-s", "old subject", "-m", "old body", f"--timestamp={TS}",
                          tree / "a").stdout
        else:
            run_cli(f"--repo={tmp_path / 'oe'}", "init", "--mode=archive")
            code, out, err = run_cli(f"--repo={tmp_path / 'oe'}", "commit", "-b", "br", "-e",
                                     "-s", "old subject", "-m", "old body",
                                     f"--timestamp={TS}", tree / "a")
            assert code == 0, err
    assert out.decode() == want
    assert (tmp_path / "capture-ours").read_text() == (tmp_path / "capture-theirs").read_text()
    commit = Repo.open(tmp_path / "oe").load_commit(want.strip())
    assert (commit.subject, commit.body) == ("  The subject", "body 1\nbody 2")


def test_editor_empty_message_aborts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src").mkdir()
    monkeypatch.setenv("OSTREE_EDITOR", "true")  # leaves only the template's comments
    run_cli(f"--repo={tmp_path / 'r'}", "init")
    code, out, err = run_cli(f"--repo={tmp_path / 'r'}", "commit", "-b", "m", "-e",
                             tmp_path / "src")
    assert code == 1 and out == b"" and error_lines(err) == [
        "error: Aborting commit due to empty commit subject."]
    assert read_refs(tmp_path / "r") == {}


# --------------------------------------------------------------------------- signing


def _dearmor(armored: str) -> bytes:
    lines = armored.strip().splitlines()
    body = lines[lines.index("") + 1:-1]
    return base64.b64decode("".join(ln for ln in body if not ln.startswith("=")))


@pytest.mark.interop
@needs_ostree
def test_gpg_and_ed25519_signed_commit(tree: Path, tmp_path: Path) -> None:
    """--gpg-sign (verified by the real ostree) and --sign (ed25519; Debian's ostree lacks it,
    so pyostree's own ``sign --verify`` judges) in one commit."""
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(DATA / "gpg" / "good.sec.asc", keys)
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "good.gpg").write_bytes(_dearmor((DATA / "gpg" / "good.asc").read_text()))
    secret, public = sign.generate_ed25519_keypair()
    repo = _init(tmp_path / "repo", "archive")
    code, _, err = run_cli(f"--repo={repo}", "commit", "-b", "m", f"--timestamp={TS}",
                           f"--sign={secret}", "--gpg-sign=good@example.org",
                           f"--gpg-homedir={keys}", tree / "a")
    assert code == 0, err
    shown = ostree(f"--repo={repo}", "show", f"--gpg-homedir={pub}", "m").stdout
    assert 'Good signature from "Good Signer <good@example.org>"' in shown
    assert run_cli(f"--repo={repo}", "sign", "--verify", "m", public)[0] == 0
    _, other = sign.generate_ed25519_keypair()
    assert run_cli(f"--repo={repo}", "sign", "--verify", "m", other)[0] != 0
    ostree(f"--repo={repo}", "fsck")


# --------------------------------------------------------------------------- hard links


@pytest.mark.parametrize(("mode", "opts"), [
    ("bare", []), ("bare", ["--link-checkout-speedup"]),
    ("bare", ["--link-checkout-speedup", "--statoverride=SO"]), ("bare", ["--devino-canonical"]),
    ("bare-user", ["--link-checkout-speedup"]), ("bare-user", ["--devino-canonical"]),
])
@pytest.mark.interop
@needs_ostree
@needs_root
def test_link_checkout_speedup_matches_ostree(mode: str, opts: list[str], tree: Path,
                                              work: Path) -> None:
    """Commit a ``checkout -H`` (``-U`` for bare-user): files that are hard links into the
    repository are taken by checksum (Content Cache Hits) unless the filter changes them (in
    bare-user, with the owner and mode of the object's ostreemeta); --devino-canonical does
    not even ask the filter."""
    if mode == "bare-user" and not user_xattrs_ok(work):
        pytest.skip("needs user.* xattrs")
    tmp = Path(tempfile.mkdtemp(dir=work))
    try:
        (tmp / "so").write_text("2048 /bin/tool\n")
        args = [a.replace("SO", str(tmp / "so")) for a in opts]
        theirs, ours = _init(tmp / "theirs", mode), tmp / "ours"
        run_cli(f"--repo={ours}", "init", f"--mode={mode}")
        user = ["-U"] if mode == "bare-user" else []
        for repo in (theirs, ours):
            ostree(f"--repo={repo}", "commit", "-b", "base", "--timestamp=@0", tree)
            ostree(f"--repo={repo}", "checkout", *user, "-H", "base",
                   repo.parent / f"co-{repo.name}")
        want = ostree(f"--repo={theirs}", "commit", "--table-output", "-b", "x",
                      f"--timestamp={TS}", *args, tmp / "co-theirs")
        code, out, err = run_cli(f"--repo={ours}", "commit", "--table-output", "-b", "x",
                                 f"--timestamp={TS}", *args, tmp / "co-ours")
        assert (code, out.decode()) == (0, want.stdout), err
    finally:
        shutil.rmtree(tmp)


@pytest.mark.interop
@needs_ostree
@needs_root
def test_devino_canonical_bypasses_the_filter(tree: Path, work: Path) -> None:
    tmp = Path(tempfile.mkdtemp(dir=work))
    try:
        (tmp / "so").write_text("2048 /bin/tool\n")
        repo = _init(tmp / "repo", "bare")
        ostree(f"--repo={repo}", "commit", "-b", "base", "--timestamp=@0", tree)
        ostree(f"--repo={repo}", "checkout", "-H", "base", tmp / "co")
        args = ["commit", "-b", "x", "--devino-canonical", f"--statoverride={tmp / 'so'}",
                tmp / "co"]
        want = ostree(f"--repo={repo}", *args, check=False)
        assert want.returncode == 1 and "Unmatched statoverride paths" in want.stderr
        code, _, err = run_cli(f"--repo={repo}", *args)
        assert code == 1 and "Unmatched statoverride paths: /bin/tool" in err
    finally:
        shutil.rmtree(tmp)


# --------------------------------------------------------------------------- consume, fsync


@pytest.mark.interop
@needs_ostree
def test_consume_removes_the_input_after_the_commit(tree: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    copies = {}
    for name in ("theirs", "ours", "ours-fail"):
        copies[name] = tmp_path / f"src-{name}"
        shutil.copytree(tree / "a", copies[name], symlinks=True)
    theirs, ours = _init(tmp_path / "theirs", "archive"), tmp_path / "ours"
    run_cli(f"--repo={ours}", "init", "--mode=archive")
    want = ostree(f"--repo={theirs}", "commit", "-b", "m", f"--timestamp={TS}", "--consume",
                  copies["theirs"]).stdout
    code, out, err = run_cli(f"--repo={ours}", "commit", "-b", "m", f"--timestamp={TS}",
                             "--consume", copies["ours"])
    assert (code, out.decode()) == (0, want)
    assert not copies["theirs"].exists() and not copies["ours"].exists()
    # A failed commit consumes nothing (ostree would have deleted what it had walked).
    (tmp_path / "sk").write_text("/no/such/path\n")
    code, _, err = run_cli(f"--repo={ours}", "commit", "-b", "m", "--consume",
                           f"--skip-list={tmp_path / 'sk'}", copies["ours-fail"])
    assert code == 1 and "Unmatched skip-list paths: /no/such/path" in err
    assert (copies["ours-fail"] / "up-link").is_symlink()
    # "." is emptied, not removed.
    dot = tmp_path / "dot"
    shutil.copytree(tree / "a", dot, symlinks=True)
    monkeypatch.chdir(dot)
    assert run_cli(f"--repo={ours}", "commit", "-b", "d", "--consume", ".")[0] == 0
    assert dot.is_dir() and os.listdir(dot) == []


def test_fsync_false_skips_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(transaction, "syncfs", lambda path: calls.append(str(path)))
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x")
    run_cli(f"--repo={tmp_path / 'r'}", "init", "--mode=archive")
    calls.clear()
    assert run_cli(f"--repo={tmp_path / 'r'}", "commit", "-b", "a", "--fsync=false",
                   tmp_path / "src")[0] == 0
    assert calls == []
    assert run_cli(f"--repo={tmp_path / 'r'}", "commit", "-b", "b", "--fsync=yes",
                   tmp_path / "src")[0] == 0
    assert calls.count("fsync") >= 1 and any(c.endswith("objects") for c in calls)


# --------------------------------------------------------------------------- errors


ERROR_CASES = [
    (["--statoverride=BAD_STATOVERRIDE"], "Malformed statoverride file (no space found)"),
    (["--statoverride=UNMATCHED"], "Unmatched statoverride paths: /no/such"),
    (["--skip-list=UNMATCHED"], "Unmatched skip-list paths"),
    (["--body-file=/no/such/body"], "/no/such/body"),
    (["--tree=tar=JUNK"], "not a tar archive"),
    (["--tree=tar=TRUNCATED"], "truncated tar archive"),
    (["--tree=zip=SRC"], "Invalid tree type specification 'zip'"),
    (["--tree=SRC"], "Missing type in tree specification"),
    (["--tree=ref=nosuchref"], "not found"),
    (["--bootable", "--tree=dir=SRC"], "No such file or directory: /usr"),
    (["--keep-metadata=nope", "--tree=dir=SRC"], "Missing metadata key 'nope'"),
    (["--fsync=maybe", "--tree=dir=SRC"], "Invalid boolean argument 'maybe'"),
    (["--tar-pathname-filter=x,\\q", "--tree=tar=TRUNCATED"], "unknown escape sequence"),
    (["--selinux-policy=/", "--tree=dir=SRC"], "not supported"),
    (["--sign-type=rsa", "--sign=k", "--tree=dir=SRC"], "signature type is not implemented"),
]


@pytest.mark.parametrize(("opts", "needle"), ERROR_CASES, ids=[c[1][:24] for c in ERROR_CASES])
@pytest.mark.interop
@needs_ostree
def test_errors_leave_the_branch_and_repository_intact(opts: list[str], needle: str,
                                                       tree: Path, tarballs: dict[str, Path],
                                                       tmp_path: Path) -> None:
    repo = _init(tmp_path / "repo", "archive")
    src = tmp_path / "src"
    shutil.copytree(tree / "a", src, symlinks=True)
    first = ostree(f"--repo={repo}", "commit", "-b", "m", "--timestamp=@0", src).stdout.strip()
    (tmp_path / "bad").write_text("0755 /a\ngarbage\n")
    (tmp_path / "unmatched").write_text("=448 /no/such\n2048 /no/such\n")
    (tmp_path / "junk.tar").write_bytes(b"this is not a tarball\n" * 40)
    (tmp_path / "trunc.tar").write_bytes(gzip.decompress(tarballs["pax"].read_bytes())[:4000])
    subs = {"BAD_STATOVERRIDE": tmp_path / "bad", "UNMATCHED": tmp_path / "unmatched",
            "JUNK": tmp_path / "junk.tar", "TRUNCATED": tmp_path / "trunc.tar", "SRC": src}
    args = []
    for arg in opts:
        for key, value in subs.items():
            arg = arg.replace(key, str(value))
        args.append(arg)
    if not any(a.startswith("--tree") for a in args):
        args.append(str(src))
    proc = pyostree(f"--repo={repo}", "commit", "-b", "m", *args, env=pyostree_env(tmp_path))
    assert_one_error(proc, needle)
    assert proc.stdout == ""
    assert read_refs(repo) == {"heads/m": first}
    assert ostree(f"--repo={repo}", "fsck", check=False).returncode == 0
    assert sorted(os.listdir(src)) == sorted(os.listdir(tree / "a"))


# --------------------------------------------------------------------------- pure parts


def test_statoverride_modes_are_c_numbers() -> None:
    parsed = parse_statoverride("2048 /a b\n=0755 /x\n0x1ED /h\n=abc /z\n\n")
    assert parsed.adds == {"/a b": 2048, "/h": 0o755}
    assert parsed.overrides == {"/x": 755, "/z": 0}  # decimal, as g_ascii_strtod reads it


def test_pathname_filter_uses_glib_replacement_syntax() -> None:
    assert compile_pathname_filter(r"(a)(b)?,[\2\U\1\E\0]")("ab a") == "[bAab] [Aa]"
    assert compile_pathname_filter(r"x,\x41\101\g<0>\\")("x") == "AAx\\"
    assert compile_pathname_filter(r"^,usr/")("etc/x") == "usr/etc/x"
    assert compile_pathname_filter(r"(?P<n>e),\g<n>\l\uE")("e") == "eE"


def test_modifier_file_info_from_stat(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    info = FileInfo.from_stat(os.lstat(tmp_path / "f"))
    assert info.size == 3 and stat.S_ISREG(info.mode)
    assert FileInfo.from_stat(os.lstat(tmp_path)).size == 0
