"""Boot-loader configuration: BLS entries, kernels in /boot, U-Boot's uEnv.txt, the swap.

The first half is pure (no I/O): entry titles, file names and contents built on
:mod:`pyostree.formats.bls` the way ``install_deployment_kernel`` fills them in. The second
half is the filesystem work the deploy code strings together for the atomic swap of libostree
2022.7 (``ostree-sysroot-deploy.c``): finding the kernel and computing the bootcsum,
installing it once into ``/boot/ostree/OS-BOOTCSUM/``, writing entries, building the
``ostree/boot.B.S`` symlink farm, syncing (``syncfs``, never FIFREEZE) and renaming
``boot/loader`` as the commit point.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from .errors import DeployError, FormatError
from .fileio import fsync_dir, syncfs
from .formats.bls import (
    LIBOSTREE_KEY_ORDER,
    BootEntry,
    Kargs,
    ostree_entry_filename,
    parse_entry_filename,
    strverscmp,
    uboot_system_uenv_path,
    uboot_uenv,
)

__all__ = [
    "BOOTLOADER_CHOICES",
    "KernelLayout",
    "bootlink_target",
    "build_entry",
    "checksum_dir",
    "entry_filename",
    "entry_title",
    "find_kernel",
    "install_kernel",
    "parse_os_release",
    "prepare_loader_link",
    "query_bootloader",
    "read_entries",
    "read_subbootversion",
    "rmtree",
    "shell_unquote",
    "swap_bootlinks",
    "swap_loader",
    "symlink_replace",
    "sync_sysroot",
    "write_bootlinks",
    "write_entry",
    "write_text_replace",
    "write_uenv",
]

_CHUNK = 256 * 1024
_CSUM_RE = re.compile(r"[0-9a-f]{64}")
BOOTLOADER_CHOICES = ("auto", "none", "grub2", "syslinux", "uboot", "zipl")


# ---------------------------------------------------------------------------- BLS entries


def entry_filename(
    n_deployments: int, index: int, osname: str, *, boot_counting: int = 0,
    previous_name: str | None = None,
) -> str:
    """``ostree-V-OS.conf`` (V = n − index), as libostree 2022.7 names entries.

    With boot counting (a pyostree extension following upstream's later behaviour) a new entry
    gets ``+TRIES``; a carried-over entry keeps its ``+LEFT-DONE`` state, or none once blessed.
    """
    version = n_deployments - index
    if not boot_counting:
        return ostree_entry_filename(version, osname)
    if previous_name is None:
        return ostree_entry_filename(version, osname, boot_counting)
    try:
        parsed = parse_entry_filename(previous_name)
    except FormatError:
        return ostree_entry_filename(version, osname, boot_counting)
    if not parsed.tries_left and not parsed.tries_done:
        return ostree_entry_filename(version, osname)
    return ostree_entry_filename(version, osname, parsed.tries_left or 0, parsed.tries_done or 0)


def shell_unquote(text: str) -> str:
    """``g_shell_unquote``: quotes and backslashes as a POSIX shell; ValueError if unbalanced."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ValueError("unmatched quote")
            out.append(text[i + 1:end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise ValueError("unmatched quote")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and text[i + 1] in '"\\`$\n':
                    if text[i + 1] != "\n":
                        out.append(text[i + 1])
                    i += 2
                    continue
                out.append(c)
                i += 1
        elif c == "\\":
            if i + 1 < n:
                if text[i + 1] != "\n":
                    out.append(text[i + 1])
                i += 2
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_os_release(text: str) -> dict[str, str]:
    """``KEY=value`` lines of an os-release file (unquoted); later keys win, bad lines skipped."""
    result: dict[str, str] = {}
    for line in text.split("\n"):
        if line.startswith("#") or "=" not in line:
            continue
        key, _, quoted = line.partition("=")
        try:
            result[key] = shell_unquote(quoted)
        except ValueError:
            continue
    return result


def entry_title(
    os_release: Mapping[str, str], version: str | None, osname: str, index: int,
    show_osname: bool,
) -> str:
    """``PRETTY_NAME [VERSION] (ostree[:OS]:INDEX)`` exactly as libostree builds it."""
    name = os_release.get("PRETTY_NAME")
    if name is None:
        name = os_release.get("ID")
    if name is None:
        raise DeployError("No PRETTY_NAME or ID in /etc/os-release")
    title = name
    if version and version not in name:
        title += " " + version
    title += " (ostree"
    if show_osname:
        title += ":" + osname
    return f"{title}:{index})"


def bootlink_target(osname: str, csum: str, deployserial: int) -> str:
    return f"../../../deploy/{osname}/deploy/{csum}.{deployserial}"


@attrs.frozen
class KernelLayout:
    """Where a deployment keeps its kernel, and the names it gets in ``/boot/ostree/OS-CSUM``.

    Paths are relative to ``boot_dir`` (inside the deployment). ``devicetree_name`` is None with
    a ``dtb/`` directory, which is copied whole.
    """

    boot_dir: Path
    kernel_src: str
    kernel_name: str
    bootcsum: str
    initramfs_src: str | None = None
    initramfs_name: str | None = None
    devicetree_src: str | None = None
    devicetree_name: str | None = None
    hmac_src: str | None = None
    hmac_name: str | None = None


def build_entry(
    base: BootEntry, *, title: str, n_deployments: int, index: int, bootversion: int,
    osname: str, bootcsum: str, bootserial: int, layout: KernelLayout,
    bls_append: Mapping[str, str] | None = None,
) -> BootEntry:
    """Fill in an entry as ``install_deployment_kernel`` does, on top of ``base``.

    Like libostree's parser, ``base`` is seen as a map (last value of a key wins; ``initrd``
    lines after the first are overlay initrds) and written in libostree's key order.
    """
    opts: dict[str, str] = {}
    for key, value in base.items:
        if key == "initrd" and "initrd" in opts:
            continue
        opts[key] = value
    overlays = base.initrds[1:]
    bootcsumdir = f"/ostree/{osname}-{bootcsum}"
    opts["title"] = title
    opts["version"] = str(n_deployments - index)
    opts["linux"] = f"{bootcsumdir}/{layout.kernel_name}"
    kargs = Kargs.parse(opts.get("options"))
    bootlink = f"/ostree/boot.{bootversion}/{osname}/{bootcsum}/{bootserial}"
    if layout.initramfs_name:
        opts["initrd"] = f"{bootcsumdir}/{layout.initramfs_name}"
    else:
        kargs = kargs.replace(f"init={bootlink}/usr/lib/ostree/ostree-prepare-root")
    if layout.devicetree_name:
        opts["devicetree"] = f"{bootcsumdir}/{layout.devicetree_name}"
    elif layout.devicetree_src:
        opts["fdtdir"] = f"{bootcsumdir}/{layout.devicetree_src}"
    opts["options"] = kargs.replace(f"ostree={bootlink}").to_string()
    if index != 0 and bls_append:
        opts.update(bls_append)
    return BootEntry.build(
        title=opts["title"], version=opts["version"], options=opts["options"],
        linux=opts["linux"], initrd=opts.get("initrd"), devicetree=opts.get("devicetree"),
        overlay_initrds=overlays if "initrd" in opts else (),
        extra=[(k, v) for k, v in opts.items() if k not in LIBOSTREE_KEY_ORDER],
    )


def _compare_named(a: tuple[str, BootEntry], b: tuple[str, BootEntry]) -> int:
    va, vb = a[1].version, b[1].version
    if va is not None and vb is not None:
        return -strverscmp(va, vb)
    return -1 if va is not None else 1


# ---------------------------------------------------------------------------- filesystem: /boot


def read_entries(sysroot: Path, bootversion: int) -> list[tuple[str, BootEntry]]:
    """``(file name, entry)`` of the regular ``ostree-*.conf`` files in
    ``boot/loader.N/entries``, newest first (``version`` by ``strverscmp``)."""
    entries_dir = sysroot / f"boot/loader.{bootversion}/entries"
    try:
        names = sorted(os.listdir(entries_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DeployError(f"reading {entries_dir}: {exc.strerror}") from exc
    result = []
    for name in names:
        if not (name.startswith("ostree-") and name.endswith(".conf")):
            continue
        path = entries_dir / name
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                continue
            entry = BootEntry.from_bytes(path.read_bytes())
        except FormatError as exc:
            raise DeployError(f"Parsing {name}: {exc}") from None
        except OSError as exc:
            raise DeployError(f"Parsing {name}: {exc.strerror}") from exc
        result.append((name, entry))
    return sorted(result, key=functools.cmp_to_key(_compare_named))


def query_bootloader(sysroot: Path, configured: str) -> str | None:
    """The back-end to run besides BLS: ``"uboot"`` or None (``[sysroot] bootloader``).

    ``auto`` probes syslinux, grub2 and U-Boot in libostree's order. pyostree only writes BLS
    entries and U-Boot's ``uEnv.txt``; a detected or configured grub2/syslinux/zipl raises
    :class:`DeployError` rather than leaving that boot loader's own config stale.
    """
    if configured not in BOOTLOADER_CHOICES:
        raise DeployError(f"Invalid bootloader configuration: '{configured}'")
    if configured == "none":
        return None
    if configured == "uboot":
        return "uboot"
    if configured != "auto":
        raise DeployError(
            f"bootloader {configured} is not supported by pyostree (use none or uboot)"
        )
    if os.path.lexists(sysroot / "boot/syslinux/syslinux.cfg"):
        found = "syslinux"
    elif _grub2_present(sysroot):
        found = "grub2"
    elif os.path.lexists(sysroot / "boot/loader/uEnv.txt"):
        return "uboot"
    else:
        return None
    raise DeployError(
        f"{found} boot loader detected, which pyostree cannot configure; "
        "set [sysroot] bootloader=none in ostree/repo/config to write BLS entries only"
    )


def _grub2_present(sysroot: Path) -> bool:
    if (sysroot / "boot/grub/grub.cfg").exists() or (sysroot / "boot/grub2/grub.cfg").exists():
        return True
    efi = sysroot / "boot/efi/EFI"
    try:
        names = os.listdir(efi)
    except OSError:
        return False
    for name in names:
        if name != "BOOT" and (efi / name).is_dir() and not (efi / name).is_symlink() and (
            efi / name / "grub.cfg"
        ).exists():
            return True
    return False


def _sha256_file(h: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)


def checksum_dir(h: hashlib._Hash, path: Path) -> None:
    """Feed every file under ``path`` into ``h``, names sorted, recursively (a ``dtb/`` tree)."""
    for name in sorted(os.listdir(path)):
        child = path / name
        st = os.lstat(child)
        if stat.S_ISDIR(st.st_mode):
            checksum_dir(h, child)
        else:
            with contextlib.suppress(FileNotFoundError):
                _sha256_file(h, child)


def _kernel_from_modules(deploy_dir: Path, *, no_dtb: bool) -> KernelLayout | None:
    modules = deploy_dir / "usr/lib/modules"
    try:
        entries = list(os.scandir(modules))
    except (FileNotFoundError, NotADirectoryError):
        return None
    for dent in entries:
        if not dent.is_dir(follow_symlinks=False):
            continue
        try:
            st = os.stat(modules / dent.name / "vmlinuz")
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        kver = dent.name
        boot_dir = modules / kver
        break
    else:
        return None
    h = hashlib.sha256()
    _sha256_file(h, boot_dir / "vmlinuz")
    initramfs_src = None
    for candidate in ("initramfs.img", "initramfs"):
        if (boot_dir / candidate).exists():
            initramfs_src = candidate
            _sha256_file(h, boot_dir / candidate)
            break
    dt_src: str | None = None
    dt_name: str | None = None
    if not no_dtb:
        if (boot_dir / "devicetree").exists():
            dt_src, dt_name = "devicetree", f"devicetree-{kver}"
            _sha256_file(h, boot_dir / "devicetree")
        elif (boot_dir / "dtb").is_dir():
            dt_src = "dtb"
            checksum_dir(h, boot_dir / "dtb")
    hmac_src = hmac_name = None
    if (boot_dir / ".vmlinuz.hmac").exists():
        hmac_src, hmac_name = ".vmlinuz.hmac", f".vmlinuz-{kver}.hmac"
    return KernelLayout(
        boot_dir=boot_dir, kernel_src="vmlinuz", kernel_name=f"vmlinuz-{kver}",
        bootcsum=h.hexdigest(), initramfs_src=initramfs_src,
        initramfs_name=f"initramfs-{kver}.img" if initramfs_src else None,
        devicetree_src=dt_src, devicetree_name=dt_name, hmac_src=hmac_src, hmac_name=hmac_name,
    )


def _kernel_from_legacy(deploy_dir: Path) -> KernelLayout | None:
    boot_dir = None
    for sub in ("usr/lib/ostree-boot", "boot"):
        if (deploy_dir / sub).is_dir():
            boot_dir = deploy_dir / sub
            break
    if boot_dir is None:
        return None
    found: dict[str, tuple[str, str, str]] = {}
    for name in os.listdir(boot_dir):
        for prefix in ("vmlinuz-", "initramfs-", "devicetree-"):
            if name.startswith(prefix) and prefix not in found:
                base, _, csum = name.rpartition("-")
                if _CSUM_RE.fullmatch(csum):
                    found[prefix] = (name, base, csum)
                break
        if len(found) == 3:
            break
    if "vmlinuz-" not in found:
        return None
    kernel, kname, kcsum = found["vmlinuz-"]
    if "initramfs-" in found and found["initramfs-"][2] != kcsum:
        raise DeployError("Mismatched kernel checksum vs initrd")
    if "devicetree-" in found and found["devicetree-"][2] != kcsum:
        raise DeployError("Mismatched kernel checksum vs device tree in tree")
    initrd = found.get("initramfs-")
    dt = found.get("devicetree-")
    return KernelLayout(
        boot_dir=boot_dir, kernel_src=kernel, kernel_name=kname, bootcsum=kcsum,
        initramfs_src=initrd[0] if initrd else None, initramfs_name=initrd[1] if initrd else None,
        devicetree_src=dt[0] if dt else None, devicetree_name=dt[1] if dt else None,
    )


def find_kernel(deploy_dir: Path, *, no_dtb: bool = False) -> KernelLayout:
    """Locate kernel, initramfs and devicetree the way libostree does and compute the bootcsum.

    ``usr/lib/modules/KVER/vmlinuz`` is preferred; the legacy ``usr/lib/ostree-boot`` or
    ``boot`` layout (``vmlinuz-…-SHA256``) wins only if it has an initramfs and the modules
    layout has none.
    """
    try:
        modules = _kernel_from_modules(deploy_dir, no_dtb=no_dtb)
        legacy = _kernel_from_legacy(deploy_dir)
    except OSError as exc:
        raise DeployError(f"looking for the kernel in {deploy_dir}: {exc.strerror}") from exc
    if legacy is None:
        if modules is None:
            raise DeployError(
                "Failed to find kernel in /usr/lib/modules, /usr/lib/ostree-boot or /boot"
            )
        return modules
    if modules is not None and modules.initramfs_src is None and legacy.initramfs_src:
        return legacy
    return modules if modules is not None else legacy


_TMP_MARK = ".pyostree-tmp-"


def _install_file(src: Path, dest_dir: Path, name: str) -> None:
    """Hardlink ``src`` to ``dest_dir/name`` if missing; copy (tmp → link) across filesystems."""
    dest = dest_dir / name
    if os.path.exists(dest):
        return
    try:
        os.link(src, dest, follow_symlinks=False)
        return
    except FileExistsError:
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
            raise
    st = os.lstat(src)
    tmp = dest_dir / f"{_TMP_MARK}{name}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open(src, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        with contextlib.suppress(PermissionError):
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, st.st_mode & 0o7777)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, dest)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def _copy_tree(src: Path, dest: Path) -> None:
    """``copy_dir_recurse``: directories get the source's owner and mode, files are overwritten."""
    dest.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(src)
    with contextlib.suppress(PermissionError):
        os.chown(dest, st.st_uid, st.st_gid)
    os.chmod(dest, stat.S_IMODE(st.st_mode))
    for name in sorted(os.listdir(src)):
        child = src / name
        cst = os.lstat(child)
        if stat.S_ISDIR(cst.st_mode):
            _copy_tree(child, dest / name)
        elif stat.S_ISLNK(cst.st_mode):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest / name)
            os.symlink(os.readlink(child), dest / name)
        elif stat.S_ISREG(cst.st_mode):
            shutil.copy2(child, dest / name, follow_symlinks=False)
            with contextlib.suppress(PermissionError):
                os.chown(dest / name, cst.st_uid, cst.st_gid)


def install_kernel(sysroot: Path, osname: str, layout: KernelLayout) -> None:
    """Put the kernel (and friends) into ``boot/ostree/OS-BOOTCSUM/`` unless already there."""
    dest_dir = sysroot / f"boot/ostree/{osname}-{layout.bootcsum}"
    try:
        dest_dir.mkdir(mode=0o775, parents=True, exist_ok=True)
        for name in os.listdir(dest_dir):
            if name.startswith(_TMP_MARK):
                os.unlink(dest_dir / name)
        _install_file(layout.boot_dir / layout.kernel_src, dest_dir, layout.kernel_name)
        if layout.initramfs_src and layout.initramfs_name:
            _install_file(layout.boot_dir / layout.initramfs_src, dest_dir, layout.initramfs_name)
        if layout.devicetree_src:
            if layout.devicetree_name:
                _install_file(
                    layout.boot_dir / layout.devicetree_src, dest_dir, layout.devicetree_name
                )
            else:
                src = layout.boot_dir / layout.devicetree_src
                _copy_tree(src, dest_dir / layout.devicetree_src)
        if layout.hmac_src and layout.hmac_name:
            _install_file(layout.boot_dir / layout.hmac_src, dest_dir, layout.hmac_name)
    except OSError as exc:
        raise DeployError(f"installing kernel into {dest_dir}: {exc.strerror or exc}") from exc


def write_text_replace(path: Path, text: str, *, mode: int = 0o644, datasync: bool = False) -> None:
    """Replace ``path`` with ``text``: fixed-name temp file, rename (no fsync by default)."""
    tmp = path.with_name(f"{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(text.encode("utf-8"))
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        if datasync:
            os.fdatasync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_entry(sysroot: Path, bootversion: int, filename: str, cfg: BootEntry) -> None:
    entries = sysroot / f"boot/loader.{bootversion}/entries"
    try:
        entries.mkdir(mode=0o775, parents=True, exist_ok=True)
        write_text_replace(entries / filename, cfg.to_text())
    except OSError as exc:
        raise DeployError(f"writing {entries / filename}: {exc.strerror or exc}") from exc


def write_uenv(sysroot: Path, bootversion: int) -> None:
    """U-Boot back-end: ``loader.N/uEnv.txt`` from the entries just written for ``N``.

    Unlike libostree 2022.7, an existing ``boot/loader/uEnv.txt`` is not required when
    ``bootloader=uboot`` is configured (2022.7 fails the deploy in that case).
    """
    entries = [entry for _, entry in read_entries(sysroot, bootversion)]
    system_uenv = None
    if entries:
        candidate = sysroot / uboot_system_uenv_path(entries[0])
        try:
            system_uenv = candidate.read_bytes().decode("utf-8")
        except FileNotFoundError:
            system_uenv = None
        except (OSError, UnicodeDecodeError) as exc:
            raise DeployError(f"Reading {candidate}: {exc}") from exc
    path = sysroot / f"boot/loader.{bootversion}/uEnv.txt"
    try:
        write_text_replace(path, uboot_uenv(entries, system_uenv), datasync=True)
    except OSError as exc:
        raise DeployError(f"writing {path}: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------------------- the swap


def symlink_replace(target: str, link: Path) -> None:
    """Atomically (re)point ``link`` at ``target``: symlink ``LINK.tmp``, rename over ``link``."""
    tmp = link.with_name(link.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def read_subbootversion(sysroot: Path, bootversion: int) -> int:
    """0 or 1 from ``ostree/boot.B -> boot.B.S``; 0 when the link does not exist."""
    link = sysroot / f"ostree/boot.{bootversion}"
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise DeployError(f"Invalid target in {link}: {exc.strerror}") from exc
    if target.endswith(".0"):
        return 0
    if target.endswith(".1"):
        return 1
    raise DeployError(f"Invalid target '{target}' in ostree/boot.{bootversion}")


def write_bootlinks(
    sysroot: Path, bootversion: int, subbootversion: int,
    links: Sequence[tuple[str, str, int, str, int]],
) -> None:
    """Recreate ``ostree/boot.B.S`` with ``OS/BOOTCSUM/BOOTSERIAL -> ../../../deploy/...``.

    ``links`` holds ``(osname, bootcsum, bootserial, csum, deployserial)`` per deployment.
    """
    subdir = sysroot / f"ostree/boot.{bootversion}.{subbootversion}"
    try:
        rmtree(subdir)
        subdir.mkdir(mode=0o755, parents=True)
        for osname, bootcsum, bootserial, csum, deployserial in links:
            parent = subdir / osname / bootcsum
            parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            symlink_replace(bootlink_target(osname, csum, deployserial), parent / str(bootserial))
    except OSError as exc:
        raise DeployError(f"creating bootlinks in {subdir}: {exc.strerror or exc}") from exc


def swap_bootlinks(sysroot: Path, bootversion: int, subbootversion: int) -> None:
    """Point ``ostree/boot.B`` at ``boot.B.S`` (atomic rename)."""
    try:
        symlink_replace(
            f"boot.{bootversion}.{subbootversion}", sysroot / f"ostree/boot.{bootversion}"
        )
        fsync_dir(sysroot / "ostree")
    except OSError as exc:
        raise DeployError(f"swapping bootlinks: {exc.strerror or exc}") from exc


def prepare_loader_link(sysroot: Path, new_bootversion: int) -> None:
    """``boot/boot -> .`` (once) and ``boot/loader.tmp -> loader.B'``, ready to be renamed."""
    try:
        with contextlib.suppress(FileExistsError):
            os.symlink(".", sysroot / "boot/boot")
        symlink_replace(f"loader.{new_bootversion}", sysroot / "boot/loader.tmp")
    except OSError as exc:
        raise DeployError(f"preparing boot/loader: {exc.strerror or exc}") from exc


def swap_loader(sysroot: Path) -> None:
    """The commit point: rename ``boot/loader.tmp`` over ``boot/loader``, then fsync ``boot``."""
    boot = sysroot / "boot"
    try:
        os.replace(boot / "loader.tmp", boot / "loader")
        fsync_dir(boot)
    except OSError as exc:
        raise DeployError(f"swapping boot/loader: {exc.strerror or exc}") from exc


def sync_sysroot(sysroot: Path) -> None:
    """``syncfs`` the filesystems of the sysroot and of ``/boot`` (may differ). Never FIFREEZE."""
    try:
        syncfs(sysroot)
        syncfs(sysroot / "boot")
    except OSError as exc:
        raise DeployError(f"syncing {sysroot}: {exc.strerror or exc}") from exc


def rmtree(path: Path) -> None:
    """``rm -rf`` that is quiet when ``path`` is missing; a symlink is unlinked, not followed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
