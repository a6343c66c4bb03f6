"""pyostree.deploy: admin operations, checked against the real ostree 2022.7 where it has them."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyostree import deploy as D
from pyostree import gvariant as gv
from pyostree.commit import commit_tree
from pyostree.errors import DeployError, PyOstreeError
from pyostree.repo import Repo
from pyostree.sysroot import Sysroot, status_text

from . import realostree as ro

OS = "testos"
REF = "testos/stable"
TS = 1704067200


# ---------------------------------------------------------------------------- helpers


def py_commit(repo_path: Path, tree: Path, version: str, branch: str = REF) -> str:
    repo = Repo.open(repo_path)
    return commit_tree(repo, tree, branch=branch, subject=f"v{version}", timestamp=TS,
                       metadata={"version": gv.Variant("s", version)})


def new_sysroot(path: Path) -> Sysroot:
    path.mkdir(parents=True, exist_ok=True)
    D.init_fs(path)
    sysroot = Sysroot(path, mutable_deployments=True, run_dir=path / "run/ostree")
    D.os_init(sysroot, OS)
    return sysroot


def booted_into(sysroot: Sysroot, index: int) -> Sysroot:
    """The same sysroot, seen as booted into deployment ``index``."""
    dep = sysroot.load().deployments[index]
    return Sysroot(sysroot.path, booted=sysroot.deployment_path(dep), mutable_deployments=True,
                   run_dir=sysroot.run_dir).load()


def entries(sysroot: Path) -> dict[str, str]:
    d = sysroot / "boot/loader/entries"
    return {p.name: p.read_text() for p in sorted(d.iterdir())}


@pytest.fixture
def trees(tmp_path: Path) -> dict[str, Path]:
    return {
        "v1": ro.make_os_tree(tmp_path / "tree1", version="1.0", kernel="v1"),
        "v2": ro.make_os_tree(tmp_path / "tree2", version="2.0", kernel="v2"),
        "v3": ro.make_os_tree(tmp_path / "tree3", version="3.0", kernel="v2"),
    }


@pytest.fixture
def sysroot(tmp_path: Path) -> Sysroot:
    return new_sysroot(tmp_path / "sysroot")


# ---------------------------------------------------------------------------- the interop run

MODIFY_ETC = r"""
E="$1"
echo local > "$E/foo.conf"
rm -f "$E/gone.conf"
rm -rf "$E/gonedir"
echo mine > "$E/local.conf"
mkdir -p "$E/localdir/sub" && echo x > "$E/localdir/sub/f" && chmod 0700 "$E/localdir"
ln -sf keep.conf "$E/default-link"
ln -s os.conf "$E/new-link"
chmod 0600 "$E/keep.conf"
chmod 0700 "$E/somedir"
echo tweak > "$E/nested/dir/changed.conf"
chmod 0750 "$E/nested"
mkfifo "$E/a-fifo"
"""

ETC_V1 = {
    "foo.conf": "a=1\n", "keep.conf": "k\n", "gone.conf": "g\n", "untouched.conf": "u1\n",
    "gonedir/x.conf": "x\n", "somedir/s.conf": "s\n", "nested/dir/changed.conf": "c1\n",
}
ETC_V2 = {
    "foo.conf": "a=2\n", "keep.conf": "k\n", "gone.conf": "g2\n", "untouched.conf": "u2\n",
    "gonedir/x.conf": "x\n", "somedir/s.conf": "s\n", "nested/dir/changed.conf": "c2\n",
    "fresh.conf": "new in v2\n",
}


def _etc_trees(tmp_path: Path) -> tuple[Path, Path]:
    t1 = ro.make_os_tree(tmp_path / "itree1", version="1.0", kernel="v1", etc=ETC_V1)
    t2 = ro.make_os_tree(tmp_path / "itree2", version="2.0", kernel="v2", etc=ETC_V2)
    for t in (t1, t2):
        (t / "usr/etc/default-link").symlink_to("os.conf")
        (t / "usr/etc/os.conf").write_text("os\n")
    return t1, t2


def manifest(root: Path) -> dict[str, tuple[str, int, int, int, str]]:
    """path -> (kind, mode, uid, gid, content or link target) for a whole tree."""
    out = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", st.st_mode & 0o7777, st.st_uid, st.st_gid, os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", st.st_mode & 0o7777, st.st_uid, st.st_gid, "")
        elif path.is_file():
            out[rel] = ("file", st.st_mode & 0o7777, st.st_uid, st.st_gid, path.read_text())
        else:
            out[rel] = ("other", st.st_mode & 0o7777, st.st_uid, st.st_gid, "")
    return out


@pytest.fixture(scope="module")
def interop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Deploy v1 then v2 (with local /etc changes in between) with pyostree and with the real
    ``ostree admin``, from the same commits, and collect both results."""
    if not ro.can_run_admin():
        pytest.skip("needs the real ostree, unshare and root")
    tmp = tmp_path_factory.mktemp("interop")
    src = ro.init_repo(tmp / "src")
    t1, t2 = _etc_trees(tmp)
    c1 = ro.commit(src, t1, REF, version="1.0")
    c2 = ro.commit(src, t2, REF, version="2.0")
    modify = tmp / "modify-etc.sh"
    modify.write_text(MODIFY_ETC)

    # pyostree side, on disk
    py = tmp / "py"
    sysroot = new_sysroot(py)
    repo = py / "ostree/repo"
    ro.pull_local(repo, src, c1)
    ro.ostree(f"--repo={repo}", "refs", f"--create={REF}", c1)
    d1 = D.deploy(sysroot, OS, REF, kargs=["root=LABEL=root", "quiet"])
    step1 = ro.snapshot_layout(py)
    subprocess.run(["sh", str(modify), str(sysroot.deployment_path(d1) / "etc")], check=True)
    ro.pull_local(repo, src, REF)
    d2 = D.deploy(sysroot, OS, REF)
    step2 = ro.snapshot_layout(py)
    py_refs = {r: ro.ostree(f"--repo={repo}", "rev-parse", r).stdout.strip()
               for r in ro.ostree(f"--repo={repo}", "refs").stdout.split()}

    # the real ostree, on a private tmpfs
    script = f"""
SRC={src}; C1={c1}
S="$T/sys"; mkdir "$S"
$OSTREE admin init-fs "$S"
$OSTREE admin os-init --sysroot="$S" {OS}
$OSTREE --repo="$S/ostree/repo" pull-local "$SRC" "$C1" >/dev/null
$OSTREE --repo="$S/ostree/repo" refs --create={REF} "$C1"
$OSTREE admin deploy --sysroot="$S" --os={OS} --karg=root=LABEL=root --karg=quiet {REF}
export_layout "$S" "$OUT/real1"
sh {modify} "$S/ostree/deploy/{OS}/deploy/$C1.0/etc"
$OSTREE --repo="$S/ostree/repo" pull-local "$SRC" {REF} >/dev/null
$OSTREE admin deploy --sysroot="$S" --os={OS} {REF}
$OSTREE admin status --sysroot="$S" > "$OUT/real-status.txt"
for r in $($OSTREE --repo="$S/ostree/repo" refs); do
  echo "$r $($OSTREE --repo="$S/ostree/repo" rev-parse $r)"; done > "$OUT/real-refs.txt"
tar -C "$T" -cf - sys | tar -C "$OUT" -xf -
cp -a {py} "$T/py"
$OSTREE admin status --sysroot="$T/py" > "$OUT/py-status.txt"
"""
    ro.run_admin_scenario(tmp, script)
    out = tmp / "out"
    real_refs = dict(line.split() for line in (out / "real-refs.txt").read_text().splitlines())
    return {
        "c1": c1, "c2": c2, "py": py, "sysroot": sysroot, "d1": d1, "d2": d2,
        "py_step1": step1, "py_step2": step2, "py_refs": py_refs,
        "real1": ro.snapshot_layout(out / "real1"), "real2": ro.snapshot_layout(out / "sys"),
        "real_sys": out / "sys", "real_status": (out / "real-status.txt").read_text(),
        "py_status": (out / "py-status.txt").read_text(), "real_refs": real_refs,
    }


