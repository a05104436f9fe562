"""Finding credentials for the Kubernetes API without kopf: a URL, the pod's service account, kubeconfig.

Why this exists: the router follows its DomainMap through the API but must
not depend on the operator's framework. It logs in the way kubectl and the
client libraries do, in this order:

1. an explicit server URL (no credentials: a local or emulated API);
2. in a pod: the service account token, CA and namespace mounted under
   ``/var/run/secrets/kubernetes.io/serviceaccount`` and the API's address
   from ``KUBERNETES_SERVICE_HOST`` / ``KUBERNETES_SERVICE_PORT``;
3. the current context of the kubeconfig (``$KUBECONFIG``, a list of files
   merged as kubectl does, else ``~/.kube/config``): its server, CA, and a
   token, token file, client certificate or basic auth. Credential plugins
   (``exec``, ``auth-provider``) are not run: that is said plainly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from librarian.kube.credentials import Credentials, to_pem
from librarian.kube.errors import LoginFailed

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "kubeconfig_login",
    "kubeconfig_paths",
    "login",
    "service_account_login",
]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def login(
    server: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    home: Path | None = None,
) -> Credentials:
    """Credentials from the first source that has them (see the module docstring)."""
    if server:
        return Credentials(server=server)
    env = os.environ if environ is None else environ
    in_cluster = service_account_login(service_account_dir, env)
    if in_cluster is not None:
        return in_cluster
    paths = [p for p in kubeconfig_paths(env, home=home) if p.is_file()]
    if paths:
        return kubeconfig_login(paths)
    raise LoginFailed(
        "no Kubernetes credentials: not in a pod (no service account token in "
        f"{service_account_dir} or KUBERNETES_SERVICE_HOST unset) and no kubeconfig "
        f"({', '.join(str(p) for p in kubeconfig_paths(env, home=home))})"
    )


def service_account_login(directory: Path, environ: Mapping[str, str]) -> Credentials | None:
    """The pod's service account, or None when not running in a pod."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = environ.get("KUBERNETES_SERVICE_PORT", "").strip()
    token = directory / "token"
    if not (host and port and token.is_file()):
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    ca = directory / "ca.crt"
    namespace = directory / "namespace"
    return Credentials(
        server=f"https://{host}:{port}",
        namespace=namespace.read_text().strip() if namespace.is_file() else "default",
        token_file=str(token),
        ca_file=str(ca) if ca.is_file() else None,
    )


def kubeconfig_paths(environ: Mapping[str, str], *, home: Path | None = None) -> list[Path]:
    """``$KUBECONFIG``'s files in order, else ``~/.kube/config``."""
    listed = [Path(p).expanduser() for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return listed or [(home or Path.home()) / ".kube" / "config"]


def kubeconfig_login(paths: Sequence[Path], *, context: str | None = None) -> Credentials:
    """The credentials of ``context`` (default: the current one) in the merged kubeconfig."""
    merged = _merge([(path, _read(path)) for path in paths])
    name = context or merged["current-context"]
    if not name:
        raise LoginFailed(f"kubeconfig {_names(paths)} has no current-context")
    ctx = _named(merged["contexts"], name, "context", paths)
    cluster = _named(merged["clusters"], str(ctx.get("cluster") or ""), "cluster", paths)
    user = _named(merged["users"], str(ctx["user"]), "user", paths) if ctx.get("user") else {}
    for plugin in ("exec", "auth-provider"):
        if plugin in user:
            raise LoginFailed(
                f"kubeconfig user {ctx['user']!r} logs in with an {plugin} plugin, which is not "
                "run here; use a token or client certificate, or run in the cluster"
            )
    server = str(cluster.get("server") or "")
    if not server:
        raise LoginFailed(f"kubeconfig cluster {ctx.get('cluster')!r} has no server")
    base = Path(str(cluster.get("_dir") or "."))
    user_base = Path(str(user.get("_dir") or base))
    return Credentials(
        server=server,
        namespace=str(ctx.get("namespace") or "default"),
        token=_optional(user.get("token")),
        token_file=_file(user_base, user.get("tokenFile")),
        username=_optional(user.get("username")),
        password=_optional(user.get("password")),
        ca_file=_file(base, cluster.get("certificate-authority")),
        ca_data=_data(cluster.get("certificate-authority-data")),
        certificate_file=_file(user_base, user.get("client-certificate")),
        key_file=_file(user_base, user.get("client-key")),
        certificate_data=_data(user.get("client-certificate-data")),
        key_data=_data(user.get("client-key-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
    )


def _read(path: Path) -> Mapping[str, Any]:
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise LoginFailed(f"cannot read kubeconfig {path}: {error}") from None
    if not isinstance(document, Mapping):
        raise LoginFailed(f"kubeconfig {path} is not a YAML mapping")
    return document


def _merge(documents: Sequence[tuple[Path, Mapping[str, Any]]]) -> dict[str, Any]:
    """kubectl's merge: the first current-context set wins, the first entry of a name wins.

    Each entry remembers its file's directory: relative paths in it are relative to that.
    """
    merged: dict[str, Any] = {"current-context": "", "contexts": {}, "clusters": {}, "users": {}}
    for path, document in documents:
        merged["current-context"] = merged["current-context"] or str(
            document.get("current-context") or ""
        )
        for kind, key in (("contexts", "context"), ("clusters", "cluster"), ("users", "user")):
            for entry in document.get(kind) or []:
                if isinstance(entry, Mapping) and entry.get("name") not in merged[kind]:
                    value = dict(entry.get(key) or {})
                    value["_dir"] = str(path.parent)
                    merged[kind][str(entry.get("name"))] = value
    return merged


def _named(
    entries: Mapping[str, Mapping[str, Any]], name: str, kind: str, paths: Sequence[Path]
) -> Mapping[str, Any]:
    if name not in entries:
        raise LoginFailed(f"kubeconfig {_names(paths)} has no {kind} named {name!r}")
    return entries[name]


def _names(paths: Sequence[Path]) -> str:
    return ", ".join(str(p) for p in paths)


def _optional(value: Any) -> str | None:
    return str(value) if value else None


def _file(base: Path, value: Any) -> str | None:
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else base / path)


def _data(value: Any) -> str | None:
    return to_pem(str(value)) if value else None
