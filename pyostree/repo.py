"""Local OSTree repositories: layout, config, refs, reading objects and the repository lock.

Writing objects happens inside a :class:`~pyostree.transaction.Transaction`
(``repo.transaction()``), which stages verified objects and makes them visible only after a
filesystem sync.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import io
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import gvariant as gv
from .core import (
    ObjectType,
    is_checksum,
    loose_object_path,
    parse_refspec,
    validate_checksum,
    validate_ref,
    validate_remote_name,
)
from .errors import (
    FormatError,
    ObjectNotFoundError,
    PyOstreeError,
    RefNotFoundError,
    RepoError,
)
from .fileio import atomic_symlink, atomic_write, file_lock, fsync_dir, os_error, read_file
from .formats.content import (
    ArchiveInflater,
    FileHeader,
    archive_header_length,
    parse_archive_header,
    parse_ostreemeta,
)
from .formats.keyfile import KeyFile
from .formats.objects import (
    Commit,
    DirMeta,
    DirTree,
    parse_metadata,
    serialize_metadata,
    sort_xattrs,
)

if TYPE_CHECKING:
    from .checkout import CheckoutOptions
    from .maintenance import FsckResult
    from .pruning import PruneResult
    from .transaction import Transaction

OSTREEMETA_XATTR = "user.ostreemeta"
_CHUNK = 256 * 1024


class RepoMode(enum.Enum):
    """Repository storage modes (the ``core.mode`` config value)."""

    ARCHIVE = "archive-z2"
    BARE = "bare"
    BARE_USER = "bare-user"
    BARE_USER_ONLY = "bare-user-only"

    @classmethod
    def parse(cls, text: str) -> RepoMode:
        if text == "archive":
            return cls.ARCHIVE
        for mode in cls:
            if mode.value == text:
                return mode
        raise RepoError(f"unsupported repository mode {text!r}")

    @property
    def is_archive(self) -> bool:
        return self is RepoMode.ARCHIVE


def read_xattrs(path: str | int, *, follow_symlinks: bool = False) -> list[tuple[bytes, bytes]]:
    """All xattrs of a file, except ``user.ostreemeta``; [] where xattrs are unsupported."""
    try:
        names = os.listxattr(path, follow_symlinks=follow_symlinks)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return []
        raise
    result = []
    for name in names:
        if name == OSTREEMETA_XATTR:
            continue
        try:
            result.append(
                (name.encode(), os.getxattr(path, name, follow_symlinks=follow_symlinks))
            )
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    return result


class InflatingReader(io.RawIOBase):
    """A read-only file object over a ``.filez`` body, inflating as it goes (bounded memory)."""

    def __init__(self, raw: IO[bytes], size: int) -> None:
        self._raw = raw
        self._inflater = ArchiveInflater(size)
        self._pieces: Iterator[bytes] = iter(())
        self._buffer = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._buffer and not self._done:
            piece = next(self._pieces, None)
            if piece is not None:
                self._buffer = memoryview(piece)
                continue
            chunk = self._raw.read(_CHUNK)
            if not chunk:
                self._inflater.finish()
                self._done = True
                break
            self._pieces = self._inflater.chunks(chunk)
        n = min(len(view), len(self._buffer))
        view[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class Repo:
    """An OSTree repository on the local filesystem."""

    def __init__(self, path: Path, config: KeyFile) -> None:
        self.path = path
        self.config = config
        self.mode = RepoMode.parse(config.get("core", "mode", "bare") or "bare")
        self.objects_dir = path / "objects"
        # A plain-string prefix for the per-object hot paths (pathlib costs ~20 us a join).
        self._prefix = f"{path}/"
        self.tmp_dir = path / "tmp"
        self.state_dir = path / "state"

    # ------------------------------------------------------------------ creation / opening

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], mode: RepoMode = RepoMode.BARE, *,
        collection_id: str | None = None,
    ) -> Repo:
        """Initialise a repository like ``ostree init`` (existing repos are left as they are)."""
        root = Path(path)
        if (root / "config").exists():
            repo = cls.open(root)
            if repo.mode is not mode:
                raise RepoError(
                    f"repository {root} already exists with mode {repo.mode.value}", path=str(root)
                )
            return repo
        try:
            for sub in ("objects", "tmp", "extensions", "state", "refs/heads", "refs/mirrors",
                        "refs/remotes"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            config = KeyFile.parse("")
            config.set("core", "repo_version", "1")
            config.set("core", "mode", mode.value)
            if collection_id:
                config.set("core", "collection-id", collection_id)
            atomic_write(root / "config", config.to_text().encode())
        except OSError as exc:
            raise os_error(exc, f"creating repository {root}") from exc
        return cls(root, config)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Repo:
        root = Path(path)
        try:
            text = (root / "config").read_text()
        except FileNotFoundError:
            raise RepoError(
                f"{root} is not an OSTree repository (no config)", path=str(root)
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RepoError(f"cannot read {root}/config: {exc}", path=str(root)) from exc
        config = KeyFile.parse(text)
        version = config.get("core", "repo_version", None)
        if version != "1":
            raise RepoError(f"unsupported repo_version {version!r} in {root}/config")
        if not (root / "objects").is_dir():
            raise RepoError(f"{root} is not an OSTree repository (no objects/)", path=str(root))
        return cls(root, config)

    def save_config(self) -> None:
        atomic_write(self.path / "config", self.config.to_text().encode())

    def __repr__(self) -> str:
        return f"Repo({str(self.path)!r}, mode={self.mode.value})"

    @contextlib.contextmanager
    def lock(self, *, exclusive: bool = True, timeout: float | None = None) -> Iterator[None]:
        """The repository lock (flock on ``.lock``), shared for readers, exclusive for writers."""
        if timeout is None:
            timeout = float(self.config.get("core", "lock-timeout-secs", "300") or 300)
        with file_lock(self.path / ".lock", exclusive=exclusive, timeout=timeout,
                       what=f"repository {self.path}"):
            yield

    def transaction(self) -> Transaction:
        from .transaction import Transaction

        return Transaction(self)

    # ------------------------------------------------------------------ high-level operations
    # Thin conveniences over the modules that implement them (see each for the details).

    def commit(self, src: str | os.PathLike[str], **kwargs: Any) -> str:
        """``ostree commit``: see :func:`pyostree.commit.commit_tree`."""
        from .commit import commit_tree

        return commit_tree(self, src, **kwargs)

    def checkout(self, rev: str, dest: str | os.PathLike[str],
                 options: CheckoutOptions | None = None) -> str:
        """``ostree checkout``: see :func:`pyostree.checkout.checkout`."""
        from .checkout import checkout

        return checkout(self, rev, dest, options)

    def fsck(self, *, delete: bool = False) -> FsckResult:
        """``ostree fsck``: see :func:`pyostree.maintenance.fsck`."""
        from .maintenance import fsck

        return fsck(self, delete=delete)

    def prune(self, **kwargs: Any) -> PruneResult:
        """``ostree prune``: see :func:`pyostree.pruning.prune`."""
        from .pruning import prune

        return prune(self, **kwargs)

    # ------------------------------------------------------------------ objects

    def object_path(self, objtype: ObjectType, csum: str) -> Path:
        return Path(self.object_file(objtype, csum))

    def object_file(self, objtype: ObjectType, csum: str) -> str:
        """:meth:`object_path` as a string, built without pathlib (for per-object loops)."""
        return self._prefix + loose_object_path(csum, objtype, archive=self.mode.is_archive)

    def has_object(self, objtype: ObjectType, csum: str) -> bool:
        return os.path.lexists(self.object_path(objtype, csum))

    def load_metadata_bytes(self, objtype: ObjectType, csum: str) -> bytes:
        path = self.object_file(objtype, validate_checksum(csum))
        try:
            return read_file(path)
        except FileNotFoundError:
            raise ObjectNotFoundError(
                f"no such {objtype.extension} object {csum}", path=str(path)
            ) from None
        except OSError as exc:
            raise os_error(exc, f"reading {path}") from exc

    def load_commit(self, csum: str) -> Commit:
        data = self.load_metadata_bytes(ObjectType.COMMIT, csum)
        with _naming_object(ObjectType.COMMIT, csum):
            return Commit.from_bytes(data)

    def load_dirtree(self, csum: str) -> DirTree:
        data = self.load_metadata_bytes(ObjectType.DIRTREE, csum)
        with _naming_object(ObjectType.DIRTREE, csum):
            return DirTree.from_bytes(data)

    def load_dirmeta(self, csum: str) -> DirMeta:
        data = self.load_metadata_bytes(ObjectType.DIRMETA, csum)
        with _naming_object(ObjectType.DIRMETA, csum):
            return DirMeta.from_bytes(data)

    def load_detached_metadata(self, csum: str) -> dict[str, gv.Variant] | None:
        try:
            data = self.load_metadata_bytes(ObjectType.COMMIT_META, csum)
        except ObjectNotFoundError:
            return None
        with _naming_object(ObjectType.COMMIT_META, csum):
            return parse_metadata(data)

    def write_detached_metadata(self, csum: str, metadata: dict[str, gv.Variant] | None) -> None:
        """Replace a commit's detached metadata (``.commitmeta``) atomically; None deletes it."""
        path = self.object_path(ObjectType.COMMIT_META, csum)
        if metadata is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, serialize_metadata(metadata))

    def read_content_header(self, csum: str) -> FileHeader:
        header, stream = self.open_content(csum)
        if stream is not None:
            stream.close()
        return header

    def open_content(self, csum: str) -> tuple[FileHeader, IO[bytes] | None]:
        """Header and data stream (None for symlinks) of a content object in any mode."""
        path = self.object_file(ObjectType.FILE, validate_checksum(csum))
        try:
            if self.mode.is_archive:
                return self._open_archive_content(path)
            st = os.lstat(path)
            if self.mode is RepoMode.BARE_USER:
                meta = os.getxattr(path, OSTREEMETA_XATTR, follow_symlinks=False)
                uid, gid, mode, xattrs = parse_ostreemeta(meta)
                if stat.S_ISLNK(mode):
                    with open(path, "rb") as fh:
                        raw = fh.read(8192)
                    return FileHeader(uid, gid, mode, bare_user_symlink_target(raw, csum)), None
                return FileHeader(uid, gid, mode, "", xattrs, st.st_size), open(path, "rb")
            if self.mode is RepoMode.BARE_USER_ONLY:
                if stat.S_ISLNK(st.st_mode):
                    return FileHeader(0, 0, st.st_mode, read_symlink(path, csum)), None
                return FileHeader(0, 0, st.st_mode, "", (), st.st_size), open(path, "rb")
            xattrs = sort_xattrs(read_xattrs(str(path)))
            if stat.S_ISLNK(st.st_mode):
                link = read_symlink(path, csum)
                return FileHeader(st.st_uid, st.st_gid, st.st_mode, link, xattrs), None
            return (
                FileHeader(st.st_uid, st.st_gid, st.st_mode, "", xattrs, st.st_size),
                open(path, "rb"),
            )
        except FileNotFoundError:
            raise ObjectNotFoundError(f"no such file object {csum}", path=str(path)) from None
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                raise FormatError(f"file object {csum} lacks {OSTREEMETA_XATTR}") from exc
            raise os_error(exc, f"reading {path}") from exc

    @staticmethod
    def _open_archive_content(path: str) -> tuple[FileHeader, IO[bytes] | None]:
        fh = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
        try:
            prefix = fh.read(8)
            length = archive_header_length(prefix)
            rest = fh.read(length - 8)
            header, _ = parse_archive_header(prefix + rest)
        except BaseException:
            fh.close()
            raise
        if header.is_symlink:
            fh.close()
            return header, None
        return header, io.BufferedReader(InflatingReader(fh, header.size), _CHUNK)

    def iter_objects(self) -> Iterator[tuple[str, ObjectType]]:
        """Every loose object: (checksum, type)."""
        try:
            prefixes = sorted(os.listdir(self.objects_dir))
        except OSError as exc:
            raise os_error(exc, f"listing {self.objects_dir}") from exc
        for prefix in prefixes:
            if len(prefix) != 2:
                continue
            for name in os.listdir(self.objects_dir / prefix):
                stem, _, ext = name.partition(".")
                csum = prefix + stem
                if not is_checksum(csum):
                    continue
                try:
                    otype = ObjectType.from_extension(ext)
                except FormatError:
                    continue
                yield csum, otype

    # ------------------------------------------------------------------ commitpartial

    def partial_marker(self, csum: str) -> Path:
        return self.state_dir / f"{validate_checksum(csum)}.commitpartial"

    def is_partial(self, csum: str) -> bool:
        return self.partial_marker(csum).exists()

    def mark_partial(self, csum: str) -> None:
        self.state_dir.mkdir(exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(self.partial_marker(csum), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)

    def clear_partial(self, csum: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.partial_marker(csum).unlink()

    # ------------------------------------------------------------------ refs

    def _ref_path(self, refspec: str) -> Path:
        remote, ref = parse_refspec(refspec)
        if remote is None:
            return self.path / "refs" / "heads" / ref
        return self.path / "refs" / "remotes" / remote / ref

    def list_refs(self, prefix: str | None = None, *, remotes: bool = True,
                  mirrors: bool = False) -> dict[str, str]:
        """Refs as ``name``/``remote:name`` (``collection:name`` for mirrors) → checksum."""
        result: dict[str, str] = {}
        heads = self.path / "refs" / "heads"
        for name, csum in _walk_refs(heads):
            result[name] = csum
        if remotes:
            rdir = self.path / "refs" / "remotes"
            if rdir.is_dir():
                for remote in sorted(os.listdir(rdir)):
                    for name, csum in _walk_refs(rdir / remote):
                        result[f"{remote}:{name}"] = csum
        if mirrors:
            mdir = self.path / "refs" / "mirrors"
            if mdir.is_dir():
                for coll in sorted(os.listdir(mdir)):
                    for name, csum in _walk_refs(mdir / coll):
                        result[f"({coll}, {name})"] = csum
        if prefix:
            result = {k: v for k, v in result.items()
                      if k == prefix or k.startswith(prefix.rstrip("/") + "/")
                      or k.startswith(prefix)}
        return dict(sorted(result.items()))

    def set_ref(self, refspec: str, csum: str | None, *, fsync: bool = True) -> None:
        """Create, move or (``csum=None``) delete a ref; written atomically (and durably,
        unless ``fsync`` is false)."""
        path = self._ref_path(refspec)
        if csum is None:
            try:
                path.unlink()
            except FileNotFoundError:
                raise RefNotFoundError(f"ref {refspec} not found") from None
            return
        validate_checksum(csum)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, f"creating {path.parent}") from exc
        atomic_write(path, f"{csum}\n".encode(), fsync=fsync)

    def list_collection_refs(self, collection_id: str | None = None, *,
                             remotes: bool = True) -> dict[tuple[str, str], str]:
        """Refs as ``(collection ID, ref)`` → checksum, as ``ostree_repo_list_collection_refs``
        finds them: ``refs/heads`` under the repository's own ``core.collection-id``,
        ``refs/mirrors/COLLECTION/``, and (with ``remotes``) the refs of each remote whose
        ``config`` group has a ``collection-id``. ``collection_id`` keeps only that one."""
        if collection_id is not None:
            validate_collection_id(collection_id)
        found: dict[tuple[str, str], str] = {}
        refs = self.path / "refs"
        main = self.config.get("core", "collection-id", None)
        if main and collection_id in (None, main):
            for name, csum in _walk_refs(refs / "heads"):
                found[(main, name)] = csum
        sources: list[tuple[str, Path]] = []
        if (refs / "mirrors").is_dir():
            sources += [(coll, refs / "mirrors" / coll) for coll in os.listdir(refs / "mirrors")]
        if remotes and (refs / "remotes").is_dir():
            for remote in os.listdir(refs / "remotes"):
                coll = self.config.get(f'remote "{remote}"', "collection-id", None)
                if coll and is_collection_id(coll):
                    sources.append((coll, refs / "remotes" / remote))
        for coll, directory in sources:
            if collection_id not in (None, coll):
                continue
            for name, csum in _walk_refs(directory):
                found[(coll, name)] = csum
        return dict(sorted(found.items()))

    def set_collection_ref(self, collection_id: str, ref: str, csum: str | None) -> None:
        """Write (or with None delete) a collection ref where ostree keeps it: ``refs/heads``
        for the repository's own collection ID, ``refs/mirrors/COLLECTION`` for any other."""
        validate_collection_id(collection_id)
        validate_ref(ref)
        if collection_id == self.config.get("core", "collection-id", None):
            path = self.path / "refs" / "heads" / ref
        else:
            path = self.path / "refs" / "mirrors" / collection_id / ref
        if csum is None:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                path.unlink()
            return
        validate_checksum(csum)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, f"creating {path.parent}") from exc
        atomic_write(path, f"{csum}\n".encode())

    def list_ref_aliases(self, prefix: str | None = None) -> dict[str, str]:
        """Ref aliases (refs that are symlinks to another ref) → the ref each names, as
        ``ostree refs --alias [PREFIX]`` lists them (names not cut; remote ones as
        ``remote:name``). As in ostree, a PREFIX naming a single ref, alias or not, lists
        that ref with its checksum."""
        roots: list[tuple[str, Path]] = [("", self.path / "refs" / "heads")]
        rdir = self.path / "refs" / "remotes"
        if rdir.is_dir():
            roots += [(f"{r}:", rdir / r) for r in sorted(os.listdir(rdir))]
        if prefix is not None:
            try:
                remote, ref = parse_refspec(prefix)
            except FormatError:
                return {}
            scope = f"{remote}:" if remote else ""
            base = self._ref_path(prefix)
            if base.is_dir() and not base.is_symlink():
                roots = [(f"{scope}{ref}/", base)]
            else:
                csum = self.read_ref(prefix) if os.path.lexists(base) else None
                return {prefix: csum} if csum else {}
        found: dict[str, str] = {}
        for scope, root in roots:
            for name, target in _walk_aliases(root):
                found[scope + name] = target
        return dict(sorted(found.items()))

    def set_ref_alias(self, name: str, target: str) -> None:
        """Make the local ref ``name`` an alias of the local ref ``target``: a relative symlink
        ``refs/heads/NAME`` → ``TARGET``, as ``ostree refs --create=NAME --alias TARGET``
        writes it. Refused when ``target`` is no ref, is a remote ref, or when the alias
        would close a loop of aliases (which makes every ref listing fail in ostree)."""
        remote, ref = parse_refspec(name)
        if remote is not None:
            raise RepoError(f"Cannot create alias to remote ref: {remote}")
        t_remote, t_ref = parse_refspec(target)
        if t_remote is not None:
            raise RepoError(f"Cannot create alias to remote ref: {target}")
        if self.read_ref(t_ref) is None:
            raise RepoError(f"Cannot create alias to non-existent ref: {target}")
        heads = self.path / "refs" / "heads"
        chain = [ref]
        current = t_ref
        while True:
            if current in chain:
                loop = " -> ".join([*chain, current])
                raise RepoError(f"Cannot create alias {ref}: it would make a loop ({loop})")
            chain.append(current)
            path = heads / current
            if not path.is_symlink():
                break
            current = _alias_target(os.readlink(path))
        link = heads / ref
        try:
            link.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, f"creating {link.parent}") from exc
        atomic_symlink("../" * ref.count("/") + t_ref, link)
        fsync_dir(link.parent)

    def set_mirror_ref(self, collection_id: str, ref: str, csum: str) -> None:
        path = self.path / "refs" / "mirrors" / collection_id / validate_ref(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, f"{validate_checksum(csum)}\n".encode())

    def read_ref(self, refspec: str) -> str | None:
        try:
            path = self._ref_path(refspec)
        except FormatError:
            return None
        try:
            text = path.read_text().strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise RepoError(f"cannot read ref {refspec}: {exc}") from exc
        if not is_checksum(text):
            raise RepoError(f"ref {refspec} is corrupt: {text[:80]!r}", path=str(path))
        return text

    def resolve_rev(self, rev: str, *, allow_noent: bool = False) -> str | None:
        """Resolve a ref, ``remote:ref``, checksum (or unique prefix) and ``^`` suffixes."""
        base = rev
        parents = 0
        while base.endswith("^"):
            base = base[:-1]
            parents += 1
        csum = self._resolve_base(base)
        if csum is None:
            if allow_noent:
                return None
            raise RefNotFoundError(f"refspec '{rev}' not found")
        for _ in range(parents):
            parent = self.load_commit(csum).parent
            if parent is None:
                raise RefNotFoundError(f"commit {csum} has no parent")
            csum = parent
        return csum

    def _resolve_base(self, rev: str) -> str | None:
        # The order is ostree's: a full checksum, a unique checksum prefix (even when a ref of
        # that name exists), a local ref, "remote/ref", then a ref of that name in one remote.
        if is_checksum(rev):
            return rev
        if re.fullmatch(r"[0-9a-f]{1,63}", rev):
            hits = self._commits_with_prefix(rev)
            if len(hits) > 1:
                raise RefNotFoundError(f"refspec {rev} is not unique")
            if hits:
                return hits[0]
        with contextlib.suppress(FormatError):
            found = self.read_ref(rev)
            if found:
                return found
            if ":" not in rev:
                remote, sep, ref = rev.partition("/")
                if sep and is_ref_name(ref):
                    found = self.read_ref(f"{remote}:{ref}")
                    if found:
                        return found
                # A bare name may also name exactly one remote ref.
                matches = [c for name, c in self.list_refs().items()
                           if name.split(":", 1)[-1] == rev and ":" in name]
                if len(matches) == 1:
                    return matches[0]
        return None

    def _commits_with_prefix(self, prefix: str) -> list[str]:
        hits: list[str] = []
        try:
            subdirs = [d for d in os.listdir(self.objects_dir) if len(d) == 2
                       and d.startswith(prefix[:2])]
        except OSError as exc:
            raise os_error(exc, f"listing {self.objects_dir}") from exc
        for sub in sorted(subdirs):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                for name in os.listdir(self.objects_dir / sub):
                    stem, _, ext = name.partition(".")
                    csum = sub + stem
                    if ext == "commit" and csum.startswith(prefix) and is_checksum(csum):
                        hits.append(csum)
        return hits

    # ------------------------------------------------------------------ remotes

    def remote_names(self) -> list[str]:
        names = []
        for group in self.config.groups():
            m = re.fullmatch(r'remote "(.+)"', group)
            if m:
                names.append(validate_remote_name(m.group(1)))
        return names


