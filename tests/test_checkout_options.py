"""``pyostree checkout`` options beyond the basic ones, judged against the real ``ostree``:
--union-add, --union-identical, --whiteouts, --process-passthrough-whiteouts, --allow-noent,
--skip-list, --from-file/--from-stdin, --fsync, --bareuseronly-dirs, --disable-cache."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyostree.checkout import parse_checkout_list

from .corehelpers import (
    IS_ROOT,
    error_lines,
    make_tree,
    needs_ostree,
    ostree,
    run_cli,
    run_pyostree_process,
    snapshot,
)

pytestmark = [pytest.mark.interop, needs_ostree]


def _snap(root: Path) -> dict[str, tuple[Any, ...]] | None:
    """:func:`snapshot`, plus the character devices it cannot read; None if ``root`` is absent."""
    if not os.path.lexists(root):
        return None
    devices: dict[str, tuple[Any, ...]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISCHR(st.st_mode):
                devices[str(path.relative_to(root))] = (
                    "c", st.st_rdev, oct(stat.S_IMODE(st.st_mode)), (st.st_uid, st.st_gid))
    aside = {rel: root.parent / f"{root.name}.chr-{i}" for i, rel in enumerate(devices)}
    for rel, where in aside.items():  # snapshot() cannot read devices: put them aside
        (root / rel).rename(where)
    try:
        result = snapshot(root, ownership=IS_ROOT)
    finally:
        for rel, where in aside.items():
            where.rename(root / rel)
    result.update(devices)
    return result


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An archive and (as root) a bare repo made by ostree: ``main`` (a tree), ``changed``
    (readme.txt differs), ``layer`` (whiteouts) and ``evil`` (whiteouts naming . and ..)."""
    base = tmp_path_factory.mktemp("checkout-options")
    tree = make_tree(base / "tree", xattrs=False, large=False)
    (tree / "world").mkdir()
    os.chmod(tree / "world", 0o1777)
    changed = make_tree(base / "changed", xattrs=False, large=False)
    (changed / "readme.txt").write_bytes(b"something else\n")
    layer = base / "layer"
    (layer / "a" / "b").mkdir(parents=True)
    for rel in (".wh.readme.txt", "a/.wh..wh..opq", "bin/.wh.tool", ".ostree-wh.gone",
                ".wh.emptydir"):
        (layer / rel).parent.mkdir(parents=True, exist_ok=True)
        (layer / rel).write_bytes(b"")
    (layer / "a" / "b" / "new").write_bytes(b"new\n")
    (layer / "bin" / "tool2").write_bytes(b"tool2\n")
    evil = base / "evil"
    (evil / "sub").mkdir(parents=True)
    (evil / "sub" / ".wh...").write_bytes(b"")
    out: dict[str, Path] = {}
    for mode in ("archive", "bare") if IS_ROOT else ("archive",):
        repo = base / f"repo-{mode}"
        ostree(f"--repo={repo}", "init", f"--mode={mode}")
        for ref, src in (("main", tree), ("changed", changed), ("layer", layer),
                         ("evil", evil)):
            ostree(f"--repo={repo}", "commit", "-b", ref, "-s", ref, src)
        out[mode] = repo
    return out


def _prepopulate(dest: Path) -> None:
    (dest / "a" / "b").mkdir(parents=True)
    (dest / "readme.txt").write_bytes(b"old contents\n")
    (dest / "keep-me").write_bytes(b"mine\n")
    (dest / "a" / "b" / "mine").write_bytes(b"mine too\n")
    (dest / "gone").write_bytes(b"to be whited out\n")


def _both(repo: Path, tmp: Path, args: list[str], *, setup: Callable[[Path], None] | None = None,
          stdin: bytes | None = None) -> tuple[Path, Path]:
    """Run ``checkout ARGS DEST`` with ostree and pyostree on identical destinations; their
    exit statuses must agree. Returns (theirs, ours)."""
    tmp.mkdir(parents=True, exist_ok=True)
    theirs, ours = tmp / "theirs", tmp / "ours"
    if setup is not None:
        setup(theirs)
        setup(ours)
    results = []
    for cmd, dest in ((["ostree"], theirs), ([sys.executable, "-m", "pyostree"], ours)):
        proc = subprocess.run([*cmd, f"--repo={repo}", "checkout", *args, str(dest)],
                              input=stdin, capture_output=True, check=False)
        results.append(proc)
    assert (results[0].returncode == 0) == (results[1].returncode == 0), results
    if results[1].returncode != 0:
        lines = error_lines(results[1].stderr.decode())
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return theirs, ours


