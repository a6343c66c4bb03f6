"""The systemd units shipped as package data (``pyostree/data/systemd``)."""

from __future__ import annotations

import importlib.resources
import os
import shutil
from pathlib import Path

from ..fileio import atomic_write

__all__ = ["UNIT_NAMES", "install_units", "unit_files", "unit_text"]

UNIT_NAMES = (
    "pyostree-update.service",
    "pyostree-update.timer",
    "pyostree-update-oneshot.service",
    "pyostree-update-check.service",
)


def unit_text(name: str) -> str:
    """The text of one shipped unit."""
    if name not in UNIT_NAMES:
        raise ValueError(f"unknown unit {name!r}")
    return (importlib.resources.files("pyostree") / "data" / "systemd" / name).read_text()


def unit_files() -> list[tuple[str, bytes]]:
    """Every shipped unit as (name, bytes), sorted by name."""
    return sorted((name, unit_text(name).encode()) for name in UNIT_NAMES)


def installed_program() -> str:
    """Where the ``pyostree`` command is installed (units name it in ``ExecStart=``)."""
    found = shutil.which("pyostree")
    return os.path.abspath(found) if found else "/usr/bin/pyostree"


def install_units(directory: str | os.PathLike[str]) -> list[Path]:
    """Write every unit into ``directory`` (atomically, mode 0644); return the paths.

    Enabling them stays with the administrator: ``systemctl daemon-reload`` then
    ``systemctl enable --now pyostree-update.timer`` (or ``pyostree-update.service``) and
    ``systemctl enable pyostree-update-check.service``.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    program = installed_program()
    written = []
    for name in UNIT_NAMES:
        path = target / name
        text = unit_text(name).replace("/usr/bin/pyostree", program)
        atomic_write(path, text.encode(), mode=0o644)
        written.append(path)
    return written
