"""The few Kubernetes API calls the operator and the router make besides kopf's own.

Why this exists: kopf watches and patches our resources, but the operator
must also read Secrets (API keys), DomainMaps and Jobs, create and delete
ClusterSpecializations, and the router follows its DomainMap — without kopf.
One place makes those calls: with the credentials it was given
(:func:`remember_credentials`), over one shared HTTP session per event loop
(opened on first use, closed by :func:`close_session` when the process
stops), with a timeout on every call, raising the typed errors of
:mod:`librarian.kube.errors` with the API server's message — never an
object's data.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from librarian import __version__
from librarian.kube.credentials import Credentials
from librarian.kube.errors import (
    ApiUnreachable,
    Conflict,
    Forbidden,
    Invalid,
    KubernetesApiError,
    LoginFailed,
    NotFound,
    NotLoggedIn,
    SecretNotFound,
    TooManyRequests,
    Unauthorized,
    error_for,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "USER_AGENT",
    "ApiUnreachable",
    "Conflict",
    "Credentials",
    "Forbidden",
    "Invalid",
    "KubernetesApiError",
    "LoginFailed",
    "NotFound",
    "NotLoggedIn",
    "SecretNotFound",
    "TooManyRequests",
    "Unauthorized",
    "close_session",
    "create_object",
    "current_credentials",
    "delete_object",
    "get_json",
    "json_patch_object",
    "patch_object",
    "patch_status",
    "read_secret_value",
    "remember_credentials",
    "request",
]

USER_AGENT = f"qdrant-librarian/{__version__}"
DEFAULT_TIMEOUT_S = 10.0

_credentials: Credentials | None = None
_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)
_sessions_lock = threading.Lock()  # the operator's loop and a router's may share the process


def remember_credentials(credentials: Credentials) -> Credentials:
    """Use ``credentials`` for every later call (in every event loop); returns them."""
    global _credentials
    _credentials = credentials
    return credentials


def current_credentials() -> Credentials:
    if _credentials is None:
        raise NotLoggedIn("not logged in to the Kubernetes API yet")
    return _credentials


def _session() -> aiohttp.ClientSession:
    """This event loop's session, opened on first use (a session belongs to one loop)."""
    loop = asyncio.get_running_loop()
    with _sessions_lock:
        session = _sessions.get(loop)
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                headers={"Accept": "application/json", "User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(total=DEFAULT_TIMEOUT_S),
            )
            _sessions[loop] = session
        return session


async def close_session() -> None:
    """Close this event loop's session (at shutdown); the next call opens a new one."""
    with _sessions_lock:
        session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None and not session.closed:
        await session.close()


async def request(
    method: str,
    path: str,
    *,
    body: Any = None,
    content_type: str = "application/json",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """One call with the current credentials: the parsed answer, or a typed error."""
    credentials = current_credentials()
    headers = {"Content-Type": content_type, **credentials.authorization()}
    try:
        async with _session().request(
            method,
            credentials.url(path),
            data=None if body is None else json.dumps(body),
            headers=headers,
            ssl=credentials.ssl(),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            text = await response.text()
            answer = _parse(text)
            if response.status >= 400:
                raise error_for(
                    method,
                    path,
                    response.status,
                    answer,
                    retry_after=response.headers.get("Retry-After"),
                )
            return answer
    except (aiohttp.ClientError, TimeoutError) as error:
        raise ApiUnreachable(
            f"cannot reach the Kubernetes API at {credentials.server}: {type(error).__name__}"
        ) from None


def _parse(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None  # not JSON (a proxy's error page): the status says enough


async def get_json(path: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """GET ``path``: the object (or list) as a dict."""
    answer = await request("GET", path, timeout_s=timeout_s)
    if not isinstance(answer, dict):
        raise KubernetesApiError(f"GET {path}: the API server's answer is not an object")
    return answer


async def read_secret_value(
    namespace: str,
    name: str,
    key: str,
    *,
    admit: Callable[[Mapping[str, Any]], None] | None = None,
) -> str:
    """The decoded value of ``key`` in Secret ``namespace/name`` (never logged).

    ``admit`` sees the Secret's metadata before any value is decoded and raises
    to refuse it (a Secret its owner did not mark for this use).
    """
    try:
        secret = await get_json(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    except NotFound:
        raise SecretNotFound(
            f"Secret {namespace}/{name} does not exist; create it with the API key under "
            f"key {key!r}",
            status=404,
        ) from None
    if admit is not None:
        admit(secret.get("metadata") or {})
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key]).decode()
    string_data = secret.get("stringData") or {}
    if key in string_data:
        return str(string_data[key])
    keys = ", ".join(sorted({*data, *string_data})) or "none"
    raise SecretNotFound(f"Secret {namespace}/{name} has no key {key!r} (keys: {keys})")


async def patch_status(
    group: str,
    version: str,
    plural: str,
    namespace: str,
    name: str,
    status: dict[str, Any],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Merge-patch ``status`` of a custom resource now (for progress during long work)."""
    path = f"/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}/status"
    await request(
        "PATCH",
        path,
        body={"status": status},
        content_type="application/merge-patch+json",
        timeout_s=timeout_s,
    )


async def create_object(
    path: str, body: dict[str, Any], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> bool:
    """POST ``body`` to collection ``path``; False when it already exists (idempotent)."""
    try:
        await request("POST", path, body=body, timeout_s=timeout_s)
    except Conflict:
        return False
    return True


async def patch_object(
    path: str, patch: dict[str, Any], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Merge-patch the object at ``path`` (metadata only: the operator never writes a spec)."""
    await request(
        "PATCH", path, body=patch, content_type="application/merge-patch+json", timeout_s=timeout_s
    )


async def json_patch_object(
    path: str, operations: list[dict[str, Any]], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict[str, Any]:
    """Apply RFC 6902 ``operations`` (``test`` ops make it conditional); the patched object.

    A failed ``test`` is :class:`Invalid` (HTTP 422) from the API server.
    """
    answer = await request(
        "PATCH",
        path,
        body=operations,
        content_type="application/json-patch+json",
        timeout_s=timeout_s,
    )
    return dict(answer) if isinstance(answer, dict) else {}


async def delete_object(path: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """DELETE the object at ``path`` (its dependents go with it); False when already gone."""
    try:
        await request("DELETE", path, body={"propagationPolicy": "Background"}, timeout_s=timeout_s)
    except NotFound:
        return False
    return True
