"""The few Kubernetes API calls the operator makes besides kopf's own.

Why this exists: kopf handles watching and patching our resources, but the
operator must also read Secrets (API keys). This module keeps the
credentials kopf logged in with (one login for both) and makes those calls
with aiohttp, with timeouts, raising :class:`KubernetesApiError` with messages
that name the object but never its data.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf

from librarian import __version__

USER_AGENT = f"qdrant-librarian/{__version__}"


class KubernetesApiError(Exception):
    """A call to the Kubernetes API failed; ``status`` is the HTTP status (0 if none)."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        self.status = status
        super().__init__(message)


class SecretNotFound(KubernetesApiError):
    """The Secret, or the key in it, does not exist."""


@dataclass
class _Credentials:
    info: kopf.ConnectionInfo | None = None


_current = _Credentials()


def remember_credentials(info: kopf.ConnectionInfo) -> kopf.ConnectionInfo:
    """Keep the credentials kopf logged in with, for our own calls; returns them."""
    _current.info = info
    return info


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if not info.server.startswith("https"):
        return False
    if info.insecure:
        return False
    context = ssl.create_default_context(
        cafile=str(info.ca_path) if info.ca_path else None,
        cadata=info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data,
    )
    if info.certificate_path and info.private_key_path:
        context.load_cert_chain(str(info.certificate_path), str(info.private_key_path))
    return context


async def _request(
    method: str,
    path: str,
    *,
    body: Any = None,
    content_type: str = "application/json",
    timeout_s: float = 10.0,
) -> tuple[int, Any]:
    """One call to the API server with the operator's credentials: (status, parsed body)."""
    info = _current.info
    if info is None:
        raise KubernetesApiError("not logged in to the Kubernetes API yet")
    headers = {
        "Accept": "application/json",
        "Content-Type": content_type,
        "User-Agent": USER_AGENT,  # names the operator (or router) in the API server's audit log
    }
    if info.token:
        headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
    auth = aiohttp.BasicAuth(info.username, info.password or "") if info.username else None
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout_s), auth=auth
            ) as session,
            session.request(
                method,
                info.server.rstrip("/") + path,
                json=body,
                headers=headers,
                ssl=_ssl_context(info),
            ) as response,
        ):
            data = await response.json(content_type=None) if response.status < 400 else None
            return response.status, data
    except (aiohttp.ClientError, TimeoutError) as error:
        raise KubernetesApiError(
            f"cannot reach the Kubernetes API: {type(error).__name__}"
        ) from None


async def get_json(path: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """GET ``path`` from the API server with the operator's credentials."""
    status, data = await _request("GET", path, timeout_s=timeout_s)
    if status == 404:
        raise KubernetesApiError(f"{path} not found", status=404)
    if status >= 400:
        raise KubernetesApiError(f"GET {path} failed with HTTP {status}", status=status)
    return dict(data or {})


async def read_secret_value(namespace: str, name: str, key: str) -> str:
    """The decoded value of ``key`` in Secret ``namespace/name`` (never logged)."""
    try:
        secret = await get_json(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    except KubernetesApiError as error:
        if error.status == 404:
            raise SecretNotFound(
                f"Secret {namespace}/{name} does not exist; create it with the API key under "
                f"key {key!r}",
                status=404,
            ) from None
        raise
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
    timeout_s: float = 10.0,
) -> None:
    """Merge-patch ``status`` of a custom resource now (for progress during long work)."""
    path = f"/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}/status"
    code, _ = await _request(
        "PATCH",
        path,
        body={"status": status},
        content_type="application/merge-patch+json",
        timeout_s=timeout_s,
    )
    if code >= 400:
        raise KubernetesApiError(f"PATCH {path} failed with HTTP {code}", status=code)


async def create_object(path: str, body: dict[str, Any], *, timeout_s: float = 10.0) -> bool:
    """POST ``body`` to collection ``path``; False when it already exists (idempotent)."""
    code, _ = await _request("POST", path, body=body, timeout_s=timeout_s)
    if code == 409:
        return False
    if code >= 400:
        raise KubernetesApiError(f"POST {path} failed with HTTP {code}", status=code)
    return True


async def patch_object(path: str, patch: dict[str, Any], *, timeout_s: float = 10.0) -> None:
    """Merge-patch the object at ``path`` (metadata only: the operator never writes a spec)."""
    code, _ = await _request(
        "PATCH", path, body=patch, content_type="application/merge-patch+json", timeout_s=timeout_s
    )
    if code >= 400:
        raise KubernetesApiError(f"PATCH {path} failed with HTTP {code}", status=code)


async def delete_object(path: str, *, timeout_s: float = 10.0) -> bool:
    """DELETE the object at ``path`` (its dependents go with it); False when already gone."""
    code, _ = await _request(
        "DELETE", path, body={"propagationPolicy": "Background"}, timeout_s=timeout_s
    )
    if code == 404:
        return False
    if code >= 400:
        raise KubernetesApiError(f"DELETE {path} failed with HTTP {code}", status=code)
    return True
