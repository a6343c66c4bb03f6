"""Cookie jars: ``REMOTE.cookies.txt`` in the Netscape/Mozilla text format, and the ``Cookie``
header a request carries.

One line per cookie, seven TAB-separated fields::

    domain  include-subdomains  path  secure  expires  name  value
    .example.com  TRUE  /  FALSE  2584748574  session  abc123

Two readers, because libostree itself reads the file two ways:

- :func:`ostree_entries` is how ``ostree remote list-cookies`` and ``delete-cookie`` read it
  (``ot-remote-cookie-util.c``: ``sscanf("%ms\\t%ms\\t%ms\\t%ms\\t%llu\\t%ms\\t%ms")``, so any
  whitespace separates fields and a value ends at its first space).
- :func:`parse_jar` is how libcurl (libostree's HTTP back-end) loads the jar for a pull: fields
  split on TABs only, a ``#HttpOnly_`` prefix is honoured, other ``#`` lines are comments, a
  missing value is empty, expired cookies are dropped. :func:`cookie_header` then picks the
  cookies for one request URL the way libcurl 7.88 does.

Pure: no file I/O; the time comes in as an argument.
"""

from __future__ import annotations

import calendar
import datetime
import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

import attrs

from ..errors import UsageError

__all__ = [
    "Cookie",
    "JarEntry",
    "cookie_header",
    "cookie_line",
    "delete_cookie",
    "describe_entries",
    "expiry_in_25_years",
    "ostree_entries",
    "parse_jar",
]

_C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale
_WORD = re.compile(r"[ \t\n\v\f\r]*([^ \t\n\v\f\r]+)")
_ULL = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")
_U64 = 1 << 64
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# g_date_time_new_from_unix_utc() accepts years 1 to 9999.
_GLIB_MIN_UNIX = -62135596800
_GLIB_MAX_UNIX = 253402300799
# libcurl limits: cookies sent per request, and the length of the Cookie header's value.
MAX_COOKIES_SENT = 150
MAX_COOKIE_HEADER = 8190
MAX_JAR_LINE = 5000  # libcurl skips longer lines (newline and NUL included)


# --------------------------------------------------------------------------- ostree's reader


@attrs.frozen
class JarEntry:
    """One line as ``ostree remote list-cookies`` reads it (fields are whitespace-free)."""

    domain: str
    flag: str
    path: str
    secure: str
    expiration: int  # an unsigned 64-bit number, as ``%llu`` stores it
    name: str
    value: str
    line: str  # the whole line (without its newline)


def _scan_line(line: str) -> JarEntry | None:
    """``sscanf(line, "%ms\\t%ms\\t%ms\\t%ms\\t%llu\\t%ms\\t%ms") == 7``, or None."""
    words: list[str] = []
    pos = 0
    for field in range(7):
        m = (_ULL if field == 4 else _WORD).match(line, pos)
        if m is None:
            return None
        pos = m.end()
        if field == 4:
            sign, digits = m.group(1), m.group(2)
            number = min(int(digits), _U64 - 1)  # strtoull saturates
            words.append(str((-number) % _U64 if sign == "-" else number))
        else:
            words.append(m.group(1))
    domain, flag, path, secure, expiration, name, value = words
    return JarEntry(domain, flag, path, secure, int(expiration), name, value, line)


def ostree_entries(text: str) -> list[JarEntry]:
    """The cookies of a jar as libostree's cookie commands see them; other lines are skipped."""
    out = []
    for line in text.split("\n"):
        entry = _scan_line(line)
        if entry is not None:
            out.append(entry)
    return out


def _glib_utc(expiration: int) -> str | None:
    """``g_date_time_format(g_date_time_new_from_unix_utc(t), "%Y-%m-%d %H:%M:%S +0000")``
    for the unsigned ``expiration`` read back as a signed 64-bit number; None out of range."""
    t = expiration - _U64 if expiration >= 1 << 63 else expiration
    if not _GLIB_MIN_UNIX <= t <= _GLIB_MAX_UNIX:
        return None
    d = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=t)
    return f"{d.year}-{d:%m-%d %H:%M:%S} +0000"


