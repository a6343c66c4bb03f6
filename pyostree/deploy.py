"""Admin operations on a sysroot, with the semantics of ``ostree admin`` 2022.7.

``init_fs``, ``os_init``, ``deploy``, ``undeploy``, ``set_default``, ``rollback``, ``pin``,
``cleanup``, ``kargs_edit_in_place``, ``finalize_staged`` and ``boot_complete`` each take the
sysroot lock (``ostree/lock``), load the sysroot and leave it reloaded.

Crash safety follows libostree: a new deployment is checked out under a fresh
``CSUM.SERIAL`` that no boot entry references; new entries go to the *other* ``loader.N`` and
bootlinks to the *other* ``boot.B.S``; everything is synced (``syncfs``) before
``boot/loader`` is renamed, which is the single commit point. Killed at any moment, the
previous default still boots, and the next run's initial cleanup removes the leftovers
(unreferenced deployment directories, the other bootversion, stale temp files).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import attrs

from . import gvariant as gv
from .bootloader import (
    build_entry,
    entry_filename,
    entry_title,
    find_kernel,
    install_kernel,
    parse_os_release,
    prepare_loader_link,
    query_bootloader,
    read_subbootversion,
    rmtree,
    swap_bootlinks,
    swap_loader,
    sync_sysroot,
    write_bootlinks,
    write_entry,
    write_text_replace,
    write_uenv,
)
from .core import is_checksum, parse_refspec, validate_ref
from .errors import DeployError, FormatError, NoSpaceError, PyOstreeError, UsageError
from .etcmerge import merge_etc
from .formats.bls import BootEntry, Kargs
from .formats.keyfile import KeyFile
from .sysroot import (
    ORIGIN_TRANSIENT_GROUP,
    Deployment,
    Sysroot,
    parse_deploy_name,
)

__all__ = [
    "boot_complete",
    "cleanup",
    "deploy",
    "deploy_tree",
    "finalize_staged",
    "init_fs",
    "kargs_edit_in_place",
    "os_init",
    "pin",
    "prepare_cleanup",
    "rollback",
    "set_default",
    "set_immutable",
    "set_origin",
    "simple_write_deployment",
    "stage_tree",
    "undeploy",
    "write_deployments",
    "write_origin_file",
]

if TYPE_CHECKING:
    from .remotes import RemoteChange
    from .repo import Repo

log = logging.getLogger("pyostree.deploy")

FINALIZE_FAILURE_STAMP = "ostree/finalize-failure.stamp"  # relative to /boot
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_IMMUTABLE_FL = 0x10
_T = TypeVar("_T")


# ---------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _locked(sysroot: Sysroot) -> Iterator[Sysroot]:
    """Hold the sysroot lock (unless the caller already does) and load the sysroot."""
    if sysroot.locked:
        sysroot.load()
        yield sysroot
        return
    with sysroot.lock():
        sysroot.load()
        yield sysroot


def _oserr(exc: OSError, what: str) -> PyOstreeError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpaceError(f"no space left on device while {what}")
    return DeployError(f"{what}: {exc.strerror or exc}" + (f": {exc.filename}"
                                                           if exc.filename else ""))


def _io(what: str, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except OSError as exc:
        raise _oserr(exc, what) from exc


def set_immutable(path: Path, immutable: bool) -> None:
    """Set or clear ``FS_IMMUTABLE_FL`` (``chattr +i``); silently nothing where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        buf = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("i", 0))
        flags = struct.unpack("i", buf[:4])[0]
        if bool(flags & _FS_IMMUTABLE_FL) == immutable:
            return
        flags = flags | _FS_IMMUTABLE_FL if immutable else flags & ~_FS_IMMUTABLE_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags))
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
            raise _oserr(exc, f"changing the immutable flag of {path}") from exc
    finally:
        os.close(fd)


def _rm(path: Path) -> None:
    try:
        rmtree(path)
    except OSError as exc:
        raise _oserr(exc, f"removing {path}") from exc


def _bump_mtime(sysroot: Sysroot) -> None:
    _io("bumping the mtime of ostree/deploy", lambda: os.utime(sysroot.path / "ostree/deploy"))


def _commit_version(sysroot: Sysroot, csum: str) -> str | None:
    try:
        return sysroot.repo().load_commit(csum).version
    except (PyOstreeError, OSError):
        return None


def _repo_mode_for_user() -> str:
    return "bare" if os.geteuid() == 0 else "bare-user"


# ---------------------------------------------------------------------------- init


def _ensure_initialized(path: Path) -> None:
    """``ostree_sysroot_ensure_initialized``: ``ostree/repo`` (bare) and ``ostree/deploy``."""
    from .repo import Repo, RepoMode

    _io("creating ostree/repo", lambda: (path / "ostree/repo").mkdir(0o755, parents=True,
                                                                        exist_ok=True))
    _io("creating ostree/deploy", lambda: (path / "ostree/deploy").mkdir(0o755, parents=True,
                                                                            exist_ok=True))
    mode = RepoMode.BARE if _repo_mode_for_user() == "bare" else RepoMode.BARE_USER
    if not (path / "ostree/repo/config").exists():
        Repo.create(path / "ostree/repo", mode)


