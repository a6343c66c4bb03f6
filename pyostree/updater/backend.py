"""The updater's only door to the sysroot, the repository and the network.

:class:`UpdaterBackend` is the contract the service logic is written (and tested) against;
:class:`SysrootBackend` adapts it onto ``pyostree.sysroot``, ``pyostree.deploy`` and
``pyostree.pull``. Every call into those modules lives in this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import attrs

from ..errors import DeployError

__all__ = [
    "CommitInfo",
    "Deployment",
    "SysrootBackend",
    "UpdaterBackend",
    "open_backend",
]


@attrs.frozen
class Deployment:
    """One deployment, as the updater needs to see it. ``index`` 0 is the default boot entry."""

    osname: str
    csum: str
    serial: int
    index: int
    refspec: str | None  # the origin's "remote:ref" (or "ref"), None without an origin
    path: Path  # the deployment root
    booted: bool = False

    @property
    def name(self) -> str:
        return f"{self.osname} {self.csum}.{self.serial}"


@attrs.frozen
class CommitInfo:
    csum: str
    timestamp: int  # seconds since the epoch, from the commit object
    version: str | None = None


class UpdaterBackend(Protocol):
    """What the updater needs from the sysroot, the system repository and the network."""

    def deployments(self) -> list[Deployment]:
        """All deployments, in boot order (index 0 first), with ``booted`` set on one or none."""
        ...

    def commit_info(self, csum: str) -> CommitInfo:
        """A commit from the local repository (raises RepoError if absent)."""
        ...

    def remote_commit(self, remote: str, ref: str) -> CommitInfo:
        """The commit ``ref`` points to on ``remote``, fetched with commit metadata only.

        Raises FetchError (TransientFetchError when worth retrying) or VerificationError.
        """
        ...

    def local_commit(self, remote: str | None, ref: str) -> CommitInfo | None:
        """The fully fetched commit ``remote:ref`` (or local ``ref``) resolves to, or None
        (no such ref, or only its metadata was fetched)."""
        ...

    def pull(self, remote: str, ref: str, csum: str) -> None:
        """Fetch exactly commit ``csum`` of ``ref`` in full and point ``remote:ref`` at it."""
        ...

    def deploy(self, osname: str, csum: str, refspec: str) -> Deployment:
        """Write a new deployment of ``csum`` (merged from the booted one) as the default."""
        ...

    def set_default(self, index: int) -> None:
        """Make the deployment at ``index`` the default boot entry."""
        ...

    def boot_complete(self) -> None:
        """Mark the current boot as good (``ostree admin boot-complete``)."""
        ...


class SysrootBackend:
    """:class:`UpdaterBackend` on pyostree's :mod:`~pyostree.sysroot`, :mod:`~pyostree.deploy`
    and :mod:`~pyostree.pull` (imported on first use, so the updater loads without them)."""

    def __init__(self, sysroot: Path) -> None:
        from ..sysroot import Sysroot

        self.sysroot = Sysroot(sysroot)

    def deployments(self) -> list[Deployment]:
        self.sysroot.load()
        booted = self.sysroot.booted_deployment
        return [
            Deployment(osname=d.osname, csum=d.csum, serial=d.deployserial, index=d.index,
                       refspec=d.origin_refspec, path=self.sysroot.deployment_path(d),
                       booted=d.same(booted))
            for d in self.sysroot.deployments
        ]

    def commit_info(self, csum: str) -> CommitInfo:
        commit = self.sysroot.repo().load_commit(csum)
        return CommitInfo(csum, commit.timestamp, commit.version)

    def _pull(self, remote: str, refs: list[str], *, metadata_only: bool) -> dict[str, str]:
        from ..pull import PullOptions, pull
        from ..remoteconfig import get_remote

        repo = self.sysroot.repo()
        options = PullOptions(commit_metadata_only=metadata_only)
        result = pull(repo, get_remote(repo, remote, self.sysroot.path), refs, options,
                      sysroot=self.sysroot.path)
        return result.refs

    def remote_commit(self, remote: str, ref: str) -> CommitInfo:
        csum = self._pull(remote, [ref], metadata_only=True).get(ref)
        if csum is None:
            raise DeployError(f"pulling {remote}:{ref} did not resolve the ref")
        return self.commit_info(csum)

    def local_commit(self, remote: str | None, ref: str) -> CommitInfo | None:
        from ..core import ObjectType

        repo = self.sysroot.repo()
        csum = repo.resolve_rev(f"{remote}:{ref}" if remote else ref, allow_noent=True)
        # A metadata-only pull moves the ref to a partial commit: that is not fetched yet.
        if csum is None or not repo.has_object(ObjectType.COMMIT, csum) \
                or repo.is_partial(csum):
            return None
        return self.commit_info(csum)

    def pull(self, remote: str, ref: str, csum: str) -> None:
        self._pull(remote, [f"{ref}@{csum}"], metadata_only=False)

    def deploy(self, osname: str, csum: str, refspec: str) -> Deployment:
        from ..deploy import deploy

        new = deploy(self.sysroot, osname, csum, origin_refspec=refspec)
        for dep in self.deployments():
            if (dep.osname, dep.csum, dep.serial) == (new.osname, new.csum, new.deployserial):
                return dep
        raise DeployError(f"deployment {new.name} is missing after deploying it")

    def set_default(self, index: int) -> None:
        from ..deploy import set_default

        set_default(self.sysroot, index)

    def boot_complete(self) -> None:
        from ..deploy import boot_complete

        boot_complete(self.sysroot)


def open_backend(sysroot: Path) -> UpdaterBackend:
    """The real backend for the sysroot at ``sysroot``."""
    return SysrootBackend(sysroot)
