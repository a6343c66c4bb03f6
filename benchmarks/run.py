"""Side-by-side benchmark: pyostree against the real ``ostree`` on the same prepared inputs.

    python benchmarks/run.py --size small --rounds 3 [--scenario pull-bare-user ...] [--json F]

For every scenario and round both tools run once, alternating which goes first; every run gets a
fresh target prepared (unmeasured) by the real ``ostree``, then only the tool's own command is
measured (wall time, user+sys CPU and peak RSS from ``wait4`` of that process, and the requests and
bytes the private nginx served meanwhile).  The result is checked (unmeasured) before the run
counts.  Medians and pyostree/ostree ratios are printed as a markdown table, followed by failures
and the exact commands.  ``--pyostree-cmd ostree`` compares ostree with itself (harness test).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import corpus
import measure
import repo
import server
from measure import Measurement
from repo import OSNAME, REF_STABLE, REF_V1, REMOTE, BenchRepo, run_checked

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent
TOOLS = ("ostree", "pyostree")
# Below this much free space the runs' directories are removed before the next run.
MIN_FREE_BYTES = 8 << 30


class CheckFailed(RuntimeError):
    """The command exited 0 but its result is wrong."""


class SetupFailed(RuntimeError):
    """Preparing a run failed (a harness or environment problem, not the tool's)."""


# ---------------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True, slots=True)
class Paths:
    """Where things are for one run; rendered with ``$NAME`` placeholders for the report."""

    run: str
    archive: str
    client: str
    pubkey: str
    url: str

    @classmethod
    def placeholders(cls) -> Paths:
        return cls("$RUN", "$ARCHIVE", "$CLIENT_V1", "$PUBKEY", "$URL")


Argv = list[str]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    setup: Callable[[Paths, BenchRepo], list[Argv]]
    command: Callable[[Paths, BenchRepo], Argv]
    check: Callable[[Paths, BenchRepo, Measurement], dict[str, Any]]
    uses_server: bool = False
    sysroot: bool = False
    """Runs inside ``unshare -m`` with ``$RUN/sysroot`` a fresh tmpfs (setup and command)."""
    env: dict[str, str] = field(default_factory=dict)


def _init_remote(mode: str, *, signed: bool = False) -> Callable[[Paths, BenchRepo], list[Argv]]:
    def setup(p: Paths, _r: BenchRepo) -> list[Argv]:
        trust = ([f"--gpg-import={p.pubkey}", "--set=gpg-verify-summary=true"] if signed
                 else ["--no-gpg-verify"])
        return [["ostree", f"--repo={p.run}/repo", "init", f"--mode={mode}"],
                ["ostree", f"--repo={p.run}/repo", "remote", "add", *trust, REMOTE, p.url]]
    return setup


def _copy_client(p: Paths, _r: BenchRepo) -> list[Argv]:
    return [["cp", "-a", p.client, f"{p.run}/repo"],
            ["ostree", f"--repo={p.run}/repo", "remote", "add", "--no-gpg-verify", REMOTE, p.url]]


def _pull(flag: str, ref: str) -> Callable[[Paths, BenchRepo], Argv]:
    return lambda p, _r: [f"--repo={p.run}/repo", "pull", flag, REMOTE, ref]


def _check_pull(ref: str, version: int) -> Callable[[Paths, BenchRepo, Measurement],
                                                    dict[str, Any]]:
    def check(p: Paths, r: BenchRepo, _m: Measurement) -> dict[str, Any]:
        target = Path(p.run) / "repo"
        want = r.v1 if version == 1 else r.v2
        got = run_checked(["ostree", f"--repo={target}", "rev-parse", f"{REMOTE}:{ref}"]).strip()
        if got != want:
            raise CheckFailed(f"{REMOTE}:{ref} is {got[:12]}, expected {want[:12]}")
        if (target / "state" / f"{want}.commitpartial").exists():
            raise CheckFailed(f"commit {want[:12]} is still partial")
        return {"objects": sum(repo.count_objects(target).values())}
    return check


def _no_setup(_p: Paths, _r: BenchRepo) -> list[Argv]:
    return []


def _checkout(*flags: str) -> Callable[[Paths, BenchRepo], Argv]:
    return lambda p, r: [f"--repo={p.client}", "checkout", *flags, r.v1, f"{p.run}/co"]


_expected_trees: dict[Path, dict[str, int]] = {}


def _check_checkout(p: Paths, r: BenchRepo, _m: Measurement) -> dict[str, Any]:
    if r.corpus_v1 not in _expected_trees:
        _expected_trees[r.corpus_v1] = measure.fingerprint_tree(r.corpus_v1)
    want = _expected_trees[r.corpus_v1]
    got = measure.fingerprint_tree(Path(p.run) / "co")
    for key in ("dirs", "files", "symlinks", "bytes"):
        if got[key] != want[key]:
            raise CheckFailed(f"checkout has {key}={got[key]}, the corpus has {want[key]}")
    return {"linked": got["linked"]}


def _check_fsck(_p: Paths, _r: BenchRepo, _m: Measurement) -> dict[str, Any]:
    return {}


def _check_generate(p: Paths, _r: BenchRepo, _m: Measurement) -> dict[str, Any]:
    sbs = list(Path(p.run, "repo", "deltas").glob("*/*/superblock"))
    if len(sbs) != 2:  # the server's empty→v1 delta, and the v1→v2 one just made
        raise CheckFailed(f"expected 2 superblocks, found {len(sbs)}")
    return {}


DEPLOY_TREE = "{run}/sysroot/ostree/deploy/" + OSNAME + "/deploy/*.0"
BOOT_ENTRIES = "{run}/sysroot/boot/loader/entries/*.conf"


def _sysroot_setup(p: Paths, _r: BenchRepo) -> list[Argv]:
    sysroot = f"{p.run}/sysroot"
    return [["ostree", "admin", "init-fs", sysroot],
            ["ostree", "admin", "os-init", f"--sysroot={sysroot}", OSNAME],
            ["ostree", f"--repo={sysroot}/ostree/repo", "pull-local", p.archive, REF_V1]]


def _check_deploy(p: Paths, _r: BenchRepo, m: Measurement) -> dict[str, Any]:
    trees = m.after.get("tree:" + DEPLOY_TREE.format(run=p.run), [])
    entries = m.after.get("count:" + BOOT_ENTRIES.format(run=p.run), 0)
    if len(trees) != 1:
        raise CheckFailed(f"expected one deployment, found {len(trees)}")
    if entries != 1:
        raise CheckFailed(f"expected one boot loader entry, found {entries}")
    return dict(trees[0])


SCENARIOS: list[Scenario] = [
    Scenario("pull-archive", "pull v1 over HTTP into an empty archive repo (loose objects)",
             _init_remote("archive"), _pull("--disable-static-deltas", REF_V1),
             _check_pull(REF_V1, 1), uses_server=True),
    Scenario("pull-bare-user", "pull v1 over HTTP into an empty bare-user repo (loose objects)",
             _init_remote("bare-user"), _pull("--disable-static-deltas", REF_V1),
             _check_pull(REF_V1, 1), uses_server=True),
    Scenario("pull-signed", "as pull-bare-user, with GPG verification of commit and summary",
             _init_remote("bare-user", signed=True), _pull("--disable-static-deltas", REF_V1),
             _check_pull(REF_V1, 1), uses_server=True),
    Scenario("pull-delta-empty", "pull v1 into an empty bare-user repo via the empty→v1 delta",
             _init_remote("bare-user"), _pull("--require-static-deltas", REF_V1),
             _check_pull(REF_V1, 1), uses_server=True),
    Scenario("update-loose", "bare-user repo at v1 pulls v2 as loose objects",
             _copy_client, _pull("--disable-static-deltas", REF_STABLE),
             _check_pull(REF_STABLE, 2), uses_server=True),
    Scenario("update-delta", "bare-user repo at v1 pulls v2 via the v1→v2 delta",
             _copy_client, _pull("--require-static-deltas", REF_STABLE),
             _check_pull(REF_STABLE, 2), uses_server=True),
    Scenario("checkout-hardlink", "check out v1 from the bare-user repo, user mode (hardlinks)",
             _no_setup, _checkout("-U"), _check_checkout),
    Scenario("checkout-copy", "check out v1 from the bare-user repo, user mode, copying files",
             _no_setup, _checkout("-U", "--force-copy"), _check_checkout),
    Scenario("fsck", "fsck a bare-user repo holding v1 (a fresh copy per run)",
             lambda p, _r: [["cp", "-a", p.client, f"{p.run}/repo"]],
             lambda p, _r: [f"--repo={p.run}/repo", "fsck"], _check_fsck),
    Scenario("delta-generate",
             "generate the v1→v2 delta in (a hard-linked copy of) the archive repo, with the "
             "default options (the two tools make different deltas: see performance.md)",
             lambda p, _r: [["cp", "-al", p.archive, f"{p.run}/repo"]],
             lambda p, _r: [f"--repo={p.run}/repo", "static-delta", "generate",
                            f"--to={REF_STABLE}"], _check_generate),
    Scenario("start-up", "list the refs of the bare-user repo: the fixed cost of one run "
             "(process start, imports, opening the repo), part of every other scenario",
             _no_setup, lambda p, _r: [f"--repo={p.client}", "refs"], _check_fsck),
    Scenario("admin-deploy",
             "deploy v1 into a fresh sysroot (init-fs, os-init, pull-local) on a private tmpfs",
             _sysroot_setup,
             lambda p, _r: ["admin", f"--sysroot={p.run}/sysroot", "deploy", f"--os={OSNAME}",
                            REF_V1],
             _check_deploy, sysroot=True,
             env={"OSTREE_SYSROOT_DEBUG": "mutable-deployments"}),
]
BY_NAME = {s.name: s for s in SCENARIOS}


# ---------------------------------------------------------------------------------------------
# Running


@dataclass(slots=True)
class RunResult:
    tool: str
    round: int
    measurement: Measurement | None = None
    traffic: server.Traffic | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def to_json(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "tool": self.tool, "round": self.round, "ok": self.ok, "error": self.error,
            "wall_s": m.wall if m else None, "user_s": m.user if m else None,
            "sys_s": m.sys if m else None, "cpu_s": m.cpu if m else None,
            "maxrss_kb": m.maxrss_kb if m else None,
            "tree_rss_kb": m.tree_rss_kb if m else None,
            "tree_pss_kb": m.tree_pss_kb if m else None,
            "traffic": self.traffic.as_dict() if self.traffic else None,
            "result": self.result,
        }


@dataclass(slots=True)
class Harness:
    bench: BenchRepo
    tool_argv: dict[str, Argv]
    runs_dir: Path
    url: str = ""
    srv: server.NginxServer | None = None
    timeout: float = 1800.0
    keep: bool = False
    verbose: bool = False
    # Run directories are removed at the end, not after each run: on an ext4 without a journal
    # the kernel skips inodes freed in the last 60-300 s when it allocates new ones
    # (recently_deleted), so a run that follows the removal of 24k files spends seconds of
    # system time scanning inode tables, and that cost landed on whichever tool ran next.
    # Only when free space runs short are they removed early (and that is logged).
    garbage: list[Path] = field(default_factory=list)
    log: Callable[[str], None] = lambda _msg: None

    def env(self, scenario: Scenario) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OSTREE_", "GNUPGHOME", "PYTHONPATH",
                                    "PYTHONDONTWRITEBYTECODE"))}
        # An installed pyostree runs from compiled bytecode; some environments forbid
        # writing it next to the sources, so keep it in the work directory (the warm-up
        # round fills it) instead of recompiling the package in every measured run.
        env["PYTHONPYCACHEPREFIX"] = str(self.runs_dir.parent / "pycache")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PROJECT_ROOT)] + ([os.environ["PYTHONPATH"]] if "PYTHONPATH" in os.environ
                                   else []))
        env["LC_ALL"] = "C.UTF-8"
        env.update(scenario.env)
        return env

    def paths(self, run_dir: Path) -> Paths:
        return Paths(str(run_dir), str(self.bench.archive), str(self.bench.client_v1),
                     str(self.bench.pubkey), self.url)

    def run_once(self, scenario: Scenario, tool: str, round_no: int) -> RunResult:
        run_dir = self.runs_dir / f"{scenario.name}.{tool}.{round_no}.{len(self.garbage)}"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(self.runs_dir).free < MIN_FREE_BYTES and self.garbage:
            self.log(f"  less than {MIN_FREE_BYTES >> 30} GiB free: removing "
                     f"{len(self.garbage)} earlier run directories now (the next runs may "
                     "pay for it in system time)")
            self.collect_garbage()
        run_dir.mkdir(parents=True)
        p = self.paths(run_dir)
        res = RunResult(tool, round_no)
        argv = self.tool_argv[tool] + scenario.command(p, self.bench)
        try:
            if scenario.sysroot:
                res.measurement = self._run_in_namespace(scenario, p, argv, run_dir)
            else:
                for step in scenario.setup(p, self.bench):
                    try:
                        run_checked(step, env=self.env(scenario))
                    except repo.CommandError as exc:
                        raise SetupFailed(str(exc)) from exc
                # Write back what setup and the previous run left dirty, so that
                # neither tool pays for the other's writeback.
                os.sync()
                offset = self.srv.log_offset() if self.srv and scenario.uses_server else 0
                res.measurement = measure.measure(argv, env=self.env(scenario), cwd=run_dir,
                                                  log_dir=run_dir / "logs", timeout=self.timeout)
                if self.srv and scenario.uses_server:
                    res.traffic = self.srv.traffic_since(offset)
                    self.srv.reset_log()
            m = res.measurement
            if m.timed_out:
                res.error = f"timed out after {self.timeout:.0f}s\n{m.stderr_tail}"
            elif m.returncode != 0:
                res.error = f"exit status {m.returncode}\n{m.stderr_tail or m.stdout_tail}"
            else:
                try:
                    res.result = scenario.check(p, self.bench, m)
                except (CheckFailed, repo.CommandError) as exc:
                    res.error = f"check failed: {exc}"
        finally:
            if not self.keep:
                self.garbage.append(run_dir)
        return res

    def collect_garbage(self) -> None:
        for d in self.garbage:
            repo.remove_tree(d)
        self.garbage.clear()

    def _run_in_namespace(self, scenario: Scenario, p: Paths, argv: Argv,
                          run_dir: Path) -> Measurement:
        sysroot = run_dir / "sysroot"
        sysroot.mkdir()
        out = run_dir / "measure.json"
        lines = ["set -e", f"mount -t tmpfs -o mode=0755 bench-sysroot {shlex.quote(str(sysroot))}"]
        lines += [shlex.join(step) for step in scenario.setup(p, self.bench)]
        lines.append("sync")
        lines.append(shlex.join([
            sys.executable, str(HERE / "measure.py"), f"--out={out}",
            f"--timeout={self.timeout}", f"--tree={DEPLOY_TREE.format(run=p.run)}",
            f"--count={BOOT_ENTRIES.format(run=p.run)}", "--", *argv]))
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               "\n".join(lines)], capture_output=True, text=True,
                              env=self.env(scenario), cwd=run_dir, check=False)
        if not out.exists():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise SetupFailed(f"sysroot setup exited {proc.returncode}: {tail}")
        return Measurement.from_json(json.loads(out.read_text()))