def init_fs(path: str | os.PathLike[str], *, modern: bool = False) -> None:
    """``ostree admin init-fs``: top-level directories, ``ostree/repo`` and ``ostree/deploy``."""
    root = Path(path)
    if not root.is_dir():
        raise DeployError(f"opendir({root}): No such file or directory")

    def make() -> None:
        (root / "boot").mkdir(0o755, exist_ok=True)
        if not modern:
            for name in ("dev", "home", "proc", "run", "sys"):
                (root / name).mkdir(0o755, exist_ok=True)
            (root / "root").mkdir(0o700, exist_ok=True)
            (root / "tmp").mkdir(0o1777, exist_ok=True)
            os.chmod(root / "tmp", 0o1777)

    _io(f"initializing {root}", make)
    _ensure_initialized(root)


def os_init(sysroot: Sysroot, osname: str) -> None:
    """``ostree admin os-init OSNAME``: the stateroot with its shared ``var``."""
    if not osname or "/" in osname or osname in (".", ".."):
        raise DeployError(f"invalid stateroot name {osname!r}")
    _ensure_initialized(sysroot.path)
    base = sysroot.path / "ostree/deploy" / osname

    def make() -> None:
        os.mkdir(base, 0o777)
        os.mkdir(base / "var", 0o777)
        os.mkdir(base / "var/tmp", 0o777)
        os.chmod(base / "var/tmp", 0o1777)
        os.mkdir(base / "var/lib", 0o777)
        os.mkdir(base / "var/log", 0o755)
        os.symlink("../run", base / "var/run")
        os.symlink("../run/lock", base / "var/lock")

    try:
        make()
    except FileExistsError as exc:
        raise DeployError(f"Creating {exc.filename}: File exists") from exc
    except OSError as exc:
        raise _oserr(exc, f"initializing stateroot {osname}") from exc
    _bump_mtime(sysroot)


# ---------------------------------------------------------------------------- cleanup


