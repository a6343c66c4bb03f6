"""Build (with the real ``ostree``) and cache the benchmark repositories for one corpus size.

``benchmarks/work/<size>/`` holds, once built:

- ``corpus-v1/``, ``corpus-v2/``: the trees from :mod:`corpus`;
- ``archive/``: an archive-mode repo with ``benchos/x86_64/v1`` → v1 and ``benchos/x86_64/stable``
  → v2 (parent v1), both commits GPG-signed, ``--generate-sizes``, fixed timestamps; static deltas
  empty→v1 and v1→v2; a signed summary.  This is what the HTTP server publishes;
- ``client-v1/``: a bare-user repo holding v1 with ``refs/remotes/bench/benchos/x86_64/stable`` =
  v1 (the starting point of the update scenarios and the source of the checkout scenarios);
- ``pubkey.asc``: the public key the commits and summary are signed with (the private key lived in
  a temporary GNUPGHOME that is deleted after the build);
- ``stamp.json``: the cache key (:data:`BUILD_VERSION`), commit ids and statistics.

    python benchmarks/repo.py --size small [--rebuild]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import corpus

REPO_VERSION = "repo-3"
BUILD_VERSION = f"{corpus.CORPUS_VERSION}+{REPO_VERSION}"
WORK_ROOT = Path(__file__).resolve().parent / "work"

REMOTE = "bench"
OSNAME = "benchos"
REF_STABLE = "benchos/x86_64/stable"
REF_V1 = "benchos/x86_64/v1"
TIMESTAMPS = {1: "2024-01-01T00:00:00Z", 2: "2024-02-01T00:00:00Z"}
KEY_UID = "BenchOS signing key <bench@example.invalid>"

Log = Callable[[str], None]


class CommandError(RuntimeError):
    """A helper command failed; the message carries the command and its stderr tail."""


def run_checked(argv: Sequence[str], *, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> str:
    """Run ``argv``, return its stdout; raise :class:`CommandError` on a non-zero exit."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, cwd=cwd,
                          check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise CommandError(f"{' '.join(argv)} exited {proc.returncode}: {tail}")
    return proc.stdout


def count_objects(repo: Path) -> dict[str, int]:
    """Count the loose objects of ``repo`` by suffix (``file``/``filez``, ``dirtree``, …)."""
    counts: dict[str, int] = {}
    objects = repo / "objects"
    if not objects.is_dir():
        return counts
    with os.scandir(objects) as prefixes:
        for prefix in prefixes:
            with os.scandir(prefix.path) as names:
                for entry in names:
                    suffix = entry.name.rpartition(".")[2]
                    counts[suffix] = counts.get(suffix, 0) + 1
    return counts


def disk_usage(path: Path) -> int:
    """Bytes allocated under ``path`` (like ``du -sb`` on apparent sizes, hardlinks once)."""
    total = 0
    seen: set[int] = set()
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


@dataclass(frozen=True, slots=True)
class BenchRepo:
    """The cached inputs of one corpus size (see the module docstring for the layout)."""

    size: str
    root: Path
    v1: str
    v2: str
    key_id: str
    info: dict[str, Any]

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def client_v1(self) -> Path:
        return self.root / "client-v1"

    @property
    def corpus_v1(self) -> Path:
        return self.root / "corpus-v1"

    @property
    def corpus_v2(self) -> Path:
        return self.root / "corpus-v2"

    @property
    def pubkey(self) -> Path:
        return self.root / "pubkey.asc"


def _load(root: Path, size: str) -> BenchRepo | None:
    try:
        stamp = json.loads((root / "stamp.json").read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("version") != BUILD_VERSION or stamp.get("size") != size:
        return None
    return BenchRepo(size, root, stamp["v1"], stamp["v2"], stamp["key_id"], stamp["info"])


def ensure_repo(size: str, *, work_root: Path = WORK_ROOT, rebuild: bool = False,
                log: Log = print) -> BenchRepo:
    """Return the cached inputs for ``size``, building them first if missing or stale."""
    root = work_root / size
    if not rebuild and (cached := _load(root, size)) is not None:
        return cached
    work_root.mkdir(parents=True, exist_ok=True)
    with open(work_root / f"{size}.lock", "w") as lock:
        # Another runner may be building the same size right now: wait for it, then reuse.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not rebuild and (cached := _load(root, size)) is not None:
            return cached
        build = work_root / f"{size}.building"
        for stale in (build, root):
            if stale.exists():
                remove_tree(stale)
        build.mkdir(parents=True)
        started = time.monotonic()
        _build(size, build, log)
        build.rename(root)
        log(f"built {size} inputs in {time.monotonic() - started:.1f}s under {root}")
    loaded = _load(root, size)
    assert loaded is not None
    return loaded


def remove_tree(path: Path) -> None:
    """``rm -rf`` that also copes with read-only directories (checkouts, sysroots)."""

    def fix(func: Callable[..., Any], p: str, _exc: Any) -> None:
        parent = os.path.dirname(p)
        os.chmod(parent, 0o700)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o700)
            shutil.rmtree(p, onerror=fix)
        else:
            os.unlink(p)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=fix)


