"""An in-memory tree being assembled for a commit (libostree's ``OstreeMutableTree``).

``ostree commit`` overlays every ``--tree`` (and ``--base``) onto one mutable tree and then
writes its dirtree objects. A directory taken whole from an existing commit stays *lazy*: it
keeps its dirtree checksum and is only read when something changes inside it, so it is not
written again. Changing a directory forgets the cached dirtree checksum of it and of every
ancestor, exactly as ostree does (which decides what ``--generate-sizes`` lists). Pure: the
dirtree loader is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .errors import RepoError
from .formats.objects import DirTree

__all__ = ["EMPTY_DIRTREE", "DirTreeLoader", "MutableTree", "validate_entry_name"]

DirTreeLoader = Callable[[str], DirTree]
EMPTY_DIRTREE = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


def validate_entry_name(name: str) -> str:
    """``ot_util_filename_validate``, with ostree's messages."""
    if name == ".":
        raise RepoError("Invalid self-referential filename '.'")
    if name == "..":
        raise RepoError("Invalid path uplink filename '..'")
    if "/" in name:
        raise RepoError(f"Invalid / in filename {name}")
    if not name:
        raise RepoError("Invalid empty filename")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise RepoError(f"Invalid UTF-8 in filename {shown}") from None
    return name


class MutableTree:
    """One directory: files (name → content checksum), subdirectories, and the checksums of
    its dirmeta and (while unchanged) its dirtree."""

    __slots__ = ("_files", "_loader", "_subdirs", "contents_checksum", "metadata_checksum",
                 "parent")

    def __init__(self) -> None:
        self.parent: MutableTree | None = None
        self._files: dict[str, str] = {}
        self._subdirs: dict[str, MutableTree] = {}
        self.contents_checksum: str | None = None
        self.metadata_checksum: str | None = None
        self._loader: DirTreeLoader | None = None  # set while lazy

    @classmethod
    def from_dirtree(cls, loader: DirTreeLoader, contents: str, metadata: str) -> MutableTree:
        """A lazy tree standing for an existing dirtree/dirmeta pair."""
        tree = cls()
        tree._loader = loader
        tree.contents_checksum = contents
        tree.metadata_checksum = metadata
        return tree

    # ------------------------------------------------------------------ state

    @property
    def is_lazy(self) -> bool:
        return self._loader is not None

    def _make_whole(self) -> None:
        loader = self._loader
        if loader is None:
            return
        assert self.contents_checksum is not None
        dirtree = loader(self.contents_checksum)
        self._files = dict(dirtree.files)
        for name, tree_csum, meta_csum in dirtree.dirs:
            self._insert_child(name, MutableTree.from_dirtree(loader, tree_csum, meta_csum))
        self._loader = None

    def _insert_child(self, name: str, child: MutableTree) -> None:
        child.parent = self
        self._subdirs[name] = child

    def _invalidate(self) -> None:
        node: MutableTree | None = self
        while node is not None and node.contents_checksum is not None:
            node.contents_checksum = None
            node = node.parent

    @property
    def files(self) -> dict[str, str]:
        self._make_whole()
        return self._files

    @property
    def subdirs(self) -> dict[str, MutableTree]:
        self._make_whole()
        return self._subdirs

    # ------------------------------------------------------------------ changes

    def set_metadata_checksum(self, csum: str) -> None:
        if csum == self.metadata_checksum:
            return
        if self.parent is not None:
            self.parent._invalidate()
        self.metadata_checksum = csum

    def set_contents_checksum(self, csum: str) -> None:
        """Record the dirtree just written for this (whole) tree."""
        self._make_whole()
        self.contents_checksum = csum

    def replace_file(self, name: str, csum: str) -> None:
        validate_entry_name(name)
        self._make_whole()
        if name in self._subdirs:
            raise RepoError(f"Can't replace directory with file: {name}")
        self._invalidate()
        self._files[name] = csum

    def ensure_dir(self, name: str) -> MutableTree:
        validate_entry_name(name)
        self._make_whole()
        if name in self._files:
            raise RepoError(f"Can't replace file with directory: {name}")
        child = self._subdirs.get(name)
        if child is None:
            child = MutableTree()
            self._invalidate()
            self._insert_child(name, child)
        return child

    def lookup(self, name: str) -> tuple[str | None, MutableTree | None]:
        """(file checksum, subdirectory) of ``name``; raises when there is neither."""
        self._make_whole()
        sub = self._subdirs.get(name)
        if sub is not None:
            return None, sub
        csum = self._files.get(name)
        if csum is None:
            raise RepoError(f"No such file or directory: {name}")
        return csum, None

    def walk(self, components: Sequence[str], start: int = 0) -> MutableTree:
        """The directory holding the last of ``components`` (``ostree_mutable_tree_walk``)."""
        node = self
        for index in range(start, len(components) - 1):
            node._make_whole()
            sub = node._subdirs.get(components[index])
            if sub is None:
                raise RepoError(f"No such file or directory: {components[index]}")
            node = sub
        return node

    def fill_empty_from_dirtree(self, loader: DirTreeLoader, contents: str, metadata: str
                                ) -> bool:
        """Become the (lazy) tree ``contents``/``metadata`` if that needs no merge: this tree
        is empty, or either side is the empty dirtree, or both are the same dirtree."""
        if self._loader is not None:
            if contents == self.contents_checksum or self.contents_checksum == EMPTY_DIRTREE:
                pass
            elif contents == EMPTY_DIRTREE:
                contents = self.contents_checksum or contents
            else:
                return False
        elif self._files or self._subdirs:
            return False
        self._files, self._subdirs = {}, {}
        self._loader = loader
        self.set_metadata_checksum(metadata)
        if self.contents_checksum != contents:
            self._invalidate()
            self.contents_checksum = contents
        return True
