"""Static deltas against a repository: executing parts into a transaction, ``apply-offline``,
listing, deleting and generating deltas (``ostree static-delta``)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO, cast

import attrs

from .core import ObjectType
from .deltaexec import ContentMeta, execute_payload_file
from .errors import ChecksumError, FormatError, ObjectNotFoundError, RepoError, SignatureError
from .fileio import atomic_write, os_error
from .formats.content import FileHeader
from .formats.delta import (
    ENDIANNESS_KEY,
    OBJ_FILE,
    DeltaSuperblock,
    Fallback,
    PartBuilder,
    PartFileEncoder,
    PartHeader,
    PayloadLayout,
    count_ops,
    decompress_part_into,
    delta_dir,
    delta_superblock_path,
    parse_delta_name,
    part_payload_limit,
    unwrap_signed_superblock,
    wrap_signed_superblock,
)
from .formats.objects import parse_metadata
from .maintenance import walk_commit
from .repo import Repo
from .transaction import ContentWriter, Transaction
from .verify import ED25519_KEY

_CHUNK = 256 * 1024
_PART_READ = 256 * 1024
_SPOOL_MAX = 1024 * 1024
MB = 1_000_000


class RepoDeltaTarget:
    """The :class:`~pyostree.deltaexec.DeltaTarget` of a repository transaction."""

    def __init__(self, txn: Transaction) -> None:
        self.txn = txn
        self._types = {int(t): t for t in ObjectType}

    def has_object(self, objtype: int, csum: str) -> bool:
        return self.txn.has_object(self._types[objtype], csum)

    def open_content_source(self, csum: str) -> BinaryIO:
        _, stream = self.txn.repo.open_content(csum)
        if stream is None:
            raise FormatError(f"delta read source {csum} is a symlink")
        if stream.seekable():
            return cast(BinaryIO, stream)
        # An archive object inflates on the fly: copy it (in memory up to 1 MiB) to seek in it.
        staging = self.txn.staging
        copy = cast(BinaryIO, tempfile.SpooledTemporaryFile(  # noqa: SIM115 - the caller closes it
            _SPOOL_MAX, dir=None if staging is None else str(staging)))
        with stream:
            shutil.copyfileobj(stream, copy, _CHUNK)
        copy.seek(0)
        return copy

    def write_metadata_object(self, objtype: int, csum: str, data: bytes) -> None:
        self.txn.write_metadata(self._types[objtype], data, csum)

    def write_content_object(self, csum: str, meta: ContentMeta,
                             data: bytes | memoryview | BinaryIO | None) -> None:
        header = FileHeader(meta.uid, meta.gid, meta.mode, meta.symlink_target,
                            tuple(sorted(meta.xattrs)), meta.size)
        chunks: Iterable[bytes | memoryview]
        if data is None:
            chunks = ()
        elif isinstance(data, bytes | memoryview):
            chunks = (data,)
        else:
            stream = data
            chunks = iter(lambda: stream.read(_CHUNK), b"")
        # The executor verified the checksum: stage the data without hashing it again.
        ContentWriter(self.txn, header, checksum=csum).write_all(chunks)

    def temp_file(self) -> BinaryIO:
        # Only files of more than 1 MiB are assembled in temp files: an unnamed staging file.
        staging = self.txn.staging
        try:
            return cast(BinaryIO, tempfile.TemporaryFile(
                dir=None if staging is None else str(staging)))
        except OSError as exc:
            raise os_error(exc, "creating a temporary file") from exc


def read_superblock(data: bytes) -> tuple[DeltaSuperblock, dict[str, tuple[bytes, ...]]]:
    """Parse a superblock file, unwrapping an ``OSTSGNDT`` signed superblock."""
    unwrapped = unwrap_signed_superblock(data)
    if unwrapped is None:
        return DeltaSuperblock.from_bytes(data), {}
    raw, sigs = unwrapped
    return DeltaSuperblock.from_bytes(raw), sigs


def part_objects_present(txn: Transaction, header: PartHeader) -> bool:
    return all(txn.has_object(ObjectType(t), c) for t, c in header.objects)


@attrs.frozen
class UnpackedPart:
    """A verified part decompressed into an unnamed staging file, ready to execute."""

    header: PartHeader
    file: BinaryIO
    layout: PayloadLayout

    def execute(self, txn: Transaction) -> int:
        """Run the part's ops into ``txn``; returns how many objects were written."""
        try:
            return execute_payload_file(self.file, self.layout, self.header,
                                        RepoDeltaTarget(txn))
        except OSError as exc:
            raise os_error(exc, "executing a delta part") from exc

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> UnpackedPart:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _check_part_file(source: IO[bytes], header: PartHeader) -> None:
    """Size and sha256 of a part file against its header, reading no more than it claims."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(min(_PART_READ, header.size + 1 - size)):
        size += len(chunk)
        digest.update(chunk)
        if size > header.size:
            break
    actual = digest.hexdigest()
    if size != header.size or actual != header.checksum:
        raise ChecksumError(
            f"delta part checksum mismatch (size {size}, header says {header.size})",
            expected=header.checksum, actual=actual)


def unpack_part(txn: Transaction, source: bytes | IO[bytes], header: PartHeader, *,
                inline: bool = False) -> UnpackedPart:
    """Check a part file (unless inline), then decompress it under a hard cap into an
    unnamed file in the staging directory and parse its framing.

    Nothing is decompressed before the size and sha256 match the header, and the payload
    never sits in memory whole (only the xz dictionary and the small tables do).
    """
    if isinstance(source, bytes):
        if not inline:
            _check_part_file(io.BytesIO(source), header)
    else:
        start = source.tell() if source.seekable() else 0  # read twice: must be seekable
        if not inline:
            _check_part_file(source, header)
        source.seek(start)
    try:
        out = cast(BinaryIO, tempfile.TemporaryFile(dir=txn.staging))  # noqa: SIM115
    except OSError as exc:
        raise os_error(exc, "unpacking a delta part") from exc
    try:
        size = decompress_part_into(source, out.write, max_output=part_payload_limit(header))
        out.flush()
        fd = out.fileno()
        layout = PayloadLayout.parse(size, lambda offset, n: os.pread(fd, n, offset),
                                     max_entries=len(header.objects))
    except BaseException as exc:
        out.close()
        if isinstance(exc, OSError):
            raise os_error(exc, "unpacking a delta part") from exc
        raise
    return UnpackedPart(header, out, layout)


def execute_part_file(txn: Transaction, source: bytes | IO[bytes], header: PartHeader, *,
                      inline: bool = False) -> int:
    """Verify (unless inline), decompress under a cap and execute one part."""
    if not header.objects:
        return 0  # libostree skips empty parts without looking at them
    with unpack_part(txn, source, header, inline=inline) as part:
        return part.execute(txn)


def stage_commit(txn: Transaction, sb: DeltaSuperblock) -> None:
    txn.write_metadata(ObjectType.COMMIT, sb.commit, sb.to_checksum)
    meta = sb.commitmeta
    if meta is not None:
        parse_metadata(meta)
        txn.write_metadata(ObjectType.COMMIT_META, meta, sb.to_checksum)


def apply_offline(repo: Repo, path: str | os.PathLike[str], *,
                  keys: tuple[Sequence[bytes], Sequence[bytes]] | None = None) -> str:
    """``static-delta apply-offline``: apply a delta directory (or its superblock file).

    A signed delta is checked against ``keys`` (trusted, revoked ed25519 public keys) when
    given; without them, it must be when the repository sets ``core.sign-verify-deltas``."""
    target = Path(path)
    ddir = target if target.is_dir() else target.parent
    sb_path = ddir / "superblock" if target.is_dir() else target
    try:
        data = sb_path.read_bytes()
    except OSError as exc:
        raise RepoError(f"cannot read delta superblock {sb_path}: {exc.strerror}") from exc
    if unwrap_signed_superblock(data) is not None:
        if keys is not None:
            try:
                verify_delta_signature(data, *keys)
            except SignatureError as exc:
                raise SignatureError(f"Delta signature verification failed: {exc}") from None
        elif repo.config.get_bool("core", "sign-verify-deltas", False):
            raise SignatureError("Key is mandatory to check delta signature")
    sb, _ = read_superblock(data)
    if sb.from_checksum and not repo.has_object(ObjectType.COMMIT, sb.from_checksum):
        raise ObjectNotFoundError(f"delta source commit {sb.from_checksum} is not in the repo")
    for fb in sb.fallbacks:
        if not repo.has_object(ObjectType.FILE, fb.checksum):
            raise ObjectNotFoundError(
                f"delta needs fallback object {fb.checksum}, which is not in the repository")
    with repo.lock(), repo.transaction() as txn:
        repo.mark_partial(sb.to_checksum)
        stage_commit(txn, sb)
        for i, header in enumerate(sb.parts):
            if part_objects_present(txn, header):
                continue
            inline = sb.inline_part(i)
            if inline is not None:
                execute_part_file(txn, inline, header, inline=True)
                continue
            try:
                with open(ddir / str(i), "rb") as fh:
                    execute_part_file(txn, fh, header)
            except FileNotFoundError:
                raise RepoError(f"delta part {ddir / str(i)} is missing") from None
    repo.clear_partial(sb.to_checksum)
    return sb.to_checksum


def superblock_file(repo: Repo, delta_id: str) -> Path:
    """The superblock a delta id names, as ``ostree static-delta`` takes it: a path when it
    has a ``/``, else a delta name (``FROM-TO`` or ``TO``) in the repository."""
    if "/" in delta_id:
        return Path(delta_id)
    frm, to = parse_delta_name(delta_id)
    return repo.path / delta_superblock_path(frm, to)


def verify_delta_signature(data: bytes, trusted: Sequence[bytes],
                           revoked: Sequence[bytes] = ()) -> None:
    """Check the ed25519 signatures of a signed superblock file's bytes; raises
    :class:`SignatureError` unless one verifies with a trusted key (``static-delta verify``)."""
    from .sign import verify_ed25519

    unwrapped = unwrap_signed_superblock(data)
    if unwrapped is None:
        raise SignatureError("the static delta is not signed")
    superblock, signatures = unwrapped
    sigs = signatures.get(ED25519_KEY)
    if not sigs:
        raise SignatureError(f"no signature for '{ED25519_KEY}' in static-delta superblock")
    verify_ed25519(superblock, sigs, trusted, revoked)


@attrs.frozen
class PartStats:
    """What ``static-delta show`` prints of a part's payload."""

    nmodes: int
    nxattrs: int
    blob_size: int
    ops_size: int
    op_counts: tuple[int, ...]  # in OP_COUNT_NAMES order


