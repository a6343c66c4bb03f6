"""The updater's exit codes: documented, stable, and one per kind of outcome.

======  =====================  ===========================================================
code    name                   meaning
======  =====================  ===========================================================
0       OK                     updated (a reboot was requested) or nothing to do; with
                               ``--check``: an update is available. ``--json`` tells which.
1       FAILURE                any other failure
2       USAGE                  bad options or a bad ``updater.conf``
3       NETWORK                the server could not be reached (after retries)
4       VERIFICATION           a checksum or signature check failed
5       NO_SPACE               the disk is full
6       BUSY                   another updater instance (or the sysroot lock) is active
7       HOOK_FAILED            a post-apply or post-update-check hook failed
8       ROLLED_BACK            the new deployment failed its health checks (or ran out of
                               boot tries); the previous one was made the default
9       HEALTH_FAILED          a required health check failed and no rollback was done
10      REBOOT_REQUIRED        a new deployment is ready but no reboot was done
                               (``--no-reboot``, reboot policy, maintenance window)
11      DOWNGRADE_REFUSED      the server offers a commit older than the booted one
77      NO_UPDATE              ``--check`` only: no update available
======  =====================  ===========================================================

Codes 2-5 match the ``exit_code`` attributes of the ``pyostree.errors`` classes.
"""

from __future__ import annotations

import enum
import errno

from ..errors import (
    FetchError,
    LockError,
    NoSpaceError,
    PyOstreeError,
    UsageError,
    VerificationError,
)

__all__ = ["ExitCode", "exit_code_for"]


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    NETWORK = 3
    VERIFICATION = 4
    NO_SPACE = 5
    BUSY = 6
    HOOK_FAILED = 7
    ROLLED_BACK = 8
    HEALTH_FAILED = 9
    REBOOT_REQUIRED = 10
    DOWNGRADE_REFUSED = 11
    NO_UPDATE = 77


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code for an exception that ended an update run."""
    if isinstance(exc, NoSpaceError):
        return ExitCode.NO_SPACE
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ExitCode.NO_SPACE
    if isinstance(exc, LockError):
        return ExitCode.BUSY
    if isinstance(exc, FetchError):
        return ExitCode.NETWORK
    if isinstance(exc, VerificationError):
        return ExitCode.VERIFICATION
    if isinstance(exc, UsageError):
        return ExitCode.USAGE
    if isinstance(exc, PyOstreeError):
        code = getattr(exc, "exit_code", 1)
        try:
            return ExitCode(code)
        except ValueError:
            return ExitCode.FAILURE
    return ExitCode.FAILURE
