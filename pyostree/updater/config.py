"""``updater.conf``: the updater's keyfile configuration.

::

    [updater]
    # seconds between checks in daemon mode, plus a random delay of up to `splay` seconds
    interval=300
    splay=60
    # none | apply | HH:MM-HH:MM (a maintenance window; may wrap midnight)
    reboot=apply
    reboot-command=systemctl reboot
    hooks-dir=/etc/pyostree/hooks          # post-apply.d/, post-update-check.d/
    health-dir=/etc/pyostree/health        # required.d/, wanted.d/
    status-file=/var/lib/pyostree/update-status.json
    retries=5                              # fetch attempts when the server is down
    retry-delay=5                          # first backoff delay, doubled each time...
    retry-max-delay=300                    # ...up to this
    hook-timeout=600
    inhibitor-poll-interval=5              # while waiting for other shutdown inhibitors
    reboot-max-wait=0                      # 0: wait for inhibitors forever
    dbus-address=                          # logind's bus; empty: the system bus

Absolute paths are taken relative to the sysroot prefix (``--sysroot``). Unknown keys are
ignored with a warning, so an old updater still runs with a newer file; bad values are errors.
"""

from __future__ import annotations

import configparser
import datetime
import logging
import shlex
from pathlib import Path, PurePosixPath

import attrs

from ..errors import UsageError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "RebootPolicy",
    "UpdaterConfig",
    "load_config",
    "parse_config",
    "parse_reboot_policy",
]

log = logging.getLogger("pyostree.updater")

DEFAULT_CONFIG_PATH = PurePosixPath("/etc/pyostree/updater.conf")
GROUP = "updater"


@attrs.frozen
class RebootPolicy:
    """When to reboot into a new deployment: never, right away, or inside a daily window."""

    kind: str  # "none" | "apply" | "window"
    start: datetime.time | None = None
    end: datetime.time | None = None

    def __str__(self) -> str:
        if self.kind == "window" and self.start is not None and self.end is not None:
            return f"{self.start:%H:%M}-{self.end:%H:%M}"
        return self.kind

    def allows(self, now: datetime.datetime) -> bool:
        """Whether a reboot may happen at ``now`` (local wall-clock time)."""
        if self.kind == "none":
            return False
        if self.kind == "apply" or self.start is None or self.end is None:
            return True
        t = now.time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end  # wraps midnight

    def seconds_until_allowed(self, now: datetime.datetime) -> float:
        """Seconds from ``now`` to the next moment a reboot is allowed (0 if allowed now)."""
        if self.allows(now):
            return 0.0
        if self.kind != "window" or self.start is None:
            raise ValueError(f"reboot policy {self} never allows a reboot")
        opening = now.replace(hour=self.start.hour, minute=self.start.minute, second=0,
                              microsecond=0)
        if opening <= now:
            opening += datetime.timedelta(days=1)
        return (opening - now).total_seconds()


def parse_reboot_policy(text: str) -> RebootPolicy:
    value = text.strip()
    if value in ("none", "apply"):
        return RebootPolicy(value)
    start_s, sep, end_s = value.partition("-")
    if sep:
        try:
            start = datetime.datetime.strptime(start_s.strip(), "%H:%M").time()
            end = datetime.datetime.strptime(end_s.strip(), "%H:%M").time()
        except ValueError:
            pass
        else:
            if start == end:
                raise UsageError(f"reboot window {value!r} is empty")
            return RebootPolicy("window", start, end)
    raise UsageError(f"reboot policy must be none, apply or HH:MM-HH:MM, not {value!r}")


@attrs.frozen
class UpdaterConfig:
    interval: float = 300.0
    splay: float = 60.0
    reboot: RebootPolicy = RebootPolicy("apply")
    reboot_command: tuple[str, ...] = ("systemctl", "reboot")
    hooks_dir: Path = Path("/etc/pyostree/hooks")
    health_dir: Path = Path("/etc/pyostree/health")
    status_file: Path = Path("/var/lib/pyostree/update-status.json")
    retries: int = 5
    retry_delay: float = 5.0
    retry_max_delay: float = 300.0
    hook_timeout: float = 600.0
    inhibitor_poll_interval: float = 5.0
    reboot_max_wait: float = 0.0
    dbus_address: str | None = None

    @property
    def lock_file(self) -> Path:
        """The single-instance lock, next to the status file."""
        return self.status_file.with_name("update.lock")

    @classmethod
    def defaults(cls, sysroot: Path = Path("/")) -> UpdaterConfig:
        return parse_config("", sysroot=sysroot)


