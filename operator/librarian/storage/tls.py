"""Trusting an internal certificate authority for https Qdrant clusters.

Why this exists: Qdrant clusters inside a company are often served over https
with certificates from an internal CA that no public bundle knows. The chart
(``jobs.caBundle``) mounts that CA's PEM file into the operator, the router and
every Job pod and names it in ``LIBRARIAN_CA_BUNDLE``; this module turns it into
the ``ssl.SSLContext`` each Qdrant connection verifies with.

Why not ``SSL_CERT_FILE`` or ``REQUESTS_CA_BUNDLE``: httpx (under qdrant-client)
reads ``SSL_CERT_FILE`` instead of its default bundle, not in addition to it, so a
cluster with a public certificate (Qdrant Cloud) would stop verifying;
``REQUESTS_CA_BUNDLE`` is read by requests only; and aiohttp reads neither. An
explicit context holding both the default bundle (certifi's, as httpx uses) and
the internal CA, passed to qdrant-client's ``verify=`` and aiohttp's ``ssl=``,
works the same for every client and adds trust instead of replacing it.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Mapping

import certifi

__all__ = ["CA_BUNDLE_ENV", "CaBundleError", "ca_bundle_path", "qdrant_ssl_context"]

CA_BUNDLE_ENV = "LIBRARIAN_CA_BUNDLE"
"""The path of a PEM file of CA certificates trusted, besides the public ones, for https Qdrant."""


class CaBundleError(ValueError):
    """The CA bundle cannot be read; the message names the file and what is wrong."""


def ca_bundle_path(environ: Mapping[str, str] | None = None) -> str | None:
    """The CA bundle named in the environment (``None``: only the public CAs are trusted)."""
    path = (os.environ if environ is None else environ).get(CA_BUNDLE_ENV, "").strip()
    return path or None


@functools.lru_cache(maxsize=8)
def _context(path: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    try:
        context.load_verify_locations(cafile=path)
    except FileNotFoundError:
        raise CaBundleError(
            f"{CA_BUNDLE_ENV}={path}: no such file (is the CA bundle's ConfigMap or Secret "
            "mounted, and does it hold the key jobs.caBundle.key names?)"
        ) from None
    except (OSError, ssl.SSLError) as error:
        raise CaBundleError(
            f"{CA_BUNDLE_ENV}={path}: not a PEM file of CA certificates ({error})"
        ) from None
    return context


def qdrant_ssl_context(path: str | None = None) -> ssl.SSLContext | None:
    """The context verifying https Qdrant clusters: the public CAs plus those of ``path``
    (default: the file named by ``LIBRARIAN_CA_BUNDLE``); ``None`` when no bundle is given,
    so clients keep their own default."""
    path = path or ca_bundle_path()
    return _context(path) if path else None