@dataclass(slots=True)
class ScenarioReport:
    scenario: Scenario
    runs: list[RunResult] = field(default_factory=list)
    setup_error: str = ""

    def ok_runs(self, tool: str) -> list[RunResult]:
        return [r for r in self.runs if r.tool == tool and r.ok]

    def failure(self, tool: str) -> str:
        bad = [r for r in self.runs if r.tool == tool and not r.ok]
        return bad[0].error if bad else ""

    def median(self, tool: str, key: str) -> float | None:
        values = [v for r in self.ok_runs(tool) if (v := metric(r, key)) is not None]
        return statistics.median(values) if values else None

    def results_differ(self) -> bool:
        seen = {json.dumps(r.result, sort_keys=True) for r in self.runs if r.ok}
        return len(seen) > 1


METRICS = ("wall_s", "cpu_s", "user_s", "sys_s", "maxrss_mb", "tree_rss_mb", "tree_pss_mb",
           "requests", "served_mb", "connections")


def metric(r: RunResult, key: str) -> float | None:
    m, t = r.measurement, r.traffic
    if m is not None:
        if key == "wall_s":
            return m.wall
        if key == "cpu_s":
            return m.cpu
        if key == "user_s":
            return m.user
        if key == "sys_s":
            return m.sys
        if key == "maxrss_mb":
            return m.maxrss_kb / 1024
        if key == "tree_rss_mb":  # sampled; at least the exact peak of the main process
            return max(m.tree_rss_kb, m.maxrss_kb) / 1024
        if key == "tree_pss_mb":
            return m.tree_pss_kb / 1024 if m.tree_pss_kb else None
    if t is not None:
        if key == "requests":
            return float(t.requests)
        if key == "served_mb":
            return t.body_bytes / 1e6
        if key == "connections":
            return float(t.connections)
    return None