@pytest.mark.interop
def test_first_deploy_layout_is_byte_identical(interop: dict[str, object]) -> None:
    py, real = interop["py_step1"], interop["real1"]
    assert py == real
    assert py["boot/loader"] == ("link", "loader.1")  # type: ignore[index]
    assert py["ostree/boot.1"] == ("link", "boot.1.1")  # type: ignore[index]


@pytest.mark.interop
def test_second_deploy_layout_is_byte_identical(interop: dict[str, object]) -> None:
    py, real = interop["py_step2"], interop["real2"]
    assert isinstance(py, dict) and isinstance(real, dict)
    assert py == real
    assert py["boot/loader"] == ("link", "loader.0")
    names = sorted(k for k in py if k.startswith("boot/loader.0/entries/"))
    assert names == ["boot/loader.0/entries/ostree-1-testos.conf",
                     "boot/loader.0/entries/ostree-2-testos.conf"]
    entry = py["boot/loader.0/entries/ostree-2-testos.conf"][1]
    assert entry.startswith("title TestOS Linux 2.0 (ostree:0)\nversion 2\n")
    assert "options root=LABEL=root quiet ostree=/ostree/boot.0/testos/" in entry


@pytest.mark.interop
def test_real_status_lists_pyostree_deployments_in_order(interop: dict[str, object]) -> None:
    c1, c2 = interop["c1"], interop["c2"]
    status = interop["py_status"]
    assert isinstance(status, str)
    lines = [line for line in status.splitlines() if not line.startswith("    ")]
    assert lines == [f"  {OS} {c2}.0", f"  {OS} {c1}.0"]
    assert status == interop["real_status"]
    sysroot = interop["sysroot"]
    assert isinstance(sysroot, Sysroot)
    assert status_text(sysroot.load()) == status


@pytest.mark.interop
def test_deployment_refs_match(interop: dict[str, object]) -> None:
    real_refs = interop["real_refs"]
    assert isinstance(real_refs, dict)
    assert interop["py_refs"] == real_refs
    assert set(real_refs) == {REF, "ostree/0/1/0", "ostree/0/1/1"}


@pytest.mark.interop
def test_etc_merge_matches_real_ostree(interop: dict[str, object]) -> None:
    c2 = interop["c2"]
    py = interop["py"]
    real = interop["real_sys"]
    assert isinstance(py, Path) and isinstance(real, Path)
    rel = f"ostree/deploy/{OS}/deploy/{c2}.0/etc"
    mine, theirs = manifest(py / rel), manifest(real / rel)
    assert mine == theirs
    # the cases, spelled out
    assert mine["foo.conf"][4] == "local\n"  # modified locally: local wins over new default
    assert "gone.conf" not in mine and "gonedir" not in mine  # removed locally stays removed
    assert mine["local.conf"][4] == "mine\n"  # added locally
    assert mine["localdir"][1] == 0o700 and mine["localdir/sub/f"][4] == "x\n"
    assert mine["untouched.conf"][4] == "u2\n"  # untouched: new default
    assert mine["fresh.conf"][4] == "new in v2\n"  # new default file
    assert mine["default-link"][4] == "keep.conf" and mine["new-link"][4] == "os.conf"
    assert mine["keep.conf"][1] == 0o600  # mode change kept
    # only the direct parent of a changed file gets its local metadata re-applied; a
    # directory whose mode alone changed is left with the new default's
    assert mine["nested"][1] == 0o755
    assert mine["nested/dir/changed.conf"][4] == "tweak\n"
    assert mine["somedir"][1] == 0o755  # a mode-only change of a directory is not carried over
    assert "a-fifo" not in mine  # fifos are ignored


