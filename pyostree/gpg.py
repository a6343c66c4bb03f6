"""OpenPGP for OSTree: keyrings, detached-signature checks (``ostree.gpgsigs``) and signing.

Pure over bytes, except :func:`secret_keys_from_homedir` at the very end, the one function that
reads files. This is the only module that imports pgpy. pgpy does the packet bodies and the
public-key maths; the policy is here, because pgpy stops reading a keyring at GnuPG trust packets,
ignores revocations and subkey expiry, and does not check cross-certification. A signature is
accepted, as libostree (gpgme) would, when it verifies over the data, its issuer is a key (or a
bound signing subkey) in the keyring, and neither that key nor its primary is revoked or expired at
the signature's time or now. Designated-revoker (third-party) revocations are not honoured.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any

import attrs
import pgpy
from cryptography.hazmat.primitives import hashes
from pgpy.constants import HashAlgorithm, KeyFlags

from .errors import FormatError, SignatureError, UsageError

__all__ = [
    "GPG_METADATA_KEY",
    "Failure",
    "KeyInfo",
    "Keyring",
    "Packet",
    "SecretKey",
    "SignatureStatus",
    "SubkeyInfo",
    "UserIdInfo",
    "VerifyResult",
    "dearmor",
    "find_secret_key",
    "inspect_detached",
    "load_secret_keys",
    "secret_keys_from_homedir",
    "select_key",
    "sign_detached",
    "split_packets",
    "verify_detached",
]

GPG_METADATA_KEY = "ostree.gpgsigs"

# Packet tags (RFC 4880 §4.3).
TAG_SIGNATURE = 2
TAG_SECRET_KEY = 5
TAG_PUBLIC_KEY = 6
TAG_SECRET_SUBKEY = 7
TAG_MARKER = 10
TAG_TRUST = 12
TAG_USER_ID = 13
TAG_PUBLIC_SUBKEY = 14
TAG_USER_ATTRIBUTE = 17

_PRIMARY_TAGS = {TAG_PUBLIC_KEY, TAG_SECRET_KEY}
_SUBKEY_TAGS = {TAG_PUBLIC_SUBKEY, TAG_SECRET_SUBKEY}
_PART_TAGS = {TAG_USER_ID, TAG_USER_ATTRIBUTE} | _SUBKEY_TAGS
_CERT_TYPES = {0x10, 0x11, 0x12, 0x13}
_DOCUMENT_TYPES = {0x00, 0x01}
# OpenPGP public-key algorithm ids and the names gpgme gives them (gpgme_pubkey_algo_name).
_ALGO_NAMES = {1: "RSA", 2: "RSA-E", 3: "RSA-S", 16: "ELG-E", 17: "DSA", 18: "ECDH", 19: "ECDSA",
               22: "EdDSA"}
_ACCEPTED_HASHES = {"SHA1", "SHA224", "SHA256", "SHA384", "SHA512"}
_SIGNING_HASHES = {"SHA256": HashAlgorithm.SHA256, "SHA384": HashAlgorithm.SHA384,
                   "SHA512": HashAlgorithm.SHA512}
_HOMEDIR_SUFFIXES = (".asc", ".gpg", ".key")
_HOMEDIR_SKIP = {"trustdb.gpg"}


# --------------------------------------------------------------------------- packet framing


@attrs.frozen
class Packet:
    """One OpenPGP packet: its tag, its body and the bytes it was read from (header included)."""

    tag: int
    body: bytes
    raw: bytes = attrs.field(eq=False, repr=False)

    @classmethod
    def new(cls, tag: int, body: bytes) -> Packet:
        """A packet with a new-format header of definite length."""
        n = len(body)
        if n < 192:
            hdr = bytes([n])
        elif n < 8384:
            n -= 192
            hdr = bytes([(n >> 8) + 192, n & 0xFF])
        else:
            hdr = b"\xff" + n.to_bytes(4, "big")
        return cls(tag, body, bytes([0xC0 | tag]) + hdr + body)


def _take(data: bytes, pos: int, n: int) -> bytes:
    if n < 0 or pos + n > len(data):
        raise FormatError(f"truncated OpenPGP packet at offset {pos}")
    return data[pos : pos + n]


def split_packets(data: bytes) -> list[Packet]:
    """Split a binary OpenPGP packet stream (old and new headers, partial lengths)."""
    packets: list[Packet] = []
    pos = 0
    while pos < len(data):
        start = pos
        ctb = data[pos]
        pos += 1
        if not ctb & 0x80:
            raise FormatError(f"not an OpenPGP packet header at offset {start}")
        if ctb & 0x40:  # new format
            tag = ctb & 0x3F
            chunks: list[bytes] = []
            while True:
                o1 = _take(data, pos, 1)[0]
                pos += 1
                if o1 < 192:
                    n = o1
                elif o1 < 224:
                    n = ((o1 - 192) << 8) + _take(data, pos, 1)[0] + 192
                    pos += 1
                elif o1 == 255:
                    n = int.from_bytes(_take(data, pos, 4), "big")
                    pos += 4
                else:  # partial body length: a chunk, then more length octets
                    n = 1 << (o1 & 0x1F)
                    chunks.append(_take(data, pos, n))
                    pos += n
                    continue
                chunks.append(_take(data, pos, n))
                pos += n
                break
            body = b"".join(chunks)
            partial = len(chunks) > 1
        else:  # old format
            tag = (ctb >> 2) & 0x0F
            ltype = ctb & 0x03
            if ltype == 3:
                n = len(data) - pos
            else:
                size = (1, 2, 4)[ltype]
                n = int.from_bytes(_take(data, pos, size), "big")
                pos += size
            body = _take(data, pos, n)
            pos += n
            partial = False
        if tag == 0:
            raise FormatError(f"OpenPGP packet with reserved tag 0 at offset {start}")
        packets.append(Packet.new(tag, body) if partial else Packet(tag, body, data[start:pos]))
    return packets


_ARMOR_BEGIN = re.compile(rb"^-----BEGIN PGP ([A-Z0-9 ,/]+)-----$")


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor(data: bytes) -> list[tuple[str, bytes]]:
    """Every ASCII-armored block in ``data``, as ``(label, binary)``; the CRC24 is checked."""
    blocks: list[tuple[str, bytes]] = []
    lines = [line.strip() for line in data.splitlines()]
    i = 0
    while i < len(lines):
        m = _ARMOR_BEGIN.match(lines[i])
        i += 1
        if not m:
            continue
        label = m.group(1).decode("ascii")
        while i < len(lines) and b": " in lines[i]:  # armor headers
            i += 1
        body: list[bytes] = []
        crc: bytes | None = None
        while True:
            if i >= len(lines):
                raise FormatError(f"unterminated armored block PGP {label}")
            line = lines[i]
            i += 1
            if line.startswith(b"-----END PGP "):
                if line != b"-----END PGP " + m.group(1) + b"-----":
                    raise FormatError(f"armored block PGP {label} has a mismatched END line")
                break
            if line.startswith(b"=") and len(line) == 5:
                crc = line[1:]
            elif line:
                body.append(line)
        try:
            raw = base64.b64decode(b"".join(body), validate=True)
            want = int.from_bytes(base64.b64decode(crc, validate=True), "big") if crc else None
        except (binascii.Error, ValueError) as exc:
            raise FormatError(f"bad base64 in armored block PGP {label}") from exc
        if want is not None and _crc24(raw) != want:
            raise FormatError(f"CRC24 mismatch in armored block PGP {label}")
        blocks.append((label, raw))
    return blocks


def _packets_of(data: bytes) -> list[Packet]:
    """The packets of binary or ASCII-armored (possibly several blocks) OpenPGP data."""
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM before armored text
    if not data.strip():
        return []
    if data[0] & 0x80:
        return split_packets(data)
    blocks = dearmor(data)
    if not blocks:
        raise FormatError("neither binary OpenPGP packets nor an ASCII-armored block")
    return [p for _, raw in blocks for p in split_packets(raw)]


# --------------------------------------------------------------------------- key blocks


@attrs.frozen
class _Component:
    """A key, subkey, user id or user attribute packet with the signatures that follow it."""

    packet: Packet
    sigs: tuple[Packet, ...]

    def merged(self, other: _Component) -> _Component:
        return _Component(self.packet, _union(self.sigs, other.sigs))

    def to_bytes(self) -> bytes:
        return self.packet.raw + b"".join(s.raw for s in self.sigs)


def _union(a: Sequence[Packet], b: Sequence[Packet]) -> tuple[Packet, ...]:
    out = list(a)
    seen = set(a)
    for p in b:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return tuple(out)


@attrs.frozen
class _KeyBlock:
    """A transferable key (RFC 4880 §11.1) with trust and unknown packets removed."""

    primary: _Component
    parts: tuple[_Component, ...]

    @property
    def fingerprint(self) -> str:
        return _v4_fingerprint(self.primary.packet)

    @property
    def is_secret(self) -> bool:
        return self.primary.packet.tag == TAG_SECRET_KEY

    def merged(self, other: _KeyBlock) -> _KeyBlock:
        parts = list(self.parts)
        for part in other.parts:
            for i, mine in enumerate(parts):
                if mine.packet == part.packet:
                    parts[i] = mine.merged(part)
                    break
            else:
                parts.append(part)
        return _KeyBlock(self.primary.merged(other.primary), tuple(parts))

    def to_bytes(self) -> bytes:
        return self.primary.to_bytes() + b"".join(p.to_bytes() for p in self.parts)


def _v4_fingerprint(packet: Packet) -> str:
    body = packet.body
    if not body or body[0] != 4:
        raise FormatError(f"unsupported OpenPGP key version {body[0] if body else 0}")
    if packet.tag in (TAG_SECRET_KEY, TAG_SECRET_SUBKEY):
        # The fingerprint covers the public part only; let pgpy find where it ends.
        return ""
    data = b"\x99" + len(body).to_bytes(2, "big") + body
    return hashlib.sha1(data, usedforsecurity=False).hexdigest().upper()


def _key_blocks(packets: Iterable[Packet]) -> Iterator[_KeyBlock]:
    """Group packets into key blocks, dropping trust, marker and unsupported packets."""

    def block_of(comps: list[list[Packet]]) -> _KeyBlock:
        first, *rest = comps
        return _KeyBlock(
            _Component(first[0], tuple(first[1:])),
            tuple(_Component(c[0], tuple(c[1:])) for c in rest),
        )

    comps: list[list[Packet]] = []  # each: a key/uid/subkey packet, then its signatures
    keep = False  # whether signatures belong to comps[-1] (False after an unsupported packet)
    for pkt in packets:
        if pkt.tag in _PRIMARY_TAGS:
            if comps:
                yield block_of(comps)
            comps, keep = [[pkt]], True
        elif pkt.tag in _PART_TAGS and comps:
            comps.append([pkt])
            keep = True
        elif pkt.tag == TAG_SIGNATURE:
            if keep:
                comps[-1].append(pkt)
        elif pkt.tag not in (TAG_TRUST, TAG_MARKER):
            keep = False  # an unsupported component: drop it and its signatures
    if comps:
        yield block_of(comps)


# --------------------------------------------------------------------------- key state


def _crypto_ok(signer: Any, sig: Any, subject: Any) -> bool:
    """Whether ``sig`` verifies over ``subject`` with ``signer``'s key material (no policy)."""
    try:
        name = sig.hash_algorithm.name
        if name not in _ACCEPTED_HASHES:
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = signer._key.verify(sig.hashdata(subject), sig.__sig__,
                                        getattr(hashes, name)())
    except Exception:
        return False
    return result is True


