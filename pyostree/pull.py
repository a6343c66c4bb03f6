"""Pulling commits from a remote (HTTP(S) or a local repository) into a repository.

Untrusted bytes flow one way: fetch under a cap → parse strictly → verify (checksum, signatures,
ref binding, timestamps) → stage the very bytes that were verified → commit the transaction →
move refs last. An interrupted pull leaves ``state/CSUM.commitpartial`` and its staged objects;
the next pull re-verifies them and fetches only what is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from . import gvariant as gv
from .core import ObjectType, is_checksum, loose_object_path, validate_ref
from .errors import (
    ChecksumError,
    FetchError,
    FormatError,
    NotFoundError,
    PyOstreeError,
    RepoError,
    SignatureError,
    UsageError,
    VerificationError,
)
from .fetcher import BaseFetcher, FetchConfig, make_fetcher
from .formats.content import FileHeader
from .formats.cookies import Cookie
from .formats.objects import Commit, DirTree, parse_metadata
from .formats.summary import Summary
from .pullhelper import PullHelper, helper_wanted
from .pullstore import CHUNK, STORE_MAX_BYTES, STORE_MAX_JOBS, STORE_THREADS, Storer, fetch_content
from .remotecookies import load_cookies
from .remotes import Remote
from .repo import Repo
from .transaction import Transaction
from .verify import TrustSettings, check_ref_binding, compare_timestamps, verify_signed_data

MiB = 1024 * 1024


@attrs.frozen
class PullOptions:
    """The options of ``ostree pull`` (see ``pyostree pull --help``)."""

    commit_metadata_only: bool = False
    depth: int = 0
    mirror: bool = False
    disable_static_deltas: bool = False
    require_static_deltas: bool = False
    dry_run: bool = False
    subpaths: tuple[str, ...] = ()
    timestamp_check: bool = False
    timestamp_check_from_rev: str | None = None
    url: str | None = None
    http_headers: tuple[tuple[str, str], ...] = ()
    network_retries: int = 5
    max_metadata_size: int = 10 * MiB
    max_content_size: int = 16 * 1024 * MiB
    disable_verify_bindings: bool = False
    low_speed_time: float = 30.0
    workers: int = 16
    # ``--bareuseronly-files``: refuse regular files with mode bits outside 0775 (setuid,
    # world-writable ...), wherever their content comes from.
    bareuseronly_files: bool = False
    # ``--per-object-fsync``: fsync every object as it is staged (see Transaction).
    per_object_fsync: bool = False
    # ``--localcache-repo``: local repositories whose objects are used instead of fetching
    # them (verified like downloads). Not consulted when pulling from a file:// remote.
    localcache_repos: tuple[str, ...] = ()
    # ``--cache-dir``: where the summary cache lives (DIR/summaries/REMOTE), instead of
    # REPO/tmp/cache; the directory must exist.
    cache_dir: str | None = None
    # ``--untrusted`` and ``--http-trusted`` are accepted for ostree's sake: pyostree verifies
    # every object of every pull, local or not, trusted or not.
    untrusted: bool = False
    http_trusted: bool = False


@attrs.define
class PullStats:
    """Counters, updated as the pull goes (for progress bars and ``--json``)."""

    requested: int = 0
    fetched: int = 0
    fetched_meta: int = 0
    bytes: int = 0
    requests: int = 0
    delta_parts: int = 0
    delta_bytes: int = 0
    helper_fetched: int = 0  # content objects fetched by the helper process (in ``fetched``)
    localcache: int = 0  # objects imported from --localcache-repo repositories


@attrs.define
class PullResult:
    refs: dict[str, str]
    stats: PullStats
    seconds: float
    deltas: list[str] = attrs.Factory(list)
    signatures: list[str] = attrs.Factory(list)
    dry_run: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "refs": self.refs,
            "objects-fetched": self.stats.fetched,
            "metadata-objects-fetched": self.stats.fetched_meta,
            "bytes-fetched": self.stats.bytes,
            "requests": self.stats.requests,
            "delta-parts": self.stats.delta_parts,
            "objects-fetched-by-helper": self.stats.helper_fetched,
            "objects-from-localcache": self.stats.localcache,
            "deltas": self.deltas,
            "seconds": round(self.seconds, 3),
            "signatures": self.signatures,
            **({"dry-run": self.dry_run} if self.dry_run is not None else {}),
        }


ProgressFn = Callable[[PullStats], None]


def parse_ref_args(refs: Sequence[str]) -> list[tuple[str, str | None]]:
    """``REF`` or ``REF@COMMIT`` (or a bare commit checksum) into (ref, pinned-commit) pairs."""
    out: list[tuple[str, str | None]] = []
    for item in refs:
        ref, sep, commit = item.partition("@")
        if sep:
            if not is_checksum(commit):
                raise UsageError(f"invalid commit checksum in {item!r}")
            out.append((validate_ref(ref), commit))
        elif is_checksum(item):
            out.append((item, item))
        else:
            out.append((validate_ref(item), None))
    return out


def trust_settings(repo: Repo, remote: Remote, sysroot: Path | None = None) -> TrustSettings:
    from .remoteconfig import system_root

    root = system_root(repo, sysroot)
    sv = remote.sign_verify
    svs = remote.sign_verify_summary
    return TrustSettings(
        remote=remote.name,
        gpg_verify=remote.gpg_verify,
        gpg_verify_summary=remote.gpg_verify_summary,
        sign_verify=bool(sv),
        sign_verify_summary=bool(svs),
        gpgkeypath=tuple(remote.gpgkeypath),
        ed25519_keys=tuple([remote.verification_ed25519_key]
                           if remote.verification_ed25519_key else []),
        ed25519_files=tuple([remote.verification_ed25519_file]
                            if remote.verification_ed25519_file else []),
        repo_dir=repo.path,
        remotes_dirs=(root / "etc/ostree/remotes.d",),
        etc_ostree=root / "etc/ostree",
        usr_share_ostree=root / "usr/share/ostree",
    )


def fetch_config(remote: Remote, options: PullOptions,
                 cookies: tuple[Cookie, ...] = ()) -> FetchConfig:
    """How to fetch from ``remote``; ``cookies`` are its jar's (see :func:`remote_fetch_config`)."""
    return FetchConfig(
        retries=options.network_retries,
        # httpx (HTTP/2) only where asked for explicitly: aiohttp is several times faster
        # per request, and ostree's implicit http2=true default is only a preference.
        http2=remote.options.get("http2", "").strip().lower() in ("true", "1"),
        tls_ca_path=remote.tls_ca_path,
        tls_client_cert_path=remote.tls_client_cert_path,
        tls_client_key_path=remote.tls_client_key_path,
        tls_permissive=bool(remote.tls_permissive),
        proxy=remote.proxy,
        headers=options.http_headers,
        cookies=cookies,
        low_speed_time=options.low_speed_time,
    )


