"""The per-remote cache of ``summary``/``summary.sig`` and its conditional requests.

An idle check costs one conditional request when the summary is signed (``summary.sig``
answered 304 means the cached, verified summary is current) and two when it is not. The cache
is untrusted: whatever comes from it is verified again like a fresh download. The last
``ostree.summary.last-modified`` seen is remembered so a replayed older summary is refused.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from .errors import NotFoundError, PyOstreeError
from .fetcher import BaseFetcher
from .fileio import atomic_write


@attrs.frozen
class SummaryFetch:
    summary: bytes | None
    signature: bytes | None
    summary_validators: tuple[str | None, str | None] = (None, None)
    sig_validators: tuple[str | None, str | None] = (None, None)
    from_cache: bool = False


def strong_validators(
    validators: tuple[str | None, str | None], now: float | None = None
) -> tuple[str | None, str | None]:
    """Drop a ``Last-Modified`` too close to now to trust (RFC 7232 §2.2.2: a weak validator).

    Its resolution is one second: a file rewritten within the second we fetched it would still
    answer 304 to ``If-Modified-Since``, and a new summary would go unseen.
    """
    etag, last_modified = validators
    if last_modified is not None:
        try:
            stamp = email.utils.parsedate_to_datetime(last_modified).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return etag, None
        if (time.time() if now is None else now) - stamp < 2:
            return etag, None
    return etag, last_modified


class SummaryCache:
    def __init__(self, directory: Path, remote: str) -> None:
        self.dir = directory
        self.remote = remote
        self.summary_path = directory / remote
        self.sig_path = directory / f"{remote}.sig"
        self.meta_path = directory / f"{remote}.json"

    def _meta(self) -> dict[str, Any]:
        try:
            value = json.loads(self.meta_path.read_text())
            return value if isinstance(value, dict) else {}
        except (OSError, ValueError):
            return {}

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None

    def previous_last_modified(self) -> int | None:
        value = self._meta().get("last-modified-seen")
        return value if isinstance(value, int) else None

    async def refresh(self, fetcher: BaseFetcher, summary_urls: Sequence[str],
                      sig_urls: Sequence[str], max_size: int, stats: Any) -> SummaryFetch:
        meta = self._meta()
        cached_summary = self._read(self.summary_path)
        cached_sig = self._read(self.sig_path)
        sig_val: tuple[str | None, str | None] = (None, None)
        signature: bytes | None
        sig_unchanged = False
        try:
            stats.requests += 1
            res = await fetcher.fetch_bytes(
                sig_urls, max_size=max_size,
                etag=meta.get("sig-etag") if cached_sig is not None else None,
                last_modified=meta.get("sig-last-modified") if cached_sig is not None else None)
            if res.not_modified:
                signature, sig_unchanged = cached_sig, True
            else:
                signature = res.data
                sig_unchanged = cached_sig is not None and signature == cached_sig
            sig_val = (res.etag, res.last_modified)
        except NotFoundError:
            signature = None
        if sig_unchanged and signature is not None and cached_summary is not None:
            return SummaryFetch(cached_summary, signature,
                                (meta.get("etag"), meta.get("last-modified")), sig_val, True)
        stats.requests += 1
        try:
            use_cache = cached_summary is not None and signature is None
            res = await fetcher.fetch_bytes(
                summary_urls, max_size=max_size,
                etag=meta.get("etag") if use_cache else None,
                last_modified=meta.get("last-modified") if use_cache else None)
        except NotFoundError:
            return SummaryFetch(None, signature)
        if res.not_modified:
            return SummaryFetch(cached_summary, signature, (res.etag, res.last_modified),
                                sig_val, True)
        return SummaryFetch(res.data, signature, (res.etag, res.last_modified), sig_val)

    def store(self, fetched: SummaryFetch, last_modified: int | None) -> None:
        """Cache a verified summary (and signature) with its validators."""
        with contextlib.suppress(OSError, PyOstreeError):
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = self._meta()
            if fetched.summary is not None and not fetched.from_cache:
                atomic_write(self.summary_path, fetched.summary, fsync=False)
                meta["etag"], meta["last-modified"] = strong_validators(
                    fetched.summary_validators)
            if fetched.signature is not None:
                if not fetched.from_cache or not self.sig_path.exists():
                    atomic_write(self.sig_path, fetched.signature, fsync=False)
                if fetched.sig_validators != (None, None):
                    meta["sig-etag"], meta["sig-last-modified"] = strong_validators(
                        fetched.sig_validators)
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.sig_path.unlink()
                meta.pop("sig-etag", None)
                meta.pop("sig-last-modified", None)
            if last_modified is not None:
                meta["last-modified-seen"] = max(last_modified,
                                                 self.previous_last_modified() or 0)
            atomic_write(self.meta_path, json.dumps(meta).encode(), fsync=False)

    def invalidate(self) -> None:
        """Forget the cached files (not the last-modified high-water mark)."""
        for p in (self.summary_path, self.sig_path):
            with contextlib.suppress(OSError):
                p.unlink()
        meta = self._meta()
        for k in ("etag", "last-modified", "sig-etag", "sig-last-modified"):
            meta.pop(k, None)
        if self.dir.is_dir():
            with contextlib.suppress(OSError, PyOstreeError):
                atomic_write(self.meta_path, json.dumps(meta).encode(), fsync=False)
