"""The exception tree of pyostree.

::

    PyOstreeError                 root: the CLI prints ``error: <message>`` and exits non-zero
    ├── FormatError               bytes that are not a valid OSTree/GVariant structure
    ├── VerificationError         data that parses but is not trusted
    │   ├── ChecksumError         sha256 differs from the name (``expected``, ``actual``)
    │   └── SignatureError        missing, bad, unknown-key, expired or revoked signature
    ├── FetchError                the download failed (``url``)
    │   ├── HTTPStatusError       non-2xx answer (``status``)
    │   │   └── NotFoundError     404/403/410
    │   ├── TooLargeError         the response exceeded its cap
    │   └── TransientFetchError   retryable: reset, timeout, 5xx, 408, 429
    ├── RepoError                 local repository problems (``path``)
    │   ├── ObjectNotFoundError   a needed object is not in the repository
    │   ├── RefNotFoundError      a ref or rev does not resolve
    │   └── LockError             the repository or sysroot lock is held
    ├── DeployError               sysroot/deployment problems
    └── UsageError                bad command-line usage caught by the library

API misuse (a programming error) raises plain ``ValueError``/``TypeError``.
"""

from __future__ import annotations


class PyOstreeError(Exception):
    """Root of every error pyostree raises on purpose."""

    exit_code: int = 1


class FormatError(PyOstreeError):
    """Bytes that are not a valid serialized structure."""


class VerificationError(PyOstreeError):
    """Something parsed but cannot be trusted."""

    exit_code = 4


class ChecksumError(VerificationError):
    """A checksum did not match the expected value."""

    def __init__(self, message: str, *, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class SignatureError(VerificationError):
    """A signature is missing, invalid, or made by an untrusted, expired or revoked key."""


class FetchError(PyOstreeError):
    """A network download failed."""

    exit_code = 3

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class HTTPStatusError(FetchError):
    """The server answered with a non-success status."""

    def __init__(self, message: str, *, url: str = "", status: int = 0) -> None:
        super().__init__(message, url=url)
        self.status = status


class NotFoundError(HTTPStatusError):
    """404, 403 or 410: the file is not on the server."""


class TooLargeError(FetchError):
    """The response was larger than allowed."""


class TransientFetchError(FetchError):
    """A failure worth retrying (reset, timeout, 5xx, 408, 429)."""

    def __init__(
        self, message: str, *, url: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, url=url)
        self.retry_after = retry_after


class RepoError(PyOstreeError):
    """A problem with a local repository."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ObjectNotFoundError(RepoError):
    """A needed object is not stored in the repository."""


class RefNotFoundError(RepoError):
    """A ref or revision does not resolve."""


class LockError(RepoError):
    """A lock is held by another process."""


class NoSpaceError(RepoError):
    """The filesystem ran out of space (ENOSPC)."""

    exit_code = 5


class DeployError(PyOstreeError):
    """A problem with a sysroot or deployment."""


class UsageError(PyOstreeError):
    """Bad usage detected by the library (bad option combination, bad argument)."""

    exit_code = 2
