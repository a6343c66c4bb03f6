"""What ``ostree remote gpg-list-keys`` prints: libostree's ``ot_dump_gpg_key`` over the keys
gpgme lists, with the OpenPGP Web Key Directory URLs of each user id's mail address.

GnuPG's listing rules are followed where they change the output: the primary user id comes
first (among those not revoked: the one whose newest self-signature flags it primary, else the
most recently self-signed one); a revoked key shows its user ids and subkeys revoked; an
expired primary key makes its subkeys expired (keeping their own dates); gpgme keeps one state
per key (invalid, else revoked, else expired), so a revoked key past its expiry date still
says "Expires".

Pure: keys come in as :class:`pyostree.gpg.KeyInfo`, the current time as an argument.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import quote

from .gpg import KeyInfo, UserIdInfo
from .gpg import _local_time as local_time  # glib's "%c" in the C locale, local time

__all__ = ["describe_keys", "mailbox_from_user_id", "wkd_urls", "zbase32"]

_ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"
_MAIL_CHARS = frozenset("0123456789_-.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOCAL_EXTRA = frozenset("!#$%&'*+/=?^`{|}~")


def zbase32(data: bytes) -> str:
    """z-base-32 (the WKD hash encoding): 5-bit groups, most significant bit first."""
    bits = int.from_bytes(data, "big")
    nbits = len(data) * 8
    pad = -nbits % 5
    bits <<= pad
    return "".join(_ZBASE32[(bits >> shift) & 31] for shift in range(nbits + pad - 5, -1, -5))


def _ascii_lower(text: str) -> str:
    return "".join(chr(ord(c) | 0x20) if "A" <= c <= "Z" else c for c in text)


def _valid_mailbox(name: str) -> bool:
    """gpgme's ``is_valid_mailbox`` (non-ASCII characters are let through)."""
    at_seen = False
    for c in name:
        if ord(c) >= 0x80:
            continue
        if c == "@":
            at_seen = True
        elif c not in _MAIL_CHARS and (at_seen or c not in _LOCAL_EXTRA):
            return False
    return (name.count("@") == 1 and not name.startswith("@") and not name.endswith(("@", "."))
            and ".." not in name)


def mailbox_from_user_id(user_id: str) -> str | None:
    """The mail address of a user id as gpgme finds it (``_gpgme_mailbox_from_userid``): the
    part in ``<...>``, or the whole user id if it is a plain address; ASCII lower-cased."""
    start = user_id.find("<")
    if start >= 0:
        end = user_id.find(">", start + 1)
        if end <= start + 1:
            return None
        box = user_id[start + 1:end]
        if (box.count("@") != 1 or box.startswith("@") or box.endswith(("@", "."))
                or any(ord(c) <= 0x20 for c in box)
                or ".." in box.partition("@")[2]):
            return None
    elif _valid_mailbox(user_id):
        box = user_id
    else:
        return None
    return _ascii_lower(box)


def wkd_urls(address: str) -> tuple[str, str]:
    """The advanced and direct Web Key Directory URLs of ``address`` (libostree's
    ``ot_gpg_wkd_urls``, after draft-koch-openpgp-webkey-service)."""
    local, domain = address.split("@")
    digest = hashlib.sha1(_ascii_lower(local).encode(), usedforsecurity=False).digest()
    hashed = zbase32(digest)
    escaped = quote(local, safe="")
    advanced = (f"https://openpgpkey.{domain}/.well-known/openpgpkey/{_ascii_lower(domain)}"
                f"/hu/{hashed}?l={escaped}")
    direct = f"https://{domain}/.well-known/openpgpkey/hu/{hashed}?l={escaped}"
    return advanced, direct


def _uid_bytes(uid: UserIdInfo) -> bytes:
    return uid.user_id.encode("utf-8", "surrogateescape")


def _later(a: UserIdInfo, b: UserIdInfo) -> bool:
    """GnuPG's choice between two user ids of equal date (``cmp_user_ids(a, b) > 0``)."""
    ab, bb = _uid_bytes(a), _uid_bytes(b)
    return len(ab) > len(bb) or (len(ab) == len(bb) and ab > bb)


def _primary_first(uids: tuple[UserIdInfo, ...]) -> list[UserIdInfo]:
    """The user ids with GnuPG's primary user id moved to the front."""
    best: UserIdInfo | None = None
    for flagged in (True, False):
        for uid in uids:
            if uid.certified is None or uid.revoked or uid.primary != flagged:
                continue
            if best is None or _unix(uid.certified) > _unix(best.certified) or (
                    _unix(uid.certified) == _unix(best.certified) and _later(uid, best)):
                best = uid
        if best is not None:
            break
    if best is None:  # nothing valid is self-signed: the user id that sorts last
        for uid in uids:
            if best is None or _later(uid, best):
                best = uid
    if best is None:
        return []
    rest = list(uids)
    rest.remove(best)
    return [best, *rest]


def _unix(t: datetime | None) -> int:
    return int(t.timestamp()) if t is not None else 0


def _key_lines(fingerprint: str, created: datetime, expires: int, state: str,
               expired: bool, primary: bool) -> list[str]:
    """``dump_gpg_subkey``: the Key/Subkey line, Created and, if any, Expires/Expired."""
    indent = "  " if primary else "    "
    flags = {"revoked": " (revoked)", "invalid": " (invalid)"}.get(state, "")
    out = [f"{'Key' if primary else '  Subkey'}: {fingerprint}{flags}",
           f"{indent}Created: {local_time(created)}"]
    if expires > 0:
        label = "Expired" if expired and state == "" else "Expires"
        out.append(f"{indent}{label}: {local_time(datetime.fromtimestamp(expires, UTC))}")
    return out


def _describe_key(key: KeyInfo, now: int) -> list[str]:
    invalid = not any(u.certified is not None for u in key.all_user_ids)
    state = "invalid" if invalid else "revoked" if key.revoked else ""
    expires = _unix(key.expires)
    expired = 0 < expires < now
    out = _key_lines(key.fingerprint, key.created, expires, state, expired, True)
    for uid in _primary_first(key.all_user_ids):
        revoked = " (revoked)" if uid.revoked or key.revoked else ""
        address = mailbox_from_user_id(uid.user_id)
        advanced, direct = wkd_urls(address) if address else ("", "")
        out += [f"  UID: {uid.user_id}{revoked}", f"  Advanced update URL: {advanced}",
                f"  Direct update URL: {direct}"]
    for sub in key.subkeys:
        sub_state = ("invalid" if invalid or not sub.bound
                     else "revoked" if key.revoked or sub.revoked else "")
        sub_expires = _unix(sub.expires)
        sub_expired = 0 < sub_expires < now
        if expired:  # an expired primary key takes its subkeys with it (not their dates)
            sub_expired = True
        out += _key_lines(sub.fingerprint, sub.created, sub_expires, sub_state, sub_expired,
                          False)
    return out


def describe_keys(keys: Iterable[KeyInfo], now: datetime) -> str:
    """What ``ostree remote gpg-list-keys`` prints for ``keys`` at time ``now``."""
    t = int(now.timestamp())
    return "".join(line + "\n" for key in keys for line in _describe_key(key, t))
