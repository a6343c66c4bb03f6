"""Dates as ``ostree prune --keep-younger-than`` reads them: gnulib's ``parse_datetime``.

The grammar is GNU ``date -d``'s, less its rarer corners: ``@EPOCH``; ISO 8601 dates and
date-times (``2024-03-01``, ``2024-03-01T10:00:00Z``, ``2024-03-01 10:00:00 +0000``);
``MM/DD[/YYYY]``; month names (``October 25 1985``, ``25 Oct 1985``, ``1-Oct-1985``); times
(``12:43[:29[.5]]``, ``3pm``) with a zone (``UTC``, ``Z``, ``+0100``, ``-05:00``); week days
(``monday``, ``next friday``); and relative items (``1 week ago``, ``-3 days``,
``last month``, ``yesterday``, ``now``). As in gnulib, a date without a time means its
midnight, anything without a zone is local time, and a relative item alone counts from now.

Pure: the caller passes ``now``; nothing here reads the clock or a file.
"""

from __future__ import annotations

import datetime
import re

from .errors import FormatError

__all__ = ["parse_date"]

_MONTHS = {name: i + 1 for i, names in enumerate((
    ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",),
    ("june", "jun"), ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"),
    ("october", "oct"), ("november", "nov"), ("december", "dec"),
)) for name in names}
_DAYS = {name: i for i, names in enumerate((
    ("sunday", "sun"), ("monday", "mon"), ("tuesday", "tue", "tues"),
    ("wednesday", "wed", "wednes"), ("thursday", "thu", "thur", "thurs"), ("friday", "fri"),
    ("saturday", "sat"),
)) for name in names}
_ORDINALS = {"last": -1, "this": 0, "next": 1, "first": 1, "third": 3, "fourth": 4,
             "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10,
             "eleventh": 11, "twelfth": 12}
# Relative units: (field, multiplier); fields y/m/d change the calendar, s adds seconds.
_UNITS = {"year": ("y", 1), "month": ("m", 1), "fortnight": ("d", 14), "week": ("d", 7),
          "day": ("d", 1), "hour": ("s", 3600), "minute": ("s", 60), "min": ("s", 60),
          "second": ("s", 1), "sec": ("s", 1)}
_ZONES = {"gmt": 0, "ut": 0, "utc": 0, "z": 0, "wet": 0, "west": 60, "bst": 60, "cet": 60,
          "cest": 120, "met": 60, "mest": 120, "eet": 120, "eest": 180, "ast": -240,
          "adt": -180, "est": -300, "edt": -240, "cst": -360, "cdt": -300, "mst": -420,
          "mdt": -360, "pst": -480, "pdt": -420, "akst": -540, "akdt": -480, "hst": -600,
          "jst": 540, "kst": 540, "ist": 330, "aest": 600, "aedt": 660}
_TOKEN = re.compile(r"\s*(?:(?P<num>\d+)|(?P<word>[A-Za-z]+\.?)|(?P<punct>[-+:/,.@T]))")


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise FormatError("unexpected character")
        tokens.append((m.group("num") or m.group("word") or m.group("punct")).rstrip("."))
        pos = m.end()
    return tokens


