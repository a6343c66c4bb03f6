"""pyostree.sysroot and the pure parts of pyostree.bootloader."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from pyostree import deploy as D
from pyostree.bootloader import (
    KernelLayout,
    build_entry,
    entry_filename,
    entry_title,
    find_kernel,
    parse_os_release,
    query_bootloader,
    read_entries,
    shell_unquote,
)
from pyostree.errors import DeployError
from pyostree.formats.bls import BootEntry
from pyostree.sysroot import Sysroot, parse_bootlink, parse_deploy_name, status_json, status_text

from . import realostree as ro
from .test_deploy import OS, REF, booted_into, new_sysroot, py_commit

BOOTCSUM_V1 = "dca52aa5c47794e1bbaecf40051712d96bf2263cdeb3bd4d8cee1b7b06e468c8"


# ---------------------------------------------------------------------------- pure helpers


def test_shell_unquote_and_os_release() -> None:
    assert shell_unquote("'a b'") == "a b"
    assert shell_unquote('"x \\"y\\" \\$z"') == 'x "y" $z'
    assert shell_unquote("plain\\ word") == "plain word"
    with pytest.raises(ValueError):
        shell_unquote('"open')
    text = '# c\nNAME="Test OS"\nPRETTY_NAME=\'Pretty 1\'\nBAD="x\nID=t\nID=u\n'
    assert parse_os_release(text) == {"NAME": "Test OS", "PRETTY_NAME": "Pretty 1", "ID": "u"}


def test_entry_title_like_libostree() -> None:
    rel = {"PRETTY_NAME": "TestOS Linux", "ID": "testos"}
    assert entry_title(rel, "2.0", OS, 0, False) == "TestOS Linux 2.0 (ostree:0)"
    assert entry_title({"PRETTY_NAME": "TestOS 2.0"}, "2.0", OS, 1, False) == (
        "TestOS 2.0 (ostree:1)"
    )
    assert entry_title({"ID": "testos"}, None, OS, 1, True) == "testos (ostree:testos:1)"
    assert entry_title(rel, "", OS, 0, False) == "TestOS Linux (ostree:0)"
    with pytest.raises(DeployError, match="No PRETTY_NAME or ID"):
        entry_title({}, "1", OS, 0, False)


def test_entry_filenames_and_boot_counting() -> None:
    assert entry_filename(2, 0, OS) == "ostree-2-testos.conf"
    assert entry_filename(2, 1, OS) == "ostree-1-testos.conf"
    assert entry_filename(3, 0, OS, boot_counting=3) == "ostree-3-testos+3.conf"
    assert entry_filename(3, 1, OS, boot_counting=3,
                          previous_name="ostree-3-testos+2-1.conf") == "ostree-2-testos+2-1.conf"
    assert entry_filename(3, 2, OS, boot_counting=3,
                          previous_name="ostree-2-testos.conf") == "ostree-1-testos.conf"


def _layout(**kw: object) -> KernelLayout:
    args: dict[str, object] = dict(boot_dir=Path("/x"), kernel_src="vmlinuz",
                                   kernel_name="vmlinuz-6", bootcsum="ab" * 32,
                                   initramfs_src="initramfs.img", initramfs_name="initramfs-6.img")
    args.update(kw)
    return KernelLayout(**args)  # type: ignore[arg-type]


def test_build_entry_keeps_karg_positions_and_key_order() -> None:
    csum = "ab" * 32
    base = BootEntry.parse(
        "title old\noptions root=x ostree=/ostree/boot.1/os/c/0 quiet\nlinux /old\n"
        "custom yes\nversion 9\n"
    )
    entry = build_entry(base, title="T (ostree:1)", n_deployments=3, index=1, bootversion=0,
                        osname="os", bootcsum=csum, bootserial=2, layout=_layout(),
                        bls_append={"grub_users": "\"\""})
    assert entry.to_text() == (
        "title T (ostree:1)\nversion 2\n"
        f"options root=x ostree=/ostree/boot.0/os/{csum}/2 quiet\n"
        f"linux /ostree/os-{csum}/vmlinuz-6\ninitrd /ostree/os-{csum}/initramfs-6.img\n"
        "custom yes\ngrub_users \"\"\n"
    )
    # default entry: no bls-append; no initramfs: init= ; dtb directory: fdtdir
    entry = build_entry(BootEntry(), title="T", n_deployments=1, index=0, bootversion=1,
                        osname="os", bootcsum=csum, bootserial=0,
                        layout=_layout(initramfs_src=None, initramfs_name=None,
                                       devicetree_src="dtb"),
                        bls_append={"k": "v"})
    link = f"/ostree/boot.1/os/{csum}/0"
    assert entry.to_text() == (
        "title T\nversion 1\n"
        f"options init={link}/usr/lib/ostree/ostree-prepare-root ostree={link}\n"
        f"linux /ostree/os-{csum}/vmlinuz-6\nfdtdir /ostree/os-{csum}/dtb\n"
    )


def test_find_kernel_modules_layout(tmp_path: Path) -> None:
    tree = ro.make_os_tree(tmp_path / "t", version="1")
    layout = find_kernel(tree)
    # sha256(kernel ‖ initramfs), the value the real ostree used for the same files (§7.4)
    assert layout.bootcsum == BOOTCSUM_V1
    assert layout.kernel_name == f"vmlinuz-{ro.KVER}"
    assert layout.initramfs_name == f"initramfs-{ro.KVER}.img"
    dtb = tree / f"usr/lib/modules/{ro.KVER}/dtb"
    (dtb / "overlays").mkdir(parents=True)
    (dtb / "b.dtb").write_text("b\n")
    (dtb / "overlays/a.dtbo").write_text("a\n")
    layout = find_kernel(tree)
    expected = hashlib.sha256(b"FAKEKERNEL v1\nFAKEINITRD v1\nb\na\n").hexdigest()
    assert layout.bootcsum == expected
    assert layout.devicetree_src == "dtb" and layout.devicetree_name is None
    assert find_kernel(tree, no_dtb=True).bootcsum == BOOTCSUM_V1


def test_find_kernel_legacy_layouts(tmp_path: Path) -> None:
    csum = "cd" * 32
    tree = tmp_path / "t"
    (tree / "usr/lib/ostree-boot").mkdir(parents=True)
    (tree / f"usr/lib/ostree-boot/vmlinuz-5.0-{csum}").write_text("k")
    (tree / f"usr/lib/ostree-boot/initramfs-5.0.img-{csum}").write_text("i")
    layout = find_kernel(tree)
    assert (layout.bootcsum, layout.kernel_name, layout.initramfs_name) == (
        csum, "vmlinuz-5.0", "initramfs-5.0.img")
    # a modules layout without initramfs loses against a legacy one with an initramfs
    mod = tree / "usr/lib/modules/6.0"
    mod.mkdir(parents=True)
    (mod / "vmlinuz").write_text("k6")
    assert find_kernel(tree).bootcsum == csum
    (mod / "initramfs.img").write_text("i6")
    assert find_kernel(tree).kernel_name == "vmlinuz-6.0"
    (tree / f"usr/lib/ostree-boot/initramfs-5.0.img-{csum}").unlink()
    (tree / f"usr/lib/ostree-boot/initramfs-5.0.img-{'ef' * 32}").write_text("i")
    shutil.rmtree(mod)
    with pytest.raises(DeployError, match="Mismatched kernel checksum vs initrd"):
        find_kernel(tree)
    with pytest.raises(DeployError, match="Failed to find kernel"):
        find_kernel(tmp_path / "empty")


def test_parse_names() -> None:
    assert parse_bootlink(f"/ostree/boot.1/testos/{BOOTCSUM_V1}/3") == (
        1, "testos", BOOTCSUM_V1, 3)
    with pytest.raises(DeployError, match="Invalid ostree= argument"):
        parse_bootlink("/ostree/boot.2/testos/x/0")
    assert parse_deploy_name("abc.12") == ("abc", 12)
    with pytest.raises(DeployError, match="Invalid deploy name"):
        parse_deploy_name("abc")


def test_query_bootloader(tmp_path: Path) -> None:
    assert query_bootloader(tmp_path, "auto") is None
    assert query_bootloader(tmp_path, "none") is None
    assert query_bootloader(tmp_path, "uboot") == "uboot"
    with pytest.raises(DeployError, match="Invalid bootloader configuration"):
        query_bootloader(tmp_path, "lilo")
    (tmp_path / "boot/loader").mkdir(parents=True)
    (tmp_path / "boot/loader/uEnv.txt").write_text("")
    assert query_bootloader(tmp_path, "auto") == "uboot"
    (tmp_path / "boot/grub2").mkdir()
    (tmp_path / "boot/grub2/grub.cfg").write_text("")
    with pytest.raises(DeployError, match="grub2 boot loader detected"):
        query_bootloader(tmp_path, "auto")
    assert query_bootloader(tmp_path, "none") is None


# ---------------------------------------------------------------------------- reading sysroots


def test_empty_and_invalid_sysroots(tmp_path: Path) -> None:
    sysroot = new_sysroot(tmp_path / "s")
    sysroot.load()
    assert sysroot.deployments == () and sysroot.bootversion == 0
    assert status_text(sysroot) == "No deployments.\n"
    with pytest.raises(DeployError, match="not an OSTree sysroot"):
        Sysroot(tmp_path).load()
    (sysroot.path / "boot/loader").symlink_to("loader.7")
    with pytest.raises(DeployError, match=r"Invalid target 'loader\.7' in boot/loader"):
        sysroot.load()
    (sysroot.path / "boot/loader").unlink()
    (sysroot.path / "boot/loader").symlink_to("loader.1")
    entries = sysroot.path / "boot/loader.1/entries"
    entries.mkdir(parents=True)
    (entries / "ostree-1-testos.conf").write_text("title x\nversion 1\noptions quiet\n")
    with pytest.raises(DeployError, match="No ostree= kernel argument found"):
        sysroot.load()


def test_booted_pending_rollback_and_json(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    sysroot = new_sysroot(tmp_path / "s")
    c1 = py_commit(sysroot.repo_path, ro.make_os_tree(tmp_path / "t1", version="1.0"), "1.0")
    D.deploy(sysroot, OS, REF)
    c2 = py_commit(sysroot.repo_path, ro.make_os_tree(tmp_path / "t2", version="2.0",
                                                      kernel="v2"), "2.0")
    D.deploy(sysroot, OS, REF)
    booted = booted_into(sysroot, 1)  # booted into the old one: the new one is pending
    assert booted.booted_deployment is not None and booted.booted_deployment.csum == c1
    pending, rollback = booted.query_deployments_for()
    assert pending is not None and pending.csum == c2 and rollback is None
    assert booted.merge_deployment() == booted.booted_deployment
    assert status_text(booted) == (
        f"  {OS} {c2}.0 (pending)\n    Version: 2.0\n    origin refspec: {REF}\n"
        f"* {OS} {c1}.0\n    Version: 1.0\n    origin refspec: {REF}\n"
    )
    info = status_json(booted)
    assert [(e["checksum"], e["booted"], e["pending"], e["rollback"]) for e in info] == [
        (c2, False, True, False), (c1, True, False, False)]
    assert info[0]["version"] == "2.0" and info[0]["origin"] == REF
    assert info[0]["kargs"].startswith("ostree=/ostree/boot.0/testos/")
    # the env variable works the same, with an ostree= path as well
    link = booted.deployments[0].options.split("=", 1)[1]  # type: ignore[union-attr]
    monkeypatch.setenv("PYOSTREE_BOOTED", link)
    via_env = Sysroot(sysroot.path).load()
    monkeypatch.delenv("PYOSTREE_BOOTED")
    assert via_env.booted_deployment is not None and via_env.booted_deployment.csum == c2
    assert status_text(via_env).startswith(f"* {OS} {c2}.0\n")
    assert f"  {OS} {c1}.0 (rollback)\n" in status_text(via_env)
    # an origin without refspec, and none at all
    booted.origin_path(booted.deployments[1]).write_text("[origin]\nfoo=bar\n")
    booted.origin_path(booted.deployments[0]).unlink()
    text = status_text(booted.load())
    assert "    origin: none\n" in text and "    origin: <unknown origin type>\n" in text


def test_read_entries_orders_by_version(tmp_path: Path) -> None:
    entries = tmp_path / "boot/loader.0/entries"
    entries.mkdir(parents=True)
    for v in ("9", "10", "2"):
        (entries / f"ostree-{v}-os.conf").write_text(f"title t{v}\nversion {v}\n")
    (entries / "other.conf").write_text("version 100\n")
    (entries / "ostree-x.conf").mkdir()
    assert [n for n, _ in read_entries(tmp_path, 0)] == [
        "ostree-10-os.conf", "ostree-9-os.conf", "ostree-2-os.conf"]


# ---------------------------------------------------------------------------- against real ostree


@pytest.fixture(scope="module")
def real_sysroot(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A sysroot written by the real ostree: two stateroots, a retained duplicate, a pin."""
    if not ro.can_run_admin():
        pytest.skip("needs the real ostree, unshare and root")
    tmp = tmp_path_factory.mktemp("realsys")
    src = ro.init_repo(tmp / "src")
    c1 = ro.commit(src, ro.make_os_tree(tmp / "t1", version="1.0"), REF, version="1.0")
    c2 = ro.commit(src, ro.make_os_tree(tmp / "t2", version="2.0", kernel="v2"), "other/stable",
                   version="2.0")
    c3 = ro.commit(src, ro.make_os_tree(tmp / "t3", version="3.0", kernel="v3"), REF,
                   version="3.0")
    script = f"""
S="$T/sys"; mkdir "$S"
$OSTREE admin init-fs "$S"
$OSTREE admin os-init --sysroot="$S" testos
$OSTREE admin os-init --sysroot="$S" otheros
$OSTREE --repo="$S/ostree/repo" pull-local {src} {c1} other/stable >/dev/null
$OSTREE admin deploy --sysroot="$S" --os=testos --karg=root=LABEL=root {c1}
$OSTREE admin deploy --sysroot="$S" --os=testos --retain {c1}
$OSTREE admin deploy --sysroot="$S" --os=otheros --karg=console=ttyS0 other/stable
$OSTREE admin pin --sysroot="$S" 2
$OSTREE admin status --sysroot="$S" > "$OUT/status.txt"
tar -C "$T" -cf - sys | tar -C "$OUT" -xf -
cp -a "$S" "$T/copy"
$OSTREE --repo="$T/copy/ostree/repo" pull-local {src} {REF} >/dev/null
$OSTREE admin deploy --sysroot="$T/copy" --os=testos {REF}
$OSTREE admin status --sysroot="$T/copy" > "$OUT/status-after.txt"
export_layout "$T/copy" "$OUT/after"
"""
    ro.run_admin_scenario(tmp, script)
    out = tmp / "out"
    return {"c1": c1, "c2": c2, "c3": c3, "src": src, "sys": out / "sys", "out": out}


