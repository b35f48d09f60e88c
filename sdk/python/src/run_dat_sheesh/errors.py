"""Exceptions raised by the client: one class per kind of HTTP failure, all carrying status and message."""

from __future__ import annotations

from typing import Optional


class RdsError(Exception):
    """Base class: `status` is the HTTP status (None when no answer came, or for a failure inside a
    streamed answer), `message` the server's text."""

    def __init__(
        self, message: str, status: Optional[int] = None, request_id: Optional[str] = None
    ) -> None:
        super().__init__(f"{status} {message}" if status is not None else message)
        self.status = status
        self.message = message
        self.request_id = request_id


class APIConnectionError(RdsError):
    """The manager could not be reached, or the connection broke before an answer."""


class ValidationError(RdsError):
    """400, 413 or 415: the request was refused as invalid; nothing changed."""


class AuthenticationError(RdsError):
    """401: no valid API key."""


class ForbiddenError(RdsError):
    """403: authenticated but not allowed."""


class NotFoundError(RdsError):
    """404: unknown or destroyed entity."""


class ConflictError(RdsError):
    """409: wrong state (e.g. exec on a stopped VM), busy, or in use."""


class RateLimitError(RdsError):
    """429: a rate limit, the VM quota or the agent's concurrency limit (see `message`)."""

    def __init__(
        self,
        message: str,
        status: Optional[int] = 429,
        request_id: Optional[str] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message, status, request_id)
        self.retry_after = retry_after


class ServerError(RdsError):
    """5xx: the manager, the VMM or the guest agent failed. Also a streamed exec/run that the manager
    could not finish (its `error` line), with `status` None: that answer began as a 200."""


_BY_STATUS = {
    400: ValidationError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: ValidationError,
    415: ValidationError,
}


def error_for(status: int, message: str, request_id: Optional[str], retry_after: Optional[str]) -> RdsError:
    if status == 429:
        try:
            ra = float(retry_after) if retry_after is not None else None
        except ValueError:
            ra = None
        return RateLimitError(message, status, request_id, ra)
    if status >= 500:
        return ServerError(message, status, request_id)
    return _BY_STATUS.get(status, RdsError)(message, status, request_id)