def _sig_issuer(sig: Any) -> tuple[str, str]:
    """``(key id, fingerprint or "")`` named by a signature's subpackets."""
    fpr = ""
    try:
        fpr = str(sig.signer_fingerprint).replace(" ", "").upper()
    except Exception:
        fpr = ""
    if len(fpr) == 40:
        return fpr[-16:], fpr
    try:
        return str(sig.signer).upper(), ""
    except Exception:
        return "", ""


def _self_sigs(issuer: Any, holder: Any, types: set[int], subject: Any) -> list[Any]:
    """Signatures on ``holder`` of the given types by ``issuer`` that verify cryptographically."""
    kid = str(issuer.fingerprint.keyid)
    found = []
    for sig in holder.__sig__:
        try:
            if int(sig.type) not in types or sig.embedded or _sig_issuer(sig)[0] != kid:
                continue
            _ = (sig.created, sig.key_expiration, set(sig.key_flags))  # all must be readable
        except Exception:
            continue
        if _crypto_ok(issuer, sig, subject):
            found.append(sig)
    return found


def _expiry(created: datetime, sig: Any) -> datetime | None:
    delta = sig.key_expiration
    if delta is None or not delta:
        return None
    return created + delta  # type: ignore[no-any-return]


def _usage_can_sign(sig: Any, key: Any) -> bool:
    flags = set(sig.key_flags)
    if flags:
        return KeyFlags.Sign in flags
    return bool(key.key_algorithm.can_sign)  # no key-flags subpacket: what the algorithm can do


