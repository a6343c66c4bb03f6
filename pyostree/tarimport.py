"""``ostree commit --tree=tar=FILE``: a tarball overlaid onto the commit's tree, streamed.

The archive is read once, front to back (``tarfile`` stream mode, plain or gzip/bzip2/xz
compressed), each member's data going straight into its content object; nothing but the
member being read is held in memory. The rules are libostree's importer
(``ostree-repo-libarchive.c``):

* names are made relative (leading ``/``, ``/../``, ``./`` dropped) and may not contain ``..``;
  ``--tar-pathname-filter`` rewrites them after that;
* a member whose parent is missing is an error, unless ``--tar-autocreate-parents``: then the
  root and every ancestor get a dirmeta 0755 owned by the member's (unfiltered) owner, even the
  ones that existed;
* hard links are resolved at the end, to the checksum of their target (or of a link that
  carried the data); devices, fifos and sockets are refused;
* xattrs come from ``SCHILY.xattr.*`` and ``LIBARCHIVE.xattr.*`` pax records, unless
  ``--no-xattrs`` (or a bare-user-only repository); they are sorted, as every checksummed xattr
  list in pyostree is;
* with ``--tar-autocreate-parents``, an archive that set no root metadata gets a root 0755
  owned by 0:0 (through the filter).
"""

from __future__ import annotations

import base64
import stat
import tarfile
import urllib.parse
import zlib
from collections.abc import Callable, Iterable
from typing import IO, Self

import attrs

from .commitmodifier import CommitModifier, FileInfo
from .errors import PyOstreeError, RepoError
from .formats.content import FileHeader
from .formats.objects import Xattrs, sort_xattrs
from .mtree import MutableTree
from .treewriter import TreeWriter

__all__ = ["import_tar", "path_relative", "split_path"]

_CHUNK = 256 * 1024
_DEFAULT_DIRMODE = stat.S_IFDIR | 0o755
_PATH_MAX = 4096


def path_relative(src: str) -> str:
    """libostree's ``path_relative``: drop leading ``/``, ``/../`` and ``./``; a lone ``.`` is
    the root (the empty string); any ``..`` left is an error."""
    i = 0
    while src[i:i + 1] == "/":
        i += 1
        if src[i:i + 3] == "../":
            i += 2
    while True:
        if src[i:i + 2] == "./":
            i += 2
        elif src[i:i + 1] == "/":
            i += 1
        else:
            break
    if src[i:] == ".":
        i += 1
    rest = src[i:]
    try:
        split_path(rest)
    except RepoError as exc:
        raise RepoError(f"While making relative path \"{rest}\":{exc}") from None
    return rest


def split_path(path: str) -> list[str]:
    """``ot_util_path_split_validate``: components without ``.`` and empty ones."""
    if len(path.encode("utf-8", "surrogateescape")) > _PATH_MAX:
        raise RepoError(f"Path '{path}' is too long")
    parts = path.split("/")
    if ".." in parts:
        raise RepoError(f"Invalid uplink '..' in path {path}")
    return [p for p in parts if p not in ("", ".")]


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


def _squash_trailing_slashes(path: str) -> str:
    end = len(path)
    while end > 1 and path[end - 1] == "/":
        end -= 1
    return path[:end]


def _xattrs(member: tarfile.TarInfo) -> Xattrs:
    found: dict[bytes, bytes] = {}
    for key, value in member.pax_headers.items():
        raw = value.encode("utf-8", "surrogateescape")
        if key.startswith("SCHILY.xattr."):
            found.setdefault(key[len("SCHILY.xattr."):].encode("utf-8", "surrogateescape"), raw)
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote_to_bytes(key[len("LIBARCHIVE.xattr."):])
            try:
                found[name] = base64.b64decode(raw + b"=" * (-len(raw) % 4))
            except ValueError:
                raise RepoError(f"invalid LIBARCHIVE.xattr record for {member.name}") from None
    return sort_xattrs(found.items())


