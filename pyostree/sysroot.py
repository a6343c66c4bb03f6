"""Reading an OSTree sysroot: deployments, boot versions, booted/pending/rollback, the lock.

The source of truth is the boot loader configuration, as in libostree 2022.7
(``ostree-sysroot.c``): ``boot/loader -> loader.B`` gives the bootversion, the BLS entries in
``loader.B/entries`` (sorted by ``version``, newest first) give the deployment list, and each
entry's ``ostree=/ostree/boot.B/OS/BOOTCSUM/SERIAL`` link leads to its deployment directory.

The booted deployment is the one whose directory has the device/inode of ``/`` when the sysroot
is ``/`` and ``/run/ostree-booted`` exists (falling back to the ``ostree=`` argument of
``/proc/cmdline``). Tests can name it instead with ``Sysroot(path, booted=...)`` or the
environment variable ``PYOSTREE_BOOTED`` (an ``ostree=`` value or a deployment directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from . import gvariant as gv
from .bootloader import read_entries, read_subbootversion
from .errors import DeployError, FormatError, LockError, PyOstreeError
from .etcmerge import EtcDiff, diff_deployment_etc
from .formats.bls import BootEntry, Kargs
from .formats.keyfile import KeyFile

if TYPE_CHECKING:
    from .repo import Repo

__all__ = [
    "ORIGIN_TRANSIENT_GROUP",
    "Deployment",
    "Sysroot",
    "config_diff",
    "parse_bootlink",
    "parse_deploy_name",
    "status_json",
    "status_text",
]

ORIGIN_TRANSIENT_GROUP = "libostree-transient"
OSTREE_BOOTED = Path("/run/ostree-booted")
DEFAULT_RUN_DIR = Path("/run/ostree")
_DEPLOY_NAME_RE = re.compile(r"([0-9a-f]+)\.([0-9]+)")
_BOOTLINK_RE = re.compile(r"/ostree/boot.([01])/([^/]+)/([^/]+)/([0-9]+)")


# ---------------------------------------------------------------------------- deployments


def parse_deploy_name(name: str) -> tuple[str, int]:
    """``CSUM.SERIAL`` → (csum, serial)."""
    m = _DEPLOY_NAME_RE.fullmatch(name)
    if not m:
        raise DeployError(f"Invalid deploy name '{name}', expected CHECKSUM.TREESERIAL")
    return m.group(1), int(m.group(2))


def parse_bootlink(value: str) -> tuple[int, str, str, int]:
    """``/ostree/boot.B/OS/BOOTCSUM/SERIAL`` → (B, OS, BOOTCSUM, SERIAL)."""
    m = _BOOTLINK_RE.fullmatch(value)
    if not m:
        raise DeployError(
            f"Invalid ostree= argument '{value}', expected "
            "ostree=/ostree/boot.BOOTVERSION/OSNAME/BOOTCSUM/TREESERIAL"
        )
    return int(m.group(1)), m.group(2), m.group(3), int(m.group(4))


@attrs.frozen
class Deployment:
    """One deployment: ``ostree/deploy/OSNAME/deploy/CSUM.DEPLOYSERIAL``.

    ``index`` is its place in the deployment list (0 = default), ``bootcsum``/``bootserial``
    name its bootlink, ``bootconfig`` is its BLS entry (read from ``entry_name``), ``origin``
    its ``.origin`` key file.
    Two deployments are the same one when osname, csum and deployserial agree (:meth:`same`).
    """

    osname: str
    csum: str
    deployserial: int
    bootcsum: str = ""
    bootserial: int = -1
    index: int = -1
    bootconfig: BootEntry = attrs.field(factory=BootEntry)
    origin: KeyFile | None = attrs.field(default=None, eq=False)
    staged: bool = False
    unlocked: str = "none"
    entry_name: str | None = None

    @property
    def name(self) -> str:
        return f"{self.csum}.{self.deployserial}"

    @property
    def dirpath(self) -> str:
        """The deployment root relative to the sysroot."""
        return f"ostree/deploy/{self.osname}/deploy/{self.name}"

    @property
    def origin_relpath(self) -> str:
        return f"{self.dirpath}.origin"

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.osname, self.csum, self.deployserial)

    def same(self, other: Deployment | None) -> bool:
        return other is not None and self.key == other.key

    @property
    def is_pinned(self) -> bool:
        if self.origin is None:
            return False
        try:
            return self.origin.get_bool(ORIGIN_TRANSIENT_GROUP, "pinned")
        except FormatError:
            return False

    @property
    def origin_refspec(self) -> str | None:
        if self.origin is None:
            return None
        try:
            return self.origin.get("origin", "refspec")
        except FormatError:
            return None

    @property
    def kargs(self) -> Kargs:
        return self.bootconfig.kargs

    @property
    def options(self) -> str | None:
        return self.bootconfig.options


# ---------------------------------------------------------------------------- the sysroot


def _lock_file(path: Path, *, blocking: bool, timeout: float | None) -> int:
    """``glnx_make_lock_file``: flock ``path`` (0600), retrying if it was unlinked meanwhile."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.01
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not blocking or (deadline is not None and time.monotonic() >= deadline):
                        raise LockError(
                            "sysroot is locked by another process", path=str(path)
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.2)
            if os.fstat(fd).st_nlink > 0:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


