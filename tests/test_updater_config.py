"""updater.conf parsing, the reboot policy and the maintenance window."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest

from pyostree.errors import UsageError
from pyostree.updater.config import (
    RebootPolicy,
    UpdaterConfig,
    load_config,
    parse_config,
    parse_reboot_policy,
)


def test_defaults_without_a_file(tmp_path: Path) -> None:
    config = load_config(sysroot=tmp_path)
    assert config.interval == 300 and config.splay == 60
    assert config.reboot == RebootPolicy("apply")
    assert config.reboot_command == ("systemctl", "reboot")
    assert config.status_file == tmp_path / "var/lib/pyostree/update-status.json"
    assert config.hooks_dir == tmp_path / "etc/pyostree/hooks"
    assert config.health_dir == tmp_path / "etc/pyostree/health"
    assert config.lock_file == tmp_path / "var/lib/pyostree/update.lock"
    assert config.dbus_address is None
    assert UpdaterConfig.defaults(tmp_path) == config


def test_full_file_under_a_sysroot_prefix(tmp_path: Path) -> None:
    conf = tmp_path / "etc/pyostree/updater.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        "# comment\n"
        "[updater]\n"
        "interval=60\n"
        "splay=0\n"
        "reboot=02:30-04:00\n"
        "reboot-command=/usr/local/bin/safe-reboot --now 'with space'\n"
        "hooks-dir=/srv/hooks\n"
        "health-dir=/srv/health\n"
        "status-file=/run/pyostree/status.json\n"
        "retries=3\n"
        "retry-delay=0.5\n"
        "retry-max-delay=10\n"
        "hook-timeout=30\n"
        "inhibitor-poll-interval=1\n"
        "reboot-max-wait=3600\n"
        "dbus-address=unix:path=/run/test-bus\n"
    )
    config = load_config(sysroot=tmp_path)
    assert config.interval == 60 and config.splay == 0
    assert config.reboot.kind == "window" and str(config.reboot) == "02:30-04:00"
    assert config.reboot_command == ("/usr/local/bin/safe-reboot", "--now", "with space")
    assert config.hooks_dir == tmp_path / "srv/hooks"
    assert config.health_dir == tmp_path / "srv/health"
    assert config.status_file == tmp_path / "run/pyostree/status.json"
    assert config.retries == 3 and config.retry_delay == 0.5 and config.retry_max_delay == 10
    assert config.hook_timeout == 30 and config.inhibitor_poll_interval == 1
    assert config.reboot_max_wait == 3600
    assert config.dbus_address == "unix:path=/run/test-bus"


def test_explicit_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "nope.conf", sysroot=tmp_path)
    path = tmp_path / "my.conf"
    path.write_text("[updater]\nreboot=none\n")
    assert load_config(path, sysroot=tmp_path).reboot == RebootPolicy("none")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[updater]\ninterval=soon\n", "interval must be a number"),
        ("[updater]\ninterval=0\n", "interval must be a finite number >= 1"),
        ("[updater]\nsplay=-1\n", "splay"),
        ("[updater]\nretries=2.5\n", "whole number"),
        ("[updater]\nreboot=sometimes\n", "reboot policy must be"),
        ("[updater]\nreboot=25:00-26:00\n", "reboot policy must be"),
        ("[updater]\nreboot=03:00-03:00\n", "empty"),
        ("[updater]\nreboot-command=\n", "reboot-command is empty"),
        ("[updater]\nreboot-command='unterminated\n", "reboot-command"),
        ("[updater]\nhooks-dir=relative/dir\n", "absolute path"),
        ("[updater]\ninterval=1\ninterval=2\n", "updater.conf"),
        ("interval=1\n", "updater.conf"),
    ],
)
def test_bad_values_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_config(text)


def test_unknown_keys_and_groups_only_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pyostree.updater"):
        config = parse_config("[updater]\nfuture-key=1\n[other]\nx=y\n")
    assert config == UpdaterConfig.defaults()
    assert "future-key" in caplog.text and "[other]" in caplog.text


def _at(hour: int, minute: int) -> datetime.datetime:
    return datetime.datetime(2024, 5, 1, hour, minute)


def test_reboot_policies() -> None:
    assert parse_reboot_policy("apply").allows(_at(12, 0))
    assert not parse_reboot_policy("none").allows(_at(12, 0))
    window = parse_reboot_policy("02:00-04:00")
    assert window.allows(_at(2, 0)) and window.allows(_at(3, 59))
    assert not window.allows(_at(4, 0)) and not window.allows(_at(1, 59))
    assert window.seconds_until_allowed(_at(3, 0)) == 0
    assert window.seconds_until_allowed(_at(1, 0)) == 3600
    assert window.seconds_until_allowed(_at(5, 0)) == 21 * 3600
    with pytest.raises(ValueError):
        parse_reboot_policy("none").seconds_until_allowed(_at(1, 0))


def test_window_wrapping_midnight() -> None:
    window = parse_reboot_policy("23:30-01:00")
    assert window.allows(_at(23, 45)) and window.allows(_at(0, 30))
    assert not window.allows(_at(1, 0)) and not window.allows(_at(12, 0))
    assert window.seconds_until_allowed(_at(22, 30)) == 3600
