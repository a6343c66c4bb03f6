"""The update cycle, the daemon loop and the post-boot health check.

One cycle: read the booted deployment's origin → ask the server for the ref's commit (metadata
only, retried with backoff) → refuse downgrades and commits that were rolled back → pull →
deploy under a shutdown inhibitor → post-apply hooks → wait for other inhibitors → reboot.
Every step is idempotent: a commit that is already pending is not pulled or deployed again.

After the reboot, :meth:`Updater.run_boot_check` runs the health checks, marks the boot good,
or makes the previous deployment the default and reboots into it — once per commit.
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from ..core import parse_refspec
from ..errors import (
    DeployError,
    FetchError,
    HTTPStatusError,
    PyOstreeError,
    TooLargeError,
    TransientFetchError,
    UsageError,
)
from .backend import CommitInfo, Deployment, UpdaterBackend
from .config import UpdaterConfig
from .exitcodes import ExitCode, exit_code_for
from .health import run_health_checks
from .hooks import POST_APPLY, POST_UPDATE_CHECK, run_hooks
from .inhibit import run_reboot, shutdown_inhibited, wait_for_inhibitors
from .status import load_status, save_status, utc_now_iso

__all__ = ["Outcome", "RunOptions", "Updater"]

log = logging.getLogger("pyostree.updater")
# Longest stretch a sleeping daemon goes without noticing a signal (see Updater._sleep).
_WAKE_EVERY = 1.0
T = TypeVar("T")


@attrs.frozen
class Outcome:
    """The result of one run. ``result`` is the word ``--json`` and the status file report:

    updated, nothing-to-do, update-available, no-update, fetched, reboot-required,
    downgrade-refused, skipped-rolled-back, healthy, rolled-back, unhealthy, stopped, failed.
    """

    code: ExitCode
    result: str
    message: str = ""
    osname: str | None = None
    booted: str | None = None
    pending: str | None = None
    available: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "exit_code": int(self.code),
            "message": self.message,
            "osname": self.osname,
            "booted": self.booted,
            "pending": self.pending,
            "available": self.available,
        }


@attrs.frozen
class RunOptions:
    check_only: bool = False  # report only; fetch commit metadata, change nothing
    fetch_only: bool = False  # pull, do not deploy
    apply_only: bool = False  # no network: deploy what was already fetched
    no_reboot: bool = False
    wait_for_window: bool = False  # sleep until the maintenance window (daemon mode)


@attrs.frozen
class _Context:
    """What a cycle knows about the sysroot when it starts."""

    base: Deployment  # the booted deployment (or the default one on a non-booted sysroot)
    base_info: CommitInfo
    pending: Deployment | None
    remote: str | None
    ref: str


def _retryable(exc: FetchError) -> bool:
    """Server down, connection reset, timeouts, 5xx: yes; 404, other statuses, too large: no."""
    return isinstance(exc, TransientFetchError) or not isinstance(
        exc, HTTPStatusError | TooLargeError)


def _short(csum: str | None) -> str:
    return csum[:12] if csum else "-"


class Updater:
    """Runs update cycles, the daemon loop and boot checks against an :class:`UpdaterBackend`."""

    def __init__(
        self,
        backend: UpdaterBackend,
        config: UpdaterConfig,
        *,
        osname: str | None = None,
        sysroot: Path = Path("/"),
        clock: Callable[[], datetime.datetime] = datetime.datetime.now,
        rng: random.Random | None = None,
        reboot: Callable[[Sequence[str]], None] = run_reboot,
        systemd_inhibit: str = "systemd-inhibit",
    ) -> None:
        self.backend = backend
        self.config = config
        self.osname = osname
        self.sysroot = sysroot
        self.clock = clock
        self.rng = rng or random.Random()
        self.reboot = reboot
        self.systemd_inhibit = systemd_inhibit
        self.stop = threading.Event()  # set it to end the daemon loop and any wait
        self.status = load_status(config.status_file)

    # --- helpers ------------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> bool:
        """Sleep; True if a stop was requested meanwhile.

        The wait is cut into slices of :data:`_WAKE_EVERY`: Python runs a signal handler only
        when the main thread runs bytecode, and a SIGTERM the kernel delivers to another thread
        (a library's worker) does not interrupt the main thread's lock wait, so one long wait
        could ignore ``systemctl stop`` for hours."""
        end = time.monotonic() + max(0.0, seconds)
        while True:
            left = end - time.monotonic()
            if self.stop.wait(min(max(left, 0.0), _WAKE_EVERY)):
                return True
            if left <= _WAKE_EVERY:
                return False

    def _save(self, **changes: Any) -> None:
        self.status = self.status.evolve(**changes)
        try:
            save_status(self.config.status_file, self.status)
        except PyOstreeError as exc:
            log.warning("cannot write status file %s: %s", self.config.status_file, exc)

    def _with_retries(self, what: str, fn: Callable[[], T]) -> T:
        attempts = self.config.retries
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except FetchError as exc:
                if not _retryable(exc) or attempt == attempts:
                    raise
                delay = min(self.config.retry_max_delay,
                            self.config.retry_delay * 2 ** (attempt - 1))
                if isinstance(exc, TransientFetchError) and exc.retry_after:
                    delay = max(delay, min(exc.retry_after, self.config.retry_max_delay))
                log.warning("%s failed (%s); retry %d of %d in %.0f s",
                            what, exc, attempt, attempts - 1, delay)
                if self._sleep(delay):
                    raise
        raise AssertionError("unreachable")

    def _hook_env(self, osname: str, old: Deployment | None, new: Deployment) -> dict[str, str]:
        return {
            "PYOSTREE_SYSROOT": str(self.sysroot),
            "PYOSTREE_OSNAME": osname,
            "PYOSTREE_OLD_DEPLOYMENT": str(old.path) if old else "",
            "PYOSTREE_NEW_DEPLOYMENT": str(new.path),
            "PYOSTREE_COMMIT": new.csum,
        }

    def _context(self) -> _Context:
        deps = self.backend.deployments()
        booted = next((d for d in deps if d.booted), None)
        base = booted
        if base is None or (self.osname is not None and base.osname != self.osname):
            candidates = [d for d in deps if self.osname is None or d.osname == self.osname]
            if not candidates:
                raise DeployError(f"no deployment of {self.osname or 'any OS'} to update")
            base = candidates[0]
            log.info("not booted into %s; updating from its default deployment %s",
                     base.osname, base.name)
        if not base.refspec:
            raise DeployError(f"deployment {base.name} has no origin refspec")
        pending = None
        if base.booted:
            pending = next((d for d in deps if d.osname == base.osname and d.index < base.index),
                           None)
        remote, ref = parse_refspec(base.refspec)
        return _Context(base, self.backend.commit_info(base.csum), pending, remote, ref)

    def _judge(self, target: CommitInfo, ctx: _Context) -> str:
        """current | pending | rolled-back | downgrade | new."""
        if target.csum == ctx.base.csum:
            return "current"
        if ctx.pending is not None and target.csum == ctx.pending.csum:
            return "pending"
        if target.csum in self.status.rolled_back:
            return "rolled-back"
        if target.timestamp < ctx.base_info.timestamp:
            return "downgrade"
        return "new"

    def _outcome(self, ctx: _Context, code: ExitCode, result: str, message: str,
                 *, pending: str | None = None, available: str | None = None) -> Outcome:
        return Outcome(code, result, message, osname=ctx.base.osname, booted=ctx.base.csum,
                       pending=pending or (ctx.pending.csum if ctx.pending else None),
                       available=available)

    # --- one cycle ----------------------------------------------------------------------------

    def run_cycle(self, opts: RunOptions = RunOptions()) -> Outcome:
        """One check/fetch/apply/reboot cycle; errors become a failed Outcome."""
        try:
            outcome = self._cycle(opts)
        except (PyOstreeError, OSError) as exc:
            code = exit_code_for(exc)
            log.error("update failed: %s", exc)
            outcome = Outcome(code, "failed", str(exc), osname=self.osname,
                              booted=self.status.current, pending=self.status.pending)
        if outcome.result not in ("stopped",):
            self._save(last_result=outcome.result, last_message=outcome.message,
                       current=outcome.booted or self.status.current,
                       pending=outcome.pending)
        return outcome

    def _cycle(self, opts: RunOptions) -> Outcome:
        ctx = self._context()
        log.info("booted %s, origin %s", ctx.base.name, ctx.base.refspec)
        self._save(current=ctx.base.csum, pending=ctx.pending.csum if ctx.pending else None)
        if opts.check_only:
            return self._check(ctx)
        target: CommitInfo | None = None
        if not opts.apply_only:
            if ctx.remote is None:
                log.info("origin %s has no remote; nothing to fetch", ctx.base.refspec)
                if opts.fetch_only:
                    return self._outcome(ctx, ExitCode.OK, "nothing-to-do",
                                         f"origin {ctx.base.refspec} has no remote")
            else:
                target = self._fetch_remote_commit(ctx)
                early = self._refuse(ctx, target)
                if early is not None:
                    return early
                if self._judge(target, ctx) == "new":
                    self._pull(ctx, target)
                elif opts.fetch_only:  # pending: deployed already
                    return self._outcome(ctx, ExitCode.OK, "nothing-to-do",
                                         f"{target.csum} is already deployed",
                                         available=target.csum)
                if opts.fetch_only:
                    return self._outcome(ctx, ExitCode.OK, "fetched",
                                         f"fetched {target.csum}", available=target.csum)
        if target is None:
            target = self.backend.local_commit(ctx.remote, ctx.ref)
            if target is None:
                return self._outcome(ctx, ExitCode.OK, "nothing-to-do",
                                     f"nothing fetched for {ctx.base.refspec}")
            early = self._refuse(ctx, target)
            if early is not None:
                return early
        new = self._deploy(ctx, target)
        self._post_apply(ctx, new)
        return self._reboot_into(ctx, new, opts)

    def _fetch_remote_commit(self, ctx: _Context) -> CommitInfo:
        assert ctx.remote is not None
        remote, ref = ctx.remote, ctx.ref
        log.info("checking %s:%s for updates", remote, ref)
        target = self._with_retries(f"checking {remote}:{ref}",
                                    lambda: self.backend.remote_commit(remote, ref))
        self._save(last_check=utc_now_iso(), available=target.csum)
        log.info("server has %s%s", target.csum,
                 f" (version {target.version})" if target.version else "")
        return target

    def _check(self, ctx: _Context) -> Outcome:
        if ctx.remote is None:
            raise UsageError(f"origin {ctx.base.refspec} has no remote to check")
        target = self._fetch_remote_commit(ctx)
        verdict = self._judge(target, ctx)
        avail = target.csum
        if verdict == "current":
            return self._outcome(ctx, ExitCode.NO_UPDATE, "no-update",
                                 "the booted commit is the newest", available=avail)
        if verdict == "pending":
            return self._outcome(ctx, ExitCode.REBOOT_REQUIRED, "reboot-required",
                                 f"{target.csum} is deployed; reboot to use it", available=avail)
        if verdict == "rolled-back":
            return self._outcome(ctx, ExitCode.NO_UPDATE, "no-update",
                                 f"{target.csum} was rolled back before; it is ignored",
                                 available=avail)
        if verdict == "downgrade":
            return self._outcome(ctx, ExitCode.DOWNGRADE_REFUSED, "downgrade-refused",
                                 f"{target.csum} is older than the booted commit",
                                 available=avail)
        return self._outcome(ctx, ExitCode.OK, "update-available",
                             f"update available: {target.csum}", available=avail)

    def _refuse(self, ctx: _Context, target: CommitInfo) -> Outcome | None:
        """An Outcome that ends the cycle for this target, or None to go on."""
        verdict = self._judge(target, ctx)
        if verdict == "current":
            log.info("already up to date (%s)", _short(target.csum))
            return self._outcome(ctx, ExitCode.OK, "nothing-to-do",
                                 f"already up to date on {target.csum}", available=target.csum)
        if verdict == "rolled-back":
            log.warning("not deploying %s: it was rolled back on %s", _short(target.csum),
                        self.status.rolled_back[target.csum])
            return self._outcome(ctx, ExitCode.OK, "skipped-rolled-back",
                                 f"{target.csum} was rolled back before; not redeploying it",
                                 available=target.csum)
        if verdict == "downgrade":
            message = (f"refusing to downgrade: {target.csum} is older than the booted "
                       f"{ctx.base.csum}")
            log.error("%s", message)
            return self._outcome(ctx, ExitCode.DOWNGRADE_REFUSED, "downgrade-refused", message,
                                 available=target.csum)
        return None

    def _pull(self, ctx: _Context, target: CommitInfo) -> None:
        assert ctx.remote is not None
        remote, ref = ctx.remote, ctx.ref
        local = self.backend.local_commit(remote, ref)
        if local is not None and local.csum == target.csum:
            log.info("%s is already fetched", _short(target.csum))
            return
        log.info("pulling %s from %s:%s", _short(target.csum), remote, ref)
        self._with_retries(f"pulling {remote}:{ref}",
                           lambda: self.backend.pull(remote, ref, target.csum))
        log.info("pulled %s", _short(target.csum))

    def _deploy(self, ctx: _Context, target: CommitInfo) -> Deployment:
        if ctx.pending is not None and ctx.pending.csum == target.csum:
            log.info("%s is already deployed, waiting for a reboot", _short(target.csum))
            new = ctx.pending
        else:
            assert ctx.base.refspec is not None
            log.info("deploying %s for %s", _short(target.csum), ctx.base.osname)
            with shutdown_inhibited("Writing a new OS deployment",
                                    address=self.config.dbus_address,
                                    systemd_inhibit=self.systemd_inhibit):
                new = self.backend.deploy(ctx.base.osname, target.csum, ctx.base.refspec)
            log.info("deployed %s", new.name)
            self._save(post_apply_done=None)
        self._save(pending=new.csum, awaiting_boot_check=new.csum)
        return new

    def _post_apply(self, ctx: _Context, new: Deployment) -> None:
        if self.status.post_apply_done == new.csum:
            return
        hooks = self.config.hooks_dir / POST_APPLY
        run_hooks(hooks, [str(ctx.base.path), str(new.path)],
                  env=self._hook_env(ctx.base.osname, ctx.base, new),
                  timeout=self.config.hook_timeout)
        self._save(post_apply_done=new.csum)

    def _reboot_into(self, ctx: _Context, new: Deployment, opts: RunOptions) -> Outcome:
        def required(why: str) -> Outcome:
            log.info("reboot required to use %s: %s", _short(new.csum), why)
            return self._outcome(ctx, ExitCode.REBOOT_REQUIRED, "reboot-required",
                                 f"{new.csum} is deployed; reboot to use it ({why})",
                                 pending=new.csum, available=new.csum)

        if opts.no_reboot:
            return required("--no-reboot")
        policy = self.config.reboot
        if policy.kind == "none":
            return required("reboot policy is none")
        now = self.clock()
        if not policy.allows(now):
            if not opts.wait_for_window:
                return required(f"outside the maintenance window {policy}")
            wait = policy.seconds_until_allowed(now)
            log.info("waiting %.0f s for the maintenance window %s", wait, policy)
            if self._sleep(wait):
                return required("stopped before the maintenance window")
        if not self._wait_and_reboot():
            return required("stopped while waiting for inhibitors")
        return self._outcome(ctx, ExitCode.OK, "updated", f"rebooting into {new.csum}",
                             pending=new.csum, available=new.csum)

    def _wait_and_reboot(self) -> bool:
        """Wait for other shutdown inhibitors, then run the reboot command; False if stopped."""
        log.info("waiting for other shutdown inhibitors")
        if not wait_for_inhibitors(address=self.config.dbus_address,
                                   poll_interval=self.config.inhibitor_poll_interval,
                                   max_wait=self.config.reboot_max_wait, sleep=self._sleep):
            return False
        self.reboot(self.config.reboot_command)
        return True

    # --- daemon -------------------------------------------------------------------------------

    def run_daemon(self, opts: RunOptions = RunOptions(), *, interval: float | None = None,
                   max_cycles: int | None = None,
                   on_outcome: Callable[[Outcome], None] | None = None) -> Outcome:
        """Cycle every ``interval`` seconds (plus splay) until a reboot is requested or stopped."""
        interval = self.config.interval if interval is None else interval
        opts = attrs.evolve(opts, wait_for_window=True)
        cycles = 0
        outcome = Outcome(ExitCode.OK, "stopped", "stopped before the first check")
        while True:
            splay = self.rng.uniform(0, self.config.splay) if self.config.splay > 0 else 0.0
            if splay:
                log.info("next check in %.0f s (splay)", splay)
            if self._sleep(splay):
                return Outcome(ExitCode.OK, "stopped", "stopped")
            outcome = self.run_cycle(opts)
            if on_outcome is not None:
                on_outcome(outcome)
            cycles += 1
            if outcome.result == "updated" or (max_cycles is not None and cycles >= max_cycles):
                return outcome
            log.info("next check in %.0f s", interval)
            if self._sleep(interval):
                return Outcome(ExitCode.OK, "stopped", "stopped")

    # --- after the reboot ---------------------------------------------------------------------

    def run_boot_check(self, opts: RunOptions = RunOptions()) -> Outcome:
        """Health-check the booted deployment; mark it good or roll back (once per commit)."""
        try:
            outcome = self._boot_check(opts)
        except (PyOstreeError, OSError) as exc:
            log.error("boot check failed: %s", exc)
            outcome = Outcome(exit_code_for(exc), "failed", str(exc), osname=self.osname,
                              booted=self.status.current)
        self._save(last_result=outcome.result, last_message=outcome.message,
                   current=outcome.booted or self.status.current)
        return outcome

    def _boot_check(self, opts: RunOptions) -> Outcome:
        deps = self.backend.deployments()
        booted = next((d for d in deps if d.booted), None)
        if booted is None:
            raise DeployError("not booted into a deployment; nothing to check")
        now = utc_now_iso()
        awaiting = self.status.awaiting_boot_check
        fell_back = False
        if awaiting is not None and awaiting != booted.csum:
            default = deps[0] if deps else None
            if default is not None and default.csum == awaiting \
                    and default.osname == booted.osname:
                # We rebooted into `awaiting`, yet the boot loader started something else:
                # the new deployment did not come up (boot-counting tries ran out).
                log.error("deployment %s did not boot; making the booted %s the default",
                          _short(awaiting), booted.name)
                self._save(rolled_back={**self.status.rolled_back, awaiting: now},
                           awaiting_boot_check=None, pending=None)
                self._set_default(booted.index)
                fell_back = True
            else:
                self._save(awaiting_boot_check=None)
        is_new = awaiting == booted.csum
        log.info("running health checks for %s%s", booted.name,
                 " (first boot after an update)" if is_new else "")
        report = run_health_checks(
            self.config.health_dir, timeout=self.config.hook_timeout,
            env=self._hook_env(booted.osname, None, booted))

        def result(code: ExitCode, word: str, message: str) -> Outcome:
            return Outcome(code, word, message, osname=booted.osname, booted=booted.csum)

        if report.healthy:
            self.backend.boot_complete()
            log.info("boot of %s marked good", booted.name)
            self._save(good=booted.csum, awaiting_boot_check=None, current=booted.csum)
            if is_new:
                previous = self._previous(deps, booted)
                run_hooks(self.config.hooks_dir / POST_UPDATE_CHECK,
                          [str(previous.path) if previous else "", str(booted.path)],
                          env=self._hook_env(booted.osname, previous, booted),
                          timeout=self.config.hook_timeout)
            if fell_back:
                return result(ExitCode.ROLLED_BACK, "rolled-back",
                              f"{awaiting} did not boot; {booted.csum} is the default again")
            return result(ExitCode.OK, "healthy", f"{booted.csum} is healthy")

        failed = ", ".join(r.name for r in report.failed_required)
        if not is_new:
            message = f"required health checks failed ({failed}); no rollback: " + (
                f"the system already fell back to {booted.csum}" if fell_back else
                f"{booted.csum} is not a new deployment")
            log.error("%s", message)
            return result(ExitCode.HEALTH_FAILED, "unhealthy", message)
        previous = self._previous(deps, booted)
        if previous is None:
            message = f"required health checks failed ({failed}); nothing to roll back to"
            log.error("%s", message)
            self._save(awaiting_boot_check=None)
            return result(ExitCode.HEALTH_FAILED, "unhealthy", message)
        # Record first: a crash from here on must not lead to a second rollback.
        self._save(rolled_back={**self.status.rolled_back, booted.csum: now},
                   awaiting_boot_check=None, pending=previous.csum)
        log.error("required health checks failed (%s); rolling back to %s", failed,
                  previous.name)
        self._set_default(previous.index)
        message = f"{booted.csum} failed its health checks; {previous.csum} is the default"
        if opts.no_reboot or self.config.reboot.kind == "none":
            return result(ExitCode.ROLLED_BACK, "rolled-back", message + "; reboot to use it")
        if self._wait_and_reboot():
            message += "; rebooting"
        return result(ExitCode.ROLLED_BACK, "rolled-back", message)

    def _set_default(self, index: int) -> None:
        """Rewrite the boot order under a shutdown inhibitor, like a deployment."""
        with shutdown_inhibited("Changing the default OS deployment",
                                address=self.config.dbus_address,
                                systemd_inhibit=self.systemd_inhibit):
            self.backend.set_default(index)

    def _previous(self, deps: list[Deployment], booted: Deployment) -> Deployment | None:
        """The deployment to fall back to: the last good one, else the next older one."""
        candidates = [d for d in deps if d.osname == booted.osname and d.csum != booted.csum
                      and d.csum not in self.status.rolled_back]
        for d in candidates:
            if d.csum == self.status.good:
                return d
        older = [d for d in candidates if d.index > booted.index]
        return older[0] if older else (candidates[0] if candidates else None)
