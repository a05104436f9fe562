"""Which port of a router's Service a RebalancePolicy's routerRef reads the load from."""

from __future__ import annotations

from typing import Any

import pytest

from librarian.operator.router_ref import cluster_service_url, service_port


def _service(*ports: tuple[str | None, int]) -> dict[str, Any]:
    return {"spec": {"ports": [{"name": n, "port": p} for n, p in ports]}}


@pytest.mark.parametrize(
    ("ports", "wanted", "expected"),
    [
        ((("http", 6333), ("grpc", 6334), ("metrics", 9090)), None, 6333),  # the chart's
        ((("metrics", 9090), ("http", 8080)), None, 8080),  # the port named http wins
        (((None, 6333),), None, 6333),  # unnamed, but the router's default port
        ((("web", 80),), None, None),  # neither: the policy must name the port
        ((("http", 6333), ("grpc", 6334)), 6334, 6334),  # a named port must exist
        ((("http", 6333),), 7000, None),
        ((), None, None),
    ],
)
def test_the_port_is_named_http_or_the_routers_default(
    ports: tuple[tuple[str | None, int], ...], wanted: int | None, expected: int | None
) -> None:
    assert service_port(_service(*ports), wanted) == expected


def test_the_url_is_the_services_cluster_dns_name() -> None:
    assert cluster_service_url("lib-router", "search", 6333) == "http://lib-router.search.svc:6333"