@attrs.frozen
class DeltaInfo:
    """A static delta as ``ostree static-delta show`` describes it."""

    superblock: DeltaSuperblock
    signed: bool
    endianness_guessed: bool  # no ostree.endianness key: the byte order was guessed
    parts: tuple[PartStats, ...]


def describe_delta(repo: Repo, delta_id: str) -> DeltaInfo:
    """Read a delta's superblock and parts (without checking the parts' checksums, as
    ``ostree static-delta show`` does) and count what they hold. Each part is decompressed
    under a cap into a temporary file, and only its tables and op stream are read back."""
    path = superblock_file(repo, delta_id)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RepoError(f"cannot read delta superblock {path}: {exc.strerror}") from None
    unwrapped = unwrap_signed_superblock(data)
    sb = DeltaSuperblock.from_bytes(unwrapped[0] if unwrapped is not None else data)
    stats = []
    for i, header in enumerate(sb.parts):
        source: bytes | IO[bytes] | None = sb.inline_part(i)
        if source is None:
            try:
                source = open(path.parent / str(i), "rb")  # noqa: SIM115 (closed below)
            except OSError as exc:
                raise os_error(exc, f"delta part {path.parent / str(i)}") from None
        try:
            stats.append(_part_stats(source, header))
        finally:
            if not isinstance(source, bytes):
                source.close()
    return DeltaInfo(sb, unwrapped is not None, ENDIANNESS_KEY not in sb.metadata, tuple(stats))


