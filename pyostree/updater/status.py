"""The status file (``/var/lib/pyostree/update-status.json``), written atomically.

It is what monitoring reads (last check, last result, current and pending commit), and what
keeps the health check from looping: the commits that were rolled back are remembered here.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import Any

import attrs

from ..fileio import atomic_write, os_error

__all__ = ["UpdateStatus", "load_status", "save_status", "utc_now_iso"]

log = logging.getLogger("pyostree.updater")

STATUS_VERSION = 1
MAX_STATUS_SIZE = 1024 * 1024


def utc_now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


@attrs.frozen
class UpdateStatus:
    last_check: str | None = None  # ISO 8601 time of the last contact with the server
    last_result: str | None = None  # the ``result`` word of the last run (see service.Outcome)
    last_message: str | None = None
    current: str | None = None  # booted commit
    pending: str | None = None  # commit of a deployment waiting for a reboot
    available: str | None = None  # newest commit seen on the server
    awaiting_boot_check: str | None = None  # we rebooted into this commit; not yet checked
    post_apply_done: str | None = None  # post-apply hooks succeeded for this commit
    good: str | None = None  # last commit that passed its health checks
    rolled_back: dict[str, str] = attrs.field(factory=dict)  # commit -> ISO time of rollback

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["version"] = STATUS_VERSION
        return data

    @classmethod
    def from_json(cls, data: object) -> UpdateStatus:
        """Build from parsed JSON, dropping fields of the wrong type (the file is not trusted)."""
        if not isinstance(data, dict):
            raise ValueError("status file is not a JSON object")
        kwargs: dict[str, Any] = {}
        for field in attrs.fields(cls):
            value = data.get(field.name)
            if field.name == "rolled_back":
                if isinstance(value, dict):
                    kwargs[field.name] = {str(k): str(v) for k, v in value.items()}
            elif isinstance(value, str):
                kwargs[field.name] = value
        return cls(**kwargs)

    def evolve(self, **changes: Any) -> UpdateStatus:
        return attrs.evolve(self, **changes)


def load_status(path: Path) -> UpdateStatus:
    """Read the status file; a missing or unreadable one gives a fresh status (with a warning)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_STATUS_SIZE + 1)
    except FileNotFoundError:
        return UpdateStatus()
    except OSError as exc:
        log.warning("cannot read status file %s: %s; starting afresh", path, exc)
        return UpdateStatus()
    try:
        if len(raw) > MAX_STATUS_SIZE:
            raise ValueError("status file too large")
        return UpdateStatus.from_json(json.loads(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("ignoring corrupt status file %s: %s", path, exc)
        return UpdateStatus()


def save_status(path: Path, status: UpdateStatus) -> None:
    """Write the status file atomically (temp file, fsync, rename, fsync the directory)."""
    data = (json.dumps(status.to_json(), indent=2, sort_keys=True) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, f"creating {path.parent}") from exc
    atomic_write(path, data, mode=0o644)
