"""Remote configuration: ``[remote "NAME"]`` groups of the repo ``config`` and ``remotes.d``.

:class:`Remote` is one remote with its options typed the way libostree 2022.7 reads them
(reference §3.1, §6.3, §6.4). :class:`RemoteSet` is every remote of a repository: those in
its ``config`` plus those in each ``*.conf`` of the ``remotes.d`` directories. Adding or
deleting a remote returns the new set and the file contents to write (:class:`ConfigWrite`);
the repository layer writes them atomically. The one function here that touches the disk is
:func:`read_remotes_d`, which only reads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import attrs

from .errors import FormatError, RepoError, UsageError
from .formats.keyfile import KeyFile, split_list, unescape_value

__all__ = [
    "SIGN_TYPES",
    "ConfigWrite",
    "Remote",
    "RemoteChange",
    "RemoteSet",
    "add_options",
    "parse_remote_group_name",
    "parse_sign_verify",
    "read_remotes_d",
    "remote_group_name",
    "split_remote_url",
    "validate_remote_name",
]

_GROUP_RE = re.compile(r'remote "(.+)"')
_REMOTE_NAME_RE = re.compile(r"[A-Za-z0-9_][-._A-Za-z0-9_]*")
_URL_SCHEMES = ("http://", "https://", "file://")
_TRUTHY = {"true": True, "1": True, "false": False, "0": False}

OptionValue = str | bool | Sequence[str]
SIGN_TYPES = ("ed25519", "dummy")  # the signature engines libostree knows by name


def parse_sign_verify(spec: str) -> tuple[str, str, str]:
    """``remote add --sign-verify=KEYTYPE=inline:PUBKEY`` (or ``=file:PATH``): the engine, the
    option libostree writes (``verification-KEYTYPE-key`` / ``-file``) and its value. The key
    itself is not checked here, as libostree does not."""
    keytype, sep, rest = spec.partition("=")
    if not sep:
        raise UsageError(f"Failed to parse KEYTYPE=[inline|file]:DATA in {spec}")
    if keytype not in SIGN_TYPES:
        raise UsageError("Requested signature type is not implemented")
    keyref, sep, data = rest.partition(":")
    if keyref == "inline":
        option = f"verification-{keytype}-key"
    elif keyref == "file":
        option = f"verification-{keytype}-file"
    else:
        raise UsageError(f"Invalid key reference {keyref}, expected inline|file")
    if not sep:  # (libostree aborts on an assertion here)
        raise UsageError(f"Failed to parse KEYTYPE=[inline|file]:DATA in {spec}")
    return keytype, option, data


def add_options(
    *,
    branches: Sequence[str] = (),
    contenturl: str | None = None,
    custom_backend: str | None = None,
    settings: Sequence[tuple[str, str]] = (),
    no_gpg_verify: bool = False,
    no_sign_verify: bool = False,
    sign_verify: Sequence[str] = (),
    collection_id: str | None = None,
) -> dict[str, OptionValue]:
    """The options of ``ostree remote add``, in the order ``ot-remote-builtin-add.c`` builds
    them: a key given twice keeps its first place and takes the last value, as in GKeyFile,
    so the config written is the one libostree writes."""
    if no_sign_verify and sign_verify:
        raise UsageError("Cannot specify both --sign-verify and --no-sign-verify")
    out: dict[str, OptionValue] = {}
    if branches:
        out["branches"] = list(branches)
    if contenturl is not None:
        out["contenturl"] = contenturl
    if custom_backend is not None:
        out["custom-backend"] = custom_backend
    for key, value in settings:
        out[key] = value
    if no_gpg_verify or no_sign_verify:  # no signature verification means no GPG either
        out["gpg-verify"] = False
    if no_sign_verify:
        out["sign-verify"] = False
    engines = []
    for spec in sign_verify:
        engine, option, value = parse_sign_verify(spec)
        out[option] = value
        engines.append(engine)
    if engines:
        out["sign-verify"] = ",".join(engines)
    if collection_id is not None:
        out["collection-id"] = collection_id
    return out


def remote_group_name(name: str) -> str:
    return f'remote "{name}"'


def parse_remote_group_name(group: str) -> str | None:
    """The remote name of a ``remote "NAME"`` group, or None for any other group."""
    m = _GROUP_RE.fullmatch(group)
    return m.group(1) if m else None


def validate_remote_name(name: str) -> str:
    """A name libostree accepts for ``remote add``/``delete`` (``[\\w\\d][-._\\w\\d]*``)."""
    if not _REMOTE_NAME_RE.fullmatch(name):
        raise UsageError(f"Invalid remote name {name!r}")
    return name


def split_remote_url(value: str | None) -> tuple[str | None, bool]:
    """``mirrorlist=URL`` → (URL, True); ``URL`` → (URL, False)."""
    if value is not None and value.startswith("mirrorlist="):
        return value[len("mirrorlist=") :], True
    return value, False


def _check_url(url: str) -> None:
    base, _ = split_remote_url(url)
    assert base is not None
    if not base.startswith(_URL_SCHEMES) or len(base) <= len("file://"):
        raise UsageError(f"Invalid URL {url!r}: need http://, https:// or file:// (or mirrorlist=)")


def _string(raw: Mapping[str, str], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        text = unescape_value(value)
    except FormatError as exc:
        raise FormatError(f"{where} {key}: {exc}") from None
    assert isinstance(text, str)
    return text


def _bool(raw: Mapping[str, str], key: str, default: bool, where: str) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    word = value.rstrip(" \t\n\v\f\r")
    if word not in _TRUTHY:
        raise FormatError(f"{where} {key}: value {value!r} cannot be interpreted as a boolean")
    return _TRUTHY[word]


def _sign_verify(raw: Mapping[str, str], key: str, where: str) -> bool | tuple[str, ...]:
    """``sign-verify``: empty/absent → False, a GKeyFile boolean, or a list of engine names."""
    value = _string(raw, key, where)
    if value is None or value == "":
        return False
    if value in _TRUTHY:
        return _TRUTHY[value]
    try:
        engines = tuple(split_list(raw[key]))
    except FormatError as exc:
        raise FormatError(f"{where} {key}: {exc}") from None
    if not engines:
        raise FormatError(f"{where} {key}: empty list of signature engines")
    return engines


def _gpgkeypath(raw: Mapping[str, str], where: str) -> tuple[str, ...]:
    """``ot_keyfile_get_string_list_with_separator_choice(";,")``: one separator kind only."""
    value = raw.get("gpgkeypath")
    if value is None:
        return ()
    used = [sep for sep in ";," if sep in value]
    if not used:
        return (value,)
    if len(used) > 1:
        raise FormatError(f"{where} gpgkeypath: key value list contains more than one separator")
    try:
        return tuple(split_list(value, used[0]))
    except FormatError as exc:
        raise FormatError(f"{where} gpgkeypath: {exc}") from None


@attrs.frozen
class Remote:
    """One configured remote. ``options`` keeps every raw (still escaped) key/value."""

    name: str
    url: str | None = None
    contenturl: str | None = None
    mirrorlist: bool = False
    contenturl_mirrorlist: bool = False
    metalink: str | None = None
    gpg_verify: bool = True
    gpg_verify_summary: bool = False
    gpgkeypath: tuple[str, ...] = ()
    sign_verify: bool | tuple[str, ...] = False
    sign_verify_summary: bool | tuple[str, ...] = False
    verification_ed25519_key: str | None = None
    verification_ed25519_file: str | None = None
    tls_ca_path: str | None = None
    tls_client_cert_path: str | None = None
    tls_client_key_path: str | None = None
    tls_permissive: bool = False
    proxy: str | None = None
    http2: bool = True
    branches: tuple[str, ...] = ()
    collection_id: str | None = None
    unconfigured_state: str | None = None
    custom_backend: str | None = None
    source_path: str | None = None
    options: dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def from_keyfile_group(
        cls, name: str, mapping: Mapping[str, str], *, source_path: str | None = None
    ) -> Remote:
        """Build from the raw values of a ``[remote "NAME"]`` group (see
        :meth:`KeyFile.items`). Values of the wrong shape raise FormatError."""
        raw = dict(mapping)
        where = f"remote {name!r}"
        url, mirrorlist = split_remote_url(_string(raw, "url", where))
        contenturl, content_mirrorlist = split_remote_url(_string(raw, "contenturl", where))
        try:
            branches = tuple(split_list(raw["branches"])) if "branches" in raw else ()
        except FormatError as exc:
            raise FormatError(f"{where} branches: {exc}") from None
        return cls(
            name=name,
            url=url,
            contenturl=contenturl,
            mirrorlist=mirrorlist,
            contenturl_mirrorlist=content_mirrorlist,
            metalink=_string(raw, "metalink", where),
            gpg_verify=_bool(raw, "gpg-verify", True, where),
            gpg_verify_summary=_bool(raw, "gpg-verify-summary", False, where),
            gpgkeypath=_gpgkeypath(raw, where),
            sign_verify=_sign_verify(raw, "sign-verify", where),
            sign_verify_summary=_sign_verify(raw, "sign-verify-summary", where),
            verification_ed25519_key=_string(raw, "verification-ed25519-key", where),
            verification_ed25519_file=_string(raw, "verification-ed25519-file", where),
            tls_ca_path=_string(raw, "tls-ca-path", where),
            tls_client_cert_path=_string(raw, "tls-client-cert-path", where),
            tls_client_key_path=_string(raw, "tls-client-key-path", where),
            tls_permissive=_bool(raw, "tls-permissive", False, where),
            proxy=_string(raw, "proxy", where),
            http2=_bool(raw, "http2", True, where),
            branches=branches,
            collection_id=_string(raw, "collection-id", where),
            unconfigured_state=_string(raw, "unconfigured-state", where),
            custom_backend=_string(raw, "custom-backend", where),
            source_path=source_path,
            options=raw,
        )

    @classmethod
    def for_url(cls, url: str) -> Remote:
        """The anonymous remote of ``ostree pull file:///path`` (no signature checks)."""
        _check_url(url)
        base, mirrorlist = split_remote_url(url)
        return cls(name=url, url=base, mirrorlist=mirrorlist, gpg_verify=False)

    @property
    def group(self) -> str:
        return remote_group_name(self.name)

    @property
    def content_url(self) -> str | None:
        """Where objects and delta parts come from: ``contenturl``, else ``url``."""
        return self.contenturl if self.contenturl is not None else self.url

    @property
    def content_url_is_mirrorlist(self) -> bool:
        return self.contenturl_mirrorlist if self.contenturl is not None else self.mirrorlist

    def get_option(self, key: str, default: str | None = None) -> str | None:
        """Any option, unescaped (``ostree_repo_get_remote_option``)."""
        value = _string(self.options, key, f"remote {self.name!r}")
        return default if value is None else value

    @property
    def keyring_name(self) -> str:
        """``<name>.trustedkeys.gpg``: the per-remote keyring file name (§6.3)."""
        return f"{self.name}.trustedkeys.gpg"


