"""Turning a spec's cluster references into connectable fleet entries.

Why this exists: API keys never live in a spec. A cluster names a Secret
(``apiKeySecretRef``, read from the DomainMap's namespace) or an environment
variable of the operator (``apiKeyEnv``); this resolves them into
:class:`ClusterConfig` objects whose repr hides the key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from librarian.kube.client import SecretNotFound, read_secret_value
from librarian.kube.spec import ClusterRef
from librarian.storage.fleet import ClusterConfig

__all__ = ["ApiKeyMissing", "resolve_clusters"]


class ApiKeyMissing(SecretNotFound):
    """An ``apiKeyEnv`` names an environment variable that is not set."""


async def resolve_clusters(
    refs: Iterable[ClusterRef],
    namespace: str,
    *,
    environ: Mapping[str, str] | None = None,
) -> list[ClusterConfig]:
    env = os.environ if environ is None else environ
    configs = []
    for ref in refs:
        api_key = None
        if ref.secret is not None:
            api_key = await read_secret_value(namespace, ref.secret.name, ref.secret.key)
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