def _under(sysroot: Path, value: str, key: str) -> Path:
    path = PurePosixPath(value.strip())
    if not path.is_absolute():
        raise UsageError(f"updater.conf: {key} must be an absolute path, not {value!r}")
    return sysroot / path.relative_to("/")


def _number(value: str, key: str, *, minimum: float = 0.0) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"updater.conf: {key} must be a number, not {value!r}") from None
    if not number >= minimum or number == float("inf"):
        raise UsageError(f"updater.conf: {key} must be a finite number >= {minimum:g}")
    return number


_PATH_KEYS = {"hooks-dir": "hooks_dir", "health-dir": "health_dir", "status-file": "status_file"}
_NUMBER_KEYS = {
    "interval": ("interval", 1.0),
    "splay": ("splay", 0.0),
    "retry-delay": ("retry_delay", 0.0),
    "retry-max-delay": ("retry_max_delay", 0.0),
    "hook-timeout": ("hook_timeout", 1.0),
    "inhibitor-poll-interval": ("inhibitor_poll_interval", 0.01),
    "reboot-max-wait": ("reboot_max_wait", 0.0),
}


def parse_config(text: str, *, sysroot: Path = Path("/"), source: str = "updater.conf"
                 ) -> UpdaterConfig:
    """Parse the keyfile text; paths are placed under ``sysroot``."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",),
                                       comment_prefixes=("#",), inline_comment_prefixes=None,
                                       strict=True, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        first_line = str(exc).splitlines()[0]
        raise UsageError(f"{source}: {first_line}") from None
    values: dict[str, object] = {
        "hooks_dir": _under(sysroot, "/etc/pyostree/hooks", "hooks-dir"),
        "health_dir": _under(sysroot, "/etc/pyostree/health", "health-dir"),
        "status_file": _under(sysroot, "/var/lib/pyostree/update-status.json", "status-file"),
    }
    for group in parser.sections():
        if group != GROUP:
            log.warning("%s: ignoring unknown group [%s]", source, group)
    if parser.has_section(GROUP):
        for key, raw in parser.items(GROUP):
            value = raw.strip()
            if key in _PATH_KEYS:
                values[_PATH_KEYS[key]] = _under(sysroot, value, key)
            elif key in _NUMBER_KEYS:
                attr, minimum = _NUMBER_KEYS[key]
                values[attr] = _number(value, key, minimum=minimum)
            elif key == "retries":
                retries = _number(value, key, minimum=1.0)
                if retries != int(retries):
                    raise UsageError(f"{source}: retries must be a whole number")
                values["retries"] = int(retries)
            elif key == "reboot":
                values["reboot"] = parse_reboot_policy(value)
            elif key == "reboot-command":
                try:
                    command = tuple(shlex.split(value))
                except ValueError as exc:
                    raise UsageError(f"{source}: reboot-command: {exc}") from None
                if not command:
                    raise UsageError(f"{source}: reboot-command is empty")
                values["reboot_command"] = command
            elif key == "dbus-address":
                values["dbus_address"] = value or None
            else:
                log.warning("%s: ignoring unknown key %r", source, key)
    return UpdaterConfig(**values)  # type: ignore[arg-type]


def load_config(path: Path | None = None, *, sysroot: Path = Path("/")) -> UpdaterConfig:
    """Read ``updater.conf`` (default: ``SYSROOT/etc/pyostree/updater.conf``); defaults if absent.

    An explicit ``path`` is used as given; it must exist.
    """
    explicit = path is not None
    if path is None:
        path = sysroot / DEFAULT_CONFIG_PATH.relative_to("/")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"configuration file {path} does not exist") from None
        return parse_config("", sysroot=sysroot)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read configuration file {path}: {exc}") from None
    return parse_config(text, sysroot=sysroot, source=str(path))