def _part_stats(source: bytes | IO[bytes], header: PartHeader) -> PartStats:
    with tempfile.TemporaryFile() as out:
        size = decompress_part_into(source, out.write, max_output=part_payload_limit(header))
        out.flush()
        fd = out.fileno()
        layout = PayloadLayout.parse(size, lambda offset, n: os.pread(fd, n, offset),
                                     max_entries=max(len(header.objects), 1))
        ops = os.pread(fd, layout.ops_size, layout.ops_offset)
    return PartStats(len(layout.modes), len(layout.xattrs), layout.blob_size, layout.ops_size,
                     count_ops(ops, header.objects))


def list_delta_names(repo: Repo) -> list[str]:
    from .signing import list_deltas

    return sorted(name for name, _ in list_deltas(repo))


def delete_delta(repo: Repo, name: str) -> None:
    frm, to = parse_delta_name(name)
    path = repo.path / delta_dir(frm, to)
    if not path.is_dir():
        raise RepoError(f"no static delta {name}")
    shutil.rmtree(path)


# ------------------------------------------------------------------------------ generation


@attrs.frozen
class GenerateOptions:
    """``ostree static-delta generate``'s options, with its defaults. Sizes are in bytes."""

    max_chunk_size: int = 32 * MB
    inline: bool = False
    bsdiff: bool = True
    max_bsdiff_size: int = 16 * MB
    #: A file larger than this (in an archive repository) becomes a fallback object, fetched
    #: loose, instead of going into a part; 0 turns fallbacks off.
    min_fallback_size: int = 4 * MB
    #: Byte order of the superblock's numbers: "l" (little endian) or "B" (big endian).
    endianness: str = attrs.field(default="l", validator=attrs.validators.in_(("l", "B")))
    #: Write the superblock to this path, the parts beside it, instead of into the repository.
    filename: str | None = None
    #: ed25519 secret keys that sign the superblock (an ``OSTSGNDT`` wrapper, as ostree's).
    sign_keys: tuple[bytes, ...] = ()


