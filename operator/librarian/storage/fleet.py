"""The fleet: named Qdrant clusters, each remote (``url``) or embedded (``embedded``).

Why this exists: a DomainMap names its clusters; everything else asks the
fleet for a cluster by name and gets a :class:`QdrantPort`. Connections are
made lazily, once, and shared (thread-safe); an unknown name is an error that
lists the known ones. API keys arrive already resolved (from a Kubernetes
Secret or the environment, by the caller) and are never shown in a repr.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.errors import UnknownCluster
from librarian.storage.port import QdrantPort
from librarian.storage.remote import RemoteQdrant


class FleetConfigError(ValueError):
    """A cluster entry is malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class ClusterConfig:
    """How to reach one cluster: exactly one of ``url`` or ``embedded``.

    ``existing_only`` opens an embedded path only if it already exists (for
    readers such as a router given paths by hand); writers create it.
    """

    name: str
    url: str | None = None
    embedded: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.5
    existing_only: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise FleetConfigError("a cluster needs a name")
        if (self.url is None) == (self.embedded is None):
            raise FleetConfigError(
                f"cluster {self.name!r} must have exactly one of 'url' (a remote Qdrant) or "
                "'embedded' (a local storage path)"
            )
        if (
            self.url is not None
            and self.url != ":memory:"
            and not self.url.startswith(("http://", "https://"))
        ):
            raise FleetConfigError(
                f"cluster {self.name!r}: url {self.url!r} must start with http:// or https://"
            )
        if self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0:
            raise FleetConfigError(
                f"cluster {self.name!r}: timeout must be > 0, retries and backoff >= 0"
            )


def connect(config: ClusterConfig) -> QdrantPort:
    """A port to the cluster described by ``config``."""
    if config.embedded is not None:
        return EmbeddedQdrant(config.name, config.embedded, create=not config.existing_only)
    assert config.url is not None
    return RemoteQdrant.connect(
        config.name,
        config.url,
        api_key=config.api_key,
        timeout_s=config.timeout_s,
        retries=config.retries,
        backoff_s=config.backoff_s,
    )


class Fleet:
    """Named clusters, connected on first use and shared."""

    def __init__(self, configs: Iterable[ClusterConfig]) -> None:
        self._configs: dict[str, ClusterConfig] = {}
        for config in configs:
            if config.name in self._configs:
                raise FleetConfigError(f"cluster name {config.name!r} appears twice")
            self._configs[config.name] = config
        self._ports: dict[str, QdrantPort] = {}
        self._lock = threading.Lock()

    @classmethod
    def of_ports(
        cls, ports: Mapping[str, QdrantPort], configs: Iterable[ClusterConfig] = ()
    ) -> Fleet:
        """A fleet of already connected ports (e.g. embedded engines a process holds open),
        and of the clusters of ``configs`` (connected on first use)."""
        fleet = cls(configs)
        fleet._ports = dict(ports)
        return fleet

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys([*self._configs, *self._ports]))

    def config(self, name: str) -> ClusterConfig:
        try:
            return self._configs[name]
        except KeyError:
            known = ", ".join(self._configs) or "none"
            raise UnknownCluster(name, f"not in the fleet; known clusters: {known}") from None

    def get(self, name: str) -> QdrantPort:
        with self._lock:
            port = self._ports.get(name)
            if port is None:
                port = self._ports[name] = connect(self.config(name))
            return port

    def close(self) -> None:
        with self._lock:
            ports, self._ports = self._ports, {}
        for port in ports.values():
            port.close()
