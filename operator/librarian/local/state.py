"""The state directory of ``librarian up``: every resource and its status, on disk.

Why this exists: stopped and started again on the same ``--state``, ``up``
must resume where it was — a Ready DomainMap is not analysed again, finished
migrations are not run again — so the emulated API starts from what the last
run left. Each object is one JSON file, written on every change, atomically (a
temporary file renamed over the old one), so a crash never leaves half a file.
Secrets are never written here: they are read from the files given to ``up``
at every start. A lock file keeps two processes off one directory and says
where the running one serves.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from librarian.contracts.api import (
    CLUSTERSPECIALIZATIONS,
    DOMAINMAPS,
    QDRANTFLEETS,
    REBALANCEPOLICIES,
    resource,
)

__all__ = ["PERSISTED", "RunningUp", "StateDirectory", "StateError", "resource_of_body"]

PERSISTED = (
    resource(DOMAINMAPS),
    resource(CLUSTERSPECIALIZATIONS),
    resource(REBALANCEPOLICIES),
    resource(QDRANTFLEETS),
    "batch/v1/jobs",
)
"""What is persisted (``group/version/plural``): our kinds and the migration Jobs."""

_PLURALS = {"DomainMap": DOMAINMAPS, "ClusterSpecialization": CLUSTERSPECIALIZATIONS}
_PLURALS |= {"RebalancePolicy": REBALANCEPOLICIES, "Job": "jobs", "Secret": "secrets"}
_PLURALS |= {"QdrantFleet": QDRANTFLEETS}


class StateError(RuntimeError):
    """The state directory cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class RunningUp:
    """What the lock file says about the process using the directory."""

    pid: int
    url: str


def resource_of_body(body: Mapping[str, Any]) -> str:
    """``group/version/plural`` of an object of a kind ``up`` knows."""
    kind = str(body.get("kind"))
    if kind not in _PLURALS:
        raise StateError(f"{kind} objects are not kept by librarian up")
    return f"{body.get('apiVersion')}/{_PLURALS[kind]}"


class StateDirectory:
    """One directory: ``resources/<namespace>/<plural>.<group>/<name>.json`` and ``up.lock``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.resources = root / "resources"

    def path_of(self, resource_name: str, namespace: str | None, name: str) -> Path:
        group_version, plural = resource_name.rsplit("/", 1)
        group = group_version.rpartition("/")[0] or "core"
        if not name or "/" in name or name.startswith("."):
            raise StateError(f"cannot store an object named {name!r}")
        return self.resources / (namespace or "_cluster") / f"{plural}.{group}" / f"{name}.json"

    # ----------------------------------------------------------------- writing

    def save(self, body: Mapping[str, Any]) -> None:
        """Write one object (atomically); Secrets and unknown kinds are refused."""
        resource_name = resource_of_body(body)
        if resource_name not in PERSISTED:
            raise StateError(f"{body.get('kind')} objects are never written to the state")
        metadata = body.get("metadata") or {}
        self._write(self.path_of(resource_name, metadata.get("namespace"), metadata["name"]), body)

    def record(
        self, resource_name: str, namespace: str | None, name: str, body: Mapping[str, Any] | None
    ) -> None:
        """Follow one change of the API: write the object, or remove it once deleted."""
        if resource_name not in PERSISTED:
            return
        path = self.path_of(resource_name, namespace, name)
        if body is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            self._write(path, body)

    def _write(self, path: Path, body: Mapping[str, Any]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(body, out, indent=1, sort_keys=True)
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
        except OSError as error:
            raise StateError(f"cannot write {path}: {error.strerror or error}") from None

    # ----------------------------------------------------------------- reading

    def load(self) -> list[dict[str, Any]]:
        """Every stored object (an empty list for a new directory)."""
        objects: list[dict[str, Any]] = []
        if not self.resources.is_dir():
            return objects
        for path in sorted(self.resources.glob("*/*/*.json")):
            try:
                body = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise StateError(
                    f"{path} cannot be read ({error}); delete it (its object is then created "
                    "again from your files, or lost if it came from the operator)"
                ) from None
            if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
                raise StateError(f"{path} does not hold a Kubernetes object; delete it")
            objects.append(body)
        return objects

    # ----------------------------------------------------------------- lock

    @property
    def lock_path(self) -> Path:
        return self.root / "up.lock"

    @contextlib.contextmanager
    def lock(self) -> Iterator[Callable[[str], None]]:
        """Hold the directory for this process (refused while another ``up`` holds it).

        Yields ``announce(url)``, which records where this process serves.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            out = self.lock_path.open("a+", encoding="utf-8")
        except OSError as error:
            raise StateError(
                f"cannot use {self.root} as the state directory: {error.strerror}"
            ) from None
        with out:
            try:
                fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise StateError(f"cannot lock {self.lock_path}: {error.strerror}") from None
                running = self.running()
                where = f" (pid {running.pid}, serving {running.url})" if running else ""
                raise StateError(
                    f"another librarian up is using {self.root}{where}: stop it first, or give "
                    "another --state"
                ) from None

            def announce(url: str) -> None:
                _rewrite(out, json.dumps({"pid": os.getpid(), "url": url}))

            try:
                announce("")
                yield announce
            finally:
                _rewrite(out, "")
                fcntl.flock(out.fileno(), fcntl.LOCK_UN)

    def running(self) -> RunningUp | None:
        """The process holding the directory, if one does."""
        try:
            with self.lock_path.open(encoding="utf-8") as out:
                try:
                    fcntl.flock(out.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:
                    pass  # held: read who holds it
                else:
                    fcntl.flock(out.fileno(), fcntl.LOCK_UN)
                    return None
                data = json.loads(out.read() or "{}")
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or "pid" not in data:
            return None
        return RunningUp(pid=int(data["pid"]), url=str(data.get("url", "")))


def _rewrite(out: TextIO, text: str) -> None:
    out.seek(0)
    out.truncate()
    out.write(text)
    out.flush()