@pytest.mark.interop
def test_reads_what_real_ostree_wrote(real_sysroot: dict[str, object]) -> None:
    path = real_sysroot["sys"]
    out = real_sysroot["out"]
    assert isinstance(path, Path) and isinstance(out, Path)
    sysroot = Sysroot(path).load()
    c1, c2 = real_sysroot["c1"], real_sysroot["c2"]
    assert [(d.osname, d.csum, d.deployserial) for d in sysroot.deployments] == [
        ("otheros", c2, 0), ("testos", c1, 1), ("testos", c1, 0)]
    assert [d.is_pinned for d in sysroot.deployments] == [False, False, True]
    assert status_text(sysroot) == (out / "status.txt").read_text()
    titles = [d.bootconfig.title for d in sysroot.deployments]
    assert titles == ["TestOS Linux 2.0 (ostree:otheros:0)", "TestOS Linux 1.0 (ostree:testos:1)",
                      "TestOS Linux 1.0 (ostree:testos:2)"]
    assert sysroot.deployments[1].bootserial == 0 and sysroot.deployments[2].bootserial == 1
    assert sysroot.merge_deployment("testos") == sysroot.deployments[1]


@pytest.mark.interop
def test_deploy_onto_a_real_sysroot_matches_real_ostree(
    tmp_path: Path, real_sysroot: dict[str, object]
) -> None:
    path, out, src = real_sysroot["sys"], real_sysroot["out"], real_sysroot["src"]
    assert isinstance(path, Path) and isinstance(out, Path) and isinstance(src, Path)
    copy = tmp_path / "copy"
    shutil.copytree(path, copy, symlinks=True)
    ro.pull_local(copy / "ostree/repo", src, REF)
    sysroot = Sysroot(copy, mutable_deployments=True, run_dir=tmp_path / "run")
    D.deploy(sysroot, "testos", REF)
    assert ro.snapshot_layout(copy) == ro.snapshot_layout(out / "after")
    assert status_text(sysroot) == (out / "status-after.txt").read_text()
