"""The /etc three-way merge of a new deployment, as libostree 2022.7 does it.

``orig`` is the merge deployment's ``usr/etc`` (the defaults it shipped), ``modified`` its
``etc`` (what the admin made of them) and ``new`` the new deployment's ``etc`` (a fresh copy of
its own defaults). The diff ``orig`` → ``modified`` compares type, uid, gid, mode and content or
link target, never xattrs (``ostree_diff_dirs`` with ``IGNORE_XATTRS``). Then:

* paths only in ``orig`` (removed locally) are deleted from ``new``;
* paths that differ, or only exist in ``modified``, are copied from ``modified`` into ``new``
  (the local version always wins), creating missing parents with ``modified``'s metadata;
* a locally modified file whose new default is a directory is an error;
* sockets, fifos and devices at the top of a change are ignored.

Nothing in ``orig`` or ``modified`` is ever written to.

:func:`diff_deployment_etc` and :func:`format_etc_diff` are ``ostree admin config-diff``: the
same comparison of a deployment's ``usr/etc`` with its ``etc``, listed in the order GLib
enumerates directories (see :mod:`pyostree.glibdir`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import attrs

from .errors import DeployError
from .glibdir import glib_listdir

__all__ = [
    "EtcDiff",
    "diff_deployment_etc",
    "diff_etc",
    "format_etc_diff",
    "merge_etc",
]

_CHUNK = 256 * 1024


@attrs.frozen
class EtcDiff:
    """Relative paths, in the order libostree finds them (directories before their children)."""

    modified: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()


def _same_content(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca = fa.read(_CHUNK)
            cb = fb.read(_CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def _differs(a: Path, sta: os.stat_result, b: Path, stb: os.stat_result) -> bool:
    """Whether two entries of the same type would get different OSTree content checksums."""
    if (sta.st_uid, sta.st_gid, sta.st_mode) != (stb.st_uid, stb.st_gid, stb.st_mode):
        return True
    if stat.S_ISLNK(sta.st_mode):
        return os.readlink(a) != os.readlink(b)
    if stat.S_ISREG(sta.st_mode):
        return sta.st_size != stb.st_size or not _same_content(a, b)
    return False


def _listdir(path: Path, glib_order: bool) -> list[str]:
    return glib_listdir(path) if glib_order else sorted(os.listdir(path))


def _add_recursive(root: Path, rel: str, added: list[str], glib_order: bool) -> None:
    for name in _listdir(root / rel, glib_order):
        child = f"{rel}/{name}"
        added.append(child)
        if stat.S_ISDIR(os.lstat(root / child).st_mode):
            _add_recursive(root, child, added, glib_order)


def _diff_dir(
    orig: Path, modified: Path, rel: str, out: tuple[list[str], list[str], list[str]],
    glib_order: bool,
) -> None:
    out_mod, out_rm, out_add = out
    odir = orig / rel if rel else orig
    mdir = modified / rel if rel else modified
    onames = _listdir(odir, glib_order)
    for name in onames:
        child = f"{rel}/{name}" if rel else name
        sta = os.lstat(odir / name)
        try:
            stb = os.lstat(mdir / name)
        except FileNotFoundError:
            out_rm.append(child)
            continue
        if stat.S_IFMT(sta.st_mode) != stat.S_IFMT(stb.st_mode):
            out_mod.append(child)
            continue
        if _differs(odir / name, sta, mdir / name, stb):
            out_mod.append(child)
        if stat.S_ISDIR(sta.st_mode):
            _diff_dir(orig, modified, child, out, glib_order)
    oset = set(onames)
    for name in _listdir(mdir, glib_order):
        if name in oset:
            continue
        child = f"{rel}/{name}" if rel else name
        out_add.append(child)
        if stat.S_ISDIR(os.lstat(mdir / name).st_mode):
            _add_recursive(modified, child, out_add, glib_order)


def _diff(orig: Path, modified: Path, glib_order: bool) -> EtcDiff:
    out: tuple[list[str], list[str], list[str]] = ([], [], [])
    _diff_dir(orig, modified, "", out, glib_order)
    return EtcDiff(tuple(out[0]), tuple(out[1]), tuple(out[2]))


def diff_etc(orig: Path, modified: Path) -> EtcDiff:
    """Modified, removed and added paths between two trees (xattrs ignored), by name."""
    try:
        return _diff(orig, modified, glib_order=False)
    except OSError as exc:
        raise DeployError(
            f"During /etc merge: While computing configuration diff: {exc.strerror}: "
            f"{exc.filename}"
        ) from exc


def diff_deployment_etc(deployment_dir: Path) -> EtcDiff:
    """``ostree admin config-diff``: how a deployment's ``etc`` differs from its defaults in
    ``usr/etc``. An entry is modified when its type, uid, gid, mode, content or link target
    differs (xattrs are ignored, as ``OSTREE_DIFF_FLAGS_IGNORE_XATTRS`` does); a modified
    directory is still descended into. Paths come in GLib's enumeration order."""
    orig, modified = deployment_dir / "usr/etc", deployment_dir / "etc"
    try:
        for top in (orig, modified):
            os.lstat(top)
        return _diff(orig, modified, glib_order=True)
    except OSError as exc:
        raise DeployError(
            f"Error when getting information for file \u201c{exc.filename}\u201d: {exc.strerror}"
        ) from exc


