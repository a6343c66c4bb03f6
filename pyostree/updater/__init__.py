"""The automatic updater: ``pyostree update`` (one-shot, daemon, check, post-boot health check).

The CLI wires :func:`add_update_arguments` and :func:`run_update`; :func:`main` serves
``bin/pyostree-update``. Exit codes are in :mod:`pyostree.updater.exitcodes`.
"""

from __future__ import annotations

from .command import add_update_arguments, main, run_update
from .exitcodes import ExitCode

__all__ = ["ExitCode", "add_update_arguments", "main", "run_update"]
