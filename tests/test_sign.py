"""Tests for pyostree.sign (ed25519 in libostree's sign-API format).

The installed ostree 2022.7 is built without ed25519 ("Requested signature type is not
implemented"), so the independent oracle here is RFC 8032's known-answer vectors (§7.1).
"""

from __future__ import annotations

import base64
import re

import pytest

from pyostree import sign
from pyostree.errors import FormatError, SignatureError

# RFC 8032 §7.1, TEST 1 and TEST 2: (secret seed, public key, message, signature).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(seed: str, public: str, message: str, signature: str) -> None:
    seed_b, pub_b = bytes.fromhex(seed), bytes.fromhex(public)
    msg, sig = bytes.fromhex(message), bytes.fromhex(signature)
    # libostree's secret key text is base64(seed ‖ public); a bare seed is accepted too
    secret = sign.parse_ed25519_secret_key(b64(seed_b + pub_b))
    assert secret == seed_b + pub_b
    assert sign.parse_ed25519_secret_key(b64(seed_b)) == secret
    assert sign.parse_ed25519_public_key(b64(pub_b)) == pub_b
    assert sign.sign_ed25519(secret, msg) == sig
    assert sign.sign_ed25519(seed_b, msg) == sig
    assert sign.Ed25519Signer.from_base64(b64(seed_b)).public_key == pub_b
    assert sign.verify_ed25519(msg, [sig], [pub_b]) == 0


def test_generated_keypair_round_trip() -> None:
    secret_b64, public_b64 = sign.generate_ed25519_keypair()
    secret = sign.parse_ed25519_secret_key(secret_b64)
    public = sign.parse_ed25519_public_key(public_b64)
    assert len(secret) == 64 and secret[32:] == public
    data = b"commit object bytes"
    sig = sign.sign_ed25519(secret, data)
    assert len(sig) == 64
    assert sign.verify_ed25519(data, [sig], [public]) == 0
    signer = sign.Ed25519Signer.from_base64(secret_b64)
    assert signer.public_b64 == public_b64 and signer.secret_b64 == secret_b64
    assert signer.sign(data) == sig  # Ed25519 is deterministic
    assert secret_b64 not in repr(signer)
    assert sign.generate_ed25519_keypair() != (secret_b64, public_b64)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not base64!", "not base64"),
        ("AAAA", "has 3 bytes"),
        (b64(bytes(33)), "has 33 bytes"),
        ("é", "not base64"),
    ],
)
def test_bad_public_keys(text: str, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        sign.parse_ed25519_public_key(text)


def test_bad_secret_keys() -> None:
    seed, pub = bytes.fromhex(RFC8032[0][0]), bytes.fromhex(RFC8032[0][1])
    other_pub = bytes.fromhex(RFC8032[1][1])
    with pytest.raises(FormatError, match="does not match"):
        sign.parse_ed25519_secret_key(b64(seed + other_pub))
    with pytest.raises(FormatError, match="has 48 bytes"):
        sign.parse_ed25519_secret_key(b64((seed + pub)[:48]))
    with pytest.raises(FormatError, match="not base64"):
        sign.parse_ed25519_secret_key(b"@@@@")
    with pytest.raises(FormatError):
        sign.sign_ed25519(seed + other_pub, b"x")
    with pytest.raises(FormatError):
        sign.Ed25519Signer(seed[:10])


def test_key_files() -> None:
    pub1, pub2 = (bytes.fromhex(v[1]) for v in RFC8032)
    text = f"# trusted keys\n\n  {b64(pub1)}  \n#{b64(pub2)}\n{b64(pub2)}\r\n"
    assert sign.parse_key_file(text) == [b64(pub1), b64(pub2)]
    assert sign.parse_public_key_file(text.encode()) == [pub1, pub2]
    assert sign.parse_public_key_file("") == []
    secrets = "\n".join(b64(bytes.fromhex(v[0]) + bytes.fromhex(v[1])) for v in RFC8032)
    assert [s[32:] for s in sign.parse_secret_key_file(secrets)] == [pub1, pub2]
    with pytest.raises(FormatError):
        sign.parse_public_key_file(f"{b64(pub1)}\nnot-a-key\n")
    with pytest.raises(FormatError, match="ASCII"):
        sign.parse_key_file(b"\xff\xfe")


def test_verify_picks_the_first_valid_signature() -> None:
    a, b = sign.Ed25519Signer.generate(), sign.Ed25519Signer.generate()
    data = b"summary bytes"
    junk = b"\x00" * 64
    sigs = [junk, b"short", a.sign(b"other data"), b.sign(data), a.sign(data)]
    assert sign.verify_ed25519(data, sigs, [a.public_key]) == 4
    assert sign.verify_ed25519(data, sigs, [a.public_key, b.public_key]) == 3
    assert sign.verify_ed25519(data, sigs, iter([b.public_key])) == 3


def test_verify_failures() -> None:
    a, b = sign.Ed25519Signer.generate(), sign.Ed25519Signer.generate()
    data = b"commit"
    with pytest.raises(SignatureError, match=r"^no signatures found$"):
        sign.verify_ed25519(data, [], [a.public_key])
    with pytest.raises(SignatureError, match=r"^no valid ed25519 signature$"):
        sign.verify_ed25519(data, [a.sign(data + b"!")], [a.public_key])
    with pytest.raises(SignatureError, match=r"^no valid ed25519 signature$"):
        sign.verify_ed25519(data, [b.sign(data)], [a.public_key])
    with pytest.raises(SignatureError, match="no trusted ed25519 public keys"):
        sign.verify_ed25519(data, [a.sign(data)], [])
    with pytest.raises(ValueError):
        sign.verify_ed25519(data, [a.sign(data)], [b"short"])
    tampered = bytearray(a.sign(data))
    tampered[10] ^= 1
    with pytest.raises(SignatureError):
        sign.verify_ed25519(data, [bytes(tampered)], [a.public_key])


def test_revoked_keys_never_verify() -> None:
    a, b = sign.Ed25519Signer.generate(), sign.Ed25519Signer.generate()
    data = b"commit"
    trusted = [a.public_key, b.public_key]
    with pytest.raises(SignatureError, match=f"^signed by revoked key {re.escape(a.public_b64)}$"):
        sign.verify_ed25519(data, [a.sign(data)], trusted, [a.public_key])
    with pytest.raises(SignatureError, match="revoked"):
        sign.verify_ed25519(data, [a.sign(data)], [a.public_key], [a.public_key])
    # a good signature by a key that is not revoked still wins
    assert sign.verify_ed25519(data, [a.sign(data), b.sign(data)], trusted, [a.public_key]) == 1