def remote_fetch_config(repo: Repo, remote: Remote, options: PullOptions) -> FetchConfig:
    """:func:`fetch_config` with the cookies of ``REPO/REMOTE.cookies.txt``, which libostree
    hands to every request of a pull (and of a summary fetch) from that remote."""
    return fetch_config(remote, options, load_cookies(repo, remote.name))


class SizeTable:
    """The expected (archived, unpacked) sizes of content objects, from ``ostree.sizes``.

    A full tree has tens of thousands of entries; a dict of hex strings and tuples took ~8 MB
    for 24k of them. Here they are one sorted blob of raw checksums (32 bytes each) and one
    array of sizes (1.2 MB for 24k), searched by bisection within the bucket of the first
    checksum byte. ``table[csum] = (archived, unpacked)`` adds entries one by one (delta
    fallbacks) in a small dict that takes precedence."""

    def __init__(self) -> None:
        self._keys = b""
        self._sizes = array("Q")
        self._starts = array("I", [0] * 257)
        self._extra: dict[str, tuple[int, int]] = {}

    def __setitem__(self, csum: str, sizes: tuple[int, int]) -> None:
        self._extra[csum] = sizes

    def __len__(self) -> int:
        return len(self._sizes) // 2 + len(self._extra)

    def get(self, csum: str) -> tuple[int, int] | None:
        found = self._extra.get(csum)
        if found is not None or not self._keys:
            return found
        try:
            key = bytes.fromhex(csum)
        except ValueError:
            return None
        keys = self._keys
        lo, hi = self._starts[key[0]], self._starts[key[0] + 1]
        while lo < hi:
            mid = (lo + hi) // 2
            probe = keys[mid * 32:mid * 32 + 32]
            if probe < key:
                lo = mid + 1
            elif probe > key:
                hi = mid
            else:
                return self._sizes[2 * mid], self._sizes[2 * mid + 1]
        return None

    def load(self, entries: list[Any]) -> None:
        """Replace the table with the content-object entries of an ``ostree.sizes`` list
        (``aay``: checksum, varint archived size, varint unpacked size, object type byte);
        malformed entries are skipped, as libostree does."""
        from .formats.varint import decode_varint

        keys = bytearray()
        sizes = array("Q")
        for raw in entries:
            entry = bytes(raw)
            if len(entry) < 34:
                continue
            try:
                archived, pos = decode_varint(entry, 32)
                unpacked, pos = decode_varint(entry, pos)
            except FormatError:
                continue
            if len(entry) > pos and entry[pos] != ObjectType.FILE:
                continue
            keys += entry[:32]
            sizes.append(archived)
            sizes.append(unpacked)
        n = len(sizes) // 2

        def record(i: int) -> bytes:
            return bytes(keys[i * 32:i * 32 + 32])

        if any(record(i) >= record(i + 1) for i in range(n - 1)):  # libostree sorts them
            order = sorted(range(n), key=record)
            keys = bytearray().join(record(i) for i in order)
            sizes = array("Q", [sizes[2 * i + k] for i in order for k in (0, 1)])
        starts = array("I", [0] * 257)
        for i in range(n):
            starts[keys[i * 32] + 1] += 1
        for b in range(256):
            starts[b + 1] += starts[b]
        self._keys, self._sizes, self._starts = bytes(keys), sizes, starts