@pytest.mark.interop
def test_deployment_trees_match_real_ostree(interop: dict[str, object]) -> None:
    py, real = interop["py"], interop["real_sys"]
    assert isinstance(py, Path) and isinstance(real, Path)
    for c in (interop["c1"], interop["c2"]):
        rel = f"ostree/deploy/{OS}/deploy/{c}.0"
        assert manifest(py / rel) == manifest(real / rel)
        hello = py / rel / "usr/bin/hello"
        assert hello.stat().st_nlink > 1  # hardlinked from the bare repo
        assert (py / rel / "etc/os.conf").stat().st_nlink == 1  # /etc is a copy
    assert manifest(py / f"ostree/deploy/{OS}/var") == manifest(real / f"ostree/deploy/{OS}/var")


@pytest.mark.interop
def test_kargs_edit_in_place_matches_real_ostree(tmp_path: Path, trees: dict[str, Path]) -> None:
    sysroot = new_sysroot(tmp_path / "py")
    src = ro.init_repo(tmp_path / "src")
    ro.commit(src, trees["v1"], "os/1", version="1.0")
    ro.commit(src, trees["v2"], "os/2", version="2.0")
    ro.pull_local(sysroot.repo_path, src, "os/1", "os/2")
    D.deploy(sysroot, OS, "os/1", kargs=["root=LABEL=root", "quiet"])
    D.deploy(sysroot, OS, "os/2")
    D.kargs_edit_in_place(sysroot, ["quiet", "console=ttyS0"])
    script = f"""
S="$T/sys"; mkdir "$S"
$OSTREE admin init-fs "$S"
$OSTREE admin os-init --sysroot="$S" {OS}
$OSTREE --repo="$S/ostree/repo" pull-local {src} os/1 os/2 >/dev/null
$OSTREE admin deploy --sysroot="$S" --os={OS} --karg=root=LABEL=root --karg=quiet os/1
$OSTREE admin deploy --sysroot="$S" --os={OS} os/2
$OSTREE admin kargs edit-in-place --sysroot="$S" --append-if-missing=quiet \\
    --append-if-missing=console=ttyS0
export_layout "$S" "$OUT/real"
"""
    ro.run_admin_scenario(tmp_path, script)
    assert ro.snapshot_layout(sysroot.path) == ro.snapshot_layout(tmp_path / "out/real")
    for dep in sysroot.deployments:
        assert dep.kargs.to_list()[-1] == "console=ttyS0"
        assert dep.kargs.values("quiet") == [None]


@pytest.mark.interop
def test_pyostree_reads_the_real_sysroot(interop: dict[str, object]) -> None:
    real = interop["real_sys"]
    assert isinstance(real, Path)
    sysroot = Sysroot(real).load()
    assert sysroot.bootversion == 0 and sysroot.subbootversion == 1
    assert [d.csum for d in sysroot.deployments] == [interop["c2"], interop["c1"]]
    assert status_text(sysroot) == interop["real_status"]


# ---------------------------------------------------------------------------- pyostree only


def test_deploy_redeploy_undeploy_cleanup(sysroot: Sysroot, trees: dict[str, Path]) -> None:
    repo = sysroot.repo_path
    c1 = py_commit(repo, trees["v1"], "1.0")
    d1 = D.deploy(sysroot, OS, REF, kargs=["root=LABEL=root"])
    assert (sysroot.deployment_path(d1) / "etc/os.conf").read_text() == "version=1.0\n"
    assert sysroot.origin_path(d1).read_text() == f"[origin]\nrefspec={REF}\n"
    assert (sysroot.path / "ostree/deploy/testos/var/.ostree-selabeled").exists()
    # same commit again: deployserial 1; it comes first so it gets bootserial 0 and the old one
    # (same bootcsum) bootserial 1; the count changed, so a new bootversion
    d1b = D.deploy(sysroot, OS, c1, retain=True)
    assert d1b.deployserial == 1 and d1b.bootserial == 0 and sysroot.bootversion == 0
    assert sysroot.deployments[1].bootserial == 1
    assert sysroot.origin_path(d1b).read_text() == f"[origin]\nrefspec={c1}\n"
    assert [d.name for d in sysroot.deployments] == [f"{c1}.1", f"{c1}.0"]
    bootdir = sysroot.path / f"ostree/boot.0.1/testos/{d1.bootcsum}"
    assert sorted(os.listdir(bootdir)) == ["0", "1"]
    assert os.readlink(bootdir / "0") == f"../../../deploy/testos/deploy/{c1}.1"
    removed = D.undeploy(sysroot, 1)
    assert removed.name == f"{c1}.0"
    assert [d.name for d in sysroot.deployments] == [f"{c1}.1"]
    assert not (sysroot.path / f"ostree/deploy/testos/deploy/{c1}.0").exists()
    assert not (sysroot.path / f"ostree/deploy/testos/deploy/{c1}.0.origin").exists()
    refs = Repo.open(repo).list_refs(remotes=False)
    assert refs == {REF: c1, "ostree/1/1/0": c1}
    with pytest.raises(DeployError, match="Out of range deployment index 5"):
        D.undeploy(sysroot, 5)


