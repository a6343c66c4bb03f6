"""Progress display on standard error: a tqdm line on a terminal, nothing otherwise.

Every display is a callable for a library ``progress=`` hook plus ``close()``; use it as a context
manager (or close it in ``finally``) so the line is cleared before an error message is printed.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, Self

_MiB = 1048576
_DELAY = 0.3  # seconds before a bar appears: quick operations print nothing


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class _Bar:
    """A lazily created tqdm bar that is cleared (``leave=False``) when closed."""

    def __init__(self, enabled: bool | None, desc: str, unit: str) -> None:
        self.enabled = _stderr_is_tty() if enabled is None else enabled
        self._bar: Any = None
        self._desc = desc
        self._unit = unit
        self._started = time.monotonic()

    def _get(self) -> Any:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=None, unit=self._unit, desc=self._desc, file=sys.stderr,
                             leave=False, dynamic_ncols=True, delay=_DELAY)
        return self._bar

    def close(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PullProgress(_Bar):
    """Callable taking PullStats; shows objects, MiB, transfer rate and delta parts on a TTY."""

    def __init__(self, enabled: bool | None = None, desc: str = "Receiving objects", *,
                 interval: float | None = None) -> None:
        super().__init__(enabled, desc, "obj")
        self._last = 0.0
        self._interval = 0.1 if interval is None else interval  # seconds between redraws

    def __call__(self, stats: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        bar = self._get()
        done = stats.fetched + stats.fetched_meta
        bar.total = max(stats.requested, done, 1)
        rate = stats.bytes / max(now - self._started, 1e-3) / _MiB
        parts = f", {stats.delta_parts} delta parts" if stats.delta_parts else ""
        bar.set_postfix_str(f"{stats.bytes / _MiB:.1f} MiB, {rate:.1f} MiB/s{parts}",
                            refresh=False)
        bar.update(done - bar.n)


class CheckoutProgress(_Bar):
    """Callable taking the number of files written so far (``checkout(progress=)``)."""

    def __init__(self, enabled: bool | None = None, desc: str = "Checking out") -> None:
        super().__init__(enabled, desc, " files")

    def __call__(self, files: int) -> None:
        if not self.enabled:
            return
        bar = self._get()
        bar.update(files - bar.n)


def step(message: str, enabled: bool | None = None) -> None:
    """A one-line step message (``Deploying …``) on standard error, only on a terminal."""
    if _stderr_is_tty() if enabled is None else enabled:
        print(message, file=sys.stderr, flush=True)


def human_size(n: float) -> str:
    """A size as GLib's ``g_format_size`` prints it (what ostree prints): ``118 bytes``,
    ``1 byte``, else one decimal and a no-break space, ``1.9\u00a0MB`` (powers of 1000)."""
    if n < 1000:
        return f"{n:.0f} byte" if n == 1 else f"{n:.0f} bytes"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        n /= 1000
        if n < 1000 or unit == "PB":
            break
    return f"{n:.1f}\u00a0{unit}"