class _Parser:
    """gnulib's ``parser_control``: what the items of the string said, then combined."""

    def __init__(self, tokens: list[str]) -> None:
        self.t = tokens
        self.i = 0
        self.date: tuple[int | None, int, int] | None = None  # year (None: this year), month, day
        self.time: tuple[int, int, float] | None = None
        self.zone: int | None = None  # minutes east of UTC
        self.weekday: tuple[int, int] | None = None  # (ordinal, day number)
        self.rel = {"y": 0, "m": 0, "d": 0, "s": 0.0}
        self.rels_seen = False

    # -- token helpers
    def peek(self, k: int = 0) -> str:
        return self.t[self.i + k] if self.i + k < len(self.t) else ""

    def take(self, n: int = 1) -> list[str]:
        out = self.t[self.i:self.i + n]
        self.i += n
        return out

    def is_num(self, k: int = 0) -> bool:
        return self.peek(k).isdigit()

    # -- items
    def set_date(self, year: int | None, month: int, day: int, year_digits: int = 4) -> None:
        if self.date is not None:
            raise FormatError("two dates")
        if year is not None and year_digits == 2:
            year += 1900 if year >= 69 else 2000
        self.date = (year, month, day)

    def set_time(self, hour: int, minute: int, second: float, meridian: str | None) -> None:
        if self.time is not None:
            raise FormatError("two times")
        if meridian is not None:
            if not 1 <= hour <= 12:
                raise FormatError("bad hour")
            hour = hour % 12 + (12 if meridian == "pm" else 0)
        self.time = (hour, minute, second)

    def set_zone(self, minutes: int) -> None:
        if self.zone is not None:
            raise FormatError("two zones")
        self.zone = minutes

    def add_rel(self, unit: str, count: float) -> None:
        field, mult = _UNITS[unit]
        self.rel[field] += count * mult
        self.rels_seen = True

    def meridian(self) -> str | None:
        word = self.peek().lower()
        if word in ("am", "pm", "a", "p"):
            self.take()
            if word in ("a", "p"):
                if self.peek().lower() != "m":
                    raise FormatError("bad meridian")
                self.take()
                return "am" if word == "a" else "pm"
            return word
        return None

    def numeric_zone(self) -> bool:
        """``+HH``, ``+HHMM`` or ``+HH:MM`` after a time."""
        if self.peek() not in ("+", "-") or not self.is_num(1):
            return False
        sign = -1 if self.take()[0] == "-" else 1
        digits = self.take()[0]
        if self.peek() == ":" and self.is_num(1):
            self.take()
            hours, minutes = int(digits), int(self.take()[0])
        elif len(digits) <= 2:
            hours, minutes = int(digits), 0
        elif len(digits) == 4:
            hours, minutes = int(digits[:2]), int(digits[2:])
        else:
            raise FormatError("bad zone")
        if hours > 24 or minutes > 59:
            raise FormatError("bad zone")
        self.set_zone(sign * (hours * 60 + minutes))
        return True

    def clock(self) -> None:
        """``HH:MM[:SS[.frac]] [am|pm] [zone]``, the cursor on HH."""
        hour = int(self.take()[0])
        self.take()  # ":"
        minute = int(self.take()[0])
        second = 0.0
        if self.peek() == ":" and self.is_num(1):
            self.take()
            second = float(self.take()[0])
            if self.peek() in (".", ",") and self.is_num(1):
                self.take()
                frac = self.take()[0]
                second += int(frac) / 10 ** len(frac)
        self.set_time(hour, minute, second, self.meridian())
        if not self.numeric_zone():
            word = self.peek().lower()
            if word in _ZONES:
                self.take()
                self.set_zone(_ZONES[word])

    def item(self) -> None:
        tok = self.peek()
        low = tok.lower()
        if tok.isdigit():
            self.number_item()
        elif tok in ("+", "-") and self.is_num(1):
            sign = -1 if self.take()[0] == "-" else 1
            count = sign * int(self.take()[0])
            self.relunit(count)
        elif tok == ",":
            self.take()
        elif low in _MONTHS:
            self.take()
            month = _MONTHS[low]
            if self.is_num():
                day = int(self.take()[0])
                if self.peek() == ",":
                    self.take()
                if self.is_num() and self.peek(1) != ":":
                    digits = self.peek()
                    self.set_date(int(self.take()[0]), month, day, len(digits))
                else:
                    self.set_date(None, month, day)
            else:
                raise FormatError("month without day")
        elif low in _DAYS:
            self.take()
            if self.peek() == ",":
                self.take()
            self.set_weekday(0, _DAYS[low])
        elif low in _ORDINALS:
            self.take()
            count = _ORDINALS[low]
            nxt = self.peek().lower()
            if nxt in _DAYS:
                self.take()
                self.set_weekday(count, _DAYS[nxt])
            else:
                self.relunit(count)
        elif low in ("now", "today"):
            self.take()
            self.rels_seen = True
        elif low in ("yesterday", "tomorrow"):
            self.take()
            self.add_rel("day", -1 if low == "yesterday" else 1)
        elif self.unit_name(low) is not None:
            self.relunit(1)
        elif low in _ZONES:
            self.take()
            self.set_zone(_ZONES[low])
        else:
            raise FormatError(f"unknown word {tok!r}")

    def set_weekday(self, ordinal: int, day: int) -> None:
        if self.weekday is not None:
            raise FormatError("two week days")
        self.weekday = (ordinal, day)

    @staticmethod
    def unit_name(word: str) -> str | None:
        if word in _UNITS:
            return word
        if word.endswith("s") and word[:-1] in _UNITS:
            return word[:-1]
        return None

    def relunit(self, count: float) -> None:
        """A relative unit after its (already read) count, then an optional ``ago``."""
        unit = self.unit_name(self.peek().lower())
        if unit is None:
            raise FormatError("number without a unit")
        self.take()
        if self.peek().lower() == "ago":
            self.take()
            count = -count
        self.add_rel(unit, count)

    def number_item(self) -> None:
        digits = self.peek()
        nxt = self.peek(1)
        if nxt == ":" and self.is_num(2):
            self.clock()
        elif nxt == "-" and self.is_num(2) and self.peek(3) == "-" and self.is_num(4):
            year, _, month, _, day = self.take(5)
            self.set_date(int(year), int(month), int(day), len(year))
            if self.peek() == "T" and self.is_num(1):
                self.take()
                self.clock()
        elif nxt == "-" and self.peek(2).lower() in _MONTHS and self.peek(3) == "-":
            day, _, month, _ = self.take(4)
            if not self.is_num():
                raise FormatError("bad date")
            year = self.take()[0]
            self.set_date(int(year), _MONTHS[month.lower()], int(day), len(year))
        elif nxt == "/" and self.is_num(2):
            month, _, day = self.take(3)
            if self.peek() == "/" and self.is_num(1):
                self.take()
                year = self.take()[0]
                self.set_date(int(year), int(month), int(day), len(year))
            else:
                self.set_date(None, int(month), int(day))
        elif nxt.lower() in _MONTHS:
            self.take(2)
            mday, mon = int(digits), _MONTHS[nxt.lower()]
            if self.is_num() and self.peek(1) != ":":
                year = self.take()[0]
                self.set_date(int(year), mon, mday, len(year))
            else:
                self.set_date(None, mon, mday)
        elif nxt.lower() in ("am", "pm", "a", "p"):
            self.take()
            self.set_time(int(digits), 0, 0.0, self.meridian())
        elif self.unit_name(nxt.lower()) is not None:
            self.take()
            self.relunit(int(digits))
        else:
            self.take()
            self.bare_number(digits)

    def bare_number(self, digits: str) -> None:
        """gnulib's ``number`` rule: a year, a YYYYMMDD date, or an HHMM time."""
        value = int(digits)
        if (self.date is not None and self.date[0] is None and not self.rels_seen
                and (self.time is not None or len(digits) > 2)):
            self.date = (value, self.date[1], self.date[2])
        elif len(digits) > 4:
            self.set_date(value // 10000, value // 100 % 100, value % 100)
        elif len(digits) <= 2:
            self.set_time(value, 0, 0.0, self.meridian())
        else:
            self.set_time(value // 100, value % 100, 0.0, self.meridian())


def parse_date(text: str, now: float) -> int:
    """Seconds since the epoch that ``text`` names (gnulib ``parse_datetime`` semantics),
    relative items counted from ``now``. Raises :class:`FormatError`."""
    try:
        return _parse(text, now)
    except (FormatError, ValueError, OverflowError, OSError):
        raise FormatError(f"Could not parse '{text}'") from None


def _parse(text: str, now: float) -> int:
    stripped = text.strip()
    epoch = re.fullmatch(r"@\s*([-+]?\d+)(?:[.,]\d+)?", stripped)
    if epoch:
        return int(epoch.group(1))
    parser = _Parser(_tokens(stripped))
    while parser.i < len(parser.t):
        parser.item()
    local_now = datetime.datetime.fromtimestamp(now)
    year, month, day = local_now.year, local_now.month, local_now.day
    if parser.date is not None:
        year = parser.date[0] if parser.date[0] is not None else year
        month, day = parser.date[1], parser.date[2]
        datetime.date(year, month, day)  # refuses a day the calendar lacks, as gnulib does
    if parser.time is not None:
        hour, minute, second = parser.time
        if hour > 23 or minute > 59 or second >= 61:
            raise FormatError("bad time")
    elif parser.rels_seen and parser.date is None and parser.weekday is None:
        hour, minute = local_now.hour, local_now.minute
        second = local_now.second + local_now.microsecond / 1e6
    else:
        hour, minute, second = 0, 0, 0.0
    # Calendar arithmetic as mktime normalises it: months carry into years, days overflow.
    months = year * 12 + (month - 1) + int(parser.rel["y"]) * 12 + int(parser.rel["m"])
    base = datetime.date(months // 12, months % 12 + 1, 1)
    moved = base + datetime.timedelta(days=day - 1 + int(parser.rel["d"]))
    if parser.weekday is not None and parser.date is None:
        ordinal, number = parser.weekday
        wday = (moved.weekday() + 1) % 7  # C's tm_wday: Sunday is 0
        shift = (number - wday + 7) % 7 + 7 * (ordinal - (1 if ordinal > 0 and wday != number
                                                          else 0))
        moved += datetime.timedelta(days=shift)
    stamp = datetime.datetime(moved.year, moved.month, moved.day, hour, minute, int(second))
    if parser.zone is not None:
        tz = datetime.timezone(datetime.timedelta(minutes=parser.zone))
        seconds = stamp.replace(tzinfo=tz).timestamp()
    else:
        seconds = stamp.timestamp()  # local time, as mktime
    return int(seconds + (second - int(second)) + parser.rel["s"])