def test_same_kernel_swaps_only_the_bootlinks(sysroot: Sysroot, trees: dict[str, Path]) -> None:
    py_commit(sysroot.repo_path, trees["v2"], "2.0")
    D.deploy(sysroot, OS, REF)
    c3 = py_commit(sysroot.repo_path, trees["v3"], "3.0")
    D.deploy(sysroot, OS, REF)
    assert sysroot.bootversion == 0 and len(sysroot.deployments) == 2
    before = entries(sysroot.path)
    # Same bootcsum, kargs and versions at every index after swapping two deployments of the
    # same commit: only ostree/boot.0 moves (libostree's "bootconfig swap: no").
    D.deploy(sysroot, OS, c3, retain=True, not_as_default=True)
    assert [d.deployserial for d in sysroot.deployments] == [0, 1, 0]
    assert entries(sysroot.path) != before
    before = entries(sysroot.path)
    sub, bv = sysroot.subbootversion, sysroot.bootversion
    D.set_default(sysroot, 1)
    assert sysroot.bootversion == bv and sysroot.subbootversion == 1 - sub
    assert [d.deployserial for d in sysroot.deployments] == [1, 0, 0]
    assert entries(sysroot.path) == before
    link = sysroot.path / f"ostree/boot.{bv}/{OS}/{sysroot.deployments[0].bootcsum}/0"
    assert os.readlink(link) == f"../../../deploy/{OS}/deploy/{c3}.1"


def test_set_default_and_rollback_switch_the_default_entry(
    sysroot: Sysroot, trees: dict[str, Path]
) -> None:
    c1 = py_commit(sysroot.repo_path, trees["v1"], "1.0")
    D.deploy(sysroot, OS, REF, kargs=["root=LABEL=root"])
    c2 = py_commit(sysroot.repo_path, trees["v2"], "2.0")
    D.deploy(sysroot, OS, REF)
    assert [d.csum for d in sysroot.deployments] == [c2, c1]
    D.set_default(sysroot, 1)
    assert [d.csum for d in sysroot.deployments] == [c1, c2]
    default = entries(sysroot.path)["ostree-2-testos.conf"]
    assert "TestOS Linux 1.0 (ostree:0)" in default
    loaded = Sysroot(sysroot.path).load()
    assert loaded.deployments[0].csum == c1
    back = D.rollback(sysroot)
    assert back.csum == c2 and [d.csum for d in sysroot.deployments] == [c2, c1]
    # booted into c2 (index 0): c1 is the rollback, and rolling back makes it pending
    booted = booted_into(sysroot, 0)
    assert status_text(booted).splitlines()[0] == f"* {OS} {c2}.0"
    assert f"  {OS} {c1}.0 (rollback)" in status_text(booted)
    assert D.rollback(booted).csum == c1
    lines = [line for line in status_text(booted).splitlines() if not line.startswith("    ")]
    assert lines == [f"  {OS} {c1}.0 (pending)", f"* {OS} {c2}.0"]
    with pytest.raises(DeployError, match="No rollback deployment found"):
        D.rollback(booted)


def test_pin_writes_origin_like_ostree_and_protects(sysroot: Sysroot,
                                                    trees: dict[str, Path]) -> None:
    c1 = py_commit(sysroot.repo_path, trees["v1"], "1.0")
    D.deploy(sysroot, OS, REF)
    c2 = py_commit(sysroot.repo_path, trees["v2"], "2.0")
    D.deploy(sysroot, OS, REF)
    assert D.pin(sysroot, 1) is True
    assert D.pin(sysroot, 1) is False
    origin = sysroot.origin_path(sysroot.deployments[1])
    assert origin.read_text() == (
        f"[origin]\nrefspec={REF}\n\n[libostree-transient]\npinned=true\n"
    )
    assert "    Pinned: yes\n" in status_text(sysroot)
    c3 = py_commit(sysroot.repo_path, trees["v3"], "3.0")
    D.deploy(sysroot, OS, REF)
    # pinned c1 kept besides the new default and the merge deployment c2
    assert [d.csum for d in sysroot.deployments] == [c3, c2, c1]
    assert D.pin(sysroot, 2, unpin=True) is True
    assert sysroot.origin_path(sysroot.deployments[2]).read_text() == (
        f"[origin]\nrefspec={REF}\n\n[libostree-transient]\n"
    )
    D.deploy(sysroot, OS, REF)
    assert c1 not in [d.csum for d in sysroot.deployments]


def test_kargs_inherit_append_delete_and_edit_in_place(
    sysroot: Sysroot, trees: dict[str, Path]
) -> None:
    py_commit(sysroot.repo_path, trees["v1"], "1.0")
    D.deploy(sysroot, OS, REF, kargs=["root=LABEL=root", "console=tty0"])
    py_commit(sysroot.repo_path, trees["v2"], "2.0")
    d2 = D.deploy(sysroot, OS, REF, karg_append=["console=ttyS0"], kargs=["quiet"])
    assert d2.options is not None
    assert d2.options.startswith("root=LABEL=root console=tty0 ostree=/ostree/boot.0/")
    assert d2.options.endswith(" quiet console=ttyS0")
    d3 = D.deploy(sysroot, OS, REF, karg_delete="console=tty0")
    assert d3.options is not None and "console=tty0" not in d3.options
    d4 = D.deploy(sysroot, OS, REF, karg_none=True)
    assert d4.options is not None and d4.options.startswith("ostree=/ostree/boot.")
    D.kargs_edit_in_place(sysroot, ["rw", "quiet"])
    d4_after, d3_after = sysroot.deployments
    assert d4_after.kargs.to_list()[1:] == ["rw", "quiet"]
    assert d3_after.kargs.to_list()[-1] == "rw"  # it had quiet already
    assert d3_after.kargs.values("quiet") == [None]
    assert (sysroot.path / "boot/loader/entries/ostree-2-testos.conf").read_text().count(
        " rw quiet\n") == 1
    with pytest.raises(PyOstreeError, match="No key 'nosuch' found"):
        D.deploy(sysroot, OS, REF, karg_delete="nosuch=1")