class _Puller:
    """One pull: a bounded pool of fetch workers walking the commit graph."""

    def __init__(self, repo: Repo, remote: Remote, options: PullOptions,
                 progress: ProgressFn | None, sysroot: Path | None,
                 helper: PullHelper | None = None) -> None:
        self.repo = repo
        self.remote = remote
        self.options = options
        self.progress = progress
        self.trust = trust_settings(repo, remote, sysroot)
        self.stats = PullStats()
        self.fetcher: BaseFetcher | None = None
        self.meta_bases: list[str] = []
        self.content_bases: list[str] = []
        self.txn: Transaction | None = None
        self.pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="pyostree-write")
        self.storer = Storer(STORE_THREADS, STORE_MAX_BYTES, STORE_MAX_JOBS)
        self.helper = helper  # a second process for content objects (see pullhelper)
        # The walk's work lists: metadata first (it leads to more objects), then content.
        self.meta_todo: deque[tuple[ObjectType, str]] = deque()
        self.content_todo: deque[str] = deque()
        self.queued: set[str] = set()
        self._busy = 0  # walk workers processing an object
        self._idle: asyncio.Future[None] | None = None  # idle workers wait for more work
        self.error: BaseException | None = None
        self.sizes = SizeTable()
        self.signatures: list[str] = []
        self.summary: Summary | None = None
        self.local_source: Repo | None = None
        self.after_success: list[Callable[[], None]] = []
        self.complete_before: set[str] = set()
        self.localcache: list[Repo] = []
        # --timestamp-check-from-rev: (checksum, timestamp) every fetched commit must not
        # predate (see resolve_timestamp_rev).
        self.from_rev: tuple[str, int] | None = None

    def resolve_timestamp_rev(self) -> None:
        """Resolve ``--timestamp-check-from-rev`` in the local repository, before anything is
        fetched (libostree: a checksum is taken as is, anything else must resolve)."""
        rev = self.options.timestamp_check_from_rev
        if rev is None:
            return
        csum = rev if is_checksum(rev) else self.repo.resolve_rev(rev)
        assert csum is not None
        try:
            if not self.repo.has_object(ObjectType.COMMIT, csum):
                raise RepoError(f"No such metadata object {csum}.commit")
            commit = self.repo.load_commit(csum)
        except PyOstreeError as exc:
            raise RepoError(f"Reading {csum} for timestamp-check-from-rev: {exc}") from None
        self.from_rev = (csum, commit.timestamp)

    def localcache_for(self, objtype: ObjectType, csum: str) -> Repo | None:
        """The first ``--localcache-repo`` holding the object (never for file:// pulls)."""
        if self.local_source is not None:
            return None
        for cache in self.localcache:
            if cache.has_object(objtype, csum):
                return cache
        return None

    # ---------------------------------------------------------------- URLs and fetching

    async def setup(self) -> None:
        remote = self.remote
        url = self.options.url or remote.url
        if remote.unconfigured_state:
            raise RepoError(f"remote {remote.name}: {remote.unconfigured_state}")
        if remote.custom_backend:
            raise RepoError(f"Cannot fetch via libostree - remote '{remote.name}' uses custom "
                            f"backend '{remote.custom_backend}'")
        if not url:
            raise RepoError(f"remote {remote.name} has no url")
        from .repo import open_repo

        self.localcache = [open_repo(path) for path in self.options.localcache_repos]
        if url.startswith("file://"):
            self.local_source = open_repo(url[len("file://"):])
            return
        self.fetcher = make_fetcher(remote_fetch_config(self.repo, remote, self.options))
        self.meta_bases = await self._bases(url, remote.mirrorlist)
        if remote.contenturl:
            self.content_bases = await self._bases(remote.contenturl,
                                                   remote.contenturl_mirrorlist)
        else:
            self.content_bases = self.meta_bases

    async def _bases(self, url: str, mirrorlist: bool) -> list[str]:
        if url.startswith("mirrorlist="):
            url, mirrorlist = url[len("mirrorlist="):], True
        if not mirrorlist:
            return [url.rstrip("/")]
        assert self.fetcher is not None
        result = await self.fetcher.fetch_bytes(url, max_size=MiB)
        self.stats.requests += 1
        lines = (result.data or b"").decode("utf-8", "replace").splitlines()
        bases = [ln.strip().rstrip("/") for ln in lines
                 if ln.strip() and not ln.strip().startswith("#")
                 and ln.strip().startswith(("http://", "https://"))]
        if not bases:
            raise FetchError(f"mirrorlist {url} lists no http(s) mirrors", url=url)
        # As libostree: mirrors before the first one that serves ``config`` are dropped, so
        # a dead first mirror (refused, timing out, 404) does not fail every request.
        last: FetchError | None = None
        for i, base in enumerate(bases):
            self.stats.requests += 1
            try:
                await self.fetcher.fetch_bytes(f"{base}/config",
                                               max_size=self.options.max_metadata_size)
            except FetchError as exc:
                last = exc
                continue
            return bases[i:]
        raise FetchError(f"no mirror of mirrorlist {url} answers (last error: {last})", url=url)

    def _urls(self, rel: str, *, meta: bool) -> list[str]:
        bases = self.meta_bases if meta else self.content_bases
        return [f"{b}/{rel}" for b in bases]

    async def fetch_meta_file(self, rel: str, *, max_size: int, optional: bool = False,
                              content_base: bool = False) -> bytes | None:
        if self.local_source is not None:
            path = self.local_source.path / rel
            try:
                with open(path, "rb") as fh:
                    data = fh.read(max_size + 1)
            except (FileNotFoundError, NotADirectoryError):
                if optional:
                    return None
                raise RepoError(f"{rel} not found in {self.local_source.path}") from None
            if len(data) > max_size:
                raise FormatError(f"{rel} exceeds the {max_size}-byte limit")
            return data
        assert self.fetcher is not None
        self.stats.requests += 1
        try:
            res = await self.fetcher.fetch_bytes(self._urls(rel, meta=not content_base),
                                                 max_size=max_size)
        except NotFoundError:
            if optional:
                return None
            raise
        return res.data

    async def fetch_metadata_object(self, objtype: ObjectType, csum: str, *,
                                    optional: bool = False, max_size: int | None = None
                                    ) -> bytes | None:
        if self.local_source is not None:
            if not self.local_source.has_object(objtype, csum):
                if optional:
                    return None
                raise RepoError(f"{objtype.extension} object {csum} not found in "
                                f"{self.local_source.path}")
            return self.local_source.load_metadata_bytes(objtype, csum)
        if objtype not in (ObjectType.COMMIT, ObjectType.COMMIT_META):  # see fetch_commit
            cache = self.localcache_for(objtype, csum)
            if cache is not None:
                self.stats.localcache += 1
                return cache.load_metadata_bytes(objtype, csum)  # verified by the caller
        rel = loose_object_path(csum, objtype, archive=True)
        data = await self.fetch_meta_file(
            rel, max_size=max_size or self.options.max_metadata_size, optional=optional,
            content_base=objtype is not ObjectType.COMMIT_META)
        if data is not None:
            self.stats.fetched_meta += 1
            self.stats.bytes += len(data)
        return data

    # ---------------------------------------------------------------- summary and refs

    async def load_summary(self) -> Summary | None:
        """summary.sig and summary with conditional requests and a verified cache."""
        from .summarycache import SummaryCache

        if self.local_source is not None:
            data = await self.fetch_meta_file("summary", max_size=self.options.max_metadata_size,
                                              optional=True)
            sig = await self.fetch_meta_file("summary.sig", max_size=self.options.max_metadata_size,
                                             optional=True)
            if data is None and (self.trust.gpg_verify_summary or self.trust.sign_verify_summary):
                raise SignatureError(
                    f"remote {self.remote.name} has no summary, but summary verification "
                    "is enabled")
            return self._verify_summary(data, sig) if data is not None else None
        assert self.fetcher is not None
        cache = SummaryCache(self.summary_cache_dir(), self.remote.name)
        result = await cache.refresh(self.fetcher, self._urls("summary", meta=True),
                                     self._urls("summary.sig", meta=True),
                                     self.options.max_metadata_size, self.stats)
        if result.summary is None:
            if self.trust.gpg_verify_summary or self.trust.sign_verify_summary:
                raise SignatureError(
                    f"remote {self.remote.name} has no summary, but summary verification "
                    "is enabled")
            return None
        try:
            summary = self._verify_summary(result.summary, result.signature)
        except (VerificationError, FormatError):
            cache.invalidate()
            if not result.from_cache:
                raise
            # The cache is untrusted too: fetch the summary again, without validators.
            result = await cache.refresh(self.fetcher, self._urls("summary", meta=True),
                                         self._urls("summary.sig", meta=True),
                                         self.options.max_metadata_size, self.stats)
            if result.summary is None:
                raise
            summary = self._verify_summary(result.summary, result.signature)
        expires = summary.expires
        if expires is not None and expires < time.time():
            raise VerificationError(
                f"summary of remote {self.remote.name} expired at {expires} "
                "(ostree.summary.expires)")
        previous = cache.previous_last_modified()
        if previous is not None and summary.last_modified is not None and (
                summary.last_modified < previous):
            raise VerificationError(
                f"summary of remote {self.remote.name} is older than the one seen before "
                f"(last-modified {summary.last_modified} < {previous}): refusing a replayed "
                "or stale summary")
        cache.store(result, summary.last_modified)
        return summary

    def summary_cache_dir(self) -> Path:
        """``DIR/summaries`` of ``--cache-dir`` (which must exist, as for libostree), else
        ``REPO/tmp/cache/summaries``."""
        if self.options.cache_dir is None:
            return self.repo.tmp_dir / "cache" / "summaries"
        base = Path(self.options.cache_dir)
        if not base.is_dir():
            raise RepoError(f"cache directory {base} does not exist", path=str(base))
        return base / "summaries"

    def _verify_summary(self, data: bytes, sig: bytes | None) -> Summary:
        name = self.remote.name
        if self.trust.gpg_verify_summary or self.trust.sign_verify_summary:
            if sig is None:
                raise SignatureError(f"summary signature of remote {name} is missing")
            try:
                sig_meta = parse_metadata(sig)
            except FormatError as exc:
                raise SignatureError(f"invalid summary.sig from remote {name}: {exc}") from None
            # The signature is checked over the raw bytes before they are parsed.
            self.signatures += verify_signed_data(
                self.trust, data, sig_meta, what=f"the summary of remote {name}",
                use_gpg=self.trust.gpg_verify_summary,
                use_sign=self.trust.sign_verify_summary)
        try:
            return Summary.from_bytes(data)
        except FormatError as exc:
            raise FormatError(f"invalid summary from remote {name}: {exc}") from None

    async def resolve_ref(self, ref: str) -> str:
        if self.summary is not None:
            entry = self.summary.lookup(ref)
            if entry is not None:
                return entry.checksum_hex
        data = await self.fetch_meta_file(f"refs/heads/{ref}", max_size=4096, optional=True)
        if data is None:
            raise RepoError(f"remote {self.remote.name} has no ref {ref}")
        text = data.decode("ascii", "replace").strip()
        if not is_checksum(text):
            raise FormatError(f"remote ref {ref} is not a checksum: {text[:40]!r}")
        return text

    # ---------------------------------------------------------------- commits

    async def fetch_commit(self, ref: str | None, csum: str, *, is_target: bool,
                           ) -> Commit | None:
        """Fetch, verify and stage one commit (and its detached metadata)."""
        assert self.txn is not None
        # A commit a --localcache-repo holds comes from there with its detached metadata, as
        # libostree imports them together; both are verified below like downloads.
        cache = None if self.repo.has_object(ObjectType.COMMIT, csum) else (
            self.localcache_for(ObjectType.COMMIT, csum))
        if cache is not None:
            detached_raw: bytes | None = (
                cache.load_metadata_bytes(ObjectType.COMMIT_META, csum)
                if cache.has_object(ObjectType.COMMIT_META, csum) else None)
        elif self.options.commit_metadata_only and self.repo.has_object(
                ObjectType.COMMIT, csum) and self.repo.has_object(ObjectType.COMMIT_META, csum):
            # An idle update check: the commit and its signatures are here already, so the
            # (signed) summary alone answers "nothing new"; they are still re-verified below.
            detached_raw = self.repo.load_metadata_bytes(ObjectType.COMMIT_META, csum)
        else:
            detached_raw = await self.fetch_metadata_object(ObjectType.COMMIT_META, csum,
                                                            optional=True)
        detached = None
        if detached_raw is not None:
            try:
                detached = parse_metadata(detached_raw)
            except FormatError as exc:
                raise FormatError(f"invalid detached metadata of commit {csum}: {exc}") from None
        have = self.repo.has_object(ObjectType.COMMIT, csum)
        if have:
            data = self.repo.load_metadata_bytes(ObjectType.COMMIT, csum)
        elif cache is not None:
            data = cache.load_metadata_bytes(ObjectType.COMMIT, csum)
            self.stats.localcache += 1
        else:
            max_size = self.options.max_metadata_size
            if self.summary is not None and ref is not None:
                entry = self.summary.lookup(ref)
                if entry is not None and entry.checksum_hex == csum:
                    max_size = entry.commit_size
            raw = await self.fetch_metadata_object(ObjectType.COMMIT, csum,
                                                   optional=not is_target, max_size=max_size)
            if raw is None:
                return None
            data = raw
        actual = hashlib.sha256(data).hexdigest()
        if actual != csum:
            raise ChecksumError(f"corrupted commit object; checksum expected={csum} "
                                f"actual={actual}", expected=csum, actual=actual)
        commit = Commit.from_bytes(data)
        self.verify_commit(ref, csum, data, commit, detached, is_target=is_target)
        # Before anything of it is written: a refused downgrade leaves the repository as it was.
        self.check_timestamps(ref if is_target else None, csum, commit)
        if detached_raw is not None:
            self.txn.write_metadata(ObjectType.COMMIT_META, detached_raw, csum)
        if not have:
            if not self.options.dry_run:  # a dry run writes nothing to the repository
                self.repo.mark_partial(csum)
            self.txn.write_metadata(ObjectType.COMMIT, data, csum)
        return commit

    def verify_commit(self, ref: str | None, csum: str, data: bytes, commit: Commit,
                      detached: dict[str, gv.Variant] | None, *, is_target: bool) -> None:
        t = self.trust
        if t.gpg_verify or t.sign_verify:
            self.signatures += verify_signed_data(
                t, data, detached, what=f"commit {csum}", use_gpg=t.gpg_verify,
                use_sign=t.sign_verify)
        if is_target and ref is not None and ref != csum and not (
                self.options.disable_verify_bindings):
            check_ref_binding(commit.ref_bindings, ref, csum)
            coll = self.remote.collection_id
            if coll:
                binding = commit.get("ostree.collection-binding")
                if binding != coll:
                    raise SignatureError(f"commit {csum} is not bound to collection {coll}")

    def check_timestamps(self, ref: str | None, csum: str, commit: Commit) -> None:
        """``--timestamp-check`` (a target fetched by ref must not be older than the local
        ref) and ``--timestamp-check-from-rev`` (no fetched commit, parents included, may be
        older than that commit), with libostree's rule and message."""
        if self.options.timestamp_check and ref is not None and ref != csum:
            current = self.repo.read_ref(self.local_refspec(ref))
            if current is not None:
                try:
                    old = self.repo.load_commit(current)
                except PyOstreeError as exc:
                    raise RepoError(f"Reading {ref} for timestamp-check: {exc}") from None
                compare_timestamps(current, old.timestamp, csum, commit.timestamp)
        if self.from_rev is not None:
            compare_timestamps(self.from_rev[0], self.from_rev[1], csum, commit.timestamp)

    def local_refspec(self, ref: str) -> str:
        return ref if self.options.mirror else f"{self.remote.name}:{ref}"

    # ---------------------------------------------------------------- the object walk

    def enqueue(self, objtype: ObjectType, csum: str) -> None:
        # Checksums alone identify objects: distinct object types never share one.
        if csum in self.queued:
            return
        self.queued.add(csum)
        self.stats.requested += 1
        if objtype is ObjectType.FILE:
            self.content_todo.append(csum)
        else:
            self.meta_todo.append((objtype, csum))
        self._wake_workers()

    def _wake_workers(self) -> None:
        idle = self._idle
        if idle is not None:
            self._idle = None
            idle.set_result(None)

    async def worker(self) -> None:
        """Take objects off the work lists until they are empty and no other worker can add
        to them any more (or an error ends the walk)."""
        helper = self.helper if self.helper is not None and self.helper.started else None
        while self.error is None and self.storer.error is None and (
                helper is None or helper.error is None):
            if self.meta_todo:
                objtype, csum = self.meta_todo.popleft()
            elif self.content_todo:
                objtype, csum = ObjectType.FILE, self.content_todo.popleft()
                if helper is not None and helper.has_room() and (
                        not self.localcache or self.localcache_for(objtype, csum) is None):
                    self._give_to_helper(helper, csum)
                    continue
            elif self._busy == 0:
                break
            else:
                if self._idle is None:
                    self._idle = asyncio.get_running_loop().create_future()
                await self._idle
                continue
            self._busy += 1
            try:
                await self.process(objtype, csum)
            except BaseException as exc:  # first error wins; the others drain
                if self.error is None:
                    self.error = exc
            finally:
                self._busy -= 1
            if self.progress is not None:
                self.progress(self.stats)
        self._wake_workers()  # the others re-check: the walk may be over

    def _content_limits(self, csum: str) -> tuple[int, int]:
        """Caps on a content object's archived and unpacked size: from the commit's
        ``ostree.sizes`` when it lists the object, else ``max_content_size``."""
        sizes = self.sizes.get(csum)
        return sizes if sizes else (self.options.max_content_size,) * 2

    def _give_to_helper(self, helper: PullHelper, csum: str) -> None:
        max_archived, max_unpacked = self._content_limits(csum)
        helper.give(csum, loose_object_path(csum, ObjectType.FILE, archive=True),
                    max_archived, max_unpacked)

    def _helper_fetched(self, csum: str, size: int) -> None:
        self.stats.requests += 1
        self.stats.fetched += 1
        self.stats.helper_fetched += 1
        self.stats.bytes += size
        if self.progress is not None:
            self.progress(self.stats)

    async def close_helper(self) -> None:
        """Stop the helper process and wait for it (before the transaction commits or is
        aborted: nothing may still be writing into it)."""
        if self.helper is not None:
            helper, self.helper = self.helper, None
            await helper.close()

    async def process(self, objtype: ObjectType, csum: str) -> None:
        assert self.txn is not None
        if objtype is ObjectType.FILE:
            await self.fetch_content(csum)
        elif objtype is ObjectType.DIRTREE:
            if self.txn.has_object(ObjectType.DIRTREE, csum):
                tree = DirTree.from_bytes(self._read_local_tree(csum))
            else:
                raw = await self.fetch_metadata_object(ObjectType.DIRTREE, csum)
                assert raw is not None
                tree = self._parse_tree(raw, csum)
                await self.storer.room()
                self.storer.submit(self._store_meta, objtype, raw, csum, True, size=len(raw))
            self.scan_dirtree(tree)
        else:
            raw = await self.fetch_metadata_object(objtype, csum)
            assert raw is not None
            await self.storer.room()
            self.storer.submit(self._store_meta, objtype, raw, csum, size=len(raw))

    def _read_local_tree(self, csum: str) -> bytes:
        assert self.txn is not None
        staged = self.txn.staged_path(ObjectType.DIRTREE, csum)
        if staged is not None:
            data = staged.read_bytes()
            if hashlib.sha256(data).hexdigest() != csum:
                raise ChecksumError(f"staged dirtree {csum} is corrupt", expected=csum)
            return data
        return self.repo.load_metadata_bytes(ObjectType.DIRTREE, csum)

    @staticmethod
    def _check_meta(objtype: ObjectType, data: bytes, csum: str) -> None:
        """Checksum first: an HTML error page is "corrupted", not "bad GVariant"."""
        actual = hashlib.sha256(data).hexdigest()
        if actual != csum:
            raise ChecksumError(f"corrupted {objtype.extension} object; checksum "
                                f"expected={csum} actual={actual}", expected=csum, actual=actual)

    def _parse_tree(self, data: bytes, csum: str) -> DirTree:
        """A fetched dirtree, verified and parsed here so its entries can be queued at once
        (storing it is left to the storer threads)."""
        self._check_meta(ObjectType.DIRTREE, data, csum)
        try:
            return DirTree.from_bytes(data)
        except FormatError as exc:
            raise FormatError(f"invalid dirtree object {csum}: {exc}") from None

    def _store_meta(self, objtype: ObjectType, data: bytes, csum: str,
                    verified: bool = False) -> None:
        """Verify (unless ``verified`` by :meth:`_parse_tree`) and stage a metadata object,
        with the object named in any error. The checksum is checked before parsing."""
        assert self.txn is not None
        try:
            self.txn.write_metadata(objtype, data, csum, verified=verified)
        except FormatError as exc:
            raise FormatError(f"invalid {objtype.extension} object {csum}: {exc}") from None

    def scan_dirtree(self, tree: DirTree) -> None:
        assert self.txn is not None
        queued = self.queued
        has = self.txn.has_object
        for _, fcsum in tree.files:
            if fcsum not in queued and not has(ObjectType.FILE, fcsum):
                self.enqueue(ObjectType.FILE, fcsum)
        for _, dtree, dmeta in tree.dirs:
            if dmeta not in queued and not has(ObjectType.DIRMETA, dmeta):
                self.enqueue(ObjectType.DIRMETA, dmeta)
            self.enqueue(ObjectType.DIRTREE, dtree)

    async def fetch_content(self, csum: str) -> None:
        """Fetch one content object and hand it to the storer threads (:meth:`flush` waits
        until it is stored)."""
        assert self.txn is not None
        max_archived, max_unpacked = self._content_limits(csum)
        if self.local_source is not None:
            await self.storer.room()
            self.storer.submit(self._copy_local_content, self.local_source, csum)
            self.stats.fetched += 1
            return
        cache = self.localcache_for(ObjectType.FILE, csum)
        if cache is not None:
            await self.storer.room()
            self.storer.submit(self._copy_local_content, cache, csum)
            self.stats.localcache += 1
            return
        assert self.fetcher is not None
        self.stats.requests += 1
        size = await fetch_content(
            self.fetcher, self.storer, self.txn,
            self._urls(loose_object_path(csum, ObjectType.FILE, archive=True), meta=False),
            csum, max_archived, max_unpacked)
        self.stats.fetched += 1
        self.stats.bytes += size

    async def flush(self) -> None:
        """Wait until everything handed to the storer (and the helper) is stored; raise the
        first error."""
        await self.storer.drain()
        if self.storer.error is not None:
            raise self.storer.error
        if self.helper is not None and self.helper.started:
            assert self.txn is not None
            self.txn.add_staged(await self.helper.flush())

    def _copy_local_content(self, source: Repo, csum: str) -> None:
        """Copy a content object from a local repository, verified against its checksum."""
        assert self.txn is not None
        header, stream = source.open_content(csum)
        if stream is None:
            self.txn.write_content(header, (), csum)
        else:
            with stream:
                self.txn.write_content(header, iter(lambda: stream.read(CHUNK), b""), csum)

    async def walk(self, roots: list[tuple[str, str]]) -> None:
        """Fetch everything below the given (tree, meta) roots with a pool of workers (as many
        as requests may be in flight) and wait until it is all stored."""
        assert self.txn is not None
        for tree, meta in roots:
            if not self.txn.has_object(ObjectType.DIRMETA, meta):
                self.enqueue(ObjectType.DIRMETA, meta)
            self.enqueue(ObjectType.DIRTREE, tree)
        n = self.options.workers
        if self.fetcher is not None:
            n = min(n, self.fetcher.config.max_in_flight)
            if self.helper is not None and not self.helper.started:
                assert self.txn.staging is not None
                await self.helper.start(self.txn.staging, self._helper_fetched,
                                        self.content_bases)
        workers = [asyncio.create_task(self.worker()) for _ in range(n)]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        if self.error is not None:
            raise self.error
        if self.helper is not None and self.helper.error is not None:
            raise self.helper.error
        await self.flush()

    async def subpath_roots(self, commit: Commit) -> list[tuple[str, str]]:
        """(tree, meta) roots to walk: the whole tree, or with ``--subpath`` only those
        directories (the dirtrees and dirmetas on the way are fetched and stored too; a subpath
        naming a file fetches just that file)."""
        if not self.options.subpaths:
            return [(commit.root_tree, commit.root_meta)]
        roots: list[tuple[str, str]] = []
        for subpath in self.options.subpaths:
            tree, meta = commit.root_tree, commit.root_meta
            parts = [p for p in subpath.split("/") if p and p != "."]
            for i, part in enumerate(parts):
                await self.ensure_metadata(ObjectType.DIRMETA, meta)
                dirtree = DirTree.from_bytes(await self.ensure_metadata(ObjectType.DIRTREE, tree))
                found = next((d for d in dirtree.dirs if d[0] == part), None)
                if found is not None:
                    tree, meta = found[1], found[2]
                    continue
                file = next((f for f in dirtree.files if f[0] == part), None)
                if file is None or i != len(parts) - 1:
                    raise RepoError(f"subpath {subpath} does not exist in commit")
                if not self.txn_has(ObjectType.FILE, file[1]):
                    await self.fetch_content(file[1])
                break
            else:
                roots.append((tree, meta))
        return roots

    def txn_has(self, objtype: ObjectType, csum: str) -> bool:
        assert self.txn is not None
        return self.txn.has_object(objtype, csum)

    async def ensure_metadata(self, objtype: ObjectType, csum: str) -> bytes:
        """A dirtree or dirmeta, from the transaction/repo or fetched, verified and staged."""
        loop = asyncio.get_running_loop()
        if self.txn_has(objtype, csum):
            if objtype is ObjectType.DIRTREE:
                return await loop.run_in_executor(self.pool, self._read_local_tree, csum)
            return b""
        raw = await self.fetch_metadata_object(objtype, csum)
        assert raw is not None
        await loop.run_in_executor(self.pool, self._store_meta, objtype, raw, csum)
        return raw

    def load_sizes(self, commit: Commit) -> None:
        raw = commit.get("ostree.sizes")
        if isinstance(raw, list):
            self.sizes.load(raw)


