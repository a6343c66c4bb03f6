"""The systemd units shipped with pyostree, and installing them."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path


def unit_files() -> list[tuple[str, bytes]]:
    base = resources.files("pyostree") / "data" / "systemd"
    return sorted((p.name, p.read_bytes()) for p in base.iterdir()
                  if p.name.endswith((".service", ".timer")))


def install_units(directory: str | Path) -> list[Path]:
    """Copy every unit into ``directory``; returns the paths written."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in unit_files():
        tmp = target / f".{name}.tmp"
        tmp.write_bytes(data)
        shutil.move(tmp, target / name)
        written.append(target / name)
    return written
