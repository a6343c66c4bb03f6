"""``--tar-pathname-filter=REGEX,REPLACEMENT``: GLib's ``g_regex_replace`` in Python.

The regular expression is compiled by Python's ``re`` (the PCRE syntax paths need is the same);
the replacement text follows GLib's rules, not Python's: ``\\0`` is the whole match, ``\\1`` …
``\\99`` and ``\\g<N>``/``\\g<name>`` are groups, three octal digits (or ``\\0`` and a digit) make
a character, ``\\xHH``/``\\x{H…}`` too, ``\\t \\n \\v \\r \\f \\a \\b \\\\`` are the usual
characters and ``\\l \\u \\L \\U \\E`` change case. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import RepoError

__all__ = ["compile_pathname_filter", "parse_replacement"]

_CHARS = {"t": "\t", "n": "\n", "v": "\v", "r": "\r", "f": "\f", "a": "\a", "b": "\b",
          "\\": "\\"}
_CASES = {"l": "lower1", "u": "upper1", "L": "lower", "U": "upper", "E": "none"}

# ("text", str) | ("group", int | str) | ("case", str)
Piece = tuple[str, str | int]


def _error(replacement: str, pos: int, detail: str) -> RepoError:
    return RepoError(f"--tar-pathname-filter: Error while parsing replacement text "
                     f"\u201c{replacement}\u201d at char {pos}: {detail}")


def _escape(rep: str, p: int, out: list[Piece]) -> int:
    """Parse the escape at ``rep[p] == '\\'``; return the position after it."""
    p += 1
    c = rep[p] if p < len(rep) else ""
    if c in _CHARS:
        out.append(("text", _CHARS[c]))
        return p + 1
    if c in _CASES:
        out.append(("case", _CASES[c]))
        return p + 1
    if c == "x":
        p += 1
        value = 0
        if rep[p:p + 1] == "{":
            p += 1
            while True:
                if p >= len(rep) or rep[p] not in "0123456789abcdefABCDEF":
                    raise _error(rep, p, "hexadecimal digit or \u201c}\u201d expected")
                value = value * 16 + int(rep[p], 16)
                p += 1
                if rep[p:p + 1] == "}":
                    break
            p += 1
        else:
            for _ in range(2):
                if p >= len(rep) or rep[p] not in "0123456789abcdefABCDEF":
                    raise _error(rep, p, "hexadecimal digit expected")
                value = value * 16 + int(rep[p], 16)
                p += 1
        out.append(("text", chr(value)))
        return p
    if c == "g":
        p += 1
        if rep[p:p + 1] != "<":
            raise _error(rep, p, "missing \u201c<\u201d in symbolic reference")
        end = rep.find(">", p + 1)
        if end < 0:
            raise _error(rep, len(rep), "unfinished symbolic reference")
        name = rep[p + 1:end]
        if not name:
            raise _error(rep, end, "zero-length symbolic reference")
        if name[0].isdigit():
            if not name.isdigit():
                raise _error(rep, p + 1, "digit expected")
            out.append(("group", int(name)))
        else:
            if not all(ch.isascii() and ch.isalnum() for ch in name):
                raise _error(rep, p + 1, "illegal symbolic reference")
            out.append(("group", name))
        return end + 1
    if c and c in "0123456789":
        base = 0
        if c == "0" and rep[p + 1:p + 2].isdigit():
            base = 8
            p += 1
        octal = decimal = 0
        i = 0
        while i < 3:
            if p >= len(rep) or not rep[p].isdigit():
                break
            digit = int(rep[p])
            if digit > 7:
                if base == 8:
                    break
                base = 10
            if i == 2 and base == 10:
                break
            octal = octal * 8 + digit
            decimal = decimal * 10 + digit
            p += 1
            i += 1
        if base == 8 or i == 3:
            out.append(("text", chr(octal)))
        else:
            out.append(("group", decimal))
        return p
    if not c:
        raise _error(rep, p, "stray final \u201c\\\u201d")
    raise _error(rep, p, "unknown escape sequence")


def parse_replacement(replacement: str) -> list[Piece]:
    """Split a GLib replacement text into literal text, group references and case changes."""
    out: list[Piece] = []
    p = start = 0
    while p < len(replacement):
        if replacement[p] == "\\":
            p = start = _escape(replacement, p, out)
        else:
            p += 1
            if p >= len(replacement) or replacement[p] == "\\":
                out.append(("text", replacement[start:p]))
    return out


def _change(text: str, case: str) -> str:
    def one(ch: str) -> str:
        changed = ch.lower() if case.startswith("lower") else ch.upper()
        return changed if len(changed) == 1 else ch

    if case == "none" or not text:
        return text
    if case.endswith("1"):
        return one(text[0]) + text[1:]
    return "".join(one(ch) for ch in text)


def _expand(pieces: list[Piece], match: re.Match[str]) -> str:
    out: list[str] = []
    case = "none"
    for kind, value in pieces:
        if kind == "case":
            case = str(value)
            continue
        if kind == "group":
            try:
                text = match.group(value) or ""
            except IndexError:  # no such group: GLib interpolates nothing
                text = ""
        else:
            text = str(value)
        if text:
            out.append(_change(text, case))
            if case.endswith("1"):
                case = "none"
    return "".join(out)


def compile_pathname_filter(spec: str) -> Callable[[str], str]:
    """``REGEX,REPLACEMENT`` (split at the first comma) as a function on relative paths."""
    regex_text, comma, replacement = spec.partition(",")
    if not comma:
        raise RepoError("Missing ',' in --tar-pathname-filter")
    try:
        regex = re.compile(regex_text)
    except re.error as exc:
        raise RepoError(f"--tar-pathname-filter: Error while compiling regular expression "
                        f"{regex_text}: {exc}") from None
    pieces = parse_replacement(replacement)

    def translate(path: str) -> str:
        return regex.sub(lambda m: _expand(pieces, m), path)

    return translate