def run_scenario(h: Harness, scenario: Scenario, rounds: int, warmup: int,
                 log: Callable[[str], None]) -> ScenarioReport:
    report = ScenarioReport(scenario)
    failed: set[str] = set()
    for round_no in range(-warmup, rounds):
        order = TOOLS if round_no % 2 == 0 else TOOLS[::-1]
        for tool in order:
            if tool in failed:
                continue
            try:
                res = h.run_once(scenario, tool, round_no)
            except SetupFailed as exc:
                report.setup_error = str(exc)
                log(f"  {scenario.name}: setup failed: {exc}")
                return report
            label = "warm-up" if round_no < 0 else f"round {round_no + 1}"
            if res.ok:
                m = res.measurement
                assert m is not None
                extra = f" {res.traffic.requests} req" if res.traffic else ""
                log(f"  {scenario.name} {label} {tool:8s} {m.wall:8.3f}s wall {m.cpu:8.3f}s cpu "
                    f"{m.maxrss_kb / 1024:7.1f} MB ({m.tree_rss_kb / 1024:.1f} all processes, "
                    f"PSS {m.tree_pss_kb / 1024:.1f}){extra}")
            else:
                log(f"  {scenario.name} {label} {tool}: FAILED {res.error.splitlines()[0]}")
                failed.add(tool)
            if round_no >= 0 or not res.ok:
                report.runs.append(res)
    return report


