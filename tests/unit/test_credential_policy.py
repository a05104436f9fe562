"""The credential rules on their own: which references are refused, and that nothing is read first."""

from __future__ import annotations

from typing import Any

import pytest

from librarian.kube import fleet_access
from librarian.kube.fleet_access import (
    ApiKeyEnvNotAllowed,
    CredentialPolicy,
    InsecureTransport,
    SecretNotAllowed,
    resolve_clusters,
)
from librarian.kube.spec import ClusterRef, SecretRef, parse_domainmap_spec
from librarian.operator.context import OperatorContext
from librarian.settings import ConfigError, load_settings

POLICY = CredentialPolicy.of(allowed_api_key_env={"QDRANT_KEY"}, insecure_hosts={"Qdrant.Local"})
KEY = SecretRef("keys")


@pytest.mark.parametrize(
    "url",
    [
        "http://qdrant.example.com:6333",
        "HTTP://qdrant.example.com",
        "http://qdrant.local.attacker.example:6333",  # a listed host as a prefix
        "http://qdrant.local@attacker.example:6333",  # a listed host as user info
        "http://attacker.example/qdrant.local",
    ],
)
def test_a_key_never_goes_over_plain_http_to_an_unlisted_host(url: str) -> None:
    for ref in (
        ClusterRef("remote", url=url, secret=KEY),
        ClusterRef("remote", url=url, api_key_env="QDRANT_KEY"),
    ):
        with pytest.raises(InsecureTransport) as refused:
            POLICY.check(ref, "team")
        assert refused.value.rule == refused.value.reason == "InsecureTransport"
        assert "use an https:// url, or add" in str(refused.value)


@pytest.mark.parametrize(
    "ref",
    [
        ClusterRef("remote", url="https://qdrant.example.com", secret=KEY),
        ClusterRef("remote", url="http://qdrant.local:6333", secret=KEY),  # listed (any case)
        ClusterRef("remote", url="http://qdrant.example.com"),  # no key: nothing to leak
        ClusterRef("local", embedded="/data/general", secret=KEY),  # embedded: nothing sent
        ClusterRef("remote", url="https://qdrant.example.com", api_key_env="QDRANT_KEY"),
    ],
)
def test_allowed_references(ref: ClusterRef) -> None:
    POLICY.check(ref, "team")


def test_api_key_env_only_from_the_list() -> None:
    ref = ClusterRef("remote", url="https://q.example", api_key_env="AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ApiKeyEnvNotAllowed) as refused:
        POLICY.check(ref, "team")
    assert "(allowed: QDRANT_KEY)" in str(refused.value)
    with pytest.raises(ApiKeyEnvNotAllowed, match=r"allowed: none"):
        CredentialPolicy().check(ref, "team")


def test_a_secret_of_another_namespace_is_refused() -> None:
    parsed = parse_domainmap_spec(
        {
            "source": {"cluster": "remote", "collection": "docs"},
            "clusters": [
                {
                    "name": "remote",
                    "url": "https://q.example",
                    "apiKeySecretRef": {"name": "keys", "namespace": "kube-system"},
                }
            ],
        },
        name="dm",
    )
    with pytest.raises(SecretNotAllowed, match="outside namespace team"):
        POLICY.check(parsed.clusters[0], "team")
    same = ClusterRef("remote", url="https://q.example", secret=SecretRef("keys", "k", "team"))
    POLICY.check(same, "team")


@pytest.mark.parametrize(
    "metadata",
    [
        {"name": "keys", "namespace": "team"},
        {"name": "keys", "namespace": "team", "labels": {"librarian.dev/qdrant-credentials": "1"}},
        {"name": "keys", "namespace": "team", "labels": {"librarian.dev/qdrant-credentials": ""}},
        {
            "name": "keys",
            "namespace": "other",
            "labels": {"librarian.dev/qdrant-credentials": "true"},
        },
    ],
)
def test_a_read_secret_is_admitted_only_with_the_label_in_the_namespace(
    metadata: dict[str, Any],
) -> None:
    admit = POLICY.admit_secret(ClusterRef("remote", url="https://q"), KEY, "team")
    with pytest.raises(SecretNotAllowed):
        admit(metadata)
    admit({**metadata, "namespace": "team", "labels": {"librarian.dev/qdrant-credentials": "true"}})


async def test_every_reference_is_checked_before_any_secret_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []

    async def read(namespace: str, name: str, key: str, **_: Any) -> str:
        reads.append(name)
        return "value"

    monkeypatch.setattr(fleet_access, "read_secret_value", read)
    refs = [
        ClusterRef("first", url="https://q.example", secret=SecretRef("first-key")),
        ClusterRef("second", url="http://q.example", secret=SecretRef("second-key")),
    ]
    with pytest.raises(InsecureTransport):
        await resolve_clusters(refs, "team", policy=POLICY)
    assert reads == []
    configs = await resolve_clusters(refs[:1], "team", policy=POLICY)
    assert reads == ["first-key"]
    assert configs[0].api_key == "value"


def test_the_lists_come_from_the_configuration() -> None:
    settings = load_settings(
        environ={
            "LIBRARIAN__CREDENTIALS__ALLOWED_API_KEY_ENV": '["QDRANT_KEY"]',
            "LIBRARIAN__CREDENTIALS__INSECURE_HOSTS": '["qdrant.local"]',
        }
    )
    policy = OperatorContext.from_settings(settings).credential_policy
    assert policy == CredentialPolicy.of({"QDRANT_KEY"}, {"qdrant.local"})
    by_contract_name = load_settings(
        overrides=["credentials.allowedApiKeyEnv=[A]", "credentials.insecureHosts=[h]"]
    )
    assert by_contract_name.credentials.allowed_api_key_env == ("A",)
    assert by_contract_name.credentials.insecure_hosts == ("h",)
    assert OperatorContext.from_settings(load_settings(environ={})).credential_policy == (
        CredentialPolicy()
    )
    with pytest.raises(ConfigError, match="accepted keys here: allowed_api_key_env"):
        load_settings(overrides=["credentials.allowedHosts=[h]"])
