"""``pyostree update``: argument parsing, the single-instance lock, logging and signals.

The CLI calls :func:`add_update_arguments` on its ``update`` sub-parser and
:func:`run_update` with the parsed arguments; ``bin/pyostree-update`` can call :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

import attrs

from ..errors import DeployError, LockError, PyOstreeError
from .backend import UpdaterBackend, open_backend
from .config import UpdaterConfig, load_config
from .exitcodes import ExitCode, exit_code_for
from .service import Outcome, RunOptions, Updater

__all__ = ["add_update_arguments", "main", "run_update", "single_instance"]

log = logging.getLogger("pyostree.updater")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("the interval must be a positive number of seconds")
    return value


def add_update_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``update`` options to ``parser`` (``--sysroot``/``--os``/``--json`` only if the
    parser does not have them already)."""
    existing = set(parser._option_string_actions)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="only report whether an update is available (exit 77 if not)")
    mode.add_argument("--fetch-only", action="store_true", help="download, do not deploy")
    mode.add_argument("--apply-only", action="store_true",
                      help="deploy what was already downloaded, without network access")
    mode.add_argument("--boot-check", action="store_true",
                      help="post-boot: run health checks, mark the boot good or roll back")
    parser.add_argument("--one-shot", action="store_true",
                        help="run one cycle and exit (default: keep running as a daemon)")
    parser.add_argument("--check-interval", type=_positive_seconds, metavar="SEC",
                        help="seconds between checks in daemon mode (default 300)")
    parser.add_argument("--no-reboot", action="store_true",
                        help="never reboot; exit 10 when a reboot is needed")
    parser.add_argument("--config", type=Path, metavar="PATH",
                        help="configuration file (default SYSROOT/etc/pyostree/updater.conf)")
    if "--json" not in existing:
        parser.add_argument("--json", action="store_true",
                            help="print the outcome as JSON on stdout")
    if "--sysroot" not in existing:
        parser.add_argument("--sysroot", type=Path, default=Path("/"), metavar="PATH",
                            help="the physical root (default /)")
    if "--os" not in existing:
        parser.add_argument("--os", metavar="OSNAME", help="the stateroot to update")


def _setup_logging() -> None:
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pyostree-update: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


@contextlib.contextmanager
def single_instance(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_file``; LockError if another instance holds it."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise LockError(f"another pyostree update is running (pid {holder or '?'})",
                            path=str(lock_file)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received signal %d; stopping", signum)
        # Event.set() takes the event's (non-reentrant) lock, which the interrupted main thread
        # may be holding inside Event.wait(): setting it here could deadlock the daemon, so a
        # short-lived thread sets it once the main thread lets go.
        threading.Thread(target=stop.set, name="pyostree-stop", daemon=True).start()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _emit(args: argparse.Namespace, outcome: Outcome) -> None:
    if getattr(args, "json", False):
        print(json.dumps(outcome.to_json(), sort_keys=True), flush=True)


def run_update(args: argparse.Namespace, *, backend: UpdaterBackend | None = None,
               updater_factory: type[Updater] = Updater) -> int:
    """Run ``pyostree update`` with parsed ``args``; return the exit code."""
    _setup_logging()
    sysroot = Path(getattr(args, "sysroot", None) or "/")
    osname = getattr(args, "os", None)
    try:
        config: UpdaterConfig = load_config(args.config, sysroot=sysroot)
        if args.check_interval is not None:
            config = attrs.evolve(config, interval=args.check_interval)
        if backend is None and not (sysroot / "ostree" / "deploy").is_dir():
            # checked before the lock and status files are created under it
            raise DeployError(f"{sysroot} is not an OSTree sysroot (no ostree/deploy)")
        with single_instance(config.lock_file):
            if backend is None:
                backend = open_backend(sysroot)
            updater = updater_factory(backend, config, osname=osname, sysroot=sysroot)
            opts = RunOptions(check_only=args.check, fetch_only=args.fetch_only,
                              apply_only=args.apply_only, no_reboot=args.no_reboot)
            with _stop_on_signals(updater.stop):
                if args.boot_check:
                    outcome = updater.run_boot_check(opts)
                elif args.one_shot or args.check:
                    outcome = updater.run_cycle(opts)
                else:
                    log.info("running as a daemon, checking every %.0f s", config.interval)
                    outcome = updater.run_daemon(opts, on_outcome=lambda o: _emit(args, o))
                    if outcome.result != "stopped":  # a cycle's outcome, already printed
                        return int(outcome.code)
    except (PyOstreeError, OSError) as exc:
        code = exit_code_for(exc)
        log.error("error: %s", exc)
        outcome = Outcome(code, "failed", str(exc), osname=osname)
    _emit(args, outcome)
    return int(outcome.code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyostree-update",
        description="Check for, fetch, deploy and reboot into OS updates.",
        epilog="Exit codes: 0 ok, 77 no update (--check), 10 reboot required, 3 network, "
               "4 verification, 5 no space, 6 busy, 7 hook failed, 8 rolled back, "
               "9 health check failed, 11 downgrade refused, 2 usage, 1 other.")
    add_update_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``pyostree-update``."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0) if isinstance(exc.code, int) else ExitCode.USAGE
    return run_update(args)
