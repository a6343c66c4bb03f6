"""Shared by the static-delta tests: content checksums and an in-memory delta target."""

from __future__ import annotations

import hashlib
import io
import tempfile
from typing import BinaryIO

from pyostree.deltaexec import ContentMeta, content_checksum_header
from pyostree.errors import ObjectNotFoundError
from pyostree.formats import delta as D

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_csum(meta: ContentMeta, data: bytes) -> str:
    return sha(content_checksum_header(meta) + (b"" if meta.is_symlink else data))


class MemoryDeltaTarget:
    """An in-memory :class:`~pyostree.deltaexec.DeltaTarget` that records what happens, and
    checks what the executor hands it: every object verified, small files as bytes, files past
    1 MiB as streams."""

    def __init__(self) -> None:
        self.metadata: dict[tuple[int, str], bytes] = {}
        self.content: dict[str, tuple[ContentMeta, bytes]] = {}
        self.temp_files: list[BinaryIO] = []
        self.sources: list[BinaryIO] = []
        self.source_csums: list[str] = []
        self.writes: list[str] = []

    @property
    def opened(self) -> list[BinaryIO]:
        """Every file the executor got from us: sources and temp files."""
        return self.sources + self.temp_files

    def all_closed(self) -> bool:
        return all(f.closed for f in self.opened)

    def add_content(self, meta: ContentMeta, data: bytes) -> str:
        csum = content_csum(meta, data)
        self.content[csum] = (meta, data)
        return csum

    def has_object(self, objtype: int, csum: str) -> bool:
        if objtype == D.OBJ_FILE:
            return csum in self.content
        return (objtype, csum) in self.metadata

    def open_content_source(self, csum: str) -> BinaryIO:
        if csum not in self.content:
            raise ObjectNotFoundError(f"no content object {csum}")
        meta, data = self.content[csum]
        assert not meta.is_symlink
        f = io.BytesIO(data)
        self.sources.append(f)
        self.source_csums.append(csum)
        return f

    def write_metadata_object(self, objtype: int, csum: str, data: bytes) -> None:
        assert sha(data) == csum
        self.metadata[(objtype, csum)] = data
        self.writes.append(csum)

    def write_content_object(
        self, csum: str, meta: ContentMeta, data: bytes | memoryview | BinaryIO | None
    ) -> None:
        if data is None or isinstance(data, bytes | memoryview):
            assert meta.is_symlink == (data is None) and (data is None or len(data) <= MiB)
            body = b"" if data is None else bytes(data)
        else:
            assert meta.size > MiB, "small files come as bytes"
            body = data.read()
        assert content_csum(meta, body) == csum
        self.content[csum] = (meta, body)
        self.writes.append(csum)

    def temp_file(self) -> BinaryIO:
        f = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the executor
        self.temp_files.append(f)
        return f