class Sysroot:
    """A physical root holding ``/ostree`` and ``/boot``. Call :meth:`load` before reading.

    ``booted`` (or ``$PYOSTREE_BOOTED``) names the booted deployment for tests; ``run_dir``
    (default ``$PYOSTREE_RUN_DIR`` or ``/run/ostree``) holds the staged-deployment state;
    ``mutable_deployments`` (default: ``OSTREE_SYSROOT_DEBUG`` contains
    ``mutable-deployments``) leaves deployment roots without the immutable attribute.
    """

    def __init__(
        self, path: str | os.PathLike[str] = "/", *, booted: str | os.PathLike[str] | None = None,
        run_dir: str | os.PathLike[str] | None = None, mutable_deployments: bool | None = None,
    ) -> None:
        self.path = Path(path)
        env_booted = os.environ.get("PYOSTREE_BOOTED")
        self._booted_override = str(booted) if booted is not None else env_booted or None
        env_run = os.environ.get("PYOSTREE_RUN_DIR")
        self.run_dir = Path(run_dir) if run_dir is not None else Path(env_run or DEFAULT_RUN_DIR)
        debug = os.environ.get("OSTREE_SYSROOT_DEBUG", "")
        flags = {f.strip() for f in re.split(r"[,:; ]", debug)}
        self.mutable_deployments = (
            mutable_deployments if mutable_deployments is not None
            else "mutable-deployments" in flags
        )
        self.no_dtb = "no-dtb" in flags
        self.bootversion = 0
        self.subbootversion = 0
        self.deployments: tuple[Deployment, ...] = ()
        self.booted_deployment: Deployment | None = None
        self.staged_deployment: Deployment | None = None
        self.staged_data: dict[str, Any] | None = None
        self.root_is_booted = False
        self.loaded = False
        self._lock_fd: int | None = None
        self._repo: Repo | None = None

    def __repr__(self) -> str:
        return f"Sysroot({str(self.path)!r})"

    # -- paths

    @property
    def repo_path(self) -> Path:
        return self.path / "ostree/repo"

    @property
    def staged_path(self) -> Path:
        return self.run_dir / "staged-deployment"

    @property
    def staged_locked_path(self) -> Path:
        return self.run_dir / "staged-deployment-locked"

    def deployment_path(self, deployment: Deployment) -> Path:
        return self.path / deployment.dirpath

    def origin_path(self, deployment: Deployment) -> Path:
        return self.path / deployment.origin_relpath

    def repo(self) -> Repo:
        """The system repository ``ostree/repo`` (opened once)."""
        if self._repo is None:
            from .repo import Repo

            self._repo = Repo.open(self.repo_path)
        return self._repo

    def read_config(self) -> KeyFile:
        """``ostree/repo/config`` (re-read each time; empty if missing)."""
        try:
            text = (self.repo_path / "config").read_bytes().decode("utf-8")
        except FileNotFoundError:
            return KeyFile()
        except (OSError, UnicodeDecodeError) as exc:
            raise DeployError(f"reading {self.repo_path}/config: {exc}") from exc
        try:
            return KeyFile.parse(text)
        except FormatError as exc:
            raise DeployError(f"parsing {self.repo_path}/config: {exc}") from exc

    # -- locking

    @contextlib.contextmanager
    def lock(self, *, blocking: bool = True, timeout: float | None = None) -> Iterator[None]:
        """Exclusive sysroot lock: flock on ``ostree/lock`` like libostree (removed on release)."""
        if self._lock_fd is not None:
            raise RuntimeError("sysroot lock is not reentrant")
        lock_path = self.path / "ostree/lock"
        try:
            self._lock_fd = _lock_file(lock_path, blocking=blocking, timeout=timeout)
        except OSError as exc:
            raise DeployError(f"locking {lock_path}: {exc.strerror or exc}") from exc
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    @property
    def is_physical(self) -> bool:
        """libostree's "physical" sysroot: not booted, and without the ``sysroot`` directory
        that only a deployment root has. Its system repository keeps new remotes in
        ``ostree/repo/config`` rather than in ``etc/ostree/remotes.d``."""
        self._require_loaded()
        return self.booted_deployment is None and not os.path.exists(self.path / "sysroot")

    # -- loading

    def _booted_candidates(self) -> list[tuple[int, int]]:
        """Device/inode pairs of what is booted (empty when not booted)."""
        override = self._booted_override
        if override:
            if override.startswith("/ostree/"):
                target = self.path / override.lstrip("/")
            elif os.path.isabs(override):
                target = Path(override)
            else:
                target = self.path / override
            try:
                st = os.stat(target)
            except OSError as exc:
                raise DeployError(
                    f"booted deployment {override} not found: {exc.strerror}"
                ) from exc
            return [(st.st_dev, st.st_ino)]
        try:
            root = os.stat("/")
            me = os.stat(self.path)
        except OSError as exc:
            raise DeployError(f"stat {self.path}: {exc.strerror}") from exc
        if (root.st_dev, root.st_ino) != (me.st_dev, me.st_ino) or not OSTREE_BOOTED.exists():
            return []
        result = [(root.st_dev, root.st_ino)]
        with contextlib.suppress(OSError, UnicodeDecodeError):
            cmdline = Path("/proc/cmdline").read_bytes().decode().strip()
            value = Kargs.parse(cmdline).get_last_value("ostree")
            if value:
                st = os.stat(self.path / value.lstrip("/"))
                result.append((st.st_dev, st.st_ino))
        return result

    def _read_bootversion(self) -> int:
        link = self.path / "boot/loader"
        try:
            st = os.lstat(link)
        except FileNotFoundError:
            return 0
        import stat as _stat

        if not _stat.S_ISLNK(st.st_mode):
            raise DeployError("Not a symbolic link: boot/loader")
        target = os.readlink(link)
        if target == "loader.0":
            return 0
        if target == "loader.1":
            return 1
        raise DeployError(f"Invalid target '{target}' in boot/loader")

    def _load_origin(self, relpath: str) -> KeyFile | None:
        try:
            text = (self.path / relpath).read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise DeployError(f"reading {relpath}: {exc}") from exc
        try:
            return KeyFile.parse(text)
        except FormatError as exc:
            raise DeployError(f"Parsing {relpath}: {exc}") from exc

    def _unlocked_state(self, name: str, origin: KeyFile | None) -> str:
        state_dir = self.run_dir / "deployment-state" / name
        if os.path.lexists(state_dir / "unlocked-development"):
            return "development"
        if os.path.lexists(state_dir / "unlocked-transient"):
            return "transient"
        if origin is not None and origin.get_raw("origin", "unlocked") == "hotfix":
            return "hotfix"
        return "none"

    def _parse_deployment(
        self, entry_name: str, cfg: BootEntry, booted: list[tuple[int, int]]
    ) -> tuple[Deployment, bool]:
        ostree_arg = None
        for opt in (cfg.options or "").split(" "):
            if opt.startswith("ostree="):
                ostree_arg = opt[len("ostree="):]
                break
        if ostree_arg is None:
            raise DeployError("No ostree= kernel argument found")
        _, osname, bootcsum, bootserial = parse_bootlink(ostree_arg)
        prefix = f"Parsing deployment {ostree_arg} in stateroot '{osname}'"
        link = self.path / ostree_arg.lstrip("/")
        try:
            target = os.readlink(link)
            csum, deployserial = parse_deploy_name(os.path.basename(target))
            st = os.stat(link)
        except OSError as exc:
            raise DeployError(f"{prefix}: {exc.strerror or exc}: {link}") from exc
        except DeployError as exc:
            raise DeployError(f"{prefix}: {exc}") from exc
        if not os.path.isdir(link):
            raise DeployError(f"{prefix}: not a directory: {link}")
        name = f"{csum}.{deployserial}"
        origin = self._load_origin(f"ostree/deploy/{osname}/deploy/{name}.origin")
        dep = Deployment(
            osname=osname, csum=csum, deployserial=deployserial, bootcsum=bootcsum,
            bootserial=bootserial, bootconfig=cfg, origin=origin,
            unlocked=self._unlocked_state(name, origin), entry_name=entry_name,
        )
        return dep, (st.st_dev, st.st_ino) in booted

    def _load_staged(self) -> None:
        self.staged_deployment = None
        self.staged_data = None
        try:
            data = self.staged_path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise DeployError(f"Loading staged deployment: {exc.strerror}") from exc
        try:
            staged = gv.decode("a{sv}", data)
            target = staged.get("target")
            if target is None:
                return
            info = target.value
            osname, bootcsum = info["osname"].value, info["bootcsum"].value
            csum, serial = parse_deploy_name(info["name"].value)
            kargs = staged.get("kargs")
        except (PyOstreeError, KeyError, AttributeError, TypeError) as exc:
            raise DeployError(f"Loading staged deployment: {exc}") from exc
        cfg = BootEntry()
        if kargs is not None:
            cfg = cfg.with_option("options", " ".join(kargs.value))
        name = f"{csum}.{serial}"
        origin = self._load_origin(f"ostree/deploy/{osname}/deploy/{name}.origin")
        self.staged_deployment = Deployment(
            osname=osname, csum=csum, deployserial=serial, bootcsum=bootcsum, bootconfig=cfg,
            origin=origin, staged=True, unlocked=self._unlocked_state(name, origin),
        )
        self.staged_data = staged

    def load(self) -> Sysroot:
        """(Re)read bootversion, subbootversion, deployments, booted and staged deployments."""
        if not os.path.isdir(self.path):
            raise DeployError(f"sysroot {self.path} is not a directory")
        if not os.path.isdir(self.path / "ostree/deploy"):
            raise DeployError(f"{self.path} is not an OSTree sysroot (no ostree/deploy)")
        booted = self._booted_candidates()
        bootversion = self._read_bootversion()
        subbootversion = read_subbootversion(self.path, bootversion)
        deployments: list[Deployment] = []
        booted_dep: Deployment | None = None
        for entry_name, cfg in read_entries(self.path, bootversion):
            dep, is_booted = self._parse_deployment(entry_name, cfg, booted)
            if is_booted and booted_dep is None:
                booted_dep = dep
            deployments.append(dep)
        if booted and booted_dep is None:
            if os.path.lexists(self.path / "boot/loader"):
                raise DeployError(
                    "Unexpected state: booted, but the booted deployment has no boot entry"
                )
            raise DeployError("Unexpected state: booted, but no /boot/loader directory")
        self.root_is_booted = bool(booted)
        if booted_dep is not None:
            self._load_staged()
        else:
            self.staged_deployment = None
            self.staged_data = None
        if self.staged_deployment is not None:
            deployments.insert(0, self.staged_deployment)
        deployments = [attrs.evolve(d, index=i) for i, d in enumerate(deployments)]
        self.deployments = tuple(deployments)
        self.booted_deployment = next((d for d in deployments if d.same(booted_dep)), None)
        if self.staged_deployment is not None:
            self.staged_deployment = deployments[0]
        self.bootversion = bootversion
        self.subbootversion = subbootversion
        self.loaded = True
        return self

    def _require_loaded(self) -> None:
        if not self.loaded:
            raise RuntimeError("Sysroot.load() must be called first")

    # -- queries

    def find(self, deployment: Deployment) -> Deployment | None:
        """The loaded deployment that is the same one as ``deployment``."""
        return next((d for d in self.deployments if d.same(deployment)), None)

    def get(self, index: int) -> Deployment:
        """Deployment by index, with ``ostree admin``'s error messages."""
        self._require_loaded()
        if index < 0:
            raise DeployError(f"Invalid index {index}")
        if index >= len(self.deployments):
            raise DeployError(
                f"Out of range deployment index {index}, expected < {len(self.deployments)}"
            )
        return self.deployments[index]

    def query_deployments_for(
        self, osname: str | None = None
    ) -> tuple[Deployment | None, Deployment | None]:
        """(pending, rollback) for ``osname`` (default: the booted one's), as libostree."""
        self._require_loaded()
        if osname is None:
            if self.booted_deployment is None:
                raise DeployError("Not currently booted into an OSTree system")
            osname = self.booted_deployment.osname
        pending = rollback = None
        found_booted = False
        for dep in self.deployments:
            if dep.osname != osname:
                continue
            if dep.same(self.booted_deployment):
                found_booted = True
                continue
            if not found_booted and pending is None:
                pending = dep
            elif found_booted and rollback is None:
                rollback = dep
        return pending, rollback

    def merge_deployment(self, osname: str | None = None) -> Deployment | None:
        """The configuration merge source: the booted deployment if it is of ``osname``,
        else the first deployment of ``osname``."""
        self._require_loaded()
        if osname is None:
            if self.booted_deployment is None:
                raise DeployError("Not currently booted into an OSTree system")
            osname = self.booted_deployment.osname
        if self.booted_deployment is not None and self.booted_deployment.osname == osname:
            return self.booted_deployment
        return self.query_deployments_for(osname)[0]


