"""Progress display: a tqdm bar on a terminal, nothing (or plain log lines) otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any


class PullProgress:
    """Callable taking PullStats; shows objects, bytes and rate on a TTY."""

    def __init__(self, enabled: bool | None = None, desc: str = "Receiving objects") -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None
        self._desc = desc
        self._last = 0.0

    def __call__(self, stats: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="obj", desc=self._desc, file=sys.stderr,
                             leave=False, dynamic_ncols=True)
        bar = self._bar
        bar.total = max(stats.requested, 1)
        bar.n = stats.fetched + stats.fetched_meta
        parts = f", {stats.delta_parts} delta parts" if stats.delta_parts else ""
        bar.set_postfix_str(f"{stats.bytes / 1048576:.1f} MiB{parts}", refresh=False)
        bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def human_size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
