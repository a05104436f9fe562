"""The errors of a call to the Kubernetes API, one class per answer a caller acts on.

Why this exists: callers decide by the kind of failure — a missing object is
not an error when deleting, an object that already exists is fine when
creating, a denied call needs RBAC fixed. Matching on a bare HTTP status is
easy to get wrong; these classes name each case and keep what the API server
said (its ``Status.message``), never the body of a successful answer, so a
Secret's data cannot end up in an error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "ApiUnreachable",
    "Conflict",
    "Forbidden",
    "Invalid",
    "KubernetesApiError",
    "LoginFailed",
    "NotFound",
    "NotLoggedIn",
    "SecretNotFound",
    "TooManyRequests",
    "Unauthorized",
    "error_for",
]

MESSAGE_LIMIT = 500
"""The API server's message is cut to this many characters."""


class KubernetesApiError(Exception):
    """A call to the Kubernetes API failed.

    ``status`` is the HTTP status (0 when there was no answer), ``reason`` the
    API server's machine-readable reason (``NotFound``, ``Forbidden``, ...)
    and ``server_message`` its human message, as it said them.
    """

    code: ClassVar[int] = 0

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        server_message: str = "",
    ) -> None:
        self.status = type(self).code if status is None else status
        self.reason = reason
        self.server_message = server_message
        super().__init__(message)


class Unauthorized(KubernetesApiError):
    """401: the credentials are missing, expired or wrong."""

    code = 401


class Forbidden(KubernetesApiError):
    """403: authenticated, but RBAC does not grant this verb on this resource."""

    code = 403


class NotFound(KubernetesApiError):
    """404: the object (or its resource type) does not exist."""

    code = 404


class Conflict(KubernetesApiError):
    """409: the object already exists, or changed since it was read."""

    code = 409


class Invalid(KubernetesApiError):
    """422: the API server rejected the object or the patch (schema, failed test op)."""

    code = 422


class TooManyRequests(KubernetesApiError):
    """429: throttled; ``retry_after_s`` is the server's Retry-After when it gave one."""

    code = 429

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        server_message: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, status=status, reason=reason, server_message=server_message)
        self.retry_after_s = retry_after_s


class ApiUnreachable(KubernetesApiError):
    """No answer: the API server could not be reached or did not answer in time."""


class NotLoggedIn(KubernetesApiError):
    """A call was made before any credentials were set."""


class LoginFailed(KubernetesApiError):
    """No usable credentials: not in a pod, no kubeconfig, or a kubeconfig we cannot use."""


class SecretNotFound(KubernetesApiError):
    """The Secret, or the key in it, does not exist."""


_BY_STATUS: dict[int, type[KubernetesApiError]] = {
    cls.code: cls for cls in (Unauthorized, Forbidden, NotFound, Conflict, Invalid, TooManyRequests)
}


def error_for(
    method: str,
    path: str,
    status: int,
    answer: Any,
    *,
    retry_after: str | None = None,
) -> KubernetesApiError:
    """The typed error for an answer ``status`` >= 400; ``answer`` is its parsed body.

    Only a ``kind: Status`` answer is read (its ``reason`` and ``message``):
    anything else the server sent is left out of the error.
    """
    reason, server_message = "", ""
    if isinstance(answer, Mapping) and answer.get("kind") == "Status":
        reason = str(answer.get("reason") or "")
        server_message = str(answer.get("message") or "")[:MESSAGE_LIMIT]
    text = f"{method} {path} failed with HTTP {status}"
    if reason:
        text += f" ({reason})"
    if server_message:
        text += f": {server_message}"
    cls = _BY_STATUS.get(status, KubernetesApiError)
    if cls is TooManyRequests:
        return TooManyRequests(
            text,
            status=status,
            reason=reason,
            server_message=server_message,
            retry_after_s=_seconds(retry_after),
        )
    return cls(text, status=status, reason=reason, server_message=server_message)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: callers use their own backoff