@attrs.frozen(eq=False)
class _SigningKey:
    """A primary key or subkey that may issue document signatures, with its evaluated state."""

    key: Any  # pgpy.PGPKey
    fingerprint: str
    key_id: str
    created: datetime
    problem: str  # "" if it can sign; else why not (unbound, not a signing key, ...)
    revoked: bool
    expires: datetime | None


@attrs.frozen(eq=False)
class _KeyState:
    """A loaded key block and what its self-signatures say about it."""

    block: _KeyBlock
    key: Any  # pgpy.PGPKey (primary)
    user_ids: tuple[str, ...]
    problem: str  # "" or why no part of this key may be used (no valid self-signature)
    primary: _SigningKey
    subkeys: tuple[_SigningKey, ...]

    @property
    def fingerprint(self) -> str:
        return self.primary.fingerprint

    def signing_keys(self) -> tuple[_SigningKey, ...]:
        return (self.primary, *self.subkeys)


def _evaluate(block: _KeyBlock) -> _KeyState:
    """Load a block with pgpy and evaluate self-signatures, revocations and expiry."""
    try:
        return _evaluate_unchecked(block)
    except FormatError:
        raise
    except Exception as exc:  # pgpy trips over something in this key
        raise FormatError(f"unsupported OpenPGP key: {type(exc).__name__}: {exc}") from exc