# ---------------------------------------------------------------------------- config-diff


def config_diff(sysroot: Sysroot, osname: str | None = None) -> EtcDiff:
    """``ostree admin config-diff [--os=OSNAME]``: the local changes of a deployment's ``/etc``
    against its ``/usr/etc`` defaults. The deployment is the booted one, or with ``osname`` the
    merge deployment of that stateroot (the booted one if it is of ``osname``, else its first).
    """
    sysroot._require_loaded()
    if osname is None:
        if sysroot.booted_deployment is None:
            raise DeployError(
                "Not currently booted into an OSTree system and no --os= argument given"
            )
        deployment = sysroot.booted_deployment
    else:
        merge = sysroot.merge_deployment(osname)
        if merge is None:
            raise DeployError(f"No deployment for OS '{osname}'")
        deployment = merge
    return diff_deployment_etc(sysroot.deployment_path(deployment))


# ---------------------------------------------------------------------------- status


def _commit_info(sysroot: Sysroot, csum: str) -> tuple[str | None, str | None]:
    """(version, ostree.source-title) of a deployed commit, or Nones if it cannot be read."""
    try:
        commit = sysroot.repo().load_commit(csum)
    except (PyOstreeError, OSError):
        return None, None
    meta = commit.metadata

    def text(key: str) -> str | None:
        v = meta.get(key)
        return v.value if isinstance(v, gv.Variant) and isinstance(v.value, str) else None

    return text("version"), text("ostree.source-title")