def describe_entries(entries: Iterable[JarEntry]) -> str:
    """What ``ostree remote list-cookies`` prints for these cookies."""
    out = []
    for e in entries:
        out += ["--", f"Domain: {e.domain}", f"Path: {e.path}", f"Name: {e.name}",
                f"Secure: {e.secure}"]
        expires = _glib_utc(e.expiration)
        if expires is not None:
            out.append(f"Expires: {expires}")
        out.append(f"Value: {e.value}")
    return "".join(line + "\n" for line in out)


def expiry_in_25_years(now: datetime.datetime) -> int:
    """``g_date_time_add_years(now, 25)`` as a Unix time (29 February becomes 28 February)."""
    now = now.astimezone(datetime.UTC)
    year = now.year + 25
    day = min(now.day, calendar.monthrange(year, now.month)[1])
    return int(now.replace(year=year, day=day).timestamp())


def cookie_line(domain: str, path: str, name: str, value: str, expires: int) -> str:
    """The line ``ostree remote add-cookie`` appends (libsoup's ``write_cookie`` layout):
    include-subdomains is TRUE for a domain starting with a dot, secure is FALSE."""
    if any(c in field for field in (domain, path, name, value) for c in "\t\r\n"):
        # libostree writes them as given, which breaks the line up or adds another cookie
        raise UsageError("a cookie's domain, path, name and value cannot hold tabs or newlines")
    flag = "TRUE" if domain.startswith(".") else "FALSE"
    return f"{domain}\t{flag}\t{path}\tFALSE\t{expires}\t{name}\t{value}\n"


def delete_cookie(text: str, domain: str, path: str, name: str) -> tuple[str, bool]:
    """The jar without every cookie matching ``domain``, ``path`` and ``name`` exactly (as
    ``ostree remote delete-cookie`` compares them), and whether there was one. Unlike
    libostree, lines it cannot read are kept as they were rather than dropped."""
    kept = []
    found = False
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        entry = _scan_line(line)
        if entry is not None and (entry.domain, entry.path, entry.name) == (domain, path, name):
            found = True
            continue
        kept.append(line + "\n")
    return "".join(kept), found


# --------------------------------------------------------------------------- libcurl's reader


@attrs.frozen
class Cookie:
    """One cookie of a jar, as libcurl loads it."""

    domain: str  # without a leading dot
    tailmatch: bool  # also for subdomains (the include-subdomains field is TRUE)
    path: str  # as written (sorting uses its length)
    secure: bool
    expires: int  # Unix time; 0: a session cookie, which never expires
    name: str
    value: str
    http_only: bool = False

    @property
    def match_path(self) -> str:
        """The path used for matching (curl's ``sanitize_cookie_path``): surrounding quotes
        dropped, "/" unless it starts with "/", one trailing "/" removed."""
        p = self.path
        if p.startswith('"'):
            p = p[1:]
        if p.endswith('"'):
            p = p[:-1]
        if not p.startswith("/"):
            return "/"
        return p[:-1] if len(p) > 1 and p.endswith("/") else p


def _curl_offt(text: str) -> int | None:
    """``curlx_strtoofft(text, NULL, 10)``: leading space and "+" allowed, trailing junk
    ignored; no digits, a minus sign or an overflow fail."""
    text = text.lstrip(_C_SPACE)
    m = re.match(r"\+?([0-9]+)", text)
    if m is None:
        return None
    value = int(m.group(1))
    return value if value < 1 << 63 else None


def _lower(text: str) -> str:
    """ASCII-only lower case, as curl's ``strcasecompare`` folds."""
    return text.translate(_ASCII_LOWER)


