"""Committing trees into a repository (``ostree commit``).

:func:`commit_trees` is the whole of ``ostree commit``: it overlays the sources (directories,
tarballs, committed trees; on an optional ``--base``) onto one
:class:`~pyostree.mtree.MutableTree` through the commit modifier, writes the dirtrees, builds
the commit metadata in ostree's order (ref bindings, ``--bootable``'s keys, ``ostree.sizes``),
writes the commit, its detached metadata and signatures, and only then moves the branch. The
same inputs give the checksum the real tool gives. :func:`commit_tree` is the one-directory
shorthand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import attrs

from . import gvariant as gv
from .commitmodifier import CommitModifier, StatOverrides
from .core import ObjectType, validate_ref
from .errors import RepoError
from .fileio import os_error
from .formats.content import FileHeader, content_checksum
from .formats.objects import Commit, DirMeta, DirTree, serialize_metadata, sort_xattrs
from .glibhash import vardict_reorder
from .mtree import MutableTree
from .repo import Repo, RepoMode, read_xattrs
from .transaction import Transaction
from .treewriter import (
    CommitStats,
    TreeWriter,
    scan_devino,
    write_commit_to_mtree,
    write_dir_to_mtree,
    write_mtree,
)

if TYPE_CHECKING:
    from . import gpg

__all__ = ["CommitOptions", "CommitResult", "CommitStats", "Signer", "TreeSource",
           "bootable_kernel", "checksum_path", "commit_tree", "commit_trees", "disk_identity",
           "dummy_commit_signer", "ed25519_commit_signer", "editor_template", "gpg_commit_signer",
           "parse_editor_message", "parse_timestamp", "write_directory"]

_CHUNK = 256 * 1024
SIZES_KEY = "ostree.sizes"
BOOTABLE_KEY = "ostree.bootable"
LINUX_KEY = "ostree.linux"
TREE_KINDS = ("dir", "tar", "ref")

Signer = Callable[[bytes], tuple[str, bytes]]
"""Signs a commit's bytes: returns (detached metadata key, signature), e.g. ``ostree.gpgsigs``."""


@attrs.frozen
class CommitOptions:
    """How the trees are committed: file metadata (``--owner-uid``, ``--canonical-permissions``,
    ``--statoverride``, …), what else ostree's commit modifier does (``--consume``,
    ``--generate-sizes``, ``--link-checkout-speedup``), tarball import and fsync."""

    owner_uid: int | None = None
    owner_gid: int | None = None
    canonical_permissions: bool = False
    no_xattrs: bool = False
    mode_ro_executables: bool = False
    statoverride: StatOverrides | None = None
    skip_list: frozenset[str] | None = None
    consume: bool = False
    generate_sizes: bool = False
    link_checkout_speedup: bool = False
    devino_canonical: bool = False
    tar_autocreate_parents: bool = False
    tar_pathname_filter: str | None = None  # "REGEX,REPLACEMENT"
    fsync: bool = True


@attrs.frozen
class TreeSource:
    """One ``--tree=KIND=VALUE``: a directory, a tarball (``-`` with ``stream``: read that),
    or a commit (``ref=``, any rev)."""

    kind: str
    value: str
    stream: IO[bytes] | None = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.kind not in TREE_KINDS:
            raise RepoError(f"Invalid tree type specification '{self.kind}'")

    @classmethod
    def parse(cls, spec: str) -> TreeSource:
        kind, eq, value = spec.partition("=")
        if not eq:
            raise RepoError(f"Missing type in tree specification '{spec}'")
        return cls(kind, value)


@attrs.frozen
class CommitResult:
    """The commit made, or with ``skipped`` (``--skip-if-unchanged``) the parent kept."""

    checksum: str
    stats: CommitStats
    skipped: bool = False


