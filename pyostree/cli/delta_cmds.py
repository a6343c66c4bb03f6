"""``static-delta list|show|apply-offline|generate|delete``."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ..deltas import (
    GenerateOptions,
    apply_offline,
    delete_delta,
    generate_delta,
    list_delta_names,
    read_superblock,
)
from ..formats.delta import delta_superblock_path, parse_delta_name
from .common import CommandError, command, get_repo
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
    q = command(dsub, "generate", cmd_generate,
                "Generate a static delta between two commits (or from the empty tree).")
    q.add_argument("--from", dest="from_rev",
                   help="create delta from revision REV (default: the parent of --to)")
    q.add_argument("--empty", action="store_true",
                   help="create delta from scratch (the empty tree)")
    q.add_argument("--to", dest="to_rev", required=True, help="create delta to revision REV")
    q.add_argument("--inline", action="store_true",
                   help="inline delta parts into the main delta (superblock)")
    q.add_argument("--max-chunk-size", type=int, default=32, metavar="MB",
                   help="maximum size of delta parts in megabytes (default: 32)")
    q.add_argument("--disable-bsdiff", action="store_true", help="disable use of bsdiff")
    q.add_argument("--min-fallback-size", type=int, default=4, metavar="MB",
                   help="minimum uncompressed size in megabytes for using fallback (a file "
                   "fetched as its own object instead of in a part), 0 to disable "
                   "(default: 4)")


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
    repo = get_repo(args)
    frm, to = parse_delta_name(args.delta)
    path = repo.path / delta_superblock_path(frm, to)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CommandError(f"no static delta {args.delta}") from None
    sb, sigs = read_superblock(data)
    print(f"Delta: {sb.name}")
    print(f"Endianness: {'little' if sb.endianness == 'l' else 'big'}")
    ts = datetime.datetime.fromtimestamp(sb.timestamp, datetime.UTC)
    print(f"Timestamp: {ts.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"Number of parts: {len(sb.parts)}")
    print(f"Number of fallback entries: {len(sb.fallbacks)}")
    total = sum(h.size for h in sb.parts)
    utotal = sum(h.usize for h in sb.parts)
    for i, h in enumerate(sb.parts):
        inline = " (inline)" if sb.inline_part(i) is not None else ""
        print(f"PartMeta{i}: nobjects={len(h.objects)} size={h.size} usize={h.usize}{inline}")
    print(f"Total Part Size: {total} ({human_size(total)})")
    print(f"Total Uncompressed Part Size: {utotal} ({human_size(utotal)})")
    if sigs:
        print(f"Signatures: {', '.join(f'{k} ({len(v)})' for k, v in sigs.items())}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    with repo.lock():
        delete_delta(repo, args.delta)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    apply_offline(get_repo(args), args.path)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    if args.empty and args.from_rev:
        raise CommandError("--from and --empty conflict")
    from_rev = None if args.empty else args.from_rev
    if from_rev is None and not args.empty:
        to = repo.resolve_rev(args.to_rev)
        assert to is not None
        from_rev = repo.load_commit(to).parent
        if from_rev is None:
            raise CommandError("the target has no parent; use --from or --empty")
    opts = GenerateOptions(
        max_chunk_size=max(args.max_chunk_size, 1) * 1_000_000, inline=args.inline,
        bsdiff=not args.disable_bsdiff, min_fallback_size=args.min_fallback_size * 1_000_000)
    with repo.lock():
        name = generate_delta(repo, from_rev, args.to_rev, opts)
    print(f"Generated static delta {name}")
    return 0
