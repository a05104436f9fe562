"""Who may call the router, and what they may do: Qdrant's API keys and JWTs.

Why this exists: applications already configured for Qdrant send an
``api-key`` header or ``Authorization: Bearer <JWT>``; the router accepts the
same credentials so that pointing them at the library changes only the URL.
A read-write key (management rights) and a read-only key, each with a
secondary for rotation; JWTs are HS256-signed with a read-write key and carry
Qdrant's claims: ``exp`` and ``access`` (``"r"`` or ``"m"`` for every
collection, or a list of ``{"collection", "access": "r"|"rw"}``).

Every route the router serves declares the right it needs in one table
(:data:`Need`); the middleware refuses a route the table does not name, so a
new endpoint cannot be reachable without a decision about who may call it.
Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import jwt
from aiohttp import web
from qdrant_client.http import models

from librarian.contracts.router_keys import (
    ENV_API_KEY,
    ENV_API_KEY_SECONDARY,
    ENV_READ_ONLY_API_KEY,
    ENV_READ_ONLY_API_KEY_SECONDARY,
)
from librarian.router.qdrant_api import ApiError, error_response

__all__ = [
    "ACCESS_KEY",
    "ENV_API_KEY",
    "ENV_API_KEY_SECONDARY",
    "ENV_READ_ONLY_API_KEY",
    "ENV_READ_ONLY_API_KEY_SECONDARY",
    "Access",
    "InsecureBind",
    "Need",
    "RouterKeys",
    "authentication",
    "check_bind",
    "erases_everything",
    "require_manage",
]

log = logging.getLogger("librarian.router.auth")


class Need(Enum):
    """The right a route needs."""

    OPEN = "open"  # probes: no credential
    READ_ANY = "read-any"  # the router's own reports and listings: read on every collection
    READ = "read"  # read the collection the path names
    WRITE = "write"  # change the collection the path names


@dataclass(frozen=True)
class Access:
    """What one credential allows: a global level, or levels per collection."""

    global_level: str | None = None  # "r" or "m"
    collections: Mapping[str, str] = field(default_factory=dict)  # name -> "r" | "rw"

    @property
    def manage(self) -> bool:
        return self.global_level == "m"

    def can_read_all(self) -> bool:
        return self.global_level in ("r", "m")

    def can_read(self, collection: str) -> bool:
        return self.can_read_all() or collection in self.collections

    def can_write(self, collection: str) -> bool:
        return self.manage or self.collections.get(collection) == "rw"


FULL_ACCESS = Access(global_level="m")
READ_ONLY = Access(global_level="r")

ACCESS_KEY: web.RequestKey[Access] = web.RequestKey("librarian_access", Access)
"""Where the middleware leaves a request's rights (for checks that need its body)."""


class InsecureBind(ValueError):
    """A router without keys asked to listen beyond loopback without ``--insecure``."""


@dataclass(frozen=True)
class RouterKeys:
    """The router's keys (empty: authentication is off)."""

    read_write: tuple[str, ...] = field(default=(), repr=False)
    read_only: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RouterKeys:
        def present(*names: str) -> tuple[str, ...]:
            return tuple(environ[n] for n in names if environ.get(n))

        keys = cls(
            read_write=present(ENV_API_KEY, ENV_API_KEY_SECONDARY),
            read_only=present(ENV_READ_ONLY_API_KEY, ENV_READ_ONLY_API_KEY_SECONDARY),
        )
        if keys.read_only and not keys.read_write:
            raise ValueError(
                f"{ENV_READ_ONLY_API_KEY} is set but {ENV_API_KEY} is not: "
                "without a read-write key every caller could write"
            )
        return keys

    @property
    def configured(self) -> bool:
        return bool(self.read_write)

    def access_of(self, request: web.Request) -> Access:
        """The caller's rights; a 401 without a valid credential."""
        api_key = request.headers.get("api-key")
        if api_key is not None:
            if _matches(api_key, self.read_write):
                return FULL_ACCESS
            if _matches(api_key, self.read_only):
                return READ_ONLY
            # Qdrant also accepts a JWT in the api-key header.
            return self._token_access(api_key)
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            token = token.strip()
            if _matches(token, self.read_write):
                return FULL_ACCESS
            if _matches(token, self.read_only):
                return READ_ONLY
            return self._token_access(token)
        raise ApiError(
            401, "Unauthorized: must provide an API key or an Authorization bearer token"
        )

    def _token_access(self, token: str) -> Access:
        for key in self.read_write:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=["HS256"],
                    options={"require": [], "verify_aud": False},
                    leeway=0,
                )
            except jwt.ExpiredSignatureError:
                raise ApiError(401, "Unauthorized: the token has expired") from None
            except jwt.InvalidTokenError:
                continue
            return _claims_access(claims)
        raise ApiError(401, "Unauthorized: invalid API key or token")


