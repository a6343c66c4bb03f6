"""GVariant text format (what ``g_variant_print`` shows), for ``show`` and ``ls -X`` output."""

from __future__ import annotations

from typing import Any

from .gvariant import GType, Variant, parse_type

_INT_NAMES = {"y": "byte", "n": "int16", "q": "uint16", "i": "", "u": "uint32", "x": "int64",
              "t": "uint64", "h": "handle", "d": ""}


def _quote(text: str) -> str:
    quote = "'" if "'" not in text or '"' in text else '"'
    out = text.replace("\\", "\\\\").replace(quote, "\\" + quote)
    out = out.replace("\n", "\\n").replace("\t", "\\t")
    return f"{quote}{out}{quote}"


def _bytestring(raw: bytes) -> str | None:
    if raw.endswith(b"\0") and b"\0" not in raw[:-1]:
        try:
            text = raw[:-1].decode("ascii")
        except UnicodeDecodeError:
            return None
        if text.isprintable():
            return "b" + _quote(text)
    return None


def format_value(gtype: GType, value: Any, annotate: bool = True) -> str:
    code = gtype.code
    if code == "b":
        return "true" if value else "false"
    if code in _INT_NAMES:
        prefix = _INT_NAMES[code]
        if code == "y":
            text = f"0x{value:02x}"
        else:
            text = repr(float(value)) if code == "d" else str(value)
        return f"{prefix} {text}" if annotate and prefix else text
    if code in "sog":
        return _quote(value)
    if code == "v":
        assert isinstance(value, Variant)
        return "<" + format_value(parse_type(value.type), value.value, True) + ">"
    if code == "m":
        if value is None:
            return "@" + gtype.string + " nothing" if annotate else "nothing"
        return "just " + format_value(gtype.children[0], value, annotate)
    if code == "a":
        child = gtype.children[0]
        if child.code == "y":
            as_text = _bytestring(bytes(value))
            if as_text is not None:
                return as_text
            items_text = [f"0x{b:02x}" for b in value]
            if not items_text:
                return f"@{gtype.string} []" if annotate else "[]"
            return "[byte " + ", ".join(items_text) + "]" if annotate else "[" + ", ".join(
                items_text) + "]"
        if child.code == "{":
            if not value:
                return f"@{gtype.string} {{}}" if annotate else "{}"
            parts = [
                format_value(child.children[0], k, annotate)
                + ": "
                + format_value(child.children[1], v, annotate)
                for k, v in value.items()
            ]
            return "{" + ", ".join(parts) + "}"
        if not value:
            return f"@{gtype.string} []" if annotate else "[]"
        first = format_value(child, value[0], annotate)
        rest = [format_value(child, v, False) for v in value[1:]]
        return "[" + ", ".join([first, *rest]) + "]"
    parts = [format_value(c, v, annotate) for c, v in zip(gtype.children, value)]
    if code == "{":
        return "{" + ": ".join(parts) + "}"
    if len(parts) == 1:
        return "(" + parts[0] + ",)"
    return "(" + ", ".join(parts) + ")"


def format_variant(type_string: str, value: Any, annotate: bool = True) -> str:
    return format_value(parse_type(type_string), value, annotate)
