"""GVariant text format, byte for byte what GLib's ``g_variant_print`` shows.

Used for ``show``, ``ls -X`` and ``--raw`` output, which must match the ostree tool exactly.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from .errors import FormatError
from .gvariant import GType, Variant, parse_type

_INT_NAMES = {"n": "int16", "q": "uint16", "u": "uint32", "x": "int64", "t": "uint64",
              "h": "handle"}
_C_ESCAPES = {"\a": "a", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t", "\v": "v"}
_STRESCAPE = {0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x0B: "\\v",
              0x5C: "\\\\", 0x22: '\\"'}


def _isprint(char: str) -> bool:
    """``g_unichar_isprint``: everything but control, format, unassigned and surrogates."""
    return unicodedata.category(char) not in ("Cc", "Cf", "Cn", "Cs")


def _quote(text: str) -> str:
    quote = '"' if "'" in text else "'"
    out = [quote]
    for char in text:
        if char in (quote, "\\"):
            out.append("\\")
        if _isprint(char):
            out.append(char)
        elif char in _C_ESCAPES:
            out.append("\\" + _C_ESCAPES[char])
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append(quote)
    return "".join(out)


def _strescape(raw: bytes) -> str:
    """``g_strescape``: C escapes, octal for bytes outside printable ASCII."""
    out = []
    for byte in raw:
        if byte in _STRESCAPE:
            out.append(_STRESCAPE[byte])
        elif byte < 0x20 or byte >= 0x7F:
            out.append(f"\\{byte:03o}")
        else:
            out.append(chr(byte))
    return "".join(out)


def _double(value: float) -> str:
    text = f"{value:.17g}"
    if not any(c in text for c in ".enN"):
        text += ".0"
    return text


def format_value(gtype: GType, value: Any, annotate: bool = True) -> str:
    """Print ``value`` of type ``gtype``; ``annotate`` adds type hints as GLib does."""
    code = gtype.code
    if code == "b":
        return "true" if value else "false"
    if code == "y":
        return ("byte " if annotate else "") + f"0x{value:02x}"
    if code == "i":
        return str(value)
    if code in _INT_NAMES:
        return (_INT_NAMES[code] + " " if annotate else "") + str(value)
    if code == "d":
        return _double(value)
    if code == "s":
        return _quote(value)
    if code in "og":
        prefix = ("objectpath " if code == "o" else "signature ") if annotate else ""
        return f"{prefix}'{value}'"
    if code == "v":
        assert isinstance(value, Variant)
        return "<" + format_value(parse_type(value.type), value.value, True) + ">"
    if code == "m":
        prefix = f"@{gtype.string} " if annotate else ""
        if value is None:
            return prefix + "nothing"
        child = format_value(gtype.children[0], value, False)
        return prefix + ("just " if child.endswith("nothing") else "") + child
    if code == "a":
        return _format_array(gtype, value, annotate)
    parts = [format_value(c, v, annotate) for c, v in zip(gtype.children, value, strict=True)]
    if code == "{":
        return "{" + ", ".join(parts) + "}"
    if len(parts) == 1:
        return "(" + parts[0] + ",)"
    return "(" + ", ".join(parts) + ")"


def _format_array(gtype: GType, value: Any, annotate: bool) -> str:
    child = gtype.children[0]
    if child.code == "y":
        raw = bytes(value)
        if raw and raw.find(0) == len(raw) - 1:  # one NUL, at the end: a bytestring
            text = raw[:-1]
            quote = '"' if b"'" in text else "'"
            return f"b{quote}{_strescape(text)}{quote}"
        value = list(raw)
    if not value:
        empty = "{}" if child.code == "{" else "[]"
        return f"@{gtype.string} {empty}" if annotate else empty
    parts = []
    if child.code == "{":
        for key, val in value.items():
            parts.append(format_value(child.children[0], key, annotate) + ": "
                         + format_value(child.children[1], val, annotate))
            annotate = False
        return "{" + ", ".join(parts) + "}"
    for item in value:
        parts.append(format_value(child, item, annotate))
        annotate = False
    return "[" + ", ".join(parts) + "]"


def format_variant(type_string: str, value: Any, annotate: bool = True) -> str:
    """``g_variant_print`` of a value of ``type_string``."""
    return format_value(parse_type(type_string), value, annotate)


# ---------------------------------------------------------------------------- parsing
#
# ``parse_text`` reads the GVariant text format (``g_variant_parse``), as ``ostree commit
# --add-metadata=KEY=VALUE`` does. Values are parsed into nodes first; the type of untyped
# literals is then inferred the way GLib does it: every array's elements are unified (an
# integer literal takes the type of a typed neighbour, ``[1, 2.5]`` is ``ad``), and whatever is
# left open defaults to ``i`` for integers, ``d`` for floats and ``s`` for strings.

_INT_RANGES = {
    "y": (0, 0xFF), "n": (-(2**15), 2**15 - 1), "q": (0, 0xFFFF), "i": (-(2**31), 2**31 - 1),
    "u": (0, 2**32 - 1), "h": (-(2**31), 2**31 - 1), "x": (-(2**63), 2**63 - 1),
    "t": (0, 2**64 - 1),
}
_KEYWORD_TYPES = {
    "boolean": "b", "byte": "y", "int16": "n", "uint16": "q", "int32": "i", "uint32": "u",
    "handle": "h", "int64": "x", "uint64": "t", "double": "d", "string": "s",
    "objectpath": "o", "signature": "g",
}
_NUMBER_RE = re.compile(
    r"[+-]?(0[xX][0-9a-fA-F]+|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|nan)")
_STRING_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}

# A pattern is (code, children). Codes beyond GVariant's: N (an integer literal, any number
# type), D (a float literal: d), S (a string literal: s, o or g), * (anything: an empty array,
# ``nothing``).
_Pattern = tuple[str, tuple[Any, ...]]
_ANY: _Pattern = ("*", ())


def _merge(p: _Pattern, q: _Pattern) -> _Pattern:
    if p[0] == "*":
        return q
    if q[0] == "*":
        return p
    if (p[0] == "m") != (q[0] == "m"):  # a plain value where a maybe is: an implicit just
        maybe, plain = (p, q) if p[0] == "m" else (q, p)
        return ("m", (_merge(maybe[1][0], plain),))
    numeric = "ynqiuxthd"
    if p[0] in "ND" + numeric and q[0] in "ND" + numeric:
        if p[0] in "ND" and q[0] in "ND":
            return ("D", ()) if "D" in (p[0], q[0]) else ("N", ())
        if p[0] in "ND" or q[0] in "ND":
            literal, concrete = (p, q) if p[0] in "ND" else (q, p)
            if literal[0] == "N" or concrete[0] == "d":
                return concrete
        elif p[0] == q[0]:
            return p
        raise ParseError(f"unable to find a common type for {p[0]!r} and {q[0]!r}")
    if p[0] in "Ssog" and q[0] in "Ssog":
        if p[0] == "S":
            return q
        if q[0] == "S" or p[0] == q[0]:
            return p
    elif p[0] == q[0] and len(p[1]) == len(q[1]):
        return (p[0], tuple(_merge(a, b) for a, b in zip(p[1], q[1], strict=True)))
    raise ParseError("unable to find a common type for the elements")


def _pattern_type(p: _Pattern) -> str:
    code, children = p
    if code == "*":
        raise ParseError("unable to infer type")
    if code in "NDS":
        return {"N": "i", "D": "d", "S": "s"}[code]
    if code in "am":
        return code + _pattern_type(children[0])
    if code in "({":
        close = ")" if code == "(" else "}"
        return code + "".join(_pattern_type(c) for c in children) + close
    return code


def _type_pattern(t: GType) -> _Pattern:
    return (t.code, tuple(_type_pattern(c) for c in t.children))


class ParseError(FormatError):
    """GVariant text that cannot be parsed or typed."""


def _coerce(node: _Node, t: GType) -> Any:
    """``node`` as a value of ``t``; a plain value stands for ``just`` it where a maybe is due."""
    if t.code == "m" and not isinstance(node, (_Maybe, _Typed)):
        return _coerce(node, t.children[0])
    return node.value(t)


class _Node:
    def pattern(self) -> _Pattern:
        raise NotImplementedError

    def value(self, t: GType) -> Any:
        raise NotImplementedError

    def _mismatch(self, t: GType) -> ParseError:
        return ParseError(f"cannot use {type(self).__name__.lower().strip('_')} as {t.string!r}")


class _Num(_Node):
    def __init__(self, text: str) -> None:
        if not _NUMBER_RE.fullmatch(text):
            raise ParseError(f"invalid number {text!r}")
        self.text = text
        body = text.lstrip("+-").lower()
        self.is_float = body in ("inf", "nan") or (
            not body.startswith("0x") and ("." in body or "e" in body))

    def pattern(self) -> _Pattern:
        return ("D" if self.is_float else "N", ())

    def value(self, t: GType) -> Any:
        if t.code == "d":
            if self.is_float:
                try:
                    return float(self.text)
                except ValueError:
                    raise ParseError(f"invalid number {self.text!r}") from None
            return float(self._int())
        if t.code in _INT_RANGES and not self.is_float:
            number = self._int()
            low, high = _INT_RANGES[t.code]
            if not low <= number <= high:
                raise ParseError(f"number out of range for type '{t.code}'")
            return number
        raise self._mismatch(t)

    def _int(self) -> int:
        text = self.text
        sign = -1 if text.startswith("-") else 1
        body = text.lstrip("+-")
        try:
            if body.lower().startswith("0x"):
                return sign * int(body[2:], 16)
            if len(body) > 1 and body.startswith("0"):
                return sign * int(body, 8)
            return sign * int(body, 10)
        except ValueError:
            raise ParseError(f"invalid number {text!r}") from None


class _Bool(_Node):
    def __init__(self, value: bool) -> None:
        self.flag = value

    def pattern(self) -> _Pattern:
        return ("b", ())

    def value(self, t: GType) -> Any:
        if t.code != "b":
            raise self._mismatch(t)
        return self.flag


class _Str(_Node):
    def __init__(self, text: str) -> None:
        self.text = text

    def pattern(self) -> _Pattern:
        return ("S", ())

    def value(self, t: GType) -> Any:
        if t.code not in "sog":
            raise self._mismatch(t)
        return self.text


class _Bytes(_Node):
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def pattern(self) -> _Pattern:
        return ("a", (("y", ()),))

    def value(self, t: GType) -> Any:
        if t.string != "ay":
            raise self._mismatch(t)
        return self.raw + b"\0"


class _Typed(_Node):
    def __init__(self, type_string: str, node: _Node) -> None:
        self.gtype = parse_type(type_string)
        self.node = node

    def pattern(self) -> _Pattern:
        return _type_pattern(self.gtype)

    def value(self, t: GType) -> Any:
        if t.string != self.gtype.string:
            raise self._mismatch(t)
        return _coerce(self.node, t)


class _Array(_Node):
    def __init__(self, items: list[_Node]) -> None:
        self.items = items

    def pattern(self) -> _Pattern:
        merged = _ANY
        for item in self.items:
            merged = _merge(merged, item.pattern())
        return ("a", (merged,))

    def value(self, t: GType) -> Any:
        if t.code != "a":
            raise self._mismatch(t)
        child = t.children[0]
        values = [_coerce(item, child) for item in self.items]
        if child.code == "y":
            return bytes(values)
        if child.code == "{":
            result: dict[Any, Any] = {}
            for key, val in values:
                result[key] = val
            return result
        return values


class _Tuple(_Node):
    def __init__(self, items: list[_Node], code: str = "(") -> None:
        self.items = items
        self.code = code

    def pattern(self) -> _Pattern:
        return (self.code, tuple(item.pattern() for item in self.items))

    def value(self, t: GType) -> Any:
        if t.code != self.code or len(t.children) != len(self.items):
            raise self._mismatch(t)
        return tuple(_coerce(item, c) for item, c in zip(self.items, t.children, strict=True))


class _Dict(_Node):
    def __init__(self, entries: list[tuple[_Node, _Node]]) -> None:
        self.entries = entries

    def pattern(self) -> _Pattern:
        key, val = _ANY, _ANY
        for k, v in self.entries:
            key = _merge(key, k.pattern())
            val = _merge(val, v.pattern())
        return ("a", (("{", (key, val)),))

    def value(self, t: GType) -> Any:
        if t.code != "a" or t.children[0].code != "{":
            raise self._mismatch(t)
        kt, vt = t.children[0].children
        return {_coerce(k, kt): _coerce(v, vt) for k, v in self.entries}


class _Boxed(_Node):
    def __init__(self, node: _Node) -> None:
        self.node = node

    def pattern(self) -> _Pattern:
        return ("v", ())

    def value(self, t: GType) -> Any:
        if t.code != "v":
            raise self._mismatch(t)
        type_string = _pattern_type(self.node.pattern())
        return Variant(type_string, _coerce(self.node, parse_type(type_string)))


class _Maybe(_Node):
    def __init__(self, node: _Node | None) -> None:
        self.node = node

    def pattern(self) -> _Pattern:
        return ("m", (self.node.pattern() if self.node else _ANY,))

    def value(self, t: GType) -> Any:
        if t.code != "m":
            raise self._mismatch(t)
        return None if self.node is None else _coerce(self.node, t.children[0])


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str) -> ParseError:
        return ParseError(f"{self.pos}: {message}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected '{char}'")
        self.pos += 1

    def word(self) -> str:
        self.skip()
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum()
                                             or self.text[self.pos] in "_+-."):
            self.pos += 1
        return self.text[start:self.pos]

    def parse(self) -> _Node:
        node = self.value()
        if self.peek():
            raise self.error("expected end of input")
        return node

    def value(self) -> _Node:
        char = self.peek()
        if not char:
            raise self.error("expected a value")
        if char == "@":
            self.pos += 1
            start = self.pos
            while self.pos < len(self.text) and not self.text[self.pos].isspace():
                self.pos += 1
            type_string = self.text[start:self.pos]
            try:
                parse_type(type_string)
            except FormatError:
                raise self.error(f"invalid type {type_string!r}") from None
            return _Typed(type_string, self.value())
        if char in "'\"":
            return _Str(self.string())
        if char == "b" and self.text[self.pos + 1:self.pos + 2] in ("'", '"'):
            self.pos += 1
            return _Bytes(self.bytestring())
        if char == "[":
            return _Array(self.sequence("[", "]"))
        if char == "(":
            start = self.pos
            items = self.sequence("(", ")")
            if len(items) == 1 and self.text[start:self.pos].rstrip()[-2:-1] != ",":
                return items[0]  # (x) is just x; a one-tuple is (x,)
            return _Tuple(items)
        if char == "{":
            return self.dictionary()
        if char == "<":
            self.pos += 1
            node = self.value()
            self.expect(">")
            return _Boxed(node)
        if char.isdigit() or char in "+-.":
            return _Num(self.word())
        word = self.word()
        if not word:
            raise self.error(f"unexpected character {char!r}")
        if word in ("true", "false"):
            return _Bool(word == "true")
        if word == "nothing":
            return _Maybe(None)
        if word == "just":
            return _Maybe(self.value())
        if word in ("inf", "nan"):
            return _Num(word)
        if word in _KEYWORD_TYPES:
            return _Typed(_KEYWORD_TYPES[word], self.value())
        raise self.error(f"unknown keyword {word!r}")

    def sequence(self, open_: str, close: str) -> list[_Node]:
        self.expect(open_)
        items: list[_Node] = []
        while self.peek() != close:
            items.append(self.value())
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != close:
                raise self.error(f"expected ',' or '{close}'")
        self.pos += 1
        return items

    def dictionary(self) -> _Node:
        self.expect("{")
        if self.peek() == "}":
            self.pos += 1
            return _Dict([])
        key = self.value()
        if self.peek() == ",":  # a lone dict entry {k, v}
            self.pos += 1
            val = self.value()
            self.expect("}")
            return _Tuple([key, val], "{")
        entries: list[tuple[_Node, _Node]] = []
        while True:
            self.expect(":")
            entries.append((key, self.value()))
            if self.peek() == "}":
                self.pos += 1
                return _Dict(entries)
            self.expect(",")
            key = self.value()

    def string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.error("unterminated string constant")
            char = self.text[self.pos]
            self.pos += 1
            if char == quote:
                return "".join(out)
            if char != "\\":
                out.append(char)
                continue
            if self.pos >= len(self.text):
                raise self.error("unterminated string constant")
            esc = self.text[self.pos]
            self.pos += 1
            if esc in "uU":
                digits = 4 if esc == "u" else 8
                hexits = self.text[self.pos:self.pos + digits]
                if len(hexits) != digits or not all(c in "0123456789abcdefABCDEF"
                                                    for c in hexits):
                    raise self.error("invalid unicode escape")
                self.pos += digits
                out.append(chr(int(hexits, 16)))
            elif esc == "\n":
                continue
            else:
                out.append(_STRING_ESCAPES.get(esc, esc))

    def bytestring(self) -> bytes:
        quote = self.text[self.pos]
        self.pos += 1
        out = bytearray()
        while True:
            if self.pos >= len(self.text):
                raise self.error("unterminated string constant")
            char = self.text[self.pos]
            self.pos += 1
            if char == quote:
                return bytes(out)
            if char != "\\":
                out += char.encode()
                continue
            if self.pos >= len(self.text):
                raise self.error("unterminated string constant")
            esc = self.text[self.pos]
            if esc in "01234567":
                end = self.pos
                while end < len(self.text) and end - self.pos < 3 and self.text[end] in "01234567":
                    end += 1
                out.append(int(self.text[self.pos:end], 8) & 0xFF)
                self.pos = end
                continue
            self.pos += 1
            if esc != "\n":
                out += _STRING_ESCAPES.get(esc, esc).encode()


def parse_text(text: str, type_string: str | None = None) -> Variant:
    """Parse GVariant text (``g_variant_parse``); infer the type unless ``type_string`` is given.

    Raises :class:`ParseError` (a :class:`~pyostree.errors.FormatError`)."""
    try:
        node = _Parser(text).parse()
        if type_string is None:
            type_string = _pattern_type(node.pattern())
        return Variant(type_string, _coerce(node, parse_type(type_string)))
    except RecursionError:
        raise ParseError("GVariant text nested too deeply") from None
