"""``admin config-diff`` and ``admin set-origin``, judged by the real ostree 2022.7.

One sysroot is made by pyostree (two deployments, local changes in both ``/etc``). The real
``ostree admin`` runs on copies of it inside a private tmpfs
(:func:`realostree.run_admin_scenario`), and so does ``pyostree`` for the outputs that depend on
the directory order (config-diff lists paths in GLib's enumeration order, which depends on inode
numbers, so both must read the very same directories). Error cases run pyostree as a real
process on the on-disk sysroot, check that nothing changed and compare the one ``error:`` line
with what the real ostree printed.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyostree import deploy as D
from pyostree.errors import DeployError
from pyostree.etcmerge import diff_deployment_etc, format_etc_diff
from pyostree.glibdir import glib_listdir
from pyostree.sysroot import Sysroot, config_diff

from . import realostree as ro
from .pullhelpers import assert_one_error, listing, pyostree, pyostree_env
from .test_deploy import OS, REF, new_sysroot, py_commit

ROOT = Path(__file__).resolve().parent.parent
MANY = [f"f{i:02d}.conf" for i in range(40)]
ETC = {
    "a.conf": "a=1\n", "samesize.conf": "abc\n", "mode.conf": "m\n", "owned.conf": "o\n",
    "gone.conf": "g\n", "gonedir/z.conf": "z\n", "dir/x.conf": "x\n", "dir/sub/y.conf": "y\n",
    "untouched.conf": "u\n", "typechg": "a file\n", "xattr.conf": "x\n",
    **{f"many/{name}": f"{name}\n" for name in random.Random(7).sample(MANY, len(MANY))},
}

# (name, tool arguments after "admin"); SYS is the sysroot, EMPTY one without deployments
ERROR_CASES = [
    ("diff-not-booted", ["config-diff", "--sysroot=SYS"]),
    ("diff-unknown-os", ["config-diff", "--sysroot=SYS", "--os=nope"]),
    ("diff-no-deployments", ["config-diff", "--sysroot=EMPTY", f"--os={OS}"]),
    ("origin-not-booted", ["set-origin", "--sysroot=SYS", "r", "http://example.com/r"]),
    ("origin-out-of-range", ["set-origin", "--sysroot=SYS", "--index=7", "r",
                             "http://example.com/r"]),
    ("origin-negative-index", ["set-origin", "--sysroot=SYS", "--index=-2", "r",
                               "http://example.com/r"]),
    ("origin-no-deployments", ["set-origin", "--sysroot=EMPTY", "--index=0", "r",
                               "http://example.com/r"]),
    ("origin-bad-set", ["set-origin", "--sysroot=SYS", "--index=0", "--set=novalue", "r",
                        "http://example.com/r"]),
    ("origin-bad-remote-name", ["set-origin", "--sysroot=SYS", "--index=0", "bad/name",
                                "http://example.com/r"]),
]

# set-origin runs, the same for both tools, on a physical sysroot (remotes go to the repo
# config) and on one with a ``sysroot`` directory (not physical: remotes.d)
SET_ORIGIN_STEPS = [
    # a new remote with options (a repeated key keeps its place, the last value wins); the
    # branch comes from the current refspec; the pin of deployment 1 is dropped
    ["--index=1", "--set=gpg-verify=false", "--set=branches=a;b", "-s", "x=1", "--set=x=2",
     "newremote", "http://example.com/repo"],
    # the remote exists with another URL: left as it is, only the origin changes
    ["--index=0", "origin", "http://different.example.com/repo", "other/branch"],
    # existing remote, --set ignored, branch from the current refspec (other/branch)
    ["--index=0", "--set=foo=bar", "newremote", "http://ignored.example.com/"],
]
NONPHYSICAL_STEP = ["--index=0", "--set=gpg-verify=false", "r2", "http://example.com/r2",
                    "r2/branch"]


def _modify_common(etc: Path) -> None:
    """The local changes made to the first deployment's /etc (merged into the second)."""
    (etc / "a.conf").write_text("a=local\n")
    (etc / "samesize.conf").write_text("xyz\n")  # same size and mode, other content
    os.chmod(etc / "mode.conf", 0o600)
    os.chown(etc / "owned.conf", 1, 1)
    (etc / "gone.conf").unlink()
    shutil.rmtree(etc / "gonedir")
    (etc / "new.conf").write_text("new\n")
    (etc / "newdir/sub").mkdir(parents=True)
    (etc / "newdir/sub/f").write_text("f\n")
    (etc / "link").unlink()
    (etc / "link").symlink_to("mode.conf")
    (etc / "typechg").unlink()
    (etc / "typechg").mkdir()
    (etc / "typechg/inside").write_text("i\n")
    os.chmod(etc / "dir", 0o700)
    (etc / "dir/sub/y.conf").write_text("y local\n")
    rng = random.Random(11)
    for name in rng.sample(MANY, 5):
        (etc / "many" / name).write_text("changed\n")
    (etc / "many" / MANY[5]).unlink()
    for i in rng.sample(range(12), 12):
        (etc / f"many/g{i:02d}.conf").write_text("added\n")


