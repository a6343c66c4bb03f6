"""The ``pyostree`` command line: ostree's commands and options, as a thin layer over the library.

Every command is ``run(args) -> int``; library errors become one ``error: ...`` line on stderr and
a non-zero exit code, never a traceback (set ``PYOSTREE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from ..errors import PyOstreeError
from .common import CommandError

_MODULES = ("repo_cmds", "tree_cmds", "remote_cmds", "delta_cmds", "sign_cmds", "admin_cmds",
            "tool_cmds", "serve_cmds")
# The module that defines each command: running one command imports only its module (and what
# it needs). Importing all of them costs ~0.2 s and ~15 MB of RSS per run, which matters for an
# updater that runs often on a small device. tests/test_cli_core.py checks the table.
COMMAND_MODULES = {
    **dict.fromkeys(("cat", "checkout", "checksum", "commit", "config", "fsck", "init", "log",
                     "ls", "prune", "refs", "reset", "rev-parse", "show"), "repo_cmds"),
    **dict.fromkeys(("diff", "export"), "tree_cmds"),
    **dict.fromkeys(("pull", "pull-local", "remote"), "remote_cmds"),
    "static-delta": "delta_cmds",
    **dict.fromkeys(("gpg-sign", "sign", "summary"), "sign_cmds"),
    **dict.fromkeys(("admin", "deploy"), "admin_cmds"),
    **dict.fromkeys(("completion", "demo", "update"), "tool_cmds"),
    "trivial-httpd": "serve_cmds",
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one ``error: ...`` line (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        _report(f"{self.prog}: {message}")
        self.exit(2)


def _load(names: Sequence[str]) -> list[ModuleType]:
    return [importlib.import_module(f".{name}", __name__) for name in names]


def _modules_for(argv: Sequence[str]) -> list[str]:
    """The command modules a command line needs: the one defining its command, or all of them
    (no command, an unknown one, or help)."""
    args = iter(argv)
    for arg in args:
        if arg == "--repo":
            next(args, None)
        elif arg in ("-h", "--help"):
            break
        elif not arg.startswith("-"):
            module = COMMAND_MODULES.get(arg)
            return [module] if module else list(_MODULES)
    return list(_MODULES)


def build_parser(modules: Sequence[str] = _MODULES) -> argparse.ArgumentParser:
    """The argument parser with the commands of ``modules`` (default: all)."""
    parser = _Parser(
        prog="pyostree",
        description="A pure-Python OSTree client: repositories, pull, static deltas, "
        "deployments and an updater. Commands and options follow the ostree command line.",
    )
    parser.add_argument("--repo", metavar="PATH", help="path to the OSTree repository "
                        "(default: the current directory if it is a repo, $OSTREE_REPO, "
                        "or /ostree/repo)")
    parser.add_argument("--version", action="version", version="pyostree 0.1.0",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _load(modules):
        module.register(sub)
    return parser


def _report(message: str) -> None:
    line = " ".join(str(message).split()) or "unknown error"
    print(f"error: {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    from ..fileio import limit_malloc_arenas

    limit_malloc_arenas()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_modules_for(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    debug = bool(os.environ.get("PYOSTREE_DEBUG"))
    try:
        code: int = args.func(args)
        return code
    except CommandError as exc:
        _report(str(exc))
        return exc.exit_code
    except PyOstreeError as exc:
        if debug:
            raise
        _report(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _report("interrupted")
        return 130
    except BrokenPipeError:
        return 141
    except OSError as exc:
        if debug:
            raise
        if exc.errno == errno.ENOSPC:
            _report(f"no space left on device: {exc.filename or ''}")
            return 5
        _report(f"{exc.strerror or exc}: {exc.filename or ''}")
        return 1
    except Exception as exc:  # last resort: no tracebacks for users
        if debug:
            raise
        _report(f"internal error: {type(exc).__name__}: {exc}")
        return 70


def run() -> None:
    sys.exit(main())


def update_main(argv: Sequence[str] | None = None) -> int:
    """``pyostree-update``: the same as ``pyostree update``."""
    return main(["update", *(sys.argv[1:] if argv is None else argv)])