def _list_deployment_dirs(sysroot: Sysroot, osname: str) -> list[tuple[str, int]]:
    deploy_dir = sysroot.path / "ostree/deploy" / osname / "deploy"
    try:
        entries = list(os.scandir(deploy_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [parse_deploy_name(e.name) for e in entries if e.is_dir(follow_symlinks=False)]


def _all_deployment_dirs(sysroot: Sysroot) -> list[tuple[str, str, int]]:
    result: list[tuple[str, str, int]] = []
    try:
        entries = list(os.scandir(sysroot.path / "ostree/deploy"))
    except FileNotFoundError:
        return []
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            result.extend((e.name, c, s) for c, s in _list_deployment_dirs(sysroot, e.name))
    return result


def _rmrf_deployment(sysroot: Sysroot, osname: str, csum: str, serial: int) -> None:
    dep_dir = sysroot.path / f"ostree/deploy/{osname}/deploy/{csum}.{serial}"
    try:
        st = os.stat(dep_dir)
        root = os.stat("/")
    except FileNotFoundError:
        return
    if (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino):
        return
    set_immutable(dep_dir, False)
    origin = dep_dir.with_name(dep_dir.name + ".origin")
    _rm(origin)
    _rm(dep_dir)


def _cleanup_other_bootversions(sysroot: Sysroot) -> None:
    other = 1 - sysroot.bootversion
    other_sub = 1 - sysroot.subbootversion
    for rel in (f"boot/loader.{other}", f"ostree/boot.{other}", f"ostree/boot.{other}.0",
                f"ostree/boot.{other}.1", f"ostree/boot.{sysroot.bootversion}.{other_sub}",
                "boot/loader.tmp"):
        _rm(sysroot.path / rel)


def _cleanup_old_deployments(sysroot: Sysroot) -> None:
    active = {d.key for d in sysroot.deployments}
    active_boot = {d.bootcsum for d in sysroot.deployments}
    for osname, csum, serial in _all_deployment_dirs(sysroot):
        if (osname, csum, serial) not in active:
            _rmrf_deployment(sysroot, osname, csum, serial)
    boot_ostree = sysroot.path / "boot/ostree"
    try:
        entries = list(os.scandir(boot_ostree))
    except FileNotFoundError:
        return
    for e in entries:
        if not e.is_dir(follow_symlinks=False):
            continue
        _, dash, bootcsum = e.name.rpartition("-")
        if not dash or not is_checksum(bootcsum) or bootcsum in active_boot:
            continue
        _rm(Path(e.path))


def _generate_deployment_refs(sysroot: Sysroot) -> None:
    repo = sysroot.repo()
    b, s = sysroot.bootversion, sysroot.subbootversion
    stale = (f"ostree/{1 - b}/0/", f"ostree/{1 - b}/1/", f"ostree/{b}/{1 - s}/")
    for ref in repo.list_refs(remotes=False):
        if ref.startswith(stale):
            with contextlib.suppress(PyOstreeError):
                repo.set_ref(ref, None)
    wanted = {f"ostree/{b}/{s}/{i}": d.csum for i, d in enumerate(sysroot.deployments)}
    current = repo.list_refs(f"ostree/{b}/{s}", remotes=False)
    for ref in current:
        if ref.startswith(f"ostree/{b}/{s}/") and ref not in wanted:
            repo.set_ref(ref, None)
    for ref, csum in wanted.items():
        if current.get(ref) != csum:
            repo.set_ref(ref, csum)


def _cleanup_internal(sysroot: Sysroot, prune: bool) -> None:
    _cleanup_other_bootversions(sysroot)
    _cleanup_old_deployments(sysroot)
    _generate_deployment_refs(sysroot)
    if prune:
        from .pruning import prune as prune_repo

        result = prune_repo(sysroot.repo(), depth=0, refs_only=True)
        if result.freed:
            log.info("Freed objects: %d bytes", result.freed)


def prepare_cleanup(sysroot: Sysroot) -> None:
    """Remove leftovers (other bootversion, unreferenced deployments and boot dirs), regenerate
    the ``ostree/B/S/I`` refs; no pruning. The sysroot must be loaded (and should be locked)."""
    _cleanup_internal(sysroot, prune=False)


def cleanup(sysroot: Sysroot, *, prune: bool = True) -> None:
    """``ostree admin cleanup``: :func:`prepare_cleanup` plus a refs-only prune (depth 0)."""
    with _locked(sysroot):
        _cleanup_internal(sysroot, prune)


# ---------------------------------------------------------------------------- origin files


def write_origin_file(
    sysroot: Sysroot, deployment: Deployment, origin: KeyFile | None, *, sync: bool = True
) -> None:
    """Replace ``CSUM.SERIAL.origin`` (tmp + rename; with ``sync``, fdatasync the file before
    and fsync its directory after the rename)."""
    if origin is None:
        return
    path = sysroot.origin_path(deployment)

    def write() -> None:
        write_text_replace(path, origin.to_text(), datasync=sync)
        if sync:
            from .fileio import fsync_dir

            fsync_dir(path.parent)

    _io(f"Writing out origin file {path}", write)


# ---------------------------------------------------------------------------- creating a tree


def _checkout(sysroot: Sysroot, csum: str, dest: Path, *, subpath: str | None = None,
              force_copy: bool = False) -> None:
    from .checkout import CheckoutOptions, checkout

    repo = sysroot.repo()
    user_mode = repo.mode.value == "bare-user" or os.geteuid() != 0
    checkout(repo, csum, dest, CheckoutOptions(user_mode=user_mode, subpath=subpath,
                                                force_copy=force_copy))


def _prepare_etc(sysroot: Sysroot, csum: str, deploy_dir: Path) -> None:
    """``prepare_deployment_etc``: ``etc`` becomes a full copy of ``usr/etc``."""
    etc_exists = os.path.lexists(deploy_dir / "etc")
    usretc_exists = os.path.lexists(deploy_dir / "usr/etc")
    subpath = "/usr/etc"
    if etc_exists:
        if usretc_exists:
            raise DeployError("Preparing /etc: Tree contains both /etc and /usr/etc")
        _io("Preparing /etc", lambda: os.rename(deploy_dir / "etc", deploy_dir / "usr/etc"))
        usretc_exists = True
        subpath = "/etc"
    if usretc_exists:
        _checkout(sysroot, csum, deploy_dir / "etc", subpath=subpath, force_copy=True)


def _initialize_deployment(
    sysroot: Sysroot, osname: str, csum: str, origin: KeyFile | None,
    override_kargs: Sequence[str] | None,
) -> Deployment:
    """Check out a new ``CSUM.SERIAL``, find its kernel and prepare ``/etc``."""
    serial = max((s + 1 for c, s in _list_deployment_dirs(sysroot, osname) if c == csum),
                 default=0)
    dep = Deployment(osname=osname, csum=csum, deployserial=serial, origin=origin)
    deploy_parent = sysroot.path / "ostree/deploy" / osname / "deploy"
    dest = deploy_parent / dep.name
    _io(f"creating {deploy_parent}", lambda: deploy_parent.mkdir(0o775, parents=True,
                                                                 exist_ok=True))
    set_immutable(dest, False)
    _io(f"removing {dest}", lambda: rmtree(dest))
    _checkout(sysroot, csum, dest)
    layout = find_kernel(dest, no_dtb=sysroot.no_dtb)
    cfg = BootEntry()
    if override_kargs is not None:
        cfg = cfg.with_option("options", " ".join(override_kargs))
    dep = attrs.evolve(dep, bootcsum=layout.bootcsum, bootconfig=cfg)
    _prepare_etc(sysroot, csum, dest)
    var = dest / "var"
    if var.is_dir() and not var.is_symlink():
        for name in sorted(os.listdir(var)):
            log.warning("note: Deploying commit %s which contains content in /var/%s that "
                        "will be ignored.", csum, name)
    return dep


def _var_dir(sysroot: Sysroot, osname: str) -> Path:
    booted = sysroot.booted_deployment
    if (booted is not None and booted.osname == osname and not sysroot._booted_override
            and sysroot.root_is_booted):
        return Path("/var")
    return sysroot.path / "ostree/deploy" / osname / "var"


def _finalize_deployment(
    sysroot: Sysroot, dep: Deployment, merge: Deployment | None
) -> Deployment:
    """``sysroot_finalize_deployment``: kargs from the merge deployment, /etc merge, origin,
    seal."""
    dest = sysroot.deployment_path(dep)
    if merge is not None and dep.bootconfig.options is None:
        options = merge.bootconfig.options
        if options is not None:
            dep = attrs.evolve(dep, bootconfig=dep.bootconfig.with_option("options", options))
    if merge is not None:
        mdir = sysroot.deployment_path(merge)
        merge_etc(mdir / "usr/etc", mdir / "etc", dest / "etc",
                  xattrs=True, log=lambda msg: log.info("%s", msg))

    def updated() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest / "etc/.updated")
        var = _var_dir(sysroot, dep.osname)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(var / ".updated")
        stamp = sysroot.path / "ostree/deploy" / dep.osname / "var/.ostree-selabeled"
        if not os.path.lexists(stamp):
            write_text_replace(stamp, "", datasync=True)

    _io("finalizing deployment", updated)
    write_origin_file(sysroot, dep, dep.origin, sync=False)
    if not sysroot.mutable_deployments:
        set_immutable(dest, True)
    return dep


def deploy_tree(
    sysroot: Sysroot, osname: str | None, revision: str, *, origin: KeyFile | None = None,
    merge: Deployment | None = None, override_kargs: Sequence[str] | None = None,
) -> Deployment:
    """``ostree_sysroot_deploy_tree``: a complete new deployment, not yet in the boot list."""
    if osname is None:
        if sysroot.booted_deployment is None:
            raise DeployError("Not currently booted into an OSTree system and no osname given")
        osname = sysroot.booted_deployment.osname
    csum = sysroot.repo().resolve_rev(revision)
    assert csum is not None
    dep = _initialize_deployment(sysroot, osname, csum, origin, override_kargs)
    return _finalize_deployment(sysroot, dep, merge)


# ---------------------------------------------------------------------------- the boot list


def _assign_bootserials(deployments: Sequence[Deployment]) -> list[Deployment]:
    counts: dict[str, int] = {}
    result = []
    for i, dep in enumerate(deployments):
        n = counts.get(dep.bootcsum, 0)
        counts[dep.bootcsum] = n + 1
        result.append(attrs.evolve(dep, bootserial=n, index=i))
    return result


def _nonostree_kargs(dep: Deployment) -> str:
    return Kargs.parse(dep.bootconfig.options).replace("ostree").to_string()


def _bootconfigs_equal(sysroot: Sysroot, a: Deployment, b: Deployment) -> bool:
    return (a.bootcsum == b.bootcsum and _nonostree_kargs(a) == _nonostree_kargs(b)
            and _commit_version(sysroot, a.csum) == _commit_version(sysroot, b.csum))


def _install_deployment_kernel(
    sysroot: Sysroot, new_bootversion: int, dep: Deployment, n: int, show_osname: bool,
    boot_counting: int, bls_append: dict[str, str],
) -> None:
    dest = sysroot.deployment_path(dep)
    layout = find_kernel(dest, no_dtb=sysroot.no_dtb)
    if layout.bootcsum != dep.bootcsum:
        # The bootcsum recorded in the bootlink is what names the /boot directory.
        layout = attrs.evolve(layout, bootcsum=dep.bootcsum)
    install_kernel(sysroot.path, dep.osname, layout)
    rel = "usr/lib/os-release" if (dest / "usr/lib/os-release").exists() else "etc/os-release"
    try:
        os_release = parse_os_release((dest / rel).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DeployError(f"Installing kernel: Reading /{rel}: {exc}") from exc
    title = entry_title(os_release, _commit_version(sysroot, dep.csum), dep.osname, dep.index,
                        show_osname)
    cfg = build_entry(
        dep.bootconfig, title=title, n_deployments=n, index=dep.index,
        bootversion=new_bootversion, osname=dep.osname, bootcsum=dep.bootcsum,
        bootserial=dep.bootserial, layout=layout, bls_append=bls_append,
    )
    name = entry_filename(n, dep.index, dep.osname, boot_counting=boot_counting,
                          previous_name=dep.entry_name)
    write_entry(sysroot.path, new_bootversion, name, cfg)


def _sysroot_options(sysroot: Sysroot) -> tuple[str, int, dict[str, str]]:
    """``[sysroot]`` bootloader, boot-counting-tries and bls-append-except-default."""
    config = sysroot.read_config()
    bootloader = config.get("sysroot", "bootloader") or "auto"
    tries_text = config.get("sysroot", "boot-counting-tries") or "0"
    if not tries_text.isdigit() or int(tries_text) > 5:
        raise DeployError(f"Parsing sysroot.boot-counting-tries: invalid value '{tries_text}'")
    bls_append: dict[str, str] = {}
    raw = config.get("sysroot", "bls-append-except-default")
    for item in (raw or "").split(";"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise DeployError('bls-append-except-default key must be of the form '
                              '"key1=value1;key2=value2..."')
        bls_append[key] = value
    return bootloader, int(tries_text), bls_append


def _links(deployments: Sequence[Deployment]) -> list[tuple[str, str, int, str, int]]:
    return [(d.osname, d.bootcsum, d.bootserial, d.csum, d.deployserial) for d in deployments]


def _bootswap(sysroot: Sysroot, new: list[Deployment]) -> None:
    """Path 1: new ``loader.B'`` entries and ``boot.B'.S'`` links, sync, rename ``boot/loader``."""
    bootloader_cfg, boot_counting, bls_append = _sysroot_options(sysroot)
    bootloader = query_bootloader(sysroot.path, bootloader_cfg)
    new_bv = 1 - sysroot.bootversion
    entries = sysroot.path / f"boot/loader.{new_bv}/entries"
    _rm(entries)
    _io(f"creating {entries}", lambda: entries.mkdir(0o755, parents=True))
    show_osname = any(d.osname != new[0].osname for d in new[1:])
    for dep in new:
        _install_deployment_kernel(sysroot, new_bv, dep, len(new), show_osname, boot_counting,
                                   bls_append)
    new_sub = 1 - read_subbootversion(sysroot.path, new_bv)
    write_bootlinks(sysroot.path, new_bv, new_sub, _links(new))
    swap_bootlinks(sysroot.path, new_bv, new_sub)
    if bootloader == "uboot":
        write_uenv(sysroot.path, new_bv)
    prepare_loader_link(sysroot.path, new_bv)
    sync_sysroot(sysroot.path)
    swap_loader(sysroot.path)


def write_deployments(
    sysroot: Sysroot, new_deployments: Sequence[Deployment], *, postclean: bool = True
) -> None:
    """``ostree_sysroot_write_deployments``: make ``new_deployments`` the boot list, atomically.

    The sysroot must be loaded and locked; it is reloaded afterwards.
    """
    current = list(sysroot.deployments)
    staged = sysroot.staged_deployment
    removed_staged = staged is not None
    new = list(new_deployments)
    if new and staged is not None and new[0].same(staged):
        removed_staged = False
    new = [d for d in new if not d.staged]
    if removed_staged and staged is not None:
        _io("removing the staged deployment state", lambda: sysroot.staged_path.unlink(
            missing_ok=True))
        _rmrf_deployment(sysroot, staged.osname, staged.csum, staged.deployserial)
        _io("removing the staged lock", lambda: sysroot.staged_locked_path.unlink(
            missing_ok=True))
        sysroot.staged_deployment = None
        current = [d for d in current if not d.staged]
    nonstaged_current = [d for d in current if not d.staged]
    new = _assign_bootserials(new)

    requires_new_bootversion = len(new) != len(nonstaged_current)
    if not requires_new_bootversion:
        is_noop = True
        for cur, nd in zip(nonstaged_current, new, strict=True):
            if not _bootconfigs_equal(sysroot, cur, nd):
                requires_new_bootversion = True
                is_noop = False
                break
            if not cur.same(nd) or cur.bootconfig != nd.bootconfig:
                is_noop = False
        if is_noop:
            if removed_staged:
                _write_deployments_finish(sysroot)
            return

    booted = sysroot.booted_deployment
    for dep in new:
        if not sysroot.deployment_path(dep).is_dir():
            raise DeployError(
                f"Unable to find expected deployment root: {sysroot.deployment_path(dep)}"
            )
    if booted is not None and not any(d.same(booted) for d in new):
        raise DeployError("Attempting to remove booted deployment")

    if not requires_new_bootversion:
        new_sub = 1 - sysroot.subbootversion
        write_bootlinks(sysroot.path, sysroot.bootversion, new_sub, _links(new))
        sync_sysroot(sysroot.path)
        swap_bootlinks(sysroot.path, sysroot.bootversion, new_sub)
    else:
        _bootswap(sysroot, new)
    _write_deployments_finish(sysroot)
    if postclean:
        _cleanup_internal(sysroot, prune=True)


def _write_deployments_finish(sysroot: Sysroot) -> None:
    _bump_mtime(sysroot)
    sysroot.load()
    for dep in sysroot.deployments:
        current = sysroot.path / "ostree/deploy" / dep.osname / "current"
        try:
            os.unlink(current)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _oserr(exc, f"removing {current}") from exc


def simple_write_deployment(
    sysroot: Sysroot, osname: str | None, new_deployment: Deployment,
    merge: Deployment | None, *, retain: bool = False, retain_pending: bool = False,
    retain_rollback: bool = False, not_default: bool = False, postclean: bool = True,
) -> None:
    """``ostree_sysroot_simple_write_deployment``: the new deployment first (or right after the
    booted/merge one with ``not_default``), keeping pinned, other-stateroot, booted and merge
    deployments and, if asked, pending and rollback ones."""
    booted = sysroot.booted_deployment
    if osname is None and booted is not None:
        osname = booted.osname
    new: list[Deployment] = []
    added = False
    if not not_default:
        new.append(new_deployment)
        added = True
    if booted is None and merge is None and (retain_pending or retain_rollback):
        retain = True
    before_booted = before_merge = True
    for dep in sysroot.deployments:
        osname_matches = osname is None or dep.osname == osname
        is_booted = dep.same(booted)
        is_merge = dep.same(merge)
        if is_booted:
            before_booted = False
        if is_merge:
            before_merge = False
        passed = (not before_booted) if booted is not None else (not before_merge)
        if (retain or dep.is_pinned or not osname_matches or (retain_pending and not passed)
                or is_booted or is_merge or (retain_rollback and passed)):
            new.append(dep)
        if not added and passed:
            new.append(new_deployment)
            added = True
    if not added:
        new.append(new_deployment)
    write_deployments(sysroot, new, postclean=postclean)


# ---------------------------------------------------------------------------- staging


def _serialize_deployment(dep: Deployment) -> gv.Variant:
    return gv.Variant("a{sv}", {
        "name": gv.Variant("s", dep.name),
        "osname": gv.Variant("s", dep.osname),
        "bootcsum": gv.Variant("s", dep.bootcsum),
    })


def stage_tree(
    sysroot: Sysroot, osname: str | None, revision: str, *, origin: KeyFile | None = None,
    merge: Deployment | None = None, override_kargs: Sequence[str] | None = None,
    lock_finalization: bool = False,
) -> Deployment:
    """``ostree_sysroot_stage_tree``: check out now, merge /etc and write entries at shutdown
    (:func:`finalize_staged`). Needs a booted deployment."""
    if sysroot.booted_deployment is None:
        raise DeployError("Cannot stage deployment: Not currently booted into an OSTree system")
    if osname is None:
        osname = sysroot.booted_deployment.osname
    csum = sysroot.repo().resolve_rev(revision)
    assert csum is not None
    if lock_finalization:
        def touch() -> None:
            sysroot.run_dir.mkdir(0o755, parents=True, exist_ok=True)
            sysroot.staged_locked_path.touch(0o640)
        _io("locking finalization", touch)
    dep = _initialize_deployment(sysroot, osname, csum, origin, override_kargs)
    write_origin_file(sysroot, dep, origin, sync=False)
    state: dict[str, gv.Variant] = {"target": _serialize_deployment(dep)}
    if merge is not None:
        state["merge-deployment"] = _serialize_deployment(merge)
    if override_kargs is not None:
        state["kargs"] = gv.Variant("as", list(override_kargs))

    def write_state() -> None:
        sysroot.run_dir.mkdir(0o755, parents=True, exist_ok=True)
        tmp = sysroot.staged_path.with_name(sysroot.staged_path.name + ".tmp")
        tmp.write_bytes(gv.encode("a{sv}", state))
        os.replace(tmp, sysroot.staged_path)

    _io(f"writing {sysroot.staged_path}", write_state)
    previous = sysroot.staged_deployment
    if previous is not None and not previous.same(dep):
        _rmrf_deployment(sysroot, previous.osname, previous.csum, previous.deployserial)
    _bump_mtime(sysroot)
    sysroot.load()
    prepare_cleanup(sysroot)
    staged = sysroot.staged_deployment
    assert staged is not None
    return staged


def finalize_staged(sysroot: Sysroot) -> bool:
    """``ostree admin finalize-staged`` (run at shutdown). True if a deployment was finalized.

    A failure is also recorded in ``/boot/ostree/finalize-failure.stamp`` for
    :func:`boot_complete` to report on the next boot.
    """
    with _locked(sysroot):
        try:
            return _finalize_staged_inner(sysroot)
        except PyOstreeError as exc:
            stamp = sysroot.path / "boot" / FINALIZE_FAILURE_STAMP
            with contextlib.suppress(OSError):
                stamp.parent.mkdir(parents=True, exist_ok=True)
                write_text_replace(stamp, str(exc), datasync=True)
            raise


def _finalize_staged_inner(sysroot: Sysroot) -> bool:
    staged = sysroot.staged_deployment
    if staged is None:
        log.info("No deployment staged for finalization")
        return False
    if sysroot.staged_locked_path.exists():
        log.info("Not finalizing; found %s", sysroot.staged_locked_path)
        return False
    data = sysroot.staged_data or {}
    merge = None
    if "merge-deployment" in data:
        info = data["merge-deployment"].value
        try:
            mcsum, mserial = parse_deploy_name(info["name"].value)
            stub = (info["osname"].value, mcsum, mserial)
        except (KeyError, AttributeError) as exc:
            raise DeployError(f"Loading staged deployment: missing key {exc}") from exc
        merge = next((d for d in sysroot.deployments if d.key == stub), None)
        if merge is None:
            raise DeployError(
                f"Failed to find merge deployment {mcsum}.{mserial} for staged"
            )
    _io("removing the staged state", lambda: sysroot.staged_path.unlink())
    dep = _finalize_deployment(sysroot, staged, merge)
    dep = attrs.evolve(dep, staged=False)
    sysroot.staged_deployment = None
    sysroot.deployments = tuple(d for d in sysroot.deployments if not d.staged)
    simple_write_deployment(sysroot, dep.osname, dep, merge, postclean=False)
    prepare_cleanup(sysroot)
    return True


def boot_complete(sysroot: Sysroot) -> None:
    """``ostree admin boot-complete``: report a failed finalization of the previous shutdown,
    and (with boot counting) bless the booted entry by dropping its ``+LEFT-DONE`` suffix, as
    ``systemd-bless-boot`` does."""
    with _locked(sysroot):
        stamp = sysroot.path / "boot" / FINALIZE_FAILURE_STAMP
        try:
            failure = stamp.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            failure = None
        except OSError as exc:
            raise _oserr(exc, f"Reading from {stamp}") from exc
        if failure is not None:
            with contextlib.suppress(OSError):
                stamp.unlink()
            raise DeployError(
                f"ostree-finalize-staged.service failed on previous boot: {failure}"
            )
        booted = sysroot.booted_deployment
        name = booted.entry_name if booted is not None else None
        if booted is None or not name or "+" not in name:
            return
        entries = sysroot.path / f"boot/loader.{sysroot.bootversion}/entries"
        blessed = name[: name.rindex("+")] + ".conf"

        def bless() -> None:
            os.rename(entries / name, entries / blessed)
            from .fileio import fsync_dir

            fsync_dir(entries)

        _io(f"blessing boot entry {name}", bless)
        sysroot.load()


# ---------------------------------------------------------------------------- public operations


def _origin_from(refspec: str, origin_refspec: str | None,
                 origin_file: str | os.PathLike[str] | None) -> KeyFile:
    if origin_file is not None:
        try:
            text = Path(origin_file).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DeployError(f"reading origin file {origin_file}: {exc}") from exc
        try:
            origin = KeyFile.parse(text)
        except PyOstreeError as exc:
            raise DeployError(f"parsing origin file {origin_file}: {exc}") from exc
        # GLib writes every key back as ``key=value`` (comments and blank lines are kept)
        for group in origin.groups():
            for key in origin.keys(group):
                value = origin.get_raw(group, key)
                assert value is not None
                origin.set_raw(group, key, value)
        return origin
    origin = KeyFile()
    origin.set("origin", "refspec", origin_refspec if origin_refspec is not None else refspec)
    return origin


def _proc_cmdline_kargs() -> Kargs:
    try:
        text = Path("/proc/cmdline").read_text().rstrip()
    except OSError as exc:
        raise _oserr(exc, "reading /proc/cmdline") from exc
    args = [a for a in Kargs.parse(text).to_list() if not a.startswith(("BOOT_IMAGE=", "initrd="))]
    return Kargs.parse(" ".join(args))


def deploy(
    sysroot: Sysroot, osname: str | None, revision: str, *,
    kargs: Sequence[str] | None = None, karg_append: Sequence[str] | None = None,
    karg_delete: str | None = None, karg_none: bool = False, karg_proc_cmdline: bool = False,
    no_merge: bool = False, no_prune: bool = False, retain: bool = False,
    retain_pending: bool = False, retain_rollback: bool = False, not_as_default: bool = False,
    origin_refspec: str | None = None, origin_file: str | os.PathLike[str] | None = None,
    stage: bool = False, lock_finalization: bool = False,
) -> Deployment:
    """``ostree admin deploy [--os=OSNAME] REVISION``; returns the new deployment (reloaded).

    ``kargs`` are ``--karg`` (replace), ``karg_append`` ``--karg-append``; without any of the
    karg options the kernel arguments are inherited from the merge deployment. The origin is
    ``[origin] refspec=REVISION`` unless ``origin_refspec`` or ``origin_file`` is given.
    """
    if karg_proc_cmdline and karg_none:
        raise DeployError("Can't specify both --karg-proc-cmdline and --karg-none")
    if karg_none and karg_delete:
        raise DeployError("Can't specify both --karg-none and --karg-delete")
    if no_merge and karg_delete:
        raise DeployError("Can't specify both --no-merge and --karg-delete")
    if stage and (retain_pending or retain_rollback):
        raise DeployError("--stage cannot currently be combined with --retain arguments")
    if stage and not_as_default:
        raise DeployError("--stage cannot currently be combined with --not-as-default")
    with _locked(sysroot):
        if sysroot.booted_deployment is None and osname is None:
            raise DeployError("Looking for booted deployment: Not currently booted into an "
                              "OSTree system and no --os= argument given")
        origin = _origin_from(revision, origin_refspec, origin_file)
        csum = sysroot.repo().resolve_rev(revision)
        assert csum is not None
        merge = None if no_merge else sysroot.merge_deployment(osname)
        prepare_cleanup(sysroot)
        new_kargs: Kargs | None = None
        if karg_none:
            new_kargs = Kargs()
        elif karg_proc_cmdline:
            new_kargs = _proc_cmdline_kargs()
        elif merge is not None and (kargs or karg_append or karg_delete):
            new_kargs = Kargs.parse(merge.bootconfig.options)
        if kargs:
            new_kargs = new_kargs if new_kargs is not None else Kargs()
            for arg in kargs:
                new_kargs = new_kargs.replace(arg)
        if karg_append:
            new_kargs = new_kargs if new_kargs is not None else Kargs()
            for arg in karg_append:
                new_kargs = new_kargs.append(arg)
        if karg_delete:
            if new_kargs is None:
                raise DeployError(f"No key '{karg_delete.partition('=')[0]}' found")
            new_kargs = new_kargs.delete(karg_delete)
        override = new_kargs.to_list() if new_kargs is not None else None
        if stage:
            new = stage_tree(sysroot, osname, csum, origin=origin, merge=merge,
                             override_kargs=override, lock_finalization=lock_finalization)
        else:
            new = deploy_tree(sysroot, osname, csum, origin=origin, merge=merge,
                              override_kargs=override)
            simple_write_deployment(
                sysroot, osname, new, merge, retain=retain,
                retain_pending=retain_pending and not retain,
                retain_rollback=retain_rollback and not retain, not_default=not_as_default,
                postclean=False,
            )
        _cleanup_internal(sysroot, prune=not (no_prune or stage))
        found = sysroot.find(new)
        if found is None:
            raise DeployError(f"deployment {new.name} is missing after writing the boot list")
        return found


def undeploy(sysroot: Sysroot, index: int) -> Deployment:
    """``ostree admin undeploy INDEX``; returns the removed deployment."""
    with _locked(sysroot):
        target = sysroot.get(index)
        if target.same(sysroot.booted_deployment):
            raise DeployError(f"Cannot undeploy currently booted deployment {index}")
        new = [d for i, d in enumerate(sysroot.deployments) if i != index]
        write_deployments(sysroot, new)
        _cleanup_internal(sysroot, prune=True)
        return target


def set_default(sysroot: Sysroot, index: int) -> None:
    """``ostree admin set-default INDEX`` (upstream ≥ 2023): move a deployment to the front."""
    with _locked(sysroot):
        target = sysroot.get(index)
        if index == 0:
            return
        new = [target] + [d for i, d in enumerate(sysroot.deployments) if i != index]
        write_deployments(sysroot, new)
        _cleanup_internal(sysroot, prune=True)


def rollback(sysroot: Sysroot) -> Deployment:
    """Make the previous deployment the default (like ``rpm-ostree rollback``); returns it.

    When booted: the rollback deployment (the first one of the booted stateroot after the booted
    one) moves to the front. Otherwise the second deployment of the default's stateroot does.
    """
    with _locked(sysroot):
        if not sysroot.deployments:
            raise DeployError("No deployments")
        booted = sysroot.booted_deployment
        if booted is not None:
            target = sysroot.query_deployments_for(booted.osname)[1]
        else:
            first = next(d for d in sysroot.deployments if not d.staged)
            same_os = [d for d in sysroot.deployments
                       if d.osname == first.osname and not d.staged]
            target = same_os[1] if len(same_os) > 1 else None
        if target is None:
            raise DeployError("No rollback deployment found")
        new = [target] + [d for d in sysroot.deployments if not d.same(target)]
        write_deployments(sysroot, new)
        _cleanup_internal(sysroot, prune=True)
        found = sysroot.find(target)
        assert found is not None
        return found


def pin(sysroot: Sysroot, index: int, *, unpin: bool = False) -> bool:
    """``ostree admin pin [--unpin] INDEX``; False if it already was in that state."""
    with _locked(sysroot):
        target = sysroot.get(index)
        desired = not unpin
        if target.is_pinned == desired:
            return False
        if target.staged:
            raise DeployError("Cannot pin staged deployment")
        origin = target.origin.copy() if target.origin is not None else KeyFile()
        if desired:
            origin.set_bool(ORIGIN_TRANSIENT_GROUP, "pinned", True)
        else:
            origin.remove_key(ORIGIN_TRANSIENT_GROUP, "pinned")
        write_origin_file(sysroot, target, origin, sync=True)
        _bump_mtime(sysroot)
        sysroot.load()
        return True


def _remote_change(
    sysroot: Sysroot, name: str, url: str, options: Mapping[str, str]
) -> tuple[Repo, RemoteChange]:
    """``ostree_repo_remote_change(ADD_IF_NOT_EXISTS)`` on the system repository, as libostree
    places it: a physical sysroot keeps its remotes in ``ostree/repo/config``; a booted one (or a
    deployment root) reads and adds them in ``etc/ostree/remotes.d`` unless
    ``core.add-remotes-config-dir=false``."""
    from .remotes import RemoteSet, read_remotes_d, validate_remote_name

    try:
        validate_remote_name(name)
    except UsageError as exc:
        raise DeployError(f"Invalid remote name {name}") from exc
    repo = sysroot.repo()
    remotes_d = None if sysroot.is_physical else sysroot.path / "etc/ostree/remotes.d"
    try:
        remotes = RemoteSet.load(repo.config.to_text(),
                                 read_remotes_d([str(remotes_d)] if remotes_d else []))
    except PyOstreeError as exc:
        raise DeployError(f"reading the remotes of {repo.path}: {exc}") from exc
    use_dir = remotes_d is not None and repo.config.get_bool(
        "core", "add-remotes-config-dir", True)
    target = str(remotes_d) if use_dir else "repo"
    return repo, remotes.add(name, url, dict(options), if_not_exists=True, target=target)


def set_origin(
    sysroot: Sysroot, remote: str, url: str, branch: str | None = None, *,
    index: int | None = None, options: Mapping[str, str] | None = None,
) -> Deployment:
    """``ostree admin set-origin [--index=INDEX] [--set=K=V...] REMOTE URL [BRANCH]``.

    Adds ``remote`` (``url`` plus ``options``) to the system repository unless a remote of that
    name exists (then it is left as it is, URL included), and replaces the origin of the booted
    deployment (or the one at ``index``) with a new one holding only
    ``refspec=REMOTE:BRANCH``; ``branch`` defaults to the ref of the current refspec. Everything
    is checked before anything is written. Returns the deployment, reloaded.
    """
    from .remoteconfig import apply_change

    with _locked(sysroot):
        if index is None or index == -1:  # -1 is ostree's "no --index"
            target = sysroot.booted_deployment
            if target is None:
                raise DeployError("Not currently booted into an OSTree system")
        else:
            target = sysroot.get(index)
        repo, change = _remote_change(sysroot, remote, url, options or {})
        new_branch = branch
        current = target.origin_refspec
        if current is not None:
            try:
                _, current_ref = parse_refspec(current)
            except FormatError as exc:
                raise DeployError(f"Invalid refspec {current}") from exc
            new_branch = current_ref if branch is None else branch
        if new_branch is None:
            raise DeployError("No host refspec found, branch is required")
        try:
            validate_ref(new_branch)
        except FormatError as exc:
            raise DeployError(f"Invalid branch {new_branch!r}: {exc}") from exc
        origin = KeyFile()
        origin.set("origin", "refspec", f"{remote}:{new_branch}")
        if change.writes:
            with repo.lock():
                apply_change(repo, change)
        write_origin_file(sysroot, target, origin, sync=True)
        _bump_mtime(sysroot)
        sysroot.load()
        found = sysroot.find(target)
        assert found is not None
        return found


def _set_kargs_in_place(sysroot: Sysroot, dep: Deployment, options: str) -> None:
    if dep.staged:
        data = dict(sysroot.staged_data or {})
        data["kargs"] = gv.Variant("as", Kargs.parse(options).to_list())

        def write() -> None:
            tmp = sysroot.staged_path.with_name(sysroot.staged_path.name + ".tmp")
            tmp.write_bytes(gv.encode("a{sv}", data))
            os.replace(tmp, sysroot.staged_path)

        _io(f"writing {sysroot.staged_path}", write)
        return
    cfg = dep.bootconfig.with_option("options", options)
    n = len(sysroot.deployments)
    name = dep.entry_name or f"ostree-{n - dep.index}-{dep.osname}.conf"
    write_entry(sysroot.path, sysroot.bootversion, name, cfg)


def kargs_edit_in_place(sysroot: Sysroot, append_if_missing: Sequence[str]) -> None:
    """``ostree admin kargs edit-in-place --append-if-missing=ARG...`` on every deployment."""
    with _locked(sysroot):
        if not sysroot.deployments:
            raise DeployError("Unable to find a deployment in sysroot")
        for dep in sysroot.deployments:
            kargs = Kargs.parse(dep.bootconfig.options)
            for arg in append_if_missing:
                kargs = kargs.append_if_missing(arg)
            _set_kargs_in_place(sysroot, dep, kargs.to_string())
        sync_sysroot(sysroot.path)
        sysroot.load()
