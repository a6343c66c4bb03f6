"""``pyostree commit``: its options (ostree's) and the thin layer over :mod:`pyostree.commit`."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING

from .. import gvariant as gv
from ..errors import FormatError
from .common import CommandError, get_repo

if TYPE_CHECKING:
    from ..commit import Signer

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no", "none")


def add_commit_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``ostree commit``, in its order."""
    p.add_argument("--parent", metavar="COMMIT",
                   help="parent commit checksum or rev, or \"none\" for no parent "
                   "(default: the branch's current commit)")
    p.add_argument("-s", "--subject", default="", help="one-line subject of the commit message")
    p.add_argument("-m", "--body", default="", help="full description (body) of the commit message")
    p.add_argument("-F", "--body-file", metavar="FILE",
                   help="read the commit message body from FILE (UTF-8)")
    p.add_argument("-e", "--editor", action="store_true",
                   help="write the commit message in an editor ($OSTREE_EDITOR, $VISUAL, "
                   "$EDITOR or vi): the first line is the subject, the rest the body")
    p.add_argument("-b", "--branch", help="branch (ref) to point at the new commit")
    p.add_argument("--orphan", action="store_true",
                   help="create a commit without a parent; needed when no --branch is given")
    p.add_argument("--no-bindings", action="store_true",
                   help="do not write any ref bindings (ostree.ref-binding metadata)")
    p.add_argument("--bind-ref", action="append", default=[], metavar="BRANCH",
                   help="add a ref to the ref-binding commit metadata (repeatable)")
    p.add_argument("--base", metavar="REV",
                   help="start from the tree of commit REV; the --tree arguments are overlaid "
                   "on it (no modifiers apply to REV's own files)")
    p.add_argument("--tree", action="append", default=[], metavar="dir=PATH|tar=FILE|ref=REV",
                   help="overlay a directory, a tarball (- for standard input; plain, gzip, "
                   "bzip2 or xz) or a commit's tree; repeatable, later ones win")
    p.add_argument("--add-metadata-string", action="append", default=[], metavar="KEY=VALUE",
                   help="add a key/value pair to the commit metadata, VALUE as a string "
                   "(repeatable)")
    p.add_argument("--add-metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="add a key/value pair to the commit metadata, VALUE in GVariant text "
                   "format, e.g. \"uint32 7\" (repeatable)")
    p.add_argument("--keep-metadata", action="append", default=[], metavar="KEY",
                   help="copy metadata KEY and its value from the parent commit (repeatable)")
    p.add_argument("--add-detached-metadata-string", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="add a key/value pair to the detached metadata (repeatable)")
    p.add_argument("--owner-uid", type=int, metavar="UID",
                   help="set file ownership user id of every file")
    p.add_argument("--owner-gid", type=int, metavar="GID",
                   help="set file ownership group id of every file")
    p.add_argument("--canonical-permissions", action="store_true",
                   help="canonicalize permissions as bare-user-only does: uid/gid 0, modes "
                   "masked with 0755")
    p.add_argument("--bootable", action="store_true",
                   help="flag the commit as bootable: ostree.bootable and ostree.linux (the "
                   "one /usr/lib/modules/VERSION holding a vmlinuz) metadata")
    p.add_argument("--mode-ro-executables", action="store_true",
                   help="ensure executable files are not writable")
    p.add_argument("--no-xattrs", action="store_true",
                   help="do not import extended attributes")
    p.add_argument("--selinux-policy", metavar="PATH",
                   help="not supported by pyostree (SELinux labelling); refused")
    p.add_argument("-P", "--selinux-policy-from-base", action="store_true",
                   help="not supported by pyostree (SELinux labelling); refused")
    p.add_argument("--link-checkout-speedup", action="store_true",
                   help="take files hardlinked into the repository (checkout -H) by their "
                   "object's checksum instead of reading them")
    p.add_argument("-I", "--devino-canonical", action="store_true",
                   help="assume hardlinked objects are unmodified (no filter applies to "
                   "them); implies --link-checkout-speedup")
    p.add_argument("--tar-autocreate-parents", action="store_true",
                   help="when importing tarballs, create missing parent directories")
    p.add_argument("--tar-pathname-filter", metavar="REGEX,REPLACEMENT",
                   help="when importing tarballs, rewrite each path name with REGEX and "
                   "REPLACEMENT (GLib syntax: \\0 the match, \\1 a group)")
    p.add_argument("--skip-if-unchanged", action="store_true",
                   help="if the tree equals the parent's, make no commit (print the parent)")
    p.add_argument("--statoverride", metavar="PATH",
                   help="file of \"MODE /path\" (add mode bits) and \"=MODE /path\" (set the "
                   "mode) lines; MODE in decimal, as in ostree")
    p.add_argument("--skip-list", metavar="PATH",
                   help="file of paths (/usr/foo) to leave out of the commit, one per line")
    p.add_argument("--consume", action="store_true",
                   help="delete the committed directories once the commit is written")
    p.add_argument("--table-output", action="store_true",
                   help="print the commit and object statistics as KEY: VALUE lines")
    p.add_argument("--gpg-sign", action="append", default=[], metavar="KEY-ID",
                   help="GPG key ID (or fingerprint) to sign the commit with (repeatable)")
    p.add_argument("--gpg-homedir", metavar="HOMEDIR",
                   help="GPG home directory with the secret keys, as exported files "
                   "(*.asc, *.gpg) (default: $GNUPGHOME or ~/.gnupg)")
    p.add_argument("--sign", action="append", default=[], metavar="KEY",
                   help="base64 secret key to sign the commit with (repeatable)")
    p.add_argument("--sign-type", default="ed25519", metavar="NAME",
                   help="signature type for --sign (default: ed25519)")
    p.add_argument("--generate-sizes", action="store_true",
                   help="add ostree.sizes (object sizes) to the metadata; archive repositories")
    p.add_argument("--fsync", metavar="POLICY",
                   help="false: skip the fsync/syncfs calls (faster, not crash-safe)")
    p.add_argument("--disable-fsync", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--timestamp", help="override the timestamp of the commit (@EPOCH or ISO 8601)")
    p.add_argument("path", nargs="?", help="directory to commit (or use --tree)")


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CommandError(f"reading {what} {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"{what} {path}: invalid UTF-8") from None


def _key_values(items: list[str], *, text: bool) -> dict[str, gv.Variant]:
    from ..gvtext import parse_text

    out: dict[str, gv.Variant] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"Missing '=' in KEY=VALUE metadata '{item}'")
        try:
            out[key] = parse_text(value) if text else gv.Variant("s", value)
        except FormatError as exc:
            raise CommandError(f"Parsing {item}: {exc}") from None
    return out


def _fsync(args: argparse.Namespace) -> bool:
    if args.fsync is None:
        return not args.disable_fsync
    value = args.fsync.lower()
    if value not in _TRUE + _FALSE:
        raise CommandError(f"Invalid boolean argument '{args.fsync}'")
    return value in _TRUE and not args.disable_fsync


def _signers(args: argparse.Namespace) -> list[Signer]:
    """``--sign`` keys first, then ``--gpg-sign`` (ostree's order); all loaded up front."""
    from ..commit import dummy_commit_signer, ed25519_commit_signer, gpg_commit_signer

    signers: list[Signer] = []
    if args.sign:
        if args.sign_type == "ed25519":
            from .. import sign

            signers += [ed25519_commit_signer(sign.parse_ed25519_secret_key(k)) for k in args.sign]
        elif args.sign_type == "dummy":
            if os.environ.get("OSTREE_DUMMY_SIGN_ENABLED") != "1":
                raise CommandError("dummy signature type is only for ostree testing")
            signers += [dummy_commit_signer(k) for k in args.sign]
        else:
            raise CommandError("Requested signature type is not implemented")
    if args.gpg_sign:
        from ..signing import load_gpg_secret

        signers += [gpg_commit_signer(load_gpg_secret(args.gpg_homedir, k)) for k in args.gpg_sign]
    return signers


def _editor() -> str:
    editor = os.environ.get("OSTREE_EDITOR")
    term = os.environ.get("TERM")
    dumb = not term or term == "dumb"
    if not editor and not dumb:
        editor = os.environ.get("VISUAL")
    if not editor:
        editor = os.environ.get("EDITOR")
    if not editor:
        if dumb:
            raise CommandError("Terminal is dumb, but EDITOR unset")
        editor = "vi"
    return editor


def edit_message(branch: str | None, subject: str, body: str) -> tuple[str, str]:
    """``--editor``: run the editor (``/bin/sh -c "$EDITOR FILE"``) on ostree's template."""
    from ..commit import editor_template, parse_editor_message

    editor = _editor()
    fd, path = tempfile.mkstemp(prefix="pyostree-commit-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(editor_template(branch, subject, body))
        proc = subprocess.run(["/bin/sh", "-c", f"{editor} {shlex.quote(path)}"],
                              check=False)
        if proc.returncode != 0:
            raise CommandError(f"There was a problem with the editor '{editor}': "
                               f"exit status {proc.returncode}")
        return parse_editor_message(_read_text(path, "edited message"))
    finally:
        os.unlink(path)


def run_commit(args: argparse.Namespace) -> int:
    from ..commit import (
        CommitOptions,
        TreeSource,
        commit_trees,
        parse_timestamp,
    )
    from ..commitmodifier import parse_skip_list, parse_statoverride

    if args.selinux_policy is not None or args.selinux_policy_from_base:
        raise CommandError("SELinux labelling (--selinux-policy, --selinux-policy-from-base) "
                           "is not supported by pyostree")
    repo = get_repo(args)
    statoverride = (parse_statoverride(_read_text(args.statoverride, "statoverride file"))
                    if args.statoverride is not None else None)
    skip_list = (parse_skip_list(_read_text(args.skip_list, "skip list"))
                 if args.skip_list is not None else None)
    if not args.branch and not args.orphan:
        raise CommandError("A branch must be specified with --branch, or use --orphan")
    # As in ostree, a negative owner means "keep the file's own".
    owner_uid = args.owner_uid if args.owner_uid is not None and args.owner_uid >= 0 else None
    owner_gid = args.owner_gid if args.owner_gid is not None and args.owner_gid >= 0 else None
    if args.canonical_permissions and (owner_uid or owner_gid):
        raise CommandError("Cannot specify both --canonical-permissions and a non-zero "
                           "--owner-uid or --owner-gid")
    trees = [TreeSource.parse(spec) for spec in args.tree]
    if not trees:
        if not args.path:
            raise CommandError("a directory to commit is required (PATH or --tree=dir=PATH)")
        trees = [TreeSource("dir", args.path)]
    trees = [TreeSource("tar", "-", sys.stdin.buffer) if t.kind == "tar" and t.value == "-"
             else t for t in trees]
    metadata = {**_key_values(args.add_metadata_string, text=False),
                **_key_values(args.add_metadata, text=True)}
    detached = (_key_values(args.add_detached_metadata_string, text=False)
                if args.add_detached_metadata_string else None)
    timestamp = parse_timestamp(args.timestamp) if args.timestamp else None
    parent = None
    orphan = args.orphan
    if args.parent:
        if args.parent == "none":
            orphan = True
        else:
            parent = repo.resolve_rev(args.parent)
    subject, body = args.subject, args.body
    if args.editor:
        subject, body = edit_message(args.branch, subject, "")  # ostree shows no -m body
    elif args.body_file is not None:
        body = _read_text(args.body_file, "body file")
    options = CommitOptions(
        owner_uid=owner_uid, owner_gid=owner_gid,
        canonical_permissions=args.canonical_permissions, no_xattrs=args.no_xattrs,
        mode_ro_executables=args.mode_ro_executables, statoverride=statoverride,
        skip_list=skip_list, consume=args.consume, generate_sizes=args.generate_sizes,
        link_checkout_speedup=args.link_checkout_speedup or args.devino_canonical,
        devino_canonical=args.devino_canonical,
        tar_autocreate_parents=args.tar_autocreate_parents,
        tar_pathname_filter=args.tar_pathname_filter, fsync=_fsync(args),
    )
    result = commit_trees(
        repo, trees, branch=args.branch, subject=subject, body=body, timestamp=timestamp,
        parent=parent, orphan=orphan, metadata=metadata, keep_metadata=args.keep_metadata,
        detached_metadata=detached, bindings=not args.no_bindings, bind_refs=args.bind_ref,
        bootable=args.bootable, base=args.base, skip_if_unchanged=args.skip_if_unchanged,
        signers=_signers(args), options=options,
    )
    if args.table_output:
        stats = result.stats
        print(f"Commit: {result.checksum}")
        print(f"Metadata Total: {stats.metadata_total}")
        print(f"Metadata Written: {stats.metadata_written}")
        print(f"Content Total: {stats.content_total}")
        print(f"Content Written: {stats.content_written}")
        print(f"Content Cache Hits: {stats.devino_cache_hits}")
        print(f"Content Bytes Written: {stats.content_bytes_written}")
    else:
        print(result.checksum)
    return 0
