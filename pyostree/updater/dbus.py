"""A minimal pure-Python D-Bus client over a unix socket.

Enough of the protocol for talking to logind (and for a test service to stand in for it): SASL
EXTERNAL authentication, unix-fd negotiation, the little-endian wire format with every basic and
container type, method calls and replies, and unix fd passing with ``SCM_RIGHTS``.

Messages read from the socket are untrusted bytes: every malformed message raises
:class:`DBusError`, never ``struct.error``/``IndexError``.
"""

from __future__ import annotations

import array
import collections
import contextlib
import os
import select
import socket
import struct
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import attrs

from ..errors import PyOstreeError

__all__ = [
    "BUS_DAEMON_INTERFACE",
    "BUS_DAEMON_NAME",
    "BUS_DAEMON_PATH",
    "Connection",
    "DBusConnectionError",
    "DBusError",
    "DBusRemoteError",
    "Message",
    "MessageType",
    "UnixFd",
    "Variant",
    "decode_body",
    "encode_body",
    "session_bus_address",
    "split_signature",
    "system_bus_address",
]

BUS_DAEMON_NAME = "org.freedesktop.DBus"
BUS_DAEMON_PATH = "/org/freedesktop/DBus"
BUS_DAEMON_INTERFACE = "org.freedesktop.DBus"
DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"

MAX_MESSAGE_SIZE = 128 * 1024 * 1024  # the specification's limit
MAX_ARRAY_SIZE = 64 * 1024 * 1024
MAX_SIGNATURE_DEPTH = 32
MAX_FDS_PER_READ = 64


class DBusError(PyOstreeError):
    """A D-Bus protocol problem: malformed message, failed authentication, closed connection."""


class DBusConnectionError(DBusError):
    """The bus could not be reached or authentication failed."""


class DBusRemoteError(DBusError):
    """The peer answered a method call with an error reply (``name`` is the D-Bus error name)."""

    def __init__(self, message: str, *, name: str = "") -> None:
        super().__init__(message)
        self.name = name


class MessageType:
    METHOD_CALL = 1
    METHOD_RETURN = 2
    ERROR = 3
    SIGNAL = 4


FLAG_NO_REPLY_EXPECTED = 0x1

_FIELD_PATH = 1
_FIELD_INTERFACE = 2
_FIELD_MEMBER = 3
_FIELD_ERROR_NAME = 4
_FIELD_REPLY_SERIAL = 5
_FIELD_DESTINATION = 6
_FIELD_SENDER = 7
_FIELD_SIGNATURE = 8
_FIELD_UNIX_FDS = 9


@attrs.frozen
class Variant:
    """A ``v`` value: its single complete type signature and the value."""

    signature: str
    value: Any


@attrs.frozen
class UnixFd:
    """A file descriptor to send as an ``h`` argument (the caller keeps ownership)."""

    fd: int


# --- signatures -------------------------------------------------------------------------------

_BASIC = "ybnqiuxtdsoghv"
_FIXED = {"y": ("B", 1), "n": ("h", 2), "q": ("H", 2), "i": ("i", 4), "u": ("I", 4),
          "x": ("q", 8), "t": ("Q", 8), "d": ("d", 8), "b": ("I", 4), "h": ("I", 4)}
_ALIGN = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8, "s": 4,
          "o": 4, "g": 1, "h": 4, "v": 1, "a": 4, "(": 8, "{": 8}