def test_no_initramfs_adds_init_karg_and_devicetree(tmp_path: Path, sysroot: Sysroot) -> None:
    tree = ro.make_os_tree(tmp_path / "t", version="1.0", initramfs=False,
                           extra={f"usr/lib/modules/{ro.KVER}/devicetree": "DTB\n"})
    py_commit(sysroot.repo_path, tree, "1.0")
    dep = D.deploy(sysroot, OS, REF)
    entry = entries(sysroot.path)["ostree-1-testos.conf"]
    bootlink = f"/ostree/boot.1/testos/{dep.bootcsum}/0"
    init = f"init={bootlink}/usr/lib/ostree/ostree-prepare-root"
    assert f"options {init} ostree={bootlink}\n" in entry
    assert f"devicetree /ostree/testos-{dep.bootcsum}/devicetree-{ro.KVER}\n" in entry
    assert "initrd" not in entry
    assert (sysroot.path / f"boot/ostree/testos-{dep.bootcsum}/devicetree-{ro.KVER}").exists()


def test_uboot_uenv_and_boot_counting(sysroot: Sysroot, trees: dict[str, Path]) -> None:
    config = sysroot.repo_path / "config"
    config.write_text(config.read_text() + "\n[sysroot]\nbootloader=uboot\n"
                      "boot-counting-tries=3\n")
    (trees["v2"] / "usr/lib/ostree-boot").mkdir(parents=True)
    (trees["v2"] / "usr/lib/ostree-boot/uEnv.txt").write_text("loadfdt=load mmc\n")
    py_commit(sysroot.repo_path, trees["v1"], "1.0")
    D.deploy(sysroot, OS, REF, kargs=["root=/dev/mmcblk0p2"])
    py_commit(sysroot.repo_path, trees["v2"], "2.0")
    d2 = D.deploy(sysroot, OS, REF)
    names = sorted(entries(sysroot.path))
    assert names == ["ostree-1-testos+3-0.conf", "ostree-2-testos+3.conf"]
    uenv = (sysroot.path / "boot/loader/uEnv.txt").read_text()
    lines = uenv.splitlines()
    assert lines[0] == f"kernel_image=/boot/ostree/testos-{d2.bootcsum}/vmlinuz-{ro.KVER}"
    assert lines[2].startswith("bootargs=root=/dev/mmcblk0p2 ostree=/ostree/boot.0/")
    assert lines[3] == "loadfdt=load mmc"
    assert any(line.startswith("kernel_image2=/boot/ostree/") for line in lines)
    # booted into the new entry: boot-complete blesses it
    booted = booted_into(sysroot, 0)
    assert booted.booted_deployment is not None and booted.booted_deployment.same(d2)
    D.boot_complete(booted)
    assert sorted(entries(sysroot.path)) == ["ostree-1-testos+3-0.conf", "ostree-2-testos.conf"]
    assert booted.booted_deployment is not None
    assert booted.booted_deployment.entry_name == "ostree-2-testos.conf"


def test_origin_options_and_retention_flags(tmp_path: Path, sysroot: Sysroot,
                                           trees: dict[str, Path]) -> None:
    c1 = py_commit(sysroot.repo_path, trees["v1"], "1.0")
    origin = tmp_path / "my.origin"
    origin.write_text("[origin]\nrefspec = remote:testos/stable\ncustom=1\n")
    d1 = D.deploy(sysroot, OS, REF, origin_file=origin)
    assert sysroot.origin_path(d1).read_text() == (
        "[origin]\nrefspec=remote:testos/stable\ncustom=1\n"
    )
    c2 = py_commit(sysroot.repo_path, trees["v2"], "2.0", branch="testos/two")
    d2 = D.deploy(sysroot, OS, "testos/two", origin_refspec="other:ref")
    assert d2.origin_refspec == "other:ref" and d2.csum == c2
    # booted into c1 with c2 pending: a new deploy drops the pending one ...
    booted = booted_into(sysroot, 1)
    c3 = py_commit(sysroot.repo_path, trees["v3"], "3.0")
    D.deploy(booted, None, REF, retain_pending=True)
    assert [d.csum for d in booted.deployments] == [c3, c2, c1]
    D.deploy(booted, None, REF)
    assert [d.csum for d in booted.deployments] == [c3, c1]
    # ... and --not-as-default puts the new one right after the booted one
    new = D.deploy(booted, None, c2, not_as_default=True, retain_rollback=True)
    assert [d.csum for d in booted.deployments] == [c1, c2]
    assert new.index == 1 and booted.booted_deployment is not None
    assert booted.booted_deployment.index == 0


def _is_immutable(path: Path) -> bool:
    import fcntl
    import struct

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, 0x80086601, struct.pack("i", 0))[:4])[0]
    finally:
        os.close(fd)
    return bool(flags & 0x10)


