"""BLS entries, kernel arguments, entry file names, ordering and U-Boot uEnv.txt."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pyostree.errors import DeployError, FormatError, UsageError
from pyostree.formats.bls import (
    BootEntry,
    EntryFilename,
    Kargs,
    ostree_entry_filename,
    parse_entry_filename,
    quote_karg_value,
    sort_entries,
    strverscmp,
    uboot_system_uenv_path,
    uboot_uenv,
    unquote_karg_value,
)

OSTREE = shutil.which("ostree")
needs_ostree = pytest.mark.skipif(OSTREE is None, reason="needs the real ostree binary")

BOOTCSUM = "dca52aa5c47794e1bbaecf40051712d96bf2263cdeb3bd4d8cee1b7b06e468c8"
ENTRY = f"""title TestOS Linux 2.0 (ostree:0)
version 2
options root=LABEL=root rw ostree=/ostree/boot.1/testos/{BOOTCSUM}/0
linux /ostree/testos-{BOOTCSUM}/vmlinuz-6.1.0-test
initrd /ostree/testos-{BOOTCSUM}/initramfs-6.1.0-test.img
"""


def test_entry_round_trip_and_accessors() -> None:
    e = BootEntry.parse(ENTRY)
    assert e.to_text() == ENTRY
    assert BootEntry.from_bytes(ENTRY.encode()).to_bytes() == ENTRY.encode()
    assert e.title == "TestOS Linux 2.0 (ostree:0)"
    assert e.version == "2"
    assert e.linux == f"/ostree/testos-{BOOTCSUM}/vmlinuz-6.1.0-test"
    assert e.initrd == f"/ostree/testos-{BOOTCSUM}/initramfs-6.1.0-test.img"
    assert e.devicetree is None
    assert e.kargs.get_last_value("ostree") == f"/ostree/boot.1/testos/{BOOTCSUM}/0"


def test_build_uses_libostree_key_order() -> None:
    built = BootEntry.build(
        title="TestOS Linux 2.0 (ostree:0)",
        version="2",
        options=Kargs.parse(f"root=LABEL=root rw ostree=/ostree/boot.1/testos/{BOOTCSUM}/0"),
        linux=f"/ostree/testos-{BOOTCSUM}/vmlinuz-6.1.0-test",
        initrd=f"/ostree/testos-{BOOTCSUM}/initramfs-6.1.0-test.img",
    )
    assert built.to_text() == ENTRY
    dt = BootEntry.build(
        title="t", version="1", options="a", linux="/k", initrd="/i", devicetree="/dtb",
        overlay_initrds=["/o1", "/o2"], extra=[("fdtdir", "/d")],
    )  # fmt: skip
    assert [k for k, _ in dt.items] == [
        "title", "version", "options", "devicetree", "linux", "initrd", "initrd", "initrd",
        "fdtdir",
    ]  # fmt: skip
    assert dt.initrd == "/i" and dt.initrds == ("/i", "/o1", "/o2") and dt.fdtdir == "/d"
    with pytest.raises(ValueError):
        BootEntry.build(title="t", version="1", options="", linux="/k", overlay_initrds=["/o"])


def test_parse_like_libostree() -> None:
    text = (
        "# comment\n\u212ax y\n\ntitle  two spaces\nversion\t3\nlonely\n9bad x\n"
        "options a=1\noptions b=2\n"
    )
    e = BootEntry.parse(text)
    assert e.items == (
        ("title", " two spaces"),
        ("version", "3"),
        ("options", "a=1"),
        ("options", "b=2"),
    )
    assert e.options == "b=2"  # last wins, as in libostree's hash table
    assert e.to_text() == "title  two spaces\nversion 3\noptions a=1\noptions b=2\n"
    with pytest.raises(FormatError):
        BootEntry.from_bytes(b"title \xff\n")


def test_with_option_and_without() -> None:
    e = BootEntry.parse(ENTRY)
    e2 = e.with_kargs(e.kargs.remove_key("ostree").append("quiet"))
    assert e2.options == "root=LABEL=root rw quiet"
    assert [k for k, _ in e2.items] == [k for k, _ in e.items]
    e3 = e2.with_option("devicetree", "/dtb").without("initrd")
    assert e3.items[-1] == ("devicetree", "/dtb") and e3.initrd is None
    assert e.to_text() == ENTRY  # frozen: the original did not change
    with pytest.raises(ValueError):
        e.with_option("bad key", "x")
    with pytest.raises(ValueError):
        e.with_option("title", "a\nb")


# ---------------------------------------------------------------------------- kargs


def test_kargs_parse_and_format() -> None:
    k = Kargs.parse('  root=/dev/sda1  rw quoted="a b c" x= init=/bin/sh ')
    assert k.to_list() == ["root=/dev/sda1", "rw", 'quoted="a b c"', "x=", "init=/bin/sh"]
    assert str(k) == 'root=/dev/sda1 rw quoted="a b c" x= init=/bin/sh'
    assert k.values("rw") == [None] and k.values("x") == [""]
    assert "rw" in k and "nope" not in k
    assert len(Kargs.parse("")) == 0 and str(Kargs.parse(None)) == ""
    assert unquote_karg_value('"a b c"') == "a b c"
    assert quote_karg_value("a b") == '"a b"' and quote_karg_value("ab") == "ab"


def test_kargs_append_replace_delete() -> None:
    k = Kargs.parse("console=tty0 rw console=ttyS0 quiet")
    assert str(k.append("a=1 b")) == "console=tty0 rw console=ttyS0 quiet a=1 b"
    assert str(k.append_if_missing("rw foo")) == "console=tty0 rw console=ttyS0 quiet foo"
    # replace: every console= collapses into one at the first position
    assert str(k.replace("console=ttyAMA0")) == "console=ttyAMA0 rw quiet"
    assert str(k.replace("new=1")) == "console=tty0 rw console=ttyS0 quiet new=1"
    # replace_value: key=old=new picks one of several
    assert str(k.replace_value("console=ttyS0=ttyS1")) == "console=tty0 rw console=ttyS1 quiet"
    with pytest.raises(UsageError, match="Multiple values"):
        k.replace_value("console=x")
    with pytest.raises(UsageError, match="No key"):
        k.replace_value("nope=1")
    with pytest.raises(UsageError, match="No karg"):
        k.replace_value("console=nope=1")
    assert str(k.replace_value("quiet=1")) == "console=tty0 rw console=ttyS0 quiet=1"
    # delete
    assert str(k.delete("console=tty0")) == "rw console=ttyS0 quiet"
    assert str(k.delete("quiet")) == "console=tty0 rw console=ttyS0"
    with pytest.raises(UsageError, match="Multiple values"):
        k.delete("console")
    with pytest.raises(UsageError, match="No karg"):
        k.delete("quiet=1")
    with pytest.raises(UsageError, match="No key"):
        k.delete("absent")
    assert str(k.remove_key("console")) == "rw quiet"
    assert k.remove_key("absent") == k


# ---------------------------------------------------------------------------- names, order


def test_entry_filenames() -> None:
    assert ostree_entry_filename(1, "testos") == "ostree-1-testos.conf"
    assert ostree_entry_filename(2, None) == "ostree-2.conf"
    assert ostree_entry_filename(3, "os", 3) == "ostree-3-os+3.conf"
    assert ostree_entry_filename(3, "os", 2, 1) == "ostree-3-os+2-1.conf"
    for name, parsed in [
        ("ostree-1-testos.conf", EntryFilename(1, "testos")),
        ("ostree-12-my-os.conf", EntryFilename(12, "my-os")),
        ("ostree-2.conf", EntryFilename(2)),
        ("ostree-3-os+3.conf", EntryFilename(3, "os", 3)),
        ("ostree-3-os+2-1.conf", EntryFilename(3, "os", 2, 1)),
        ("ostree-4+1.conf", EntryFilename(4, None, 1)),
    ]:
        assert parse_entry_filename(name) == parsed
    # A "/" is never in a file name: such a name is not an entry (hypothesis found that
    # "ostree-3-os-x+2/1.conf" parsed, with a stateroot that cannot be written back).
    for bad in ("ostree-x-os.conf", "foo.conf", "ostree-1-os.txt", "ostree-.conf",
                "ostree-3-os-x+2/1.conf", "ostree-1-a/b.conf"):
        with pytest.raises(FormatError):
            parse_entry_filename(bad)
    with pytest.raises(ValueError):
        ostree_entry_filename(1, "a/b")


@pytest.mark.parametrize(
    ("a", "b", "sign"),
    [
        ("1", "2", -1),
        ("10", "9", 1),
        ("2", "2", 0),
        ("1.10", "1.9", 1),
        ("000", "00", -1),
        ("00", "01", -1),
        ("01", "010", -1),
        ("09", "0", -1),
        ("9", "10", -1),
        ("0a", "0", 1),
        ("abc", "abd", -1),
        ("", "a", -1),
    ],
)
def test_strverscmp_matches_glibc_examples(a: str, b: str, sign: int) -> None:
    result = strverscmp(a, b)
    assert (result > 0) - (result < 0) == sign
    back = strverscmp(b, a)
    assert (back > 0) - (back < 0) == -sign


def test_strverscmp_agrees_with_libc() -> None:
    import ctypes
    import ctypes.util
    import random

    name = ctypes.util.find_library("c")
    if name is None:
        pytest.skip("no C library")
    libc_cmp = ctypes.CDLL(name).strverscmp
    libc_cmp.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    rng = random.Random(7)
    for _ in range(5000):
        a = "".join(rng.choice("0019a.") for _ in range(rng.randint(0, 6)))
        b = "".join(rng.choice("0019a.") for _ in range(rng.randint(0, 6)))
        want = libc_cmp(a.encode(), b.encode())
        got = strverscmp(a, b)
        assert (got > 0) - (got < 0) == (want > 0) - (want < 0), (a, b)


def test_sort_entries() -> None:
    def entry(version: str | None) -> BootEntry:
        items = [("title", "t")] + ([("version", version)] if version else [])
        return BootEntry(tuple(items))

    got = [e.version for e in sort_entries([entry("2"), entry(None), entry("10"), entry("9")])]
    assert got == ["10", "9", "2", None]


# ---------------------------------------------------------------------------- U-Boot


def test_uboot_uenv_layout() -> None:
    first = BootEntry.parse(ENTRY)
    second = BootEntry.build(
        title="old", version="1", options=f"ostree=/ostree/boot.1/testos/{BOOTCSUM}/1",
        linux="/k2", initrd="/i2", devicetree="/dt2", extra=[("fdtdir", "/fd2")],
    )  # fmt: skip
    text = uboot_uenv([second, first], system_uenv="a=1\n")
    assert text == (
        f"kernel_image=/boot/ostree/testos-{BOOTCSUM}/vmlinuz-6.1.0-test\n"
        f"ramdisk_image=/boot/ostree/testos-{BOOTCSUM}/initramfs-6.1.0-test.img\n"
        f"bootargs=root=LABEL=root rw ostree=/ostree/boot.1/testos/{BOOTCSUM}/0\n"
        "a=1\n\n"
        "kernel_image2=/boot/k2\nramdisk_image2=/boot/i2\nfdt_file2=/boot/dt2\n"
        "fdtdir2=/boot/fd2\n"
        f"bootargs2=ostree=/ostree/boot.1/testos/{BOOTCSUM}/1\n"
    )
    assert uboot_system_uenv_path(first) == (
        f"ostree/boot.1/testos/{BOOTCSUM}/0/usr/lib/ostree-boot/uEnv.txt"
    )
    with pytest.raises(DeployError, match="ostree="):
        uboot_uenv([first.with_option("options", "rw")])
    with pytest.raises(DeployError, match="linux"):
        uboot_uenv([first.without("linux")])
    assert uboot_uenv([]) == ""


def test_uboot_join_lines_quirk() -> None:
    e = BootEntry.parse(ENTRY)
    # An empty system uEnv.txt is one empty line, kept once; later empty lines are dropped.
    assert uboot_uenv([e], system_uenv="").endswith("/0\n\n")


# ---------------------------------------------------------------------------- interop


def _ostree(*args: str, env: dict[str, str] | None = None) -> None:
    assert OSTREE is not None
    subprocess.run([OSTREE, *args], check=True, capture_output=True, env=env)


@pytest.mark.interop
@needs_ostree
def test_real_deploy_entries_and_uenv(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    mods = tree / "usr/lib/modules/6.1.0-test"
    mods.mkdir(parents=True)
    (tree / "usr/etc").mkdir()
    (mods / "vmlinuz").write_text("FAKEKERNEL v1\n")
    (mods / "initramfs.img").write_text("FAKEINITRD v1\n")
    (tree / "usr/lib/os-release").write_text('ID=testos\nPRETTY_NAME="TestOS Linux"\n')
    (tree / "usr/lib/ostree-boot").mkdir()
    system_uenv = "fdt_high=0xffffffff\nbootcmd=run x\n"
    (tree / "usr/lib/ostree-boot/uEnv.txt").write_text(system_uenv)
    sr = tmp_path / "sysroot"
    sr.mkdir()
    env = {**os.environ, "OSTREE_SYSROOT_DEBUG": "mutable-deployments"}
    repo = f"--repo={sr}/ostree/repo"
    _ostree("admin", "init-fs", str(sr))
    _ostree("admin", "os-init", f"--sysroot={sr}", "testos")
    _ostree("commit", repo, "-b", "testos/main", "--add-metadata-string=version=2.0", str(tree))
    _ostree(
        "admin", "deploy", f"--sysroot={sr}", "--os=testos", "--karg=root=LABEL=root",
        "--karg=rw", '--karg=quoted="a b"', "testos/main", env=env,
    )  # fmt: skip
    (sr / "boot/loader/uEnv.txt").write_text("")  # turns on the U-Boot back-end
    _ostree("commit", repo, "-b", "testos/main", "--add-metadata-string=version=3.0", str(tree))
    _ostree("admin", "deploy", f"--sysroot={sr}", "--os=testos", "testos/main", env=env)

    entries_dir = sr / "boot/loader/entries"
    names = sorted(os.listdir(entries_dir))
    assert names == ["ostree-1-testos.conf", "ostree-2-testos.conf"]
    entries = []
    for name in names:
        raw = (entries_dir / name).read_bytes()
        entry = BootEntry.from_bytes(raw)
        assert entry.to_bytes() == raw
        assert parse_entry_filename(name) == EntryFilename(int(entry.version or -1), "testos")
        # Our builder, fed the same facts, writes the same bytes.
        rebuilt = BootEntry.build(
            title=entry.title or "", version=entry.version or "", options=entry.kargs,
            linux=entry.linux or "", initrd=entry.initrd,
        )  # fmt: skip
        assert rebuilt.to_bytes() == raw
        entries.append(entry)
    default = sort_entries(entries)[0]
    assert default.title == "TestOS Linux 3.0 (ostree:0)"
    assert default.kargs.to_list()[:3] == ["root=LABEL=root", "rw", 'quoted="a b"']
    uenv_path = sr / uboot_system_uenv_path(default)
    assert uenv_path.read_text() == system_uenv
    expected = (sr / "boot/loader/uEnv.txt").read_text()
    assert uboot_uenv(entries, system_uenv=uenv_path.read_text()) == expected
