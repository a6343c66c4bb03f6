"""The order in which GLib enumerates a directory (``g_file_enumerate_children`` on Linux),
which ostree's outputs follow wherever it walks a directory on disk (``ostree diff``,
``ostree admin config-diff``): ``readdir`` order, cut into chunks of 1000 entries, each chunk
sorted by glibc's ``qsort`` with GLib's ``sort_by_inode``. That comparison truncates the
difference of two inode numbers to a C int, so when they lie 2**31 or more apart it is not a
total order and only glibc's own merge sort gives GLib's result."""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["glib_enumeration_order", "glib_listdir"]

CHUNK = 1000  # CHUNK_SIZE of GLib's local file enumerator


def _inode_cmp(a: int, b: int) -> int:
    """GLib's ``sort_by_inode``: ``(int)(a - b)``, truncation included."""
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d & 0x80000000 else d


def _glibc_msort(items: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """glibc's ``qsort`` (a top-down merge sort) by inode with :func:`_inode_cmp`."""
    if len(items) <= 1:
        return items
    half = len(items) // 2
    left, right = _glibc_msort(items[:half]), _glibc_msort(items[half:])
    out: list[tuple[str, int]] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if _inode_cmp(left[i][1], right[j][1]) <= 0:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    return out + left[i:] + right[j:]


def glib_enumeration_order(entries: Sequence[tuple[str, int]]) -> list[str]:
    """The names of ``(name, inode)`` entries, given in ``readdir`` order, in GLib's order."""
    names: list[str] = []
    for start in range(0, len(entries), CHUNK):
        chunk = list(entries[start:start + CHUNK])
        inodes = [inode for _, inode in chunk]
        if max(inodes) - min(inodes) < 1 << 31:  # a total order: any stable sort agrees
            chunk.sort(key=lambda e: e[1])
        else:
            chunk = _glibc_msort(chunk)
        names += [name for name, _ in chunk]
    return names


def glib_listdir(path: str | os.PathLike[str]) -> list[str]:
    """The names in directory ``path``, in the order GLib enumerates them."""
    with os.scandir(path) as it:
        return glib_enumeration_order([(e.name, e.inode()) for e in it])