@pytest.mark.skipif(os.geteuid() != 0, reason="chattr +i needs root")
def test_deployments_are_sealed_unless_mutable(tmp_path: Path, trees: dict[str, Path]) -> None:
    path = tmp_path / "sys"
    path.mkdir()
    D.init_fs(path)
    sysroot = Sysroot(path, mutable_deployments=False, run_dir=path / "run/ostree")
    D.os_init(sysroot, OS)
    try:
        py_commit(sysroot.repo_path, trees["v1"], "1.0")
        d1 = D.deploy(sysroot, OS, REF)
        assert _is_immutable(sysroot.deployment_path(d1))
        with pytest.raises(PermissionError):
            (sysroot.deployment_path(d1) / "newfile").write_text("x")
        for v in ("v2", "v3"):
            py_commit(sysroot.repo_path, trees[v], v)
            D.deploy(sysroot, OS, REF)
        assert not sysroot.deployment_path(d1).exists()  # unsealed and removed by cleanup
    finally:
        for dep_dir in (path / f"ostree/deploy/{OS}/deploy").iterdir():
            if dep_dir.is_dir():
                D.set_immutable(dep_dir, False)


def test_boot_complete_reports_finalize_failure(sysroot: Sysroot) -> None:
    stamp = sysroot.path / "boot/ostree/finalize-failure.stamp"
    stamp.parent.mkdir(parents=True)
    stamp.write_text("disk on fire")
    with pytest.raises(DeployError, match="failed on previous boot: disk on fire"):
        D.boot_complete(sysroot)
    assert not stamp.exists()
    D.boot_complete(sysroot)


def test_stage_then_finalize(sysroot: Sysroot, trees: dict[str, Path]) -> None:
    c1 = py_commit(sysroot.repo_path, trees["v1"], "1.0")
    d1 = D.deploy(sysroot, OS, REF, kargs=["root=LABEL=root"])
    with pytest.raises(DeployError, match="Cannot stage"):
        D.deploy(sysroot, OS, REF, stage=True)
    booted = booted_into(sysroot, 0)
    (booted.deployment_path(d1) / "etc/local.conf").write_text("mine\n")
    c2 = py_commit(sysroot.repo_path, trees["v2"], "2.0")
    staged = D.deploy(booted, None, REF, stage=True, kargs=["quiet"])
    assert staged.staged and staged.index == 0
    assert booted.staged_path.exists()
    assert [(d.csum, d.staged) for d in booted.deployments] == [(c2, True), (c1, False)]
    assert status_text(booted).splitlines()[0] == f"  {OS} {c2}.0 (staged)"
    assert Repo.open(sysroot.repo_path).list_refs("ostree/1/1", remotes=False) == {
        "ostree/1/1/0": c2, "ostree/1/1/1": c1}
    assert len(entries(sysroot.path)) == 1  # nothing in the boot loader yet
    assert D.finalize_staged(booted) is True
    assert not booted.staged_path.exists()
    assert [(d.csum, d.staged) for d in booted.deployments] == [(c2, False), (c1, False)]
    new_etc = booted.deployment_path(booted.deployments[0]) / "etc"
    assert (new_etc / "local.conf").read_text() == "mine\n"
    options = booted.deployments[0].options
    assert options is not None
    assert options.startswith("root=LABEL=root ostree=/ostree/boot.0/")
    assert options.endswith(" quiet")
    assert D.finalize_staged(booted) is False


def test_undeploying_the_booted_deployment_is_refused(sysroot: Sysroot,
                                                      trees: dict[str, Path]) -> None:
    py_commit(sysroot.repo_path, trees["v1"], "1.0")
    D.deploy(sysroot, OS, REF)
    booted = booted_into(sysroot, 0)
    with pytest.raises(DeployError, match="Cannot undeploy currently booted deployment 0"):
        D.undeploy(booted, 0)
    with pytest.raises(DeployError, match="no --os"):
        D.deploy(Sysroot(sysroot.path, mutable_deployments=True), None, REF)


def test_os_init_twice_fails_like_ostree(sysroot: Sysroot) -> None:
    with pytest.raises(DeployError, match="File exists"):
        D.os_init(sysroot, OS)


def test_lock_is_exclusive(sysroot: Sysroot) -> None:
    other = Sysroot(sysroot.path)
    with sysroot.lock():
        assert (sysroot.path / "ostree/lock").exists()
        with pytest.raises(PyOstreeError, match="locked"), other.lock(blocking=False):
            pass
    assert not (sysroot.path / "ostree/lock").exists()
    with other.lock(blocking=False):
        pass


@pytest.mark.interop
def test_real_ostree_reads_set_default_and_rollback(tmp_path: Path,
                                                    trees: dict[str, Path]) -> None:
    sysroot = new_sysroot(tmp_path / "sys")
    c1 = py_commit(sysroot.repo_path, trees["v1"], "1.0")
    D.deploy(sysroot, OS, REF)
    c2 = py_commit(sysroot.repo_path, trees["v2"], "2.0")
    D.deploy(sysroot, OS, REF)
    D.set_default(sysroot, 1)
    script = f"""
cp -a {sysroot.path} "$T/a"
$OSTREE admin status --sysroot="$T/a" > "$OUT/status.txt"
"""
    ours = {"set-default": status_text(sysroot)}
    ro.run_admin_scenario(tmp_path / "set-default", script)
    D.rollback(sysroot)
    ours["rollback"] = status_text(sysroot)
    ro.run_admin_scenario(tmp_path / "rollback", script)
    for name, order in (("set-default", [c1, c2]), ("rollback", [c2, c1])):
        text = (tmp_path / name / "out/status.txt").read_text()
        assert [line.split()[1] for line in text.splitlines()
                if not line.startswith("    ")] == [f"{c}.0" for c in order]
        assert text == ours[name]