# ---------------------------------------------------------------------------------------------
# Reporting


def _fmt(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _ratio(o: float | None, p: float | None) -> str:
    if o is None or p is None or o <= 0:
        return "—"
    return f"{p / o:.2f}×"


def _pair(o: float | None, p: float | None, digits: int) -> str:
    return f"{_fmt(o, digits)} / {_fmt(p, digits)}"


def render_table(reports: list[ScenarioReport]) -> str:
    head = ("| scenario | wall s ostree | wall s pyostree | wall × | CPU s ostree | "
            "CPU s pyostree | CPU × | peak RSS MB ostree | peak RSS MB pyostree | RSS × | "
            "all-process RSS MB o / p | all-process PSS MB o / p | "
            "requests o / p | MB served o / p |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for rep in reports:
        name = rep.scenario.name
        if rep.setup_error:
            rows.append(f"| {name} | setup failed |" + " |" * 13)
            continue
        med = {(t, k): rep.median(t, k) for t in TOOLS for k in METRICS}
        cells = [name]
        for key, digits in (("wall_s", 3), ("cpu_s", 3), ("maxrss_mb", 1)):
            o, p = med[("ostree", key)], med[("pyostree", key)]
            p_cell = "failed" if rep.failure("pyostree") and p is None else _fmt(p, digits)
            o_cell = "failed" if rep.failure("ostree") and o is None else _fmt(o, digits)
            cells += [o_cell, p_cell, _ratio(o, p)]
        for key in ("tree_rss_mb", "tree_pss_mb"):
            cells.append(_pair(med[("ostree", key)], med[("pyostree", key)], 1))
        if rep.scenario.uses_server:
            cells.append(_pair(med[("ostree", "requests")], med[("pyostree", "requests")], 0))
            cells.append(_pair(med[("ostree", "served_mb")], med[("pyostree", "served_mb")], 1))
        else:
            cells += ["—", "—"]
        if rep.results_differ():
            cells[0] += " ⚠"
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def render_report(reports: list[ScenarioReport], meta: dict[str, Any]) -> str:
    out = [f"## pyostree vs ostree — size `{meta['size']}`, {meta['rounds']} rounds "
           f"(medians; × = pyostree / ostree)", ""]
    out.append(f"- ostree {meta['ostree_version']}; pyostree command: `{meta['pyostree_cmd']}`; "
               f"{meta['cpu']}, {meta['nproc']} CPUs, Linux {meta['kernel']}, "
               f"Python {meta['python']}")
    c = meta["corpus"]
    out.append(f"- corpus v1: {c['files']} files, {c['dirs']} dirs, {c['symlinks']} symlinks, "
               f"{c['bytes'] / 1e6:.1f} MB; {meta['objects_v1']} objects; archive objects "
               f"{meta['archive_bytes'] / 1e6:.1f} MB; deltas empty→v1 "
               f"{meta['delta_bytes']['empty-v1'] / 1e6:.1f} MB, v1→v2 "
               f"{meta['delta_bytes']['v1-v2'] / 1e6:.1f} MB")
    out.append(f"- total benchmark time {meta['elapsed_s']:.0f}s")
    out += ["", render_table(reports), ""]
    notes = []
    for rep in reports:
        if rep.setup_error:
            notes.append(f"**{rep.scenario.name}**: setup failed:\n```\n{rep.setup_error}\n```")
        for tool in TOOLS:
            err = rep.failure(tool)
            if err:
                notes.append(f"**{rep.scenario.name}** ({tool}) failed:\n```\n{err}\n```")
        if rep.results_differ():
            detail = "; ".join(f"{r.tool}#{r.round + 1}: {json.dumps(r.result, sort_keys=True)}"
                               for r in rep.runs if r.ok)
            notes.append(f"**{rep.scenario.name}** ⚠ results differ between runs: {detail}")
    if notes:
        out += ["### Failures and warnings", "", *notes, ""]
    out += ["### Commands", "",
            "`$TOOL` is `ostree` or the pyostree command; setup runs with the real ostree and is "
            "not measured; `$RUN` is a fresh directory per run.", ""]
    placeholders = Paths.placeholders()
    for rep in reports:
        s = rep.scenario
        bench = meta["_bench"]
        out.append(f"**{s.name}** — {s.summary}")
        out.append("```sh")
        if s.sysroot:
            out.append(f"unshare --mount --propagation private sh -c '  # env: "
                       f"{' '.join(f'{k}={v}' for k, v in s.env.items())}")
            out.append("  mount -t tmpfs bench-sysroot $RUN/sysroot")
        for step in s.setup(placeholders, bench):
            out.append(("  " if s.sysroot else "") + shell_join(step))
        cmd = "$TOOL " + shell_join(s.command(placeholders, bench))
        out.append(("  " if s.sysroot else "") + cmd + "   # measured")
        if s.sysroot:
            out.append("'")
        out += ["```", ""]
    return "\n".join(out)


def shell_join(argv: Argv) -> str:
    """Like ``shlex.join`` but leaves ``$PLACEHOLDER`` paths unquoted for the report."""
    return " ".join(a if re.fullmatch(r"[\w@%+=:,./$-]+", a) else shlex.quote(a) for a in argv)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def tool_prefix(cmd: str) -> Argv:
    argv = shlex.split(cmd)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


@contextlib.contextmanager
def maybe_server(bench: BenchRepo, needed: bool) -> Iterator[server.NginxServer | None]:
    if not needed:
        yield None
        return
    with server.NginxServer(bench.archive) as srv:
        yield srv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark pyostree against ostree side by side.")
    ap.add_argument("--size", choices=sorted(corpus.PRESETS), default="small")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1,
                    help="unmeasured rounds per scenario first (page cache, .pyc files)")
    ap.add_argument("--scenario", action="append", choices=sorted(BY_NAME),
                    help="run only these (repeatable); default: all")
    ap.add_argument("--pyostree-cmd", default="python -m pyostree",
                    help="command line of the tool under test (default: %(default)s)")
    ap.add_argument("--json", type=Path, help="also write all runs and medians here")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per measured command")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached corpus and repos")
    ap.add_argument("--keep", action="store_true", help="keep the per-run directories")
    ap.add_argument("--work-root", type=Path, default=repo.WORK_ROOT)
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args(argv)
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:18s} {s.summary}")
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def terminate(signum: int, _frame: object) -> None:
        # Unwind normally so that nginx, the measured command and run dirs are cleaned up.
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, terminate)

    started = time.monotonic()
    bench = repo.ensure_repo(args.size, work_root=args.work_root, rebuild=args.rebuild, log=log)
    scenarios = [BY_NAME[n] for n in args.scenario] if args.scenario else SCENARIOS
    # Private per invocation: several runners may share one cache.
    runs_dir = bench.root / "runs" / f"{os.getpid()}"
    tools = {"ostree": ["ostree"], "pyostree": tool_prefix(args.pyostree_cmd)}
    reports: list[ScenarioReport] = []
    try:
        with maybe_server(bench, any(s.uses_server for s in scenarios)) as srv:
            h = Harness(bench, tools, runs_dir, url=srv.url if srv else "", srv=srv,
                        timeout=args.timeout, keep=args.keep, log=log)
            if srv:
                log(f"nginx serving {bench.archive} at {srv.url}")
            try:
                for s in scenarios:
                    log(f"{s.name}: {s.summary}")
                    reports.append(run_scenario(h, s, args.rounds, args.warmup, log))
            finally:
                h.collect_garbage()
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc}); nothing reported")
        return 130
    finally:
        for d in (runs_dir, runs_dir.parent):
            with contextlib.suppress(OSError):
                d.rmdir()
    meta: dict[str, Any] = {
        "size": args.size, "rounds": args.rounds, "warmup": args.warmup,
        "pyostree_cmd": args.pyostree_cmd, "ostree_version": bench.info["ostree_version"],
        "cpu": _cpu_model(), "nproc": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(), "corpus": bench.info["corpus_v1"],
        "objects_v1": bench.info["objects_v1"], "archive_bytes": bench.info["archive_bytes"],
        "delta_bytes": bench.info["delta_bytes"], "elapsed_s": time.monotonic() - started,
        "_bench": bench,
    }
    print(render_report(reports, meta))
    if args.json:
        args.json.write_text(json.dumps(to_json(reports, meta), indent=2) + "\n")
    bad = any(r.setup_error or r.failure("ostree") for r in reports)
    return 1 if bad else 0


def to_json(reports: list[ScenarioReport], meta: dict[str, Any]) -> dict[str, Any]:
    bench: BenchRepo = meta["_bench"]
    placeholders = Paths.placeholders()
    out: dict[str, Any] = {k: v for k, v in meta.items() if not k.startswith("_")}
    out["commits"] = {"v1": bench.v1, "v2": bench.v2}
    out["scenarios"] = {}
    for rep in reports:
        s = rep.scenario
        medians = {t: {k: rep.median(t, k) for k in METRICS} for t in TOOLS}
        ratios = {k: (p / o if (o := medians["ostree"][k]) and (p := medians["pyostree"][k])
                      is not None else None) for k in METRICS}
        out["scenarios"][s.name] = {
            "summary": s.summary,
            "setup": [shell_join(c) for c in s.setup(placeholders, bench)],
            "command": "$TOOL " + shell_join(s.command(placeholders, bench)),
            "env": s.env, "sysroot_tmpfs": s.sysroot,
            "setup_error": rep.setup_error,
            "failed": {t: rep.failure(t) for t in TOOLS if rep.failure(t)},
            "results_differ": rep.results_differ(),
            "median": medians, "ratio": ratios,
            "runs": [r.to_json() for r in rep.runs],
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
