"""Walking and checking a repository: ``fsck`` and its options, reachability, deleting a commit
(pruning is in :mod:`pyostree.pruning`)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from . import gvariant as gv
from .core import ObjectType
from .errors import (
    ChecksumError,
    FormatError,
    ObjectNotFoundError,
    PyOstreeError,
    RepoError,
    VerificationError,
)
from .fileio import atomic_write
from .formats.objects import Commit, DirMeta, DirTree, parse_object, tombstone_bytes
from .repo import Repo
from .transaction import verify_staged_content


def walk_commit(
    repo: Repo, commit_csum: str, *, missing_ok: bool = False, broken_ok: bool = False,
    load_dirtree: Callable[[str], DirTree] | None = None,
) -> Iterator[tuple[ObjectType, str]]:
    """Yield every object a commit references (not the commit itself), each once.

    ``missing_ok`` skips dirtrees that are not stored; ``broken_ok`` skips any dirtree that
    cannot be loaded (fsck, which reports it separately). A dirtree is loaded right after it is
    yielded, with ``load_dirtree`` if given (fsck hands back the tree it just verified)."""
    load = load_dirtree or repo.load_dirtree
    commit = repo.load_commit(commit_csum)
    seen_trees: set[str] = set()
    seen_other: set[tuple[ObjectType, str]] = set()
    stack = [(commit.root_tree, commit.root_meta)]
    while stack:
        tree_csum, meta_csum = stack.pop()
        if (ObjectType.DIRMETA, meta_csum) not in seen_other:
            seen_other.add((ObjectType.DIRMETA, meta_csum))
            yield ObjectType.DIRMETA, meta_csum
        if tree_csum in seen_trees:
            continue
        seen_trees.add(tree_csum)
        yield ObjectType.DIRTREE, tree_csum
        try:
            tree = load(tree_csum)
        except ObjectNotFoundError:
            if missing_ok or broken_ok:
                continue
            raise
        except PyOstreeError:
            if broken_ok:
                continue
            raise
        for _, fcsum in tree.files:
            if (ObjectType.FILE, fcsum) not in seen_other:
                seen_other.add((ObjectType.FILE, fcsum))
                yield ObjectType.FILE, fcsum
        for _, dtree, dmeta in reversed(tree.dirs):
            stack.append((dtree, dmeta))


def commit_chain(repo: Repo, csum: str, depth: int = -1) -> Iterator[str]:
    """The commit and up to ``depth`` ancestors (-1: all that are stored)."""
    n = 0
    current: str | None = csum
    while current is not None:
        yield current
        if depth >= 0 and n >= depth:
            return
        n += 1
        try:
            current = repo.load_commit(current).parent
        except ObjectNotFoundError:
            return
        if current is not None and not repo.has_object(ObjectType.COMMIT, current):
            return


@attrs.define
class FsckResult:
    commits: int = 0
    objects: int = 0
    errors: list[str] = attrs.Factory(list)
    partial: list[str] = attrs.Factory(list)
    deleted: int = 0


def verify_object(
    repo: Repo, objtype: ObjectType, csum: str
) -> Commit | DirTree | DirMeta | dict[str, gv.Variant] | None:
    """Re-verify one stored object: checksum and structure. Raises a pyostree error.

    Returns the parsed object for metadata objects, None for content objects."""
    if objtype.is_meta:
        data = repo.load_metadata_bytes(objtype, csum)
        if objtype not in (ObjectType.COMMIT_META, ObjectType.TOMBSTONE_COMMIT):
            actual = hashlib.sha256(data).hexdigest()
            if actual != csum:
                raise ChecksumError(
                    f"corrupted {objtype.extension} object {csum}; actual checksum {actual}",
                    expected=csum, actual=actual,
                )
        try:
            return parse_object(objtype, data)
        except FormatError as exc:
            raise FormatError(f"corrupted {objtype.extension} object {csum}: {exc}") from exc
    try:
        actual = verify_staged_content(repo, repo.object_path(objtype, csum))
    except FileNotFoundError:
        raise ObjectNotFoundError(f"missing file object {csum}") from None
    except OSError as exc:
        raise RepoError(f"cannot read file object {csum}: {exc.strerror}") from exc
    except FormatError as exc:
        raise FormatError(f"corrupted file object {csum}: {exc}") from exc
    if actual != csum:
        raise ChecksumError(f"corrupted file object {csum}; actual checksum {actual}",
                            expected=csum, actual=actual)
    return None


def fsck(
    repo: Repo, *, delete: bool = False, all_errors: bool = True,
    progress: Callable[[int], None] | None = None,
) -> FsckResult:
    """Verify every commit reachable from a ref (and every other stored commit) and its objects.

    Without ``all_errors`` (and without ``delete``), the check stops at the first corrupt
    object, as ``ostree fsck`` does without ``--all``; missing objects never stop it."""
    result = FsckResult()
    commits = {csum for csum, otype in repo.iter_objects() if otype is ObjectType.COMMIT}
    for name, csum in repo.list_refs().items():
        if csum not in commits:
            result.errors.append(f"ref {name} points to missing commit {csum}")
    checked: set[tuple[ObjectType, str]] = set()
    bad: set[tuple[ObjectType, str]] = set()
    # The dirtree check() just verified, which walk_commit loads next: parsed once, not twice.
    verified_tree: dict[str, DirTree] = {}

    def load_tree(csum: str) -> DirTree:
        tree = verified_tree.pop(csum, None)
        return tree if tree is not None else repo.load_dirtree(csum)

    def check(objtype: ObjectType, csum: str) -> bool:
        if (objtype, csum) in checked:
            return (objtype, csum) not in bad
        checked.add((objtype, csum))
        result.objects += 1
        if progress is not None:
            progress(result.objects)
        try:
            obj = verify_object(repo, objtype, csum)
        except ObjectNotFoundError as exc:
            bad.add((objtype, csum))
            result.errors.append(str(exc))
            return False
        except PyOstreeError as exc:
            bad.add((objtype, csum))
            result.errors.append(str(exc))
            if delete:
                with contextlib.suppress(OSError):
                    repo.object_path(objtype, csum).unlink()
                    result.deleted += 1
            elif not all_errors:
                raise _StopFsck from None
            return False
        if isinstance(obj, DirTree):
            verified_tree.clear()
            verified_tree[csum] = obj
        return True

    ordered = sorted(commits)
    result.commits = len(ordered)
    result.partial = [c for c in ordered if repo.is_partial(c)]
    partials = set(result.partial)
    with contextlib.suppress(_StopFsck):
        for csum in ordered:
            partial = csum in partials
            if not check(ObjectType.COMMIT, csum):
                continue
            try:
                for objtype, ocsum in walk_commit(repo, csum, missing_ok=partial,
                                                  broken_ok=True, load_dirtree=load_tree):
                    if partial and not repo.has_object(objtype, ocsum):
                        continue
                    if not check(objtype, ocsum) and delete:
                        repo.mark_partial(csum)
            except PyOstreeError as exc:
                result.errors.append(f"commit {csum}: {exc}")
    return result


class _StopFsck(Exception):
    """The first corrupt object ends a check that does not report them all."""


# ---------------------------------------------------------------------------- fsck options


def _typed(commit: Commit, key: str, type_string: str) -> Any:
    """A metadata value if it has the type GLib's ``g_variant_lookup`` asks for, else None."""
    variant = commit.metadata.get(key)
    return variant.value if variant is not None and variant.type == type_string else None


