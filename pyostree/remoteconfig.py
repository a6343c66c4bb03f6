"""Loading and saving a repository's remotes (repo ``config`` plus ``remotes.d``)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import RepoError
from .fileio import atomic_write
from .remotes import Remote, RemoteChange, RemoteSet, read_remotes_d
from .repo import Repo


def is_system_repo(repo: Repo) -> bool:
    """A sysroot's ``ostree/repo``."""
    path = repo.path.resolve()
    return path.parts[-2:] == ("ostree", "repo") and (path.parent / "deploy").is_dir()


def system_root(repo: Repo, sysroot: Path | None = None) -> Path:
    """The root whose ``etc/ostree`` configures ``repo``: the given sysroot, the sysroot a
    system repository lives in, or ``/``."""
    if sysroot is not None:
        return sysroot
    return repo.path.resolve().parent.parent if is_system_repo(repo) else Path("/")


def remotes_dirs(repo: Repo, sysroot: Path | None = None) -> list[str]:
    """``etc/ostree/remotes.d`` under the sysroot, read for system repositories (as libostree
    does) or when ``core.add-remotes-config-dir=true``."""
    flag = repo.config.get("core", "add-remotes-config-dir", None)
    if flag == "false" or (flag is None and not is_system_repo(repo) and sysroot is None):
        return []
    return [str(system_root(repo, sysroot) / "etc" / "ostree" / "remotes.d")]


def load_remotes(repo: Repo, sysroot: Path | None = None) -> RemoteSet:
    return RemoteSet.load(repo.config.to_text(), read_remotes_d(remotes_dirs(repo, sysroot)))


def get_remote(repo: Repo, name: str, sysroot: Path | None = None) -> Remote:
    if "://" in name:
        return Remote.for_url(name)
    return load_remotes(repo, sysroot).get(name)


def apply_change(repo: Repo, change: RemoteChange) -> None:
    """Write what an add/delete changed, atomically, and reload the repo config."""
    from .formats.keyfile import KeyFile

    for write in change.writes:
        if write.path is None:
            assert write.text is not None
            repo.config = KeyFile.parse(write.text)
            repo.save_config()
        elif write.text is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(write.path)
        else:
            try:
                os.makedirs(os.path.dirname(write.path), exist_ok=True)
            except OSError as exc:
                raise RepoError(f"cannot create {os.path.dirname(write.path)}: {exc}") from exc
            atomic_write(write.path, write.text.encode())