def disk_identity(
    path: str, st: os.stat_result, *, owner_uid: int | None = None,
    owner_gid: int | None = None, ignore_xattrs: bool = False,
) -> str | tuple[object, ...]:
    """The checksum the file, symlink or directory ``path`` (whose ``lstat`` is ``st``) would
    have in a commit: a content checksum, or a directory's dirmeta checksum, with
    ``owner_uid``/``owner_gid`` in place of its owner. What no commit can hold (a device,
    fifo or socket, a symlink whose target is not UTF-8) gets a tuple of its metadata
    instead, equal only to the same thing on disk."""
    uid = st.st_uid if owner_uid is None else owner_uid
    gid = st.st_gid if owner_gid is None else owner_gid
    mode = st.st_mode
    try:
        xattrs = () if ignore_xattrs else sort_xattrs(read_xattrs(path))
        if stat.S_ISDIR(mode):
            return hashlib.sha256(DirMeta(uid, gid, mode, xattrs).to_bytes()).hexdigest()
        if stat.S_ISLNK(mode):
            target = os.readlink(path)
            try:
                return content_checksum(FileHeader(uid, gid, mode, target, xattrs))
            except UnicodeEncodeError:
                return ("symlink", uid, gid, mode, os.fsencode(target), xattrs)
        if not stat.S_ISREG(mode):
            return ("special", uid, gid, mode, xattrs)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "rb") as fh:
            return content_checksum(FileHeader(uid, gid, mode, "", xattrs, st.st_size),
                                    iter(lambda: fh.read(_CHUNK), b""))
    except OSError as exc:
        raise os_error(exc, f"reading {path}") from exc


def checksum_path(path: str | os.PathLike[str], *, ignore_xattrs: bool = False) -> str:
    """What ``ostree checksum PATH`` prints (see :func:`disk_identity`). What OSTree cannot
    store is refused."""
    name = os.fspath(path)
    try:
        st = os.lstat(name)
    except OSError as exc:
        raise os_error(exc, name) from None
    identity = disk_identity(name, st, ignore_xattrs=ignore_xattrs)
    if not isinstance(identity, str):
        raise RepoError(f"{name}: not a regular file, directory or symlink with a UTF-8 "
                        "target (OSTree cannot store it)", path=name)
    return identity



def write_directory(txn: Transaction, root: Path, opts: CommitOptions) -> tuple[str, str]:
    """Write the directory ``root`` recursively; return (dirtree checksum, dirmeta checksum)."""
    writer = TreeWriter(txn)
    mtree = MutableTree()
    write_dir_to_mtree(writer, str(root), mtree, _modifier(txn.repo, opts))
    return write_mtree(writer, mtree)


