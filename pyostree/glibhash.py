"""The order in which GLib's ``GHashTable`` (and so ``GVariantDict``) iterates string keys.

Wherever ostree builds an ``a{sv}`` through a ``GVariantDict`` (``--bootable`` commit metadata,
signatures appended to detached metadata), the keys come out in hash-table bucket order, not in
insertion order, and the order is part of the bytes being checksummed. This reproduces GLib's
table (2.74): ``g_str_hash`` (djb2 over *signed* chars), buckets ``(hash * 11) % prime``,
quadratic probing, growth at 15/16 occupancy with the in-place rehash of ``g_hash_table_resize``.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

__all__ = ["str_hash", "vardict_order", "vardict_reorder"]

_MIN_SHIFT = 3
# The first prime below each power of two (GLib's prime_mod table).
_PRIME_MOD = (1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749,
              65521, 131071, 262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213,
              33554393, 67108859, 134217689, 268435399, 536870909, 1073741789, 2147483647)
_MASK32 = 0xFFFFFFFF

V = TypeVar("V")


def str_hash(key: bytes) -> int:
    """``g_str_hash``: ``h = h * 33 + c`` from 5381, ``c`` a *signed* char, modulo 2**32."""
    h = 5381
    for byte in key:
        h = (h * 33 + (byte - 256 if byte >= 0x80 else byte)) & _MASK32
    return h


class _StrTable:
    """Just enough of ``GHashTable`` (insert-only) to know where each key lands."""

    def __init__(self) -> None:
        self._set_shift(_MIN_SHIFT)
        self.hashes = [0] * self.size
        self.keys: list[bytes | None] = [None] * self.size
        self.nnodes = 0
        self.noccupied = 0

    def _set_shift(self, shift: int) -> None:
        self.size = 1 << shift
        self.mod = _PRIME_MOD[shift]
        self.mask = self.size - 1

    def _index(self, hash_value: int) -> int:
        return ((hash_value * 11) & _MASK32) % self.mod

    def insert(self, key: bytes) -> None:
        hash_value = str_hash(key)
        if hash_value < 2:  # 0 and 1 mark unused and deleted buckets
            hash_value = 2
        index = self._index(hash_value)
        step = 0
        while self.hashes[index] != 0:
            if self.hashes[index] == hash_value and self.keys[index] == key:
                return  # already there: the value changes, the position does not
            step += 1
            index = (index + step) & self.mask
        self.hashes[index] = hash_value
        self.keys[index] = key
        self.nnodes += 1
        self.noccupied += 1
        occupied = self.noccupied
        if ((self.size > self.nnodes * 4 and self.size > 1 << _MIN_SHIFT)
                or self.size <= occupied + occupied // 16):
            self._resize()

    def _resize(self) -> None:
        old_size = self.size
        wanted = int(self.nnodes * 1.333)
        self._set_shift(max(wanted.bit_length(), _MIN_SHIFT))
        if self.size > old_size:
            grow = self.size - old_size
            self.hashes += [0] * grow
            self.keys += [None] * grow
        placed = [False] * max(self.size, old_size)
        for i in range(old_size):
            node_hash = self.hashes[i]
            if node_hash < 2:
                self.hashes[i] = 0
                continue
            if placed[i]:
                continue
            self.hashes[i] = 0
            key, self.keys[i] = self.keys[i], None
            while True:  # place the key; an evicted unplaced key continues the chain
                index = self._index(node_hash)
                step = 0
                while placed[index]:
                    step += 1
                    index = (index + step) & self.mask
                placed[index] = True
                replaced = self.hashes[index]
                self.hashes[index] = node_hash
                if replaced < 2:
                    self.keys[index] = key
                    break
                node_hash = replaced
                key, self.keys[index] = self.keys[index], key
        if self.size < old_size:
            del self.hashes[self.size:]
            del self.keys[self.size:]
        self.noccupied = self.nnodes

    def ordered(self) -> list[bytes]:
        return [k for h, k in zip(self.hashes, self.keys, strict=True) if h >= 2 and k is not None]


def vardict_order(keys: Iterable[str]) -> list[str]:
    """The order ``g_variant_dict_end`` gives the keys inserted in ``keys`` order (a repeated
    key keeps its first place)."""
    table = _StrTable()
    for key in keys:
        table.insert(key.encode("utf-8"))
    return [k.decode("utf-8") for k in table.ordered()]


def vardict_reorder(items: Mapping[str, V]) -> dict[str, V]:
    """``items`` (in insertion order) as a ``GVariantDict`` round trip orders them."""
    return {key: items[key] for key in vardict_order(items)}
