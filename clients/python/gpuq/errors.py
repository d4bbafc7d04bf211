"""The errors of the gpuq client.

Every error reply of gpuqd has the shape ``{"error": {"code", "message",
"field"}}`` (doc/api.md, "Conventions"); it is raised as an instance of
:class:`Error`, or of the subclass for its code.  Connection failures
(refused, reset, socket timeouts) are not wrapped: they are the standard
library's :class:`OSError` subclasses.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "Error", "InvalidRequest", "NotFound", "UnknownClass", "TooLarge",
    "QueueFull", "Conflict", "StaleToken", "BadState", "Timeout",
    "Unavailable", "Draining", "Busy", "StoreFailure", "StoreFull",
    "MethodNotAllowed", "Unauthorized", "Forbidden", "JobFailed",
    "error_from_reply",
]


class Error(Exception):
    """A gpuq error reply (or a client-side failure of the same kind).

    status: the HTTP status (None when the error was raised by the client
    itself, e.g. :meth:`gpuq.Client.wait` running out of time); code: the
    error code (``"invalid"``, ``"unknown_class"``, ...); message: the
    daemon's message; field: the body field or query parameter to blame,
    or None; body: the whole parsed reply, when there was one."""

    def __init__(self, status: Optional[int], code: str, message: str,
                 field: Optional[str] = None,
                 body: Optional[Any] = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.body = body

    def __str__(self) -> str:
        where = " (field %s)" % self.field if self.field else ""
        status = "%s " % self.status if self.status is not None else ""
        return "%s%s: %s%s" % (status, self.code, self.message, where)

    def __repr__(self) -> str:
        return "%s(status=%r, code=%r, message=%r, field=%r)" % (
            type(self).__name__, self.status, self.code, self.message,
            self.field)


class InvalidRequest(Error):
    """400 ``invalid``: a field is missing, of the wrong type or out of
    range (``field`` names it)."""


class NotFound(Error):
    """404 ``not_found``: no such job, lease, lock or route."""


class UnknownClass(NotFound, ValueError):
    """404 ``unknown_class``: the class is not configured.  Also a
    :class:`ValueError`, as the application this client replaces
    expects."""


class TooLarge(Error):
    """413 ``too_large``: the body or the payload is over its limit."""


class QueueFull(Error):
    """429 ``queue_full``: the class queue is full.  ``retry_after`` is the
    ``Retry-After`` header in seconds (None if absent)."""

    def __init__(self, *args: Any, retry_after: Optional[float] = None,
                 **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.retry_after = retry_after


class Conflict(Error):
    """409: a conflict with the job's current state."""


class StaleToken(Conflict):
    """409 ``stale_token``: the lease or lock token is no longer the live
    grant's (it expired, was cancelled or re-granted)."""


class BadState(Conflict):
    """409 ``bad_state``: not allowed in the job's current state."""


class Timeout(Error):
    """408 ``timeout``: a lock wait ran out (the waiter was removed); also
    raised by :meth:`gpuq.Client.wait` (status None) when the job is not
    finished in time."""


class Unavailable(Error):
    """503/507: the daemon cannot take the request now."""


class Draining(Unavailable):
    """503 ``draining``: the daemon is shutting down."""


class Busy(Unavailable):
    """503 ``busy``: too many parked long-polls and streams."""


class StoreFailure(Unavailable):
    """503 ``store_failure``: the store could not commit; nothing was
    changed."""


class StoreFull(Unavailable):
    """507 ``store_full``: the disk is full; nothing was changed."""


class MethodNotAllowed(Error):
    """405 ``method_not_allowed``."""


class Unauthorized(Error):
    """401: no or a wrong access token."""


class Forbidden(Unauthorized):
    """403: the token may not do this."""


class JobFailed(Error):
    """A drop-in request (chat) whose job did not succeed: 502 (failed,
    dead), 504 (expired), 409 (cancelled), or an error event inside a
    stream (status 200).  ``code`` is the job's ``error.code``."""


_BY_CODE: Dict[str, Type[Error]] = {
    "invalid": InvalidRequest,
    "not_found": NotFound,
    "unknown_class": UnknownClass,
    "too_large": TooLarge,
    "queue_full": QueueFull,
    "stale_token": StaleToken,
    "bad_state": BadState,
    "timeout": Timeout,
    "draining": Draining,
    "busy": Busy,
    "store_failure": StoreFailure,
    "store_full": StoreFull,
    "method_not_allowed": MethodNotAllowed,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
}

_BY_STATUS: Dict[int, Type[Error]] = {
    400: InvalidRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
    405: MethodNotAllowed, 408: Timeout, 409: Conflict, 413: TooLarge,
    429: QueueFull, 503: Unavailable, 507: StoreFull,
}


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    v = headers.get("retry-after")
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None


def error_from_reply(status: int, headers: Mapping[str, str],
                     body: Any, job_reply: bool = False) -> Error:
    """The exception for an error reply.  headers: lower-case names.
    job_reply: the request was a drop-in whose job may have ended badly
    (502/504/409 then mean :class:`JobFailed`)."""
    code, message, field = "http_%d" % status, "HTTP %d" % status, None
    if isinstance(body, dict):
        e = body.get("error")
        if isinstance(e, dict):
            code = str(e.get("code") or code)
            message = str(e.get("message") or message)
            f = e.get("field")
            field = f if isinstance(f, str) else None
        elif isinstance(e, str):
            message = e
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    cls: Type[Error]
    if status == 401:
        cls = Unauthorized
    elif status == 403:
        cls = Forbidden
    elif job_reply and (status in (502, 504) or (
            status == 409 and code not in ("stale_token", "bad_state"))):
        cls = JobFailed
    elif code in _BY_CODE:
        cls = _BY_CODE[code]
    else:
        cls = _BY_STATUS.get(status, Error)
    if cls is QueueFull:
        return QueueFull(status, code, message, field, body,
                         retry_after=_retry_after(headers))
    return cls(status, code, message, field, body)
