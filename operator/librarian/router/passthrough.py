"""Pass-through collections served byte for byte: the request forwarded, the answer returned.

Why this exists: a collection of the default cluster that the operator
allowlisted (``--passthrough``) must behave exactly as Qdrant serves it, every
endpoint included, with no re-implementation that could answer differently.
When the default cluster is a remote Qdrant the router forwards the request
as it came (method, path, query string, body bytes, content type) with the
client's credentials replaced by the cluster's API key, and returns the
cluster's status, content type and body bytes unchanged, error bodies
included. The key is only ever put in the forwarded request's header: it is
never logged and never appears in an answer. An embedded default cluster has
no server to forward to: its pass-through collections are served through the
storage port by the router's own handlers.

The request's limits (body size, JSON depth, deadline) apply before anything
is forwarded; the forwarded call is bounded by the request's timeout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from librarian.router.qdrant_api import ApiError
from librarian.storage.tls import qdrant_ssl_context

__all__ = ["PassthroughProxy", "passthrough_middleware"]

_ANSWER_HEADERS = ("Content-Type", "Content-Encoding")
_REQUEST_HEADERS = ("Content-Type", "Accept")


class PassthroughProxy:
    """Forwards requests to one remote Qdrant (the default cluster)."""

    def __init__(self, base_url: str, api_key: str | None, *, connect_timeout_s: float) -> None:
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # the key stays out of every repr
        return f"PassthroughProxy({self._base!r})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Over https, the same trust as the Qdrant clients: the public CAs plus the
            # internal CA bundle, when one is mounted (LIBRARIAN_CA_BUNDLE).
            context = qdrant_ssl_context() if self._base.startswith("https://") else None
            self._session = aiohttp.ClientSession(
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",),
                connector=aiohttp.TCPConnector(ssl=context) if context is not None else None,
            )
        return self._session

    async def forward(self, request: web.Request, collection: str, timeout: float) -> web.Response:
        """Forward ``request`` (addressed to ``collection`` whatever name it used)."""
        name = request.match_info["name"]
        raw_path = request.rel_url.raw_path
        prefix = f"/collections/{URL.build(path=name).raw_path}"
        rest = raw_path[len(prefix) :] if raw_path.startswith(prefix) else ""
        path = f"/collections/{URL.build(path=collection).raw_path}{rest}"
        query = request.rel_url.raw_query_string
        url = URL(self._base + path + (f"?{query}" if query else ""), encoded=True)
        headers = {k: request.headers[k] for k in _REQUEST_HEADERS if k in request.headers}
        headers["Accept-Encoding"] = "identity"
        if self._api_key:
            headers["api-key"] = self._api_key
        body = await request.read()
        try:
            async with self._client().request(
                request.method,
                url,
                data=body if body else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=timeout, connect=min(timeout, self._connect_timeout_s)
                ),
                allow_redirects=False,
            ) as answer:
                data = await answer.read()
                kept = {k: answer.headers[k] for k in _ANSWER_HEADERS if k in answer.headers}
                return web.Response(status=answer.status, body=data, headers=kept)
        except TimeoutError:
            raise ApiError(
                504, f"Service unavailable: the default cluster did not answer within {timeout:g}s"
            ) from None
        except aiohttp.ClientError as error:
            raise ApiError(
                502,
                f"Service unavailable: the default cluster could not be reached "
                f"({type(error).__name__})",
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Target = Callable[[web.Request], Awaitable[str | None]]


def passthrough_middleware(
    proxy_of: Callable[[], PassthroughProxy | None],
    target_of: Target,
    timeout_of: Callable[[web.Request], float],
    deleted: Callable[[str], Awaitable[None]],
) -> Any:
    """The middleware that forwards every request addressed to a pass-through collection.

    ``target_of(request)`` names the pass-through collection the request addresses
    (its alias resolved), or ``None`` (the library, or no collection at all);
    ``proxy_of()`` is ``None`` while the default cluster has no server to forward to;
    ``deleted(collection)`` is awaited once the cluster has deleted a collection (its
    aliases go with it, as in Qdrant).
    """

    @web.middleware
    async def forwarding(request: web.Request, handler: Handler) -> web.StreamResponse:
        proxy = proxy_of()
        if proxy is None or "name" not in request.match_info:
            return await handler(request)
        if request.match_info.http_exception is not None:
            return await handler(request)
        target = await target_of(request)
        if target is None:
            return await handler(request)
        answer = await proxy.forward(request, target, timeout_of(request))
        resource = request.match_info.route.resource
        whole = resource is not None and resource.canonical == "/collections/{name}"
        if whole and request.method == "DELETE" and answer.status == 200:
            await deleted(target)
        return answer

    return forwarding