def _evaluate_unchecked(block: _KeyBlock) -> _KeyState:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loaded = pgpy.PGPKey.from_blob(block.to_bytes())
        except Exception as exc:
            raise FormatError(f"unsupported OpenPGP key: {exc}") from exc
    key = loaded[0] if isinstance(loaded, tuple) else loaded
    if key is None or key.fingerprint is None:
        raise FormatError("unsupported OpenPGP key")
    fpr = str(key.fingerprint).replace(" ", "").upper()
    if not block.is_secret and fpr != block.fingerprint:
        raise FormatError(f"OpenPGP key {block.fingerprint} was misread")
    kid = fpr[-16:]
    created: datetime = key.created

    # User ids: valid when self-certified and not revoked by a newer self-revocation.
    self_sigs: list[Any] = []
    user_ids: list[str] = []
    for uid in key.userids:
        certs = _self_sigs(key, uid, _CERT_TYPES, uid)
        if not certs:
            continue
        revs = _self_sigs(key, uid, {0x30}, uid)
        newest = max(certs, key=lambda s: s.created)
        if revs and max(r.created for r in revs) >= newest.created:
            continue
        self_sigs.extend(certs)
        user_ids.append(str(uid.userid))
    self_sigs.extend(_self_sigs(key, key, {0x1F}, key))
    revoked = bool(_self_sigs(key, key, {0x20}, key))
    key_problem, usage_problem, expires = "", "", None
    if self_sigs:
        latest = max(self_sigs, key=lambda s: s.created)
        expires = _expiry(created, latest)
        flagged = [s for s in self_sigs if set(s.key_flags)] or [latest]  # 0x1F often has none
        usage = max(flagged, key=lambda s: s.created)
        usage_problem = "" if _usage_can_sign(usage, key) else "is not a signing key"
    else:
        key_problem = "has no valid self-signature"
    primary = _SigningKey(key, fpr, kid, created, usage_problem, revoked, expires)

    subkeys = []
    for sub in key.subkeys.values():
        sfpr = str(sub.fingerprint).replace(" ", "").upper()
        bindings = _self_sigs(key, sub, {0x18}, sub)
        sub_revoked = bool(_self_sigs(key, sub, {0x28}, sub))
        sub_expires: datetime | None = None
        if not bindings:
            sub_problem = "is not bound to its primary key"
        else:
            latest = max(bindings, key=lambda s: s.created)
            sub_expires = _expiry(sub.created, latest)
            if not _usage_can_sign(latest, sub):
                sub_problem = "is not a signing key"
            elif not _cross_certified(sub, latest):
                sub_problem = "is a signing subkey that is not cross-certified"
            else:
                sub_problem = ""
        subkeys.append(
            _SigningKey(sub, sfpr, sfpr[-16:], sub.created, sub_problem, sub_revoked, sub_expires)
        )
    return _KeyState(block, key, tuple(user_ids), key_problem, primary, tuple(subkeys))


_UNBOUND = "is not bound to its primary key"  # the problem _evaluate_unchecked gives


def _user_id_infos(state: _KeyState) -> tuple[UserIdInfo, ...]:
    """Every user id of a key with its self-certification and revocation state."""
    key = state.key
    out: list[tuple[int, UserIdInfo]] = []
    # pgpy sorts user ids (primary first); listings keep the keyblock's order.
    position: dict[bytes, int] = {}
    for i, part in enumerate(state.block.parts):
        if part.packet.tag == TAG_USER_ID:
            position.setdefault(part.packet.body, i)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for uid in key.userids:
                packet = uid._uid
                body = packet.uid.encode("charmap" if packet._encoding_fallback else "utf-8")
                certs = _self_sigs(key, uid, _CERT_TYPES, uid)
                revs = _self_sigs(key, uid, {0x30}, uid)
                newest = max(certs, key=lambda s: s.created) if certs else None
                revoked = bool(revs) and (
                    newest is None or max(r.created for r in revs) >= newest.created)
                out.append((position.get(body, len(position)), UserIdInfo(
                    str(uid.userid), newest.created if newest is not None else None, revoked,
                    newest is not None and _flags_primary(newest))))
        except Exception:  # pgpy trips over something: list what could be read
            pass
    return tuple(info for _, info in sorted(out, key=lambda pi: pi[0]))


def _flags_primary(sig: Any) -> bool:
    try:
        return bool(next(iter(sig._signature.subpackets["h_PrimaryUserID"]), False))
    except Exception:
        return False


def _cross_certified(sub: Any, binding: Any) -> bool:
    """Whether ``binding`` embeds a good primary-key binding (0x19) signature by ``sub``."""
    for sig in sub.__sig__:
        try:
            if not (sig.embedded and sig.parent is binding and int(sig.type) == 0x19):
                continue
        except Exception:
            continue
        if _crypto_ok(sub, sig, sub):
            return True
    return False


def _load_states(packets: Iterable[Packet], *, secret: bool) -> tuple[list[_KeyState], list[str]]:
    """Key states for the public (or secret) key blocks in ``packets``; duplicates merged."""
    merged: dict[str, _KeyBlock] = {}
    skipped: list[str] = []
    order: list[_KeyBlock] = []
    for block in _key_blocks(packets):
        if block.is_secret != secret:
            continue
        try:
            fpr = block.fingerprint
        except FormatError as exc:
            skipped.append(str(exc))
            continue
        if fpr and fpr in merged:
            merged[fpr] = merged[fpr].merged(block)
        elif fpr:
            merged[fpr] = block
        else:
            order.append(block)
    states = []
    for block in [*merged.values(), *order]:
        try:
            states.append(_evaluate(block))
        except FormatError as exc:
            skipped.append(str(exc))
    return states, skipped


