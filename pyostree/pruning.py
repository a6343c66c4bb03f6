"""Pruning a repository: ``ostree prune`` and its ways of choosing what to keep.

What is kept is computed first (the commits chosen per ref or for all, and everything they
reach), then every other object is deleted, and the static deltas whose target commit is gone.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence

import attrs

from .core import ObjectType
from .errors import FormatError, ObjectNotFoundError, RefNotFoundError, RepoError
from .maintenance import (
    enable_tombstone_commits,
    load_commit_or_none,
    remove_commit,
    walk_commit,
)
from .repo import Repo


@attrs.frozen
class PruneResult:
    """What a prune found: objects considered, objects deleted (or, dry, that would be) and
    their size in bytes (``st_size``, as ostree counts it)."""

    total: int
    deleted: int
    freed: int


Reachable = set[tuple[ObjectType, str]]


def keep_history(
    repo: Repo, start: str, depth: int, keep: Reachable, walked: dict[str, float], *,
    commit_only: bool = False,
) -> None:
    """Add ``start`` and ``depth`` of its parents (-1: all; below -1 counts as 0, as in
    ostree) with everything they reference (``commit_only``: the commits alone) to ``keep``.

    ``walked`` remembers how deep each commit has been followed, so a commit reached again
    with more depth to go is followed further: every ref keeps its whole ``depth``, whatever
    the order. (ostree stops at a commit it has seen, so there what a ref keeps can depend on
    the hash-table order of the refs.) A missing commit ends the history, as in ostree."""
    remaining = math.inf if depth == -1 else float(max(depth, 0))
    current: str | None = start
    while current is not None:
        csum = current
        if walked.get(csum, -1.0) >= remaining:
            return
        try:
            commit = repo.load_commit(csum)
        except ObjectNotFoundError:
            return
        first = csum not in walked
        walked[csum] = remaining
        if first:
            keep.add((ObjectType.COMMIT, csum))
            if not commit_only:
                keep.update(walk_commit(repo, csum, missing_ok=True))
        if remaining <= 0:
            return
        remaining -= 1
        current = commit.parent


def keep_history_younger_than(
    repo: Repo, start: str, cutoff: int, keep: Reachable, walked: dict[str, float], *,
    commit_only: bool = False,
) -> None:
    """``--keep-younger-than``: the ref's commit, then its parents back to the first one
    older than ``cutoff`` (seconds; compared as ostree does, unsigned)."""
    keep_history(repo, start, 0, keep, walked, commit_only=commit_only)
    limit = cutoff % (1 << 64)
    current: str | None = start
    while current is not None:
        commit = load_commit_or_none(repo, current)
        if commit is None or commit.timestamp < limit:
            return
        keep_history(repo, current, 0, keep, walked, commit_only=commit_only)
        current = commit.parent


def reachable_objects(
    repo: Repo, roots: list[str], *, depth: int = -1, commit_only: bool = False
) -> Reachable:
    """Everything ``roots`` and ``depth`` of their parents reach."""
    keep: Reachable = set()
    walked: dict[str, float] = {}
    for root in roots:
        keep_history(repo, root, depth, keep, walked, commit_only=commit_only)
    return keep


def delete_unreferenced_commit(repo: Repo, csum: str) -> None:
    """``prune --delete-commit``: refused while a ref (or collection ref) points at it; turns
    on ``core.tombstone-commits`` and leaves a tombstone, as ostree does."""
    for name, target in repo.list_refs().items():
        if target == csum:
            raise RepoError(f"Commit '{csum}' is referenced by '{name}'")
    for (coll, name), target in repo.list_collection_refs(remotes=False).items():
        if target == csum:
            raise RepoError(f"Commit '{csum}' is referenced by ({coll}, {name})")
    if not repo.has_object(ObjectType.COMMIT, csum):
        raise ObjectNotFoundError(f"no such commit {csum}")
    enable_tombstone_commits(repo)
    remove_commit(repo, csum, clear_partial=False)  # as ostree_repo_delete_object


def prune_static_deltas(repo: Repo, commit: str | None = None) -> list[str]:
    """Delete the static deltas that end in ``commit``, or (None) whose target commit is not
    in the repository, as ``ostree_repo_prune_static_deltas``. Returns their names."""
    from .signing import list_deltas  # not at the top: signing loads the signature modules

    gone = []
    for name, directory in list_deltas(repo):
        to = name.rpartition("-")[2]
        doomed = to == commit if commit is not None else \
            not repo.has_object(ObjectType.COMMIT, to)
        if doomed:
            shutil.rmtree(directory)
            gone.append(name)
    return gone


_LEADING_INT = re.compile(r"[ \t\n\v\f\r]*([-+]?[0-9]+)")


def parse_depth_spec(spec: str) -> tuple[str, int]:
    """``--retain-branch-depth=BRANCH=DEPTH`` as ostree reads it: split at the first ``=``,
    DEPTH a decimal integer (``g_ascii_strtoll``: leading blanks, a sign, then digits; what
    follows them is ignored). Raises FormatError with ostree's messages."""
    branch, sep, depth = spec.partition("=")
    if not sep:
        raise FormatError(f"Invalid value {spec}, must specify BRANCH=DEPTH")
    m = _LEADING_INT.match(depth)
    if m is None:
        raise FormatError(f"Invalid depth {depth}")
    value = int(m.group(1))
    if not -(1 << 31) <= value < (1 << 31):  # ostree would wrap it into an int
        raise FormatError(f"Out of range depth {depth}")
    return branch, value


