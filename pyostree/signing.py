"""The build-machine side: signing commits, regenerating and signing the summary.

``gpg_sign_commit`` and ``sign_commit`` append signatures to a commit's detached metadata, as
``ostree gpg-sign`` and ``ostree sign`` do. ``regenerate_summary`` writes ``summary`` (and
``summary.sig`` when keys are given) and the ``delta-indexes/`` like ``ostree summary -u``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import gvariant as gv
from . import sign
from .core import ObjectType, validate_checksum
from .errors import FormatError, RepoError
from .fileio import atomic_write
from .formats.delta import delta_index_path, mb64_decode, parse_delta_name
from .formats.objects import add_signature, serialize_metadata
from .formats.summary import build_delta_index, build_summary
from .repo import Repo
from .verify import ED25519_KEY, GPG_KEY

if TYPE_CHECKING:
    from . import gpg


def gpg_sign_commit(repo: Repo, csum: str, keys: Sequence[gpg.SecretKey],
                    passphrase: str | None = None) -> None:
    from . import gpg

    data = repo.load_metadata_bytes(ObjectType.COMMIT, csum)
    with repo.lock():
        meta = repo.load_detached_metadata(csum) or {}
        for key in keys:
            meta = add_signature(meta, GPG_KEY, gpg.sign_detached(key, data, passphrase))
        repo.write_detached_metadata(csum, meta)


def delete_gpg_signatures(repo: Repo, csum: str, key_ids: Sequence[str]) -> int:
    """``gpg-sign --delete``: drop the signatures made by these keys; returns how many."""
    from . import gpg

    data = repo.load_metadata_bytes(ObjectType.COMMIT, csum)
    with repo.lock():
        meta = dict(repo.load_detached_metadata(csum) or {})
        sigs = list(meta.get(GPG_KEY, gv.Variant("aay", [])).value)
        keep = []
        for sig in sigs:
            status = gpg.inspect_detached(gpg.Keyring(), data, [sig]).signatures
            ids = {s.key_id.upper() for s in status}
            if not any(i.endswith(k.upper()[-16:]) for i in ids for k in key_ids):
                keep.append(sig)
        meta[GPG_KEY] = gv.Variant("aay", keep)
        if not keep:
            del meta[GPG_KEY]
        repo.write_detached_metadata(csum, meta or None)
        return len(sigs) - len(keep)


def delete_ed25519_signatures(repo: Repo, csum: str, public_keys: Sequence[bytes]) -> int:
    """``sign --delete``: drop the commit's ed25519 signatures that verify with any of
    ``public_keys``; returns how many. (ostree 2022.7 parses ``--delete`` and ignores it.)"""
    data = repo.load_metadata_bytes(ObjectType.COMMIT, csum)
    with repo.lock():
        meta = dict(repo.load_detached_metadata(csum) or {})
        sigs = list(meta.get(ED25519_KEY, gv.Variant("aay", [])).value)
        keep = [sig for sig in sigs if not any(
            sign.verifies(key, bytes(sig), data) for key in public_keys)]
        if len(keep) == len(sigs):
            return 0
        meta[ED25519_KEY] = gv.Variant("aay", keep)
        if not keep:
            del meta[ED25519_KEY]
        repo.write_detached_metadata(csum, meta or None)
        return len(sigs) - len(keep)


def sign_commit(repo: Repo, csum: str, secrets: Sequence[bytes]) -> None:
    """``ostree sign --sign-type=ed25519``."""
    data = repo.load_metadata_bytes(ObjectType.COMMIT, csum)
    with repo.lock():
        meta = repo.load_detached_metadata(csum) or {}
        for secret in secrets:
            meta = add_signature(meta, ED25519_KEY, sign.sign_ed25519(secret, data))
        repo.write_detached_metadata(csum, meta)


def list_deltas(repo: Repo) -> list[tuple[str, Path]]:
    """(delta name, directory) of every static delta in ``deltas/``, in directory order."""
    found: list[tuple[str, Path]] = []
    root = repo.path / "deltas"
    if not root.is_dir():
        return found
    for prefix in os.listdir(root):
        pdir = root / prefix
        if not pdir.is_dir():
            continue
        for rest in os.listdir(pdir):
            ddir = pdir / rest
            if not (ddir / "superblock").is_file():
                continue
            text = prefix + rest
            try:
                if "-" in text:
                    f, t = text.split("-", 1)
                    name = f"{mb64_decode(f)}-{mb64_decode(t)}"
                else:
                    name = mb64_decode(text)
            except Exception:  # a directory that is not a delta
                continue
            found.append((name, ddir))
    return found


def regenerate_summary(
    repo: Repo, *, gpg_keys: Sequence[gpg.SecretKey] = (), ed25519_secrets: Sequence[bytes] = (),
    extra_metadata: Mapping[str, gv.Variant] | None = None, passphrase: str | None = None,
    last_modified: int | None = None,
) -> bytes:
    """Write ``summary``, the delta indexes and (with keys) ``summary.sig``."""
    from . import gpg

    with repo.lock():
        refs: dict[str, tuple[str, int, int | None, str | None]] = {}
        for name, csum in repo.list_refs(remotes=False).items():
            data = repo.load_metadata_bytes(ObjectType.COMMIT, csum)
            commit = repo.load_commit(csum)
            refs[name] = (csum, len(data), commit.timestamp, commit.version)
        deltas = [(name, _superblock_digest(ddir)) for name, ddir in list_deltas(repo)]
        no_deltas = repo.config.get_bool("core", "no-deltas-in-summary", False)
        summary = build_summary(
            refs,
            last_modified=int(time.time()) if last_modified is None else last_modified,
            mode=repo.mode.value,
            deltas=[] if no_deltas else deltas,
            tombstone_commits=repo.config.get_bool("core", "tombstone-commits", False),
            extra_metadata=extra_metadata,
            collection_id=repo.config.get("core", "collection-id", None),
        )
        data = summary.to_bytes()
        _reindex(repo, None, deltas)
        sig_meta: dict[str, gv.Variant] = {}
        for key in gpg_keys:
            sig_meta = add_signature(sig_meta, GPG_KEY, gpg.sign_detached(key, data, passphrase))
        for secret in ed25519_secrets:
            sig_meta = add_signature(sig_meta, ED25519_KEY, sign.sign_ed25519(secret, data))
        if sig_meta:
            atomic_write(repo.path / "summary.sig", serialize_metadata(sig_meta))
        else:
            with contextlib.suppress(FileNotFoundError):
                (repo.path / "summary.sig").unlink()
        atomic_write(repo.path / "summary", data)
        return data


def _superblock_digest(ddir: Path) -> str:
    return hashlib.sha256((ddir / "superblock").read_bytes()).hexdigest()


def list_delta_indexes(repo: Repo) -> list[str]:
    """The target commits that have a delta index (``ostree static-delta indexes``)."""
    found: list[str] = []
    root = repo.path / "delta-indexes"
    if not root.is_dir():
        return found
    for prefix in sorted(os.listdir(root)):
        pdir = root / prefix
        if len(prefix) != 2 or not pdir.is_dir():
            continue
        for rest in sorted(os.listdir(pdir)):
            if len(rest) != 41 + len(".index") or not rest.endswith(".index"):
                continue
            if not (pdir / rest).is_file():
                continue
            with contextlib.suppress(FormatError):
                found.append(mb64_decode(prefix + rest[:41]))
    return found


def reindex_deltas(repo: Repo, to_commit: str | None = None) -> None:
    """Rewrite the delta indexes (``ostree static-delta reindex``): one per target commit
    with deltas, none for a target without; only ``to_commit``'s with it."""
    with repo.lock():
        _reindex(repo, to_commit)