def _new_objects(repo: Repo, from_csum: str | None, to_csum: str
                 ) -> Iterator[tuple[ObjectType, str]]:
    have: set[tuple[ObjectType, str]] = set()
    if from_csum is not None:
        have = set(walk_commit(repo, from_csum))
    for item in walk_commit(repo, to_csum):
        if item not in have:
            yield item


def _commit_files(repo: Repo, commit: str) -> Iterator[tuple[str, str]]:
    """(basename, content csum) of every file entry of a commit, each dirtree read once."""
    stack = [repo.load_commit(commit).root_tree]
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        tree = repo.load_dirtree(t)
        yield from tree.files
        stack += [d[1] for d in tree.dirs]


def _basenames(repo: Repo, commit: str) -> dict[str, list[str]]:
    """basename → content checksums of the files of a commit with that name."""
    out: dict[str, list[str]] = {}
    for name, csum in _commit_files(repo, commit):
        out.setdefault(name, []).append(csum)
    return out


class _PartWriter:
    """Parts of a delta being generated, written one by one into ``directory``.

    The current part's blob is spooled to an unlinked temporary file, and each part is
    xz-compressed from there straight into its file, so no part, and no file in one, is held
    in memory."""

    def __init__(self, directory: Path, spool: BinaryIO) -> None:
        self.directory = directory
        self.headers: list[PartHeader] = []
        self._spool = spool
        self.builder = PartBuilder(blob_sink=self._spool.write)

    def make_room(self, size: int, max_size: int) -> None:
        """Start a new part if ``size`` more bytes would take this one past ``max_size``."""
        if self.builder.objects and self.builder.usize + size > max_size:
            self.flush()

    def flush(self) -> None:
        if not self.builder.objects:
            return
        head, tail = self.builder.frame()
        encoder = PartFileEncoder()
        path = self.directory / str(len(self.headers))
        with path.open("wb") as out:
            out.write(encoder.update(head))
            self._spool.seek(0)
            while chunk := self._spool.read(_CHUNK):
                out.write(encoder.update(chunk))
            out.write(encoder.update(tail))
            out.write(encoder.finish())
            out.flush()
            os.fsync(out.fileno())
        self.headers.append(self.builder.header(encoder))
        self._spool.seek(0)
        self._spool.truncate()
        self.builder = PartBuilder(blob_sink=self._spool.write)