def _header_errors(name: str) -> tuple[type[BaseException], ...]:
    found = getattr(tarfile, name, None)  # not in tarfile's public API (nor typeshed)
    return (found,) if isinstance(found, type) and issubclass(found, BaseException) else ()


_TRUNCATED = _header_errors("TruncatedHeaderError")
_INVALID = _header_errors("InvalidHeaderError")


class _StrictTarInfo(tarfile.TarInfo):
    """libarchive's strictness: after the first member ``tarfile`` takes a partial or damaged
    header block for the end of the archive; those are errors. (An archive that ends at a
    block boundary without its zero blocks is accepted, as libarchive accepts it.)"""

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(archive)
        except _TRUNCATED:
            raise tarfile.ReadError("truncated header") from None
        except _INVALID as exc:
            raise tarfile.ReadError(f"damaged tar archive: {exc}") from None


@attrs.define
class _Link:
    parent: MutableTree
    path: str
    size: int


class _TarImporter:
    def __init__(self, writer: TreeWriter, root: MutableTree, modifier: CommitModifier, *,
                 autocreate_parents: bool, translate: Callable[[str], str] | None) -> None:
        self.writer = writer
        self.root = root
        self.mod = modifier
        self.autocreate = autocreate_parents
        self.translate = translate
        self.links: dict[str, list[_Link]] = {}
        self.count = 0  # members read

    def final_path(self, name: str) -> str:
        path = path_relative(name)
        return self.translate(path) if self.translate is not None else path

    def run(self, archive: tarfile.TarFile) -> None:
        while True:
            member = archive.next()
            if member is None:
                break
            kept = getattr(archive, "members", None)  # stream mode keeps every TarInfo
            if isinstance(kept, list):
                kept.clear()
            self.count += 1
            self.member(archive, member)
        for target, links in self.links.items():
            try:
                self.resolve_links(target, links)
            except RepoError as exc:
                raise RepoError(f"ostree-tar: Processing deferred hardlink {target}: {exc}"
                                ) from None
        if self.autocreate and self.root.metadata_checksum is None:
            info, _ = self.mod.modify("/", FileInfo(0, 0, _DEFAULT_DIRMODE))
            self.root.set_metadata_checksum(self.writer.write_dirmeta(
                info.uid, info.gid, info.mode, ()))

    def member(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        if member.isdir() and name not in ("", ".") and not name.endswith("/"):
            name += "/"  # tarfile drops the slash libarchive (and the filter) sees
        path = _squash_trailing_slashes(self.final_path(name))
        if member.issym():
            kind = stat.S_IFLNK
        elif member.isdir():
            kind = stat.S_IFDIR
        elif member.isreg() or member.islnk():
            kind = stat.S_IFREG
        elif member.ischr():
            kind = stat.S_IFCHR
        elif member.isblk():
            kind = stat.S_IFBLK
        else:
            kind = stat.S_IFIFO
        mode = (member.mode & ~0o170000 & 0xFFFFFFFF) | kind
        size = member.size if kind == stat.S_IFREG else 0
        uid, gid = member.uid & 0xFFFFFFFF, member.gid & 0xFFFFFFFF
        info = self.mod.apply("/" + path.lstrip("/"), FileInfo(uid, gid, mode, size))
        if info is None:
            return
        parent = self.parent_dir(path, member)
        if kind == stat.S_IFDIR:
            xattrs = self.xattrs(member)
            base = _basename(path)
            dest = parent if base == "" else parent.ensure_dir(base)
            dest.set_metadata_checksum(
                self.writer.write_dirmeta(info.uid, info.gid, info.mode, xattrs))
        elif kind in (stat.S_IFREG, stat.S_IFLNK):
            hardlink = self.final_path(member.linkname) if member.islnk() else None
            if hardlink is None or info.size > 0:
                self.write_file(archive, member, parent, path, info)
            if hardlink is not None:
                self.links.setdefault(hardlink, []).append(_Link(parent, path, info.size))
        else:
            raise RepoError(f"Unsupported file type for path \"{path}\"")

    def xattrs(self, member: tarfile.TarInfo) -> Xattrs:
        return () if self.mod.tar_skip_xattrs else _xattrs(member)

    def write_file(self, archive: tarfile.TarFile, member: tarfile.TarInfo,
                   parent: MutableTree, path: str, info: FileInfo) -> None:
        xattrs = self.xattrs(member)
        if stat.S_ISLNK(info.mode):
            target = member.linkname
            try:
                target.encode("utf-8")
            except UnicodeEncodeError:
                raise RepoError(f"ostree-tar: {path}: symlink target is not valid UTF-8 "
                                "(OSTree cannot store it)") from None
            header = FileHeader(info.uid, info.gid, info.mode, target, xattrs)
            chunks: Iterable[bytes] = ()
        else:
            header = FileHeader(info.uid, info.gid, info.mode, "", xattrs, info.size)
            data = archive.extractfile(member)
            chunks = () if data is None else _chunks(data)
        try:
            csum = self.writer.write_content(header, chunks)
        except PyOstreeError as exc:
            raise RepoError(f"ostree-tar: Failed to import file {path}: {exc}") from None
        parent.replace_file(_basename(path), csum)

    def parent_dir(self, path: str, member: tarfile.TarInfo) -> MutableTree:
        components = split_path(path)
        if not components:
            return self.root
        try:
            return self.root.walk(components)
        except RepoError:
            if not self.autocreate:
                raise
        # Not in the archive: the root and every ancestor get the member's owner, mode 0755.
        node = self.root
        node.set_metadata_checksum(self.parent_meta(member))
        for name in components[:-1]:
            node = node.ensure_dir(name)
            node.set_metadata_checksum(self.parent_meta(member))
        return node

    def parent_meta(self, member: tarfile.TarInfo) -> str:
        return self.writer.write_dirmeta(member.uid & 0xFFFFFFFF, member.gid & 0xFFFFFFFF,
                                         _DEFAULT_DIRMODE, ())

    def resolve_links(self, target: str, links: list[_Link]) -> None:
        payload = next((link for link in links if link.size > 0), None)
        components = split_path(target)
        if payload is not None:
            csum, _ = payload.parent.lookup(_basename(payload.path))
            assert csum is not None
            self.root.walk(components).replace_file(_basename(target), csum)
        try:
            csum, sub = self.root.walk(components).lookup(_basename(target))
        except RepoError as exc:
            raise RepoError(f"Failed to find object: {exc}") from None
        if sub is not None or csum is None:
            raise RepoError(f"Expected hardlink file target at \"{target}\" but found a "
                            "directory")
        for link in links:
            if link is not payload:
                link.parent.replace_file(_basename(link.path), csum)


def _chunks(stream: IO[bytes]) -> Iterable[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


def import_tar(writer: TreeWriter, fileobj: IO[bytes], mtree: MutableTree,
               modifier: CommitModifier, *, name: str, autocreate_parents: bool = False,
               translate: Callable[[str], str] | None = None) -> None:
    """Overlay the tarball read from ``fileobj`` (called ``name`` in errors) onto ``mtree``."""
    importer = _TarImporter(writer, mtree, modifier, autocreate_parents=autocreate_parents,
                            translate=translate)
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*", tarinfo=_StrictTarInfo) as archive:
            importer.run(archive)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if importer.count == 0 and isinstance(exc, tarfile.TarError):
            raise RepoError(f"ostree-tar: {name}: not a tar archive (plain, gzip, bzip2 or xz)"
                            f": {exc}") from None
        raise RepoError(f"ostree-tar: {name}: {_tar_error(exc)}") from None
    except ValueError as exc:  # lzma/bz2 decompressors report corrupt data this way
        raise RepoError(f"ostree-tar: {name}: {exc}") from None


def _tar_error(exc: BaseException) -> str:
    if str(exc) in ("empty header", "truncated header", "unexpected end of data"):
        return f"truncated tar archive ({exc})"
    if isinstance(exc, OSError) and not isinstance(exc, tarfile.TarError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