async def _pull_async(repo: Repo, remote: Remote, refs: list[tuple[str, str | None]],
                      options: PullOptions, progress: ProgressFn | None,
                      sysroot: Path | None, helper: PullHelper | None) -> PullResult:
    start = time.monotonic()
    p = _Puller(repo, remote, options, progress, sysroot, helper)
    try:
        p.resolve_timestamp_rev()
        await p.setup()
        if not refs:
            refs = [(r, None) for r in (remote.branches or [])]
        need_summary = not refs or any(c is None for _, c in refs)
        if need_summary:
            p.summary = await p.load_summary()
            if not refs:
                if p.summary is None:
                    raise RepoError(f"no refs given and remote {remote.name} has no summary")
                refs = [(r.name, None) for r in p.summary.refs]
        targets: dict[str, str] = {}
        for ref, pinned in refs:
            targets[ref] = pinned or await p.resolve_ref(ref)
        result = PullResult(refs=dict(targets), stats=p.stats, seconds=0.0)
        with repo.lock():
            txn = repo.transaction()
            txn.begin()
            txn.per_object_fsync = options.per_object_fsync
            if options.bareuseronly_files:
                txn.check_content = check_bareuseronly_mode
            p.txn = txn
            try:
                fetched = await _fetch_targets(p, targets, result)
                await p.flush()
                await p.close_helper()
                if options.dry_run:
                    txn.abort()
                    result.seconds = time.monotonic() - start
                    return result
                txn.commit()
            except BaseException:
                p.storer.close()  # its threads write into the transaction: let them finish
                await p.close_helper()  # and so does the helper
                txn.abort(keep_staged=True)
                raise
            for ref, csum in targets.items():
                if ref == csum:
                    continue
                if options.mirror:
                    repo.set_ref(ref, csum)
                else:
                    repo.set_ref(f"{remote.name}:{ref}", csum)
            if not (options.commit_metadata_only or options.subpaths):
                for csum in fetched:
                    repo.clear_partial(csum)
            for action in p.after_success:
                action()
        result.signatures = p.signatures
        result.seconds = time.monotonic() - start
        return result
    finally:
        await p.close_helper()
        p.storer.close()
        p.pool.shutdown(wait=True)
        if p.fetcher is not None:
            await p.fetcher.close()