# What ostree lists as objects (and so may prune): never detached metadata or tombstones.
_PRUNABLE = (ObjectType.FILE, ObjectType.DIRTREE, ObjectType.DIRMETA, ObjectType.COMMIT,
             ObjectType.PAYLOAD_LINK)
_PAYLOAD_LINK_TARGET = re.compile(r"\.\./([0-9a-f]{2})/([0-9a-f]{62})\.")


def _payload_link_needed(repo: Repo, csum: str, keep: Reachable) -> bool:
    """A payload link stays while the file it points at is kept and is at least
    ``core.payload-link-threshold`` bytes (by default, never: ostree's rule)."""
    try:
        threshold = int(repo.config.get("core", "payload-link-threshold", "") or (1 << 64) - 1)
        m = _PAYLOAD_LINK_TARGET.match(os.readlink(repo.object_path(ObjectType.PAYLOAD_LINK,
                                                                    csum)))
        if m is None or (ObjectType.FILE, m[1] + m[2]) not in keep:
            return False
        return os.lstat(repo.object_path(ObjectType.FILE, m[1] + m[2])).st_size >= threshold
    except (OSError, ValueError):
        return False


def prune(
    repo: Repo, *, depth: int = -1, refs_only: bool = True, dry_run: bool = False,
    delete_commit: str | None = None, keep_younger_than: int | None = None,
    retain_branch_depth: Mapping[str, int] | None = None, only_branches: Sequence[str] = (),
    commit_only: bool = False, static_deltas_only: bool = False,
) -> PruneResult:
    """``ostree prune``: delete the objects the kept commits do not reach.

    The kept commits are every stored commit (``refs_only=False``) or those refs reach, each
    with ``depth`` parents. ``retain_branch_depth`` (ref → depth), ``only_branches`` (the other
    refs keep all their history) and ``keep_younger_than`` (seconds: a ref keeps its parents
    back to the first older commit) choose per ref and imply ``refs_only``. ``commit_only``
    deletes only commit objects. ``delete_commit`` first deletes that commit (with
    ``static_deltas_only``, only the static deltas that end in it). Static deltas whose target
    commit is gone are deleted too; ``dry_run`` deletes nothing and counts what would go.
    Every input is checked before anything is deleted."""
    if delete_commit is not None and dry_run:
        raise ValueError("Cannot specify both --delete-commit and --no-prune")
    if static_deltas_only and delete_commit is None:
        raise ValueError("--static-deltas-only requires --delete-commit; see "
                         "https://github.com/ostreedev/ostree/issues/1479")
    retain = dict(retain_branch_depth or {})
    per_ref = bool(retain or only_branches or keep_younger_than is not None)
    with repo.lock():
        for ref in only_branches:
            if repo.resolve_rev(ref, allow_noent=True) is None:
                raise RefNotFoundError(f"Refspec '{ref}' not found")
        if delete_commit is not None:
            if static_deltas_only:
                prune_static_deltas(repo, delete_commit)
            else:
                delete_unreferenced_commit(repo, delete_commit)
        keep: Reachable = set()
        walked: dict[str, float] = {}
        if per_ref:
            refs = repo.list_refs()
            # ostree leaves collection refs out here (a FIXME in ot-builtin-prune.c); pyostree
            # keeps them like any ref no option names, so a prune never strands a mirror.
            refs.update({f"({c}, {n})": v for (c, n), v in
                         repo.list_collection_refs(remotes=False).items()})
            for ref in refs:
                if only_branches and ref not in only_branches and ref not in retain:
                    retain[ref] = -1
            for ref, csum in refs.items():
                if ref in retain:
                    keep_history(repo, csum, retain[ref], keep, walked, commit_only=commit_only)
                elif keep_younger_than is not None:
                    keep_history_younger_than(repo, csum, keep_younger_than, keep, walked,
                                              commit_only=commit_only)
                else:
                    keep_history(repo, csum, depth, keep, walked, commit_only=commit_only)
        else:
            roots = set(repo.list_refs().values())
            roots.update(repo.list_collection_refs(remotes=False).values())
            if not refs_only:
                roots.update(c for c, t in repo.iter_objects() if t is ObjectType.COMMIT)
            for root in sorted(roots):
                keep_history(repo, root, depth, keep, walked, commit_only=commit_only)
        return _delete_unreachable(repo, keep, dry_run=dry_run, commit_only=commit_only)


def _delete_unreachable(repo: Repo, keep: Reachable, *, dry_run: bool,
                        commit_only: bool) -> PruneResult:
    total = deleted = freed = 0
    for csum, otype in list(repo.iter_objects()):
        if otype not in _PRUNABLE or (commit_only and otype is not ObjectType.COMMIT):
            continue
        total += 1
        if (otype, csum) in keep:
            continue
        if otype is ObjectType.PAYLOAD_LINK and not dry_run and \
                _payload_link_needed(repo, csum, keep):
            continue
        path = repo.object_path(otype, csum)
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            continue
        if not dry_run:
            if otype is ObjectType.COMMIT:
                remove_commit(repo, csum)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        deleted += 1
        freed += size
    if not dry_run:
        prune_static_deltas(repo)
    return PruneResult(total, deleted, freed)
