"""pyostree: a pure-Python OSTree client.

The main entry points, importable from the package::

    from pyostree import Repo, RepoMode, Sysroot, pull, PullOptions

See docs/api.md for examples. Modules: ``repo``/``transaction``/``commit``/``checkout``/
``maintenance`` (local repositories), ``pull``/``deltas`` (network and static deltas),
``signing``/``verify`` (trust), ``sysroot``/``deploy``/``upgrade`` (deployments),
``updater`` (the update service), ``formats`` (pure parsers), ``errors``.
"""

from __future__ import annotations

from typing import Any

from .errors import PyOstreeError
from .repo import Repo, RepoMode

__version__ = "0.1.0"
__all__ = ["PullOptions", "PyOstreeError", "Repo", "RepoMode", "Sysroot", "__version__", "pull",
           "pull_local"]

_LAZY = {
    "Sysroot": ("sysroot", "Sysroot"),
    "pull": ("pull", "pull"),
    "pull_local": ("pull", "pull_local"),
    "PullOptions": ("pull", "PullOptions"),
}


def __getattr__(name: str) -> Any:
    """Heavier parts (network, deployments) load on first use."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'pyostree' has no attribute {name!r}")
