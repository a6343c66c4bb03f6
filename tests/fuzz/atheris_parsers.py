#!/usr/bin/env python3
"""Coverage-guided fuzzing of pyostree's parsers with atheris (libFuzzer). Not a pytest file.

    pip install atheris
    python tests/fuzz/atheris_parsers.py [PARSER] [libFuzzer options, e.g. -runs=100000 CORPUS_DIR]

PARSER is one of the names in ``PARSERS`` (default: all, the first input byte picks one).
A crash is any exception that is not a :class:`PyOstreeError`, or an accepted input that
does not serialise back to the same bytes; libFuzzer then writes ``crash-*`` with the input.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import atheris  # type: ignore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from pyostree import gvariant
    from pyostree.errors import PyOstreeError
    from pyostree.formats import delta as dl
    from pyostree.formats.bls import BootEntry, Kargs, parse_entry_filename
    from pyostree.formats.bspatch import bspatch
    from pyostree.formats.content import parse_archive_header, parse_file_header
    from pyostree.formats.keyfile import KeyFile
    from pyostree.formats.objects import Commit, DirMeta, DirTree, parse_metadata
    from pyostree.formats.summary import DeltaIndex, Summary, SummarySig
    from pyostree.formats.varint import decode_varint
    from pyostree.sign import parse_public_key_file


def _roundtrip(parse: Callable[[bytes], object]) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        value = parse(data)
        to_bytes = getattr(value, "to_bytes", None)
        if to_bytes is not None and to_bytes() != data:
            raise AssertionError(f"{parse.__qualname__}: accepted input does not round-trip")

    return run


def _keyfile(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    if KeyFile.parse(text).to_text() != text:
        raise AssertionError("KeyFile does not round-trip")


def _call(parse: Callable[[bytes], object]) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        parse(data)

    return run


def _text(parse: Callable[[str], object]) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        parse(data.decode("utf-8", "replace"))

    return run


def _part(data: bytes) -> None:
    dl.PartPayload.from_bytes(dl.decompress_part(data, max_output=1 << 16))


def _bspatch(data: bytes) -> None:
    out: list[bytes] = []
    bspatch(bytes(range(256)), data, 300, out.append)
    if sum(map(len, out)) != 300:
        raise AssertionError("bspatch returned without writing new_size bytes")


PARSERS: dict[str, Callable[[bytes], None]] = {
    "summary": _roundtrip(Summary.from_bytes),
    "delta-index": _roundtrip(DeltaIndex.from_bytes),
    "summary-sig": _roundtrip(SummarySig.from_bytes),
    "superblock": _roundtrip(dl.DeltaSuperblock.from_bytes),
    "signed-superblock": _call(dl.unwrap_signed_superblock),
    "part-payload": _roundtrip(dl.PartPayload.from_bytes),
    "part-file": _part,
    "commit": _roundtrip(Commit.from_bytes),
    "dirtree": _roundtrip(DirTree.from_bytes),
    "dirmeta": _roundtrip(DirMeta.from_bytes),
    "metadata": _call(parse_metadata),
    "archive-header": _call(parse_archive_header),
    "file-header": _call(parse_file_header),
    "gvariant": _call(functools.partial(gvariant.decode, "(a{sv}aya(say)sstayay)")),
    "keyfile": _keyfile,
    "boot-entry": _call(BootEntry.from_bytes),
    "kargs": _text(Kargs.parse),
    "entry-filename": _text(parse_entry_filename),
    "ed25519-keys": _call(parse_public_key_file),
    "varint": _call(decode_varint),
    "bspatch": _bspatch,
}
NAMES = sorted(PARSERS)


def main() -> None:
    only = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else None
    if only is not None:
        if only not in PARSERS:
            raise SystemExit(f"unknown parser {only!r}; choose from: {', '.join(NAMES)}")
        del sys.argv[1]

    def one_input(data: bytes) -> None:
        if only is not None:
            name, body = only, data
        else:
            if not data:
                return
            name, body = NAMES[data[0] % len(NAMES)], data[1:]
        with contextlib.suppress(PyOstreeError):
            PARSERS[name](body)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
