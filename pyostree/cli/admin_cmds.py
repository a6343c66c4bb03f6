"""Commands (filled in as their layers land)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """No commands yet."""