def _copy_sysroot(src: Path, dest: Path) -> None:
    """``cp -a``: hardlinks, ownership and the fifo in /etc included."""
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)


def _set_xattr(path: Path) -> bool:
    try:
        os.setxattr(path, "trusted.pyostree-test", b"1", follow_symlinks=False)
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two deployments made by pyostree: d1 (index 1, pinned, with local /etc changes) and d2
    (index 0, the changes merged, plus a few of its own); an existing remote ``origin``."""
    tmp = tmp_path_factory.mktemp("admin-extra")
    sysroot = new_sysroot(tmp / "sys")
    t1 = ro.make_os_tree(tmp / "t1", version="1.0", kernel="v1", etc=ETC)
    (t1 / "usr/etc/link").symlink_to("a.conf")
    py_commit(sysroot.repo_path, t1, "1.0")
    d1 = D.deploy(sysroot, OS, REF, kargs=["root=LABEL=root"])
    etc1 = sysroot.deployment_path(d1) / "etc"
    _modify_common(etc1)
    t2 = ro.make_os_tree(tmp / "t2", version="2.0", kernel="v2",
                         etc={**ETC, "untouched.conf": "u2\n", "fresh.conf": "fresh\n"})
    (t2 / "usr/etc/link").symlink_to("a.conf")
    py_commit(sysroot.repo_path, t2, "2.0")
    d2 = D.deploy(sysroot, OS, REF)
    found = sysroot.find(d1)
    assert found is not None and found.index == 1 and d2.index == 0
    d1 = found
    etc2 = sysroot.deployment_path(d2) / "etc"
    (etc1 / "only-in-d1.conf").write_text("1\n")
    (etc2 / "only-in-d2.conf").write_text("2\n")
    os.mkfifo(etc2 / "a-fifo")
    assert _set_xattr(etc2 / "xattr.conf") or os.geteuid() != 0  # xattrs are not compared
    D.pin(sysroot, 1)
    config = sysroot.repo_path / "config"
    config.write_text(config.read_text() + '\n[remote "origin"]\nurl=http://old.example.com/\n')
    empty = tmp / "empty"
    empty.mkdir()
    D.init_fs(empty)
    D.os_init(Sysroot(empty), OS)
    return {"tmp": tmp, "sysroot": sysroot, "d1": d1, "d2": d2, "empty": empty}


def _words(args: list[str], sys_path: str, empty_path: str) -> list[str]:
    return [a.replace("=SYS", "=" + sys_path).replace("=EMPTY", "=" + empty_path)
            for a in args]


@pytest.fixture(scope="module")
def real(world: dict[str, Any]) -> Path:
    """Run the real ostree (and, where the order of a directory matters, pyostree) on copies of
    the sysroot in a private tmpfs; returns the directory with the results."""
    if not ro.can_run_admin():
        pytest.skip("needs the real ostree, unshare and root")
    tmp: Path = world["tmp"]
    sysroot: Sysroot = world["sysroot"]
    py = f"{shlex.quote(sys.executable)} -m pyostree"
    lines = ["set +e", "unset PYOSTREE_BOOTED"]
    for name in ("diff", "errors", "real", "mine", "real-np", "mine-np"):
        lines.append(f'cp -a {shlex.quote(str(sysroot.path))} "$T/{name}"')
    lines.append(f'cp -a {shlex.quote(str(world["empty"]))} "$T/empty"')
    lines.append('mkdir "$T/real-np/sysroot" "$T/mine-np/sysroot"')
    # config-diff: both tools on the very same directories
    lines.append(f'$OSTREE admin config-diff --sysroot="$T/diff" --os={OS} '
                 '> "$OUT/diff-real.txt" 2> "$OUT/diff-real.err"; echo $? > "$OUT/diff-real.rc"')
    lines.append(f'{py} admin config-diff --sysroot="$T/diff" --os={OS} '
                 '> "$OUT/diff-py.txt" 2> "$OUT/diff-py.err"; echo $? > "$OUT/diff-py.rc"')
    for case, args in ERROR_CASES:
        cmd = " ".join(_words(args, "$T/errors", "$T/empty"))  # no spaces in these words
        lines.append(f'$OSTREE admin {cmd} > /dev/null 2> "$OUT/{case}.err"; '
                     f'echo $? > "$OUT/{case}.rc"')
    runs = [(step, "") for step in SET_ORIGIN_STEPS] + [(NONPHYSICAL_STEP, "-np")]
    for step, suffix in runs:
        for tool, name in (("$OSTREE", "real"), (py, "mine")):
            lines.append(f'{tool} admin set-origin --sysroot="$T/{name}{suffix}" '
                         f'{shlex.join(step)} || echo "{name}: {shlex.join(step)}" '
                         '>> "$OUT/set-origin-failures.txt"')
    for name in ("real", "mine", "real-np", "mine-np"):
        lines.append(f'$OSTREE admin status --sysroot="$T/{name}" > "$OUT/{name}-status.txt"')
        lines.append(f'mkdir -p "$OUT/{name}" && cp "$T/{name}/ostree/repo/config" "$OUT/{name}/"')
        lines.append(f'cp "$T/{name}"/ostree/deploy/{OS}/deploy/*.origin "$OUT/{name}/"')
        lines.append(f'if [ -d "$T/{name}/etc/ostree" ]; then '
                     f'cp -a "$T/{name}/etc/ostree" "$OUT/{name}/etc-ostree"; fi')
    env = {"PYTHONPATH": str(ROOT), "PYOSTREE_RUN_DIR": str(tmp / "run")}
    result = ro.run_admin_scenario(tmp / "scenario", "\n".join(lines) + "\n", env=env)
    out = tmp / "scenario/out"
    (out / "scenario.log").write_text(result.stdout + result.stderr)
    return out


# ---------------------------------------------------------------------------- config-diff


@pytest.mark.interop
def test_config_diff_output_is_byte_identical(world: dict[str, Any], real: Path) -> None:
    mine, theirs = (real / "diff-py.txt").read_text(), (real / "diff-real.txt").read_text()
    assert (real / "diff-real.rc").read_text().strip() == "0", (real / "diff-real.err")
    assert (real / "diff-py.err").read_text() == ""
    assert mine == theirs
    lines = theirs.splitlines()
    # the cases, spelled out (d2 is the merge deployment: the first one, not booted)
    for line in ("M    a.conf", "M    samesize.conf", "M    mode.conf", "M    owned.conf",
                 "M    link", "M    typechg", "M    dir/sub/y.conf", "D    gone.conf",
                 "D    gonedir", "A    new.conf", "A    newdir", "A    newdir/sub",
                 "A    newdir/sub/f", "A    only-in-d2.conf", "A    a-fifo",
                 f"D    many/{MANY[5]}", "A    many/g00.conf"):
        assert line in lines
    assert not any("xattr.conf" in line or "typechg/inside" in line or "untouched" in line
                   for line in lines)
    kinds = [line[0] for line in lines]
    assert kinds == sorted(kinds, key="MDA".index)  # all M, then all D, then all A
    assert lines.index("A    newdir") < lines.index("A    newdir/sub") < lines.index(
        "A    newdir/sub/f")


@pytest.mark.interop
def test_config_diff_on_disk_lists_the_same_paths(world: dict[str, Any], real: Path) -> None:
    """On the original sysroot the order may differ (other inode numbers), the set may not."""
    sysroot = Sysroot(world["sysroot"].path).load()
    text = format_etc_diff(config_diff(sysroot, OS))
    assert sorted(text.splitlines()) == sorted((real / "diff-real.txt").read_text().splitlines())


def test_config_diff_of_the_booted_deployment(world: dict[str, Any], tmp_path: Path) -> None:
    """Booted into d1 (index 1): without --os, and with --os of its own stateroot, the booted
    deployment is the one compared (ostree_sysroot_get_merge_deployment)."""
    sysroot: Sysroot = world["sysroot"]
    d1_dir = sysroot.deployment_path(world["d1"])
    env = {**pyostree_env(tmp_path), "PYOSTREE_BOOTED": str(d1_dir),
           "PYOSTREE_RUN_DIR": str(tmp_path / "run"), "PYTHONPATH": str(ROOT)}
    plain = pyostree("admin", "config-diff", f"--sysroot={sysroot.path}", env=env)
    with_os = pyostree("admin", f"--sysroot={sysroot.path}", "config-diff", f"--os={OS}",
                       env=env)
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr
    assert with_os.stdout == plain.stdout
    assert plain.stdout == format_etc_diff(diff_deployment_etc(d1_dir))
    lines = plain.stdout.splitlines()
    assert "A    only-in-d1.conf" in lines and "M    dir" in lines
    assert "A    only-in-d2.conf" not in lines


def test_glib_listdir_is_inode_order(tmp_path: Path) -> None:
    names = [f"n{i}" for i in random.Random(3).sample(range(60), 60)]
    for name in names:
        (tmp_path / name).write_text("")
    for name in names[::3]:  # free some inodes and reuse them out of name order
        (tmp_path / name).unlink()
    for name in names[::3]:
        (tmp_path / (name + "b")).write_text("")
    got = glib_listdir(tmp_path)
    assert sorted(got) == sorted(os.listdir(tmp_path))
    assert got == sorted(got, key=lambda n: os.lstat(tmp_path / n).st_ino)


# ---------------------------------------------------------------------------- set-origin


def _origins(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(root.glob("*.origin"))}


@pytest.mark.interop
def test_set_origin_matches_real_ostree(world: dict[str, Any], real: Path) -> None:
    assert not (real / "set-origin-failures.txt").exists(), (
        (real / "set-origin-failures.txt").read_text(), (real / "scenario.log").read_text())
    mine, theirs = real / "mine", real / "real"
    assert (mine / "config").read_text() == (theirs / "config").read_text()
    assert _origins(mine) == _origins(theirs)
    assert (real / "mine-status.txt").read_text() == (real / "real-status.txt").read_text()
    assert not (theirs / "etc-ostree").exists() and not (mine / "etc-ostree").exists()
    # what that is
    config = (theirs / "config").read_text()
    assert '[remote "origin"]\nurl=http://old.example.com/\n' in config  # URL kept
    assert "url=http://different" not in config and "ignored" not in config
    d1, d2 = world["d1"], world["d2"]
    assert _origins(theirs) == {
        f"{d1.name}.origin": f"[origin]\nrefspec=newremote:{REF}\n",  # the pin is gone
        f"{d2.name}.origin": "[origin]\nrefspec=newremote:other/branch\n",
    }
    status = (real / "real-status.txt").read_text()
    assert "    origin refspec: newremote:other/branch\n" in status
    assert "Pinned" not in status


@pytest.mark.interop
def test_set_origin_on_a_non_physical_sysroot_uses_remotes_d(real: Path) -> None:
    """With a ``sysroot`` directory (as in a deployment root, or when booted) libostree keeps
    new remotes in ``etc/ostree/remotes.d/NAME.conf`` and leaves the repo config alone."""
    mine, theirs = real / "mine-np", real / "real-np"
    assert (mine / "config").read_text() == (theirs / "config").read_text()
    assert "r2" not in (theirs / "config").read_text()
    conf = theirs / "etc-ostree/remotes.d/r2.conf"
    assert (mine / "etc-ostree/remotes.d/r2.conf").read_text() == conf.read_text()
    assert conf.read_text().startswith('[remote "r2"]\nurl=http://example.com/r2\n')
    assert _origins(mine) == _origins(theirs)
    assert (real / "mine-np-status.txt").read_text() == (real / "real-np-status.txt").read_text()


def test_set_origin_defaults_to_the_booted_deployment(world: dict[str, Any],
                                                      tmp_path: Path) -> None:
    src: Sysroot = world["sysroot"]
    path = tmp_path / "sys"
    _copy_sysroot(src.path, path)
    d1 = world["d1"]
    sysroot = Sysroot(path, booted=path / d1.dirpath, mutable_deployments=True,
                      run_dir=tmp_path / "run").load()
    before = _origins(path / f"ostree/deploy/{OS}/deploy")
    config = (path / "ostree/repo/config").read_text()
    D.set_origin(sysroot, "r2", "http://example.com/r2", "r2/branch",
                 options={"gpg-verify": "false"})
    after = _origins(path / f"ostree/deploy/{OS}/deploy")
    assert after[f"{d1.name}.origin"] == "[origin]\nrefspec=r2:r2/branch\n"
    assert {k: v for k, v in after.items() if k != f"{d1.name}.origin"} == {
        k: v for k, v in before.items() if k != f"{d1.name}.origin"}
    # booted means not physical: the remote goes to etc/ostree/remotes.d, as ostree does
    assert (path / "ostree/repo/config").read_text() == config
    remote = (path / "etc/ostree/remotes.d/r2.conf").read_text()
    assert remote == '[remote "r2"]\nurl=http://example.com/r2\ngpg-verify=false\n'
    booted = sysroot.booted_deployment
    assert booted is not None and booted.origin_refspec == "r2:r2/branch"


# ---------------------------------------------------------------------------- errors


def _disk_state(*roots: Path) -> list[dict[str, tuple[Any, ...]]]:
    return [listing(root) for root in roots]


@pytest.mark.parametrize(("case", "args"), ERROR_CASES, ids=[c for c, _ in ERROR_CASES])
def test_errors_are_one_line_and_change_nothing(
    world: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest, case: str,
    args: list[str],
) -> None:
    sysroot: Sysroot = world["sysroot"]
    empty: Path = world["empty"]
    env = {**pyostree_env(tmp_path), "PYTHONPATH": str(ROOT),
           "PYOSTREE_RUN_DIR": str(tmp_path / "run")}
    env.pop("PYOSTREE_BOOTED", None)
    before = _disk_state(sysroot.path, empty)
    proc = pyostree("admin", *_words(args, str(sysroot.path), str(empty)), env=env)
    line = assert_one_error(proc)
    assert _disk_state(sysroot.path, empty) == before
    if ro.can_run_admin():
        real: Path = request.getfixturevalue("real")
        assert (real / f"{case}.rc").read_text().strip() != "0"
        assert line == (real / f"{case}.err").read_text().strip().splitlines()[-1]


@pytest.mark.parametrize(("args", "needles"), [
    (["set-origin", "--index=0", "r"], ["URL"]),  # usage: REMOTENAME and URL are required
    (["set-origin", "--index=abc", "r", "http://example.com/"], ["--index"]),
    (["set-origin", "--index=0", "--set==v", "r", "http://example.com/"], ["Empty key"]),
    # stricter than ostree: a URL pyostree could never pull from is refused
    (["set-origin", "--index=0", "r", "not-a-url"], ["Invalid URL"]),
    (["set-origin", "--index=0", "r", "http://example.com/", "no spaces/allowed"], ["branch"]),
    (["config-diff", f"--os={OS}", "extra-argument"], ["unrecognized"]),
])
def test_more_usage_errors(world: dict[str, Any], tmp_path: Path, args: list[str],
                           needles: list[str]) -> None:
    sysroot: Sysroot = world["sysroot"]
    env = {**pyostree_env(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("PYOSTREE_BOOTED", None)
    before = _disk_state(sysroot.path)
    proc = pyostree("admin", f"--sysroot={sysroot.path}", *args, env=env)
    assert_one_error(proc, *needles)
    assert _disk_state(sysroot.path) == before


def test_origin_without_refspec_needs_a_branch(world: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "sys"
    _copy_sysroot(world["sysroot"].path, path)
    origin = path / world["d2"].origin_relpath
    origin.write_text("[origin]\ncustom=1\n")
    sysroot = Sysroot(path, mutable_deployments=True, run_dir=tmp_path / "run")
    before = _disk_state(path)
    with pytest.raises(DeployError, match="No host refspec found, branch is required"):
        D.set_origin(sysroot, "r", "http://example.com/", index=0)
    assert _disk_state(path) == before
    D.set_origin(sysroot, "r", "http://example.com/", "some/branch", index=0)
    assert origin.read_text() == "[origin]\nrefspec=r:some/branch\n"
