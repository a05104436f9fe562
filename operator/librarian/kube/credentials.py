"""How to reach and authenticate to one Kubernetes API server.

Why this exists: the operator logs in through kopf, the router logs in by
itself (it must not depend on kopf); both hand the client the same small
value. It turns into the ``Authorization`` header and the TLS context of each
call; its repr never shows a token, a password or key material.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from librarian.kube.errors import LoginFailed

__all__ = ["Credentials", "to_pem"]


@dataclass(frozen=True)
class Credentials:
    """An API server URL and what proves who we are to it.

    ``token_file`` is read at every call (a service account token is rotated
    on disk); ``ca_data``, ``certificate_data`` and ``key_data`` are PEM text.
    """

    server: str
    namespace: str = "default"
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    scheme: str = "Bearer"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    ca_data: str | None = field(default=None, repr=False)
    certificate_file: str | None = None
    key_file: str | None = None
    certificate_data: str | None = field(default=None, repr=False)
    key_data: str | None = field(default=None, repr=False)
    insecure: bool = False

    def url(self, path: str) -> str:
        return self.server.rstrip("/") + path

    def authorization(self) -> dict[str, str]:
        """The ``Authorization`` header for the next call (empty without credentials)."""
        token = self.token
        if self.token_file:
            try:
                token = Path(self.token_file).read_text().strip()
            except OSError as error:
                raise LoginFailed(
                    f"cannot read the token file {self.token_file}: {error.strerror}"
                ) from None
        if token:
            return {"Authorization": f"{self.scheme or 'Bearer'} {token}"}
        if self.username:
            return {"Authorization": aiohttp.encode_basic_auth(self.username, self.password or "")}
        return {}

    def ssl(self) -> ssl.SSLContext | bool:
        """What aiohttp's ``ssl=`` takes: False for plain HTTP or an insecure server."""
        if not self.server.startswith("https") or self.insecure:
            return False
        return _ssl_context(self)


def to_pem(data: str | bytes) -> str:
    """PEM text from PEM or base64-encoded PEM (as kubeconfig's ``*-data`` fields hold it)."""
    text = data.decode("ascii") if isinstance(data, bytes) else data
    if text.lstrip().startswith("-----BEGIN "):
        return text
    try:
        return base64.b64decode(text, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise LoginFailed("certificate or key data is neither PEM nor base64 PEM") from None


@functools.lru_cache(maxsize=8)
def _ssl_context(credentials: Credentials) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(
            cafile=credentials.ca_file, cadata=credentials.ca_data or None
        )
        with _key_material(credentials) as (certificate, key):
            if certificate:
                context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as error:
        raise LoginFailed(f"cannot use the TLS files of {credentials.server}: {error}") from None
    return context


@contextlib.contextmanager
def _key_material(credentials: Credentials) -> Iterator[tuple[str | None, str | None]]:
    """Paths of the client certificate and key; in-memory data goes to private temp files.

    Python's ssl loads a certificate chain from files only: the files live in
    a directory only we can read, for as long as the context takes to load them.
    """
    certificate, key = credentials.certificate_file, credentials.key_file
    if not (credentials.certificate_data or credentials.key_data):
        yield certificate, key
        return
    with tempfile.TemporaryDirectory(prefix="librarian-tls-") as directory:
        os.chmod(directory, 0o700)
        if credentials.certificate_data:
            certificate = str(Path(directory, "tls.crt"))
            Path(certificate).write_text(credentials.certificate_data)
        if credentials.key_data:
            key = str(Path(directory, "tls.key"))
            Path(key).write_text(credentials.key_data)
        yield certificate, key