@attrs.frozen
class ConfigWrite:
    """One file the caller must write atomically.

    ``path`` None means the repository's own ``config``; otherwise a ``remotes.d`` file.
    ``text`` None means the file must be removed.
    """

    path: str | None
    text: str | None


@attrs.frozen
class RemoteChange:
    """The result of an edit: the new set and the files to write (possibly none)."""

    remotes: RemoteSet
    writes: tuple[ConfigWrite, ...] = ()


def _remotes_of(kf: KeyFile, source: str | None) -> list[Remote]:
    out = []
    for group in kf.groups():
        name = parse_remote_group_name(group)
        if name is not None:
            out.append(Remote.from_keyfile_group(name, kf.items(group), source_path=source))
    return out


def _option_lines(
    kf: KeyFile, group: str, url: str | None, options: Mapping[str, OptionValue]
) -> None:
    if url is not None:
        if url.startswith("metalink="):
            kf.set(group, "metalink", url[len("metalink=") :])
        else:
            _check_url(url)
            kf.set(group, "url", url)
    for key, value in options.items():
        if isinstance(value, bool):
            kf.set_bool(group, key, value)
        elif isinstance(value, str):
            kf.set(group, key, value)
        else:
            kf.set_list(group, key, list(value))


@attrs.frozen
class RemoteSet:
    """Every remote of a repository, with the texts they were loaded from.

    ``config_text`` is the repository ``config``; ``files`` maps each loaded ``remotes.d``
    path to its text. Remotes keep libostree's rule: one name, one definition.
    """

    config_text: str = ""
    files: dict[str, str] = attrs.field(factory=dict)
    remotes: dict[str, Remote] = attrs.field(factory=dict)

    @classmethod
    def load(cls, config_text: str, conf_files: Iterable[tuple[str, str]] = ()) -> RemoteSet:
        """Read the remotes of ``config_text`` and of ``(path, text)`` remotes.d files (see
        :func:`read_remotes_d`). A remote defined twice raises RepoError."""
        remotes: dict[str, Remote] = {}
        files: dict[str, str] = {}

        def add_all(found: list[Remote], path: str | None) -> None:
            for remote in found:
                if remote.name in remotes:
                    raise RepoError(
                        f'Multiple specifications found for remote "{remote.name}"',
                        path=path or "",
                    )
            for remote in found:
                remotes[remote.name] = remote

        try:
            config = KeyFile.parse(config_text)
        except FormatError as exc:
            raise FormatError(f"config: {exc}") from None
        add_all(_remotes_of(config, None), None)
        for path, text in conf_files:
            try:
                kf = KeyFile.parse(text)
            except FormatError as exc:
                raise FormatError(f"{path}: {exc}") from None
            add_all(_remotes_of(kf, path), path)
            files[path] = text
        return cls(config_text, files, remotes)

    def names(self) -> list[str]:
        """Remote names, sorted (``ostree remote list``)."""
        return sorted(self.remotes)

    def __contains__(self, name: object) -> bool:
        return name in self.remotes

    def __len__(self) -> int:
        return len(self.remotes)

    def get(self, name: str) -> Remote:
        """The remote, or RepoError ``Remote "NAME" not found``."""
        remote = self.remotes.get(name)
        if remote is None:
            raise RepoError(f'Remote "{name}" not found')
        return remote

    def add(
        self,
        name: str,
        url: str | None,
        options: Mapping[str, OptionValue] | None = None,
        *,
        if_not_exists: bool = False,
        target: Literal["repo"] | str = "repo",
    ) -> RemoteChange:
        """``ostree remote add``: ``url`` may be ``mirrorlist=URL`` or ``metalink=URL``;
        options map a key to a string, a bool or a list (written as GLib does).
        ``target`` is ``"repo"`` (the config) or a remotes.d directory (``NAME.conf`` there).
        """
        validate_remote_name(name)
        if name in self.remotes:
            if if_not_exists:
                return RemoteChange(self)
            where = self.remotes[name].source_path or "(in config)"
            raise RepoError(f'Remote configuration for "{name}" already exists: {where}')
        group = remote_group_name(name)
        if target == "repo":
            kf = KeyFile.parse(self.config_text)
            _option_lines(kf, group, url, options or {})
            text = kf.to_text()
            new = RemoteSet(text, dict(self.files), dict(self.remotes))
            path: str | None = None
        else:
            path = os.path.join(target, f"{name}.conf")
            if path in self.files:
                raise RepoError(f"{path} already holds other remotes", path=path)
            kf = KeyFile()
            _option_lines(kf, group, url, options or {})
            text = kf.to_text()
            new = RemoteSet(self.config_text, {**self.files, path: text}, dict(self.remotes))
        remote = Remote.from_keyfile_group(name, kf.items(group), source_path=path)
        new.remotes[name] = remote
        return RemoteChange(new, (ConfigWrite(path, text),))

    def replace(
        self,
        name: str,
        url: str | None,
        options: Mapping[str, OptionValue] | None = None,
        *,
        target: Literal["repo"] | str = "repo",
    ) -> RemoteChange:
        """``ostree remote add --force``: a new remote is added (to ``target``); an existing
        one gets a whole new group where it was defined, moved to the end of its file, as
        libostree does. (libostree rewrites a ``remotes.d`` file with that group alone; other
        remotes sharing the file are kept here.)"""
        validate_remote_name(name)
        old = self.remotes.get(name)
        if old is None:
            return self.add(name, url, options, target=target)
        group = remote_group_name(name)
        path = old.source_path
        kf = KeyFile.parse(self.config_text if path is None else self.files[path])
        kf.remove_group(group)
        _option_lines(kf, group, url, options or {})
        text = kf.to_text()
        if path is None:
            new = RemoteSet(text, dict(self.files), dict(self.remotes))
        else:
            new = RemoteSet(self.config_text, {**self.files, path: text}, dict(self.remotes))
        new.remotes[name] = Remote.from_keyfile_group(name, kf.items(group), source_path=path)
        return RemoteChange(new, (ConfigWrite(path, text),))

    def delete(self, name: str, *, if_exists: bool = False) -> RemoteChange:
        """``ostree remote delete``. A remotes.d file holding only this remote is removed;
        one holding others too is rewritten without it. The caller should also remove the
        repository's ``<name>.trustedkeys.gpg`` (:attr:`Remote.keyring_name`)."""
        validate_remote_name(name)
        remote = self.remotes.get(name)
        if remote is None:
            if if_exists:
                return RemoteChange(self)
            raise RepoError(f'Remote "{name}" not found')
        remaining = {k: v for k, v in self.remotes.items() if k != name}
        path = remote.source_path
        if path is None:
            kf = KeyFile.parse(self.config_text)
            kf.remove_group(remote.group)
            text = kf.to_text()
            return RemoteChange(
                RemoteSet(text, dict(self.files), remaining), (ConfigWrite(None, text),)
            )
        kf = KeyFile.parse(self.files[path])
        kf.remove_group(remote.group)
        files = dict(self.files)
        if any(parse_remote_group_name(g) is not None for g in kf.groups()):
            files[path] = kf.to_text()
            write = ConfigWrite(path, files[path])
        else:
            del files[path]
            write = ConfigWrite(path, None)
        return RemoteChange(RemoteSet(self.config_text, files, remaining), (write,))


# ---------------------------------------------------------------------------- disk (read only)


def read_remotes_d(directories: Iterable[str]) -> list[tuple[str, str]]:
    """``(path, text)`` of every regular ``*.conf`` file in these directories, sorted by name
    within each; missing directories are skipped. Pass directories with any sysroot prefix
    already applied (e.g. ``<sysroot>/etc/ostree/remotes.d``)."""
    found: list[tuple[str, str]] = []
    for directory in directories:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise RepoError(f"cannot list {directory}: {exc.strerror}", path=directory) from exc
        for entry in names:
            path = os.path.join(directory, entry)
            if not entry.endswith(".conf") or not os.path.isfile(path):
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    found.append((path, f.read()))
            except UnicodeDecodeError:
                raise FormatError(f"{path} is not valid UTF-8") from None
            except OSError as exc:
                raise RepoError(f"cannot read {path}: {exc.strerror}", path=path) from exc
    return found