def status_json(sysroot: Sysroot) -> list[dict[str, Any]]:
    """The deployment list as plain dicts (for ``--json`` style output)."""
    sysroot._require_loaded()
    pending = rollback = None
    if sysroot.booted_deployment is not None:
        pending, rollback = sysroot.query_deployments_for(None)
    result = []
    for dep in sysroot.deployments:
        version, source_title = _commit_info(sysroot, dep.csum)
        result.append({
            "index": dep.index,
            "osname": dep.osname,
            "checksum": dep.csum,
            "serial": dep.deployserial,
            "bootcsum": dep.bootcsum,
            "bootserial": dep.bootserial,
            "booted": dep.same(sysroot.booted_deployment),
            "pending": dep.same(pending),
            "rollback": dep.same(rollback),
            "staged": dep.staged,
            "pinned": dep.is_pinned,
            "unlocked": dep.unlocked,
            "version": version,
            "source_title": source_title,
            "origin": dep.origin_refspec,
            "has_origin": dep.origin is not None,
            "kargs": dep.options,
            "path": str(sysroot.deployment_path(dep)),
        })
    return result


def status_text(sysroot: Sysroot, *, verify: bool = False) -> str:
    """``ostree admin status`` output of 2022.7 (without the GPG lines); with ``verify``,
    ``admin status --verify`` (see :func:`iter_status_text`)."""
    return "".join(iter_status_text(sysroot, verify=verify))


