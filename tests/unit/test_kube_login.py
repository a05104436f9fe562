"""Logging in without kopf: an explicit server, the pod's service account, or kubeconfig."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from librarian.kube.errors import LoginFailed
from librarian.kube.login import kubeconfig_login, login

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _kubeconfig(path: Path, *, current: str = "dev", **sections: list[dict[str, Any]]) -> Path:
    document: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "current-context": current}
    document.update(sections)
    path.write_text(yaml.safe_dump(document))
    return path


def _service_account(directory: Path, namespace: str | None = "team-a") -> Path:
    directory.mkdir(parents=True)
    (directory / "token").write_text("pod-token\n")
    (directory / "ca.crt").write_text(PEM)
    if namespace:
        (directory / "namespace").write_text(namespace)
    return directory


def test_an_explicit_server_needs_no_credentials(tmp_path: Path) -> None:
    credentials = login("http://127.0.0.1:8001", environ={}, service_account_dir=tmp_path)
    assert credentials.server == "http://127.0.0.1:8001"
    assert credentials.authorization() == {}


def test_in_a_pod_the_service_account_is_used(tmp_path: Path) -> None:
    directory = _service_account(tmp_path / "sa")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    credentials = login(environ=env, service_account_dir=directory, home=tmp_path)
    assert credentials.server == "https://10.0.0.1:443"
    assert credentials.namespace == "team-a"
    assert credentials.ca_file == str(directory / "ca.crt")
    assert credentials.authorization() == {"Authorization": "Bearer pod-token"}


def test_an_ipv6_service_host_is_bracketed(tmp_path: Path) -> None:
    directory = _service_account(tmp_path / "sa", namespace=None)
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    credentials = login(environ=env, service_account_dir=directory, home=tmp_path)
    assert credentials.server == "https://[fd00::1]:6443"
    assert credentials.namespace == "default"


def test_outside_a_pod_the_current_context_of_kubeconfig_is_used(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    config = _kubeconfig(
        tmp_path / "config",
        contexts=[
            {"name": "prod", "context": {"cluster": "prod", "user": "admin"}},
            {"name": "dev", "context": {"cluster": "dev", "user": "me", "namespace": "lab"}},
        ],
        clusters=[
            {"name": "prod", "cluster": {"server": "https://prod:6443"}},
            {
                "name": "dev",
                "cluster": {"server": "https://dev:6443", "certificate-authority": "certs/ca.crt"},
            },
        ],
        users=[
            {"name": "admin", "user": {"token": "admin-token"}},
            {"name": "me", "user": {"token": "dev-token"}},
        ],
    )
    env = {"KUBECONFIG": str(config)}  # a service account dir that does not exist: not a pod
    credentials = login(environ=env, service_account_dir=tmp_path / "none")
    assert credentials.server == "https://dev:6443"
    assert credentials.namespace == "lab"
    assert credentials.ca_file == str(tmp_path / "certs" / "ca.crt")  # relative to the file
    assert credentials.authorization() == {"Authorization": "Bearer dev-token"}


def test_a_client_certificate_and_embedded_ca(tmp_path: Path) -> None:
    config = _kubeconfig(
        tmp_path / "config",
        contexts=[{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
        clusters=[
            {
                "name": "c",
                "cluster": {"server": "https://c:6443", "certificate-authority-data": _b64(PEM)},
            }
        ],
        users=[
            {
                "name": "u",
                "user": {"client-certificate-data": _b64(PEM), "client-key-data": _b64(KEY)},
            }
        ],
    )
    credentials = kubeconfig_login([config])
    assert (credentials.ca_data, credentials.certificate_data, credentials.key_data) == (
        PEM,
        PEM,
        KEY,
    )
    assert credentials.authorization() == {}


def test_kubeconfig_files_merge_as_kubectl_does(tmp_path: Path) -> None:
    first = _kubeconfig(
        tmp_path / "a",
        current="b-context",
        users=[{"name": "u", "user": {"username": "alice", "password": "pw"}}],
    )
    second = _kubeconfig(
        tmp_path / "b",
        current="ignored",
        contexts=[{"name": "b-context", "context": {"cluster": "c", "user": "u"}}],
        clusters=[
            {"name": "c", "cluster": {"server": "http://c", "insecure-skip-tls-verify": True}}
        ],
        users=[{"name": "u", "user": {"token": "later-files-lose"}}],
    )
    env = {"KUBECONFIG": os.pathsep.join([str(first), str(second)])}
    credentials = login(environ=env, service_account_dir=tmp_path / "none")
    assert credentials.server == "http://c"
    assert credentials.insecure
    assert credentials.username == "alice"
    assert credentials.token is None


@pytest.mark.parametrize(
    ("user", "words"),
    [
        ({"exec": {"command": "aws"}}, "exec plugin"),
        ({"auth-provider": {"name": "gcp"}}, "auth-provider plugin"),
    ],
)
def test_credential_plugins_are_refused_plainly(
    tmp_path: Path, user: dict[str, Any], words: str
) -> None:
    config = _kubeconfig(
        tmp_path / "config",
        contexts=[{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
        clusters=[{"name": "c", "cluster": {"server": "https://c"}}],
        users=[{"name": "u", "user": user}],
    )
    with pytest.raises(LoginFailed, match=words):
        kubeconfig_login([config])


def test_a_context_that_is_not_there_is_named(tmp_path: Path) -> None:
    config = _kubeconfig(tmp_path / "config", current="gone", contexts=[], clusters=[], users=[])
    with pytest.raises(LoginFailed, match="no context named 'gone'"):
        kubeconfig_login([config])


def test_no_credentials_anywhere_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(LoginFailed) as caught:
        login(environ={}, service_account_dir=tmp_path / "sa", home=tmp_path)
    assert str(tmp_path / "sa") in str(caught.value)
    assert str(tmp_path / ".kube" / "config") in str(caught.value)


def test_the_operators_kopf_login_becomes_the_clients_credentials() -> None:
    import kopf

    from librarian.operator.handlers import credentials_from

    info = kopf.ConnectionInfo(
        server="https://k:6443",
        ca_data=_b64(PEM).encode(),
        token="kopf-token",
        scheme="Bearer",
        certificate_data=PEM.encode(),
        private_key_path="/keys/tls.key",
        default_namespace="ops",
    )
    credentials = credentials_from(info)
    assert credentials.server == "https://k:6443"
    assert credentials.namespace == "ops"
    assert credentials.ca_data == PEM
    assert credentials.certificate_data == PEM
    assert credentials.key_file == "/keys/tls.key"
    assert credentials.authorization() == {"Authorization": "Bearer kopf-token"}
