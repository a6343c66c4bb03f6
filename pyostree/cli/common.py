"""Helpers shared by the command modules: repository lookup, output and argument types."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PyOstreeError
from ..repo import Repo, open_repo

if TYPE_CHECKING:
    from ..formats.summary import Summary


class CommandError(PyOstreeError):
    """A usage error found by a command (exit code 1, like ostree)."""


def add_repo_option(parser: argparse.ArgumentParser) -> None:
    """``--repo`` is accepted before or after the subcommand, as ostree does."""
    parser.add_argument("--repo", metavar="PATH", default=argparse.SUPPRESS,
                        help="path to the OSTree repository (default: the current directory if "
                        "it is a repo, $OSTREE_REPO, or SYSROOT/ostree/repo)")


def repo_path(args: argparse.Namespace) -> Path:
    if getattr(args, "repo", None):
        return Path(args.repo)
    cwd = Path.cwd()
    if (cwd / "objects").is_dir() and (cwd / "config").is_file():
        return cwd
    env = os.environ.get("OSTREE_REPO")
    if env:
        return Path(env)
    sysroot = getattr(args, "sysroot", None) or "/"
    return Path(sysroot) / "ostree" / "repo"


def get_repo(args: argparse.Namespace) -> Repo:
    return open_repo(repo_path(args))


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def command(sub: Any, name: str, func: Any, help_text: str, *,
            aliases: tuple[str, ...] = (), repo: bool = True) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text,
                                                     description=help_text, aliases=aliases)
    if repo:
        add_repo_option(parser)
    parser.set_defaults(func=func)
    return parser


def print_summary(summary: Summary) -> None:
    """A summary as ``ostree summary --view`` / ``remote summary`` show it."""
    import datetime

    from .. import gvariant as gv
    from ..gvtext import format_variant
    from .progress import human_size

    for ref in summary.refs:
        print(f"* {ref.name}")
        print(f"    Latest Commit ({human_size(ref.commit_size)}):")
        print(f"      {ref.checksum_hex}")
        if ref.timestamp is not None:
            ts = datetime.datetime.fromtimestamp(ref.timestamp, datetime.UTC)
            print(f"    Timestamp (ostree.commit.timestamp): {ts.isoformat()}")
        if ref.version:
            print(f"    Version (ostree.commit.version): {ref.version}")
        print()
    for name, digest in summary.static_deltas.items():
        print(f"Static Deltas (ostree.static-deltas): {name} {digest}")
    be_keys = ("ostree.summary.last-modified", "ostree.summary.expires")
    for key, value in summary.metadata.items():
        if key == "ostree.static-deltas":
            continue
        shown = gv.swap64(value.value) if key in be_keys and value.type == "t" else value.value
        print(f"{key}: {format_variant(value.type, shown)}")


def ed25519_keys(args: argparse.Namespace, public: bool, any_kind: bool = False) -> list[bytes]:
    """The keys of the command line and ``--keys-file``: public or secret ones, or with
    ``any_kind`` either (secret keys as 64 bytes, public ones as 32)."""
    from .. import sign  # cryptography loads only for commands that sign

    if args.sign_type != "ed25519":
        raise CommandError(f"signature type {args.sign_type!r} is not implemented")
    texts = list(getattr(args, "keys", []) or getattr(args, "sign", []))
    if args.keys_file:
        texts += sign.parse_key_file(Path(args.keys_file).read_bytes())
    if not texts:
        raise CommandError("no keys given")
    if any_kind:
        return [sign.parse_ed25519_any_key(t) for t in texts]
    parse = sign.parse_ed25519_public_key if public else sign.parse_ed25519_secret_key
    return [parse(t) for t in texts]