def _type_end(sig: str, start: int, depth: int = 0) -> int:
    """Index just past the single complete type starting at ``start``."""
    if depth > MAX_SIGNATURE_DEPTH:
        raise DBusError("D-Bus signature nests too deeply")
    if start >= len(sig):
        raise DBusError(f"truncated D-Bus signature {sig!r}")
    c = sig[start]
    if c in _BASIC:
        return start + 1
    if c == "a":
        return _type_end(sig, start + 1, depth + 1)
    if c == "(":
        i = start + 1
        if i < len(sig) and sig[i] == ")":
            raise DBusError(f"empty struct in D-Bus signature {sig!r}")
        while i < len(sig) and sig[i] != ")":
            i = _type_end(sig, i, depth + 1)
        if i >= len(sig):
            raise DBusError(f"unterminated struct in D-Bus signature {sig!r}")
        return i + 1
    if c == "{":
        if start == 0 or sig[start - 1] != "a":
            raise DBusError(f"dict entry outside an array in D-Bus signature {sig!r}")
        if start + 1 >= len(sig) or sig[start + 1] not in _BASIC or sig[start + 1] == "v":
            raise DBusError(f"dict key must be a basic type in D-Bus signature {sig!r}")
        i = _type_end(sig, start + 2, depth + 1)
        if i >= len(sig) or sig[i] != "}":
            raise DBusError(f"bad dict entry in D-Bus signature {sig!r}")
        return i + 1
    raise DBusError(f"invalid character {c!r} in D-Bus signature {sig!r}")


def split_signature(sig: str) -> list[str]:
    """Split a signature into its single complete types; raise DBusError if it is invalid."""
    if len(sig) > 255:
        raise DBusError("D-Bus signature longer than 255 characters")
    types = []
    i = 0
    while i < len(sig):
        end = _type_end(sig, i)
        types.append(sig[i:end])
        i = end
    return types


# --- marshalling ------------------------------------------------------------------------------


class _Writer:
    def __init__(self, fds: list[int] | None = None) -> None:
        self.buf = bytearray()
        self.fds: list[int] = [] if fds is None else fds

    def align(self, n: int) -> None:
        self.buf.extend(b"\0" * (-len(self.buf) % n))

    def write(self, sig: str, value: Any) -> None:
        c = sig[0]
        if c in _FIXED:
            fmt, size = _FIXED[c]
            self.align(size)
            if c == "b":
                value = 1 if value else 0
            elif c == "h":
                fd = value.fd if isinstance(value, UnixFd) else int(value)
                self.fds.append(fd)
                value = len(self.fds) - 1
            try:
                self.buf.extend(struct.pack("<" + fmt, value))
            except struct.error as exc:
                raise ValueError(f"value {value!r} does not fit D-Bus type {c!r}") from exc
        elif c in "so":
            data = str(value).encode()
            self.align(4)
            self.buf.extend(struct.pack("<I", len(data)) + data + b"\0")
        elif c == "g":
            data = str(value).encode()
            if len(data) > 255:
                raise ValueError("D-Bus signature longer than 255 bytes")
            self.buf.extend(bytes([len(data)]) + data + b"\0")
        elif c == "v":
            if not isinstance(value, Variant):
                raise TypeError("a D-Bus 'v' value must be a Variant")
            split_signature(value.signature)
            self.write("g", value.signature)
            self.write(value.signature, value.value)
        elif c == "a":
            self._write_array(sig[1:], value)
        elif c == "(":
            self.align(8)
            inner = split_signature(sig[1:-1])
            items = tuple(value)
            if len(items) != len(inner):
                raise ValueError(f"struct {sig} needs {len(inner)} fields, got {len(items)}")
            for t, v in zip(inner, items, strict=True):
                self.write(t, v)
        else:
            raise ValueError(f"cannot marshal D-Bus type {sig!r}")

    def _write_array(self, elem: str, value: Any) -> None:
        self.align(4)
        len_pos = len(self.buf)
        self.buf.extend(b"\0\0\0\0")
        self.align(_ALIGN[elem[0]])
        start = len(self.buf)
        if elem == "y":
            self.buf.extend(bytes(value))
        elif elem[0] == "{":
            key_t, val_t = split_signature(elem[1:-1])
            for k, v in dict(value).items():
                self.align(8)
                self.write(key_t, k)
                self.write(val_t, v)
        else:
            for item in value:
                self.write(elem, item)
        struct.pack_into("<I", self.buf, len_pos, len(self.buf) - start)


