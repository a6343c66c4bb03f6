"""Remote commands: ``remote add|list|delete|gpg-import|gpg-list-keys|refs|summary|show-url``,
``remote add-cookie|delete-cookie|list-cookies``, ``pull`` and ``pull-local``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, NoReturn

from .. import remotecookies
from ..errors import RepoError
from ..fetcher import make_fetcher
from ..fileio import atomic_write
from ..formats.summary import Summary
from ..pull import PullOptions, fetch_summary, pull, pull_local, remote_fetch_config
from ..remoteconfig import (
    apply_change,
    get_remote,
    is_system_repo,
    load_remotes,
    remotes_dirs,
)
from ..remotes import Remote, add_options
from ..repo import Repo, open_repo
from .common import CommandError, command, get_repo, print_json, print_summary
from .progress import PullProgress, human_size


def register(sub: Any) -> None:
    remote_parser: argparse.ArgumentParser = command(
        sub, "remote", lambda a: _missing(remote_parser),
        "Add, delete and inspect remote repositories.")
    rsub = remote_parser.add_subparsers(dest="remote_command", metavar="SUBCOMMAND")

    q = command(rsub, "add", cmd_remote_add,
                "Add a remote repository to the repository's configuration.")
    q.add_argument("name", metavar="NAME", help="name of the new remote")
    q.add_argument("url", metavar="URL", nargs="?",
                   help="URL of the remote repository: http(s)://..., mirrorlist=URL, "
                   "metalink=URL or file:///path (optional with --custom-backend)")
    q.add_argument("branches", nargs="*", metavar="BRANCH",
                   help="branches pulled by default when pull names none")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set config option KEY=VALUE for the remote (repeatable)")
    q.add_argument("--no-gpg-verify", action="store_true",
                   help="disable GPG verification of commits and the summary")
    q.add_argument("--no-sign-verify", action="store_true",
                   help="disable signature verification (GPG too): sign-verify=false")
    q.add_argument("--sign-verify", action="append", default=[],
                   metavar="KEYTYPE=[inline|file]:PUBKEY",
                   help="verify signatures with this key: KEYTYPE=inline:PUBKEY or "
                   "KEYTYPE=file:/path/to/key (repeatable; KEYTYPE ed25519)")
    q.add_argument("--if-not-exists", action="store_true",
                   help="do nothing if the remote already exists")
    q.add_argument("--force", action="store_true",
                   help="replace the remote if it already exists")
    q.add_argument("--gpg-import", metavar="FILE",
                   help="import GPG keys from FILE into the remote's keyring")
    q.add_argument("--contenturl", help="use URL when fetching content (objects, delta parts)")
    q.add_argument("--custom-backend", metavar="NAME",
                   help="this remote has content not fetched via libostree (or pyostree): "
                   "its pulls are refused; URL becomes optional")
    q.add_argument("--collection-id", metavar="COLLECTION-ID",
                   help="globally unique ID of the remote's collection of refs; written to "
                   "the config and required as the commits' collection binding (pyostree "
                   "does no peer-to-peer pulls)")
    q.add_argument("--sysroot", metavar="PATH",
                   help="use the sysroot at PATH (overrides --repo): its ostree/repo, and "
                   "etc/ostree/remotes.d for the new remote")

    q = command(rsub, "list", cmd_remote_list, "List the configured remotes.")
    q.add_argument("-u", "--show-urls", action="store_true", help="show the URL of each remote")
    q.add_argument("--json", action="store_true", help="machine-readable output")

    q = command(rsub, "delete", cmd_remote_delete, "Delete a remote and its GPG keyring.")
    q.add_argument("name", metavar="NAME", help="the remote to delete")
    q.add_argument("--if-exists", action="store_true",
                   help="do nothing if the remote does not exist")
    q.add_argument("--sysroot", metavar="PATH",
                   help="use the sysroot at PATH (overrides --repo): its ostree/repo and "
                   "etc/ostree/remotes.d")

    q = command(rsub, "show-url", cmd_remote_show_url, "Print the URL of a remote.")
    q.add_argument("name", metavar="NAME", help="the remote")

    q = command(rsub, "gpg-import", cmd_remote_gpg_import,
                "Import GPG public keys into the keyring a remote verifies with.")
    q.add_argument("name", metavar="NAME", help="the remote")
    q.add_argument("keyfiles", nargs="*", metavar="KEYFILE",
                   help="files with GPG public keys (binary or ASCII-armored)")
    q.add_argument("-k", "--keyring", action="append", default=[],
                   help="import all keys of this keyring file (repeatable)")
    q.add_argument("--stdin", action="store_true", help="read keys from standard input")

    q = command(rsub, "gpg-list-keys", cmd_remote_gpg_list_keys,
                "Show the GPG keys a remote trusts (without NAME: the global keyrings).")
    q.add_argument("name", nargs="?", metavar="NAME", help="the remote")

    q = command(rsub, "add-cookie", cmd_remote_add_cookie,
                "Add a cookie to a remote's cookie jar; pulls from it send the cookie.")
    q.add_argument("name", metavar="NAME", help="the remote")
    q.add_argument("domain", metavar="DOMAIN",
                   help="host the cookie is for (a leading dot: subdomains too)")
    q.add_argument("path", metavar="PATH", help="URL path prefix the cookie is for, e.g. /")
    q.add_argument("cookie_name", metavar="COOKIE_NAME", help="the cookie's name")
    q.add_argument("value", metavar="VALUE", help="the cookie's value")
    _ostree_missing_message(q, "NAME, DOMAIN, PATH, COOKIE_NAME and VALUE")

    q = command(rsub, "delete-cookie", cmd_remote_delete_cookie,
                "Remove a cookie from a remote's cookie jar.")
    q.add_argument("name", metavar="NAME", help="the remote")
    q.add_argument("domain", metavar="DOMAIN", help="the cookie's domain, as added")
    q.add_argument("path", metavar="PATH", help="the cookie's path, as added")
    q.add_argument("cookie_name", metavar="COOKIE_NAME", help="the cookie's name")
    _ostree_missing_message(q, "NAME, DOMAIN, PATH and COOKIE_NAME")

    q = command(rsub, "list-cookies", cmd_remote_list_cookies,
                "Show the cookies in a remote's cookie jar.")
    q.add_argument("name", metavar="NAME", help="the remote")
    _ostree_missing_message(q, "NAME")

    q = command(rsub, "refs", cmd_remote_refs,
                "List the refs a remote offers, from its summary file.")
    q.add_argument("name", metavar="NAME", help="the remote")
    _cache_dir_option(q)

    q = command(rsub, "summary", cmd_remote_summary,
                "Fetch and show a remote's summary: refs, commits, static deltas.")
    q.add_argument("name", metavar="NAME", help="the remote")
    q.add_argument("--raw", action="store_true", help="show raw variant data")
    _cache_dir_option(q)

    p = command(sub, "pull", cmd_pull,
                "Download commits and their objects from a remote and update the refs.")
    p.add_argument("remote", help="remote name, or REMOTE:REF to pull one ref")
    p.add_argument("refs", nargs="*",
                   help="REF or REF@COMMIT to pull (default: the remote's branches)")
    _pull_options(p)

    p = command(sub, "pull-local", cmd_pull_local,
                "Copy commits and their objects from another local repository.")
    p.add_argument("src", metavar="SRC", help="path of the source repository")
    p.add_argument("refs", nargs="*", metavar="REF",
                   help="refs or commits to copy (default: all refs of SRC)")
    p.add_argument("--remote", help="add REMOTE to the refspec: store refs as REMOTE:REF")
    p.add_argument("--commit-metadata-only", action="store_true",
                   help="copy only the commit metadata (commit and detached metadata)")
    p.add_argument("--untrusted", action="store_true",
                   help="verify checksums of local sources (pyostree always does)")
    p.add_argument("--bareuseronly-files", action="store_true",
                   help="reject regular files with mode outside of 0775 (world writable, "
                   "suid, etc.)")
    p.add_argument("--require-static-deltas", action="store_true",
                   help="apply the source's static deltas; fail where there is none")
    p.add_argument("--disable-fsync", action="store_true",
                   help="accepted for ostree compatibility; pyostree always fsyncs")
    p.add_argument("--per-object-fsync", action="store_true",
                   help="fsync each object as it is written, rather than all at the end")
    p.add_argument("--depth", type=int, default=0,
                   help="traverse DEPTH parents (-1: all) (default: 0)")
    p.add_argument("--gpg-verify", action="store_true",
                   help="GPG verify commits with the keys of --remote (needs --remote)")
    p.add_argument("--gpg-verify-summary", action="store_true",
                   help="GPG verify the source's summary with the keys of --remote (needs "
                   "--remote)")
    p.add_argument("--disable-verify-bindings", action="store_true",
                   help="do not verify commit bindings (ostree.ref-binding)")
    p.add_argument("--json", action="store_true", help="print a machine-readable result")


def _cache_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", metavar="DIR",
                   help="cache the summary in DIR/summaries (an existing directory) and fetch "
                   "it with conditional requests, verified as a pull verifies it")


def _pull_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--commit-metadata-only", action="store_true",
                   help="fetch only the commit metadata (commit and detached metadata)")
    p.add_argument("--depth", type=int, default=0,
                   help="traverse DEPTH parents (-1: all) (default: 0)")
    p.add_argument("--mirror", action="store_true",
                   help="write refs suitable for a mirror (refs/heads, not refs/remotes)")
    p.add_argument("--disable-static-deltas", action="store_true",
                   help="do not use static deltas; fetch objects one by one")
    p.add_argument("--require-static-deltas", action="store_true",
                   help="fail unless a static delta is available for every ref")
    p.add_argument("--dry-run", action="store_true",
                   help="only print what would be downloaded (requires static deltas)")
    p.add_argument("--subpath", action="append", default=[],
                   help="only pull the provided subpath (repeatable)")
    p.add_argument("-T", "--timestamp-check", action="store_true",
                   help="require fetched commits to have newer timestamps than the current ref")
    p.add_argument("--timestamp-check-from-rev", metavar="REV",
                   help="require every fetched commit to be no older than the local REV")
    p.add_argument("--url",
                   help="pull objects from this URL instead of the one in the remote config")
    p.add_argument("--http-header", action="append", default=[], metavar="NAME=VALUE",
                   help="add NAME=VALUE as HTTP header to all requests (repeatable)")
    p.add_argument("--network-retries", type=int, default=5, metavar="N",
                   help="how many times each download is retried upon error (default: 5)")
    p.add_argument("--low-speed-time", type=float, default=PullOptions().low_speed_time,
                   help=argparse.SUPPRESS)  # seconds under 1000 B/s before a transfer aborts
    p.add_argument("--disable-verify-bindings", action="store_true",
                   help="do not verify commit bindings (ostree.ref-binding)")
    p.add_argument("--disable-fsync", action="store_true",
                   help="accepted for ostree compatibility; pyostree always fsyncs")
    p.add_argument("--per-object-fsync", action="store_true",
                   help="fsync each object as it is written, rather than all at the end")
    p.add_argument("--untrusted", action="store_true",
                   help="verify checksums of local sources (pyostree always does)")
    p.add_argument("--http-trusted", action="store_true",
                   help="accepted for ostree compatibility; pyostree verifies HTTP sources too")
    p.add_argument("--bareuseronly-files", action="store_true",
                   help="reject regular files with mode outside of 0775 (world writable, "
                   "suid, etc.)")
    p.add_argument("-L", "--localcache-repo", action="append", default=[], metavar="REPO",
                   help="use the objects of the local repository REPO instead of fetching "
                   "them (verified; repeatable)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="keep the summary cache in DIR/summaries (an existing directory)")
    p.add_argument("--update-frequency", type=int, default=0, metavar="FREQUENCY",
                   help="progress display update interval in milliseconds (0: the default)")
    p.add_argument("--json", action="store_true", help="print a machine-readable result")
    p.add_argument("--sysroot", metavar="PATH",
                   help="sysroot whose etc/ostree configuration applies")


def _ostree_missing_message(parser: argparse.ArgumentParser, names: str) -> None:
    """A missing argument gives ostree's message (``NAMES must be specified``) instead of
    argparse's."""
    report = parser.error

    def error(message: str) -> NoReturn:
        if message.startswith("the following arguments are required"):
            report(f"{names} must be specified")
        report(message)

    parser.error = error  # type: ignore[method-assign]


