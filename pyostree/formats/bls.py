"""Boot Loader Spec entries, kernel arguments and U-Boot ``uEnv.txt``, as libostree 2022.7 has them.

* :class:`BootEntry` — one ``/boot/loader/entries/ostree-*.conf`` file: ordered ``key value``
  lines (keys may repeat, e.g. several ``initrd``). Read like ``ostree-bootconfig-parser.c``:
  only lines that start with a letter count, split at the first space or tab.
* :class:`Kargs` — the ``options`` line as ``ostree-kernel-args.c`` edits it, order kept.
* :func:`ostree_entry_filename` / :func:`parse_entry_filename` — ``ostree-<V>-<OS>.conf``.
* :func:`sort_entries` — libostree's order (``version`` by ``strverscmp``, highest first).
* :func:`uboot_uenv` — the ``loader.B/uEnv.txt`` text of ``ostree-bootloader-uboot.c``.

Pure: no file I/O.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Iterable, Iterator, Sequence

import attrs

from ..errors import DeployError, FormatError, UsageError

__all__ = [
    "LIBOSTREE_KEY_ORDER",
    "BootEntry",
    "EntryFilename",
    "Kargs",
    "ostree_entry_filename",
    "parse_entry_filename",
    "quote_karg_value",
    "sort_entries",
    "strverscmp",
    "uboot_system_uenv_path",
    "uboot_uenv",
    "unquote_karg_value",
]

#: The order in which ``ostree_bootconfig_parser_write`` emits the keys it knows.
LIBOSTREE_KEY_ORDER = ("title", "version", "options", "devicetree", "linux", "initrd")


# ---------------------------------------------------------------------------- kernel args


def _split_kargs(text: str) -> list[str]:
    """Split a command line on whitespace outside double quotes (the kernel's rule)."""
    args: list[str] = []
    current: list[str] = []
    quoted = False
    for c in text:
        if c == '"':
            quoted = not quoted
            current.append(c)
        elif c in " \t\n\r\v\f" and not quoted:
            if current:
                args.append("".join(current))
                current = []
        else:
            current.append(c)
    if current:
        args.append("".join(current))
    return args


def _split_keyeq(arg: str) -> tuple[str, str | None]:
    key, sep, value = arg.partition("=")
    return key, (value if sep else None)


def _join_arg(key: str, value: str | None) -> str:
    return key if value is None else f"{key}={value}"


def quote_karg_value(value: str) -> str:
    """Quote a value the way the kernel expects when it contains whitespace."""
    if '"' in value:
        raise ValueError("kernel argument values cannot contain a double quote")
    if any(c in " \t\n" for c in value):
        return f'"{value}"'
    return value


def unquote_karg_value(value: str) -> str:
    """Drop the surrounding quotes of a value, as the kernel's ``next_arg`` does."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return value[1:-1]
    if value.startswith('"'):
        return value[1:]
    return value


@attrs.frozen
class Kargs:
    """Kernel arguments in order: ``(key, value)`` pairs, ``value`` None for a bare flag.

    Values are stored as written, quotes included (``x="a b"``), as libostree does.
    Every editing method returns a new :class:`Kargs`.
    """

    args: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> Kargs:
        if not text:
            return cls()
        return cls(tuple(_split_keyeq(a) for a in _split_kargs(text)))

    def to_string(self) -> str:
        return " ".join(_join_arg(k, v) for k, v in self.args)

    __str__ = to_string

    def to_list(self) -> list[str]:
        return [_join_arg(k, v) for k, v in self.args]

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        return iter(self.args)

    def __len__(self) -> int:
        return len(self.args)

    def __contains__(self, key: object) -> bool:
        return any(k == key for k, _ in self.args)

    def values(self, key: str) -> list[str | None]:
        return [v for k, v in self.args if k == key]

    def get_last_value(self, key: str) -> str | None:
        """The value of the last ``key`` argument (None if absent or a bare flag)."""
        vals = self.values(key)
        return vals[-1] if vals else None

    def append(self, arg: str) -> Kargs:
        """Add each argument in ``arg`` at the end (duplicates allowed)."""
        return Kargs(self.args + tuple(_split_keyeq(a) for a in _split_kargs(arg)))

    def append_if_missing(self, arg: str) -> Kargs:
        out = self
        for a in _split_kargs(arg):
            key, _ = _split_keyeq(a)
            if key not in out:
                out = out.append(a)
        return out

    def replace(self, arg: str) -> Kargs:
        """``ostree_kernel_args_replace``: every ``key`` becomes this one argument, kept at
        the position of the first; appended if the key is absent."""
        out = self
        for a in _split_kargs(arg):
            key, value = _split_keyeq(a)
            args = list(out.args)
            positions = [i for i, (k, _) in enumerate(args) if k == key]
            if not positions:
                args.append((key, value))
            else:
                first = positions[0]
                args = [x for i, x in enumerate(args) if i not in positions[1:]]
                args[first] = (key, value)
            out = Kargs(tuple(args))
        return out

    def replace_value(self, arg: str) -> Kargs:
        """``ostree admin kargs edit-in-place --replace``: ``key=new`` when the key has one
        value, ``key=old=new`` to pick one of several. Unknown key or value → UsageError."""
        out = self
        for a in _split_kargs(arg):
            key, val = _split_keyeq(a)
            positions = [i for i, (k, _) in enumerate(out.args) if k == key]
            if not positions:
                raise UsageError(f"No key '{key}' found")
            args = list(out.args)
            if val is not None and "=" in val:
                old, new = val.split("=", 1)
                match = [i for i in positions if args[i][1] == old]
                if not match:
                    raise UsageError(f"No karg '{key}={old}' found")
                args[match[0]] = (key, new)
            elif len(positions) > 1:
                raise UsageError(f"Multiple values for key '{key}' found")
            else:
                args[positions[0]] = (key, val)
            out = Kargs(tuple(args))
        return out

    def delete(self, arg: str) -> Kargs:
        """``ostree_kernel_args_delete``: ``key`` (only one value) or ``key=value``."""
        out = self
        for a in _split_kargs(arg):
            key, val = _split_keyeq(a)
            positions = [i for i, (k, _) in enumerate(out.args) if k == key]
            if not positions:
                raise UsageError(f"No key '{key}' found")
            if len(positions) == 1:
                if val is not None and out.args[positions[0]][1] != val:
                    raise UsageError(f"No karg '{key}={val}' found")
                victim = positions[0]
            else:
                match = [i for i in positions if out.args[i][1] == val]
                if not match:
                    if val is None:
                        raise UsageError(f"Multiple values for key '{a}' found")
                    raise UsageError(f"No karg '{a}' found")
                victim = match[0]
            out = Kargs(tuple(x for i, x in enumerate(out.args) if i != victim))
        return out

    def remove_key(self, key: str) -> Kargs:
        """Drop every argument named ``key`` (no error when there is none)."""
        return Kargs(tuple(x for x in self.args if x[0] != key))


# ---------------------------------------------------------------------------- BLS entries


@attrs.frozen
class BootEntry:
    """A BLS entry: ``(key, value)`` pairs in file order; :meth:`to_text` writes them back."""

    items: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> BootEntry:
        """Read like libostree: lines starting with an ASCII letter, split at the first blank.
        Other lines (comments, blank lines, keys without a value) are ignored."""
        items: list[tuple[str, str]] = []
        for line in text.split("\n"):
            if not line or line[0] not in string.ascii_letters:
                continue
            m = re.search(r"[ \t]", line)
            if m is None:
                continue
            items.append((line[: m.start()], line[m.end() :]))
        return cls(tuple(items))

    @classmethod
    def from_bytes(cls, data: bytes) -> BootEntry:
        try:
            return cls.parse(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise FormatError("boot loader entry is not valid UTF-8") from None

    def to_text(self) -> str:
        return "".join(f"{k} {v}\n" for k, v in self.items)

    def to_bytes(self) -> bytes:
        return self.to_text().encode("utf-8")

    @classmethod
    def build(
        cls,
        *,
        title: str,
        version: str,
        options: str | Kargs,
        linux: str,
        initrd: str | None = None,
        devicetree: str | None = None,
        overlay_initrds: Sequence[str] = (),
        extra: Iterable[tuple[str, str]] = (),
    ) -> BootEntry:
        """An entry in the order ``ostree_bootconfig_parser_write`` uses: title, version,
        options, devicetree, linux, initrd, overlay initrds, then ``extra`` (e.g. fdtdir)."""
        if overlay_initrds and initrd is None:
            raise ValueError("overlay initrds need a primary initrd")
        known: dict[str, str | None] = {
            "title": title,
            "version": version,
            "options": str(options),
            "devicetree": devicetree,
            "linux": linux,
            "initrd": initrd,
        }
        items = [(k, v) for k, v in known.items() if v is not None]
        items += [("initrd", path) for path in overlay_initrds]
        for k, v in extra:
            if k in known:
                raise ValueError(f"{k!r} has its own argument")
            items.append((k, v))
        for k, v in items:
            _check_item(k, v)
        return cls(tuple(items))

    def get(self, key: str) -> str | None:
        """The value libostree sees: the first ``initrd``, the last of any other key."""
        values = self.get_all(key)
        if not values:
            return None
        return values[0] if key == "initrd" else values[-1]

    def get_all(self, key: str) -> tuple[str, ...]:
        return tuple(v for k, v in self.items if k == key)

    @property
    def title(self) -> str | None:
        return self.get("title")

    @property
    def version(self) -> str | None:
        return self.get("version")

    @property
    def options(self) -> str | None:
        return self.get("options")

    @property
    def linux(self) -> str | None:
        return self.get("linux")

    @property
    def initrd(self) -> str | None:
        return self.get("initrd")

    @property
    def initrds(self) -> tuple[str, ...]:
        """All ``initrd`` lines: the primary one, then overlay initrds."""
        return self.get_all("initrd")

    @property
    def devicetree(self) -> str | None:
        return self.get("devicetree")

    @property
    def fdtdir(self) -> str | None:
        return self.get("fdtdir")

    @property
    def kargs(self) -> Kargs:
        return Kargs.parse(self.options)

    def with_option(self, key: str, value: str) -> BootEntry:
        """Set ``key``: the first line with that key gets ``value`` and later ones go; a
        missing key is appended."""
        _check_item(key, value)
        items: list[tuple[str, str]] = []
        done = False
        for k, v in self.items:
            if k == key:
                if not done:
                    items.append((k, value))
                    done = True
                continue
            items.append((k, v))
        if not done:
            items.append((key, value))
        return BootEntry(tuple(items))

    def with_kargs(self, kargs: Kargs | str) -> BootEntry:
        return self.with_option("options", str(kargs))

    def without(self, key: str) -> BootEntry:
        return BootEntry(tuple(x for x in self.items if x[0] != key))


def _check_item(key: str, value: str) -> None:
    if not key or key[0] not in string.ascii_letters or any(c in " \t\n" for c in key):
        raise ValueError(f"invalid boot loader entry key {key!r}")
    if "\n" in value:
        raise ValueError("boot loader entry values cannot contain a newline")


# ---------------------------------------------------------------------------- file names

_ENTRY_NAME_RE = re.compile(
    r"ostree-(?P<version>[0-9]+)(?:-(?P<osname>[^/]+?))?"
    r"(?:\+(?P<left>[0-9]+)(?:-(?P<done>[0-9]+))?)?\.conf"
)


@attrs.frozen
class EntryFilename:
    """The parts of an ``ostree-*.conf`` entry file name."""

    version: int
    osname: str | None = None
    tries_left: int | None = None
    tries_done: int | None = None


def ostree_entry_filename(
    version_index: int,
    osname: str | None,
    tries_left: int | None = None,
    tries_done: int | None = None,
) -> str:
    """``ostree-<V>-<OS>.conf`` (2022.7); ``osname=None`` gives the 2024.5 ``ostree-<V>.conf``;
    boot counting adds ``+<left>`` or ``+<left>-<done>``."""
    if version_index < 0:
        raise ValueError("entry version must not be negative")
    if osname is not None and (not osname or "/" in osname):
        raise ValueError(f"invalid stateroot name {osname!r}")
    name = f"ostree-{version_index}" if osname is None else f"ostree-{version_index}-{osname}"
    if tries_left is not None:
        name += f"+{tries_left}"
        if tries_done is not None:
            name += f"-{tries_done}"
    elif tries_done is not None:
        raise ValueError("tries_done needs tries_left")
    return name + ".conf"


def parse_entry_filename(name: str) -> EntryFilename:
    m = _ENTRY_NAME_RE.fullmatch(name)
    if m is None:
        raise FormatError(f"not an ostree boot loader entry name: {name!r}")
    left, done = m.group("left"), m.group("done")
    return EntryFilename(
        int(m.group("version")),
        m.group("osname"),
        int(left) if left is not None else None,
        int(done) if done is not None else None,
    )


# ---------------------------------------------------------------------------- ordering

_S_N, _S_I, _S_F, _S_Z = 0, 3, 6, 9
_CMP, _LEN = 2, 3
_NEXT_STATE = (_S_N, _S_I, _S_Z, _S_N, _S_I, _S_I, _S_N, _S_F, _S_F, _S_N, _S_F, _S_Z)
_RESULT_TYPE = (
    _CMP, _CMP, _CMP, _CMP, _LEN, _CMP, _CMP, _CMP, _CMP,
    _CMP, -1, -1, +1, _LEN, _LEN, +1, _LEN, _LEN,
    _CMP, _CMP, _CMP, _CMP, _CMP, _CMP, _CMP, _CMP, _CMP,
    _CMP, +1, +1, -1, _CMP, _CMP, -1, _CMP, _CMP,
)  # fmt: skip


def _isdigit(c: int) -> bool:
    return 0x30 <= c <= 0x39


def strverscmp(a: str, b: str) -> int:
    """glibc's ``strverscmp`` (natural version order) over the UTF-8 bytes."""
    p1 = a.encode() + b"\0"
    p2 = b.encode() + b"\0"
    i = 0
    c1, c2 = p1[0], p2[0]
    state = _S_N + (c1 == 0x30) + _isdigit(c1)
    while (diff := c1 - c2) == 0:
        if c1 == 0:
            return 0
        state = _NEXT_STATE[state]
        i += 1
        c1, c2 = p1[i], p2[i]
        state += (c1 == 0x30) + _isdigit(c1)
    result = _RESULT_TYPE[state * 3 + (c2 == 0x30) + _isdigit(c2)]
    if result == _CMP:
        return diff
    if result == _LEN:
        j = i + 1
        while _isdigit(p1[j]):
            if not _isdigit(p2[j]):
                return 1
            j += 1
        return -1 if _isdigit(p2[j]) else diff
    return result


def _compare_entries(a: BootEntry, b: BootEntry) -> int:
    va, vb = a.version, b.version
    if va is not None and vb is not None:
        return -strverscmp(va, vb)
    return -1 if va is not None else 1


def sort_entries(entries: Iterable[BootEntry]) -> list[BootEntry]:
    """libostree's order: highest ``version`` first (``strverscmp``), unversioned last."""
    return sorted(entries, key=functools.cmp_to_key(_compare_entries))


# ---------------------------------------------------------------------------- U-Boot


def uboot_system_uenv_path(entry: BootEntry) -> str:
    """Sysroot-relative path of the deployment's ``usr/lib/ostree-boot/uEnv.txt``, found
    through the entry's ``ostree=`` argument; DeployError when it has none."""
    target = entry.kargs.get_last_value("ostree")
    if not target:
        raise DeployError("No ostree= kernel argument found in boot loader configuration file")
    return target[1:] + "/usr/lib/ostree-boot/uEnv.txt"


def uboot_uenv(entries: Iterable[BootEntry], system_uenv: str | None = None) -> str:
    """The ``uEnv.txt`` libostree writes for these entries (sorted like :func:`sort_entries`).

    ``system_uenv`` is the text of the default deployment's ``usr/lib/ostree-boot/uEnv.txt``
    (see :func:`uboot_system_uenv_path`), appended after its ``bootargs``, or None if absent.
    """
    lines: list[str] = []
    for i, entry in enumerate(sort_entries(entries)):
        suffix = "" if i == 0 else str(i + 1)
        linux = entry.linux
        if linux is None:
            raise DeployError('No "linux" key in bootloader config')
        lines.append(f"kernel_image{suffix}=/boot{linux}")
        if entry.initrd is not None:
            lines.append(f"ramdisk_image{suffix}=/boot{entry.initrd}")
        if entry.devicetree is not None:
            lines.append(f"fdt_file{suffix}=/boot{entry.devicetree}")
        if entry.fdtdir is not None:
            lines.append(f"fdtdir{suffix}=/boot{entry.fdtdir}")
        if entry.options is not None:
            lines.append(f"bootargs{suffix}={entry.options}")
            if i == 0:
                uboot_system_uenv_path(entry)  # libostree fails without ostree=
                if system_uenv is not None:
                    lines.append(system_uenv)
    # _ostree_sysroot_join_lines: drop a leading empty line and every empty line after the
    # first one (its "previous was empty" flag is never reset).
    out: list[str] = []
    prev_was_empty = False
    for i, line in enumerate(lines):
        if line == "":
            if prev_was_empty or i == 0:
                continue
            prev_was_empty = True
        out.append(line + "\n")
    return "".join(out)
