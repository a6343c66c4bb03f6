"""``static-delta list|show|delete|generate|apply-offline|verify|indexes|reindex``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import attrs

from ..deltas import (
    GenerateOptions,
    apply_offline,
    delete_delta,
    describe_delta,
    generate_delta,
    list_delta_names,
    superblock_file,
    verify_delta_signature,
)
from ..errors import SignatureError
from ..formats.delta import OP_COUNT_NAMES, delta_superblock_path
from .common import CommandError, command, ed25519_keys, get_repo
from .progress import human_size


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = command(sub, "static-delta", lambda a: _usage(p),
                                         "List, show, generate, apply and delete static deltas.")
    dsub = p.add_subparsers(dest="delta_command", metavar="SUBCOMMAND")
    command(dsub, "list", cmd_list, "List the static deltas of the repository.")
    q = command(dsub, "show", cmd_show,
                "Print information on a static delta: parts, sizes, fallbacks.")
    q.add_argument("delta", metavar="DELTA", help="delta name, FROM-TO or TO (as listed)")
    q = command(dsub, "delete", cmd_delete, "Remove a static delta from the repository.")
    q.add_argument("delta", metavar="DELTA", help="delta name, FROM-TO or TO (as listed)")
    q = command(dsub, "apply-offline", cmd_apply,
                "Apply a static delta from a file or directory to the repository.")
    q.add_argument("path", help="delta directory or superblock file")
    q.add_argument("keys", nargs="*", metavar="KEY-ID",
                   help="trusted ed25519 public keys (base64) that a signed delta must be "
                   "signed with (default: the key files, if any)")
    _verify_key_options(q)
    q = command(dsub, "generate", cmd_generate,
                "Generate a static delta between two commits (or from the empty tree).")
    q.add_argument("--from", dest="from_rev",
                   help="create delta from revision REV (default: the parent of --to)")
    q.add_argument("--empty", action="store_true",
                   help="create delta from scratch (the empty tree)")
    q.add_argument("--to", dest="to_rev", help="create delta to revision REV")
    q.add_argument("to_arg", nargs="?", metavar="TO", help="the same as --to")
    q.add_argument("-n", "--if-not-exists", action="store_true",
                   help="only generate if a delta does not already exist")
    q.add_argument("--set-endianness", choices=["l", "B"], metavar="ENDIAN",
                   help="choose metadata endianness ('l' or 'B')")
    q.add_argument("--swap-endianness", action="store_true",
                   help="swap metadata endianness from host order")
    q.add_argument("--max-bsdiff-size", type=int, default=16, metavar="MB",
                   help="maximum size in megabytes to consider bsdiff compression for input "
                   "files (default: 16; pyostree's bsdiff holds both files in memory)")
    q.add_argument("--filename", metavar="PATH",
                   help="write the delta's superblock to PATH, and its parts beside it, "
                   "instead of into the repository")
    q.add_argument("--sign", action="append", default=[], metavar="KEY_ID",
                   help="sign the delta with this ed25519 secret key (base64)")
    q.add_argument("--sign-type", default="ed25519", metavar="NAME",
                   help="signature type to use (default: ed25519)")
    q.add_argument("--keys-file", metavar="NAME", help="read secret key(s) from file")
    q.add_argument("--inline", action="store_true",
                   help="inline delta parts into the main delta (superblock)")
    q.add_argument("--max-chunk-size", type=int, default=32, metavar="MB",
                   help="maximum size of delta parts in megabytes (default: 32)")
    q.add_argument("--disable-bsdiff", action="store_true", help="disable use of bsdiff")
    q.add_argument("--min-fallback-size", type=int, default=4, metavar="MB",
                   help="minimum uncompressed size in megabytes for using fallback (a file "
                   "fetched as its own object instead of in a part), 0 to disable "
                   "(default: 4)")


    q = command(dsub, "verify", cmd_verify, "Verify the ed25519 signatures of a static delta.")
    q.add_argument("delta", metavar="STATIC-DELTA",
                   help="delta name (FROM-TO or TO), or a path to its superblock")
    q.add_argument("keys", nargs="*", metavar="KEY-ID",
                   help="trusted ed25519 public keys (base64)")
    _verify_key_options(q)
    command(dsub, "indexes", cmd_indexes, "List static delta indexes.")
    q = command(dsub, "reindex", cmd_reindex, "Regenerate static delta indexes.")
    q.add_argument("--to", dest="to_rev", metavar="REV",
                   help="only update the index of the deltas to this commit")


def _verify_key_options(q: argparse.ArgumentParser) -> None:
    q.add_argument("--sign-type", default="ed25519", metavar="NAME",
                   help="signature type to use (default: ed25519)")
    q.add_argument("--keys-file", metavar="NAME",
                   help="read trusted public key(s) from this file")
    q.add_argument("--keys-dir", metavar="NAME",
                   help="read trusted.ed25519(.d) and revoked.ed25519(.d) from this directory "
                   "instead of /etc/ostree and /usr/share/ostree")


def _public_keys(args: argparse.Namespace) -> tuple[list[bytes], list[bytes]]:
    """(trusted, revoked) keys as ``ostree static-delta verify`` loads them: the KEY-IDs, else
    (or also, with --keys-file) the key file, else the key directories."""
    from ..verify import TrustSettings, load_ed25519_keys

    if args.sign_type != "ed25519":
        raise CommandError(f"Sign-type not supported: {args.sign_type}")
    settings = TrustSettings(
        remote="", ed25519_keys=tuple(args.keys),
        ed25519_files=(args.keys_file,) if args.keys_file else ())
    if args.keys_dir:
        settings = attrs.evolve(settings, etc_ostree=Path(args.keys_dir),
                                usr_share_ostree=Path(args.keys_dir))
    return load_ed25519_keys(settings)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 1


def cmd_list(args: argparse.Namespace) -> int:
    names = list_delta_names(get_repo(args))
    if not names:
        print("(No static deltas)")
    for name in names:
        print(name)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Prints what ``ostree static-delta show`` prints, line for line."""
    info = describe_delta(get_repo(args), args.delta)
    sb = info.superblock
    print(f"Delta: {args.delta}")
    print(f"Signed: {'yes' if info.signed else 'no'}")
    print(f"From: {sb.from_checksum}" if sb.from_checksum else "From <scratch>")
    print(f"To: {sb.to_checksum}")
    guessed = " (heuristic)" if info.endianness_guessed else ""
    print(f"Endianness: {'little' if sb.endianness == 'l' else 'big'}{guessed}")
    print(f"Timestamp: {sb.timestamp}")
    print(f"Number of parents: {len(sb.recurse) // 64}")
    print(f"Number of fallback entries: {len(sb.fallbacks)}")
    for fb in sb.fallbacks:
        print(f"  {fb.checksum}")
    fsize = sum(fb.compressed_size for fb in sb.fallbacks)
    fusize = sum(fb.uncompressed_size for fb in sb.fallbacks)
    print(f"Total Fallback Size: {fsize} ({human_size(fsize)})")
    print(f"Total Fallback Uncompressed Size: {fusize} ({human_size(fusize)})")
    print(f"Number of parts: {len(sb.parts)}")
    for i, (h, st) in enumerate(zip(sb.parts, info.parts, strict=True)):
        print(f"PartMeta{i}: nobjects={len(h.objects)} size={h.size} usize={h.usize}")
        print(f"PartPayload{i}: nmodes={st.nmodes} nxattrs={st.nxattrs} "
              f"blobsize={st.blob_size} opsize={st.ops_size}")
        counts = " ".join(f"{name}={n}" for name, n in zip(OP_COUNT_NAMES, st.op_counts,
                                                           strict=True))
        print(f"PartPayloadOps{i}: {counts}")
    size = sum(h.size for h in sb.parts)
    usize = sum(h.usize for h in sb.parts)
    print(f"Total Part Size: {size} ({human_size(size)})")
    print(f"Total Part Uncompressed Size: {usize} ({human_size(usize)})")
    print(f"Total Size: {size + fsize} ({human_size(size + fsize)})")
    print(f"Total Uncompressed Size: {usize + fusize} ({human_size(usize + fusize)})")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    with repo.lock():
        delete_delta(repo, args.delta)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    keys = _public_keys(args)
    # Without keys given, the system's key files if there are any (as ostree: else no check).
    given = args.keys or args.keys_file or args.keys_dir
    apply_offline(get_repo(args), args.path, keys=keys if given or keys[0] else None)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    to_rev = args.to_rev or args.to_arg
    if to_rev is None:
        raise CommandError("TO revision must be specified")
    if args.empty and args.from_rev:
        raise CommandError("Cannot specify both --empty and --from=REV")
    to = repo.resolve_rev(to_rev)
    assert to is not None
    from_csum = None
    if not args.empty:
        from_csum = repo.resolve_rev(args.from_rev or f"{to}^")
    delta_id = f"{from_csum}-{to}" if from_csum else to
    if args.if_not_exists and (repo.path / delta_superblock_path(from_csum, to)).exists():
        print(f"Delta {delta_id} already exists.")
        return 0
    endianness = args.set_endianness or "l"
    if args.swap_endianness:
        endianness = "B" if endianness == "l" else "l"
    sign_keys: list[bytes] = []
    if args.sign or args.keys_file:
        sign_keys = ed25519_keys(args, public=False)
    opts = GenerateOptions(
        max_chunk_size=max(args.max_chunk_size, 1) * 1_000_000, inline=args.inline,
        bsdiff=not args.disable_bsdiff, max_bsdiff_size=args.max_bsdiff_size * 1_000_000,
        min_fallback_size=args.min_fallback_size * 1_000_000, endianness=endianness,
        filename=args.filename, sign_keys=tuple(sign_keys))
    print("Generating static delta:")
    print(f"  From: {from_csum or 'empty'}")
    print(f"  To:   {to}", flush=True)
    with repo.lock():
        generate_delta(repo, from_csum, to, opts)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    path = superblock_file(repo, args.delta)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    trusted, revoked = _public_keys(args)
    try:
        verify_delta_signature(data, trusted, revoked)
    except SignatureError as exc:
        print("Verification fails")
        raise CommandError(str(exc)) from None
    print("Verification OK")
    return 0


def cmd_indexes(args: argparse.Namespace) -> int:
    from ..signing import list_delta_indexes

    indexes = list_delta_indexes(get_repo(args))
    print("\n".join(indexes) if indexes else "(No static deltas indexes)")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    from ..signing import reindex_deltas

    repo = get_repo(args)
    reindex_deltas(repo, repo.resolve_rev(args.to_rev) if args.to_rev else None)
    return 0
