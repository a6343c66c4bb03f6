"""Run one command and measure it: wall time, user+sys CPU and peak RSS from ``wait4``.

The rusage comes from ``os.wait4`` on the command's own process, so it covers exactly that process
and the descendants it reaped (for pyostree: the Python interpreter itself, not a shell around
it).  Used in-process by ``run.py`` and, inside a private mount namespace, as a script:

    python benchmarks/measure.py --out RESULT.json [--tree GLOB] [--count GLOB] -- CMD ARGS...
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TAIL_LINES = 12
# GNU time reports the peak RSS of the command's own process.  ru_maxrss from our own wait4 would
# not: exec() records the high-water mark of the forking process's memory into the child's maxrss,
# so every child of a 30 MB Python runner would report at least 30 MB.  Its CPU overhead (fork,
# exec, ~1 ms) is the same for both tools; user+sys still come from our wait4 (µs resolution).
GNU_TIME = "/usr/bin/time"
SAMPLE_EVERY = 0.02


def _descendants(pid: int) -> list[int]:
    """``pid``'s descendants (children of every thread, recursively), not ``pid`` itself."""
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            out += kids
            stack += kids
    return out


def _rss_pss_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return rss, pss


class _TreeSampler(threading.Thread):
    """Samples the summed memory of a process tree until stopped; keeps the peaks."""

    def __init__(self, root: int, include_root: bool) -> None:
        super().__init__(name="tree-sampler", daemon=True)
        self.root = root
        self.include_root = include_root
        self.peak_rss = self.peak_pss = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_EVERY):
            pids = _descendants(self.root) + ([self.root] if self.include_root else [])
            rss = pss = 0
            for pid in pids:
                r, p = _rss_pss_kb(pid)
                rss += r
                pss += p
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)


@dataclass(slots=True)
class Measurement:
    """The outcome of one measured command (``returncode`` 127: could not be started)."""

    argv: list[str]
    returncode: int
    wall: float
    user: float
    sys: float
    maxrss_kb: int
    rss_exact: bool = True
    # Sampled every SAMPLE_EVERY s: the peak of the summed RSS and PSS of all the command's
    # processes (pyostree's pull forks a helper; GNU time's maxrss covers one process).
    tree_rss_kb: int = 0
    tree_pss_kb: int = 0
    timed_out: bool = False
    stdout_tail: str = ""
    stderr_tail: str = ""
    after: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        return cls(**data)


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def measure(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
            log_dir: Path, timeout: float | None = None) -> Measurement:
    """Run ``argv`` (no shell) with output to ``log_dir/{stdout,stderr}``; measure it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path, rss_path = log_dir / "stdout", log_dir / "stderr", log_dir / "maxrss"
    use_time = os.access(GNU_TIME, os.X_OK)
    spawned = [GNU_TIME, "-f", "%M", "-o", str(rss_path), "--", *argv] if use_time else argv
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        try:
            proc = subprocess.Popen(spawned, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=env, cwd=cwd, start_new_session=True)
        except OSError as exc:
            return Measurement(argv, 127, 0.0, 0.0, 0.0, 0, stderr_tail=str(exc))
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.start()
        sampler = _TreeSampler(proc.pid, include_root=not use_time)  # not GNU time itself
        sampler.start()
        try:
            _pid, status, ru = os.wait4(proc.pid, 0)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): take the command's whole session down with us.
            kill()
            os.waitpid(proc.pid, 0)
            raise
        finally:
            if timer:
                timer.cancel()
            sampler.done.set()
        wall = time.perf_counter() - started
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    maxrss, exact = ru.ru_maxrss, False
    if use_time:
        with contextlib.suppress(OSError, ValueError, IndexError):
            maxrss, exact = int(rss_path.read_text().split()[-1]), True
    return Measurement(argv, proc.returncode, wall, ru.ru_utime, ru.ru_stime, maxrss, exact,
                       sampler.peak_rss, sampler.peak_pss, timed_out.is_set(),
                       _tail(out_path), _tail(err_path))


def fingerprint_tree(root: Path) -> dict[str, int]:
    """Counts that two correct checkouts of one commit share (``linked``: files with nlink > 1)."""
    dirs = files = links = size = linked = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISDIR(st.st_mode):
                dirs += 1
            elif stat.S_ISLNK(st.st_mode):
                links += 1
            elif stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
                linked += st.st_nlink > 1
    return {"dirs": dirs, "files": files, "symlinks": links, "bytes": size, "linked": linked}


def describe_after(trees: list[str], counts: list[str]) -> dict[str, Any]:
    """Fingerprints of the directories matching ``trees`` and sizes of the ``counts`` globs."""
    after: dict[str, Any] = {}
    for pattern in trees:
        after[f"tree:{pattern}"] = [fingerprint_tree(Path(p)) for p in sorted(glob.glob(pattern))]
    for pattern in counts:
        after[f"count:{pattern}"] = len(glob.glob(pattern))
    return after


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run a command and write its measurement as JSON.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tree", action="append", default=[], help="fingerprint these dirs after")
    ap.add_argument("--count", action="append", default=[], help="count these paths after")
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command")
    m = measure(cmd, log_dir=args.out.parent / (args.out.stem + ".logs"), timeout=args.timeout)
    m.after = describe_after(args.tree, args.count)
    args.out.write_text(json.dumps(m.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