CASES: list[tuple[str, list[str], bool]] = [
    ("archive", ["--union-add", "main"], True),
    ("archive", ["--union-add", "--subpath=/a", "main"], True),
    ("archive", ["--union", "--whiteouts", "layer"], True),
    ("archive", ["--union-add", "--whiteouts", "layer"], True),
    ("archive", ["--whiteouts", "layer"], False),
    ("archive", ["--process-passthrough-whiteouts", "layer"], False),
    ("archive", ["--union", "--process-passthrough-whiteouts", "layer"], True),
    ("archive", ["--union-add", "--process-passthrough-whiteouts", "layer"], True),
    ("archive", ["-U", "--process-passthrough-whiteouts", "layer"], False),
    ("archive", ["--allow-noent", "--subpath=/nope", "main"], False),
    ("archive", ["--subpath=/nope", "main"], False),
    ("archive", ["--bareuseronly-dirs", "main"], False),
    ("archive", ["-M", "--union", "main"], True),
    ("archive", ["--fsync=false", "main"], False),
    ("archive", ["--fsync=maybe", "main"], False),
    ("archive", ["--disable-cache", "main"], False),
    ("archive", ["--union", "--union-add", "main"], False),
    ("archive", ["--union-identical", "main"], False),
    ("bare", ["-H", "--union-identical", "main"], False),
    ("bare", ["-H", "--union-identical", "--subpath=/bin", "main"], False),
    ("bare", ["-H", "--union-add", "--whiteouts", "layer"], True),
    ("bare", ["--bareuseronly-dirs", "-H", "main"], False),
]


@pytest.mark.parametrize(("mode", "args", "prepopulate"), CASES,
                         ids=[f"{m}:{' '.join(a)}" for m, a, _ in CASES])
def test_option_matches_ostree(mode: str, args: list[str], prepopulate: bool,
                               repos: dict[str, Path], tmp_path: Path) -> None:
    if mode not in repos:
        pytest.skip(f"no {mode} repository (needs root)")
    theirs, ours = _both(repos[mode], tmp_path, args,
                         setup=_prepopulate if prepopulate else None)
    assert _snap(ours) == _snap(theirs)


def test_union_identical_layers(repos: dict[str, Path], tmp_path: Path) -> None:
    """The same commit twice is fine; a different readme.txt is a conflict, for both."""
    if "bare" not in repos:
        pytest.skip("needs root (a bare repository)")
    repo = repos["bare"]

    def base(dest: Path) -> None:
        ostree(f"--repo={repo}", "checkout", "-H", "main", dest)

    theirs, ours = _both(repo, tmp_path / "same", ["-H", "--union-identical", "main"], setup=base)
    assert _snap(ours) == _snap(theirs)
    theirs, ours = _both(repo, tmp_path / "diff", ["-H", "--union-identical", "changed"],
                         setup=base)
    proc = run_pyostree_process(f"--repo={repo}", "checkout", "-H", "--union-identical",
                                "changed", ours)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert error_lines(proc.stderr) == [proc.stderr.strip()]
    assert "readme.txt" in proc.stderr


SKIP_LIST = "/a/\n/readme.txt\n\n/bin/tool\n/nonexistent\n/../../escape/\n/world\n"


@pytest.mark.parametrize("extra", [[], ["--union"], ["--subpath=/bin"]])
def test_skip_list_matches_ostree(extra: list[str], repos: dict[str, Path],
                                  tmp_path: Path) -> None:
    skip = tmp_path / "skip"
    skip.write_text(SKIP_LIST)
    theirs, ours = _both(repos["archive"], tmp_path, [f"--skip-list={skip}", *extra, "main"])
    assert _snap(ours) == _snap(theirs)
    assert not os.path.lexists(tmp_path.parent / "escape")
    # "/" skips the root itself: nothing is made, and that is success.
    skip.write_text("/\n")
    theirs, ours = _both(repos["archive"], tmp_path / "root", [f"--skip-list={skip}", "main"])
    assert _snap(ours) is None and _snap(theirs) is None


