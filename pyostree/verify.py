"""Trust policy for a remote: which keys it trusts, and checking commits and summaries.

The cryptography is pure (``gpg``, ``sign``); this module only finds and reads key files
(libostree's lookup order, docs/ostree-formats.md §6.3–6.4) and applies the remote's settings.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from . import gpg
    from .repo import Repo

# gpg (pgpy) and sign (cryptography) are imported where used: a pull that verifies no
# signatures does not pay for them (about 7 MiB of RSS on a small device).

from . import gvariant as gv
from .core import ObjectType
from .errors import FormatError, SignatureError, VerificationError
from .formats.objects import signatures_from_metadata
from .remotes import SIGN_TYPES

GPG_KEY = "ostree.gpgsigs"
ED25519_KEY = "ostree.sign.ed25519"
GLOBAL_GPG_DIR = Path("/usr/share/ostree/trusted.gpg.d")


@attrs.frozen
class TrustSettings:
    """What a remote asks to be verified, and where its keys live."""

    remote: str
    gpg_verify: bool = True
    gpg_verify_summary: bool = False
    sign_verify: bool = False
    sign_verify_summary: bool = False
    gpgkeypath: tuple[str, ...] = ()
    ed25519_keys: tuple[str, ...] = ()  # inline base64 public keys
    ed25519_files: tuple[str, ...] = ()
    repo_dir: Path | None = None
    remotes_dirs: tuple[Path, ...] = ()
    etc_ostree: Path = Path("/etc/ostree")
    usr_share_ostree: Path = Path("/usr/share/ostree")


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def global_gpg_dir() -> Path:
    """libostree's global keyring directory: ``$OSTREE_GPG_HOME`` if set, else
    ``/usr/share/ostree/trusted.gpg.d``."""
    return Path(os.environ.get("OSTREE_GPG_HOME") or GLOBAL_GPG_DIR)


def load_gpg_keyring(settings: TrustSettings, *, global_fallback: bool = True) -> gpg.Keyring:
    from . import gpg  # pgpy is heavy: loaded only when GPG is used

    """The remote's keyring: ``REMOTE.trustedkeys.gpg`` (repo, then remotes.d), ``gpgkeypath``,
    and the global keyrings only when there is no per-remote keyring."""
    keyring = gpg.Keyring()
    name = f"{settings.remote}.trustedkeys.gpg"
    per_remote = False
    candidates = [settings.repo_dir / name] if settings.repo_dir else []
    candidates += [d / name for d in settings.remotes_dirs]
    for path in candidates:
        data = _read(path)
        if data is not None:
            keyring = keyring.merge(gpg.Keyring.from_bytes(data))
            per_remote = True
            break
    for entry in settings.gpgkeypath:
        p = Path(entry)
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        for f in files:
            data = _read(f)
            if data is None:
                raise SignatureError(f"cannot read GPG key file {f}")
            keyring = keyring.merge(gpg.Keyring.from_bytes(data))
    # Listing a remote's keys (gpg-list-keys) leaves the global keyrings out.
    if not per_remote and global_fallback:
        keyring = load_keyring_dir(global_gpg_dir(), keyring)
    return keyring


def load_keyring_dir(directory: Path, keyring: gpg.Keyring | None = None) -> gpg.Keyring:
    """Every ``*.gpg`` keyring in ``directory`` (not ``trustdb.gpg``/``secring.gpg``, as
    libostree), merged into ``keyring``; unreadable or malformed files are skipped."""
    from . import gpg

    keyring = keyring if keyring is not None else gpg.Keyring()
    if directory.is_dir():
        for f in sorted(directory.glob("*.gpg")):
            if f.name in ("trustdb.gpg", "secring.gpg"):
                continue
            data = _read(f)
            if data is not None:
                with contextlib.suppress(FormatError):
                    keyring = keyring.merge(gpg.Keyring.from_bytes(data))
    return keyring


def describe_commit_signatures(repo: Repo, csum: str,
                               keyring: Callable[[], gpg.Keyring]) -> str:
    """What ``ostree show`` prints after a commit: ``Found N signature(s):`` and each GPG
    signature of its detached metadata judged against ``keyring()``; "" for an unsigned commit
    (whose keyring is never loaded, nor pgpy imported)."""
    sigs = signatures_from_metadata(repo.load_detached_metadata(csum) or {}, GPG_KEY)
    if not sigs:
        return ""
    from . import gpg

    data = repo.load_metadata_bytes(ObjectType.COMMIT, csum)
    statuses = gpg.inspect_detached(keyring(), data, sigs).signatures
    out = f"Found {len(statuses)} signature{'' if len(statuses) == 1 else 's'}:\n"
    return out + "".join("\n" + gpg.describe(st, "  ") for st in statuses)


def _key_files(base: Path, name: str) -> list[Path]:
    files = [base / name] if (base / name).is_file() else []
    d = base / f"{name}.d"
    if d.is_dir():
        files += sorted(p for p in d.iterdir() if p.is_file())
    return files


def load_ed25519_keys(settings: TrustSettings) -> tuple[list[bytes], list[bytes]]:
    """(trusted, revoked) ed25519 public keys for the remote."""
    from . import sign

    trusted: list[bytes] = [sign.parse_ed25519_public_key(k) for k in settings.ed25519_keys]
    files = [Path(f) for f in settings.ed25519_files]
    if not trusted and not files:
        files = _key_files(settings.etc_ostree, "trusted.ed25519") + _key_files(
            settings.usr_share_ostree, "trusted.ed25519")
    for f in files:
        data = _read(f)
        if data is None:
            raise SignatureError(f"cannot read ed25519 key file {f}")
        trusted += sign.parse_public_key_file(data)
    revoked: list[bytes] = []
    for f in _key_files(settings.etc_ostree, "revoked.ed25519") + _key_files(
            settings.usr_share_ostree, "revoked.ed25519"):
        data = _read(f)
        if data is not None:
            revoked += sign.parse_public_key_file(data)
    return trusted, revoked


def verify_signed_data(
    settings: TrustSettings, data: bytes, metadata: Mapping[str, gv.Variant] | None, *,
    what: str, use_gpg: bool, use_sign: bool,
) -> list[str]:
    """Check ``data`` against the signatures in ``metadata``; return lines describing the
    good signatures. Raises :class:`SignatureError` (one line, naming ``what``)."""
    good: list[str] = []
    meta = metadata or {}
    if use_gpg:
        sigs = signatures_from_metadata(meta, GPG_KEY)
        if not sigs:
            raise SignatureError(
                f"GPG verification enabled, but no signatures found for {what} "
                "(use gpg-verify=false in remote config to disable)")
        from . import gpg

        keyring = load_gpg_keyring(settings)
        result = gpg.inspect_detached(keyring, data, sigs)
        if not result.valid:
            raise SignatureError(f"GPG verification of {what} failed: {result.failure()}")
        good += [f"GPG: good signature from key {s.key_id} {s.user_id}".rstrip()
                 for s in result.good]
    if use_sign:
        sigs = signatures_from_metadata(meta, ED25519_KEY)
        if not sigs:
            raise SignatureError(f"no ed25519 signatures found for {what}")
        trusted, revoked = load_ed25519_keys(settings)
        try:
            from . import sign

            sign.verify_ed25519(data, sigs, trusted, revoked)
        except SignatureError as exc:
            raise SignatureError(f"ed25519 verification of {what} failed: {exc}") from None
        good.append("ed25519: good signature")
    return good


def check_ref_binding(commit_bindings: Sequence[str] | None, ref: str, csum: str) -> None:
    """A commit with ``ostree.ref-binding`` may only be pulled under one of its refs."""
    if commit_bindings is not None and ref not in commit_bindings:
        raise SignatureError(
            f"commit {csum} is bound to refs {', '.join(commit_bindings) or '(none)'}, "
            f"not to the requested ref {ref}")


# ---------------------------------------------------------------------------- downgrades


def glib_c_time(timestamp: int) -> str:
    """A Unix time as GLib's ``%c`` prints it in the C locale, in local time (``Mon Jan\u2007 1
    00:00:00 2024``): glib pads a one-digit day with a FIGURE SPACE (U+2007)."""
    t = datetime.fromtimestamp(timestamp, UTC).astimezone()
    day = f"\u2007{t.day}" if t.day < 10 else str(t.day)
    return f"{t:%a %b} {day} {t:%H:%M:%S %Y}"


def compare_timestamps(current_rev: str, current_ts: int, new_rev: str, new_ts: int) -> None:
    """libostree's downgrade rule (``_ostree_compare_timestamps``): a newer commit, one with the
    same timestamp, or the same commit is fine; anything else raises VerificationError with
    libostree's message."""
    if new_ts > current_ts or new_ts == current_ts or current_rev == new_rev:
        return
    try:
        new_text, current_text = glib_c_time(new_ts), glib_c_time(current_ts)
    except (OverflowError, OSError, ValueError):
        raise VerificationError(
            f"Upgrade target revision '{new_rev}' timestamp ({new_ts}) or current revision "
            f"'{current_rev}' timestamp ({current_ts}) is invalid") from None
    raise VerificationError(
        f"Upgrade target revision '{new_rev}' with timestamp '{new_text}' is chronologically "
        f"older than current revision '{current_rev}' with timestamp '{current_text}'; use "
        "--allow-downgrade to permit")