# --------------------------------------------------------------------------- keyring


@attrs.frozen
class SubkeyInfo:
    """One subkey of a key, as a key listing shows it."""

    fingerprint: str
    created: datetime
    expires: datetime | None
    revoked: bool
    bound: bool  # has a valid binding signature by its primary key


@attrs.frozen
class UserIdInfo:
    """One user id packet of a key, valid or not (``KeyInfo.user_ids`` has the valid ones)."""

    user_id: str
    certified: datetime | None  # time of its newest valid self-certification (None: none)
    revoked: bool  # a valid self-revocation at least as new as that certification
    primary: bool  # that certification flags it as the primary user id


@attrs.frozen
class KeyInfo:
    """What a keyring knows about one key, for listing (``gpg-list-keys``)."""

    fingerprint: str
    key_id: str
    user_ids: tuple[str, ...]
    created: datetime
    expires: datetime | None
    revoked: bool
    subkey_fingerprints: tuple[str, ...]
    # Every user id packet (keyblock order) and every subkey, with their states.
    all_user_ids: tuple[UserIdInfo, ...] = ()
    subkeys: tuple[SubkeyInfo, ...] = ()


@attrs.frozen(eq=False)
class Keyring:
    """Trusted OpenPGP public keys, one entry per primary key fingerprint."""

    _states: tuple[_KeyState, ...] = ()
    skipped: tuple[str, ...] = ()  # why some keys in the input could not be used

    @classmethod
    def from_bytes(cls, data: bytes) -> Keyring:
        """Read a binary keyring (with or without GnuPG trust packets) or armored keys.

        Keys pgpy cannot load (unknown algorithms, v3/v5 keys) are left out and listed in
        :attr:`skipped`; broken packet framing or armor raises :class:`FormatError`.
        """
        states, skipped = _load_states(_packets_of(bytes(data)), secret=False)
        return cls(tuple(states), tuple(skipped))

    def to_bytes(self) -> bytes:
        """A binary keyring (no trust packets), as for ``REMOTE.trustedkeys.gpg``."""
        return b"".join(s.block.to_bytes() for s in self._states)

    def merge(self, other: Keyring) -> Keyring:
        """Both keyrings' keys; a key in both gets the union of its signatures (revocations too)."""
        packets = split_packets(self.to_bytes() + other.to_bytes())
        states, skipped = _load_states(packets, secret=False)
        return Keyring(tuple(states), (*self.skipped, *other.skipped, *skipped))

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key_id: object) -> bool:
        """Whether a primary key or subkey has this fingerprint or 16-hex key id."""
        if not isinstance(key_id, str):
            return False
        want = key_id.upper().removeprefix("0X")
        return any(
            k.fingerprint == want or k.key_id == want
            for s in self._states
            for k in s.signing_keys()
        )

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """Primary key fingerprints (40 upper-case hex digits), in keyring order."""
        return tuple(s.fingerprint for s in self._states)

    @property
    def keys(self) -> tuple[KeyInfo, ...]:
        return tuple(
            KeyInfo(
                s.fingerprint, s.primary.key_id, s.user_ids, s.primary.created,
                s.primary.expires, s.primary.revoked,
                tuple(k.fingerprint for k in s.subkeys),
                _user_id_infos(s),
                tuple(SubkeyInfo(k.fingerprint, k.created, k.expires, k.revoked,
                                 k.problem != _UNBOUND) for k in s.subkeys),
            )
            for s in self._states
        )

    def _candidates(self, key_id: str, fpr: str) -> list[tuple[_KeyState, _SigningKey]]:
        return [
            (s, k)
            for s in self._states
            for k in s.signing_keys()
            if (k.fingerprint == fpr if fpr else k.key_id == key_id)
        ]


# --------------------------------------------------------------------------- verification


class Failure(enum.Enum):
    """Why a signature is not valid, for programs (``SignatureStatus.reason`` is for people)."""

    NONE = "none"  # the signature is good
    BAD = "bad"  # the signature does not match the data and key
    KEY_MISSING = "key-missing"  # no key in the keyring has the issuer's id
    KEY_REVOKED = "key-revoked"
    KEY_EXPIRED = "key-expired"  # the signing key, or its primary key
    SIG_EXPIRED = "signature-expired"
    OTHER = "other"  # unreadable packet, wrong type or hash, unusable key …


