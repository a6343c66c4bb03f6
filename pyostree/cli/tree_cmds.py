"""Commands on whole trees: ``diff`` (commits or directories) and ``export`` (a tar archive)."""

from __future__ import annotations

import argparse
import codecs
import locale
import sys
from typing import Any

from ..repo import Repo
from .common import command, get_repo


def register(sub: Any) -> None:
    p = command(sub, "diff", cmd_diff,
                "Compare two commits or directories: the paths modified (M), removed (D) and "
                "added (A) from the first to the second.")
    p.add_argument("src", metavar="REV_OR_DIR",
                   help="the first tree: a rev, or a directory when it starts with / or ./ "
                   "(alone: compare REV^ with REV)")
    p.add_argument("target", metavar="REV_OR_DIR", nargs="?",
                   help="the second tree: a rev, or a directory when it starts with / or ./")
    p.add_argument("--stats", action="store_true",
                   help="print the object counts of both commits and what they share (instead "
                   "of the paths, unless --fs-diff is given too)")
    p.add_argument("--fs-diff", action="store_true",
                   help="print the modified, removed and added paths (the default)")
    p.add_argument("--no-xattrs", action="store_true",
                   help="leave extended attributes of directories on disk out of the comparison")
    p.add_argument("--owner-uid", type=int, metavar="UID",
                   help="compare the files of a second tree on disk as if owned by user UID")
    p.add_argument("--owner-gid", type=int, metavar="GID",
                   help="compare the files of a second tree on disk as if owned by group GID")

    p = command(sub, "export", cmd_export,
                "Stream a commit as a tar archive (GNU format) to standard output or a file.")
    p.add_argument("rev", metavar="COMMIT", help="the ref or commit to export")
    p.add_argument("--no-xattrs", action="store_true",
                   help="accepted for compatibility: like ostree's, the GNU tar archive holds no "
                   "extended attributes")
    p.add_argument("--subpath", metavar="PATH",
                   help="export only the directory PATH of the commit")
    p.add_argument("--prefix", metavar="PATH",
                   help="put PATH in front of every member name (include the trailing / for a "
                   "directory, as with ostree)")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="write the archive to PATH (replaced atomically) rather than to "
                   "standard output")


def cmd_diff(args: argparse.Namespace) -> int:
    from ..treediff import DiffOptions, commit_stats, diff_trees, format_diff, open_tree

    if args.target is None:
        src, target = f"{args.src}^", args.src
    else:
        src, target = args.src, args.target
    repo: Repo | None = None

    def the_repo() -> Repo:
        nonlocal repo
        if repo is None:
            repo = get_repo(args)
        return repo

    if args.fs_diff or not args.stats:
        a, b = open_tree(src, the_repo), open_tree(target, the_repo)
        options = DiffOptions(
            ignore_xattrs=args.no_xattrs,
            owner_uid=args.owner_uid if args.owner_uid is not None and args.owner_uid >= 0
            else None,
            owner_gid=args.owner_gid if args.owner_gid is not None and args.owner_gid >= 0
            else None)
        lines = format_diff(a, b, diff_trees(a, b, options))  # all of it, then print it
        _glib_print("".join(f"{line}\n" for line in lines))
    if args.stats:
        rev_a, rev_b = the_repo().resolve_rev(src), the_repo().resolve_rev(target)
        assert rev_a is not None and rev_b is not None
        stats = commit_stats(the_repo(), rev_a, rev_b)
        _glib_print(f"[A] Object Count: {stats.a_objects}\n"
                    f"[B] Object Count: {stats.b_objects}\n"
                    f"Common Object Count: {stats.common_objects}\n"
                    f"Common Object Size: {_glib_format_size(stats.common_size)}\n")
    return 0


def _glib_format_size(size: int) -> str:
    """``g_format_size()``: "N bytes" below 1000, else one decimal and an SI unit after a
    no-break space ("1.5\u00a0MB")."""
    if size < 1000:
        return f"{size} byte" if size == 1 else f"{size} bytes"
    units = ("kB", "MB", "GB", "TB", "PB", "EB")
    index = len(units) - 1
    for i in range(1, len(units)):
        if size < 1000 ** (i + 1):
            index = i - 1
            break
    return f"{size / 1000 ** (index + 1):.1f}\u00a0{units[index]}"


def _glib_print(text: str) -> None:
    """Write ``text`` as ``g_print`` does: in the locale's charset, with ``?`` for characters
    it lacks; in a UTF-8 locale, names from disk go out as the bytes they are."""
    try:
        charset = codecs.lookup(locale.nl_langinfo(locale.CODESET)).name
    except (LookupError, AttributeError):
        charset = "ascii"
    if charset == "utf-8":
        data = text.encode("utf-8", "surrogateescape")
    else:
        data = text.encode(charset, "replace")
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_to_file, resolve_export, write_tar

    repo = get_repo(args)
    source = resolve_export(repo, args.rev, args.subpath)
    prefix = args.prefix or ""
    if args.output:
        export_to_file(repo, source, args.output, prefix=prefix)
    else:
        sys.stdout.flush()
        write_tar(repo, source, sys.stdout.buffer, prefix=prefix)
        sys.stdout.buffer.flush()
    return 0