def _missing(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 1


def _parse_set(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"bad --set {item!r}, expected KEY=VALUE")
        out[key] = value
    return out


def _sysroot(args: argparse.Namespace) -> Path | None:
    value = getattr(args, "sysroot", None)
    return Path(value) if value else None


def import_keys(repo: Repo, remote: str, blobs: list[bytes]) -> int:
    from .. import gpg

    name = repo.path / f"{remote}.trustedkeys.gpg"
    keyring = gpg.Keyring()
    if name.exists():
        keyring = gpg.Keyring.from_bytes(name.read_bytes())
    before = len(keyring)
    for blob in blobs:
        keyring = keyring.merge(gpg.Keyring.from_bytes(blob))
    atomic_write(name, keyring.to_bytes())
    return len(keyring) - before


def _sysroot_repo(args: argparse.Namespace) -> tuple[Repo, Path | None]:
    """The repository and sysroot of ``--sysroot=PATH`` (``PATH/ostree/repo``; it overrides
    ``--repo``, as in ostree), else of ``--repo``."""
    sysroot = _sysroot(args)
    if sysroot is None:
        return get_repo(args), None
    return open_repo(sysroot / "ostree" / "repo"), sysroot


def cmd_remote_add(args: argparse.Namespace) -> int:
    if args.if_not_exists and args.force:
        raise CommandError("Can only specify one of --if-not-exists and --force")
    if args.url is None and args.custom_backend is None:
        raise CommandError("NAME and URL must be specified")
    options = add_options(
        branches=args.branches, contenturl=args.contenturl, custom_backend=args.custom_backend,
        settings=list(_parse_set(args.set).items()), no_gpg_verify=args.no_gpg_verify,
        no_sign_verify=args.no_sign_verify, sign_verify=args.sign_verify,
        collection_id=args.collection_id)
    repo, sysroot = _sysroot_repo(args)
    remotes = load_remotes(repo, sysroot)
    dirs = remotes_dirs(repo, sysroot)
    # Like ostree: a system repository's new remotes go to etc/ostree/remotes.d.
    target = dirs[0] if dirs and (sysroot is not None or is_system_repo(repo)) else "repo"
    with repo.lock():
        if args.force:
            change = remotes.replace(args.name, args.url, options, target=target)
        else:
            change = remotes.add(args.name, args.url, options,
                                 if_not_exists=args.if_not_exists, target=target)
        apply_change(repo, change)
        if args.gpg_import and change.writes:
            import_keys(repo, args.name, [Path(args.gpg_import).read_bytes()])
    return 0


def cmd_remote_list(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    remotes = load_remotes(repo)
    if args.json:
        print_json([{"name": n, "url": remotes.get(n).url,
                     "gpg-verify": remotes.get(n).gpg_verify} for n in remotes.names()])
        return 0
    names = remotes.names()
    width = max((len(n) for n in names), default=0)
    for name in names:
        if args.show_urls:
            url = remotes.get(name).url or ""
            if remotes.get(name).mirrorlist:
                url = "mirrorlist=" + url
            print(f"{name.ljust(width)}  {url}")
        else:
            print(name)
    return 0


def cmd_remote_delete(args: argparse.Namespace) -> int:
    repo, sysroot = _sysroot_repo(args)
    with repo.lock():
        remotes = load_remotes(repo, sysroot)
        change = remotes.delete(args.name, if_exists=args.if_exists)
        apply_change(repo, change)
        if change.writes:
            (repo.path / f"{args.name}.trustedkeys.gpg").unlink(missing_ok=True)
    return 0


def cmd_remote_show_url(args: argparse.Namespace) -> int:
    remote = get_remote(get_repo(args), args.name)
    print(remote.url)
    return 0


def cmd_remote_gpg_import(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    get_remote(repo, args.name)
    blobs = [Path(f).read_bytes() for f in [*args.keyfiles, *args.keyring]]
    if args.stdin:
        blobs.append(sys.stdin.buffer.read())
    if not blobs:
        raise CommandError("no keys given (KEYFILE, --keyring or --stdin)")
    with repo.lock():
        n = import_keys(repo, args.name, blobs)
    print(f"Imported {n} GPG key{'s' if n != 1 else ''} to remote \"{args.name}\"")
    return 0


def cmd_remote_gpg_list_keys(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from .. import verify
    from ..keylisting import describe_keys
    from ..pull import trust_settings

    repo = get_repo(args)
    if args.name is None:  # as libostree: the global keyrings only
        keyring = verify.load_keyring_dir(verify.global_gpg_dir())
    else:
        remote = load_remotes(repo).get(args.name)
        keyring = verify.load_gpg_keyring(trust_settings(repo, remote), global_fallback=False)
    sys.stdout.write(describe_keys(keyring.keys, datetime.now(UTC)))
    return 0


def _cookie_remote(args: argparse.Namespace) -> Repo:
    """The repository, once it is known to have the remote (libostree does not check)."""
    repo = get_repo(args)
    load_remotes(repo).get(args.name)
    return repo


def cmd_remote_add_cookie(args: argparse.Namespace) -> int:
    repo = _cookie_remote(args)
    remotecookies.add_cookie(repo, args.name, args.domain, args.path, args.cookie_name,
                             args.value)
    return 0


def cmd_remote_delete_cookie(args: argparse.Namespace) -> int:
    repo = _cookie_remote(args)
    remotecookies.remove_cookie(repo, args.name, args.domain, args.path, args.cookie_name)
    return 0


def cmd_remote_list_cookies(args: argparse.Namespace) -> int:
    repo = _cookie_remote(args)
    sys.stdout.write(remotecookies.list_cookies(repo, args.name))
    return 0


async def _fetch_summary(repo: Repo, remote: Remote) -> bytes:
    if not remote.url:
        raise RepoError(f"remote {remote.name} has no url")
    if remote.url.startswith("file://"):
        path = Path(remote.url[7:]) / "summary"
        try:
            return path.read_bytes()
        except OSError:
            raise RepoError(f"remote {remote.name} has no summary") from None
    async with make_fetcher(remote_fetch_config(repo, remote, PullOptions())) as fetcher:
        res = await fetcher.fetch_bytes(remote.url.rstrip("/") + "/summary",
                                        max_size=PullOptions().max_metadata_size)
    assert res.data is not None
    return res.data


def _remote_summary(args: argparse.Namespace) -> Summary:
    repo = get_repo(args)
    remote = get_remote(repo, args.name)
    if args.cache_dir is not None:
        summary = fetch_summary(repo, remote, PullOptions(cache_dir=args.cache_dir))
        if summary is None:
            raise RepoError(f"remote {remote.name} has no summary")
        return summary
    return Summary.from_bytes(asyncio.run(_fetch_summary(repo, remote)))


def cmd_remote_refs(args: argparse.Namespace) -> int:
    summary = _remote_summary(args)
    for ref in summary.refs:
        print(f"{args.name}:{ref.name}")
    return 0


def cmd_remote_summary(args: argparse.Namespace) -> int:
    print_summary(_remote_summary(args))
    return 0


def _headers(items: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"bad --http-header {item!r}, expected KEY=VALUE")
        out.append((key, value))
    return tuple(out)


def cmd_pull(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    remote_name = args.remote
    refs = list(args.refs)
    if ":" in remote_name and "://" not in remote_name and not refs:
        remote_name, _, ref = remote_name.partition(":")
        refs = [ref]
    remote = get_remote(repo, remote_name, _sysroot(args))
    options = PullOptions(
        commit_metadata_only=args.commit_metadata_only, depth=args.depth, mirror=args.mirror,
        disable_static_deltas=args.disable_static_deltas,
        require_static_deltas=args.require_static_deltas, dry_run=args.dry_run,
        subpaths=tuple(args.subpath), timestamp_check=args.timestamp_check, url=args.url,
        http_headers=_headers(args.http_header), network_retries=args.network_retries,
        disable_verify_bindings=args.disable_verify_bindings,
        low_speed_time=args.low_speed_time,
        timestamp_check_from_rev=args.timestamp_check_from_rev,
        bareuseronly_files=args.bareuseronly_files, per_object_fsync=args.per_object_fsync,
        localcache_repos=tuple(args.localcache_repo), cache_dir=args.cache_dir,
        untrusted=args.untrusted, http_trusted=args.http_trusted and not args.untrusted,
    )
    progress = PullProgress(enabled=None if not args.json else False,
                            interval=args.update_frequency / 1000 or None)
    try:
        result = pull(repo, remote, refs, options, progress=progress, sysroot=_sysroot(args))
    finally:
        progress.close()
    if args.json:
        print_json(result.to_json())
    elif result.dry_run is not None:
        for line in result.dry_run.get("lines", []):
            print(line)
    else:
        s = result.stats
        parts = f"{s.delta_parts} delta parts, " if s.delta_parts else ""
        print(f"{parts}{s.fetched_meta} metadata, {s.fetched} content objects fetched; "
              f"{human_size(s.bytes)} transferred in {result.seconds:.0f} seconds")
    return 0


def cmd_pull_local(args: argparse.Namespace) -> int:
    repo = get_repo(args)
    src = Path(args.src).resolve()
    source = Repo.open(src)
    refs = list(args.refs) or sorted(source.list_refs(remotes=False))
    verify = args.gpg_verify or args.gpg_verify_summary
    gpg_remote = get_remote(repo, args.remote) if verify and args.remote else None
    opts = PullOptions(
        depth=args.depth, commit_metadata_only=args.commit_metadata_only,
        require_static_deltas=args.require_static_deltas,
        disable_verify_bindings=args.disable_verify_bindings,
        bareuseronly_files=args.bareuseronly_files, per_object_fsync=args.per_object_fsync,
        untrusted=args.untrusted)
    result = pull_local(repo, src, refs, opts, remote_name=args.remote, gpg_remote=gpg_remote,
                        gpg_verify=args.gpg_verify, gpg_verify_summary=args.gpg_verify_summary)
    if args.json:
        print_json(result.to_json())
    return 0
