"""Tests for pyostree.gpg against keys and signatures made by the real GnuPG.

The fixtures in tests/data/gpg come from tests/data/gpg/make-keys.sh (see its header for the
keys and dates); the interop tests ask the real gpg/gpgv to judge the same bytes.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pyostree import gpg
from pyostree.errors import FormatError, SignatureError, UsageError

DATA = Path(__file__).parent / "data" / "gpg"
TRUSTED = ("good", "rsa", "expired", "revoked", "subrev")  # the keys in trusted-ostree.gpg
SIGNED_AT = datetime(2020, 1, 10, tzinfo=UTC)

needs_gpg = pytest.mark.skipif(
    shutil.which("gpg") is None or shutil.which("gpgv") is None, reason="needs gpg and gpgv"
)


def fx(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.fixture(scope="module")
def trusted() -> gpg.Keyring:
    return gpg.Keyring.from_bytes(fx("trusted-ostree.gpg"))


@pytest.fixture(scope="module")
def data() -> bytes:
    return fx("data.bin")


def key_of(name: str) -> gpg.KeyInfo:
    (info,) = gpg.Keyring.from_bytes(fx(f"{name}.asc")).keys
    return info


# --------------------------------------------------------------------------- packets and armor


def test_split_packets_reads_every_header_form() -> None:
    body = bytes(range(256)) * 40  # 10240 bytes
    old1 = bytes([0x80 | (13 << 2) | 0, 3]) + b"abc"
    old2 = bytes([0x80 | (2 << 2) | 1]) + (300).to_bytes(2, "big") + body[:300]
    old4 = bytes([0x80 | (6 << 2) | 2]) + (70000).to_bytes(4, "big") + (body * 7)[:70000]
    new2 = gpg.Packet.new(14, body[:1000]).raw
    new5 = gpg.Packet.new(17, body).raw
    # partial lengths: 512 + 1024 + a final 10 octets
    partial = bytes([0xC0 | 11, 0xE0 + 9]) + body[:512] + bytes([0xE0 + 10]) + body[512:1536]
    partial += bytes([10]) + body[1536:1546]
    old_indeterminate = bytes([0x80 | (8 << 2) | 3]) + b"rest of the stream"
    stream = old1 + old2 + old4 + new2 + new5 + partial + old_indeterminate
    packets = gpg.split_packets(stream)
    assert [(p.tag, len(p.body)) for p in packets] == [
        (13, 3), (2, 300), (6, 70000), (14, 1000), (17, 10240), (11, 1546), (8, 18),
    ]
    assert packets[0].body == b"abc"
    assert packets[5].body == body[:1546]
    assert gpg.split_packets(packets[5].raw) == [packets[5]]  # re-encoded with a fixed length
    assert b"".join(p.raw for p in packets[:5]) == stream[: sum(len(p.raw) for p in packets[:5])]


@pytest.mark.parametrize("cut", [1, 2, 3, 50, -1])
def test_split_packets_truncated_is_format_error(cut: int) -> None:
    raw = fx("sig-good.gpg")
    with pytest.raises(FormatError):
        gpg.split_packets(raw[:cut])


def test_split_packets_rejects_non_packets() -> None:
    with pytest.raises(FormatError):
        gpg.split_packets(b"\x01\x02")
    with pytest.raises(FormatError):
        gpg.split_packets(b"\xc0\x01x")  # tag 0 is reserved


def test_dearmor_checks_crc_and_labels() -> None:
    text = fx("good.asc")
    ((label, raw),) = gpg.dearmor(text)
    assert label == "PUBLIC KEY BLOCK"
    assert gpg.split_packets(raw)[0].tag == gpg.TAG_PUBLIC_KEY
    lines = text.splitlines()
    crc_line = next(i for i, line in enumerate(lines) if line.startswith(b"="))
    bad_crc = [*lines[:crc_line], b"=AAAA", *lines[crc_line + 1 :]]
    with pytest.raises(FormatError, match="CRC24"):
        gpg.dearmor(b"\n".join(bad_crc))
    with pytest.raises(FormatError, match="unterminated"):
        gpg.dearmor(b"\n".join(lines[:-1]))
    mismatched = [*lines[:-1], b"-----END PGP SIGNATURE-----"]
    with pytest.raises(FormatError, match="mismatched"):
        gpg.dearmor(b"\n".join(mismatched))


# --------------------------------------------------------------------------- keyrings


def test_ostree_keyring_has_trust_packets_and_loads_every_key(trusted: gpg.Keyring) -> None:
    # The file `ostree remote add --gpg-import` wrote interleaves GnuPG trust packets.
    assert any(p.tag == gpg.TAG_TRUST for p in gpg.split_packets(fx("trusted-ostree.gpg")))
    assert len(trusted) == 5
    assert trusted.skipped == ()
    assert trusted.fingerprints == tuple(key_of(n).fingerprint for n in TRUSTED)
    by_fpr = {k.fingerprint: k for k in trusted.keys}
    for name in TRUSTED:
        info = by_fpr[key_of(name).fingerprint]
        assert info.user_ids and f"<{name}@example.org>" in info.user_ids[0]
        assert info.key_id == info.fingerprint[-16:]
        assert info.created == datetime(2020, 1, 1, tzinfo=UTC)
    assert by_fpr[key_of("revoked").fingerprint].revoked
    assert by_fpr[key_of("expired").fingerprint].expires == datetime(2020, 1, 31, tzinfo=UTC)
    assert len(by_fpr[key_of("rsa").fingerprint].subkey_fingerprints) == 1


def test_concatenated_armored_keys(trusted: gpg.Keyring) -> None:
    armored = b"".join(fx(f"{n}.asc") for n in TRUSTED)
    keyring = gpg.Keyring.from_bytes(b"some leading text\n" + armored)
    assert keyring.fingerprints == trusted.fingerprints


def test_to_bytes_round_trip_without_trust_packets(trusted: gpg.Keyring) -> None:
    raw = trusted.to_bytes()
    assert raw[0] & 0x80
    assert all(p.tag != gpg.TAG_TRUST for p in gpg.split_packets(raw))
    again = gpg.Keyring.from_bytes(raw)
    assert again.fingerprints == trusted.fingerprints
    assert again.keys == trusted.keys
    assert again.to_bytes() == raw


def test_merge_dedupes_keys(trusted: gpg.Keyring) -> None:
    good = gpg.Keyring.from_bytes(fx("good.asc"))
    unknown = gpg.Keyring.from_bytes(fx("unknown.asc"))
    merged = trusted.merge(good).merge(unknown)
    assert len(merged) == 6
    assert merged.fingerprints == (*trusted.fingerprints, key_of("unknown").fingerprint)
    assert merged.merge(merged).to_bytes() == merged.to_bytes()
    # duplicates inside one input are merged too
    assert len(gpg.Keyring.from_bytes(fx("good.asc") + fx("good.asc"))) == 1


@pytest.mark.parametrize("order", ["stale-first", "revoked-first"])
def test_merge_never_loses_a_revocation(order: str, data: bytes) -> None:
    stale = gpg.Keyring.from_bytes(fx("revoked-before-revocation.asc"))
    revoked = gpg.Keyring.from_bytes(fx("revoked.asc"))
    assert not stale.keys[0].revoked
    assert gpg.verify_detached(stale, data, [fx("sig-revoked.gpg")]).valid
    merged = stale.merge(revoked) if order == "stale-first" else revoked.merge(stale)
    assert len(merged) == 1
    assert merged.keys[0].revoked
    with pytest.raises(SignatureError, match="revoked"):
        gpg.verify_detached(merged, data, [fx("sig-revoked.gpg")])
    # the same holds when both copies come in one file
    both = gpg.Keyring.from_bytes(fx("revoked-before-revocation.asc") + fx("revoked.asc"))
    assert both.keys[0].revoked


def test_keyring_contains_ids(trusted: gpg.Keyring) -> None:
    rsa = key_of("rsa")
    assert rsa.fingerprint in trusted
    assert rsa.key_id.lower() in trusted
    assert rsa.subkey_fingerprints[0] in trusted
    assert key_of("unknown").fingerprint not in trusted
    assert 42 not in trusted


def test_keyring_edge_inputs() -> None:
    assert len(gpg.Keyring.from_bytes(b"")) == 0
    assert len(gpg.Keyring.from_bytes(b"  \n")) == 0
    assert len(gpg.Keyring.from_bytes(fx("sig-good.gpg"))) == 0  # no key packets at all
    with pytest.raises(FormatError):
        gpg.Keyring.from_bytes(b"just some text")
    with pytest.raises(FormatError):
        gpg.Keyring.from_bytes(fx("trusted-ostree.gpg")[:-7])
    # an unsupported (v3) key is skipped, the rest still loads
    v3 = gpg.Packet.new(gpg.TAG_PUBLIC_KEY, b"\x03" + b"\x00" * 20).raw
    keyring = gpg.Keyring.from_bytes(v3 + fx("trusted-ostree.gpg"))
    assert len(keyring) == 5
    assert keyring.skipped and "version 3" in keyring.skipped[0]


def test_damaged_keyrings_only_raise_format_error() -> None:
    raw = fx("trusted-ostree.gpg")
    for k in range(0, len(raw), 211):
        damaged = raw[:k] + bytes([raw[k] ^ 0x5A]) + raw[k + 1 :]
        for sample in (damaged, raw[:k]):
            try:
                keyring = gpg.Keyring.from_bytes(sample)
            except FormatError:
                continue
            assert len(keyring) <= 5


# --------------------------------------------------------------------------- verification


def test_good_signature(trusted: gpg.Keyring, data: bytes) -> None:
    result = gpg.verify_detached(trusted, data, [fx("sig-good.gpg")])
    (status,) = result.signatures
    good = key_of("good")
    assert result.valid and result.good == (status,)
    assert status.valid and status.reason == "good signature"
    assert status.key_id == good.key_id
    assert status.fingerprint == status.primary_fingerprint == good.fingerprint
    assert status.created == SIGNED_AT
    assert status.user_id == "Good Signer <good@example.org>"
    assert result.failure() == ""


def test_signing_subkey_signature(trusted: gpg.Keyring, data: bytes) -> None:
    (status,) = gpg.verify_detached(trusted, data, [fx("sig-rsa.gpg")]).signatures
    rsa = key_of("rsa")
    assert status.valid
    assert status.fingerprint == rsa.subkey_fingerprints[0]
    assert status.primary_fingerprint == rsa.fingerprint
    assert status.key_id == rsa.subkey_fingerprints[0][-16:]


@pytest.mark.parametrize(
    ("name", "reason", "failure"),
    [
        ("expired", r"key [0-9A-F]{16} expired on 2020-01-31", gpg.Failure.KEY_EXPIRED),
        ("revoked", r"key [0-9A-F]{16} is revoked", gpg.Failure.KEY_REVOKED),
        ("subrev", r"key [0-9A-F]{16} is revoked", gpg.Failure.KEY_REVOKED),
        ("unknown", r"signature by unknown key [0-9A-F]{16}", gpg.Failure.KEY_MISSING),
    ],
)
def test_rejected_signatures(trusted: gpg.Keyring, data: bytes, name: str, reason: str,
                             failure: gpg.Failure) -> None:
    with pytest.raises(SignatureError, match=f"^{reason}"):
        gpg.verify_detached(trusted, data, [fx(f"sig-{name}.gpg")])
    (status,) = gpg.inspect_detached(trusted, data, [fx(f"sig-{name}.gpg")]).signatures
    assert not status.valid
    assert status.created == SIGNED_AT
    assert status.failure is failure
    assert status.key_missing == (failure is gpg.Failure.KEY_MISSING)


def test_revoked_subkey_is_named(trusted: gpg.Keyring, data: bytes) -> None:
    (status,) = gpg.inspect_detached(trusted, data, [fx("sig-subrev.gpg")]).signatures
    subkey = key_of("subrev").subkey_fingerprints
    # subrev's listing omits nothing: the revoked subkey is still in the keyring
    assert status.fingerprint in subkey
    assert status.reason == f"key {status.fingerprint[-16:]} is revoked"


def strip_embedded_signatures(sig_body: bytes) -> bytes:
    """A v4 signature body without its unhashed embedded-signature (type 32) subpackets."""
    hashed_end = 6 + int.from_bytes(sig_body[4:6], "big")
    unhashed_len = int.from_bytes(sig_body[hashed_end : hashed_end + 2], "big")
    area = sig_body[hashed_end + 2 : hashed_end + 2 + unhashed_len]
    kept, i = b"", 0
    while i < len(area):
        if area[i] < 192:
            n, hdr = area[i], 1
        elif area[i] < 255:
            n, hdr = ((area[i] - 192) << 8) + area[i + 1] + 192, 2
        else:
            n, hdr = int.from_bytes(area[i + 1 : i + 5], "big"), 5
        if area[i + hdr] & 0x7F != 32:
            kept += area[i : i + hdr + n]
        i += hdr + n
    rest = sig_body[hashed_end + 2 + unhashed_len :]
    return sig_body[:hashed_end] + len(kept).to_bytes(2, "big") + kept + rest


def test_signing_subkey_must_be_cross_certified(data: bytes) -> None:
    packets = gpg.split_packets(gpg.dearmor(fx("rsa.asc"))[0][1])
    binding = packets.index(next(p for p in packets if p.tag == gpg.TAG_PUBLIC_SUBKEY)) + 1
    stripped = gpg.Packet.new(2, strip_embedded_signatures(packets[binding].body))
    assert len(stripped.body) < len(packets[binding].body)
    packets[binding] = stripped
    keyring = gpg.Keyring.from_bytes(b"".join(p.raw for p in packets))
    # the binding signature itself is still good: only the back-signature is missing
    assert keyring.keys[0].subkey_fingerprints == key_of("rsa").subkey_fingerprints
    with pytest.raises(SignatureError, match="not cross-certified"):
        gpg.verify_detached(keyring, data, [fx("sig-rsa.gpg")])


def test_signing_subkey_must_be_bound(data: bytes) -> None:
    packets = gpg.split_packets(gpg.dearmor(fx("rsa.asc"))[0][1])
    binding = packets.index(next(p for p in packets if p.tag == gpg.TAG_PUBLIC_SUBKEY)) + 1
    body = bytearray(packets[binding].body)
    body[-3] ^= 0x10  # inside the RSA signature value
    packets[binding] = gpg.Packet.new(2, bytes(body))
    keyring = gpg.Keyring.from_bytes(b"".join(p.raw for p in packets))
    with pytest.raises(SignatureError, match="is not bound to its primary key"):
        gpg.verify_detached(keyring, data, [fx("sig-rsa.gpg")])


def test_key_needs_a_valid_self_signature(data: bytes) -> None:
    packets = gpg.split_packets(gpg.dearmor(fx("good.asc"))[0][1])
    selfsig = packets.index(next(p for p in packets if p.tag == gpg.TAG_USER_ID)) + 1
    body = bytearray(packets[selfsig].body)
    body[-3] ^= 0x10
    packets[selfsig] = gpg.Packet.new(2, bytes(body))
    keyring = gpg.Keyring.from_bytes(b"".join(p.raw for p in packets))
    assert keyring.keys[0].user_ids == ()
    with pytest.raises(SignatureError, match="has no valid self-signature"):
        gpg.verify_detached(keyring, data, [fx("sig-good.gpg")])


def test_expiry_is_judged_at_signature_time_and_now(trusted: gpg.Keyring, data: bytes) -> None:
    sig = [fx("sig-expired.gpg")]
    before = datetime(2020, 1, 15, tzinfo=UTC)
    assert gpg.verify_detached(trusted, data, sig, now=before).valid
    with pytest.raises(SignatureError, match="expired"):
        gpg.verify_detached(trusted, data, sig, now=datetime(2020, 2, 1, tzinfo=UTC))
    with pytest.raises(ValueError):
        gpg.verify_detached(trusted, data, sig, now=datetime(2020, 1, 15))


def test_expiring_signature(trusted: gpg.Keyring, data: bytes) -> None:
    sig = [fx("sig-good-expiring.gpg")]
    assert gpg.verify_detached(trusted, data, sig, now=datetime(2020, 1, 11, tzinfo=UTC)).valid
    with pytest.raises(SignatureError, match=r"^signature expired on 2020-01-12 00:00:00 UTC$"):
        gpg.verify_detached(trusted, data, sig)
    (status,) = gpg.inspect_detached(trusted, data, sig).signatures
    assert status.failure is gpg.Failure.SIG_EXPIRED
    (good,) = gpg.inspect_detached(trusted, data, sig,
                                   now=datetime(2020, 1, 11, tzinfo=UTC)).signatures
    assert good.valid and good.failure is gpg.Failure.NONE


def test_tampered_data_and_signature(trusted: gpg.Keyring, data: bytes) -> None:
    with pytest.raises(SignatureError, match=r"^bad signature by key"):
        gpg.verify_detached(trusted, data + b"x", [fx("sig-good.gpg")])
    (status,) = gpg.inspect_detached(trusted, data + b"x", [fx("sig-good.gpg")]).signatures
    assert status.failure is gpg.Failure.BAD
    with pytest.raises(SignatureError, match=r"^bad signature"):
        gpg.verify_detached(trusted, data[:-1] + b"\x00", [fx("sig-rsa.gpg")])
    sig = bytearray(fx("sig-good.gpg"))
    sig[-5] ^= 0x01  # inside the EdDSA MPI
    with pytest.raises(SignatureError, match=r"^bad signature"):
        gpg.verify_detached(trusted, data, [bytes(sig)])


def test_one_good_signature_is_enough(trusted: gpg.Keyring, data: bytes) -> None:
    bad = [fx(f"sig-{n}.gpg") for n in ("unknown", "revoked", "expired")]
    separate = gpg.verify_detached(trusted, data, [*bad, fx("sig-good.gpg")])
    assert [s.valid for s in separate.signatures] == [False, False, False, True]
    joined = gpg.verify_detached(trusted, data, [b"".join(bad) + fx("sig-rsa.gpg")])
    assert [s.valid for s in joined.signatures] == [False, False, False, True]


def test_several_bad_signatures_give_one_line(trusted: gpg.Keyring, data: bytes) -> None:
    sigs = [fx("sig-unknown.gpg"), fx("sig-revoked.gpg")]
    with pytest.raises(SignatureError) as info:
        gpg.verify_detached(trusted, data, sigs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no valid signature: signature by unknown key")
    assert "is revoked" in message


@pytest.mark.parametrize("sigs", [[], [b""], [b"", b""]])
def test_no_signatures(trusted: gpg.Keyring, data: bytes, sigs: list[bytes]) -> None:
    with pytest.raises(SignatureError, match=r"^no signatures found$"):
        gpg.verify_detached(trusted, data, sigs)


def test_marker_and_trust_packets_are_not_signatures(trusted: gpg.Keyring, data: bytes) -> None:
    marker = gpg.Packet.new(gpg.TAG_MARKER, b"PGP").raw
    with pytest.raises(SignatureError, match="no signatures found"):
        gpg.verify_detached(trusted, data, [marker])
    assert gpg.verify_detached(trusted, data, [marker + fx("sig-good.gpg")]).valid


def test_key_signature_is_not_a_document_signature(trusted: gpg.Keyring, data: bytes) -> None:
    self_sig = next(p for p in gpg.split_packets(gpg.dearmor(fx("good.asc"))[0][1]) if p.tag == 2)
    with pytest.raises(SignatureError, match=r"not a document signature \(type 0x13\)"):
        gpg.verify_detached(trusted, data, [self_sig.raw])


def test_garbage_never_escapes_as_another_error(trusted: gpg.Keyring, data: bytes) -> None:
    good = fx("sig-good.gpg")
    samples = [good[:n] for n in range(0, len(good), 7)]
    samples += [bytes([0xC2, 5]) + b"\x04\x00\x16\x08\x00", b"\x88\x00", os.urandom(64)]
    samples += [good[:k] + bytes([good[k] ^ 0xFF]) + good[k + 1 :] for k in range(2, 40, 3)]
    for sample in samples:
        result = gpg.inspect_detached(trusted, data, [sample])
        assert not result.valid
        with pytest.raises(SignatureError):
            gpg.verify_detached(trusted, data, [sample])
    # and a good signature after garbage still counts
    assert gpg.verify_detached(trusted, data, [b"\x01garbage", good]).valid


# --------------------------------------------------------------------------- signing


def sig_header(sig: bytes) -> tuple[int, int, int, int]:
    """(version, signature type, public-key algorithm, hash algorithm) of one packet."""
    (packet,) = gpg.split_packets(sig)
    assert packet.tag == gpg.TAG_SIGNATURE
    return packet.body[0], packet.body[1], packet.body[2], packet.body[3]


def test_load_secret_keys() -> None:
    (good,) = gpg.load_secret_keys(fx("good.sec.asc"))
    assert good.fingerprint == key_of("good").fingerprint
    assert good.user_ids == ("Good Signer <good@example.org>",)
    assert not good.is_protected
    (rsa,) = gpg.load_secret_keys(fx("rsa.sec.gpg"))  # binary export
    assert rsa.fingerprint == key_of("rsa").fingerprint
    assert rsa.subkey_fingerprints == key_of("rsa").subkey_fingerprints
    (protected,) = gpg.load_secret_keys(fx("protected.sec.asc"))
    assert protected.is_protected
    both = gpg.load_secret_keys(fx("good.sec.asc") + fx("protected.sec.asc"))
    assert [k.fingerprint for k in both] == [good.fingerprint, protected.fingerprint]
    assert gpg.load_secret_keys(fx("good.asc")) == []  # public keys are not secret keys
    with pytest.raises(FormatError):
        gpg.load_secret_keys(fx("rsa.sec.gpg")[:100])


@pytest.mark.parametrize(("digest", "halg"), [("SHA256", 8), ("sha512", 10)])
def test_sign_detached_makes_binary_document_signatures(
    trusted: gpg.Keyring, data: bytes, digest: str, halg: int
) -> None:
    (good,) = gpg.load_secret_keys(fx("good.sec.asc"))
    sig = gpg.sign_detached(good, data, digest=digest)
    assert sig_header(sig) == (4, 0x00, 22, halg)
    (status,) = gpg.verify_detached(trusted, data, [sig]).signatures
    assert status.fingerprint == good.fingerprint
    with pytest.raises(SignatureError, match="bad signature"):
        gpg.verify_detached(trusted, data + b"!", [sig])
    with pytest.raises(ValueError):
        gpg.sign_detached(good, data, digest="MD5")


def test_sign_detached_with_signing_subkey(trusted: gpg.Keyring, data: bytes) -> None:
    (rsa,) = gpg.load_secret_keys(fx("rsa.sec.gpg"))
    created = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    sig = gpg.sign_detached(rsa, data, created=created)
    assert sig_header(sig) == (4, 0x00, 1, 8)
    (status,) = gpg.verify_detached(trusted, data, [sig]).signatures
    assert status.fingerprint == rsa.subkey_fingerprints[0]  # the cert-only primary cannot sign
    assert status.created == created
    # asking for the primary explicitly is refused: it is a certification-only key
    with pytest.raises(UsageError, match="not a signing key"):
        gpg.sign_detached(gpg.select_key([rsa], rsa.fingerprint + "!"), data)


def test_sign_detached_with_passphrase(data: bytes) -> None:
    (key,) = gpg.load_secret_keys(fx("protected.sec.asc"))
    keyring = gpg.Keyring.from_bytes(fx("protected.asc"))
    with pytest.raises(UsageError, match="needs a passphrase"):
        gpg.sign_detached(key, data)
    with pytest.raises(UsageError, match="bad passphrase"):
        gpg.sign_detached(key, data, "wrong")
    sig = gpg.sign_detached(key, data, "hunter2")
    assert gpg.verify_detached(keyring, data, [sig]).valid
    # the key is locked again afterwards
    with pytest.raises(UsageError, match="needs a passphrase"):
        gpg.sign_detached(key, data)


def test_select_key() -> None:
    keys = gpg.load_secret_keys(fx("good.sec.asc") + fx("protected.sec.asc"))
    (rsa,) = gpg.load_secret_keys(fx("rsa.sec.gpg"))
    keys.append(rsa)
    good = keys[0]
    for spec in (good.fingerprint, good.key_id, good.key_id[-8:].lower(), "0x" + good.key_id,
                 "good@example.org", "good signer"):
        assert gpg.select_key(keys, spec).fingerprint == good.fingerprint, spec
        assert gpg.select_key(keys, spec).signing_key_id == ""
    assert gpg.select_key(keys, good.key_id + "!").signing_key_id == good.key_id
    sub = rsa.subkey_fingerprints[0]
    picked = gpg.select_key(keys, sub[-16:])
    assert picked.fingerprint == rsa.fingerprint
    assert picked.signing_key_id == sub[-16:]
    with pytest.raises(UsageError, match="no secret key matches"):
        gpg.select_key(keys, "DEADBEEF")
    with pytest.raises(UsageError, match="several"):
        gpg.select_key(keys, "example.org")
    with pytest.raises(UsageError, match="export-secret-keys"):
        gpg.select_key([], good.key_id)


def test_secret_keys_from_homedir(tmp_path: Path, data: bytes) -> None:
    shutil.copy(DATA / "good.sec.asc", tmp_path / "good.asc")
    shutil.copy(DATA / "rsa.sec.gpg", tmp_path / "secring.gpg")
    shutil.copy(DATA / "unknown.asc", tmp_path / "public-only.key")
    (tmp_path / "trustdb.gpg").write_bytes(b"not OpenPGP at all")
    (tmp_path / "notes.txt").write_bytes(b"ignored")
    (tmp_path / "private-keys-v1.d").mkdir()
    keys = gpg.secret_keys_from_homedir(tmp_path)
    assert sorted(k.fingerprint for k in keys) == sorted(
        [key_of("good").fingerprint, key_of("rsa").fingerprint]
    )
    key = gpg.find_secret_key(str(tmp_path), "rsa@example.org")
    assert gpg.verify_detached(
        gpg.Keyring.from_bytes(fx("rsa.asc")), data, [gpg.sign_detached(key, data)]
    ).valid
    with pytest.raises(UsageError, match="cannot read"):
        gpg.secret_keys_from_homedir(tmp_path / "missing")
    (tmp_path / "broken.asc").write_bytes(b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n")
    with pytest.raises(FormatError, match=r"broken\.asc"):
        gpg.secret_keys_from_homedir(tmp_path)


# --------------------------------------------------------------------------- interop


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)


def gpg_verdict(home: Path, keyring: Path, sig: Path, data: Path) -> str:
    """What the real gpg --verify says: GOODSIG, EXPKEYSIG, EXPSIG, REVKEYSIG, BADSIG or
    NO_PUBKEY."""
    proc = run("gpg", "--homedir", home, "--batch", "--no-default-keyring", "--keyring", keyring,
               "--trust-model", "always", "--status-fd", "1", "--verify", sig, data)
    for word in ("GOODSIG", "EXPKEYSIG", "EXPSIG", "REVKEYSIG", "BADSIG", "NO_PUBKEY"):
        if f"[GNUPG:] {word} " in proc.stdout:
            return word
    raise AssertionError(proc.stdout + proc.stderr)


@pytest.mark.interop
@needs_gpg
@pytest.mark.parametrize(
    "name", ["good", "rsa", "expired", "revoked", "subrev", "unknown", "good-expiring"]
)
@pytest.mark.parametrize("tamper", [False, True])
def test_verdicts_agree_with_gpg(
    tmp_path: Path, trusted: gpg.Keyring, data: bytes, name: str, tamper: bool
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    signed = data + b"tampered" if tamper else data
    (tmp_path / "data").write_bytes(signed)
    verdict = gpg_verdict(home, DATA / "trusted-ostree.gpg", DATA / f"sig-{name}.gpg",
                          tmp_path / "data")
    (status,) = gpg.inspect_detached(trusted, signed, [fx(f"sig-{name}.gpg")]).signatures
    ours = {
        "good signature": "GOODSIG",
        "signature expired": "EXPSIG",
        "expired": "EXPKEYSIG",
        "is revoked": "REVKEYSIG",
        "bad signature": "BADSIG",
        "unknown key": "NO_PUBKEY",
    }
    assert verdict == next(v for k, v in ours.items() if k in status.reason)


@pytest.mark.interop
@needs_gpg
def test_fingerprints_agree_with_gpg(tmp_path: Path, trusted: gpg.Keyring) -> None:
    proc = run("gpg", "--homedir", tmp_path, "--batch", "--with-colons", "--show-keys",
               DATA / "trusted-ostree.gpg")
    lines = [line.split(":") for line in proc.stdout.splitlines()]
    fprs = [f[9] for prev, f in itertools.pairwise(lines) if prev[0] == "pub" and f[0] == "fpr"]
    assert tuple(fprs) == trusted.fingerprints


@pytest.mark.interop
@needs_gpg
@pytest.mark.parametrize(
    ("secret", "public", "passphrase"),
    [("good.sec.asc", "good.asc", None), ("rsa.sec.gpg", "rsa.asc", None),
     ("protected.sec.asc", "protected.asc", "hunter2")],
)
def test_our_signatures_verify_with_gpgv_and_gpg(
    tmp_path: Path, data: bytes, secret: str, public: str, passphrase: str | None
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (key,) = gpg.load_secret_keys(fx(secret))
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(gpg.Keyring.from_bytes(fx(public)).to_bytes())  # our keyring writer too
    (tmp_path / "data").write_bytes(data)
    for i, digest in enumerate(("SHA256", "SHA512")):
        sig = tmp_path / f"sig{i}"
        sig.write_bytes(gpg.sign_detached(key, data, passphrase, digest=digest))
        proc = run("gpgv", "--homedir", home, "--keyring", keyring, sig, tmp_path / "data")
        assert proc.returncode == 0, proc.stderr
        assert "Good signature" in proc.stderr
        assert gpg_verdict(home, keyring, sig, tmp_path / "data") == "GOODSIG"
        (tmp_path / "data").write_bytes(data + b"x")
        assert gpg_verdict(home, keyring, sig, tmp_path / "data") == "BADSIG"
        (tmp_path / "data").write_bytes(data)


@pytest.mark.interop
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ostree") is None or shutil.which("gpg") is None,
                    reason="needs gpg and ostree")
def test_make_keys_script_regenerates_equivalent_fixtures(tmp_path: Path) -> None:
    script = tmp_path / "make-keys.sh"
    shutil.copy(DATA / "make-keys.sh", script)
    proc = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    keyring = gpg.Keyring.from_bytes((tmp_path / "trusted-ostree.gpg").read_bytes())
    data = (tmp_path / "data.bin").read_bytes()
    assert len(keyring) == 5
    verdicts = {
        name: gpg.inspect_detached(keyring, data, [(tmp_path / f"sig-{name}.gpg").read_bytes()])
        .signatures[0].reason.split(" ")[-1]
        for name in ("good", "rsa", "revoked", "subrev")
    }
    assert verdicts == {"good": "signature", "rsa": "signature", "revoked": "revoked",
                        "subrev": "revoked"}
