"""Streaming a commit as a tar archive (``ostree export``).

The archive is what ``ostree export`` writes with libarchive: GNU tar, one member per
directory, regular file and symlink, in the commit's order (a directory, its files, then its
subdirectories, depth first), each with the owner and mode of its object and the commit's
timestamp as its time. Like ostree's GNU tar output it carries no extended attributes.
Files are streamed from the repository a chunk at a time, so memory does not grow with them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import IO, BinaryIO

import attrs

from .checkout import resolve_path
from .errors import RepoError
from .fileio import atomic_writer, os_error
from .formats import tar
from .formats.objects import DirMeta
from .repo import Repo

_CHUNK = 256 * 1024
_DIRMETA_CACHE = 256  # a tree has only a handful of distinct dirmeta objects


@attrs.frozen
class ExportSource:
    """What to export: a commit (its timestamp dates every member) and the tree to start from."""

    commit: str
    timestamp: int
    tree: str
    meta: str


def resolve_export(repo: Repo, rev: str, subpath: str | None = None) -> ExportSource:
    """Resolve ``rev`` and the directory ``subpath`` in it (``--subpath``), before anything is
    written, so a bad rev or path leaves no output behind."""
    csum = repo.resolve_rev(rev)
    assert csum is not None
    commit = repo.load_commit(csum)
    tree, meta = commit.root_tree, commit.root_meta
    if subpath:
        tree, meta, file_csum = resolve_path(repo, tree, meta, subpath)
        if file_csum is not None:
            raise RepoError(f"--subpath {subpath}: not a directory")
    return ExportSource(csum, commit.timestamp, tree, meta)


def write_tar(repo: Repo, source: ExportSource, out: BinaryIO, *, prefix: str = "",
              record_size: int = tar.RECORD_SIZE) -> int:
    """Write the archive of ``source`` to ``out``; returns its size. Member names are
    ``prefix`` + the path below the exported directory, as ostree glues them (no ``/`` is
    added: ``--prefix=usr`` makes ``usrbin/``); the exported directory itself is ``prefix``,
    or ``.`` without one. ``record_size``: the archive is padded to a multiple of it (libarchive
    pads a stream to 10240 bytes, a regular file only to 512)."""
    written = 0
    dirmetas: dict[str, DirMeta] = {}

    def emit(data: bytes) -> None:
        nonlocal written
        out.write(data)
        written += len(data)

    def member(rel: str, typeflag: bytes, mode: int, uid: int, gid: int, size: int = 0,
               linkname: bytes = b"") -> None:
        emit(tar.member_header(os.fsencode((prefix + rel) or "."), typeflag=typeflag, mode=mode,
                               uid=uid, gid=gid, size=size, mtime=source.timestamp,
                               linkname=linkname))

    # Depth first, a directory before its entries: a stack of (path below the root, tree, meta).
    stack = [("", source.tree, source.meta)]
    while stack:
        rel, tree_csum, meta_csum = stack.pop()
        meta = dirmetas.get(meta_csum)
        if meta is None:
            meta = repo.load_dirmeta(meta_csum)
            if len(dirmetas) < _DIRMETA_CACHE:
                dirmetas[meta_csum] = meta
        member(rel, tar.DIRTYPE, meta.mode, meta.uid, meta.gid)
        dirtree = repo.load_dirtree(tree_csum)
        base = f"{rel}/" if rel else ""
        for name, fcsum in dirtree.files:
            header, stream = repo.open_content(fcsum)
            if stream is None:
                member(base + name, tar.SYMTYPE, header.mode, header.uid, header.gid,
                       linkname=header.symlink_target.encode())
                continue
            with stream:
                member(base + name, tar.REGTYPE, header.mode, header.uid, header.gid,
                       header.size)
                _copy_exactly(stream, header.size, emit, fcsum)
            emit(tar.padding(header.size))
        stack.extend((base + name, dtree, dmeta) for name, dtree, dmeta in reversed(dirtree.dirs))
    emit(tar.end_of_archive(written, record_size))
    return written


def _copy_exactly(stream: IO[bytes], size: int, emit: Callable[[bytes], None],
                  csum: str) -> None:
    """Copy ``size`` bytes of a content object: its member's header promised that many."""
    left = size
    while left:
        chunk = stream.read(min(left, _CHUNK))
        if not chunk:
            raise RepoError(f"file object {csum} is shorter than its header says ({size} bytes)")
        emit(chunk)
        left -= len(chunk)
    if stream.read(1):
        raise RepoError(f"file object {csum} is longer than its header says ({size} bytes)")


def export_to_file(repo: Repo, source: ExportSource, path: str | os.PathLike[str], *,
                   prefix: str = "") -> int:
    """Write the archive to ``path`` (``--output``): atomically when ``path`` is a regular file
    or does not exist yet (a failure leaves nothing behind); straight into it when it is a
    device, FIFO or symlink, which a rename would replace rather than write to."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise os_error(exc, f"writing {os.fspath(path)}") from exc
    if st is None or stat.S_ISREG(st.st_mode):
        with atomic_writer(path) as out:
            return write_tar(repo, source, out, prefix=prefix, record_size=tar.BLOCK_SIZE)
    try:
        fh = open(path, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise os_error(exc, f"writing {os.fspath(path)}") from exc
    with fh:
        # libarchive pads to whole records on devices and FIFOs, not on regular files.
        padded = not stat.S_ISREG(os.fstat(fh.fileno()).st_mode)
        return write_tar(repo, source, fh, prefix=prefix,
                         record_size=tar.RECORD_SIZE if padded else tar.BLOCK_SIZE)
