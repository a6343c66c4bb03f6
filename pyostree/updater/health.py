"""Post-boot health checks: ``required.d/`` must all pass, ``wanted.d/`` may fail."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import attrs

from .hooks import HookResult, list_executables, run_executable

__all__ = ["REQUIRED", "WANTED", "HealthReport", "run_health_checks"]

log = logging.getLogger("pyostree.updater")

REQUIRED = "required.d"
WANTED = "wanted.d"


@attrs.frozen
class HealthReport:
    required: tuple[HookResult, ...] = ()
    wanted: tuple[HookResult, ...] = ()

    @property
    def healthy(self) -> bool:
        return all(r.ok for r in self.required)

    @property
    def failed_required(self) -> tuple[HookResult, ...]:
        return tuple(r for r in self.required if not r.ok)


def run_health_checks(health_dir: Path, *, env: Mapping[str, str] | None = None,
                      timeout: float | None = None) -> HealthReport:
    """Run every check (all of them, even after a failure) and report."""
    results: dict[str, list[HookResult]] = {REQUIRED: [], WANTED: []}
    for kind in (REQUIRED, WANTED):
        for path in list_executables(health_dir / kind):
            result = run_executable(path, [], env=env, timeout=timeout)
            results[kind].append(result)
            if result.ok:
                log.info("health check %s passed", result.name)
            elif kind == REQUIRED:
                log.error("health check %s failed (%s)", result.name, result.describe())
            else:
                log.warning("health check %s failed (%s); it is only wanted",
                            result.name, result.describe())
    return HealthReport(tuple(results[REQUIRED]), tuple(results[WANTED]))