def binding_error(commit: Commit, ref_name: str | None, collection_id: str | None) -> str | None:
    """Why ``commit`` may not be the commit of ``ref_name`` (in ``collection_id``), in
    ``_ostree_repo_verify_bindings``'s words; None when its bindings allow it."""
    refs = _typed(commit, "ostree.ref-binding", "as")
    if refs is None:
        if collection_id is None:
            return None
        return "Expected commit metadata to have ref binding information, found none"
    if ref_name is not None and ref_name not in refs:
        listed = ", ".join(f"\u2018{r}\u2019" for r in refs) or "no refs"
        return (f"Commit has no requested ref \u2018{ref_name}\u2019 in ref binding metadata "
                f"({listed})")
    if collection_id is not None:
        bound = _typed(commit, "ostree.collection-binding", "s")
        if bound is None:
            return ("Expected commit metadata to have collection ID binding information, "
                    "found none")
        if bound != collection_id:
            return (f"Commit has collection ID \u2018{bound}\u2019 in collection binding "
                    "metadata, while the remote it came from has collection ID "
                    f"\u2018{collection_id}\u2019")
    return None


def verify_ref_bindings(repo: Repo, *, collections: bool = False) -> None:
    """``fsck --verify-bindings``: the commit of every ref must be bound to that ref (when it
    has bindings); with ``collections``, every collection ref's commit must be bound to the ref
    and its collection. Raises VerificationError for the first that is not (refs whose commit
    is missing are left to :func:`fsck`)."""
    targets: list[tuple[str, str | None, str]] = []
    if collections:
        targets += [(c, coll, csum) for (coll, c), csum in
                    repo.list_collection_refs(remotes=False).items()]
    else:
        targets += [(name.rpartition(":")[2], None, csum)
                    for name, csum in repo.list_refs().items()]
    for ref_name, collection_id, csum in targets:
        commit = load_commit_or_none(repo, csum)
        if commit is None:
            continue
        problem = binding_error(commit, ref_name, collection_id)
        if problem is not None:
            raise VerificationError(f"Commit {csum}: {problem}")