def generate_delta(repo: Repo, from_rev: str | None, to_rev: str,
                   options: GenerateOptions | None = None) -> str:
    """Write ``deltas/…/superblock`` and its parts (or, with ``filename``, the superblock there
    and the parts beside it); returns the delta name.

    Memory stays bounded by the tables of one part, plus the two files of a bsdiff (at most
    ``max_bsdiff_size`` each); inline parts are read back into the superblock."""
    opts = options or GenerateOptions()
    to_csum = repo.resolve_rev(to_rev)
    assert to_csum is not None
    from_csum = repo.resolve_rev(from_rev) if from_rev else None
    if opts.filename is not None:
        out = Path(opts.filename).absolute()
        if not out.parent.is_dir():
            raise RepoError(f"{out.parent}: no such directory")
        tmp = out.with_name(f".{out.name}.tmp")
    else:
        ddir = repo.path / delta_dir(from_csum, to_csum)
        tmp = ddir.with_name(ddir.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        name = _generate_into(repo, tmp, from_csum, to_csum, opts)
        if opts.filename is not None:
            for part in sorted(p for p in os.listdir(tmp) if p != "superblock"):
                os.replace(tmp / part, out.parent / part)
            os.replace(tmp / "superblock", out)
            tmp.rmdir()
            return name
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if ddir.exists():
        shutil.rmtree(ddir)
    os.rename(tmp, ddir)
    return name


def _generate_into(repo: Repo, tmp: Path, from_csum: str | None, to_csum: str,
                   opts: GenerateOptions) -> str:
    import time

    commit_bytes = repo.load_metadata_bytes(ObjectType.COMMIT, to_csum)
    candidates = _basenames(repo, from_csum) if (from_csum and opts.bsdiff) else {}
    names = _names_by_csum(repo, to_csum) if candidates else {}
    fallbacks: list[Fallback] = []
    with tempfile.TemporaryFile(dir=repo.path / "tmp") as spool:
        parts = _PartWriter(tmp, spool)
        meta_first: list[tuple[ObjectType, str]] = []
        files: list[str] = []
        for otype, csum in _new_objects(repo, from_csum, to_csum):
            if otype is ObjectType.FILE:
                files.append(csum)
            elif otype is not ObjectType.COMMIT:
                meta_first.append((otype, csum))
        for otype, csum in meta_first:
            data = repo.load_metadata_bytes(otype, csum)
            parts.make_room(len(data), opts.max_chunk_size)
            parts.builder.add_metadata(int(otype), csum, data)
        for csum in files:
            if fallback := _add_file(repo, parts, csum, candidates, names, opts):
                fallbacks.append(fallback)
        parts.flush()
    inline = None
    if opts.inline:
        inline = [(tmp / str(i)).read_bytes() for i in range(len(parts.headers))]
    detached = None
    with contextlib.suppress(ObjectNotFoundError):
        detached = repo.load_metadata_bytes(ObjectType.COMMIT_META, to_csum)
    sb = DeltaSuperblock.build(
        from_checksum=from_csum, to_checksum=to_csum, commit=commit_bytes,
        parts=parts.headers, fallbacks=fallbacks, timestamp=int(time.time()),
        inline_parts=inline, commitmeta=detached, endianness=opts.endianness)
    if inline is not None:
        for i in range(len(inline)):
            (tmp / str(i)).unlink()
    data = sb.to_bytes()
    if opts.sign_keys:
        from .sign import sign_ed25519

        data = wrap_signed_superblock(
            data, {ED25519_KEY: [sign_ed25519(key, data) for key in opts.sign_keys]})
    atomic_write(tmp / "superblock", data)
    return sb.name


def _add_file(repo: Repo, parts: _PartWriter, csum: str, candidates: dict[str, list[str]],
              names: dict[str, str], opts: GenerateOptions) -> Fallback | None:
    """Put one content object into the current part, as a bsdiff against a file of the same
    name in the from-commit when that pays, else whole; or, like ostree, return a large file
    that was not bsdiffed as a fallback object."""
    header, stream = repo.open_content(csum)
    if header.is_symlink:
        parts.make_room(0, opts.max_chunk_size)
        parts.builder.add_content(csum, header.uid, header.gid, header.mode, header.xattrs,
                                  header.symlink_target.encode())
        return None
    assert stream is not None
    with stream:
        data: bytes | None = None
        source = _bsdiff_source(repo, candidates, names.get(csum), header.size, opts)
        if source is not None:
            data = stream.read()
            patch = _bsdiff_patch(repo, source, data)
            if patch is not None:
                parts.make_room(header.size, opts.max_chunk_size)
                parts.builder.add_bsdiff(csum, header.uid, header.gid, header.mode,
                                         header.xattrs, header.size, source, patch)
                return None
        if 0 < opts.min_fallback_size < header.size and repo.mode.is_archive:
            size = repo.object_path(ObjectType.FILE, csum).stat().st_size
            return Fallback(OBJ_FILE, csum, size, header.size)
        parts.make_room(header.size, opts.max_chunk_size)
        if data is not None:
            parts.builder.add_content(csum, header.uid, header.gid, header.mode, header.xattrs,
                                      data)
        else:
            parts.builder.add_content_chunks(
                csum, header.uid, header.gid, header.mode, header.xattrs, header.size,
                iter(lambda: stream.read(_CHUNK), b""))
    return None


def _bsdiff_patch(repo: Repo, source: str, data: bytes) -> bytes | None:
    """A bsdiff patch from ``source``'s data to ``data``, or None if it would not save much."""
    from .formats.bspatch import bsdiff

    _, sstream = repo.open_content(source)
    assert sstream is not None
    with sstream:
        old = sstream.read()
    patch = bsdiff(old, data)
    del old
    # The patch is mostly zeros where the files agree: judge it compressed.
    if len(zlib.compress(patch, 1)) < len(zlib.compress(data, 1)) * 3 // 4:
        return patch
    return None


def _names_by_csum(repo: Repo, commit: str) -> dict[str, str]:
    """content csum → the first basename it appears under in a commit."""
    out: dict[str, str] = {}
    for name, csum in _commit_files(repo, commit):
        out.setdefault(csum, name)
    return out


def _bsdiff_source(repo: Repo, candidates: dict[str, list[str]], name: str | None,
                   size: int, opts: GenerateOptions) -> str | None:
    """A file of the same basename and a size within 30% (libostree's rule), else None."""
    if name is None or size > opts.max_bsdiff_size or size < 4096:
        return None
    for csum in candidates.get(name, []):
        try:
            header = repo.read_content_header(csum)
        except RepoError:
            continue
        if header.is_symlink or not header.size:
            continue
        if abs(header.size - size) * 10 <= 3 * max(size, header.size):
            return csum
    return None


def superblock_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
