"""Typed failures: raised where the cause is known, turned into errno once, at the edge.

Each class names a cause and carries the errno the caller gets; the FUSE binding
(`cwfs.fuse`) is the only place that converts them, and logs each with the operation,
the path, and for a failed S3 request its key, error code, HTTP status and request id.
Failures of
S3 requests are also `StoreError`, so code that only cares that the store failed
catches that, and code that cares why catches the cause (e.g. `NotFound`).
"""

from __future__ import annotations

import errno
from typing import ClassVar, TypeVar

E = TypeVar("E", bound="FsError")


class FsError(Exception):
    """A failure with a known cause, reported to the caller as ``errno``."""

    errno: ClassVar[int] = errno.EIO

    def __init__(
        self,
        message: str,
        *,
        key: str = "",
        op: str = "",
        code: str = "",
        status: int = 0,
        request_id: str = "",
    ) -> None:
        """``status`` is the HTTP status of the S3 answer (0: no answer, or no request)."""
        super().__init__(message)
        self.message = message
        self.key = key
        self.op = op
        self.code = code
        self.status = status
        self.request_id = request_id

    def context(self) -> str:
        """What to log beside the message: the S3 request, when one failed, with what an
        operator or the store's support needs to find it (code, status, request id)."""
        parts = [
            f"{self.op} {self.key!r}" if self.op and self.key else self.op,
            self.code,
            f"HTTP {self.status}" if self.status else "",
            f"request id {self.request_id}" if self.request_id else "",
        ]
        return ", ".join(part for part in parts if part)

    def retyped(self, kind: type[E], message: str | None = None, *, key: str | None = None) -> E:
        """This failure as another cause (a lost race read as EEXIST or ESTALE), keeping
        the facts of its S3 request, so that the one line logging it still has them."""
        return kind(
            self.message if message is None else message,
            op=self.op,
            key=self.key if key is None else key,
            code=self.code,
            status=self.status,
            request_id=self.request_id,
        )


class NotFound(FsError):
    errno = errno.ENOENT


class Exists(FsError):
    errno = errno.EEXIST


class Stale(FsError):
    """The object changed since it was opened or looked up: another writer won."""

    errno = errno.ESTALE


class NotEmpty(FsError):
    errno = errno.ENOTEMPTY


class IsADirectory(FsError):
    errno = errno.EISDIR


class NotADirectory(FsError):
    errno = errno.ENOTDIR


class Busy(FsError):
    errno = errno.EBUSY


class InvalidArgument(FsError):
    errno = errno.EINVAL


class ReadOnly(FsError):
    errno = errno.EROFS


class BadHandle(FsError):
    errno = errno.EBADF


class TooLarge(FsError):
    """Larger than an object can be."""

    errno = errno.EFBIG


class NameTooLong(FsError):
    errno = errno.ENAMETOOLONG


class AccessDenied(FsError):
    errno = errno.EACCES


class QuotaExceeded(FsError):
    errno = errno.EDQUOT


class Unsupported(FsError):
    errno = errno.ENOTSUP


class Cancelled(FsError):
    errno = errno.ECANCELED


class TryAgain(FsError):
    errno = errno.EAGAIN


class NotPermitted(FsError):
    """Not something this filesystem does: a bucket is not made by mkdir."""

    errno = errno.EPERM


class CrossDevice(FsError):
    """Between two buckets: no rename there; ``mv`` copies then deletes instead."""

    errno = errno.EXDEV


class StoreError(FsError):
    """An S3 request failed for good (after the retries of `cwfs.retry`).

    It defines no errno of its own: the cause it is combined with (below) does, and
    an S3 error of no known cause is EIO.
    """

    def __str__(self) -> str:
        return f"{self.context()}: {self.message}"


class ObjectMissing(StoreError, NotFound):
    """NoSuchKey, NoSuchBucket, 404."""


class StoreAccessDenied(StoreError, AccessDenied):
    """AccessDenied, rejected or missing credentials."""


class PreconditionFailed(StoreError, Stale):
    """A conditional request lost: the object is not what the caller expected."""


class Conflict(StoreError, TryAgain):
    """409 ConditionalRequestConflict: a concurrent write to the key was in flight; retry."""


class StoreQuotaExceeded(StoreError, QuotaExceeded):
    """The account is write suspended (CoreWeave's quota answer)."""


class StoreUnavailable(StoreError):
    """No usable answer: connection refused or reset, timeouts, 5xx and throttling after retries."""


class StoreTimeout(StoreUnavailable):
    """No answer in time: connecting took over ``--connect-timeout``, or no byte of the
    answer came for ``--read-timeout``."""

    errno = errno.ETIMEDOUT


class StoreTooLarge(StoreError, TooLarge):
    """EntityTooLarge."""


class KeyTooLong(StoreError, NameTooLong):
    """KeyTooLongError."""


class BadRange(StoreError, InvalidArgument):
    """InvalidRange."""


class ReadStopped(StoreError, Cancelled):
    """A GET was stopped midway because nobody wanted the rest of its bytes."""


class RenameUnsupported(StoreError, Unsupported):
    """The store refused RenameObject as not supported (e.g. a versioned bucket)."""


QUOTA_MESSAGE = "The account is write suspended."
_UNAVAILABLE_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "TooManyRequests",
        "429",
    }
)
_ERROR_BY_CODE: dict[str, type[StoreError]] = {
    "NoSuchKey": ObjectMissing,
    "NotFound": ObjectMissing,
    "404": ObjectMissing,
    "NoSuchBucket": ObjectMissing,
    "AccessDenied": StoreAccessDenied,
    "403": StoreAccessDenied,
    "InvalidAccessKeyId": StoreAccessDenied,
    "SignatureDoesNotMatch": StoreAccessDenied,
    "PreconditionFailed": PreconditionFailed,
    "412": PreconditionFailed,
    "ConditionalRequestConflict": Conflict,
    "InvalidRange": BadRange,
    "EntityTooLarge": StoreTooLarge,
    "KeyTooLongError": KeyTooLong,
}


def store_error(
    op: str, key: str, code: str, message: str, request_id: str = "", status: int = 0
) -> StoreError:
    """The typed error for an S3 error response: its cause decided by the code."""
    if QUOTA_MESSAGE in message:
        kind: type[StoreError] = StoreQuotaExceeded
    elif code in _UNAVAILABLE_CODES or code.startswith("5"):
        kind = StoreUnavailable
    else:
        kind = _ERROR_BY_CODE.get(code, StoreError)
    return kind(message, op=op, key=key, code=code, status=status, request_id=request_id)