@pytest.mark.interop
def test_bootlink_only_swap_matches_real_ostree(tmp_path: Path) -> None:
    """Same kernel, kargs and (no) version at every index: only ``ostree/boot.B`` flips to the
    other subbootversion; the BLS entries stay as they were ("bootconfig swap: no")."""
    src = ro.init_repo(tmp_path / "src")
    commits = [ro.commit(src, ro.make_os_tree(tmp_path / f"t{i}", version=str(i)), f"os/{i}")
               for i in (1, 2)]
    sysroot = new_sysroot(tmp_path / "py")
    ro.pull_local(sysroot.repo_path, src, "os/1", "os/2")
    steps = []
    for rev in ("os/1", "os/2", "os/1"):
        D.deploy(sysroot, OS, rev, kargs=["quiet"])
        steps.append(ro.snapshot_layout(sysroot.path))
    assert (sysroot.bootversion, sysroot.subbootversion) == (0, 0)
    assert steps[2]["ostree/boot.0"] == ("link", "boot.0.0")
    assert {k: v for k, v in steps[2].items() if k.startswith("boot/loader")} == {
        k: v for k, v in steps[1].items() if k.startswith("boot/loader")}
    script = f"""
S="$T/sys"; mkdir "$S"
$OSTREE admin init-fs "$S"
$OSTREE admin os-init --sysroot="$S" {OS}
$OSTREE --repo="$S/ostree/repo" pull-local {src} os/1 os/2 >/dev/null
n=0
for rev in os/1 os/2 os/1; do
  n=$((n+1))
  $OSTREE admin deploy --sysroot="$S" --os={OS} --karg=quiet $rev
  export_layout "$S" "$OUT/step$n"
done
"""
    result = ro.run_admin_scenario(tmp_path, script)
    assert "bootconfig swap: no; bootversion: boot.0.0" in result.stdout
    for i, mine in enumerate(steps, 1):
        assert mine == ro.snapshot_layout(tmp_path / f"out/step{i}")
    assert [d.csum for d in sysroot.deployments] == [commits[0], commits[1]]


@pytest.mark.interop
def test_uboot_and_fdtdir_match_real_ostree(tmp_path: Path) -> None:
    """With ``boot/loader/uEnv.txt`` present (auto-detected U-Boot), a dtb/ directory and a
    system uEnv.txt in the tree: entries, uEnv.txt and /boot contents as the real ostree."""
    src = ro.init_repo(tmp_path / "src")
    c1 = ro.commit(src, ro.make_os_tree(tmp_path / "t1", version="1.0"), "os/1", version="1.0")
    dtb = f"usr/lib/modules/{ro.KVER}/dtb"
    t2 = ro.make_os_tree(tmp_path / "t2", version="2.0", kernel="v2", extra={
        f"{dtb}/board.dtb": "a device tree\n", f"{dtb}/overlays/o.dtbo": "overlay\n",
        "usr/lib/ostree-boot/uEnv.txt": "loadfdt=load mmc ${bootpart}\nmmcboot=run x\n"})
    c2 = ro.commit(src, t2, "os/2", version="2.0")
    sysroot = new_sysroot(tmp_path / "py")
    ro.pull_local(sysroot.repo_path, src, "os/1", "os/2")
    D.deploy(sysroot, OS, c1, kargs=["root=/dev/mmcblk0p2"])
    (sysroot.path / "boot/loader/uEnv.txt").write_text("")
    d2 = D.deploy(sysroot, OS, c2)
    mine = ro.snapshot_layout(sysroot.path)
    uenv = (sysroot.path / "boot/loader/uEnv.txt").read_text()
    script = f"""
S="$T/sys"; mkdir "$S"
$OSTREE admin init-fs "$S"
$OSTREE admin os-init --sysroot="$S" {OS}
$OSTREE --repo="$S/ostree/repo" pull-local {src} os/1 os/2 >/dev/null
$OSTREE admin deploy --sysroot="$S" --os={OS} --karg=root=/dev/mmcblk0p2 {c1}
touch "$S/boot/loader/uEnv.txt"
$OSTREE admin deploy --sysroot="$S" --os={OS} {c2}
export_layout "$S" "$OUT/real"
"""
    ro.run_admin_scenario(tmp_path, script)
    assert mine == ro.snapshot_layout(tmp_path / "out/real")
    bootdir = f"/ostree/{OS}-{d2.bootcsum}"
    assert f"kernel_image=/boot{bootdir}/vmlinuz-{ro.KVER}\n" in uenv
    assert f"fdtdir=/boot{bootdir}/dtb\n" in uenv
    assert "loadfdt=load mmc ${bootpart}\nmmcboot=run x\n\nkernel_image2=" in uenv
    assert (sysroot.path / f"boot{bootdir}/dtb/overlays/o.dtbo").read_text() == "overlay\n"


_STEPS = [(name, 1) for name in (
    "_cleanup_internal", "find_kernel", "merge_etc", "write_origin_file", "install_kernel",
    "write_entry", "write_bootlinks", "swap_bootlinks", "prepare_loader_link", "sync_sysroot",
    "swap_loader", "_write_deployments_finish",
)] + [("find_kernel", 2), ("find_kernel", 3), ("install_kernel", 2), ("write_entry", 2),
      ("_cleanup_internal", 2)]


class _Crash(BaseException):
    """A simulated power cut (BaseException, so no ``except Exception`` handles it)."""


