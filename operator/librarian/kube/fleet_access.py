"""Turning a spec's cluster references into connectable fleet entries, without a confused deputy.

Why this exists: API keys never live in a spec. A cluster names a Secret
(``apiKeySecretRef``, read from the DomainMap's namespace) or an environment
variable of the operator (``apiKeyEnv``); this resolves them into
:class:`ClusterConfig` objects whose repr hides the key.

The operator and the router hold more credentials than the author of a
DomainMap: resolving a reference must not hand them to whoever writes a spec.
So a key is used only when its owner allowed it: a Secret labelled
``librarian.dev/qdrant-credentials: "true"`` in the resource's own namespace,
a variable named in the operator's ``allowedApiKeyEnv``, and a cluster reached
over https (or whose host is in ``insecureHosts``). Each refusal is a
:class:`CredentialRefused` whose ``reason`` names the rule; it is raised
before any cluster is contacted, and its message never holds a key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from librarian.contracts.metadata import CREDENTIALS_LABEL
from librarian.kube.client import SecretNotFound, read_secret_value
from librarian.kube.errors import KubernetesApiError
from librarian.kube.spec import ClusterRef, SecretRef
from librarian.storage.fleet import ClusterConfig

__all__ = [
    "ApiKeyEnvNotAllowed",
    "ApiKeyMissing",
    "CredentialPolicy",
    "CredentialRefused",
    "InsecureTransport",
    "SecretNotAllowed",
    "resolve_clusters",
]


class ApiKeyMissing(SecretNotFound):
    """An ``apiKeyEnv`` names an environment variable that is not set."""


class CredentialRefused(KubernetesApiError):
    """A cluster's key may not be used as the spec asks; ``reason`` names the rule."""

    rule = "CredentialRefused"

    def __init__(self, message: str) -> None:
        super().__init__(message, reason=type(self).rule)


class SecretNotAllowed(CredentialRefused):
    """The Secret is not labelled for Qdrant credentials, or lives in another namespace."""

    rule = "SecretNotAllowed"


class ApiKeyEnvNotAllowed(CredentialRefused):
    """``apiKeyEnv`` names a variable the operator's configuration does not list."""

    rule = "ApiKeyEnvNotAllowed"


class InsecureTransport(CredentialRefused):
    """A key would go over plain HTTP to a host not listed in ``insecureHosts``."""

    rule = "InsecureTransport"


@dataclass(frozen=True)
class CredentialPolicy:
    """What the operator's configuration allows (``credentials`` section).

    ``allowed_api_key_env``: the only variables ``apiKeyEnv`` may name.
    ``insecure_hosts``: hosts a key may be sent to over plain HTTP (a local test cluster).
    """

    allowed_api_key_env: frozenset[str] = frozenset()
    insecure_hosts: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, allowed_api_key_env: Iterable[str] = (), insecure_hosts: Iterable[str] = ()
    ) -> CredentialPolicy:
        return cls(frozenset(allowed_api_key_env), frozenset(h.lower() for h in insecure_hosts))

    def check(self, ref: ClusterRef, namespace: str) -> None:
        """Refuse ``ref`` before anything is read or sent; embedded clusters send nothing."""
        if ref.secret is not None and ref.secret.namespace not in (None, namespace):
            raise SecretNotAllowed(
                f"cluster {ref.name!r}: apiKeySecretRef names Secret "
                f"{ref.secret.namespace}/{ref.secret.name}, outside namespace {namespace}: "
                f"a key Secret must live in the resource's own namespace; create it in "
                f'{namespace} with the label {CREDENTIALS_LABEL}: "true" and drop '
                "apiKeySecretRef.namespace"
            )
        if ref.api_key_env and ref.api_key_env not in self.allowed_api_key_env:
            allowed = ", ".join(sorted(self.allowed_api_key_env)) or "none"
            raise ApiKeyEnvNotAllowed(
                f"cluster {ref.name!r}: apiKeyEnv {ref.api_key_env} is not in the operator's "
                f"allowedApiKeyEnv (allowed: {allowed}); add it to the list in the operator's "
                "configuration, or use apiKeySecretRef with a labelled Secret"
            )
        if ref.url and (ref.secret is not None or ref.api_key_env):
            parts = urlsplit(ref.url)
            host = (parts.hostname or "").lower()
            if parts.scheme != "https" and host not in self.insecure_hosts:
                raise InsecureTransport(
                    f"cluster {ref.name!r}: its API key would be sent over {parts.scheme}:// "
                    f"to {host or ref.url}; use an https:// url, or add {host!r} to the "
                    "operator's insecureHosts"
                )

    def admit_secret(
        self, ref: ClusterRef, secret: SecretRef, namespace: str
    ) -> Callable[[Mapping[str, Any]], None]:
        """A check of a read Secret's metadata, run before its value is decoded."""

        def admit(metadata: Mapping[str, Any]) -> None:
            labels = metadata.get("labels") or {}
            if labels.get(CREDENTIALS_LABEL) != "true":
                raise SecretNotAllowed(
                    f"cluster {ref.name!r}: Secret {namespace}/{secret.name} is not labelled "
                    f'{CREDENTIALS_LABEL}: "true"; label it (kubectl label secret '
                    f"{secret.name} {CREDENTIALS_LABEL}=true) if its key is meant for this "
                    "Qdrant cluster"
                )
            if metadata.get("namespace") not in (None, namespace):
                raise SecretNotAllowed(
                    f"cluster {ref.name!r}: Secret {secret.name} does not live in namespace "
                    f"{namespace}"
                )

        return admit


async def resolve_clusters(
    refs: Iterable[ClusterRef],
    namespace: str,
    *,
    policy: CredentialPolicy,
    environ: Mapping[str, str] | None = None,
) -> list[ClusterConfig]:
    """The fleet entries of ``refs`` (a DomainMap's clusters in ``namespace``).

    Every reference is checked against ``policy`` before any Secret is read.
    """
    env = os.environ if environ is None else environ
    refs = list(refs)
    for ref in refs:
        policy.check(ref, namespace)
    configs = []
    for ref in refs:
        api_key = None
        if ref.secret is not None:
            api_key = await read_secret_value(
                namespace,
                ref.secret.name,
                ref.secret.key,
                admit=policy.admit_secret(ref, ref.secret, namespace),
            )
        elif ref.api_key_env:
            api_key = env.get(ref.api_key_env)
            if not api_key:
                raise ApiKeyMissing(
                    f"cluster {ref.name!r}: environment variable {ref.api_key_env} is not set "
                    "in the operator; set it or use apiKeySecretRef"
                )
        configs.append(
            ClusterConfig(
                name=ref.name,
                url=ref.url,
                embedded=ref.embedded,
                api_key=api_key,
                timeout_s=ref.timeout_s,
                retries=ref.retries,
            )
        )
    return configs