def iter_status_text(sysroot: Sysroot, *, verify: bool = False) -> Iterator[str]:
    """The text of :func:`status_text`, one deployment at a time, so a caller can print what
    precedes a deployment that fails to verify (as ostree does). With ``verify`` each
    deployment is followed by its commit's verification (:func:`verify_deployment`)."""
    entries = status_json(sysroot)
    if not entries:
        yield "No deployments.\n"
        return
    for e in entries:
        lines = []
        marker = ""
        if e["staged"]:
            marker = " (staged)"
        elif e["pending"]:
            marker = " (pending)"
        elif e["rollback"]:
            marker = " (rollback)"
        star = "*" if e["booted"] else " "
        lines.append(f"{star} {e['osname']} {e['checksum']}.{e['serial']}{marker}")
        if e["version"]:
            lines.append(f"    Version: {e['version']}")
        if e["unlocked"] != "none":
            lines.append(f"    Unlocked: {e['unlocked']}")
        if e["pinned"]:
            lines.append("    Pinned: yes")
        if not e["has_origin"]:
            lines.append("    origin: none")
        else:
            if e["origin"] is None:
                lines.append("    origin: <unknown origin type>")
            else:
                lines.append(f"    origin refspec: {e['origin']}")
            if e["source_title"]:
                lines.append(f"    `- {e['source_title']}")
        yield "".join(line + "\n" for line in lines)
        if verify:
            yield verify_deployment(sysroot, e["checksum"], e["has_origin"], e["origin"]) + "\n"


