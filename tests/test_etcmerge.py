"""pyostree.etcmerge: the /etc three-way merge (and two corner cases against the real ostree)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pyostree import deploy as D
from pyostree.errors import DeployError
from pyostree.etcmerge import diff_etc, merge_etc

from . import realostree as ro
from .test_deploy import OS, manifest, new_sysroot


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def three(tmp_path: Path) -> tuple[Path, Path, Path]:
    """orig (old defaults), modified (the admin's /etc), new (a copy of the new defaults)."""
    orig, modified, new = tmp_path / "orig", tmp_path / "mod", tmp_path / "new"
    base = {"a.conf": "a\n", "b.conf": "b\n", "gone.conf": "g\n", "d/x.conf": "x\n",
            "mode.conf": "m\n", "dironly/f": "f\n"}
    _write(orig, base)
    (orig / "link").symlink_to("a.conf")
    shutil.copytree(orig, modified, symlinks=True)
    _write(new, {**base, "a.conf": "a2\n", "b.conf": "b2\n", "fresh.conf": "n\n"})
    (new / "link").symlink_to("a.conf")
    # the admin's changes
    (modified / "a.conf").write_text("mine\n")
    (modified / "gone.conf").unlink()
    shutil.rmtree(modified / "d")
    _write(modified, {"added/deep/z.conf": "z\n", "top.conf": "t\n"})
    os.chmod(modified / "added", 0o700)
    os.chmod(modified / "mode.conf", 0o600)
    os.chmod(modified / "dironly", 0o700)
    (modified / "link").unlink()
    (modified / "link").symlink_to("no-such-file")
    os.mkfifo(modified / "fifo")
    return orig, modified, new


def test_diff_classifies_like_ostree_diff_dirs(three: tuple[Path, Path, Path]) -> None:
    orig, modified, _ = three
    diff = diff_etc(orig, modified)
    assert diff.removed == ("d", "gone.conf")
    assert diff.modified == ("a.conf", "dironly", "link", "mode.conf")
    assert diff.added == ("added", "added/deep", "added/deep/z.conf", "fifo", "top.conf")


def test_merge_applies_local_changes(three: tuple[Path, Path, Path]) -> None:
    orig, modified, new = three
    before = (manifest(orig), manifest(modified))
    messages: list[str] = []
    merge_etc(orig, modified, new, log=messages.append)
    result = manifest(new)
    assert result["a.conf"][4] == "mine\n"  # local edit wins over the new default
    assert result["b.conf"][4] == "b2\n"  # untouched: the new default
    assert result["fresh.conf"][4] == "n\n"
    assert "gone.conf" not in result and "d" not in result and "d/x.conf" not in result
    assert result["added"][1] == 0o700 and result["added/deep/z.conf"][4] == "z\n"
    assert result["top.conf"][4] == "t\n"
    assert result["mode.conf"][1] == 0o600 and result["mode.conf"][4] == "m\n"
    assert result["link"] == ("link", 0o777, 0, 0, "no-such-file")  # not followed
    assert result["dironly"][1] == 0o755  # a directory's mode-only change is not carried
    assert "fifo" not in result
    assert messages[0] == "Copying /etc changes: 4 modified, 2 removed, 5 added"
    assert any("Ignoring non-regular/non-symlink file" in m for m in messages)
    assert (manifest(orig), manifest(modified)) == before  # inputs untouched


def test_file_mtime_is_kept_and_parents_created(tmp_path: Path) -> None:
    orig, modified, new = tmp_path / "o", tmp_path / "m", tmp_path / "n"
    _write(orig, {"keep/x": "x\n", "moded/x": "x\n"})
    _write(modified, {"keep/x": "x\n", "keep/sub/y": "y\n", "moded/x": "x\n"})
    os.chmod(orig / "keep", 0o750)
    os.chmod(modified / "keep", 0o750)
    os.chmod(modified / "moded", 0o700)
    os.utime(modified / "keep/sub/y", (1000, 2000))
    new.mkdir()  # the new defaults have neither keep/ nor moded/
    diff = merge_etc(orig, modified, new)
    assert diff.modified == ("moded",) and diff.added == ("keep/sub", "keep/sub/y")
    assert (new / "keep/sub/y").read_text() == "y\n"
    assert (new / "keep/sub/y").stat().st_mtime == 2000
    # the missing parent is made from the local template, with nothing else in it
    assert os.stat(new / "keep").st_mode & 0o7777 == 0o750
    assert not (new / "keep/x").exists()
    # a locally modified directory missing from the defaults is copied whole
    assert os.stat(new / "moded").st_mode & 0o7777 == 0o700
    assert (new / "moded/x").read_text() == "x\n"


def test_file_that_newly_defaults_to_a_directory_is_an_error(tmp_path: Path) -> None:
    orig, modified, new = tmp_path / "o", tmp_path / "m", tmp_path / "n"
    orig.mkdir()
    _write(modified, {"thing": "local\n"})
    _write(new, {"thing/inside": "default\n"})
    with pytest.raises(DeployError, match="Modified config file newly defaults to directory"):
        merge_etc(orig, modified, new)


def test_locally_replaced_file_with_directory(tmp_path: Path) -> None:
    orig, modified, new = tmp_path / "o", tmp_path / "m", tmp_path / "n"
    _write(orig, {"thing": "default\n"})
    _write(modified, {"thing/inside": "local\n"})
    _write(new, {"thing": "default2\n"})
    diff = merge_etc(orig, modified, new)
    assert diff.modified == ("thing",) and diff.added == ()
    assert (new / "thing/inside").read_text() == "local\n"


@pytest.mark.interop
def test_corner_cases_match_real_ostree(tmp_path: Path) -> None:
    """test-admin-deploy-etcmerge-cornercases.sh: a default that becomes a directory over a
    locally modified file fails; a removed default directory keeps the admin's new file."""
    if not ro.can_run_admin():
        pytest.skip("needs the real ostree, unshare and root")
    src = ro.init_repo(tmp_path / "src")
    t = ro.make_os_tree(tmp_path / "t", version="1", etc={"os.conf": "1\n",
                                                          "initially-empty/.keep": ""})
    c1 = ro.commit(src, t, "testos/1", version="1")
    (t / "usr/etc/somenewdir").mkdir()
    c2 = ro.commit(src, t, "testos/2", version="2")
    shutil.rmtree(t / "usr/etc/somenewdir")
    shutil.rmtree(t / "usr/etc/initially-empty")
    c3 = ro.commit(src, t, "testos/3", version="3")
    refs = "testos/1 testos/2 testos/3"
    # pyostree
    sysroot = new_sysroot(tmp_path / "py")
    repo = sysroot.repo_path
    ro.pull_local(repo, src, *refs.split())
    d1 = D.deploy(sysroot, OS, c1)
    etc = sysroot.deployment_path(d1) / "etc"
    (etc / "somenewdir").write_text("some content blah\n")
    with pytest.raises(DeployError) as err:
        D.deploy(sysroot, OS, c2)
    (etc / "somenewdir").unlink()
    (etc / "initially-empty/mynewfile").write_text("")
    d3 = D.deploy(sysroot, OS, c3)
    mine = manifest(sysroot.deployment_path(d3) / "etc")
    # the real ostree
    script = f"""
S="$T/sys"; mkdir "$S"
$OSTREE admin init-fs "$S"
$OSTREE admin os-init --sysroot="$S" {OS}
$OSTREE --repo="$S/ostree/repo" pull-local {src} {refs} >/dev/null
$OSTREE admin deploy --sysroot="$S" --os={OS} {c1}
E="$S/ostree/deploy/{OS}/deploy/{c1}.0/etc"
echo "some content blah" > "$E/somenewdir"
if $OSTREE admin deploy --sysroot="$S" --os={OS} {c2} 2> "$OUT/err.txt"; then exit 7; fi
rm "$E/somenewdir"
touch "$E/initially-empty/mynewfile"
$OSTREE admin deploy --sysroot="$S" --os={OS} {c3}
tar -C "$S/ostree/deploy/{OS}/deploy/{c3}.0" -cf - etc | tar -C "$OUT" -xf -
"""
    ro.run_admin_scenario(tmp_path, script)
    real_err = (tmp_path / "out/err.txt").read_text()
    assert "Modified config file newly defaults to directory 'somenewdir'" in real_err
    assert "Modified config file newly defaults to directory 'somenewdir'" in str(err.value)
    assert mine == manifest(tmp_path / "out/etc")
    assert mine["initially-empty/mynewfile"][0] == "file"