def _matches(given: str, keys: tuple[str, ...]) -> bool:
    found = False
    for key in keys:  # every key compared, in constant time
        found |= hmac.compare_digest(given.encode(), key.encode())
    return found


def _claims_access(claims: Mapping[str, Any]) -> Access:
    if "value_exists" in claims:
        # A condition on stored points the router does not check: refused, never ignored.
        raise ApiError(401, "Unauthorized: the value_exists claim is not supported")
    access = claims.get("access")
    if isinstance(access, str):
        if access not in ("r", "m"):
            raise ApiError(401, f"Unauthorized: unknown access {access!r} in the token")
        return Access(global_level=access)
    if isinstance(access, list):
        levels: dict[str, str] = {}
        for entry in access:
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("collection"), str)
                or entry.get("access") not in ("r", "rw")
            ):
                raise ApiError(401, "Unauthorized: malformed collection access in the token")
            if set(entry) - {"collection", "access"}:
                # e.g. a payload restriction: the router cannot honour it, so it grants nothing.
                raise ApiError(401, "Unauthorized: only collection and access are supported")
            levels[entry["collection"]] = entry["access"]
        return Access(collections=levels)
    raise ApiError(401, "Unauthorized: malformed access claim in the token")


def require_manage(request: web.Request, what: str) -> None:
    """A 403 unless the caller has management rights (``access: m`` or the read-write key)."""
    access: Access = request.get(ACCESS_KEY, FULL_ACCESS)
    if not access.manage:
        raise ApiError(403, f"Forbidden: {what} needs management access")


def erases_everything(points_filter: models.Filter | None) -> bool:
    """Whether a delete by this filter selects every point: no filter, or no clause in it."""
    if points_filter is None:
        return True
    return not any(
        clause
        for clause in (
            points_filter.must,
            points_filter.should,
            points_filter.must_not,
            points_filter.min_should,
        )
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def authentication(keys: RouterKeys, needs: Mapping[tuple[str, str], Need]) -> Any:
    """The middleware: authenticates, then checks the route's need from ``needs``.

    ``needs`` maps (method, route path) to its :class:`Need`; a route it does
    not name is refused (HEAD counts as GET).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            resource = request.match_info.route.resource
            method = "GET" if request.method == "HEAD" else request.method
            need = needs.get((method, resource.canonical)) if resource is not None else None
            if need is Need.OPEN:
                return await handler(request)
            access = keys.access_of(request) if keys.configured else FULL_ACCESS
            if resource is None or request.match_info.http_exception is not None:
                return await handler(request)  # a 404/405 of aiohttp, to a known caller
            if need is None:
                raise ApiError(403, f"Forbidden: {method} {resource.canonical} is not allowed")
            _check(need, access, request.match_info.get("name"))
            request[ACCESS_KEY] = access
        except ApiError as error:
            return error_response(error.status, error.message, started)
        return await handler(request)

    return middleware


def _check(need: Need, access: Access, collection: str | None) -> None:
    if need is Need.READ_ANY:
        allowed = access.can_read_all()
    elif need is Need.READ:
        allowed = collection is not None and access.can_read(collection)
    else:
        allowed = collection is not None and access.can_write(collection)
    if not allowed:
        target = f"collection {collection}" if collection else "this endpoint"
        right = "write" if need is Need.WRITE else "read"
        raise ApiError(403, f"Forbidden: no {right} access to {target}")


def check_bind(host: str, keys: RouterKeys, *, insecure: bool) -> None:
    """Refuse to serve without keys beyond loopback unless told ``insecure``; warn when so."""
    if keys.configured:
        return
    if insecure:
        log.warning(
            "the router serves without authentication on %s (--insecure): anyone who can reach "
            "it can read and write every collection; set %s",
            host,
            ENV_API_KEY,
        )
        return
    if not _loopback(host):
        raise InsecureBind(
            f"no API key configured ({ENV_API_KEY}): the router only listens on loopback "
            f"without one; set the key, listen on 127.0.0.1, or pass --insecure"
        )
    log.warning("the router serves without authentication (loopback only): set %s", ENV_API_KEY)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