def verify_back_refs(repo: Repo) -> None:
    """``fsck --verify-back-refs``: every ref a stored commit is bound to must exist and point
    at that commit (so an older commit of a branch fails: ostree's rule). Commits are taken in
    checksum order; raises VerificationError for the first failure."""
    for csum in sorted(c for c, t in repo.iter_objects() if t is ObjectType.COMMIT):
        commit = repo.load_commit(csum)
        refs = _typed(commit, "ostree.ref-binding", "as")
        collection_id = _typed(commit, "ostree.collection-binding", "s")
        for ref in refs or ():
            if collection_id is not None:
                target = repo.list_collection_refs(collection_id).get((collection_id, ref))
                what = f"Collection\u2013ref ({collection_id}, {ref})"
            else:
                target = repo.resolve_rev(ref, allow_noent=True)
                what = f"Ref \u2018{ref}\u2019"
            if target is None:
                raise VerificationError(f"{what} in bindings for commit {csum} does not exist")
            if target != csum:
                raise VerificationError(
                    f"{what} in bindings for commit {csum} does not resolve to that commit")


def missing_parents(repo: Repo) -> list[str]:
    """The parents that stored commits name but the repository lacks (tombstoned ones not
    counted), in checksum order: what ``fsck --add-tombstones`` marks as deleted."""
    found: set[str] = set()
    for csum, otype in list(repo.iter_objects()):
        if otype is not ObjectType.COMMIT:
            continue
        parent = repo.load_commit(csum).parent
        if parent is not None and not repo.has_object(ObjectType.COMMIT, parent) \
                and not repo.has_object(ObjectType.TOMBSTONE_COMMIT, parent):
            found.add(parent)
    return sorted(found)


def add_tombstones(repo: Repo, parents: Sequence[str]) -> None:
    """Write a tombstone for each missing parent commit (turning on
    ``core.tombstone-commits``), so pulls from this repository know they were deleted."""
    if parents:
        enable_tombstone_commits(repo)
    for csum in parents:
        write_tombstone(repo, csum)


def enable_tombstone_commits(repo: Repo) -> None:
    """Set ``core.tombstone-commits=true`` (what ``prune --delete-commit`` and
    ``fsck --add-tombstones`` do before they write a tombstone)."""
    if not repo.config.get_bool("core", "tombstone-commits", False):
        repo.config.set("core", "tombstone-commits", "true")
        repo.save_config()


def write_tombstone(repo: Repo, csum: str) -> None:
    path = repo.object_path(ObjectType.TOMBSTONE_COMMIT, csum)
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, tombstone_bytes(csum))


def remove_commit(repo: Repo, csum: str, *, clear_partial: bool = True) -> int:
    """Delete a commit object and its detached metadata, as ``ostree_repo_delete_object`` does:
    with ``core.tombstone-commits=true`` a ``.tombstone-commit`` is left in its place. Its
    ``.commitpartial`` marker goes too unless ``clear_partial`` is false (ostree's
    ``prune --delete-commit`` leaves it). Returns the bytes freed (the commit object's size)."""
    freed = 0
    for objtype in (ObjectType.COMMIT_META, ObjectType.COMMIT):
        path = repo.object_path(objtype, csum)
        with contextlib.suppress(FileNotFoundError):
            if objtype is ObjectType.COMMIT:
                freed = os.lstat(path).st_size
            path.unlink()
    if clear_partial:
        repo.clear_partial(csum)
    if repo.config.get_bool("core", "tombstone-commits", False):
        write_tombstone(repo, csum)
    return freed


def load_commit_or_none(repo: Repo, csum: str) -> Commit | None:
    try:
        return repo.load_commit(csum)
    except ObjectNotFoundError:
        return None


def __getattr__(name: str) -> Any:
    """``prune`` and ``PruneResult`` live in :mod:`pyostree.pruning` (which builds on this
    module); ``from pyostree.maintenance import prune``, their documented home, still works."""
    if name in ("prune", "PruneResult", "reachable_objects"):
        from . import pruning

        return getattr(pruning, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
