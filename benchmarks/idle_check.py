"""Cost of an idle update check (nothing new on the server), pyostree vs the real ostree.

A device's ``pyostree update --check`` is a ``pull --commit-metadata-only`` of its origin ref.
This measures, against a loopback nginx serving the benchmark's archive repo, the requests and
bytes of a second check after a first one has filled the caches — the steady state of a fleet
polling a server where nothing changed — for a signed and an unsigned summary.

    python3 benchmarks/idle_check.py [--size small]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import NginxServer, parse_access_log

HERE = Path(__file__).resolve().parent
REF = "benchos/x86_64/v1"


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def measure(tool: list[str], server_root: Path, signed: bool) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="idle-check-"))
    try:
        served = work / "served"
        shutil.copytree(server_root, served, symlinks=True)
        if not signed:
            (served / "summary.sig").unlink(missing_ok=True)
        with NginxServer(served) as srv:
            repo = work / "repo"
            _run(["ostree", f"--repo={repo}", "init", "--mode=bare-user"])
            _run(["ostree", f"--repo={repo}", "remote", "add", "--no-gpg-verify", "bench",
                  srv.url])
            _run([*tool, f"--repo={repo}", "pull", "--commit-metadata-only", "bench", REF])
            srv.reset_log()
            _run([*tool, f"--repo={repo}", "pull", "--commit-metadata-only", "bench", REF])
            traffic = parse_access_log(srv.access_log.read_text())
        return {"requests": traffic.requests, "bytes_sent": traffic.bytes_sent,
                "statuses": traffic.statuses, "by_kind": traffic.by_kind}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--pyostree-cmd", default=f"{sys.executable} -m pyostree")
    args = parser.parse_args()
    root = HERE / "work" / args.size / "archive"
    if not (root / "config").exists():
        print(f"no prepared corpus in {root}; run benchmarks/run.py --size {args.size} first",
              file=sys.stderr)
        return 1
    tools = {"ostree": ["ostree"], "pyostree": args.pyostree_cmd.split()}
    results = {}
    for signed in (True, False):
        for name, tool in tools.items():
            results[f"{name} ({'signed' if signed else 'unsigned'} summary)"] = measure(
                tool, root, signed)
    print("| tool | requests per idle check | bytes sent by the server | statuses |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['requests']} | {r['bytes_sent']} | {r['statuses']} |")
    if os.environ.get("IDLE_CHECK_JSON"):
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
