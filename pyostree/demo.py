"""``pyostree demo``: the whole update story on this machine, with nothing but pyostree.

Builds a small OS tree (kernel, initramfs, /usr/etc), commits v1 into a signed archive repo with
a static delta, serves it over HTTP on a free loopback port, creates a fresh sysroot, pulls and
deploys v1, publishes v2 (with a v1→v2 delta), updates with the updater service's one-shot
mode, shows ``admin status`` and the boot-loader entries, and cleans up.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from . import gvariant as gv
from .commit import commit_tree
from .deltas import generate_delta
from .deploy import deploy, init_fs, os_init
from .pull import pull
from .remoteconfig import apply_change, get_remote, load_remotes
from .repo import Repo, RepoMode
from .sign import generate_ed25519_keypair, parse_ed25519_secret_key
from .signing import regenerate_summary, sign_commit
from .sysroot import Sysroot, status_text

OSNAME = "demo"
REF = "demo/stable/x86_64"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def build_tree(root: Path, version: int) -> None:
    """A tiny bootable-looking OS: kernel, initramfs, os-release, /usr/etc and a few tools."""
    kver = f"6.1.{version}-demo"
    _write(root / f"usr/lib/modules/{kver}/vmlinuz", f"DEMO KERNEL {version}\n" * 200)
    _write(root / f"usr/lib/modules/{kver}/initramfs.img", f"DEMO INITRAMFS {version}\n" * 100)
    _write(root / "usr/lib/os-release",
           f'NAME="pyostree demo"\nID=pyostree-demo\nVERSION_ID={version}\n'
           f'PRETTY_NAME="pyostree demo OS"\n')
    _write(root / "usr/etc/hostname", "demo-device\n")
    _write(root / "usr/etc/motd", f"Welcome to demo OS version {version}\n")
    _write(root / "usr/bin/hello", f"#!/bin/sh\necho hello from version {version}\n", 0o755)
    for i in range(20):
        _write(root / f"usr/share/doc/demo/file{i:02d}.txt",
               f"document {i}\n" + ("lorem ipsum " * 50 + "\n") * (i + 1))
    (root / "usr/lib/libdemo.so.1").write_bytes(bytes(range(256)) * 64 * version)
    os.symlink("libdemo.so.1", root / "usr/lib/libdemo.so")
    for d in ("var", "boot", "sysroot", "proc", "sys", "dev", "run", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.symlink("sysroot/ostree", root / "ostree")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[tuple[str, http.server.ThreadingHTTPServer]]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()


def run_demo(workdir: str | None = None, keep: bool = False) -> int:
    start = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="pyostree-demo-", dir=workdir))
    step = 0

    def say(text: str) -> None:
        nonlocal step
        step += 1
        print(f"[{step:2d}] {text}", flush=True)

    try:
        say(f"Working in {base}")
        secret_b64, public_b64 = generate_ed25519_keypair()
        secret = parse_ed25519_secret_key(secret_b64)
        server_repo = Repo.create(base / "server/repo", RepoMode.ARCHIVE)

        def publish(version: int, parent: str | None) -> str:
            tree = base / f"tree-v{version}"
            build_tree(tree, version)
            csum = commit_tree(server_repo, tree, branch=REF, subject=f"Demo OS v{version}",
                               metadata={"version": gv.Variant("s", f"{version}.0")},
                               timestamp=1_700_000_000 + version * 86400)
            sign_commit(server_repo, csum, [secret])
            generate_delta(server_repo, None, csum)
            if parent is not None:
                generate_delta(server_repo, parent, csum)
            regenerate_summary(server_repo, ed25519_secrets=[secret])
            return csum

        say("Building OS tree v1 and committing it into a signed archive repository")
        v1 = publish(1, None)
        print(f"     v1 = {v1}")
        with serve(base / "server") as (url, server):
            say(f"Serving the repository at {url}/repo")
            sysroot_path = base / "sysroot"
            sysroot_path.mkdir()
            say(f"Creating a fresh sysroot in {sysroot_path}")
            init_fs(sysroot_path)
            sysroot = Sysroot(sysroot_path, mutable_deployments=True).load()
            os_init(sysroot, OSNAME)
            repo = sysroot.repo()
            say("Adding the remote 'demo' (ed25519 signatures required, summary signed)")
            change = load_remotes(repo).add("demo", f"{url}/repo", {
                "gpg-verify": "false", "sign-verify": "true", "sign-verify-summary": "true",
                "verification-ed25519-key": public_b64})
            apply_change(repo, change)
            say(f"Pulling {REF} (v1) — a static delta from empty")
            res = pull(repo, get_remote(repo, "demo"), [REF])
            print(f"     {res.stats.requests} requests, {res.stats.bytes} bytes, "
                  f"deltas: {', '.join(d[:12] + '…' for d in res.deltas) or 'none'}")
            say("Deploying v1")
            deploy(sysroot.load(), OSNAME, f"demo:{REF}", origin_refspec=f"demo:{REF}",
                   kargs=["root=LABEL=rootfs", "quiet"])
            sysroot.load()
            print(status_text(sysroot).rstrip())

            say("Building OS tree v2 and publishing it with a v1→v2 delta")
            v2 = publish(2, v1)
            print(f"     v2 = {v2}")
            say("Running the updater once (pyostree update --one-shot --no-reboot)")
            from .cli import main as cli_main

            rc = cli_main(["update", f"--sysroot={sysroot_path}", "--one-shot", "--no-reboot",
                           f"--os={OSNAME}"])
            print(f"     updater exit code: {rc} "
                  f"({'reboot required' if rc == 10 else 'see above'})")
            sysroot.load()
            say("admin status after the update (v2 is the default, v1 the rollback)")
            print(status_text(sysroot).rstrip())
            say("Boot-loader entries")
            entries = sorted((sysroot_path / "boot/loader/entries").glob("*.conf"))
            for entry in entries:
                print(f"     --- {entry.name}")
                for line in entry.read_text().splitlines():
                    print(f"     {line}")
            default = sysroot.deployments[0]
            ok = default.csum == v2 and rc in (0, 10)  # 10: reboot required
            print(f"     served {server.requests} HTTP requests in all")  # type: ignore[attr-defined]
        say(("Done: v2 is the default deployment" if ok else "FAILED: v2 is not the default")
            + f" ({time.monotonic() - start:.1f} s)")
        return 0 if ok else 1
    finally:
        if keep:
            print(f"     kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