def parse_timestamp(text: str) -> int:
    """``--timestamp`` values: ``@EPOCH``, an integer, or an ISO 8601 date."""
    import datetime

    value = text.strip()
    if value.startswith("@"):
        value = value[1:]
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RepoError(f"cannot parse timestamp {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return int(dt.timestamp())



# ---------------------------------------------------------------------------- messages


def editor_template(branch: str | None, subject: str, body: str) -> str:
    """What ``ostree commit --editor`` puts in the file it opens."""
    return ("\n"
            "# Please enter the commit message for your changes. The first line will\n"
            "# become the subject, and the remainder the body. Lines starting\n"
            "# with '#' will be ignored, and an empty message aborts the commit."
            + (f"\n#\n# Branch: {branch}" if branch is not None else "")
            + (f"\n{subject}" if subject else "") + (f"\n{body}" if body else "") + "\n")


def parse_editor_message(text: str) -> tuple[str, str]:
    """(subject, body) from an edited message: ``#`` lines dropped, the first other non-blank
    line is the subject, the rest (trailing whitespace trimmed) the body."""
    subject: str | None = None
    body: list[str] | None = None
    for raw in text.split("\n"):
        line = raw.rstrip(" \t\n\v\f\r")
        if line.startswith("#"):
            continue
        if not line and body is None:
            continue
        if subject is None:
            subject = line
        elif body is None:
            body = [line]
        else:
            body.append(line)
    if not subject:
        raise RepoError("Aborting commit due to empty commit subject.")
    return subject, "\n".join(body).rstrip(" \t\n\v\f\r") if body else ""


# ---------------------------------------------------------------------------- signing


def gpg_commit_signer(key: gpg.SecretKey, passphrase: str | None = None) -> Signer:
    """``--gpg-sign``: a detached OpenPGP signature under ``ostree.gpgsigs``."""
    from . import gpg as gpg_module
    from .verify import GPG_KEY

    return lambda data: (GPG_KEY, gpg_module.sign_detached(key, data, passphrase))


def ed25519_commit_signer(secret: bytes) -> Signer:
    """``--sign``: an ed25519 signature under ``ostree.sign.ed25519``."""
    from . import sign
    from .verify import ED25519_KEY

    return lambda data: (ED25519_KEY, sign.sign_ed25519(secret, data))


def dummy_commit_signer(key: str) -> Signer:
    """``--sign-type=dummy`` (only with ``OSTREE_DUMMY_SIGN_ENABLED=1``, as in ostree): the
    "signature" is the key text itself. For tests."""
    return lambda data: ("ostree.sign.dummy", key.encode())


# ---------------------------------------------------------------------------- committing


def _modifier(repo: Repo, opts: CommitOptions) -> CommitModifier:
    return CommitModifier(
        owner_uid=opts.owner_uid, owner_gid=opts.owner_gid,
        canonical_permissions=opts.canonical_permissions, no_xattrs=opts.no_xattrs,
        ro_executables=opts.mode_ro_executables, statoverride=opts.statoverride,
        skip_list=opts.skip_list,
        flagged=opts.consume or opts.devino_canonical or opts.generate_sizes,
        bare_user_only=repo.mode is RepoMode.BARE_USER_ONLY,
    )


def bootable_kernel(load_dirtree: Callable[[str], DirTree], root_tree: str) -> str:
    """The one kernel version of a tree: the directory of ``/usr/lib/modules`` that holds a
    ``vmlinuz`` (``ostree_commit_metadata_for_bootable``)."""
    tree = load_dirtree(root_tree)
    path = ""
    for name in ("usr", "lib", "modules"):
        path += f"/{name}"
        sub = next((t for n, t, _ in tree.dirs if n == name), None)
        if sub is None:
            what = "Not a directory" if any(n == name for n, _ in tree.files) else (
                "No such file or directory")
            raise RepoError(f"Opening usr/lib/modules: {what}: {path}")
        tree = load_dirtree(sub)
    found: str | None = None
    for name, sub, _ in tree.dirs:
        kernel_dir = load_dirtree(sub)
        if not any(n == "vmlinuz" for n, _ in kernel_dir.files) and not any(
                n == "vmlinuz" for n, _, _ in kernel_dir.dirs):
            continue
        if found is not None:
            raise RepoError("Multiple kernels found in /usr/lib/modules")
        found = name
    if found is None:
        raise RepoError("No kernel found in /usr/lib/modules")
    return found


def _resolve_commit(repo: Repo, rev: str) -> Commit:
    csum = repo.resolve_rev(rev)
    assert csum is not None
    return repo.load_commit(csum)


def _consume(path: str) -> None:
    """Delete a committed directory as ``--consume`` does (``.`` is emptied, not removed)."""
    try:
        if path == ".":
            for entry in os.scandir(path):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        else:
            shutil.rmtree(path)
    except OSError as exc:
        raise os_error(exc, f"consuming {exc.filename or path}") from exc


def _overlay(writer: TreeWriter, repo: Repo, source: TreeSource, mtree: MutableTree,
             mod: CommitModifier, opts: CommitOptions, devino: dict[tuple[int, int], str] | None
             ) -> None:
    writer.start_tree()
    if source.kind == "dir":
        write_dir_to_mtree(writer, source.value, mtree, mod, devino=devino,
                           devino_canonical=opts.devino_canonical)
    elif source.kind == "ref":
        commit = _resolve_commit(repo, source.value)
        write_commit_to_mtree(writer, repo, commit.root_tree, commit.root_meta, mtree, mod)
    else:
        from .pathfilter import compile_pathname_filter
        from .tarimport import import_tar

        translate = (compile_pathname_filter(opts.tar_pathname_filter)
                     if opts.tar_pathname_filter is not None else None)
        if source.stream is not None:
            import_tar(writer, source.stream, mtree, mod, name=source.value,
                       autocreate_parents=opts.tar_autocreate_parents, translate=translate)
            return
        try:
            fh = open(source.value, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise os_error(exc, f"opening {source.value}") from exc
        with fh:
            import_tar(writer, fh, mtree, mod, name=source.value,
                       autocreate_parents=opts.tar_autocreate_parents, translate=translate)


def _append_signature(meta: Mapping[str, gv.Variant], key: str, signature: bytes
                      ) -> dict[str, gv.Variant]:
    """Append to the ``aay`` under ``key`` through a GVariantDict, as libostree does."""
    from .formats.objects import add_signature

    return vardict_reorder(add_signature(meta, key, signature))


def commit_trees(
    repo: Repo,
    trees: Sequence[TreeSource],
    *,
    branch: str | None = None,
    subject: str = "",
    body: str = "",
    timestamp: int | None = None,
    parent: str | None = None,
    orphan: bool = False,
    metadata: Mapping[str, gv.Variant] | None = None,
    keep_metadata: Sequence[str] = (),
    detached_metadata: Mapping[str, gv.Variant] | None = None,
    bindings: bool = True,
    bind_refs: Sequence[str] = (),
    bootable: bool = False,
    base: str | None = None,
    skip_if_unchanged: bool = False,
    signers: Sequence[Signer] = (),
    options: CommitOptions | None = None,
) -> CommitResult:
    """Commit ``trees`` (overlaid in order, on ``base`` when given) like ``ostree commit``.

    The parent defaults to the branch's current commit. Nothing is visible before the commit
    (and its detached metadata and signatures) is durable in ``objects/``; the branch moves
    last. ``--consume``d directories are deleted only after that. With ``skip_if_unchanged`` a
    tree equal to the parent's makes no commit: the result is the parent, ``skipped``.
    """
    opts = options or CommitOptions()
    if not trees:
        raise RepoError("nothing to commit: no tree given")
    if opts.canonical_permissions and (opts.owner_uid or opts.owner_gid):
        raise RepoError("Cannot specify both --canonical-permissions and a non-zero "
                        "--owner-uid or --owner-gid")
    if branch is not None:
        validate_ref(branch)
        if parent is None and not orphan:
            parent = repo.read_ref(branch)
    meta: dict[str, gv.Variant] = dict(metadata or {})
    if keep_metadata:
        if parent is None:
            raise RepoError("Either --branch or --parent must be specified when using "
                            "--keep-metadata")
        parent_meta = repo.load_commit(parent).metadata
        for key in keep_metadata:
            if key not in parent_meta:
                raise RepoError(f"Missing metadata key '{key}' from commit '{parent}'")
            meta[key] = parent_meta[key]
    if opts.tar_pathname_filter is not None:
        from .pathfilter import compile_pathname_filter

        compile_pathname_filter(opts.tar_pathname_filter)  # refuse a bad one before writing
    base_commit = _resolve_commit(repo, base) if base is not None else None
    mod = _modifier(repo, opts)
    sizes = opts.generate_sizes and repo.mode is RepoMode.ARCHIVE

    with repo.lock():
        txn = repo.transaction()
        txn.fsync = opts.fsync
        txn.begin()
        try:
            writer = TreeWriter(txn, sizes=sizes)
            devino = (scan_devino(repo) if opts.link_checkout_speedup or opts.devino_canonical
                      else None)
            if base_commit is not None:
                mtree = MutableTree.from_dirtree(repo.load_dirtree, base_commit.root_tree,
                                                 base_commit.root_meta)
            else:
                mtree = MutableTree()
            for source in trees:
                _overlay(writer, repo, source, mtree, mod, opts, devino)
            unmatched = mod.unmatched()
            if unmatched:
                raise RepoError(unmatched)
            root_tree, root_meta = write_mtree(writer, mtree)
            if skip_if_unchanged and parent is not None:
                old = repo.load_commit(parent)
                if (old.root_tree, old.root_meta) == (root_tree, root_meta):
                    txn.abort()
                    if opts.consume:
                        for source in trees:
                            if source.kind == "dir":
                                _consume(source.value)
                    return CommitResult(parent, CommitStats(), skipped=True)
            if bindings:
                refs = [*([branch] if branch is not None else []), *bind_refs]
                meta["ostree.ref-binding"] = gv.Variant("as", sorted(refs, key=str.encode))
                collection = repo.config.get("core", "collection-id", None)
                if collection and "ostree.collection-binding" not in meta:
                    meta["ostree.collection-binding"] = gv.Variant("s", collection)
            if bootable:
                kernel = bootable_kernel(writer.load_dirtree, root_tree)
                meta = vardict_reorder({**meta, BOOTABLE_KEY: gv.Variant("b", True),
                                        LINUX_KEY: gv.Variant("s", kernel)})
            if writer.sizes:
                meta[SIZES_KEY] = gv.Variant("aay", writer.sizes_metadata())
            commit = Commit(
                metadata=meta, parent=parent, related=(), subject=subject, body=body,
                timestamp=int(time.time()) if timestamp is None else timestamp,
                root_tree=root_tree, root_meta=root_meta,
            )
            data = commit.to_bytes()
            csum = writer.write_metadata(ObjectType.COMMIT, data)
            detached = dict(detached_metadata) if detached_metadata is not None else None
            if signers:
                signed = detached if detached is not None else (
                    repo.load_detached_metadata(csum) or {})
                for signer in signers:
                    key, signature = signer(data)
                    signed = _append_signature(signed, key, signature)
                detached = signed
            if detached is not None:
                txn.write_metadata(ObjectType.COMMIT_META, serialize_metadata(detached), csum)
            txn.commit()
        except BaseException as exc:
            txn.abort(keep_staged=True)
            if isinstance(exc, RecursionError):
                raise RepoError("the tree is nested too deeply to commit") from None
            raise
        if branch is not None:
            repo.set_ref(branch, csum, fsync=opts.fsync)
    if opts.consume:
        for source in trees:
            if source.kind == "dir":
                _consume(source.value)
    return CommitResult(csum, writer.stats)


def commit_tree(
    repo: Repo,
    src: str | os.PathLike[str],
    *,
    branch: str | None = None,
    subject: str = "",
    body: str = "",
    timestamp: int | None = None,
    parent: str | None = None,
    orphan: bool = False,
    metadata: Mapping[str, gv.Variant] | None = None,
    bindings: bool = True,
    bind_refs: Sequence[str] = (),
    options: CommitOptions | None = None,
) -> str:
    """Commit the directory ``src`` like ``ostree commit``; update ``branch`` when given.

    As in ostree, the parent defaults to the branch's current commit, and with ``bindings`` a
    branch (or ``orphan``) commit gets ``ostree.ref-binding`` (the branch and ``bind_refs``,
    sorted; empty for an orphan), so the same inputs give the same checksum as the real tool.
    See :func:`commit_trees` for everything else ``ostree commit`` does.
    """
    return commit_trees(
        repo, [TreeSource("dir", os.fspath(src))], branch=branch, subject=subject, body=body,
        timestamp=timestamp, parent=parent, orphan=orphan, metadata=metadata,
        bindings=bindings and (branch is not None or orphan or bool(bind_refs)),
        bind_refs=bind_refs, options=options,
    ).checksum