def _reindex(repo: Repo, to_commit: str | None,
             deltas: Sequence[tuple[str, str]] | None = None) -> None:
    """Write the indexes; ``deltas`` are (name, superblock digest) of every delta when the
    caller has them already (summary -u), else they are read here."""
    if repo.config.get("core", "indexed-deltas", None) != "true":
        repo.config.set("core", "indexed-deltas", "true")
        repo.save_config()
    stale = [validate_checksum(to_commit)] if to_commit else list_delta_indexes(repo)
    by_target: dict[str, dict[str, str]] = {target: {} for target in stale}
    if deltas is None:
        deltas = [(name, _superblock_digest(ddir)) for name, ddir in list_deltas(repo)
                  if to_commit is None or parse_delta_name(name)[1] == to_commit]
    for name, digest in deltas:
        target = parse_delta_name(name)[1]
        if to_commit is None or target == to_commit:
            by_target.setdefault(target, {})[name] = digest
    for target, entries in by_target.items():
        path = repo.path / delta_index_path(target)
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        data = build_delta_index(entries).to_bytes()
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)


def load_gpg_secret(homedir: str | None, key_id: str) -> gpg.SecretKey:
    from . import gpg

    if homedir is None:
        homedir = os.environ.get("GNUPGHOME") or os.path.expanduser("~/.gnupg")
    try:
        return gpg.find_secret_key(homedir, key_id)
    except OSError as exc:
        raise RepoError(f"cannot read secret keys in {homedir}: {exc.strerror}") from exc