def utf8_target(raw: bytes, csum: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"symlink object {csum} has a target that is not UTF-8") from None


def bare_user_symlink_target(raw: bytes, name: str) -> str:
    """The target a bare-user symlink object stores as its data: UTF-8 and one final NUL."""
    if not raw.endswith(b"\0") or b"\0" in raw[:-1]:
        raise FormatError(f"bare-user symlink object {name} lacks its NUL")
    return utf8_target(raw[:-1], name)


def read_symlink(path: str | Path, csum: str) -> str:
    """A symlink's target, which OSTree needs to be UTF-8."""
    return utf8_target(os.readlink(os.fsencode(path)), csum)


@contextlib.contextmanager
def _naming_object(objtype: ObjectType, csum: str) -> Iterator[None]:
    """Say which stored object a FormatError is about (loading does not re-hash it)."""
    try:
        yield
    except FormatError as exc:
        raise FormatError(f"corrupted {objtype.extension} object {csum}: {exc}") from exc


def is_ref_name(name: str) -> bool:
    try:
        validate_ref(name)
    except FormatError:
        return False
    return True


def _ref_files(root: Path) -> Iterator[tuple[str, str]]:
    """(ref name, path) of every file under a refs directory, sorted, dot files left out."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for fname in sorted(filenames):
            if not fname.startswith("."):
                yield (fname if rel == "." else f"{rel}/{fname}"), os.path.join(dirpath, fname)


def _walk_refs(root: Path) -> Iterator[tuple[str, str]]:
    """(ref name, checksum) of every ref under a refs directory (aliases resolve to theirs)."""
    for name, path in _ref_files(root):
        try:
            text = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if is_checksum(text):
            yield name, text


def _alias_target(link: str) -> str:
    """The ref an alias symlink names: its target less the leading ``../`` (ostree's rule)."""
    while link.startswith("../"):
        link = link[3:]
    return link


def _walk_aliases(root: Path) -> Iterator[tuple[str, str]]:
    """(alias name, ref it names) for every symlink under a refs directory."""
    for name, path in _ref_files(root):
        if os.path.islink(path):
            with contextlib.suppress(OSError):
                yield name, _alias_target(os.readlink(path))


_COLLECTION_ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def is_collection_id(text: str) -> bool:
    """A collection ID is a reverse-DNS name (D-Bus interface name rules, as ostree checks)."""
    return len(text) <= 255 and bool(_COLLECTION_ID_RE.fullmatch(text))


def validate_collection_id(text: str) -> str:
    if not is_collection_id(text):
        raise FormatError(f"Invalid collection ID {text}")
    return text


def open_repo(path: str | os.PathLike[str]) -> Repo:
    """Open a repository, translating any failure into a pyostree error."""
    try:
        return Repo.open(path)
    except PyOstreeError:
        raise
    except OSError as exc:
        raise os_error(exc, f"opening repository {path}") from exc


def fsync_tree_dirs(paths: set[Path]) -> None:
    for p in sorted(paths):
        with contextlib.suppress(OSError):
            fsync_dir(p)