def check_bareuseronly_mode(header: FileHeader, csum: str) -> None:
    """``--bareuseronly-files``: a regular file may only have mode bits within 0775 (no
    setuid/setgid/sticky, not world-writable), as libostree checks it."""
    if header.is_symlink:
        return
    bad = header.mode & 0o7777 & ~0o775
    if bad:
        raise VerificationError(
            f"Content object {csum}: invalid mode 0{header.mode:04o} with bits 0{bad:04o}")


async def _fetch_targets(p: _Puller, targets: dict[str, str], result: PullResult) -> list[str]:
    """Fetch every target commit (and --depth parents); return the commits walked fully."""
    opts = p.options
    repo = p.repo
    walked: list[str] = []
    p.complete_before = {c for c in targets.values()
                         if repo.has_object(ObjectType.COMMIT, c) and not repo.is_partial(c)}
    for ref, csum in targets.items():
        commit = await p.fetch_commit(ref if ref != csum else None, csum, is_target=True)
        assert commit is not None
        if opts.commit_metadata_only:
            await _fetch_parents(p, commit.parent, walk=False)
            continue
        complete = csum in p.complete_before
        if complete:
            walked.append(csum)
            # --depth still reaches the parents, as libostree's scan does
            walked += await _fetch_parents(p, commit.parent, walk=True)
            continue
        if not opts.disable_static_deltas:  # (deltapull and its formats weigh ~1.5 MB)
            from .deltapull import try_delta

            await try_delta(p, ref, csum, commit, result)
        if opts.dry_run:
            continue
        # After a delta this only scans local trees and fetches what the delta left out.
        p.load_sizes(commit)
        roots = await p.subpath_roots(commit)
        parent = commit.parent
        del commit  # its metadata (ostree.sizes: megabytes) is not needed during the walk
        await p.walk(roots)
        walked.append(csum)
        walked += await _fetch_parents(p, parent, walk=True)
    return walked


