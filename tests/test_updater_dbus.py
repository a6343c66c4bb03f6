"""The pure-Python D-Bus client: wire format, hostile bytes, and a real dbus-daemon."""

from __future__ import annotations

import contextlib
import os
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyostree.updater.dbus import (
    BUS_DAEMON_INTERFACE,
    BUS_DAEMON_NAME,
    BUS_DAEMON_PATH,
    Connection,
    DBusConnectionError,
    DBusError,
    DBusRemoteError,
    Message,
    MessageType,
    Variant,
    decode_body,
    encode_body,
    split_signature,
)

from .updater_support import logind_bus


def test_split_signature() -> None:
    assert split_signature("a(ssssuu)") == ["a(ssssuu)"]
    assert split_signature("sa{sv}(ia(yv))h") == ["s", "a{sv}", "(ia(yv))", "h"]
    for bad in ("a", "(", "()", "a{vs}", "{ss}", "(ss", "z", "a{s}"):
        with pytest.raises(DBusError):
            split_signature(bad)


def test_known_bytes() -> None:
    # "s" "ab" + "u" 7: length 2, "ab\0", one pad byte, then 7.
    data, fds = encode_body("su", ["ab", 7])
    assert data == struct.pack("<I", 2) + b"ab\0" + b"\0" + struct.pack("<I", 7)
    assert fds == []
    # An array of int64 pads to 8 after its length; the padding is not counted.
    data, _ = encode_body("at", [[1]])
    assert data == struct.pack("<I", 8) + b"\0" * 4 + struct.pack("<Q", 1)


def test_round_trip_containers() -> None:
    sig = "ya(ssssuu)a{sv}bdxngav"
    values = (
        7,
        [("shutdown", "who", "why", "block", 0, 42), ("sleep", "", "", "delay", 1, 2)],
        {"a": Variant("s", "x"), "b": Variant("ai", [1, -2]), "c": Variant("(yb)", (1, True))},
        True,
        1.5,
        -(2**40),
        -3,
        "a{sv}",
        [Variant("ay", b"\0\1"), Variant("o", "/org/x")],
    )
    data, _ = encode_body(sig, values)
    decoded = decode_body(sig, data)
    assert decoded[0] == 7
    assert decoded[1] == [tuple(r) for r in values[1]]
    assert decoded[2] == values[2]
    assert decoded[3:] == values[3:]


def test_message_round_trip_with_fd_index() -> None:
    r, w = os.pipe()
    try:
        msg = Message(MessageType.METHOD_RETURN, 5, reply_serial=3, destination=":1.4",
                      signature="h", body=(w,))
        data, fds = msg.to_bytes()
        assert fds == [w]
        parsed = Message.from_bytes(data, [r])
        assert parsed.body == (r,) and parsed.fds == (r,) and parsed.reply_serial == 3
        with pytest.raises(DBusError, match="more unix fds"):
            Message.from_bytes(data, [])
    finally:
        os.close(r)
        os.close(w)


def test_every_truncation_is_a_dbus_error() -> None:
    msg = Message(MessageType.METHOD_CALL, 1, path="/org/freedesktop/login1",
                  interface="org.freedesktop.login1.Manager", member="Inhibit",
                  destination="org.freedesktop.login1", signature="ssss",
                  body=("shutdown", "me", "why", "block"))
    data, _ = msg.to_bytes()
    assert Message.from_bytes(data).body == msg.body
    for n in range(len(data)):
        with pytest.raises(DBusError):
            Message.from_bytes(data[:n])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["s", "a(ssssuu)", "a{sv}", "v", "g", "ab"]))
def test_hostile_bodies_raise_only_dbus_error(data: bytes, sig: str) -> None:
    with contextlib.suppress(DBusError):
        decode_body(sig, data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=300))
def test_hostile_messages_raise_only_dbus_error(data: bytes) -> None:
    data = b"l" + data[1:]
    with contextlib.suppress(DBusError):
        Message.from_bytes(data)


def test_unreachable_bus() -> None:
    with pytest.raises(DBusConnectionError):
        Connection.open("unix:path=/nonexistent/pyostree-test-bus")
    with pytest.raises(DBusConnectionError, match="no usable unix transport"):
        Connection.open("tcp:host=127.0.0.1,port=1")


def test_real_bus_calls_and_errors() -> None:
    with logind_bus() as bus, Connection.open(bus.address) as conn:
        assert conn.unique_name.startswith(":")
        (names,) = conn.call(BUS_DAEMON_NAME, BUS_DAEMON_PATH, BUS_DAEMON_INTERFACE,
                             "ListNames")
        assert "org.freedesktop.login1" in names
        (pid,) = conn.call(BUS_DAEMON_NAME, BUS_DAEMON_PATH, BUS_DAEMON_INTERFACE,
                           "GetConnectionUnixProcessID", "s", (conn.unique_name,))
        assert pid == os.getpid()
        with pytest.raises(DBusRemoteError) as info:
            conn.call("org.freedesktop.login1", "/org/freedesktop/login1",
                      "org.freedesktop.login1.Manager", "NoSuchMethod")
        assert info.value.name == "org.freedesktop.DBus.Error.UnknownMethod"


def test_fd_passing_through_the_bus() -> None:
    """Inhibit hands us the write end of a pipe; closing it is what releases the lock."""
    with logind_bus() as bus, Connection.open(bus.address) as conn:
        reply = conn.call_message("org.freedesktop.login1", "/org/freedesktop/login1",
                                  "org.freedesktop.login1.Manager", "Inhibit", "ssss",
                                  ("shutdown", "t", "fd test", "block"))
        assert reply.signature == "h" and len(reply.fds) == 1
        fd = reply.fds[0]
        assert os.write(fd, b"x") == 1  # a real, writable pipe end crossed the bus
        (rows,) = conn.call("org.freedesktop.login1", "/org/freedesktop/login1",
                            "org.freedesktop.login1.Manager", "ListInhibitors")
        assert [r[:4] for r in rows] == [("shutdown", "t", "fd test", "block")]
        assert rows[0][5] == os.getpid()
        os.close(fd)
        for _ in range(100):
            (rows,) = conn.call("org.freedesktop.login1", "/org/freedesktop/login1",
                                "org.freedesktop.login1.Manager", "ListInhibitors")
            if not rows:
                break
            time.sleep(0.05)
        assert rows == []


_VALID = Message(MessageType.METHOD_RETURN, 9, reply_serial=4, destination=":1.7",
                 sender="org.freedesktop.login1", signature="a(ssssuu)v",
                 body=([("shutdown", "who", "why", "block", 0, 12)],
                       Variant("a{sv}", {"k": Variant("as", ["x"])}))).to_bytes()[0]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)),
                min_size=1, max_size=4))
def test_mutated_messages_raise_only_dbus_error(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_VALID)
    for pos, value in edits:
        data[pos] = value
    with contextlib.suppress(DBusError):
        Message.from_bytes(bytes(data))