def _blen(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _jar_line(line: str) -> Cookie | None:
    line = line.lstrip(" \t")
    http_only = line.startswith("#HttpOnly_")
    if http_only:
        line = line[len("#HttpOnly_"):]
    if line.startswith("#"):
        return None
    line = line.split("\r", 1)[0]
    fields = [f for f in line.split("\t") if f]  # strtok: empty fields vanish
    if len(fields) < 3:
        return None
    domain, flag, path, *rest = fields
    if path in ("TRUE", "FALSE"):  # the old layout without a path field
        rest = [path, *rest]
        path = "/"
    if len(rest) == 3:  # no value: an empty one
        rest.append("")
    if len(rest) != 4:
        return None
    secure, expires_text, name, value = rest
    expires = _curl_offt(expires_text)
    if expires is None:
        return None
    cookie = Cookie(domain.removeprefix("."), _lower(flag) == "true", path,
                    _lower(secure) == "true", expires, name, value, http_only)
    lname = _lower(name)
    if lname.startswith("__secure-") and not cookie.secure:
        return None
    if lname.startswith("__host-") and not (cookie.secure and path == "/"
                                            and not cookie.tailmatch):
        return None
    return cookie


def parse_jar(text: str, now: float) -> tuple[Cookie, ...]:
    """The cookies libcurl loads from a jar at time ``now``: unreadable lines and expired
    cookies are left out, and a later line for the same name, domain and path replaces the
    earlier one in its place."""
    jar: list[Cookie] = []
    for line in text.split("\n"):
        if _blen(line) + 2 > MAX_JAR_LINE:
            continue
        cookie = _jar_line(line)
        if cookie is None:
            continue
        for i, old in enumerate(jar):
            if (_lower(old.name) == _lower(cookie.name)
                    and _lower(old.domain) == _lower(cookie.domain)
                    and old.tailmatch == cookie.tailmatch
                    and _lower(old.match_path) == _lower(cookie.match_path)):
                jar[i] = cookie
                break
        else:
            jar.append(cookie)
    return tuple(c for c in jar if not _expired(c, now))


def _expired(cookie: Cookie, now: float) -> bool:
    return cookie.expires != 0 and cookie.expires < int(now)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _top_domain(domain: str) -> str:
    """The last two labels (curl files cookies by them: others never match)."""
    return ".".join(_lower(domain).split(".")[-2:])


def _domain_matches(cookie: Cookie, host: str, is_ip: bool) -> bool:
    domain = _lower(cookie.domain)
    if not cookie.tailmatch or is_ip:
        return host == domain
    if _top_domain(domain) != _top_domain(host):
        return False
    return host == domain or host.endswith("." + domain)


def _path_matches(cookie_path: str, uri_path: str) -> bool:
    """curl's ``pathmatch`` (RFC 6265 §5.1.4 on the sanitized cookie path)."""
    if cookie_path == "/":
        return True
    if not uri_path.startswith("/"):
        uri_path = "/"
    if not uri_path.startswith(cookie_path):
        return False
    return len(uri_path) == len(cookie_path) or uri_path[len(cookie_path)] == "/"


def _secure_context(scheme: str, host: str) -> bool:
    """Where libcurl sends ``secure`` cookies: https, and loopback names over plain http."""
    return scheme == "https" or host in ("localhost", "127.0.0.1", "::1")


def cookie_header(cookies: Iterable[Cookie], url: str, now: float) -> str | None:
    """The ``Cookie`` header value libcurl sends with a request for ``url`` at time ``now``,
    or None when no cookie applies.

    A cookie applies when it has not expired, its domain is the URL's host (or, when it is
    for subdomains too, a parent domain of it; IP addresses must match exactly), its path is
    a prefix of the URL's path ending at a "/" boundary, and it is not ``secure`` unless the
    request is https or goes to localhost. The longest path comes first, then the longest
    domain, the longest name, and the cookie read last."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = _lower(parts.hostname or "")
    if scheme not in ("http", "https") or not host:
        return None
    secure = _secure_context(scheme, host)
    is_ip = _is_ip(host)
    chosen: list[tuple[int, Cookie]] = []
    for order, cookie in enumerate(cookies):
        if _expired(cookie, now) or (cookie.secure and not secure):
            continue
        if not _domain_matches(cookie, host, is_ip):
            continue
        if not _path_matches(cookie.match_path, parts.path):
            continue
        chosen.append((order, cookie))
        if len(chosen) >= MAX_COOKIES_SENT:
            break
    chosen.sort(key=lambda oc: (-_blen(oc[1].path), -_blen(oc[1].domain),
                                -_blen(oc[1].name), -oc[0]))
    out: list[str] = []
    length = 0
    for _, cookie in chosen:
        add = _blen(cookie.name) + _blen(cookie.value) + 1
        if length + add >= MAX_COOKIE_HEADER:
            break
        out.append(f"{cookie.name}={cookie.value}")
        length += add + (2 if len(out) > 1 else 0)
    return "; ".join(out) or None