@attrs.frozen
class SignatureStatus:
    """The verdict on one signature packet."""

    key_id: str  # issuer key id (16 hex), "" if the packet could not be read
    fingerprint: str  # fingerprint of the (sub)key that signed, "" if unknown
    primary_fingerprint: str  # its primary key, "" if unknown
    created: datetime | None
    valid: bool
    reason: str  # "good signature" or why it is not valid
    user_id: str = ""  # first valid user id of the signer, for display
    # For describe(): the public-key algorithm as GnuPG names it, whether the keyring lacks the
    # key, and the expiry times of the signature, the signing (sub)key and its primary key.
    algo: str = ""
    key_missing: bool = False
    sig_expires: datetime | None = None
    key_expires: datetime | None = None
    primary_expires: datetime | None = None
    failure: Failure = Failure.OTHER  # Failure.NONE exactly when valid


@attrs.frozen
class VerifyResult:
    """Every signature looked at, in order; :attr:`valid` if at least one is good."""

    signatures: tuple[SignatureStatus, ...]

    @property
    def valid(self) -> bool:
        return any(s.valid for s in self.signatures)

    @property
    def good(self) -> tuple[SignatureStatus, ...]:
        return tuple(s for s in self.signatures if s.valid)

    def failure(self) -> str:
        """One line saying why no signature is valid ("" if one is)."""
        if self.valid:
            return ""
        if not self.signatures:
            return "no signatures found"
        reasons = list(dict.fromkeys(s.reason for s in self.signatures))
        if len(reasons) == 1:
            return reasons[0]
        return "no valid signature: " + "; ".join(reasons)


def _fmt_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _key_problem(state: _KeyState, sk: _SigningKey, at: datetime, now: datetime
                 ) -> tuple[Failure, str]:
    """Why ``sk`` (of ``state``) may not have made a document signature at ``at``:
    ``(Failure.NONE, "")`` if it may."""
    if state.problem:
        return Failure.OTHER, f"key {state.primary.key_id} {state.problem}"
    chain = [state.primary] if sk is state.primary else [state.primary, sk]
    for k in reversed(chain):
        if k.revoked:
            return Failure.KEY_REVOKED, f"key {k.key_id} is revoked"
    for k in chain:
        if k.expires is not None and (at >= k.expires or now >= k.expires):
            return Failure.KEY_EXPIRED, f"key {k.key_id} expired on {_fmt_time(k.expires)}"
    if sk.problem:
        return Failure.OTHER, f"key {sk.key_id} {sk.problem}"
    if at < sk.created:
        return Failure.OTHER, f"key {sk.key_id} was created after the signature"
    return Failure.NONE, ""


def _check_packet(keyring: Keyring, data: bytes, pkt: Packet, now: datetime) -> SignatureStatus:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sig = pgpy.PGPSignature.from_blob(pkt.raw)
        if sig._signature is None:
            return SignatureStatus("", "", "", None, False, "unsupported signature version")
        created: datetime = sig.created
        sigtype = int(sig.type)
        hash_name = str(sig.hash_algorithm.name)
        sig_expires: datetime | None = sig.expires_at
        algo = _ALGO_NAMES.get(int(sig.key_algorithm), "unknown")
    except Exception:
        return SignatureStatus("", "", "", None, False, "malformed signature packet")
    key_id, issuer_fpr = _sig_issuer(sig)
    if not key_id:
        return SignatureStatus("", "", "", created, False, "signature names no issuer key")

    def status(failure: Failure, reason: str, state: _KeyState | None = None,
               sk: _SigningKey | None = None) -> SignatureStatus:
        valid = failure is Failure.NONE
        key_missing = failure is Failure.KEY_MISSING
        return SignatureStatus(
            key_id, sk.fingerprint if sk else issuer_fpr, state.fingerprint if state else "",
            created, valid, reason, state.user_ids[0] if state and state.user_ids else "",
            algo, key_missing=key_missing,
            sig_expires=sig_expires if sig_expires != created else None,
            key_expires=sk.expires if sk else None,
            primary_expires=state.primary.expires if state else None,
            failure=failure,
        )

    if sigtype not in _DOCUMENT_TYPES:
        return status(Failure.OTHER, f"not a document signature (type 0x{sigtype:02x})")
    if hash_name not in _ACCEPTED_HASHES:
        return status(Failure.OTHER, f"signature uses the unaccepted hash {hash_name}")
    candidates = keyring._candidates(key_id, issuer_fpr)
    if not candidates:
        return status(Failure.KEY_MISSING, f"signature by unknown key {key_id}")
    failures = []
    for state, sk in candidates:
        if not _crypto_ok(sk.key, sig, data):
            failures.append(status(Failure.BAD, f"bad signature by key {key_id}", state, sk))
            continue
        failure, problem = _key_problem(state, sk, created, now)
        if failure is Failure.NONE and sig_expires is not None and created != sig_expires <= now:
            failure, problem = Failure.SIG_EXPIRED, f"signature expired on {_fmt_time(sig_expires)}"
        if failure is Failure.NONE:
            return status(Failure.NONE, "good signature", state, sk)
        failures.append(status(failure, problem, state, sk))
    # With colliding key ids, a key that verified says more than one that did not.
    return next((f for f in failures if f.failure is not Failure.BAD), failures[0])


