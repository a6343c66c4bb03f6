"""A logind-compatible test D-Bus service (``org.freedesktop.login1``).

Implements the parts of ``org.freedesktop.login1.Manager`` that inhibitor users touch:

* ``Inhibit(ssss) -> h``: like logind, it creates a pipe, hands the write end to the caller and
  keeps the read end; the inhibitor lives until every copy of the write end is closed.
* ``ListInhibitors() -> a(ssssuu)``: what, who, why, mode, uid, pid (uid/pid asked from the bus).
* ``Reboot(b)``: only recorded.
* ``Properties.Get`` for ``BlockInhibited``/``DelayInhibited``, and ``Peer.Ping``.

Run: ``python tests/logind_mock.py --address ADDRESS [--log FILE]``. It prints ``READY`` on
stdout once it owns the name, and appends one JSON line per event to ``--log``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyostree.updater.dbus import (
    BUS_DAEMON_INTERFACE,
    BUS_DAEMON_NAME,
    BUS_DAEMON_PATH,
    Connection,
    DBusError,
    Message,
    MessageType,
    UnixFd,
    Variant,
)

LOGIND_NAME = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
MANAGER_INTERFACE = "org.freedesktop.login1.Manager"
KNOWN_WHAT = {
    "shutdown", "sleep", "idle", "handle-power-key", "handle-suspend-key",
    "handle-hibernate-key", "handle-lid-switch", "handle-reboot-key",
}
KNOWN_MODES = {"block", "delay", "block-weak", "delay-weak"}
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"


class LogindMock:
    def __init__(self, conn: Connection, log_path: Path | None) -> None:
        self.conn = conn
        self.log_path = log_path
        # read end of the pipe -> (what, who, why, mode, uid, pid)
        self.inhibitors: dict[int, tuple[str, str, str, str, int, int]] = {}

    def log(self, event: str, **fields: object) -> None:
        if self.log_path is None:
            return
        with self.log_path.open("a") as f:
            f.write(json.dumps({"event": event, **fields}) + "\n")

    def run(self) -> None:
        while True:
            while (msg := self.conn.receive(0)) is not None:
                self.handle(msg)
            poller = select.poll()
            poller.register(self.conn.fileno(), select.POLLIN)
            for fd in self.inhibitors:
                poller.register(fd, 0)  # like logind: only hang-up (all writers closed) counts
            for fd, events in poller.poll(1000):
                if fd != self.conn.fileno() and events & (select.POLLHUP | select.POLLERR):
                    self.release(fd)

    def release(self, fd: int) -> None:
        entry = self.inhibitors.pop(fd, None)
        os.close(fd)
        if entry is not None:
            what, who, why, mode, uid, pid = entry
            self.log("release", what=what, who=who, why=why, mode=mode, uid=uid, pid=pid)

    def caller_credentials(self, sender: str) -> tuple[int, int]:
        (uid,) = self.conn.call(BUS_DAEMON_NAME, BUS_DAEMON_PATH, BUS_DAEMON_INTERFACE,
                                "GetConnectionUnixUser", "s", (sender,))
        (pid,) = self.conn.call(BUS_DAEMON_NAME, BUS_DAEMON_PATH, BUS_DAEMON_INTERFACE,
                                "GetConnectionUnixProcessID", "s", (sender,))
        return int(uid), int(pid)

    def handle(self, msg: Message) -> None:
        if msg.type != MessageType.METHOD_CALL:
            msg.close_fds()
            return
        try:
            self.dispatch(msg)
        finally:
            msg.close_fds()

    def dispatch(self, msg: Message) -> None:
        key = (msg.interface, msg.member)
        if key == ("org.freedesktop.DBus.Peer", "Ping"):
            self.conn.reply(msg)
        elif msg.path != LOGIND_PATH:
            self.conn.reply_error(msg, "org.freedesktop.DBus.Error.UnknownObject",
                                  f"no object {msg.path}")
        elif key == (MANAGER_INTERFACE, "Inhibit") and msg.signature == "ssss":
            self.inhibit(msg)
        elif key == (MANAGER_INTERFACE, "ListInhibitors"):
            rows = [list(entry) for entry in self.inhibitors.values()]
            self.conn.reply(msg, "a(ssssuu)", (rows,))
        elif key == (MANAGER_INTERFACE, "Reboot"):
            self.log("reboot", interactive=bool(msg.body[0]) if msg.body else False)
            self.conn.reply(msg)
        elif key == ("org.freedesktop.DBus.Properties", "Get") and msg.signature == "ss":
            self.get_property(msg, str(msg.body[1]))
        else:
            self.conn.reply_error(msg, "org.freedesktop.DBus.Error.UnknownMethod",
                                  f"unknown method {msg.interface}.{msg.member}")

    def inhibit(self, msg: Message) -> None:
        what, who, why, mode = (str(v) for v in msg.body)
        parts = what.split(":")
        if not what or any(p not in KNOWN_WHAT for p in parts):
            self.conn.reply_error(msg, INVALID_ARGS, f"Invalid what specification {what}")
            return
        if mode not in KNOWN_MODES:
            self.conn.reply_error(msg, INVALID_ARGS, f"Invalid mode specification {mode}")
            return
        uid, pid = self.caller_credentials(msg.sender)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            self.conn.reply(msg, "h", (UnixFd(write_end),))
        finally:
            os.close(write_end)
        self.inhibitors[read_end] = (what, who, why, mode, uid, pid)
        self.log("inhibit", what=what, who=who, why=why, mode=mode, uid=uid, pid=pid)

    def get_property(self, msg: Message, name: str) -> None:
        modes = {"BlockInhibited": "block", "DelayInhibited": "delay"}
        if name not in modes:
            self.conn.reply_error(msg, "org.freedesktop.DBus.Error.UnknownProperty", name)
            return
        whats = sorted({p for e in self.inhibitors.values() if e[3] == modes[name]
                        for p in e[0].split(":")})
        self.conn.reply(msg, "v", (Variant("s", ":".join(whats)),))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--log", type=Path)
    args = parser.parse_args(argv)
    conn = Connection.open(args.address)
    if conn.request_name(LOGIND_NAME) != 1:
        print(f"cannot own {LOGIND_NAME}", file=sys.stderr)
        return 1
    print("READY", flush=True)
    try:
        LogindMock(conn, args.log).run()
    except DBusError as exc:  # the bus went away: the test is over
        print(f"logind_mock: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
