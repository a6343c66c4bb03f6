"""The shipped systemd units pass `systemd-analyze verify`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "pyostree" / "data" / "systemd"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
NAMES = ["pyostree-update.service", "pyostree-update.timer",
         "pyostree-update-oneshot.service", "pyostree-update-check.service"]


def test_units_are_shipped() -> None:
    assert sorted(p.name for p in UNITS.iterdir()) == sorted(NAMES)


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """A root tree for `systemd-analyze verify --root`: systemd's own units, our units, and a
    stand-in /usr/bin/pyostree (verify checks that ExecStart= is executable)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    if not (SYSTEM_UNITS / "sysinit.target").exists():
        pytest.skip("systemd's unit files are not installed")
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    local = root / "etc/systemd/system"
    local.mkdir(parents=True)
    for name in NAMES:
        shutil.copy(UNITS / name, local / name)
    stub = root / "usr/bin/pyostree"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    return root


def _verify(root: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", name],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", NAMES)
def test_unit_verifies(unit_root: Path, name: str) -> None:
    result = _verify(unit_root, name)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_verify_catches_mistakes(unit_root: Path) -> None:
    """Guard against a verify that passes anything (e.g. a unit it did not find)."""
    unit = unit_root / "etc/systemd/system/pyostree-update.service"
    unit.write_text(unit.read_text().replace("ExecStart=/usr/bin/pyostree",
                                             "ExecStart=/usr/bin/pyostree-missing"))
    result = _verify(unit_root, "pyostree-update.service")
    assert result.returncode != 0 and "pyostree-missing" in result.stderr


def test_install_units(tmp_path: Path) -> None:
    from pyostree.updater.units import UNIT_NAMES, install_units, installed_program

    paths = install_units(tmp_path / "units")
    assert [p.name for p in paths] == list(UNIT_NAMES)
    program = installed_program()
    assert os.path.isabs(program)
    for path in paths:
        shipped = (UNITS / path.name).read_text()
        # ExecStart= names wherever this pyostree is installed.
        assert path.read_text() == shipped.replace("/usr/bin/pyostree", program)
        assert path.stat().st_mode & 0o777 == 0o644
