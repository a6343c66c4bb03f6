"""Shared fixtures for the pull tests: repositories built by the real ``ostree``, GPG keys made by
the real ``gpg``, a :class:`~tests.httpserver.FaultServer` serving them, and the checks every
failure case ends with (:class:`PullCase`).

Every failure case asserts the same things: the CLI (a real ``python -m pyostree`` process) exits
non-zero with exactly one ``error:`` line and no traceback; the refs did not move; the repository
passes both ``pyostree fsck`` and the real ``ostree fsck``; nothing was written outside the
repository (``HOME`` and ``TMPDIR`` of the process point into the test directory, whose listing is
compared); and the same pull against the healed server succeeds with no manual cleanup.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pyostree import gvariant as gv

from .corehelpers import run_cli
from .httpserver import Fault, FaultServer, RequestRecord

OSTREE = shutil.which("ostree")
GPG = shutil.which("gpg")
MiB = 1024 * 1024
PYCACHE = os.path.join(tempfile.gettempdir(), f"pyostree-test-pycache-{os.getuid()}")

needs_ostree = pytest.mark.skipif(OSTREE is None, reason="needs the real ostree binary")
needs_gpg = pytest.mark.skipif(GPG is None, reason="needs the real gpg binary")

COMMIT_TYPE = "(a{sv}aya(say)sstayay)"
DIRTREE_TYPE = "(a(say)a(sayay))"
SUMMARY_TYPE = "(a(s(taya{sv}))a{sv})"
TS_V1 = "2024-01-01 00:00:00 UTC"
TS_V2 = "2024-02-01 00:00:00 UTC"


# --------------------------------------------------------------------------- running tools


def ostree(*args: str | os.PathLike[str], check: bool = True,
           env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ostree (text output); raise with its stderr when ``check`` fails."""
    assert OSTREE is not None, "ostree is not installed"
    proc = subprocess.run([OSTREE, *map(str, args)], capture_output=True, text=True,
                          check=False, timeout=120, env=dict(env) if env else None)
    if check and proc.returncode != 0:
        raise AssertionError(f"ostree {' '.join(map(str, args))} failed: {proc.stderr}")
    return proc


def rev_parse(repo: Path, rev: str) -> str:
    return ostree(f"--repo={repo}", "rev-parse", rev).stdout.strip()


def pyostree_env(tmp: Path) -> dict[str, str]:
    """An environment whose HOME and TMPDIR live in ``tmp`` (so stray writes are seen)."""
    env = dict(os.environ)
    env.pop("PYOSTREE_DEBUG", None)
    # Test runs set PYTHONDONTWRITEBYTECODE; recompiling pyostree in every process costs a
    # second of CPU, so the processes share a bytecode cache outside the source tree.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    for name in ("home", "tmpdir"):
        (tmp / name).mkdir(exist_ok=True)
    env["HOME"] = str(tmp / "home")
    env["TMPDIR"] = str(tmp / "tmpdir")
    return env