def _gen_key(gnupghome: Path) -> str:
    env = {**os.environ, "GNUPGHOME": str(gnupghome)}
    run_checked(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                 "--quick-gen-key", KEY_UID, "default", "default", "never"], env=env)
    listing = run_checked(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=env)
    for line in listing.splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    raise CommandError("gpg: no fingerprint for the new key")


def _build(size: str, root: Path, log: Log) -> None:
    def ostree(*args: str) -> str:
        return run_checked(["ostree", *args]).strip()

    log(f"generating {size} corpus v1 and v2 …")
    s1 = corpus.generate(size, 1, root / "corpus-v1")
    s2 = corpus.generate(size, 2, root / "corpus-v2")
    archive = root / "archive"
    client = root / "client-v1"
    gnupghome = Path(tempfile.mkdtemp(prefix="bench-gpg-"))
    try:
        key_id = _gen_key(gnupghome)
        pub = run_checked(["gpg", "--homedir", str(gnupghome), "--batch", "--export", "--armor",
                           key_id])
        (root / "pubkey.asc").write_text(pub)
        sign = [f"--gpg-sign={key_id}", f"--gpg-homedir={gnupghome}"]
        log("committing v1 and v2 with ostree …")
        ostree("init", f"--repo={archive}", "--mode=archive")
        commits: dict[int, str] = {}
        for version, tree in ((1, root / "corpus-v1"), (2, root / "corpus-v2")):
            commits[version] = ostree(
                f"--repo={archive}", "commit", f"--branch={REF_STABLE}", f"--tree=dir={tree}",
                f"--timestamp={TIMESTAMPS[version]}", "--generate-sizes", "--bootable",
                "--no-xattrs", "--owner-uid=0", "--owner-gid=0", "--fsync=false",
                f"--subject=BenchOS {version}.0", f"--add-metadata-string=version={version}.0",
                *([f"--bind-ref={REF_V1}"] if version == 1 else []), *sign)
            if version == 1:
                ostree(f"--repo={archive}", "refs", f"--create={REF_V1}", commits[1])
        log("generating static deltas and the signed summary …")
        ostree(f"--repo={archive}", "static-delta", "generate", "--empty", f"--to={commits[1]}")
        ostree(f"--repo={archive}", "static-delta", "generate", f"--from={commits[1]}",
               f"--to={commits[2]}")
        ostree(f"--repo={archive}", "summary", "-u", *sign)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(gnupghome), "--kill", "all"],
                       capture_output=True, check=False)
        shutil.rmtree(gnupghome, ignore_errors=True)

    log("preparing the bare-user client repo at v1 …")
    ostree("init", f"--repo={client}", "--mode=bare-user")
    ostree(f"--repo={client}", "pull-local", str(archive), commits[1])
    ostree(f"--repo={client}", "refs", f"--create={REMOTE}:{REF_STABLE}", commits[1])

    objects_v1 = count_objects(client)
    info: dict[str, Any] = {
        "ostree_version": ostree("--version").split("Version: '")[1].split("'")[0],
        "corpus_v1": s1.as_dict(),
        "corpus_v2": s2.as_dict(),
        "objects_v1": sum(objects_v1.values()),
        "objects_v1_by_type": objects_v1,
        "objects_archive": sum(count_objects(archive).values()),
        "archive_bytes": disk_usage(archive / "objects"),
        "delta_bytes": {
            "empty-v1": _delta_size(archive, commits[1]),
            "v1-v2": _delta_size(archive, f"{commits[1]}-{commits[2]}"),
        },
    }
    stamp = {"version": BUILD_VERSION, "size": size, "v1": commits[1], "v2": commits[2],
             "key_id": key_id, "info": info}
    (root / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")


def _delta_size(archive: Path, name: str) -> int:
    """Parts plus fallback objects of delta ``name`` (``TO`` or ``FROM-TO``), in bytes."""
    out = run_checked(["ostree", f"--repo={archive}", "static-delta", "show", name])
    total = 0
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Total Size", "Total Fallback Size"):
            total += int(value.split()[0])
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build and cache the benchmark repositories.")
    ap.add_argument("--size", choices=sorted(corpus.PRESETS), default="small")
    ap.add_argument("--rebuild", action="store_true", help="ignore the cache")
    ap.add_argument("--work-root", type=Path, default=WORK_ROOT)
    args = ap.parse_args(argv)
    repo = ensure_repo(args.size, work_root=args.work_root, rebuild=args.rebuild,
                       log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(json.dumps({"root": str(repo.root), "v1": repo.v1, "v2": repo.v2, **repo.info},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
