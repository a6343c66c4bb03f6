"""Static deltas in pulls (filled in with the delta executor)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .formats.objects import Commit
    from .pull import PullResult, _Puller


async def try_delta(p: _Puller, ref: str, csum: str, commit: Commit, result: PullResult) -> bool:
    """Apply a static delta for ``csum`` when one is offered; False means: walk objects."""
    return False