def verify_deployment(sysroot: Sysroot, csum: str, has_origin: bool, refspec: str | None) -> str:
    """The signature verification of a deployment's commit against the remote of its origin,
    as ``ostree admin status --verify`` prints it (libostree's
    ``ostree_repo_signature_verify_commit_data``); its errors, in its order."""
    from .core import ObjectType, parse_refspec
    from .pull import trust_settings
    from .remoteconfig import load_remotes
    from .verify import describe_commit_verification

    repo = sysroot.repo()
    if not repo.has_object(ObjectType.COMMIT, csum):
        raise DeployError("Cannot verify, failed to load commit")
    if not has_origin:
        raise DeployError("Cannot verify deployment with no origin")
    if refspec is None:
        raise DeployError("No origin/refspec, cannot verify")
    remote_name, _ = parse_refspec(refspec)
    if remote_name is None:
        raise DeployError("Cannot verify deployment without remote")
    data = repo.load_metadata_bytes(ObjectType.COMMIT, csum)
    detached = repo.load_detached_metadata(csum)
    if detached is None:
        raise DeployError("Can't verify commit without detached metadata")
    remote = load_remotes(repo, sysroot.path).get(remote_name)
    return describe_commit_verification(trust_settings(repo, remote, sysroot.path),
                                        remote.sign_verify, data, detached)
