"""Walking, checking and pruning a repository: ``fsck``, ``prune`` and reachability."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator

import attrs

from . import gvariant as gv
from .core import ObjectType
from .errors import ChecksumError, FormatError, ObjectNotFoundError, PyOstreeError, RepoError
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
    repo: Repo, *, delete: bool = False, progress: Callable[[int], None] | None = None
) -> FsckResult:
    """Verify every commit reachable from a ref (and every other stored commit) and its objects."""
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
            return False
        if isinstance(obj, DirTree):
            verified_tree.clear()
            verified_tree[csum] = obj
        return True

    for csum in sorted(commits):
        result.commits += 1
        partial = repo.is_partial(csum)
        if partial:
            result.partial.append(csum)
        if not check(ObjectType.COMMIT, csum):
            continue
        try:
            for objtype, ocsum in walk_commit(repo, csum, missing_ok=partial, broken_ok=True,
                                              load_dirtree=load_tree):
                if partial and not repo.has_object(objtype, ocsum):
                    continue
                if not check(objtype, ocsum) and delete:
                    repo.mark_partial(csum)
        except PyOstreeError as exc:
            result.errors.append(f"commit {csum}: {exc}")
    return result


@attrs.frozen
class PruneResult:
    total: int
    deleted: int
    freed: int


def reachable_objects(
    repo: Repo, roots: list[str], *, depth: int = -1
) -> set[tuple[ObjectType, str]]:
    keep: set[tuple[ObjectType, str]] = set()
    for root in roots:
        for csum in commit_chain(repo, root, depth):
            if (ObjectType.COMMIT, csum) in keep:
                continue
            keep.add((ObjectType.COMMIT, csum))
            keep.add((ObjectType.COMMIT_META, csum))
            keep.update(walk_commit(repo, csum, missing_ok=True))
    return keep


def remove_commit(repo: Repo, csum: str) -> int:
    """Delete a commit object and its detached metadata, as ``ostree_repo_delete_object`` does:
    with ``core.tombstone-commits=true`` a ``.tombstone-commit`` is left in its place.
    Returns the bytes freed."""
    freed = 0
    for objtype in (ObjectType.COMMIT_META, ObjectType.COMMIT):
        path = repo.object_path(objtype, csum)
        with contextlib.suppress(FileNotFoundError):
            freed += os.lstat(path).st_blocks * 512
            path.unlink()
    repo.clear_partial(csum)
    if repo.config.get_bool("core", "tombstone-commits", False):
        path = repo.object_path(ObjectType.TOMBSTONE_COMMIT, csum)
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, tombstone_bytes(csum))
    return freed


# What ostree lists as objects (and so may prune): never detached metadata or tombstones.
_PRUNABLE = (ObjectType.FILE, ObjectType.DIRTREE, ObjectType.DIRMETA, ObjectType.COMMIT)


def prune(
    repo: Repo, *, depth: int = -1, refs_only: bool = True, dry_run: bool = False,
    delete_commit: str | None = None,
) -> PruneResult:
    """Delete objects not reachable from any ref (``ostree prune --refs-only``)."""
    with repo.lock():
        if delete_commit is not None:
            for name, csum in repo.list_refs().items():
                if csum == delete_commit:
                    raise RepoError(f"commit {delete_commit} is referenced by ref {name}")
            if not repo.has_object(ObjectType.COMMIT, delete_commit):
                raise ObjectNotFoundError(f"no such commit {delete_commit}")
            if not dry_run:
                remove_commit(repo, delete_commit)
        roots = sorted(set(repo.list_refs(mirrors=True).values()))
        if not refs_only:
            roots = sorted(
                set(roots)
                | {c for c, t in repo.iter_objects() if t is ObjectType.COMMIT}
            )
        keep = reachable_objects(repo, roots, depth=depth)
        total = deleted = freed = 0
        for csum, otype in list(repo.iter_objects()):
            if otype not in _PRUNABLE:
                continue
            total += 1
            if (otype, csum) in keep:
                continue
            path = repo.object_path(otype, csum)
            with contextlib.suppress(OSError):
                size = os.lstat(path).st_blocks * 512
                if not dry_run:
                    if otype is ObjectType.COMMIT:
                        size = remove_commit(repo, csum)
                    else:
                        path.unlink()
                deleted += 1
                freed += size
        return PruneResult(total, deleted, freed)


def load_commit_or_none(repo: Repo, csum: str) -> Commit | None:
    try:
        return repo.load_commit(csum)
    except ObjectNotFoundError:
        return None