# ---------------------------------------------------------------------------- admin status -V

def describe_commit_verification(
    settings: TrustSettings, sign_verify: bool | tuple[str, ...], data: bytes,
    detached: Mapping[str, gv.Variant] | None, *, what: str = "commit",
) -> str:
    """What ``ostree admin status --verify`` prints for a commit
    (``ostree_repo_signature_verify_commit_data``): ``GPG: `` lines describing every GPG
    signature when the remote verifies GPG, then the line of the signature engine that
    accepted it. Raises SignatureError (one line) when the commit does not verify.

    ``sign_verify`` is the remote's ``sign-verify`` (True: any engine with keys; a tuple: those
    engines, each needing configured keys). pyostree implements the ed25519 engine only."""
    if detached is None:
        raise SignatureError("Can't verify commit without detached metadata")
    engines: list[str] = []
    if sign_verify is True:
        engines = ["ed25519"]
    elif sign_verify:
        for name in sign_verify:
            if name not in SIGN_TYPES:
                raise SignatureError("Requested signature type is not implemented")
            if name != "ed25519":
                raise SignatureError(f"signature type {name} is not supported by pyostree")
            if not (settings.ed25519_keys or settings.ed25519_files):
                raise SignatureError(f"No keys found for required signapi type {name}")
            engines.append(name)
    if not (settings.gpg_verify or engines):
        raise SignatureError(
            f"Cannot verify commit for remote {settings.remote}; GPG verification disabled, "
            "and no signapi verifiers configured")
    out = ""
    if settings.gpg_verify:
        sigs = signatures_from_metadata(detached, GPG_KEY)
        if not sigs:
            raise SignatureError("GPG verification enabled, but no signatures found (use "
                                 "gpg-verify=false in remote config to disable)")
        from . import gpg

        result = gpg.inspect_detached(load_gpg_keyring(settings), data, sigs)
        if not result.valid:
            # libostree's error is the description of every signature, newest first; here
            # on one line.
            text = "".join(gpg.describe(st) for st in reversed(result.signatures))
            raise SignatureError("; ".join(line for line in text.splitlines() if line)
                                 or f"no valid GPG signature on {what}")
        out = "".join(gpg.describe(st, "GPG: ") for st in result.signatures)
    if engines:
        sigs = signatures_from_metadata(detached, ED25519_KEY)
        if not sigs:
            raise SignatureError("Can't verify commit: No signatures found")
        from . import sign

        trusted, revoked = load_ed25519_keys(settings)
        try:
            key = sign.ed25519_signer(data, sigs, trusted, revoked)
        except SignatureError as exc:
            raise SignatureError(f"Can't verify commit: ed25519: {exc}") from None
        if out:
            out += "\n"
        out += f"ed25519: Signature verified successfully with key '{key.hex()}'"
    return out