def format_etc_diff(diff: EtcDiff) -> str:
    """``ostree_diff_print``: ``M``, then ``D``, then ``A`` lines, four spaces, relative path."""
    lines = [f"M    {p}\n" for p in diff.modified]
    lines += [f"D    {p}\n" for p in diff.removed]
    lines += [f"A    {p}\n" for p in diff.added]
    return "".join(lines)


# ---------------------------------------------------------------------------- copying


def _copy_xattrs(src: Path | int, dest: Path | int) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        value = os.getxattr(src, name, follow_symlinks=False)
        try:
            os.setxattr(dest, name, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise


def _copy_attributes(src: Path, dest: Path, xattrs: bool) -> None:
    """xattrs, then owner, then mode of a directory (``dirfd_copy_attributes_and_xattrs``)."""
    if xattrs:
        _copy_xattrs(src, dest)
    st = os.lstat(src)
    os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(dest, stat.S_IMODE(st.st_mode))


def _copy_file(src: Path, st: os.stat_result, dest: Path, xattrs: bool) -> None:
    """``glnx_file_copy_at`` with OVERWRITE: a regular file or a symlink, with metadata."""
    tmp = dest.with_name(f".{dest.name}.etcmerge-tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), tmp)
        os.chown(tmp, st.st_uid, st.st_gid, follow_symlinks=False)
        if xattrs:
            _copy_xattrs(src, tmp)
        os.replace(tmp, dest)
        return
    if not stat.S_ISREG(st.st_mode):
        raise DeployError(f"Cannot copy non-regular/non-symlink file: {src}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open(src, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        if xattrs:
            _copy_xattrs(src, fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, dest)


def _copy_dir(src: Path, dest: Path, xattrs: bool) -> None:
    """``copy_dir_recurse``: make ``dest`` (0700, then src's attributes) and copy everything."""
    try:
        os.mkdir(dest, 0o700)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(dest).st_mode):
            raise
    _copy_attributes(src, dest, xattrs)
    for name in sorted(os.listdir(src)):
        child = src / name
        st = os.lstat(child)
        if stat.S_ISDIR(st.st_mode):
            _copy_dir(child, dest / name, xattrs)
        else:
            _copy_file(child, st, dest / name, xattrs)


def _ensure_parent(modified: Path, new: Path, rel: str, xattrs: bool) -> None:
    """``ensure_directory_from_template``: create ``new/rel`` (and missing parents) with the
    metadata of ``modified/rel``; an existing directory just gets that metadata."""
    if not stat.S_ISDIR(os.stat(modified / rel).st_mode):
        raise DeployError(f"During /etc merge: {modified / rel} is not a directory")
    while True:
        try:
            os.mkdir(new / rel, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            parent = os.path.dirname(rel)
            if parent:
                _ensure_parent(modified, new, parent, xattrs)
                continue
        break
    _copy_attributes(modified / rel, new / rel, xattrs)


def _copy_modified(
    modified: Path, new: Path, rel: str, xattrs: bool, log: Callable[[str], None]
) -> None:
    """``copy_modified_config_file``: put ``modified/rel`` into ``new``, the local version wins."""
    mst = os.lstat(modified / rel)
    parent = os.path.dirname(rel)
    if parent:
        _ensure_parent(modified, new, parent, xattrs)
    try:
        nst = os.lstat(new / rel)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(nst.st_mode):
            if not stat.S_ISDIR(mst.st_mode):
                raise DeployError(
                    "During /etc merge: Modified config file newly defaults to directory "
                    f"'{rel}', cannot merge"
                )
            return
        os.unlink(new / rel)
    if stat.S_ISDIR(mst.st_mode):
        _copy_dir(modified / rel, new / rel, xattrs)
    elif stat.S_ISLNK(mst.st_mode) or stat.S_ISREG(mst.st_mode):
        _copy_file(modified / rel, mst, new / rel, xattrs)
    else:
        log(f"Ignoring non-regular/non-symlink file found during /etc merge: {rel}")


def _rm_rf(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        for name in os.listdir(path):
            _rm_rf(path / name)
        os.rmdir(path)
    else:
        os.unlink(path)


def merge_etc(
    orig: Path, modified: Path, new: Path, *, xattrs: bool = True,
    log: Callable[[str], None] | None = None,
) -> EtcDiff:
    """Apply the local changes (``orig`` → ``modified``) onto ``new``; returns the diff."""
    diff = diff_etc(orig, modified)
    logger = log or (lambda _msg: None)
    logger(
        f"Copying /etc changes: {len(diff.modified)} modified, {len(diff.removed)} removed, "
        f"{len(diff.added)} added"
    )
    try:
        for rel in diff.removed:
            _rm_rf(new / rel)
        for rel in diff.modified + diff.added:
            _copy_modified(modified, new, rel, xattrs, logger)
    except OSError as exc:
        raise DeployError(f"During /etc merge: {exc.strerror or exc}: {exc.filename}") from exc
    return diff