async def _fetch_parents(p: _Puller, parent: str | None, *, walk: bool) -> list[str]:
    """Fetch the ``--depth`` ancestors starting at ``parent`` (and walk them with ``walk``)."""
    depth = p.options.depth
    done: list[str] = []
    n = 0
    while parent is not None and (depth < 0 or n < depth):
        n += 1
        commit = await p.fetch_commit(None, parent, is_target=False)
        if commit is None:
            break
        if walk:
            p.load_sizes(commit)
            await p.walk([(commit.root_tree, commit.root_meta)])
            done.append(parent)
        parent = commit.parent
    return done


def pull(repo: Repo, remote: Remote, refs: Sequence[str] | Sequence[tuple[str, str | None]],
         options: PullOptions | None = None, *, progress: ProgressFn | None = None,
         sysroot: Path | None = None) -> PullResult:
    """Pull ``refs`` (``REF``, ``REF@COMMIT``) from ``remote`` into ``repo``."""
    opts = options or PullOptions()
    if opts.disable_static_deltas and opts.require_static_deltas:
        raise UsageError("--disable-static-deltas and --require-static-deltas conflict")
    parsed: list[tuple[str, str | None]] = []
    for item in refs:
        parsed += parse_ref_args([item]) if isinstance(item, str) else [item]
    helper = None
    # The helper process applies no per-pull policy of its own: pulls that have one
    # (--bareuseronly-files, --per-object-fsync) run in one process.
    if not (opts.dry_run or opts.commit_metadata_only or opts.bareuseronly_files
            or opts.per_object_fsync) and helper_wanted(opts.url or remote.url or ""):
        helper = PullHelper.fork(repo, remote_fetch_config(repo, remote, opts))
    return asyncio.run(_pull_async(repo, remote, parsed, opts, progress, sysroot, helper))


