"""A remote's cookie jar, ``REPO/REMOTE.cookies.txt``: what ``remote add-cookie``,
``delete-cookie`` and ``list-cookies`` edit and show, and the cookies a pull sends.

The format, libostree's and libcurl's readings of it and the matching rules are in
:mod:`pyostree.formats.cookies`; this module only reads and writes the file. Edits replace
the jar atomically (keeping its permissions, since cookies are often credentials) and are not
locked against each other, as in libostree.
"""

from __future__ import annotations

import datetime
import os
import stat
import time
from pathlib import Path

from .errors import FormatError, RepoError
from .fileio import atomic_write, os_error
from .formats.cookies import (
    Cookie,
    cookie_line,
    delete_cookie,
    describe_entries,
    expiry_in_25_years,
    ostree_entries,
    parse_jar,
)
from .repo import Repo

__all__ = ["add_cookie", "jar_path", "list_cookies", "load_cookies", "remove_cookie"]


def jar_path(repo: Repo, remote: str) -> Path:
    return repo.path / f"{remote}.cookies.txt"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_error(exc, f"reading {path}") from exc


def _text(path: Path, data: bytes) -> str:
    """The jar as text; libostree refuses one that is not UTF-8 (or holds a NUL byte)."""
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise FormatError(f"{path}: invalid UTF-8")
    return text


def _mode(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o644
    except OSError as exc:
        raise os_error(exc, f"reading {path}") from exc


def add_cookie(repo: Repo, remote: str, domain: str, path: str, name: str, value: str,
               *, now: datetime.datetime | None = None) -> None:
    """Append a cookie valid for 25 years (``ostree remote add-cookie``)."""
    jar = jar_path(repo, remote)
    old = _read(jar) or b""
    if old and not old.endswith(b"\n"):
        old += b"\n"  # libostree would glue the new line onto a last line without newline
    expires = expiry_in_25_years(now or datetime.datetime.now(datetime.UTC))
    line = cookie_line(domain, path, name, value, expires)
    atomic_write(jar, old + line.encode("utf-8", "surrogateescape"), mode=_mode(jar))


def remove_cookie(repo: Repo, remote: str, domain: str, path: str, name: str) -> None:
    """Remove every cookie with this domain, path and name (``ostree remote delete-cookie``);
    RepoError ``Cookie not found in jar``, and nothing written, if there is none."""
    jar = jar_path(repo, remote)
    data = _read(jar)
    text, found = delete_cookie(_text(jar, data) if data is not None else "", domain, path, name)
    if not found:
        raise RepoError("Cookie not found in jar", path=str(jar))
    atomic_write(jar, text.encode("utf-8"), mode=_mode(jar))


def list_cookies(repo: Repo, remote: str) -> str:
    """What ``ostree remote list-cookies`` prints ("" for no jar)."""
    jar = jar_path(repo, remote)
    data = _read(jar)
    return describe_entries(ostree_entries(_text(jar, data))) if data is not None else ""


def load_cookies(repo: Repo, remote: str, now: float | None = None) -> tuple[Cookie, ...]:
    """The cookies a pull from ``remote`` may send (libcurl's reading of the jar); none for a
    missing jar or an anonymous URL remote. Cookies that are not ASCII are left out: HTTP
    header values must be."""
    if "/" in remote or not remote:
        return ()
    jar = jar_path(repo, remote)
    try:  # like libcurl, a jar that cannot be read gives no cookies
        data = jar.read_bytes() if jar.is_file() else None
    except OSError:
        data = None
    if data is None:
        return ()
    cookies = parse_jar(data.decode("utf-8", "replace"), time.time() if now is None else now)
    return tuple(c for c in cookies if (c.name + c.value).isascii())
