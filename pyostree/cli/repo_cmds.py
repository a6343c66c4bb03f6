"""Offline repository commands: init, commit, refs, reset, checksum, rev-parse, log, show, ls,
cat, checkout, fsck, prune, config."""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import stat
import sys
from typing import TYPE_CHECKING, Any

from .. import gvariant as gv
from ..checkout import CheckoutOptions, checkout, checkout_many, parse_checkout_list
from ..core import ObjectType, is_checksum, parse_refspec
from ..errors import FormatError, RepoError
from ..formats.objects import COMMIT_TYPE, DIRMETA_TYPE, DIRTREE_TYPE, Commit
from ..gvtext import format_variant
from ..maintenance import (
    add_tombstones,
    fsck,
    missing_parents,
    verify_back_refs,
    verify_ref_bindings,
)
from ..repo import Repo, RepoMode
from .commit_cmd import add_commit_arguments, run_commit
from .common import CommandError, command, get_repo, print_json, repo_path
from .progress import CheckoutProgress, human_size

if TYPE_CHECKING:
    from .. import gpg


def register(sub: Any) -> None:
    p = command(sub, "init", cmd_init, "Initialize a new empty repository.")
    p.add_argument("--mode", default="bare",
                   choices=["bare", "bare-user", "bare-user-only", "archive", "archive-z2"],
                   help="repository mode: bare (root-owned files), bare-user (files owned by the "
                   "user, metadata in xattrs), bare-user-only, or archive (compressed, for "
                   "serving over HTTP; archive-z2 is an old name for it) (default: bare)")
    p.add_argument("--collection-id",
                   help="globally unique ID for this repository as a collection of refs for "
                   "redistribution to other repositories")

    p = command(sub, "commit", cmd_commit,
                "Commit a directory tree as a new revision, optionally updating a branch.")
    add_commit_arguments(p)

    p = command(sub, "refs", cmd_refs, "List, create or delete refs (branches) of the repository.")
    p.add_argument("prefix", nargs="?",
                   help="only refs under this prefix (a ref, a directory of refs, or REMOTE: for "
                   "all refs of a remote); with --create, the existing ref or commit")
    p.add_argument("--list", action="store_true",
                   help="do not remove the prefix from the listed refs")
    p.add_argument("--delete", action="store_true",
                   help="delete the refs matching PREFIX, rather than listing them")
    p.add_argument("--create", metavar="NEWREF",
                   help="create a new ref NEWREF for the existing commit named by PREFIX")
    p.add_argument("--revision", "-r", action="store_true",
                   help="print the commit checksum after each ref")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-A", "--alias", action="store_true",
                   help="with --create, make NEWREF an alias of the ref PREFIX (a symlink that "
                   "follows it); otherwise list the aliases as ALIAS -> REF")
    p.add_argument("--force", action="store_true",
                   help="with --create, overwrite NEWREF if it exists")
    p.add_argument("-c", "--collections", action="store_true",
                   help="list refs as (COLLECTION-ID, REF): those of the repository's "
                   "collection ID, mirrors and remotes with a collection-id; PREFIX is a "
                   "collection ID; --create takes COLLECTION-ID:REF")

    p = command(sub, "reset", cmd_reset, "Reset a REF to a previous COMMIT.")
    p.add_argument("ref", metavar="REF", help="an existing ref (or REMOTE:REF)")
    p.add_argument("commit", metavar="COMMIT",
                   help="the commit it should point to (a rev; the commit must be in the "
                   "repository)")

    p = command(sub, "checksum", cmd_checksum, "Checksum a file or directory.")
    p.add_argument("path", metavar="PATH", help="a file, symlink or directory")
    p.add_argument("--ignore-xattrs", action="store_true",
                   help="don't include xattrs in checksum")

    p = command(sub, "rev-parse", cmd_rev_parse,
                "Print the commit checksum that each REV (ref, REMOTE:REF, checksum) resolves to.")
    p.add_argument("revs", nargs="*", metavar="REV",
                   help="a ref, REMOTE:REF, full or abbreviated commit checksum, or REV^ "
                   "for its parent")
    p.add_argument("-S", "--single", action="store_true",
                   help="print the only commit of the repository (an error unless exactly one)")

    p = command(sub, "log", cmd_log, "Show the commit history of a branch, newest first.")
    p.add_argument("rev", metavar="REV", help="the ref or commit to start from")
    p.add_argument("--raw", action="store_true", help="show raw variant data")

    p = command(sub, "show", cmd_show,
                "Show a commit, or the metadata or file object named by a checksum.")
    p.add_argument("rev", metavar="REV", help="ref, commit or object checksum to show")
    p.add_argument("--print-metadata-key", metavar="KEY",
                   help="print the value of metadata key KEY of the commit")
    p.add_argument("--print-detached-metadata-key", metavar="KEY",
                   help="print the value of detached metadata key KEY (e.g. signatures)")
    p.add_argument("--print-related", action="store_true",
                   help="print the related objects of the commit, one NAME CHECKSUM a line")
    p.add_argument("--print-variant-type", metavar="TYPE",
                   help="read REV as a file holding a serialized GVariant of type TYPE and "
                   "print it")
    p.add_argument("--print-sizes", action="store_true",
                   help="print the sizes in the commit's ostree.sizes metadata: compressed and "
                   "unpacked size and object count, in total and still needed")
    p.add_argument("--raw", action="store_true", help="show raw variant data")
    p.add_argument("-B", "--no-byteswap", action="store_true",
                   help="do not automatically convert variant data from big endian")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--gpg-homedir", metavar="DIR",
                   help="also trust the keyrings (*.gpg) in DIR when showing signatures")
    p.add_argument("--gpg-verify-remote", metavar="REMOTE",
                   help="show signatures as checked with the keys of REMOTE")

    p = command(sub, "ls", cmd_ls, "List the files and directories of a commit, like ls -l.")
    p.add_argument("rev", metavar="REV", help="the ref or commit to list")
    p.add_argument("paths", nargs="*", default=["/"], metavar="PATH",
                   help="paths inside the commit to list (default: /)")
    p.add_argument("-R", "--recursive", action="store_true", help="print directories recursively")
    p.add_argument("-C", "--checksum", action="store_true",
                   help="print the checksum of each file (dirtree and dirmeta for directories)")
    p.add_argument("-X", "--xattrs", action="store_true", help="print extended attributes")
    p.add_argument("-d", "--dironly", action="store_true",
                   help="do not recurse into directory arguments")
    p.add_argument("--nul-filenames-only", action="store_true",
                   help="print only file names, NUL separated")

    p = command(sub, "cat", cmd_cat, "Print the contents of files in a commit to standard output.")
    p.add_argument("rev", metavar="REV", help="the ref or commit to read from")
    p.add_argument("paths", nargs="+", metavar="PATH", help="file paths inside the commit")

    p = command(sub, "checkout", cmd_checkout,
                "Check out a commit into a directory on the filesystem.")
    p.add_argument("rev", metavar="REV", help="the ref or commit to check out")
    p.add_argument("destination", nargs="?", metavar="DESTINATION",
                   help="directory to create (default: a directory named after REV)")
    p.add_argument("-U", "--user-mode", action="store_true",
                   help="do not change file ownership or initialize extended attributes")
    p.add_argument("--union", action="store_true",
                   help="keep existing directories, overwrite existing files")
    p.add_argument("--subpath",
                   help="check out only the sub-directory (or file) PATH of the commit")
    p.add_argument("-C", "--force-copy", action="store_true",
                   help="never hardlink files from the repository; always copy")
    p.add_argument("-H", "--require-hardlinks", action="store_true",
                   help="do not fall back to full copies if hardlinking fails")
    p.add_argument("--disable-cache", action="store_true",
                   help="accepted for compatibility: pyostree keeps no uncompressed object "
                   "cache, so there is nothing to disable")
    p.add_argument("--union-add", action="store_true",
                   help="keep existing files/directories, only add new")
    p.add_argument("--union-identical", action="store_true",
                   help="like --union-add, but fail if an existing file differs from the "
                   "commit's (needs -H)")
    p.add_argument("--whiteouts", action="store_true",
                   help="process Docker/OCI whiteouts: .wh.NAME removes NAME, .wh..wh..opq "
                   "empties its directory first")
    p.add_argument("--process-passthrough-whiteouts", action="store_true",
                   help="turn files named .ostree-wh.NAME into overlayfs whiteouts (character "
                   "device 0:0 called NAME)")
    p.add_argument("--allow-noent", action="store_true",
                   help="do nothing if the --subpath does not exist in the commit")
    p.add_argument("--from-stdin", action="store_true",
                   help="check out many: read NUL-terminated REV and SUBPATH pairs from "
                   "standard input; the first argument is then the DESTINATION")
    p.add_argument("--from-file", metavar="FILE",
                   help="like --from-stdin, but read the pairs from FILE")
    p.add_argument("--fsync", metavar="POLICY",
                   help="accepted for compatibility (true/false); checkouts are not fsynced, "
                   "as with ostree checkout")
    p.add_argument("-M", "--bareuseronly-dirs", action="store_true",
                   help="suppress mode bits outside of 0775 for directories (suid, world "
                   "writable, etc.)")
    p.add_argument("--skip-list", metavar="FILE",
                   help="file listing paths not to check out, one a line (/dir/ for a "
                   "directory, /dir/file for anything else)")
    p.add_argument("--selinux-policy", metavar="PATH",
                   help="not supported by pyostree (SELinux labelling); refused")
    p.add_argument("--selinux-prefix", metavar="PREFIX",
                   help="not supported by pyostree (SELinux labelling); refused")

    p = command(sub, "fsck", cmd_fsck,
                "Check the repository for consistency by verifying the checksum of every object.")
    p.add_argument("--delete", action="store_true", help="remove corrupted objects")
    p.add_argument("-q", "--quiet", action="store_true", help="only print error messages")
    p.add_argument("-a", "--all", action="store_true",
                   help="don't stop on the first corrupted object; report them all")
    p.add_argument("--add-tombstones", action="store_true",
                   help="add tombstones for the missing parents of commits (and set "
                   "core.tombstone-commits), marking them as deleted")
    p.add_argument("--verify-bindings", action="store_true",
                   help="check that the commit of each ref is bound to that ref "
                   "(ostree.ref-binding, and for collection refs ostree.collection-binding)")
    p.add_argument("--verify-back-refs", action="store_true",
                   help="check that every ref a commit is bound to exists and points at it")

    p = command(sub, "prune", cmd_prune,
                "Delete unreachable objects, and with --refs-only or --depth old commits too.")
    p.add_argument("--refs-only", action="store_true",
                   help="only keep objects reachable from refs (not from other commits)")
    p.add_argument("--depth", type=int, default=-1,
                   help="keep only DEPTH parents of each ref (-1: all)")
    p.add_argument("--no-prune", action="store_true",
                   help="only report what would be deleted; delete nothing")
    p.add_argument("--delete-commit", metavar="COMMIT",
                   help="delete the commit COMMIT (a ref or checksum)")
    p.add_argument("--keep-younger-than", metavar="DATE",
                   help="keep the commits of each ref back to the first one older than DATE "
                   "(as date -d reads it: '2024-01-31', '1 week ago', '@EPOCH'); implies "
                   "--refs-only")
    p.add_argument("--static-deltas-only", action="store_true",
                   help="with --delete-commit, delete only the static deltas to COMMIT")
    p.add_argument("--retain-branch-depth", action="append", default=[],
                   metavar="BRANCH=DEPTH",
                   help="keep DEPTH parents of BRANCH (-1: all), whatever --depth or "
                   "--keep-younger-than say (repeatable); implies --refs-only")
    p.add_argument("--only-branch", action="append", default=[], metavar="BRANCH",
                   help="prune only BRANCH (repeatable): the other refs keep all their "
                   "history; implies --refs-only")
    p.add_argument("--commit-only", action="store_true",
                   help="only consider (and delete) commit objects")

    p = command(sub, "config", cmd_config,
                "Get, set or unset a key of the repository's config file.")
    p.add_argument("action", choices=["get", "set", "unset"],
                   help="print the value of KEY, set it to VALUE, or remove it")
    p.add_argument("key", help="SECTION.KEY, e.g. core.mode or 'remote \"origin\".url'")
    p.add_argument("value", nargs="?", help="the new value (for set)")
    p.add_argument("--group",
                   help="the config group (e.g. 'remote \"origin\"'), when KEY is a plain key")