def pull_local(repo: Repo, src: Path, refs: Sequence[str], options: PullOptions | None = None,
               *, remote_name: str | None = None, gpg_remote: Remote | None = None,
               gpg_verify: bool | None = None, gpg_verify_summary: bool = False,
               progress: ProgressFn | None = None) -> PullResult:
    """``ostree pull-local``: copy refs from another repository on this machine, verifying
    every object. Refs land in ``refs/heads`` (or ``refs/remotes/REMOTE`` with
    ``remote_name``). As libostree, only GPG signatures are checked, and only those asked
    for (``gpg_verify``, ``gpg_verify_summary``), with the keys of ``gpg_remote`` (needed for
    either); ``gpg_verify=None`` means "if ``gpg_remote`` is given"."""
    if gpg_verify is None:
        gpg_verify = gpg_remote is not None
    if (gpg_verify or gpg_verify_summary) and gpg_remote is None:
        raise UsageError("Must specify remote name to enable gpg verification")
    url = f"file://{Path(src).resolve()}"
    remote = Remote.for_url(url)
    if gpg_remote is not None:
        # Only the remote's keys count: its URL, collection ID and other settings do not.
        remote = attrs.evolve(gpg_remote, url=url, contenturl=None, mirrorlist=False,
                              gpg_verify=gpg_verify, gpg_verify_summary=gpg_verify_summary,
                              sign_verify=False, sign_verify_summary=False, collection_id=None,
                              custom_backend=None, unconfigured_state=None)
    if remote_name:
        remote = attrs.evolve(remote, name=remote_name)
    opts = attrs.evolve(options or PullOptions(), mirror=not remote_name)
    if not opts.require_static_deltas:  # as libostree: local pulls copy objects
        opts = attrs.evolve(opts, disable_static_deltas=True)
    return pull(repo, remote, refs, opts, progress=progress)


def fetch_summary(repo: Repo, remote: Remote, options: PullOptions | None = None, *,
                  sysroot: Path | None = None) -> Summary | None:
    """A remote's summary read as a pull reads it: through the summary cache
    (``options.cache_dir``, conditional requests), its signature verified when the remote asks
    for it, expired and replayed summaries refused. None if the remote has none."""
    opts = options or PullOptions()

    async def run() -> Summary | None:
        p = _Puller(repo, remote, opts, None, sysroot)
        try:
            await p.setup()
            return await p.load_summary()
        finally:
            p.storer.close()
            p.pool.shutdown(wait=True)
            if p.fetcher is not None:
                await p.fetcher.close()

    return asyncio.run(run())
