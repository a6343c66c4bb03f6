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
from ..checkout import CheckoutOptions, checkout
from ..core import ObjectType, is_checksum, parse_refspec
from ..errors import FormatError, RepoError
from ..formats.objects import COMMIT_TYPE, DIRMETA_TYPE, DIRTREE_TYPE, Commit
from ..gvtext import format_variant, parse_text
from ..maintenance import fsck, prune
from ..repo import Repo, RepoMode
from .common import CommandError, command, get_repo, print_json, repo_path
from .progress import CheckoutProgress

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
    p.add_argument("-b", "--branch", help="branch (ref) to point at the new commit")
    p.add_argument("-s", "--subject", default="", help="one-line subject of the commit message")
    p.add_argument("-m", "--body", default="", help="full description (body) of the commit message")
    p.add_argument("--tree", action="append", default=[], metavar="dir=PATH",
                   help="overlay the given directory as the tree to commit (only dir=PATH "
                   "is supported)")
    p.add_argument("--timestamp", help="override the timestamp of the commit (@EPOCH or ISO 8601)")
    p.add_argument("--parent", help="parent commit checksum or rev, or \"none\" for no parent "
                   "(default: the branch's current commit)")
    p.add_argument("--orphan", action="store_true",
                   help="create a commit without a parent; needed when no --branch is given")
    p.add_argument("--owner-uid", type=int, help="set file ownership user id of every file")
    p.add_argument("--owner-gid", type=int, help="set file ownership group id of every file")
    p.add_argument("--canonical-permissions", action="store_true",
                   help="canonicalize permissions as bare-user-only does: uid/gid 0, modes "
                   "masked with 0755")
    p.add_argument("--no-xattrs", action="store_true",
                   help="do not import extended attributes from the directory")
    p.add_argument("--no-bindings", action="store_true",
                   help="do not write any ref bindings (ostree.ref-binding metadata)")
    p.add_argument("--bind-ref", action="append", default=[], metavar="BRANCH",
                   help="add a ref to the ref-binding commit metadata (repeatable)")
    p.add_argument("--add-metadata-string", action="append", default=[], metavar="KEY=VALUE",
                   help="add a key/value pair to the commit metadata, VALUE as a string "
                   "(repeatable)")
    p.add_argument("--add-metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="add a key/value pair to the commit metadata, VALUE in GVariant text "
                   "format, e.g. \"uint32 7\" (repeatable)")
    p.add_argument("path", nargs="?", help="directory to commit (or use --tree=dir=PATH)")

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

    p = command(sub, "fsck", cmd_fsck,
                "Check the repository for consistency by verifying the checksum of every object.")
    p.add_argument("--delete", action="store_true", help="remove corrupted objects")
    p.add_argument("-q", "--quiet", action="store_true", help="only print error messages")

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
    from ..commit import CommitOptions, commit_tree, parse_timestamp  # only commit needs it

    repo = get_repo(args)
    src = args.path
    for tree in args.tree:
        kind, _, value = tree.partition("=")
        if kind != "dir":
            raise CommandError(f"unsupported --tree kind {kind!r} (only dir= is supported)")
        src = value
    if not src:
        raise CommandError("a directory to commit is required (PATH or --tree=dir=PATH)")
    if not args.branch and not args.orphan:
        raise CommandError("A branch must be specified with --branch, or use --orphan")
    if args.canonical_permissions and (args.owner_uid or args.owner_gid):
        raise CommandError("Cannot specify both --canonical-permissions and a non-zero "
                           "--owner-uid or --owner-gid")
    metadata: dict[str, gv.Variant] = {}
    for item, is_text in [*((i, False) for i in args.add_metadata_string),
                          *((i, True) for i in args.add_metadata)]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"Missing '=' in KEY=VALUE metadata '{item}'")
        try:
            metadata[key] = parse_text(value) if is_text else gv.Variant("s", value)
        except FormatError as exc:
            raise CommandError(f"Parsing {item}: {exc}") from None
    parent = None
    orphan = args.orphan
    if args.parent:
        if args.parent == "none":
            orphan = True
        else:
            parent = repo.resolve_rev(args.parent)
    csum = commit_tree(
        repo, src, branch=args.branch, subject=args.subject, body=args.body,
        timestamp=parse_timestamp(args.timestamp) if args.timestamp else None,
        parent=parent, orphan=orphan, metadata=metadata, bindings=not args.no_bindings,
        bind_refs=args.bind_ref,
        options=CommitOptions(owner_uid=args.owner_uid, owner_gid=args.owner_gid,
                              canonical_permissions=args.canonical_permissions,
                              no_xattrs=args.no_xattrs),
    )
    print(csum)
    return 0


def cmd_refs(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    if args.create:
        if not args.prefix:
            raise CommandError("--create needs an existing ref or commit as argument")
        if repo.read_ref(args.create) is not None:
            raise CommandError(f"ref {args.create} already exists")
        repo.set_ref(args.create, repo.resolve_rev(args.prefix))
        return 0
    if args.delete:
        if not args.prefix:
            raise CommandError("At least one PREFIX is required when deleting refs")
        for name in _matching_refs(repo, args.prefix, cut=False).values():
            repo.set_ref(name, None)
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


def cmd_checkout(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    dest = args.destination or args.rev
    with CheckoutProgress() as progress:
        checkout(repo, args.rev, dest, CheckoutOptions(
            user_mode=args.user_mode, union=args.union, force_copy=args.force_copy,
            require_hardlinks=args.require_hardlinks, subpath=args.subpath),
            progress=progress if progress.enabled else None)
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    say = (lambda *a: None) if args.quiet else print
    say("Validating refs...")
    say("Enumerating commits...")
    with repo.lock(exclusive=args.delete):
        result = fsck(repo, delete=args.delete)
    say(f"Verifying content integrity of {result.commits} commit objects...")
    for partial in result.partial:
        say(f"Commit {partial} is partial")
    if result.errors:
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
    repo = get_repo(args)
    delete_commit = repo.resolve_rev(args.delete_commit) if args.delete_commit else None
    result = prune(repo, depth=args.depth, refs_only=args.refs_only, dry_run=args.no_prune,
                   delete_commit=delete_commit)
    print(f"Total objects: {result.total}")
    if result.deleted:
        print(f"Deleted {result.deleted} objects, {result.freed} bytes freed")
    else:
        print("No unreachable objects")
    return 0


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
