"""GKeyFile ("INI") text, read and written the way GLib's ``g_key_file`` does.

OSTree keeps its repository ``config``, deployment ``.origin`` files and
``/etc/ostree/remotes.d/*.conf`` in this dialect. :class:`KeyFile` is an editable document
that keeps every original line, so an unmodified file is written back byte for byte (comments
and blank lines included). Edited and new lines are written the way GLib writes them:
``key=value``, and a blank line before a new group.

Reading rules (GLib 2.74 ``gkeyfile.c``): leading whitespace of a line is ignored; ``#`` lines
and blank lines are comments; ``[name]`` opens a group (a group name repeated later continues
the same group); ``key=value`` needs a group, whitespace around ``=`` is dropped but trailing
whitespace of the value is kept; a repeated key's last value wins. String values unescape
``\\s \\n \\t \\r \\\\``; lists are ``;``-separated with ``\\;`` for a literal separator.

Pure: no file I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import attrs

from ..errors import FormatError

__all__ = ["KeyFile", "escape_value", "join_list", "split_list", "unescape_value"]

_ASCII_SPACE = " \t\n\v\f\r"
_INT_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


@attrs.define
class _Line:
    """One line of the document: a comment/blank line, a group header or a key=value entry."""

    kind: str  # "comment" | "group" | "entry"
    raw: str | None  # the original text (without "\n"); None once the line is rewritten
    name: str = ""  # group name (group lines) or key (entries)
    value: str = ""  # raw, still-escaped value (entries)

    def text(self) -> str:
        if self.raw is not None:
            return self.raw
        if self.kind == "group":
            return f"[{self.name}]"
        if self.kind == "entry":
            return f"{self.name}={self.value}"
        return ""


def _is_group_name(name: str) -> bool:
    if not name:
        return False
    return not any(c in "[]" or ord(c) < 0x20 or ord(c) == 0x7F for c in name)


def _is_key_name(key: str) -> bool:
    i = 0
    n = len(key)
    while i < n and key[i] not in "=[]":
        i += 1
    if i == 0 or key[0] == " " or key[i - 1] == " ":
        return False
    if i < n and key[i] == "[":
        i += 1
        while i < n and (key[i].isalnum() or key[i] in "-_.@"):
            i += 1
        if i >= n or key[i] != "]":
            return False
        i += 1
    return i == n


def _group_line_name(line: str) -> str | None:
    """The group name if ``line`` (leading whitespace removed) is a group header."""
    if not line.startswith("["):
        return None
    end = line.find("]")
    if end < 0 or line[end + 1 :].strip(" \t"):
        return None
    return line[1:end]


def unescape_value(value: str, *, separator: str | None = None) -> list[str] | str:
    """GLib's ``g_key_file_parse_value_as_string``.

    With ``separator`` the value is split into a list (``\\<separator>`` is a literal); an
    empty trailing piece is dropped, as GLib does. Invalid escapes raise :class:`FormatError`.
    """
    out: list[str] = []
    pieces: list[str] = []
    piece_start = 0
    i = 0
    n = len(value)
    simple = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
    while i < n:
        c = value[i]
        if c == "\\":
            i += 1
            if i >= n:
                raise FormatError("key file value has an escape character at end of line")
            e = value[i]
            if e in simple:
                out.append(simple[e])
            elif separator is not None and e == separator:
                out.append(separator)
            else:
                raise FormatError(f"key file value has an invalid escape sequence '\\{e}'")
        else:
            out.append(c)
            if separator is not None and c == separator:
                pieces.append("".join(out[piece_start:-1]))
                piece_start = len(out)
        i += 1
    if separator is None:
        return "".join(out)
    if piece_start < len(out):
        pieces.append("".join(out[piece_start:]))
    return pieces


def escape_value(text: str, *, separator: str | None = None) -> str:
    """GLib's ``g_key_file_parse_string_as_value`` (leading blanks become ``\\s``/``\\t``)."""
    out: list[str] = []
    leading = True
    for c in text:
        if c == " " and leading:
            out.append("\\s")
        elif c == "\t" and leading:
            out.append("\\t")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\\":
            out.append("\\\\")
            leading = False
        elif separator is not None and c == separator:
            out.append("\\" + separator)
            leading = True
        else:
            out.append(c)
            leading = False
    return "".join(out)


def split_list(value: str, separator: str = ";") -> list[str]:
    """Split a raw (escaped) list value the way ``g_key_file_get_string_list`` does."""
    result = unescape_value(value, separator=separator)
    assert isinstance(result, list)
    return result