_USER_ID = re.compile(r"(?P<name>.*?)(?: \((?P<comment>.*)\))?(?: <(?P<email>[^<>]*)>)?")


def _local_time(t: datetime) -> str:
    """A time as glib's ``%c`` prints it in the C locale, in local time: ``%a %b %e %H:%M:%S
    %Y``, where glib pads a one-digit day with a FIGURE SPACE (U+2007), not a space."""
    t = t.astimezone()
    day = f"\u2007{t.day}" if t.day < 10 else str(t.day)
    return f"{t:%a %b} {day} {t:%H:%M:%S %Y}"


def describe(status: SignatureStatus, prefix: str = "") -> str:
    """``status`` as ``ostree show`` prints a signature (libostree's
    ``ostree_gpg_verify_result_describe``, itself modelled on GnuPG's verify output)."""
    if status.created is None:
        return f"{prefix}Can't check signature: {status.reason}\n"
    key_id = (status.fingerprint or status.key_id)[-16:]
    out = (f"{prefix}Signature made {_local_time(status.created)} using {status.algo} key ID "
           f"{key_id}\n")
    m = _USER_ID.fullmatch(status.user_id)  # always matches: every part is optional
    assert m is not None
    who = f'"{m.group("name")} <{m.group("email") or ""}>"'
    sig_expired = status.failure is Failure.SIG_EXPIRED
    key_expired = status.failure is Failure.KEY_EXPIRED
    if status.key_missing:
        out += f"{prefix}Can't check signature: public key not found\n"
    elif status.valid:
        out += f"{prefix}Good signature from {who}\n"
    elif status.failure is Failure.KEY_REVOKED:
        out += f"{prefix}Key revoked\n"
    elif sig_expired:
        out += f"{prefix}Expired signature from {who}\n"
    else:
        out += f"{prefix}BAD signature from {who}\n"
    subkey = bool(status.primary_fingerprint) and status.fingerprint != status.primary_fingerprint
    if not status.key_missing and subkey:
        out += f"{prefix}Primary key ID {status.primary_fingerprint[-16:]}\n"
    expiries = [("Signature", status.sig_expires, sig_expired),
                ("Key", status.key_expires, key_expired)]
    if subkey:
        expiries.append(("Primary key", status.primary_expires, key_expired))
    for what, when, expired in expiries:
        if when is not None:
            out += f"{prefix}{what} {'expired' if expired else 'expires'} {_local_time(when)}\n"
    return out


def inspect_detached(
    keyring: Keyring, data: bytes, signatures: Sequence[bytes], *, now: datetime | None = None
) -> VerifyResult:
    """Judge every signature packet in ``signatures`` (the ``ostree.gpgsigs`` elements) over
    ``data``; never raises for bad signatures."""
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    statuses: list[SignatureStatus] = []
    for element in signatures:
        try:
            packets = split_packets(bytes(element))
        except FormatError:
            statuses.append(SignatureStatus("", "", "", None, False, "malformed signature data"))
            continue
        for pkt in packets:
            if pkt.tag == TAG_SIGNATURE:
                statuses.append(_check_packet(keyring, data, pkt, now))
    return VerifyResult(tuple(statuses))


def verify_detached(
    keyring: Keyring, data: bytes, signatures: Sequence[bytes], *, now: datetime | None = None
) -> VerifyResult:
    """Like :func:`inspect_detached`, but raise :class:`SignatureError` unless at least one
    signature is valid (libostree's rule)."""
    result = inspect_detached(keyring, data, signatures, now=now)
    if not result.valid:
        raise SignatureError(result.failure())
    return result


# --------------------------------------------------------------------------- signing


@attrs.frozen(eq=False)
class SecretKey:
    """An OpenPGP secret key (with its subkeys), as ``gpg --export-secret-keys`` writes it.

    ``signing_key_id`` is set by :func:`select_key` when a specific subkey was asked for.
    """

    _state: _KeyState
    signing_key_id: str = ""

    @property
    def fingerprint(self) -> str:
        return self._state.fingerprint

    @property
    def key_id(self) -> str:
        return self._state.primary.key_id

    @property
    def user_ids(self) -> tuple[str, ...]:
        return self._state.user_ids

    @property
    def subkey_fingerprints(self) -> tuple[str, ...]:
        return tuple(k.fingerprint for k in self._state.subkeys)

    @property
    def is_protected(self) -> bool:
        return bool(self._state.key.is_protected)


def load_secret_keys(data: bytes) -> list[SecretKey]:
    """Secret keys in armored or binary export data (public-only keys are ignored)."""
    states, skipped = _load_states(_packets_of(bytes(data)), secret=True)
    if skipped and not states:
        raise FormatError(skipped[0])
    return [SecretKey(s) for s in states]


def _id_matches(want: str, fpr: str) -> bool:
    return len(want) in (8, 16, 40) and fpr.endswith(want)