@pytest.mark.parametrize(("step", "occurrence"), _STEPS)
def test_crash_at_each_step_keeps_the_old_default(
    tmp_path: Path, trees: dict[str, Path], monkeypatch: pytest.MonkeyPatch, step: str,
    occurrence: int,
) -> None:
    """Interrupt the second deploy at the n-th call of each step: the previous default stays
    bootable (or the new one is complete), and a rerun succeeds and cleans up."""
    sysroot = new_sysroot(tmp_path / "sys")
    versions = {py_commit(sysroot.repo_path, trees["v1"], "1.0", branch="testos/1.0"): "1.0",
                py_commit(sysroot.repo_path, trees["v2"], "2.0", branch="testos/2.0"): "2.0"}
    D.deploy(sysroot, OS, "testos/1.0")
    D.deploy(sysroot, OS, "testos/1.0")
    real = getattr(D, step)
    calls = []

    def crashing(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == occurrence:
            raise _Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(D, step, crashing)
    with pytest.raises(_Crash):
        D.deploy(sysroot, OS, "testos/2.0")
    monkeypatch.setattr(D, step, real)
    _check_consistent(sysroot.path, versions)
    D.deploy(sysroot, OS, "testos/2.0")
    after = _check_consistent(sysroot.path, versions)
    assert versions[after.deployments[0].csum] == "2.0"
    assert sorted(os.listdir(sysroot.path / "boot")) == [
        "boot", "loader", f"loader.{after.bootversion}", "ostree"]


# ---------------------------------------------------------------------------- kill -9


_KILL_CHILD = r"""
import sys
sys.path.insert(0, {root!r})
from pyostree import deploy as D
from pyostree.sysroot import Sysroot
sysroot = Sysroot({sysroot!r}, mutable_deployments=True)
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
D.deploy(sysroot, "testos", {rev!r})
sys.stdout.write("done\n"); sys.stdout.flush()
"""


def _check_consistent(path: Path, commits: dict[str, str]) -> Sysroot:
    """The default entry boots a complete deployment; nothing unreferenced is left behind
    except what the next run's initial cleanup removes."""
    sysroot = Sysroot(path, mutable_deployments=True).load()
    assert sysroot.deployments, "no deployment at all"
    default = sysroot.deployments[0]
    droot = sysroot.deployment_path(default)
    version = commits[default.csum]
    assert (droot / "usr/bin/hello").read_text() == f"#!/bin/sh\necho hello {version}\n"
    assert (droot / "etc/os.conf").read_text() == f"version={version}\n"
    assert sysroot.origin_path(default).exists()
    entry = default.bootconfig
    for key in ("linux", "initrd"):
        value = entry.get(key)
        assert value is not None
        assert (path / "boot" / value.lstrip("/")).stat().st_size > 0
    link = path / (default.options or "").split("ostree=")[1].split()[0].lstrip("/")
    assert os.path.realpath(link) == os.path.realpath(droot)
    return sysroot


def _run_kill_trials(tmp_path: Path, trials: int) -> None:
    sysroot = new_sysroot(tmp_path / "sysroot")
    versions = {}
    for v, kernel in (("1.0", "v1"), ("2.0", "v2")):
        tree = ro.make_os_tree(tmp_path / f"tree{v}", version=v, kernel=kernel)
        versions[py_commit(sysroot.repo_path, tree, v, branch=f"testos/{v}")] = v
    D.deploy(sysroot, OS, "testos/1.0")
    # time a complete deploy to spread the kill points over it
    start = time.monotonic()
    D.deploy(sysroot, OS, "testos/2.0")
    duration = time.monotonic() - start
    rng = random.Random(int(os.environ.get("PYOSTREE_KILL_SEED", "1234")))
    root = str(Path(__file__).resolve().parent.parent)
    killed = 0
    for trial in range(trials):
        rev = "testos/1.0" if trial % 2 == 0 else "testos/2.0"
        child = subprocess.Popen(
            [sys.executable, "-c", _KILL_CHILD.format(root=root, sysroot=str(sysroot.path),
                                                      rev=rev)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "ready\n"
        child.stdin.write("go\n")
        child.stdin.flush()
        time.sleep(rng.uniform(0, duration * 1.1))
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed += child.returncode == -signal.SIGKILL
        _check_consistent(sysroot.path, versions)
        # a rerun completes and cleans up
        D.deploy(sysroot, OS, rev)
        after = _check_consistent(sysroot.path, versions)
        assert versions[after.deployments[0].csum] == rev.split("/")[1]
        assert len(after.deployments) == 2
        dirs = {p.name for p in (sysroot.path / "ostree/deploy/testos/deploy").iterdir()}
        assert dirs == {d.name for d in after.deployments} | {
            d.name + ".origin" for d in after.deployments}
        bootdirs = {p.name for p in (sysroot.path / "boot/ostree").iterdir()}
        assert bootdirs == {f"testos-{d.bootcsum}" for d in after.deployments}
        leftovers = sorted(os.listdir(sysroot.path / "boot"))
        assert leftovers == ["boot", "loader", f"loader.{after.bootversion}", "ostree"]
    assert killed > 0


def test_kill_9_during_deploy_keeps_a_bootable_default(tmp_path: Path) -> None:
    _run_kill_trials(tmp_path, int(os.environ.get("PYOSTREE_KILL_TRIALS", "5")))


@pytest.mark.slow
def test_kill_9_during_deploy_many_trials(tmp_path: Path) -> None:
    _run_kill_trials(tmp_path, int(os.environ.get("PYOSTREE_KILL_TRIALS_SLOW", "100")))