def pyostree(*args: str | os.PathLike[str], env: Mapping[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pyostree ARGS`` as a real process."""
    return subprocess.run([sys.executable, "-m", "pyostree", *map(str, args)],
                          capture_output=True, text=True, check=False, timeout=timeout,
                          env=dict(env) if env is not None else None)


def cli(*args: str | os.PathLike[str]) -> str:
    """Run pyostree in-process and return its stdout; fail the test on a non-zero exit."""
    code, out, err = run_cli(*args)
    assert code == 0, f"pyostree {' '.join(map(str, args))} failed ({code}): {err}"
    return out.decode()


def assert_one_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The process failed with exactly one ``error:`` line (containing every needle, case
    insensitive) and no traceback; returns that line."""
    assert proc.returncode != 0, f"expected a failure, got success: {proc.stdout}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got: {proc.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    return lines[0]


# --------------------------------------------------------------------------- inspecting repos


def read_refs(repo: Path) -> dict[str, str]:
    """Every ref file under ``refs/`` (read directly, not through pyostree). Dot files are
    skipped, as ostree and pyostree do: a write killed mid-way may leave ``.REF.tmp…``."""
    out: dict[str, str] = {}
    root = repo / "refs"
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            out[str(path.relative_to(root))] = path.read_text().strip()
    return out


def fsck_both(repo: Path) -> None:
    """The real ``ostree fsck`` and ``pyostree fsck`` both pass."""
    real = ostree(f"--repo={repo}", "fsck", check=False)
    assert real.returncode == 0, f"ostree fsck failed:\n{real.stdout}\n{real.stderr}"
    code, _, err = run_cli("--repo", repo, "fsck", "-q")
    assert code == 0, f"pyostree fsck failed: {err}"


def ls_tree(repo: Path, rev: str) -> str:
    """``ostree ls -R`` of a commit (mode, owner, size, name, symlink target)."""
    return ostree(f"--repo={repo}", "ls", "-R", rev).stdout


def listing(root: Path, exclude: Iterable[Path] = ()) -> dict[str, tuple[Any, ...]]:
    """Every path under ``root`` (not under ``exclude``) with its type, size and mtime."""
    skip = {p.resolve() for p in exclude}
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if (here / d).resolve() not in skip]
        for name in [*dirnames, *filenames]:
            path = here / name
            if path.resolve() in skip:
                continue
            st = os.lstat(path)
            kind = "d" if path.is_dir() and not path.is_symlink() else "f"
            out[str(path.relative_to(root))] = (
                (kind,) if kind == "d" else (kind, st.st_size, st.st_mtime_ns))
    return out


def object_rel(csum: str, ext: str) -> str:
    """The archive-layout path of an object, as served over HTTP."""
    return f"objects/{csum[:2]}/{csum[2:]}.{ext}"


def content_requests(log: Sequence[RequestRecord]) -> list[str]:
    return [r.path for r in log if r.path.endswith(".filez")]


def checksums_in(log: Sequence[RequestRecord], ext: str) -> set[str]:
    """Checksums of the objects of type ``ext`` the log shows were requested."""
    out = set()
    for r in log:
        if r.path.startswith("/objects/") and r.path.endswith("." + ext):
            parts = r.path.split("/")
            out.add(parts[2] + parts[3].split(".")[0])
    return out


def staged_checksums(repo: Path) -> set[str]:
    """Content objects sitting verified in ``tmp/staging-*`` (named ``XX/REST.file``)."""
    out = set()
    for path in repo.glob("tmp/staging-*/??/*"):
        stem, _, ext = path.name.partition(".")
        if ext in ("file", "filez") and len(stem) == 62:
            out.add(path.parent.name + stem)
    return out


def repo_objects(repo: Path) -> set[str]:
    return {f"{p.parent.name}{p.name}" for p in repo.glob("objects/*/*")}


# --------------------------------------------------------------------------- trees and commits


def write_tree(root: Path, version: int, *, nfiles: int = 12, big: int = 48 * 1024,
               seed: int = 1) -> Path:
    """A small tree: ``nfiles`` small files spread over a few directories, an empty file, an
    executable, a symlink and one ``big``-byte pseudo-random file that changes a little with
    ``version`` (so a bsdiff has something to do). Version 2 edits, adds and removes files."""
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(seed)
    dirs = ["", "a", "a/b", "c"]
    for i in range(nfiles):
        d = dirs[i % len(dirs)]
        path = root / d / f"file{i:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = f"file {i} of the test tree\n" * (1 + i % 5)
        if version >= 2 and i % 4 == 1:
            text += f"changed in version {version}\n"
        if version >= 2 and i == nfiles - 1:
            continue  # removed in v2
        path.write_text(text)
    if version >= 2:
        (root / "c" / f"new-in-v{version}.txt").write_text(f"added in {version}\n")
    (root / "empty").write_bytes(b"")
    tool = root / "a" / "tool.sh"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    os.symlink("a/b", root / "link")
    if big:
        data = bytearray(rng.randbytes(big))
        for k in range(version - 1):
            pos = (k * 7919) % (len(data) - 64)
            data[pos:pos + 32] = b"v%02d" % version * 8
        (root / "a" / "big.bin").write_bytes(bytes(data))
    for p in [root, *[q for q in root.rglob("*") if q.is_dir() and not q.is_symlink()]]:
        p.chmod(0o755)
    return root


def commit(repo: Path, tree: Path, branch: str, *, subject: str = "",
           timestamp: str = TS_V1, extra: Sequence[str] = ()) -> str:
    """``ostree commit`` with root ownership and a fixed timestamp; returns the checksum."""
    out = ostree(f"--repo={repo}", "commit", f"--branch={branch}", "--owner-uid=0",
                 "--owner-gid=0", f"--timestamp={timestamp}", f"--subject={subject or branch}",
                 *extra, str(tree))
    return out.stdout.strip().splitlines()[-1]


def init_repo(path: Path, mode: str = "archive") -> Path:
    ostree("init", f"--repo={path}", f"--mode={mode}")
    return path


def summary_update(repo: Path, gpg: GpgHome | None = None, key: GpgKey | None = None) -> None:
    args = [f"--repo={repo}", "summary", "-u"]
    if gpg is not None and key is not None:
        args += [f"--gpg-sign={key.fpr}", f"--gpg-homedir={gpg.home}"]
    ostree(*args)


def file_of(repo: Path, rel: str) -> bytes:
    return (repo / rel).read_bytes()


def flip_byte(data: bytes, pos: int | None = None) -> bytes:
    """``data`` with one byte inverted (the middle one by default)."""
    i = len(data) // 2 if pos is None else pos
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


def tree_objects(repo: Path, commit_csum: str) -> dict[str, list[str]]:
    """The objects of a commit (by extension), read from the real ``ostree ls``/objects."""
    from pyostree.repo import Repo

    r = Repo.open(repo)
    out: dict[str, list[str]] = {"dirtree": [], "dirmeta": [], "filez": []}
    c = r.load_commit(commit_csum)
    stack = [(c.root_tree, c.root_meta)]
    seen: set[str] = set()
    while stack:
        tree, meta = stack.pop()
        if tree not in seen:
            out["dirtree"].append(tree)
            seen.add(tree)
        if meta not in out["dirmeta"]:
            out["dirmeta"].append(meta)
        t = r.load_dirtree(tree)
        for _, f in t.files:
            if f not in out["filez"]:
                out["filez"].append(f)
        stack += [(d[1], d[2]) for d in t.dirs]
    return out


def missing_objects(client: Path, server: Path, commit_csum: str) -> list[str]:
    """Objects of ``commit_csum`` (as the server has it) that ``client`` lacks."""
    from pyostree.core import ObjectType
    from pyostree.repo import Repo

    repo = Repo.open(client)
    kinds = {"dirtree": ObjectType.DIRTREE, "dirmeta": ObjectType.DIRMETA,
             "filez": ObjectType.FILE}
    out = [commit_csum] if not repo.has_object(ObjectType.COMMIT, commit_csum) else []
    for ext, csums in tree_objects(server, commit_csum).items():
        out += [f"{c}.{ext}" for c in csums if not repo.has_object(kinds[ext], c)]
    return out


# --------------------------------------------------------------------------- crafted objects


FileEntries = list[tuple[str, bytes]]
DirEntries = list[tuple[str, bytes, bytes]]
TreeMutator = Callable[[FileEntries, DirEntries], tuple[FileEntries, DirEntries]]


def craft_tree(repo: Path, commit_csum: str, path: Sequence[str], mutate: TreeMutator
               ) -> tuple[str, dict[str, bytes]]:
    """A new commit whose dirtree at ``path`` is ``mutate``d, with every dirtree above it and
    the commit rehashed, encoded directly with :mod:`pyostree.gvariant` (no validation).
    Returns the new commit checksum and the new objects by their served path."""
    new: dict[str, bytes] = {}

    def load(csum: str, ext: str) -> bytes:
        return (repo / object_rel(csum, ext)).read_bytes()

    def rewrite(tree_csum: str, rest: Sequence[str]) -> str:
        files, dirs = gv.decode(DIRTREE_TYPE, load(tree_csum, "dirtree"))
        files, dirs = list(files), list(dirs)
        if rest:
            for i, (name, sub, meta) in enumerate(dirs):
                if name == rest[0]:
                    dirs[i] = (name, bytes.fromhex(rewrite(sub.hex(), rest[1:])), meta)
                    break
            else:
                raise KeyError(rest[0])
        else:
            files, dirs = mutate(files, dirs)
        data = gv.encode(DIRTREE_TYPE, (files, dirs))
        csum = hashlib.sha256(data).hexdigest()
        new[object_rel(csum, "dirtree")] = data
        return csum

    fields = list(gv.decode(COMMIT_TYPE, load(commit_csum, "commit")))
    fields[6] = bytes.fromhex(rewrite(fields[6].hex(), path))
    data = gv.encode(COMMIT_TYPE, tuple(fields))
    csum = hashlib.sha256(data).hexdigest()
    new[object_rel(csum, "commit")] = data
    return csum, new


def summary_with_ref(summary: bytes, name: str, csum: str, size: int = 200) -> bytes:
    """``summary`` with one more ref entry, sorted in, encoded without validation."""
    refs, meta = gv.decode(SUMMARY_TYPE, summary)
    refs = sorted([*refs, (name, (size, bytes.fromhex(csum), {}))], key=lambda r: r[0].encode())
    return gv.encode(SUMMARY_TYPE, (refs, meta))


def point_ref(srv: FaultServer, ref: str, csum: str | bytes) -> None:
    """Make the server offer no summary and serve ``refs/heads/REF`` = ``csum``."""
    srv.add_fault("/summary", Fault(status=404))
    srv.add_fault("/summary.sig", Fault(status=404))
    body = csum if isinstance(csum, bytes) else (csum + "\n").encode()
    srv.add_fault(f"/refs/heads/{ref}", Fault(body=body))


def serve_objects(srv: FaultServer, objects: Mapping[str, bytes]) -> None:
    for rel, data in objects.items():
        srv.put(rel, data)


# --------------------------------------------------------------------------- GPG


@dataclass(frozen=True)
class GpgKey:
    name: str
    fpr: str
    public: Path  # binary export (what ``remote gpg-import`` reads)


@dataclass
class GpgHome:
    """A throwaway GNUPGHOME with ed25519 signing keys made by the real gpg."""

    home: Path
    keys: dict[str, GpgKey] = field(default_factory=dict)

    @classmethod
    def create(cls, home: Path) -> GpgHome:
        home.mkdir(mode=0o700, parents=True)
        return cls(home)

    def gpg(self, *args: str, faked_time: str | None = None) -> str:
        assert GPG is not None
        cmd = [GPG, "--homedir", str(self.home), "--batch", "--no-tty", "--yes",
               "--pinentry-mode", "loopback", "--passphrase", ""]
        if faked_time:
            cmd += ["--faked-system-time", faked_time]
        proc = subprocess.run([*cmd, *args], capture_output=True, check=False, timeout=60)
        if proc.returncode != 0:
            raise AssertionError(f"gpg {args} failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout.decode(errors="replace")

    def gen(self, name: str, *, created: str | None = None, expire: str = "never") -> GpgKey:
        uid = f"{name.title()} Signer <{name}@example.org>"
        self.gpg("--quick-gen-key", uid, "ed25519", "sign", expire, faked_time=created)
        out = self.gpg("--with-colons", "--list-keys", f"<{name}@example.org>")
        fpr = next(ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:"))
        key = GpgKey(name, fpr, self.home / f"{name}.gpg")
        self.export(key)
        self.keys[name] = key
        return key

    def export(self, key: GpgKey) -> None:
        assert GPG is not None
        data = subprocess.run([GPG, "--homedir", str(self.home), "--batch", "--export",
                               key.fpr], capture_output=True, check=True).stdout
        key.public.write_bytes(data)

    def revoke(self, key: GpgKey) -> None:
        """Import the revocation certificate gpg made at key creation; re-export."""
        cert = (self.home / "openpgp-revocs.d" / f"{key.fpr}.rev").read_text()
        cert = cert.replace(":-----BEGIN PGP PUBLIC KEY BLOCK-----",
                            "-----BEGIN PGP PUBLIC KEY BLOCK-----")
        rev = self.home / f"{key.name}.rev"
        rev.write_text(cert)
        self.gpg("--import", str(rev))
        self.export(key)

    @contextlib.contextmanager
    def faked_time(self, when: str) -> Iterator[None]:
        """Make gpg (also when run by ostree through gpgme) believe it is ``when``."""
        conf = self.home / "gpg.conf"
        conf.write_text(f"faked-system-time {when}\n")
        try:
            yield
        finally:
            conf.unlink()

    def sign_commit(self, repo: Path, csum: str, key: GpgKey) -> None:
        ostree(f"--repo={repo}", "gpg-sign", csum, key.fpr, f"--gpg-homedir={self.home}")

    def close(self) -> None:
        gpgconf = shutil.which("gpgconf")
        if gpgconf:
            subprocess.run([gpgconf, "--homedir", str(self.home), "--kill", "gpg-agent"],
                           capture_output=True, check=False)


def detached_signed_by(src_repo: Path, csum: str, gpg: GpgHome, keys: Sequence[GpgKey],
                       scratch: Path) -> bytes:
    """The ``.commitmeta`` ostree writes when it signs commit ``csum`` with ``keys`` (in
    order), made in a scratch repo holding only the commit object."""
    if scratch.exists():
        shutil.rmtree(scratch)
    init_repo(scratch)
    rel = object_rel(csum, "commit")
    (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src_repo / rel, scratch / rel)
    for key in keys:
        gpg.sign_commit(scratch, csum, key)
    return (scratch / object_rel(csum, "commitmeta")).read_bytes()


def tamper_signature(commitmeta: bytes) -> bytes:
    """Flip a byte near the end of the first signature packet (inside its MPI), keeping the
    GVariant framing valid."""
    meta = gv.decode("a{sv}", commitmeta)
    sigs = meta["ostree.gpgsigs"].value
    sig = bytearray(sigs[0])
    sig[-3] ^= 0x55
    sigs = [bytes(sig), *sigs[1:]]
    meta["ostree.gpgsigs"] = gv.Variant("aay", sigs)
    return gv.encode("a{sv}", meta)


def merge_signatures(*commitmetas: bytes) -> bytes:
    """One ``.commitmeta`` holding the signatures of all the given ones, in order."""
    sigs: list[bytes] = []
    for raw in commitmetas:
        sigs += gv.decode("a{sv}", raw)["ostree.gpgsigs"].value
    return gv.encode("a{sv}", {"ostree.gpgsigs": gv.Variant("aay", sigs)})


# --------------------------------------------------------------------------- clients


def make_client(path: Path, url: str, *, mode: str = "archive", remote: str = "origin",
                gpg_verify: bool = False, gpg_verify_summary: bool = False,
                keys: Sequence[GpgKey] = (), options: Mapping[str, str] | None = None) -> Path:
    """``ostree init`` a repo and add a remote with pyostree's ``remote add``/``gpg-import``."""
    init_repo(path, mode)
    args: list[str] = ["--repo", str(path), "remote", "add", remote, url,
                       "--set", f"gpg-verify={str(gpg_verify).lower()}",
                       "--set", f"gpg-verify-summary={str(gpg_verify_summary).lower()}"]
    for k, v in (options or {}).items():
        args += ["--set", f"{k}={v}"]
    cli(*args)
    if keys:
        cli("--repo", path, "remote", "gpg-import", remote, *[str(k.public) for k in keys])
    return path


def set_remote_url(client: Path, url: str, remote: str = "origin") -> None:
    """Point an existing remote at a new URL (the server port changes between tests)."""
    config = client / "config"
    lines = config.read_text().splitlines()
    inside = False
    for i, line in enumerate(lines):
        if line.startswith("["):
            inside = line.strip() == f'[remote "{remote}"]'
        elif inside and line.startswith("url="):
            lines[i] = f"url={url}"
    config.write_text("\n".join(lines) + "\n")


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of a repository (xattrs and modes kept: bare-user objects stay valid)."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


# --------------------------------------------------------------------------- one failure case


class PullCase:
    """A client repository, the server it pulls from, and the checks of a failure case."""

    def __init__(self, tmp: Path, client: Path, srv: FaultServer,
                 watch: Sequence[Path] = ()) -> None:
        self.tmp = tmp
        self.client = client
        self.srv = srv
        self.watch = list(watch)
        self.env = pyostree_env(tmp)

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {"tmp": listing(self.tmp, [self.client])}
        for i, w in enumerate(self.watch):
            snap[f"watch{i}"] = listing(w)
        return snap

    def run(self, *args: str | os.PathLike[str], timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        return pyostree("--repo", self.client, *args, env=self.env, timeout=timeout)

    def fail(self, args: Sequence[str | os.PathLike[str]], *needles: str,
             timeout: float = 120) -> str:
        """Run a pull that must fail; check the error line and that the repo is intact."""
        refs = read_refs(self.client)
        before = self.snapshot()
        proc = self.run(*args, timeout=timeout)
        line = assert_one_error(proc, *needles)
        print(line)  # shown with -s: the messages users would see
        assert read_refs(self.client) == refs, "a ref moved although the pull failed"
        self.check_intact(before)
        return line

    def check_intact(self, before: Mapping[str, Any]) -> None:
        fsck_both(self.client)
        assert self.snapshot() == before, "something was written outside the repository"

    def succeed(self, args: Sequence[str | os.PathLike[str]]) -> str:
        """Run a pull that must succeed, as a real process; the repo must fsck."""
        before = self.snapshot()
        proc = self.run(*args)
        assert proc.returncode == 0, f"pull failed: {proc.stderr}"
        assert "Traceback" not in proc.stderr
        self.check_intact(before)
        return proc.stdout

    def heal_and_rerun(self, args: Sequence[str | os.PathLike[str]],
                       expect: Mapping[str, str],
                       then: Callable[[], None] | None = None) -> None:
        """Clear the faults (``then`` may add transient ones the default retries must beat)
        and pull again (in-process): it must succeed and set the refs."""
        self.srv.clear_faults()
        if then is not None:
            then()
        cli("--repo", self.client, *args)
        refs = read_refs(self.client)
        for ref, csum in expect.items():
            assert refs.get(ref) == csum, f"{ref}: {refs.get(ref)} != {csum}"
        fsck_both(self.client)


# --------------------------------------------------------------------------- processes


_MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: Sequence[str], env: Mapping[str, str], timeout: float = 60
                 ) -> tuple[subprocess.CompletedProcess[str], float, int]:
    """Run a process; return it, its wall time and its peak RSS in bytes.

    The process is started by a small trampoline: a child forked straight from the (large)
    test process would report the parent's RSS as its peak."""
    with tempfile.NamedTemporaryFile("r") as rss_file:
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", _MEASURE, rss_file.name, *args],
                              capture_output=True, text=True, env=dict(env), timeout=timeout,
                              check=False)
        seconds = time.monotonic() - start
        rss = int(rss_file.read() or 0)
    return proc, seconds, rss


def gate_content(srv: FaultServer, free: int) -> threading.Event:
    """Let the first ``free`` content requests through, hold the others until the event."""
    gate = threading.Event()
    counter = itertools.count()

    def hold(path: str) -> bool:
        if path.endswith(".filez") and next(counter) >= free:
            gate.wait(30)
        return False

    srv.add_fault(hold, Fault())
    return gate


def start_pull(client: Path, args: Sequence[str], env: Mapping[str, str]
               ) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pyostree", "--repo", str(client), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(env))


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.stderr is not None:
        proc.stderr.close()


def wait_until(pred: Callable[[], bool], timeout: float = 30, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()