def select_key(keys: Sequence[SecretKey], keyid: str) -> SecretKey:
    """The key named by a fingerprint, long or short key id (of the key or of a subkey, which
    then signs; a trailing ``!`` makes the primary itself sign) or a user-id substring.

    :class:`UsageError` if none or several keys match.
    """
    if not keys:
        raise UsageError(
            "no OpenPGP secret keys found (the GPG home directory must hold keys exported with "
            "'gpg --export-secret-keys')"
        )
    exact = keyid.strip().endswith("!")  # gpg's "this very (sub)key, not a subkey of it"
    want = keyid.strip().replace(" ", "").removesuffix("!").upper().removeprefix("0X")
    found: dict[int, SecretKey] = {}
    if re.fullmatch(r"[0-9A-F]+", want):
        for i, key in enumerate(keys):
            if _id_matches(want, key.fingerprint):
                found[i] = attrs.evolve(key, signing_key_id=key.key_id) if exact else key
            for sub in key._state.subkeys:
                if _id_matches(want, sub.fingerprint):
                    found[i] = attrs.evolve(key, signing_key_id=sub.key_id)
    if not found:
        needle = keyid.strip().lower()
        for i, key in enumerate(keys):
            if needle and any(needle in uid.lower() for uid in key.user_ids):
                found[i] = key
    if not found:
        raise UsageError(f"no secret key matches {keyid!r}")
    if len(found) > 1:
        raise UsageError(f"{keyid!r} matches several secret keys")
    return next(iter(found.values()))


def _pick_signer(secret: SecretKey, now: datetime) -> _SigningKey:
    state = secret._state
    if secret.signing_key_id:
        sk = next(k for k in state.signing_keys() if k.key_id == secret.signing_key_id)
        problem = _key_problem(state, sk, now, now)[1]
        if problem:
            raise UsageError(f"cannot sign: {problem}")
        return sk
    usable = [k for k in state.signing_keys() if not _key_problem(state, k, now, now)[1]]
    if not usable:
        problem = _key_problem(state, state.primary, now, now)[1] or "has no usable signing key"
        raise UsageError(f"cannot sign with key {state.primary.key_id}: {problem}")
    if state.primary in usable:
        return state.primary
    return max(usable, key=lambda k: k.created)  # like gpg: the newest signing subkey


def sign_detached(
    secret_key: SecretKey,
    data: bytes,
    passphrase: str | None = None,
    *,
    digest: str = "SHA256",
    created: datetime | None = None,
) -> bytes:
    """A binary OpenPGP detached signature (type 0x00, binary document) over ``data``.

    The signing key is the primary key if it may sign, else its newest valid signing subkey,
    unless :func:`select_key` picked a subkey. The signature is checked before it is returned.
    """
    halg = _SIGNING_HASHES.get(digest.upper())
    if halg is None:
        raise ValueError(f"unsupported digest {digest!r}; use one of {sorted(_SIGNING_HASHES)}")
    now = datetime.now(UTC)
    signer = _pick_signer(secret_key, created or now)
    primary = secret_key._state.key
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if primary.is_protected:
                if passphrase is None:
                    raise UsageError(f"secret key {secret_key.key_id} needs a passphrase")
                try:
                    with primary.unlock(passphrase):
                        sig = signer.key.sign(bytes(data), hash=halg, created=created)
                except pgpy.errors.PGPDecryptionError as exc:
                    raise UsageError(f"bad passphrase for secret key {secret_key.key_id}") from exc
            else:
                sig = signer.key.sign(bytes(data), hash=halg, created=created)
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"cannot sign with key {signer.key_id}: {exc}") from exc
    if not _crypto_ok(signer.key, sig, bytes(data)):
        raise SignatureError(f"the signature made with key {signer.key_id} does not verify")
    return bytes(sig)


# --------------------------------------------------------------------------- file edge


def secret_keys_from_homedir(path: str | PathLike[str]) -> list[SecretKey]:
    """Secret keys from the ``*.asc``, ``*.gpg`` and ``*.key`` files of a directory.

    This is what ``--gpg-homedir`` means for pyostree: a directory of **exported** keys
    (``gpg --export-secret-keys [--armor] KEY > DIR/KEY.asc``; a GnuPG 1 ``secring.gpg`` works
    too). A GnuPG 2 home keeps private keys in ``private-keys-v1.d`` in a format pgpy cannot read.
    """
    keys: list[SecretKey] = []
    directory = Path(path)
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix in _HOMEDIR_SUFFIXES)
    except OSError as exc:
        raise UsageError(f"cannot read GPG home directory {directory}: {exc.strerror}") from exc
    for file in files:
        if file.name in _HOMEDIR_SKIP or not file.is_file():
            continue
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from exc
        try:
            keys.extend(load_secret_keys(data))
        except FormatError as exc:
            raise FormatError(f"{file}: {exc}") from exc
    return keys


def find_secret_key(homedir: str | PathLike[str], keyid: str) -> SecretKey:
    """The secret key ``keyid`` among the exported keys in ``homedir``."""
    return select_key(secret_keys_from_homedir(homedir), keyid)
