"""``update`` (the updater service) and ``demo``."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    from ..updater.command import add_update_arguments

    p = sub.add_parser(
        "update", help="Check for, fetch, deploy and reboot into OS updates (the updater)",
        description="The updater service: --one-shot for one check/pull/deploy/reboot cycle, "
        "otherwise a daemon checking every --check-interval seconds. Exit codes: 0 ok, "
        "77 no update (--check), 10 reboot required, 3 network, 4 verification, 5 no space, "
        "6 busy, 7 hook failed, 8 rolled back, 9 health check failed, 11 downgrade refused.")
    add_update_arguments(p)
    p.add_argument("--install-units", metavar="DIR", nargs="?", const="/etc/systemd/system",
                   help="copy the systemd units into DIR (default /etc/systemd/system) and exit")
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("demo", help="Run the end-to-end demo on a built-in sample OS",
                       description="Build, sign, serve, pull, deploy and update a sample OS, "
                       "using only pyostree, in a temporary directory.")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--workdir", help="create the temporary directory here")
    p.set_defaults(func=cmd_demo)


def cmd_update(args: argparse.Namespace) -> int:
    if args.install_units:
        from ..updater.units import install_units

        for path in install_units(args.install_units):
            print(f"installed {path}")
        return 0
    from ..updater.command import run_update

    return run_update(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(args.workdir, keep=args.keep)
