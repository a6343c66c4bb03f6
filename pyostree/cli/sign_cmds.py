"""Signing commands: ``gpg-sign``, ``sign``, ``summary``."""

from __future__ import annotations

import argparse
from typing import Any

from .. import gvariant as gv
from ..core import ObjectType
from ..formats.objects import parse_metadata
from ..formats.summary import Summary
from ..gvtext import format_variant
from ..verify import ED25519_KEY, GPG_KEY
from .common import CommandError, command, ed25519_keys, get_repo, print_summary


def register(sub: Any) -> None:
    p = command(sub, "gpg-sign", cmd_gpg_sign,
                "Sign a commit with GPG, or delete its GPG signatures.")
    p.add_argument("commit", metavar="COMMIT", help="the ref or commit to sign")
    p.add_argument("key_ids", nargs="+", metavar="KEY-ID",
                   help="GPG key IDs (or fingerprints) to sign with")
    p.add_argument("--gpg-homedir", metavar="HOMEDIR",
                   help="GPG home directory with the secret keys, as exported files "
                   "(*.asc, *.gpg) (default: $GNUPGHOME or ~/.gnupg)")
    p.add_argument("-d", "--delete", action="store_true",
                   help="delete signatures having any of the GPG KEY-IDs")
    p.add_argument("--passphrase", help="passphrase of a protected secret key")

    p = command(sub, "sign", cmd_sign,
                "Sign a commit with ed25519 keys, or verify its ed25519 signatures.")
    p.add_argument("commit", metavar="COMMIT", help="the ref or commit to sign or verify")
    p.add_argument("keys", nargs="*", metavar="KEY",
                   help="base64 secret keys (public keys with --verify)")
    p.add_argument("-s", "--sign-type", default="ed25519",
                   help="signature type to use (default: ed25519, the only one)")
    p.add_argument("--keys-file", metavar="FILE",
                   help="read keys from FILE, one base64 key per line")
    p.add_argument("--verify", action="store_true", help="verify signatures instead of signing")
    p.add_argument("-d", "--delete", action="store_true",
                   help="delete the signatures made by any of the KEYs (public or secret)")

    p = command(sub, "summary", cmd_summary,
                "Regenerate, sign or view the repository's summary file.")
    p.add_argument("-u", "--update", action="store_true", help="update (regenerate) the summary")
    p.add_argument("-v", "--view", action="store_true",
                   help="view the local summary file (the default)")
    p.add_argument("--raw", action="store_true",
                   help="view the raw variant data of the summary file")
    p.add_argument("--gpg-sign", action="append", default=[], metavar="KEY-ID",
                   help="GPG key ID to sign the summary with (repeatable)")
    p.add_argument("--gpg-homedir", metavar="HOMEDIR",
                   help="GPG home directory with the secret keys (default: $GNUPGHOME or "
                   "~/.gnupg)")
    p.add_argument("--sign", action="append", default=[], metavar="KEY",
                   help="base64 ed25519 secret key to sign the summary with (repeatable)")
    p.add_argument("--sign-type", default="ed25519",
                   help="signature type to use (default: ed25519, the only one)")
    p.add_argument("--keys-file", metavar="FILE",
                   help="read secret keys from FILE, one base64 key per line")
    p.add_argument("-m", "--add-metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="additional string metadata field to add to the summary (repeatable)")


def cmd_gpg_sign(args: argparse.Namespace) -> int:
    from ..signing import delete_gpg_signatures, gpg_sign_commit, load_gpg_secret

    repo = get_repo(args)
    csum = repo.resolve_rev(args.commit)
    assert csum is not None
    if args.delete:
        n = delete_gpg_signatures(repo, csum, args.key_ids)
        print(f"Signatures deleted: {n}")
        return 0
    keys = [load_gpg_secret(args.gpg_homedir, k) for k in args.key_ids]
    gpg_sign_commit(repo, csum, keys, args.passphrase)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from .. import sign
    from ..signing import sign_commit

    repo = get_repo(args)
    csum = repo.resolve_rev(args.commit)
    assert csum is not None
    if args.delete:
        from ..signing import delete_ed25519_signatures

        if args.verify:
            raise CommandError("--delete and --verify conflict")
        keys = [sign.public_key_of(k) for k in ed25519_keys(args, public=False, any_kind=True)]
        print(f"Signatures deleted: {delete_ed25519_signatures(repo, csum, keys)}")
        return 0
    if args.verify:
        data = repo.load_metadata_bytes(ObjectType.COMMIT, csum)
        meta = repo.load_detached_metadata(csum) or {}
        sigs = list(meta.get(ED25519_KEY, gv.Variant("aay", [])).value)
        sign.verify_ed25519(data, sigs, ed25519_keys(args, public=True))
        print(f"Signature verified successfully with key of type {args.sign_type}")
        return 0
    sign_commit(repo, csum, ed25519_keys(args, public=False))
    return 0


def _metadata_args(items: list[str]) -> dict[str, gv.Variant]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"bad metadata {item!r}, expected KEY=VALUE")
        out[key] = gv.Variant("s", value)
    return out


def cmd_summary(args: argparse.Namespace) -> int:
    from ..signing import load_gpg_secret, regenerate_summary

    repo = get_repo(args)
    if args.update:
        gpg_keys = [load_gpg_secret(args.gpg_homedir, k) for k in args.gpg_sign]
        secrets = ed25519_keys(args, public=False) if (args.sign or args.keys_file) else []
        regenerate_summary(repo, gpg_keys=gpg_keys, ed25519_secrets=secrets,
                           extra_metadata=_metadata_args(args.add_metadata))
        return 0
    try:
        data = (repo.path / "summary").read_bytes()
    except FileNotFoundError:
        raise CommandError("no summary file; run 'summary -u'") from None
    summary = Summary.from_bytes(data)
    if args.raw:
        print(format_variant("(a(s(taya{sv}))a{sv})", gv.decode("(a(s(taya{sv}))a{sv})", data)))
        return 0
    print_summary(summary)
    sig = repo.path / "summary.sig"
    if sig.exists():
        meta = parse_metadata(sig.read_bytes())
        n = len(meta.get(GPG_KEY, gv.Variant("aay", [])).value)
        print(f"Found {n} GPG signature(s) on the summary")
    return 0
