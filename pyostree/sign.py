"""Ed25519 signatures in libostree's sign-API format (``ostree.sign.ed25519``).

Pure over bytes. Keys are exchanged as base64 text: a public key is 32 raw bytes, a secret key
64 bytes (32-byte seed ‖ 32-byte public key; a bare 32-byte seed is accepted too). Key files hold
one base64 key per line. A signature is a raw 64-byte RFC 8032 Ed25519 signature over the exact
commit, summary or superblock bytes; it is valid when it verifies with a trusted public key that
is not on the revoked list.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import FormatError, SignatureError

__all__ = [
    "ED25519_METADATA_KEY",
    "Ed25519Signer",
    "generate_ed25519_keypair",
    "parse_ed25519_public_key",
    "parse_ed25519_secret_key",
    "parse_key_file",
    "parse_public_key_file",
    "parse_secret_key_file",
    "sign_ed25519",
    "verify_ed25519",
]

ED25519_METADATA_KEY = "ostree.sign.ed25519"
PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SECRET_KEY_SIZE = 64
SIGNATURE_SIZE = 64


def _b64decode(text: str | bytes, what: str) -> bytes:
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError as exc:
            raise FormatError(f"ed25519 {what} is not base64") from exc
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"ed25519 {what} is not base64") from exc


def _public_from_seed(seed: bytes) -> bytes:
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def parse_ed25519_public_key(text: str | bytes) -> bytes:
    """The 32 raw bytes of a base64 public key."""
    raw = _b64decode(text, "public key")
    if len(raw) != PUBLIC_KEY_SIZE:
        raise FormatError(f"ed25519 public key has {len(raw)} bytes, expected {PUBLIC_KEY_SIZE}")
    return raw


def _normalise_secret(raw: bytes) -> bytes:
    if len(raw) == SEED_SIZE:
        return raw + _public_from_seed(raw)
    if len(raw) != SECRET_KEY_SIZE:
        raise FormatError(
            f"ed25519 secret key has {len(raw)} bytes, expected {SECRET_KEY_SIZE} (or a "
            f"{SEED_SIZE}-byte seed)"
        )
    if _public_from_seed(raw[:SEED_SIZE]) != raw[SEED_SIZE:]:
        raise FormatError("ed25519 secret key: its public half does not match its seed")
    return raw


def parse_ed25519_secret_key(text: str | bytes) -> bytes:
    """The 64 raw bytes (seed ‖ public key) of a base64 secret key or seed."""
    return _normalise_secret(_b64decode(text, "secret key"))


def parse_ed25519_any_key(text: str | bytes) -> bytes:
    """A base64 public key (32 raw bytes) or secret key (64: seed ‖ public key), raw."""
    raw = _b64decode(text, "key")
    return raw if len(raw) == PUBLIC_KEY_SIZE else _normalise_secret(raw)


def public_key_of(key: bytes) -> bytes:
    """The public key of a raw public (32 bytes) or secret (64 bytes) key."""
    return bytes(key) if len(key) == PUBLIC_KEY_SIZE else bytes(key[SEED_SIZE:])


def parse_key_file(data: str | bytes) -> list[str]:
    """The base64 keys of a key file: one per line; blank lines and ``#`` comments skipped."""
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise FormatError("ed25519 key file is not ASCII text") from exc
    keys = []
    for line in data.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(line)
    return keys


def parse_public_key_file(data: str | bytes) -> list[bytes]:
    """The raw public keys of a key file (``trusted.ed25519``, ``revoked.ed25519``)."""
    return [parse_ed25519_public_key(k) for k in parse_key_file(data)]


def parse_secret_key_file(data: str | bytes) -> list[bytes]:
    """The raw 64-byte secret keys of a key file (``--keys-file``)."""
    return [parse_ed25519_secret_key(k) for k in parse_key_file(data)]


def sign_ed25519(secret: bytes, data: bytes) -> bytes:
    """The 64-byte signature of ``data`` by a raw secret key (64 bytes, or a 32-byte seed)."""
    seed = _normalise_secret(bytes(secret))[:SEED_SIZE]
    return Ed25519PrivateKey.from_private_bytes(seed).sign(bytes(data))


def verifies(public: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_ed25519(
    data: bytes,
    signatures: Sequence[bytes],
    trusted: Iterable[bytes],
    revoked: Iterable[bytes] = (),
) -> int:
    """The index of the first signature that verifies with a trusted, non-revoked public key.

    Raises :class:`SignatureError` otherwise ("no signatures found", "no trusted ed25519 public
    keys", "signed by revoked key …" or "no valid ed25519 signature").
    """
    if not signatures:
        raise SignatureError("no signatures found")
    revoked_set = {bytes(k) for k in revoked}
    trusted_keys = list(dict.fromkeys(bytes(k) for k in trusted))
    for key in trusted_keys:
        if len(key) != PUBLIC_KEY_SIZE:
            raise ValueError(f"ed25519 public keys are {PUBLIC_KEY_SIZE} bytes, got {len(key)}")
    usable = [k for k in trusted_keys if k not in revoked_set]
    if not usable and not revoked_set:
        raise SignatureError("no trusted ed25519 public keys")
    data = bytes(data)
    for index, sig in enumerate(signatures):
        if len(sig) == SIGNATURE_SIZE and any(verifies(k, bytes(sig), data) for k in usable):
            return index
    for sig in signatures:
        for key in revoked_set:
            if len(sig) == SIGNATURE_SIZE and verifies(key, bytes(sig), data):
                b64 = base64.b64encode(key).decode("ascii")
                raise SignatureError(f"signed by revoked key {b64}")
    raise SignatureError("no valid ed25519 signature")


def ed25519_signer(
    data: bytes,
    signatures: Sequence[bytes],
    trusted: Iterable[bytes],
    revoked: Iterable[bytes] = (),
) -> bytes:
    """The trusted public key that verified ``data`` (as :func:`verify_ed25519`, which raises
    the same errors): the first signature that verifies, with the first key that verifies it,
    the order in which libostree reports the key."""
    trusted_keys = [bytes(k) for k in trusted]
    revoked_set = {bytes(k) for k in revoked}
    index = verify_ed25519(data, signatures, trusted_keys, revoked_set)
    sig = bytes(signatures[index])
    for key in dict.fromkeys(trusted_keys):
        if key not in revoked_set and verifies(key, sig, bytes(data)):
            return key
    raise AssertionError("verify_ed25519 accepted a signature no key verifies")


def generate_ed25519_keypair() -> tuple[str, str]:
    """A new ``(secret_b64, public_b64)`` pair; the secret is seed ‖ public key, as libostree."""
    signer = Ed25519Signer.generate()
    return signer.secret_b64, signer.public_b64


@attrs.frozen
class Ed25519Signer:
    """An ed25519 secret key (64 bytes: seed ‖ public key) that signs OSTree metadata."""

    secret: bytes = attrs.field(repr=False, converter=_normalise_secret)

    @classmethod
    def generate(cls) -> Ed25519Signer:
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(seed)

    @classmethod
    def from_base64(cls, text: str | bytes) -> Ed25519Signer:
        return cls(parse_ed25519_secret_key(text))

    @property
    def public_key(self) -> bytes:
        return self.secret[SEED_SIZE:]

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_key).decode("ascii")

    @property
    def secret_b64(self) -> str:
        return base64.b64encode(self.secret).decode("ascii")

    def sign(self, data: bytes) -> bytes:
        return sign_ed25519(self.secret, data)