def test_bad_skip_list_is_one_error_line(repos: dict[str, Path], tmp_path: Path) -> None:
    for bad in (tmp_path / "missing", tmp_path):
        proc = run_pyostree_process(f"--repo={repos['archive']}", "checkout",
                                    f"--skip-list={bad}", "main", tmp_path / "out")
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert len(error_lines(proc.stderr)) == 1 and proc.stderr.startswith("error: ")
        assert not (tmp_path / "out").exists()


FROM_FILE = [
    (b"main\0/a\0main\0/bin\0", ["--union-add"]),
    (b"main\0/a\0main\0/bin\0", []),  # the second one finds the destination there
    (b"main\0\0main\0/a\0", ["--union"]),  # an empty subpath is an error in ostree too
    (b"main", []),  # no subpath: the whole commit
    (b"main\0/nope\0layer\0/a\0", ["--allow-noent", "--union"]),
    (b"main /a\n", []),  # not the format: a bad revision
    (b"", []),
]


@pytest.mark.parametrize(("data", "args"), FROM_FILE)
@pytest.mark.parametrize("source", ["file", "stdin"])
def test_from_file_matches_ostree(data: bytes, args: list[str], source: str,
                                  repos: dict[str, Path], tmp_path: Path) -> None:
    listing = tmp_path / "list"
    listing.write_bytes(data)
    if source == "file":
        theirs, ours = _both(repos["archive"], tmp_path, [f"--from-file={listing}", *args])
    else:
        theirs, ours = _both(repos["archive"], tmp_path, ["--from-stdin", *args], stdin=data)
    assert _snap(ours) == _snap(theirs)


def test_bad_from_file_line_is_one_error_line(repos: dict[str, Path], tmp_path: Path) -> None:
    listing = tmp_path / "list"
    listing.write_bytes(b"main\0/a\0no-such-ref\0/a\0")
    proc = run_pyostree_process(f"--repo={repos['archive']}", "checkout", "--union",
                                f"--from-file={listing}", tmp_path / "out")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(error_lines(proc.stderr)) == 1 and proc.stderr.startswith("error: ")
    proc = run_pyostree_process(f"--repo={repos['archive']}", "checkout",
                                f"--from-file={tmp_path / 'missing'}", tmp_path / "out")
    assert proc.returncode != 0 and len(error_lines(proc.stderr)) == 1


def test_whiteout_naming_dot_dot_never_escapes(repos: dict[str, Path], tmp_path: Path) -> None:
    """``.wh...`` would make ostree empty the parent directory; pyostree refuses it."""
    dest = tmp_path / "box" / "out"
    dest.parent.mkdir()
    (dest.parent / "precious").write_bytes(b"keep\n")
    code, _, err = run_cli(f"--repo={repos['archive']}", "checkout", "--whiteouts", "evil", dest)
    assert code != 0 and "Invalid whiteout" in err
    assert (dest.parent / "precious").read_bytes() == b"keep\n"
    assert not dest.exists()


def test_selinux_options_are_refused(repos: dict[str, Path], tmp_path: Path) -> None:
    for opt in ("--selinux-policy=/", "--selinux-prefix=/x"):
        code, _, err = run_cli(f"--repo={repos['archive']}", "checkout", opt, "main",
                               tmp_path / "out")
        assert code == 1 and err.startswith("error: SELinux") and len(error_lines(err)) == 1
        assert not (tmp_path / "out").exists()


def test_parse_checkout_list() -> None:
    assert parse_checkout_list(b"") == []
    assert parse_checkout_list(b"main") == [("main", None)]
    assert parse_checkout_list(b"main\0") == [("main", None)]
    assert parse_checkout_list(b"a\0/x\0b\0\0c\0/y\0") == [("a", "/x"), ("b", ""), ("c", "/y")]
    assert parse_checkout_list(b"a\0/x\0\0b\0/y\0") == [("a", "/x")]  # an empty REV ends
