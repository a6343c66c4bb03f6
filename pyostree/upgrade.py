"""``admin upgrade`` and ``admin switch``: pull the origin's ref and deploy it.

The library entry points the CLI and the updater service share. A commit older than the
deployment it would replace is refused unless ``allow_downgrade``; a second upgrade with nothing
new deploys nothing.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from .core import ObjectType, parse_refspec
from .deploy import deploy
from .errors import DeployError, VerificationError
from .pull import PullOptions, PullResult, pull
from .remoteconfig import get_remote
from .sysroot import Deployment, Sysroot


@attrs.frozen
class UpgradeResult:
    """What an upgrade did: ``available`` (a newer commit exists), ``deployed`` (a new
    deployment was written), the commits involved and the new deployment's index."""

    refspec: str
    current: str
    target: str
    available: bool
    deployed: bool
    pulled: PullResult | None = None
    deployment: Deployment | None = None
    version: str | None = None


def merge_deployment(sysroot: Sysroot, osname: str | None) -> Deployment:
    dep = sysroot.merge_deployment(osname)
    if dep is None:
        raise DeployError("no deployment to upgrade (deploy one first, or pass --os)")
    return dep


def origin_refspec(dep: Deployment, override: str | None = None) -> tuple[str | None, str, str]:
    refspec = override or dep.origin_refspec
    if not refspec:
        raise DeployError(f"deployment {dep.name} has no origin refspec")
    remote, ref = parse_refspec(refspec)
    return remote, ref, refspec


def upgrade(
    sysroot: Sysroot, osname: str | None = None, *, pull_only: bool = False,
    deploy_only: bool = False, allow_downgrade: bool = False,
    override_commit: str | None = None, check_only: bool = False,
    refspec_override: str | None = None, options: PullOptions | None = None,
    stage: bool = False,
) -> UpgradeResult:
    """Fetch the origin ref of the merge deployment and deploy it if it is new; with ``stage``
    (``admin upgrade --stage``) the new deployment is staged, to be finalized at shutdown."""
    sysroot.load()
    dep = merge_deployment(sysroot, osname)
    osname = dep.osname
    remote_name, ref, refspec = origin_refspec(dep, refspec_override)
    repo = sysroot.repo()
    opts = options or PullOptions()
    pulled: PullResult | None = None
    if not deploy_only and remote_name is not None:
        remote = get_remote(repo, remote_name, sysroot.path)
        target_arg = f"{ref}@{override_commit}" if override_commit else ref
        opts = attrs.evolve(
            opts, commit_metadata_only=check_only or opts.commit_metadata_only,
            # Refuse an older commit before any of its content is downloaded.
            timestamp_check_from_rev=None if allow_downgrade else dep.csum)
        pulled = pull(repo, remote, [target_arg], opts, sysroot=sysroot.path)
    target = override_commit or repo.resolve_rev(refspec)
    assert target is not None
    current = dep.csum
    new_commit = repo.load_commit(target)
    if target != current and repo.has_object(ObjectType.COMMIT, current):
        old_commit = repo.load_commit(current)
        if new_commit.timestamp < old_commit.timestamp and not allow_downgrade:
            raise VerificationError(
                f"refusing to downgrade from {current} (timestamp {old_commit.timestamp}) to "
                f"{target} (timestamp {new_commit.timestamp}); use --allow-downgrade")
    available = target != current and not _already_deployed(sysroot, osname, target)
    result = UpgradeResult(refspec, current, target, available, False, pulled,
                           version=new_commit.version)
    if check_only or pull_only or not available:
        return result
    new = deploy(sysroot, osname, target, origin_refspec=refspec, stage=stage)
    return attrs.evolve(result, deployed=True, deployment=new)


def _already_deployed(sysroot: Sysroot, osname: str, csum: str) -> bool:
    """A pending (not yet booted) deployment of the same commit counts as done."""
    for d in sysroot.deployments:
        if d.osname != osname or d.csum != csum:
            continue
        if sysroot.booted_deployment is None or not d.same(sysroot.booted_deployment):
            return sysroot.deployments.index(d) == 0
    return False


def switch(sysroot: Sysroot, refspec: str, osname: str | None = None, *,
           options: PullOptions | None = None) -> UpgradeResult:
    """``admin switch REF``: deploy ``REMOTE:REF`` (the remote defaults to the current one)."""
    sysroot.load()
    dep = merge_deployment(sysroot, osname)
    remote, ref = parse_refspec(refspec)
    if remote is None and dep.origin_refspec:
        current_remote, _ = parse_refspec(dep.origin_refspec)
        if current_remote is not None:
            refspec = f"{current_remote}:{ref}"
    return upgrade(sysroot, dep.osname, refspec_override=refspec, options=options,
                   allow_downgrade=True)


def sysroot_at(path: str | None) -> Sysroot:
    return Sysroot(Path(path or "/"))