def cmd_init(args: argparse.Namespace) -> int:
    Repo.create(repo_path(args), RepoMode.parse(args.mode), collection_id=args.collection_id)
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    return run_commit(args)


def cmd_refs(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    if args.delete and not args.prefix:
        raise CommandError("At least one PREFIX is required when deleting refs")
    if args.create and not args.prefix:
        raise CommandError("You must specify a revision when creating a new ref")
    if args.collections:
        return _collection_refs(repo, args)
    if args.create:
        # As ostree: an existing alias may be re-pointed with --alias, anything else needs
        # --force.
        replacing_alias = args.alias and args.create in repo.list_ref_aliases()
        if not replacing_alias and not args.force and repo.read_ref(args.create) is not None:
            raise CommandError(f"--create specified but ref {args.create} already exists")
        if args.alias:
            repo.set_ref_alias(args.create, args.prefix)
        else:
            repo.set_ref(args.create, repo.resolve_rev(args.prefix))
        return 0
    if args.delete:
        names = list(_matching_refs(repo, args.prefix, cut=False).values())
        aliases = repo.list_ref_aliases()
        if args.alias:
            names = [name for name in names if name in aliases]
        for name in names:  # nothing is deleted while a ref to delete has an alias
            ref = name.rpartition(":")[2]
            for alias, target in aliases.items():
                if target == ref:
                    raise CommandError(f"Ref '{ref}' has an active alias: '{alias}'")
        for name in names:
            repo.set_ref(name, None)
        return 0
    if args.alias:
        aliases = repo.list_ref_aliases(args.prefix)
        if args.json:
            print_json(aliases)
            return 0
        for name, target in aliases.items():
            print(f"{name} -> {target}")
        return 0
    if args.prefix is None:
        refs = repo.list_refs()
    else:
        all_refs = repo.list_refs()
        refs = {shown: all_refs[name] for shown, name in
                _matching_refs(repo, args.prefix, cut=not args.list).items()}
    if args.json:
        print_json(refs)
        return 0
    for name, csum in refs.items():
        print(f"{name} {csum}" if args.revision else name)
    return 0


def _collection_refs(repo: Repo, args: argparse.Namespace) -> int:
    """``refs --collections``: refs as ``(COLLECTION-ID, REF)``; PREFIX names a collection ID
    (to list or delete its refs), ``--create`` takes ``COLLECTION-ID:REF``."""
    if args.create:
        collection_id, sep, ref = args.create.partition(":")
        if not sep:
            raise CommandError(f"Invalid collection ref '{args.create}': expected "
                               "COLLECTION-ID:REF")
        existing = repo.list_collection_refs(collection_id).get((collection_id, ref))
        if existing is not None and not args.force:
            raise CommandError(f"--create specified but ref {args.create} already exists")
        csum = repo.resolve_rev(args.prefix)
        assert csum is not None
        repo.set_collection_ref(collection_id, ref, csum)
        return 0
    refs = repo.list_collection_refs(args.prefix)
    if args.delete:
        for collection_id, ref in refs:
            repo.set_collection_ref(collection_id, ref, None)
        return 0
    if args.json:
        print_json([{"collection-id": c, "ref": r, "checksum": v} for (c, r), v in refs.items()])
        return 0
    for (collection_id, ref), csum in refs.items():
        print(f"({collection_id}, {ref}) {csum}" if args.revision else f"({collection_id}, {ref})")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    with repo.lock():
        if args.ref not in repo.list_refs(remotes=True):
            raise CommandError(f"Invalid ref '{args.ref}'")
        csum = repo.resolve_rev(args.commit)
        assert csum is not None
        if not repo.has_object(ObjectType.COMMIT, csum):
            raise CommandError(f"commit {csum} is not in the repository")
        repo.set_ref(args.ref, csum)
    return 0


def cmd_checksum(args: argparse.Namespace) -> int:
    from ..commit import checksum_path

    print(checksum_path(args.path, ignore_xattrs=args.ignore_xattrs))
    return 0


def _matching_refs(repo: Repo, prefix: str, *, cut: bool) -> dict[str, str]:
    """Refs under ``prefix`` as ostree selects them: ``prefix`` names one ref or a directory of
    refs (``remote:`` for a whole remote). Returns {name to print: real refspec}; with ``cut``
    the directory part is removed from the printed names, as ``ostree refs PREFIX`` does."""
    remote: str | None
    if prefix.endswith((":", ":.")) and prefix.rpartition(":")[0]:
        remote, ref_prefix = prefix.rpartition(":")[0], "."
    else:
        try:
            remote, ref_prefix = parse_refspec(prefix)
        except FormatError as exc:
            raise CommandError(str(exc)) from None
    scope = f"{remote}:" if remote else ""
    names = [name[len(scope):] for name in repo.list_refs(remotes=remote is not None)
             if (name.startswith(scope) if remote else ":" not in name)]
    result: dict[str, str] = {}
    for name in names:
        if name == ref_prefix:
            result[scope + name] = scope + name
        elif ref_prefix == "." or name.startswith(ref_prefix + "/"):
            rel = name if ref_prefix == "." else name[len(ref_prefix) + 1:]
            shown = rel if cut else f"{ref_prefix}/{rel}"
            result[scope + shown] = scope + name
    return result


def cmd_rev_parse(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    if args.single:
        if args.revs:
            raise CommandError("Cannot specify arguments with --single")
        commits = [c for c, t in repo.iter_objects() if t is ObjectType.COMMIT]
        if len(commits) != 1:
            raise CommandError("Multiple commit objects found" if commits
                               else "No commit objects found")
        print(commits[0])
        return 0
    if not args.revs:
        raise CommandError("REV must be specified")
    for rev in args.revs:
        print(repo.resolve_rev(rev))
    return 0


def _date(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S +0000")


def _indented(text: str) -> str:
    """ostree's dump_indented_lines: four spaces before every line, a final newline."""
    lines = text.split("\n")
    out = "".join(f"    {line}\n" for line in lines[:-1])
    return out + (f"    {lines[-1]}\n" if lines[-1] else "")


def _print_commit(csum: str, commit: Commit, *, raw: bool = False,
                  unswapped: bool = False) -> None:
    """What ``ostree show``/``ostree log`` print for one commit."""
    print(f"commit {csum}")
    value = gv.decode(COMMIT_TYPE, commit.to_bytes())
    if unswapped:
        print(format_variant(COMMIT_TYPE, value))
    elif raw:
        print(format_variant(COMMIT_TYPE, gv.byteswap(COMMIT_TYPE, value)))
        return
    out = ""
    if commit.parent:
        out += f"Parent:  {commit.parent}\n"
    out += f"ContentChecksum:  {commit.content_checksum}\n"
    out += f"Date:  {_date(commit.timestamp)}\n"
    if commit.version:
        out += f"Version: {commit.version}\n"
    out += "\n" + _indented(commit.subject) if commit.subject else "(no subject)\n"
    if commit.body:
        out += "\n" + _indented(commit.body)
    sys.stdout.write(out + "\n")


def _print_variant(type_string: str, value: Any, unswapped: bool) -> None:
    """ostree's ot_dump_variant: numbers byte-swapped (unless -B), types annotated."""
    print(format_variant(type_string, value if unswapped else gv.byteswap(type_string, value)))


def cmd_log(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    csum: str | None = repo.resolve_rev(args.rev)
    while csum is not None:
        if not repo.has_object(ObjectType.COMMIT, csum):
            print("<< History beyond this commit not fetched >>")
            break
        commit = repo.load_commit(csum)
        _print_commit(csum, commit, raw=args.raw)
        csum = commit.parent
    return 0


def commit_json(repo: Repo, csum: str, commit: Commit) -> dict[str, Any]:
    return {
        "commit": csum,
        "parent": commit.parent,
        "subject": commit.subject,
        "body": commit.body,
        "timestamp": commit.timestamp,
        "version": commit.version,
        "content-checksum": commit.content_checksum,
        "root-tree": commit.root_tree,
        "root-meta": commit.root_meta,
        "metadata": {k: format_variant(v.type, v.value) for k, v in commit.metadata.items()},
        "partial": repo.is_partial(csum),
    }


def cmd_show(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    key = args.print_metadata_key or args.print_detached_metadata_key
    if key:
        csum = repo.resolve_rev(args.rev)
        assert csum is not None
        if args.print_metadata_key:
            metadata = dict(repo.load_commit(csum).metadata)
        else:
            detached = repo.load_detached_metadata(csum)
            if detached is None:
                raise CommandError(f"No detached metadata for commit {csum}")
            metadata = detached
        variant = metadata.get(key)
        if variant is None:
            raise CommandError(f"No such metadata key '{key}'")
        _print_variant(variant.type, variant.value, args.no_byteswap)
        return 0
    if args.print_related:
        csum = repo.resolve_rev(args.rev)
        assert csum is not None
        for name, related in repo.load_commit(csum).related:
            print(f"{name} {related}")
        return 0
    if args.print_variant_type:
        return _show_variant_file(args.print_variant_type, args.rev)
    if args.print_sizes:
        csum = repo.resolve_rev(args.rev)
        assert csum is not None
        return _show_sizes(repo, csum)
    if is_checksum(args.rev) and not repo.has_object(ObjectType.COMMIT, args.rev):
        return _show_object(repo, args.rev, args)
    csum = repo.resolve_rev(args.rev)
    assert csum is not None
    commit = repo.load_commit(csum)
    if args.json:
        print_json(commit_json(repo, csum, commit))
        return 0
    _print_commit(csum, commit, raw=args.raw, unswapped=args.no_byteswap)
    sys.stdout.write(_signatures(repo, csum, args))
    return 0


def _show_variant_file(type_string: str, path: str) -> int:
    """``show --print-variant-type=TYPE FILE``: the file's bytes as a GVariant of TYPE, printed
    as ostree's ``ot_dump_variant`` does (byte-swapped from big endian, types annotated)."""
    try:
        gv.parse_type(type_string)
    except FormatError:
        raise CommandError(f"Invalid GVariant type string '{type_string}'") from None
    with open(path, "rb") as fh:
        data = fh.read()
    _print_variant(type_string, gv.decode(type_string, data), False)
    return 0


def _show_sizes(repo: Repo, csum: str) -> int:
    """``show --print-sizes``: the totals of the commit's ``ostree.sizes`` and what of them
    the repository still lacks."""
    from ..formats.objects import parse_object_sizes

    sizes = parse_object_sizes(repo.load_commit(csum).metadata)
    needed = [s for s in sizes if not (s.objtype <= max(ObjectType) and
                                       repo.has_object(ObjectType(s.objtype), s.checksum))]

    def size(entries: list[Any], field: str) -> str:
        return _glib_text(human_size(sum(getattr(e, field) for e in entries)))

    print(f"Compressed size (needed/total): {size(needed, 'archived')}/"
          f"{size(sizes, 'archived')}\n"
          f"Unpacked size (needed/total): {size(needed, 'unpacked')}/{size(sizes, 'unpacked')}\n"
          f"Number of objects (needed/total): {len(needed)}/{len(sizes)}")
    return 0


def _signatures(repo: Repo, csum: str, args: argparse.Namespace) -> str:
    """``Found N signatures:`` and each, judged as ostree's ``show`` does: with the keys of
    ``--gpg-verify-remote``, else the global keyrings plus ``--gpg-homedir``."""
    from pathlib import Path

    from .. import verify

    def keyring() -> gpg.Keyring:
        if args.gpg_verify_remote:
            from ..pull import trust_settings
            from ..remoteconfig import load_remotes

            remote = load_remotes(repo).get(args.gpg_verify_remote)
            return verify.load_gpg_keyring(trust_settings(repo, remote))
        keys = verify.load_keyring_dir(verify.global_gpg_dir())
        if args.gpg_homedir:
            try:
                os.listdir(args.gpg_homedir)
            except OSError as exc:  # as ostree: the directory must exist
                raise CommandError(f"opendir({args.gpg_homedir}): {exc.strerror}") from None
            keys = verify.load_keyring_dir(Path(args.gpg_homedir), keys)
        return keys

    text = verify.describe_commit_signatures(repo, csum, keyring)
    # glib writes the figure space of its dates in the locale's charset, "?" where it has none.
    if not "\u2007".encode(sys.stdout.encoding or "ascii", errors="ignore"):
        text = text.replace("\u2007", "?")
    return text


def _show_object(repo: Repo, csum: str, args: argparse.Namespace) -> int:
    """``show`` of a dirmeta, dirtree or file object named by its full checksum."""
    for objtype, type_string in ((ObjectType.DIRMETA, DIRMETA_TYPE),
                                 (ObjectType.DIRTREE, DIRTREE_TYPE)):
        if repo.has_object(objtype, csum):
            print(f"{objtype.extension} {csum}")
            value = gv.decode(type_string, repo.load_metadata_bytes(objtype, csum))
            if args.no_byteswap:
                print(format_variant(type_string, value))
            elif args.raw:
                _print_variant(type_string, value, False)
            return 0
    header = repo.read_content_header(csum)
    print(f"Object: {csum}\nType: file")
    if header.is_symlink:
        print(f"File Type: symlink\nTarget: {header.symlink_target}")
    else:
        print(f"File Type: regular\nSize: {header.size}")
    print(f"Mode: 0{header.mode:04o}\nUid: {header.uid}\nGid: {header.gid}")
    print("Extended Attributes: { " + format_variant("a(ayay)", list(header.xattrs)) + " }")
    return 0


def _mode_char(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    return "-"


def _ls_line(path: str, mode: int, uid: int, gid: int, size: int, csum: str | None,
             xattrs: Any, target: str, args: argparse.Namespace) -> None:
    if args.nul_filenames_only:
        sys.stdout.write(path + "\0")
        return
    parts = f"{_mode_char(mode)}0{mode & 0o7777:04o} {uid} {gid} {size:6d} "
    if args.checksum and csum:
        parts += f"{csum} "  # directories: "TREE META"
    if args.xattrs:
        parts += "{ " + format_variant("a(ayay)", list(xattrs)) + " } "
    parts += path
    if target:
        parts += f" -> {target}"
    print(parts)


def cmd_ls(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    csum = repo.resolve_rev(args.rev)
    assert csum is not None
    commit = repo.load_commit(csum)

    def list_dir(path: str, tree_csum: str, meta_csum: str, recurse: bool) -> None:
        tree = repo.load_dirtree(tree_csum)
        base = path.rstrip("/")
        for name, fcsum in tree.files:
            header = repo.read_content_header(fcsum)
            _ls_line(f"{base}/{name}", header.mode, header.uid, header.gid, header.size, fcsum,
                     header.xattrs, header.symlink_target, args)
        for name, dtree, dmeta in tree.dirs:
            meta = repo.load_dirmeta(dmeta)
            _ls_line(f"{base}/{name}", meta.mode, meta.uid, meta.gid, 0, f"{dtree} {dmeta}",
                     meta.xattrs, "", args)
            if recurse:
                list_dir(f"{base}/{name}", dtree, dmeta, True)

    for path in args.paths:
        tree, meta, fcsum, name = _lookup(repo, commit, path)
        if fcsum is not None:
            header = repo.read_content_header(fcsum)
            _ls_line(name, header.mode, header.uid, header.gid, header.size, fcsum,
                     header.xattrs, header.symlink_target, args)
            continue
        dmeta = repo.load_dirmeta(meta)
        _ls_line(name, dmeta.mode, dmeta.uid, dmeta.gid, 0, f"{tree} {meta}", dmeta.xattrs, "",
                 args)
        if args.recursive or not args.dironly:
            list_dir(name, tree, meta, args.recursive)
    return 0


def _lookup(repo: Repo, commit: Commit, path: str) -> tuple[str, str, str | None, str]:
    """(tree, meta, file csum or None, normalised path) of ``path`` in a commit."""
    from ..checkout import resolve_path

    tree, meta, fcsum = resolve_path(repo, commit.root_tree, commit.root_meta, path)
    return tree, meta, fcsum, "/" + "/".join(p for p in path.split("/") if p and p != ".")


def cmd_cat(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    csum = repo.resolve_rev(args.rev)
    assert csum is not None
    commit = repo.load_commit(csum)
    out = sys.stdout.buffer
    for path in args.paths:
        _, _, fcsum, _ = _lookup(repo, commit, path)
        if fcsum is None:
            raise RepoError(f"{path} is a directory")
        _, stream = repo.open_content(fcsum)
        if stream is None:
            raise RepoError(f"{path} is a symbolic link")
        with stream:
            shutil.copyfileobj(stream, out)
    out.flush()
    return 0


_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no", "none")


def _checkout_options(args: argparse.Namespace) -> CheckoutOptions:
    """The checks ``ostree checkout`` makes, with its messages, then the options."""
    if args.selinux_policy is not None or args.selinux_prefix is not None:
        raise CommandError("SELinux labelling (--selinux-policy, --selinux-prefix) "
                           "is not supported by pyostree")
    if args.fsync is not None and args.fsync.lower() not in _TRUE + _FALSE:
        raise CommandError(f"Invalid boolean argument '{args.fsync}'")
    for a, b in (("union", "union_add"), ("union", "union_identical"),
                 ("union_add", "union_identical"), ("require_hardlinks", "force_copy")):
        if getattr(args, a) and getattr(args, b):
            raise CommandError(f"Cannot specify both --{a.replace('_', '-')} and "
                               f"--{b.replace('_', '-')}")
    if args.union_identical and not args.require_hardlinks:
        raise CommandError("--union-identical requires --require-hardlinks")
    skip: frozenset[str] = frozenset()
    if args.skip_list is not None:
        try:
            with open(args.skip_list, encoding="utf-8") as fh:
                skip = frozenset(line for line in fh.read().split("\n") if line)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise CommandError(f"skip list {args.skip_list}: {reason}") from None
    return CheckoutOptions(
        user_mode=args.user_mode, union=args.union, force_copy=args.force_copy,
        require_hardlinks=args.require_hardlinks, subpath=args.subpath,
        union_add=args.union_add, union_identical=args.union_identical,
        process_whiteouts=args.whiteouts,
        process_passthrough_whiteouts=args.process_passthrough_whiteouts,
        allow_noent=args.allow_noent, bareuseronly_dirs=args.bareuseronly_dirs,
        skip_list=skip)


def cmd_checkout(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    opts = _checkout_options(args)
    if args.from_stdin or args.from_file is not None:
        # As in ostree, the one argument is then the destination of every checkout.
        if args.from_stdin:
            data = sys.stdin.buffer.read()
        else:
            try:
                with open(args.from_file, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise CommandError(f"{args.from_file}: {exc.strerror}") from None
        checkout_many(repo, parse_checkout_list(data), args.rev, opts)
        return 0
    dest = args.destination or args.rev
    with CheckoutProgress() as progress:
        checkout(repo, args.rev, dest, opts,
                 progress=progress if progress.enabled else None)
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    say = (lambda *a: None) if args.quiet else print
    with repo.lock(exclusive=args.delete or args.add_tombstones):
        # The checks come where ostree makes them; a binding that fails ends the run.
        say("Validating refs...")
        if args.verify_bindings:
            verify_ref_bindings(repo)
        say("Validating refs in collections...")
        if args.verify_bindings:
            verify_ref_bindings(repo, collections=True)
        say("Enumerating commits...")
        if args.verify_back_refs:
            verify_back_refs(repo)
        tombstones = missing_parents(repo) if args.add_tombstones else []
        result = fsck(repo, delete=args.delete, all_errors=args.all or args.delete)
        add_tombstones(repo, tombstones)
    say(f"Verifying content integrity of {result.commits} commit objects...")
    for partial in result.partial:
        say(f"Commit {partial} is partial")
    for csum in tombstones:
        print(f"Adding tombstone for commit {csum}")
    if result.errors:
        sys.stdout.flush()
        for err in result.errors[:50]:
            print(f"error: {err}", file=sys.stderr)
        if args.delete:
            print(f"Deleted {result.deleted} corrupted objects", file=sys.stderr)
        print(f"error: {len(result.errors)} fsck errors in {result.objects} objects",
              file=sys.stderr)
        return 1
    say(f"object fsck of {result.commits} commits completed successfully - no errors found.")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    import time

    from ..datespec import parse_date
    from ..pruning import parse_depth_spec, prune

    repo = get_repo(args)
    # ostree's checks, all made before anything is deleted.
    if args.delete_commit and args.no_prune:
        raise CommandError("Cannot specify both --delete-commit and --no-prune")
    if args.static_deltas_only and not args.delete_commit:
        raise CommandError("--static-deltas-only requires --delete-commit; see "
                           "https://github.com/ostreedev/ostree/issues/1479")
    cutoff = None
    if args.keep_younger_than is not None:
        cutoff = parse_date(args.keep_younger_than, time.time())
    retain = dict(parse_depth_spec(spec) for spec in args.retain_branch_depth)
    delete_commit = repo.resolve_rev(args.delete_commit) if args.delete_commit else None
    result = prune(repo, depth=args.depth, refs_only=args.refs_only, dry_run=args.no_prune,
                   delete_commit=delete_commit, keep_younger_than=cutoff,
                   retain_branch_depth=retain, only_branches=args.only_branch,
                   commit_only=args.commit_only, static_deltas_only=args.static_deltas_only)
    label = "Total (commit only) objects" if args.commit_only else "Total objects"
    size = _glib_text(human_size(result.freed))
    print(f"{label}: {result.total}")
    if not result.deleted:
        print("No unreachable objects")
    elif args.no_prune:
        print(f"Would delete: {result.deleted} objects, freeing {size}")
    else:
        print(f"Deleted {result.deleted} objects, {size} freed")
    return 0


def _glib_text(text: str) -> str:
    """What ``g_print`` makes of ``text`` where stdout's charset lacks a character (the
    no-break space of ``g_format_size``, say): a ``?``."""
    encoding = sys.stdout.encoding or "ascii"
    return "".join(c if c.encode(encoding, errors="ignore") else "?" for c in text)


def _config_key(args: argparse.Namespace) -> tuple[str, str]:
    if args.group:
        return args.group, args.key
    group, sep, key = args.key.rpartition(".")
    if not sep:
        raise CommandError("KEY must be SECTION.KEY")
    return group, key


def cmd_config(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    group, key = _config_key(args)
    if args.action == "get":
        value = repo.config.get(group, key, None)
        if value is None:
            raise CommandError(f"key {key} not found in group {group}")
        print(value)
        return 0
    if args.action == "set":
        if args.value is None:
            raise CommandError("set needs a VALUE")
        repo.config.set(group, key, args.value)
    else:
        repo.config.remove_key(group, key)
    with repo.lock():
        repo.save_config()
    return 0


def ensure_dir(path: str) -> None:
    os.makedirs(path, exist_ok=True)