def join_list(items: Iterable[str], separator: str = ";") -> str:
    """A raw list value as ``g_key_file_set_string_list`` writes it (separator after each)."""
    return "".join(escape_value(item, separator=separator) + separator for item in items)


def _check_separator(separator: str) -> None:
    if len(separator) != 1 or separator in "\\\n\r":
        raise ValueError(f"invalid list separator {separator!r}")


class KeyFile:
    """An editable GKeyFile document. Build one with :meth:`parse` or ``KeyFile()``."""

    def __init__(self) -> None:
        self._lines: list[_Line] = []
        self._final_newline = True

    # ------------------------------------------------------------------ reading

    @classmethod
    def parse(cls, text: str) -> KeyFile:
        """Parse keyfile text; a line that is no comment, group or ``key=value`` → FormatError."""
        if "\0" in text:
            raise FormatError("key file contains a NUL character")
        kf = cls()
        if not text:
            return kf
        parts = text.split("\n")
        if parts[-1] == "":
            parts.pop()
        else:
            kf._final_newline = False
        have_group = False
        for lineno, raw in enumerate(parts, 1):
            content = raw[:-1] if raw.endswith("\r") else raw
            stripped = content.lstrip(_ASCII_SPACE)
            if not stripped or stripped.startswith("#"):
                kf._lines.append(_Line("comment", raw))
                continue
            group = _group_line_name(stripped)
            if group is not None:
                if not _is_group_name(group):
                    raise FormatError(f"key file line {lineno}: invalid group name {group!r}")
                kf._lines.append(_Line("group", raw, group))
                have_group = True
                continue
            eq = stripped.find("=")
            if eq <= 0:
                raise FormatError(
                    f"key file line {lineno} is not a key-value pair, group, or comment: "
                    f"{content!r}"
                )
            if not have_group:
                raise FormatError("key file does not start with a group")
            key = stripped[:eq].rstrip(_ASCII_SPACE)
            if not _is_key_name(key):
                raise FormatError(f"key file line {lineno}: invalid key name {key!r}")
            value = stripped[eq + 1 :].lstrip(_ASCII_SPACE)
            kf._lines.append(_Line("entry", raw, key, value))
        return kf

    def to_text(self) -> str:
        """The document as text; an unmodified parse returns its input unchanged."""
        if not self._lines:
            return ""
        text = "\n".join(line.text() for line in self._lines)
        return text + "\n" if self._final_newline else text

    def copy(self) -> KeyFile:
        other = KeyFile()
        other._lines = [attrs.evolve(line) for line in self._lines]
        other._final_newline = self._final_newline
        return other

    def _sections(self) -> Iterable[tuple[str | None, int, _Line]]:
        group: str | None = None
        for i, line in enumerate(self._lines):
            if line.kind == "group":
                group = line.name
            yield group, i, line

    def _entry_indices(self, group: str, key: str) -> list[int]:
        return [
            i
            for g, i, line in self._sections()
            if g == group and line.kind == "entry" and line.name == key
        ]

    def groups(self) -> list[str]:
        """Group names in order of first appearance."""
        seen: dict[str, None] = {}
        for line in self._lines:
            if line.kind == "group":
                seen.setdefault(line.name, None)
        return list(seen)

    def has_group(self, group: str) -> bool:
        return any(line.kind == "group" and line.name == group for line in self._lines)

    def keys(self, group: str) -> list[str]:
        """Keys of ``group`` in order of first appearance (empty if there is no such group)."""
        seen: dict[str, None] = {}
        for g, _, line in self._sections():
            if g == group and line.kind == "entry":
                seen.setdefault(line.name, None)
        return list(seen)

    def has_key(self, group: str, key: str) -> bool:
        return bool(self._entry_indices(group, key))

    def items(self, group: str) -> dict[str, str]:
        """``key → raw value`` of ``group`` (last value of a repeated key wins)."""
        out: dict[str, str] = {}
        for g, _, line in self._sections():
            if g == group and line.kind == "entry":
                out[line.name] = line.value
        return out

    def get_raw(self, group: str, key: str, default: str | None = None) -> str | None:
        """The value exactly as stored (still escaped), or ``default``."""
        found = self._entry_indices(group, key)
        return self._lines[found[-1]].value if found else default

    def get(self, group: str, key: str, default: str | None = None) -> str | None:
        """The unescaped string value (``g_key_file_get_string``), or ``default``."""
        raw = self.get_raw(group, key)
        if raw is None:
            return default
        try:
            value = unescape_value(raw)
        except FormatError as exc:
            raise FormatError(f"[{group}] {key}: {exc}") from None
        assert isinstance(value, str)
        return value

    def get_bool(self, group: str, key: str, default: bool = False) -> bool:
        """``true``/``1`` or ``false``/``0`` (trailing whitespace allowed), else FormatError."""
        raw = self.get_raw(group, key)
        if raw is None:
            return default
        word = raw.rstrip(_ASCII_SPACE)
        if word in ("true", "1"):
            return True
        if word in ("false", "0"):
            return False
        raise FormatError(f"[{group}] {key}: value {raw!r} cannot be interpreted as a boolean")

    def get_int(self, group: str, key: str, default: int = 0) -> int:
        """A decimal 32-bit integer, as ``g_key_file_get_integer`` reads it."""
        raw = self.get_raw(group, key)
        if raw is None:
            return default
        m = _INT_RE.match(raw)
        rest = raw[m.end() :] if m else raw
        if m is None or (rest and rest[0] not in _ASCII_SPACE):
            raise FormatError(f"[{group}] {key}: value {raw!r} cannot be interpreted as a number")
        value = int(m.group(1))
        if not _INT32_MIN <= value <= _INT32_MAX:
            raise FormatError(f"[{group}] {key}: integer value {raw!r} out of range")
        return value

    def get_list(
        self, group: str, key: str, default: Sequence[str] = (), *, separator: str = ";"
    ) -> list[str]:
        """A list value (``g_key_file_get_string_list``), or ``list(default)``."""
        _check_separator(separator)
        raw = self.get_raw(group, key)
        if raw is None:
            return list(default)
        try:
            return split_list(raw, separator)
        except FormatError as exc:
            raise FormatError(f"[{group}] {key}: {exc}") from None

    # ------------------------------------------------------------------ writing

    def set_raw(self, group: str, key: str, value: str) -> None:
        """Store ``value`` as is (already escaped); GLib's ``g_key_file_set_value``."""
        if not _is_group_name(group):
            raise ValueError(f"invalid key file group name {group!r}")
        if not _is_key_name(key):
            raise ValueError(f"invalid key file key name {key!r}")
        if "\n" in value or "\r" in value or "\0" in value:
            raise ValueError("raw key file values cannot contain line breaks or NUL")
        self._final_newline = True
        found = self._entry_indices(group, key)
        if found:
            line = self._lines[found[-1]]
            line.value = value
            line.raw = None
            return
        new = _Line("entry", None, key, value)
        last_section_start: int | None = None
        insert_at: int | None = None
        for g, i, line in self._sections():
            if line.kind == "group" and line.name == group:
                last_section_start = i
                insert_at = i + 1
            elif g == group and line.kind == "entry" and last_section_start is not None:
                insert_at = i + 1
        if insert_at is not None:
            self._lines.insert(insert_at, new)
            return
        if self._lines and self._lines[-1].text() != "":
            self._lines.append(_Line("comment", ""))
        self._lines.append(_Line("group", None, group))
        self._lines.append(new)

    def set(self, group: str, key: str, value: str) -> None:
        """Store a string, escaped as ``g_key_file_set_string`` does."""
        self.set_raw(group, key, escape_value(value))

    def set_bool(self, group: str, key: str, value: bool) -> None:
        self.set_raw(group, key, "true" if value else "false")

    def set_int(self, group: str, key: str, value: int) -> None:
        if not _INT32_MIN <= value <= _INT32_MAX:
            raise ValueError(f"integer {value} does not fit a key file integer")
        self.set_raw(group, key, str(value))

    def set_list(
        self, group: str, key: str, values: Iterable[str], *, separator: str = ";"
    ) -> None:
        """Store a list, each item followed by the separator (``a;b;``), as GLib writes it."""
        _check_separator(separator)
        self.set_raw(group, key, join_list(values, separator))

    def remove_key(self, group: str, key: str) -> bool:
        """Remove every occurrence of ``key`` in ``group``; False if it was not there."""
        found = set(self._entry_indices(group, key))
        if not found:
            return False
        self._lines = [line for i, line in enumerate(self._lines) if i not in found]
        self._final_newline = True
        return True

    def remove_group(self, group: str) -> bool:
        """Remove the group (every section of that name, with its lines); False if absent."""
        if not self.has_group(group):
            return False
        kept: list[_Line] = []
        removed_last = False
        for g, _, line in self._sections():
            if g == group:
                removed_last = True
                continue
            removed_last = False
            kept.append(line)
        if removed_last:
            while kept and kept[-1].kind == "comment" and not kept[-1].text().strip(_ASCII_SPACE):
                kept.pop()
        self._lines = kept
        self._final_newline = True
        return True

    def __repr__(self) -> str:
        return f"KeyFile(groups={self.groups()!r})"