class _Reader:
    def __init__(self, data: bytes, fds: Sequence[int] = (), pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.fds = fds

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DBusError("truncated D-Bus message")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def align(self, n: int) -> None:
        pad = -self.pos % n
        if any(self._take(pad)):
            raise DBusError("non-zero padding in D-Bus message")

    def read(self, sig: str, depth: int = 0) -> Any:
        if depth > MAX_SIGNATURE_DEPTH:
            raise DBusError("D-Bus value nests too deeply")
        c = sig[0]
        if c in _FIXED:
            fmt, size = _FIXED[c]
            self.align(size)
            (value,) = struct.unpack("<" + fmt, self._take(size))
            if c == "b":
                if value > 1:
                    raise DBusError("D-Bus boolean is neither 0 nor 1")
                return bool(value)
            if c == "h":
                if value >= len(self.fds):
                    raise DBusError("D-Bus message refers to a unix fd it did not carry")
                return self.fds[value]
            return value
        if c in "so":
            self.align(4)
            (n,) = struct.unpack("<I", self._take(4))
            return self._text(n)
        if c == "g":
            (n,) = self._take(1)
            return self._text(n)
        if c == "v":
            inner = self.read("g")
            if len(split_signature(inner)) != 1:
                raise DBusError("D-Bus variant signature is not a single complete type")
            return Variant(inner, self.read(inner, depth + 1))
        if c == "a":
            return self._read_array(sig[1:], depth)
        if c == "(":
            self.align(8)
            return tuple(self.read(t, depth + 1) for t in split_signature(sig[1:-1]))
        raise DBusError(f"cannot unmarshal D-Bus type {sig!r}")

    def _text(self, n: int) -> str:
        raw = self._take(n + 1)
        if raw[-1] != 0 or 0 in raw[:-1]:
            raise DBusError("D-Bus string is not NUL-terminated or contains NUL")
        try:
            return raw[:-1].decode()
        except UnicodeDecodeError as exc:
            raise DBusError("D-Bus string is not valid UTF-8") from exc

    def _read_array(self, elem: str, depth: int) -> Any:
        self.align(4)
        (n,) = struct.unpack("<I", self._take(4))
        if n > MAX_ARRAY_SIZE:
            raise DBusError("D-Bus array too long")
        self.align(_ALIGN[elem[0]])
        end = self.pos + n
        if end > len(self.data):
            raise DBusError("truncated D-Bus array")
        if elem == "y":
            return self._take(n)
        result: Any
        if elem[0] == "{":
            key_t, val_t = split_signature(elem[1:-1])
            result = {}
            while self.pos < end:
                self.align(8)
                key = self.read(key_t, depth + 1)
                result[key] = self.read(val_t, depth + 1)
        else:
            result = []
            while self.pos < end:
                result.append(self.read(elem, depth + 1))
        if self.pos != end:
            raise DBusError("D-Bus array length does not match its elements")
        return result


def encode_body(signature: str, args: Sequence[Any]) -> tuple[bytes, list[int]]:
    """Marshal ``args`` per ``signature``; return the bytes and the fds to pass alongside."""
    types = split_signature(signature)
    if len(types) != len(args):
        raise ValueError(f"signature {signature!r} needs {len(types)} arguments, got {len(args)}")
    w = _Writer()
    for t, v in zip(types, args, strict=True):
        w.write(t, v)
    return bytes(w.buf), w.fds


def decode_body(signature: str, data: bytes, fds: Sequence[int] = ()) -> tuple[Any, ...]:
    """Unmarshal a message body; ``h`` values become the matching entries of ``fds``."""
    r = _Reader(data, fds)
    values = tuple(r.read(t) for t in split_signature(signature))
    if r.pos != len(data):
        raise DBusError("trailing bytes after D-Bus message body")
    return values


# --- messages ---------------------------------------------------------------------------------


@attrs.frozen
class Message:
    """One D-Bus message. ``fds`` are owned by whoever holds the message."""

    type: int
    serial: int
    flags: int = 0
    path: str = ""
    interface: str = ""
    member: str = ""
    error_name: str = ""
    reply_serial: int = 0
    destination: str = ""
    sender: str = ""
    signature: str = ""
    body: tuple[Any, ...] = ()
    fds: tuple[int, ...] = ()

    def to_bytes(self) -> tuple[bytes, list[int]]:
        body, fds = encode_body(self.signature, self.body)
        fields: list[tuple[int, Variant]] = []
        for code, sig, value in (
            (_FIELD_PATH, "o", self.path),
            (_FIELD_INTERFACE, "s", self.interface),
            (_FIELD_MEMBER, "s", self.member),
            (_FIELD_ERROR_NAME, "s", self.error_name),
            (_FIELD_REPLY_SERIAL, "u", self.reply_serial),
            (_FIELD_DESTINATION, "s", self.destination),
            (_FIELD_SENDER, "s", self.sender),
            (_FIELD_SIGNATURE, "g", self.signature),
            (_FIELD_UNIX_FDS, "u", len(fds)),
        ):
            if value:
                fields.append((code, Variant(sig, value)))
        w = _Writer()
        w.buf.extend(struct.pack("<cBBBII", b"l", self.type, self.flags, 1, len(body),
                                 self.serial))
        w.write("a(yv)", fields)
        w.align(8)
        return bytes(w.buf) + body, fds

    @classmethod
    def from_bytes(cls, data: bytes, fds: Sequence[int] = ()) -> Message:
        """Parse one whole message; ``fds`` are the descriptors that arrived with it."""
        if len(data) < 16:
            raise DBusError("truncated D-Bus message header")
        endian = data[0:1]
        if endian not in (b"l", b"B"):
            raise DBusError("bad D-Bus endianness marker")
        if endian == b"B":
            raise DBusError("big-endian D-Bus messages are not supported")
        _, mtype, flags, version, body_len, serial = struct.unpack_from("<cBBBII", data)
        if version != 1 or not 1 <= mtype <= 4 or serial == 0:
            raise DBusError("bad D-Bus message header")
        r = _Reader(data, (), 12)
        fields = {code: var for code, var in r.read("a(yv)")}
        r.align(8)
        if len(data) - r.pos != body_len:
            raise DBusError("D-Bus body length does not match header")
        values: dict[str, Any] = {}
        for code, name, sig in (
            (_FIELD_PATH, "path", "o"),
            (_FIELD_INTERFACE, "interface", "s"),
            (_FIELD_MEMBER, "member", "s"),
            (_FIELD_ERROR_NAME, "error_name", "s"),
            (_FIELD_REPLY_SERIAL, "reply_serial", "u"),
            (_FIELD_DESTINATION, "destination", "s"),
            (_FIELD_SENDER, "sender", "s"),
            (_FIELD_SIGNATURE, "signature", "g"),
        ):
            if code in fields:
                var = fields[code]
                if not isinstance(var, Variant) or var.signature != sig:
                    raise DBusError(f"D-Bus header field {name} has the wrong type")
                values[name] = var.value
        n_fds = 0
        if _FIELD_UNIX_FDS in fields:
            var = fields[_FIELD_UNIX_FDS]
            if not isinstance(var, Variant) or var.signature != "u":
                raise DBusError("D-Bus header field unix_fds has the wrong type")
            n_fds = int(var.value)
        if n_fds > len(fds):
            raise DBusError("D-Bus message announces more unix fds than arrived")
        msg_fds = tuple(fds[:n_fds])
        body = decode_body(values.get("signature", ""), data[r.pos :], msg_fds)
        return cls(type=mtype, serial=serial, flags=flags, body=body, fds=msg_fds, **values)

    def close_fds(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _message_length(header: bytes) -> int:
    """Total length of a message from its first 16 bytes."""
    if header[0:1] != b"l":
        raise DBusError("bad or unsupported D-Bus endianness marker")
    body_len, _serial, fields_len = struct.unpack_from("<III", header, 4)
    total: int = 16 + fields_len + (-(16 + fields_len) % 8) + body_len
    if total > MAX_MESSAGE_SIZE:
        raise DBusError("D-Bus message too large")
    return total


# --- addresses --------------------------------------------------------------------------------


def system_bus_address() -> str:
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS


def session_bus_address() -> str:
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return f"unix:path={runtime}/bus"


def _unix_socket_paths(address: str) -> list[str | bytes]:
    """Socket paths for every unix address in a ``;``-separated D-Bus address list."""
    paths: list[str | bytes] = []
    for entry in address.split(";"):
        transport, _, params = entry.partition(":")
        if transport != "unix":
            continue
        kv = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
        if "path" in kv:
            paths.append(urllib.parse.unquote(kv["path"]))
        elif "abstract" in kv:
            paths.append(b"\0" + urllib.parse.unquote_to_bytes(kv["abstract"]))
    return paths


# --- connection -------------------------------------------------------------------------------


class Connection:
    """A connection to a message bus. Not thread-safe: use one per thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._fds: collections.deque[int] = collections.deque()
        self._pending: collections.deque[Message] = collections.deque()
        self._serial = 0
        self.unique_name = ""

    @classmethod
    def open(cls, address: str, *, timeout: float = 10.0) -> Connection:
        """Connect, authenticate with SASL EXTERNAL, negotiate fd passing and say Hello."""
        paths = _unix_socket_paths(address)
        if not paths:
            raise DBusConnectionError(f"no usable unix transport in D-Bus address {address!r}")
        last: OSError | None = None
        for path in paths:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.settimeout(timeout)
            try:
                sock.connect(path)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            conn = cls(sock)
            try:
                conn._authenticate()
                sock.settimeout(None)
                (conn.unique_name,) = conn.call(BUS_DAEMON_NAME, BUS_DAEMON_PATH,
                                                BUS_DAEMON_INTERFACE, "Hello", timeout=timeout)
            except (OSError, DBusError) as exc:
                conn.close()
                if isinstance(exc, DBusConnectionError):
                    raise
                raise DBusConnectionError(f"D-Bus handshake with {address} failed: {exc}") from exc
            return conn
        raise DBusConnectionError(f"cannot connect to D-Bus at {address}: {last}")

    def _authenticate(self) -> None:
        uid_hex = str(os.geteuid()).encode().hex().encode()
        self._sock.sendall(b"\0AUTH EXTERNAL " + uid_hex + b"\r\n")
        line = self._read_line()
        if not line.startswith(b"OK "):
            raise DBusConnectionError(f"D-Bus authentication rejected: {line[:80]!r}")
        self._sock.sendall(b"NEGOTIATE_UNIX_FD\r\n")
        line = self._read_line()
        if not line.startswith(b"AGREE_UNIX_FD"):
            raise DBusConnectionError("the D-Bus peer does not support unix fd passing")
        self._sock.sendall(b"BEGIN\r\n")

    def _read_line(self) -> bytes:
        while b"\r\n" not in self._buf:
            if len(self._buf) > 16384:
                raise DBusConnectionError("D-Bus authentication line too long")
            chunk = self._sock.recv(4096)
            if not chunk:
                raise DBusConnectionError("D-Bus peer closed the connection during authentication")
            self._buf.extend(chunk)
        line, _, rest = bytes(self._buf).partition(b"\r\n")
        self._buf = bytearray(rest)
        return line

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        while self._pending:
            self._pending.popleft().close_fds()
        while self._fds:
            with contextlib.suppress(OSError):
                os.close(self._fds.popleft())
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # sending

    def next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def send(self, msg: Message) -> None:
        data, fds = msg.to_bytes()
        if fds:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            sent = self._sock.sendmsg([data], anc)
        else:
            sent = self._sock.send(data)
        if sent < len(data):
            self._sock.sendall(data[sent:])

    def call_async(self, destination: str, path: str, interface: str, member: str,
                   signature: str = "", args: Sequence[Any] = ()) -> int:
        """Send a method call; return its serial (match it against ``reply_serial``)."""
        serial = self.next_serial()
        self.send(Message(MessageType.METHOD_CALL, serial, path=path, interface=interface,
                          member=member, destination=destination, signature=signature,
                          body=tuple(args)))
        return serial

    def call_message(self, destination: str, path: str, interface: str, member: str,
                     signature: str = "", args: Sequence[Any] = (), *,
                     timeout: float = 25.0) -> Message:
        """Call a method and wait for its reply; the caller owns the reply's fds."""
        serial = self.call_async(destination, path, interface, member, signature, args)
        deadline = time.monotonic() + timeout
        skipped: list[Message] = []
        try:
            while True:
                msg = self._receive_raw(deadline - time.monotonic())
                if msg is None:
                    raise DBusError(f"timed out waiting for the reply to {interface}.{member}")
                if msg.reply_serial == serial and msg.type in (MessageType.METHOD_RETURN,
                                                               MessageType.ERROR):
                    if msg.type == MessageType.ERROR:
                        msg.close_fds()
                        text = msg.body[0] if msg.body and isinstance(msg.body[0], str) else ""
                        raise DBusRemoteError(f"{msg.error_name}: {text}", name=msg.error_name)
                    return msg
                skipped.append(msg)
        finally:
            # Keep what arrived meanwhile for receive(), in order.
            self._pending.extend(skipped)
            while len(self._pending) > 1024:
                self._pending.popleft().close_fds()

    def call(self, destination: str, path: str, interface: str, member: str,
             signature: str = "", args: Sequence[Any] = (), *,
             timeout: float = 25.0) -> tuple[Any, ...]:
        """Call a method and return the reply's values (``h`` values are fds the caller owns)."""
        return self.call_message(destination, path, interface, member, signature, args,
                                 timeout=timeout).body

    def reply(self, call: Message, signature: str = "", args: Sequence[Any] = ()) -> None:
        if call.flags & FLAG_NO_REPLY_EXPECTED:
            return
        self.send(Message(MessageType.METHOD_RETURN, self.next_serial(),
                          reply_serial=call.serial, destination=call.sender,
                          signature=signature, body=tuple(args)))

    def reply_error(self, call: Message, name: str, text: str) -> None:
        if call.flags & FLAG_NO_REPLY_EXPECTED:
            return
        self.send(Message(MessageType.ERROR, self.next_serial(), error_name=name,
                          reply_serial=call.serial, destination=call.sender,
                          signature="s", body=(text,)))

    def request_name(self, name: str, flags: int = 4) -> int:
        """Ask the bus for a well-known name (default flag: DO_NOT_QUEUE); return the code."""
        (code,) = self.call(BUS_DAEMON_NAME, BUS_DAEMON_PATH, BUS_DAEMON_INTERFACE,
                            "RequestName", "su", (name, flags))
        return int(code)

    # receiving

    def receive(self, timeout: float | None = None) -> Message | None:
        """Next incoming message, or None when ``timeout`` seconds pass without one."""
        if self._pending:
            return self._pending.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._receive_raw(None if deadline is None else deadline - time.monotonic())

    def _receive_raw(self, timeout: float | None) -> Message | None:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            msg = self._parse_buffered()
            if msg is not None:
                return msg
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._sock], [], [], remaining)
            if not ready:
                return None
            self._read_some()

    def _read_some(self) -> None:
        fd_size = array.array("i").itemsize
        try:
            data, ancdata, flags, _ = self._sock.recvmsg(
                65536, socket.CMSG_SPACE(MAX_FDS_PER_READ * fd_size), socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            return
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fd_size])
                self._fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            raise DBusError("D-Bus peer sent more unix fds than we accept")
        if not data:
            raise DBusConnectionError("the D-Bus connection was closed")
        self._buf.extend(data)

    def _parse_buffered(self) -> Message | None:
        if len(self._buf) < 16:
            return None
        total = _message_length(bytes(self._buf[:16]))
        if len(self._buf) < total:
            return None
        data = bytes(self._buf[:total])
        del self._buf[:total]
        n_fds = _announced_fds(data)
        if n_fds > len(self._fds):
            raise DBusError("D-Bus message announces more unix fds than arrived")
        fds = [self._fds.popleft() for _ in range(n_fds)]
        try:
            return Message.from_bytes(data, fds)
        except DBusError:
            for fd in fds:
                os.close(fd)
            raise


def _announced_fds(data: bytes) -> int:
    """The UNIX_FDS header field of a whole message (0 if absent), parsed leniently."""
    try:
        r = _Reader(data, (), 12)
        for code, var in r.read("a(yv)"):
            if code == _FIELD_UNIX_FDS and isinstance(var, Variant) and var.signature == "u":
                return int(var.value)
    except DBusError:
        return 0
    return 0
