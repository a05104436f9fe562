"""Showing resources as ``kubectl`` would: ``get`` tables, and one line per phase change.

Why this exists: without a cluster there is no ``kubectl``, yet a user of
``librarian up`` wants to see the same thing: ``librarian status`` prints a
table per kind whose columns are the CRDs' own ``additionalPrinterColumns``
(one source: the packaged CRDs), and ``up`` prints a line each time a
resource's phase or reason changes.

The printer columns use a small part of kubectl's JSONPath: field paths
(``.status.phase``) and one equality filter on a list
(``.conditions[?(@.type=="Ready")]``); :func:`json_path` reads exactly that, and
a test checks every column of every CRD goes through it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "Column",
    "PhaseReporter",
    "format_age",
    "get_tables",
    "json_path",
    "phase_line",
    "phase_of",
    "printer_columns",
]

_STEP = re.compile(r"""\.([A-Za-z0-9_-]+)|\[\?\(@\.([A-Za-z0-9_-]+)\s*==\s*["']([^"']*)["']\)\]""")
JOB_COLUMNS = "Job"  # Jobs are a built-in kind: their columns are kubectl's own
_FIRST = ("DomainMap", "ClusterSpecialization", "RebalancePolicy")


@dataclass(frozen=True)
class Column:
    """One printer column of a CRD."""

    name: str
    json_path: str
    type: str = "string"
    priority: int = 0


def printer_columns(crds: Iterable[Mapping[str, Any]]) -> dict[str, list[Column]]:
    """Kind -> the printer columns of its storage version."""
    columns: dict[str, list[Column]] = {}
    for crd in crds:
        spec = crd["spec"]
        version = next(v for v in spec["versions"] if v.get("storage", True))
        columns[spec["names"]["kind"]] = [
            Column(
                name=str(c["name"]),
                json_path=str(c["jsonPath"]),
                type=str(c.get("type", "string")),
                priority=int(c.get("priority", 0)),
            )
            for c in version.get("additionalPrinterColumns") or []
        ]
    return columns


def _steps(path: str) -> list[tuple[str | None, str | None, str | None]]:
    steps: list[tuple[str | None, str | None, str | None]] = []
    position = 0
    while position < len(path):
        step = _STEP.match(path, position)
        if step is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {path[position:]!r}")
        field, filter_key, filter_value = step.groups()
        steps.append((field, filter_key, filter_value))
        position = step.end()
    return steps


def json_path(body: Any, path: str) -> Any:
    """The value at ``path`` (kubectl's printer-column JSONPath subset), ``None`` if absent."""
    value = body
    for field, filter_key, filter_value in _steps(path):
        if field is not None:
            value = value.get(field) if isinstance(value, Mapping) else None
        elif isinstance(value, list):
            value = next(
                (
                    item
                    for item in value
                    if isinstance(item, Mapping) and str(item.get(filter_key)) == filter_value
                ),
                None,
            )
        else:
            value = None
        if value is None:
            return None
    return value


def format_age(timestamp: str | None, now: datetime) -> str:
    """``5s``, ``3m``, ``2h``, ``4d``: kubectl's short age of an RFC 3339 timestamp."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= 120):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cell(value: Any, column: Column, now: datetime) -> str:
    if column.type == "date":
        return format_age(value if isinstance(value, str) else None, now)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and column.type == "integer":
        return str(int(value))
    return str(value)


def _reader(column: Column) -> Callable[[Mapping[str, Any], datetime], str]:
    def read(body: Mapping[str, Any], now: datetime) -> str:
        return _cell(json_path(body, column.json_path), column, now)

    return read


def _job_status(body: Mapping[str, Any]) -> str:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return str(condition["type"])
    return "Running"


def _job_columns() -> list[tuple[str, Callable[[Mapping[str, Any], datetime], str]]]:
    return [
        ("STATUS", lambda body, _now: _job_status(body)),
        (
            "COMPLETIONS",
            lambda body, _now: f"{int((body.get('status') or {}).get('succeeded') or 0)}/1",
        ),
        (
            "AGE",
            lambda body, now: format_age(
                (body.get("metadata") or {}).get("creationTimestamp"), now
            ),
        ),
    ]


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def get_tables(
    objects: Iterable[Mapping[str, Any]],
    crds: Iterable[Mapping[str, Any]],
    *,
    now: datetime | None = None,
    wide: bool = False,
) -> str:
    """``kubectl get`` tables, one per kind (in the CRDs' order, Jobs last), blank-line separated.

    Names are kind-qualified (``domainmap.librarian.dev/packages``) as in
    ``kubectl get domainmaps,clusterspecializations``; ``wide`` adds the
    columns of priority 1 (``-o wide``).
    """
    now = now or datetime.now(UTC)
    crd_list = list(crds)
    columns = printer_columns(crd_list)
    groups = {c["spec"]["names"]["kind"]: c["spec"]["group"] for c in crd_list}
    groups[JOB_COLUMNS] = "batch"
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for body in objects:
        by_kind.setdefault(str(body.get("kind")), []).append(body)
    namespaces = {(b.get("metadata") or {}).get("namespace") for bs in by_kind.values() for b in bs}
    with_namespace = len(namespaces) > 1
    tables = []
    order = {kind: index for index, kind in enumerate(_FIRST)}
    for kind in sorted([*columns, JOB_COLUMNS], key=lambda k: order.get(k, len(order))):
        items = sorted(
            by_kind.get(kind, []),
            key=lambda b: ((b["metadata"].get("namespace") or ""), b["metadata"]["name"]),
        )
        if not items:
            continue
        cells: list[tuple[str, Callable[[Mapping[str, Any], datetime], str]]]
        if kind == JOB_COLUMNS:
            cells = _job_columns()
        else:
            cells = [
                (column.name.upper(), _reader(column))
                for column in columns[kind]
                if wide or column.priority == 0
            ]
        header = (["NAMESPACE"] if with_namespace else []) + ["NAME"]
        rows = [header + [name for name, _ in cells]]
        prefix = f"{kind.lower()}.{groups[kind]}/"
        for body in items:
            metadata = body["metadata"]
            first = [str(metadata.get("namespace") or "")] if with_namespace else []
            name = prefix + str(metadata["name"])
            rows.append([*first, name, *(read(body, now) for _, read in cells)])
        tables.append(_table(rows))
    return "\n\n".join(tables) if tables else "No resources found."


# --------------------------------------------------------------------------- phase lines


def phase_of(body: Mapping[str, Any] | None) -> tuple[str, str]:
    """``(phase, reason)``: the status phase and the Ready condition's reason (Jobs: their state)."""
    if body is None:
        return ("Deleted", "")
    if body.get("kind") == "Job":
        return (_job_status(body), "")
    status: Mapping[str, Any] = body.get("status") or {}
    ready = json_path(status, '.conditions[?(@.type=="Ready")]') or {}
    return (str(status.get("phase") or "Pending"), str(ready.get("reason") or ""))


def phase_line(kind: str, namespace: str | None, name: str, body: Mapping[str, Any] | None) -> str:
    """``DomainMap/packages: Ready (Analyzed): 12 domains ...`` — kind/name phase, reason."""
    phase, reason = phase_of(body)
    where = name if namespace in (None, "default") else f"{namespace}/{name}"
    line = f"{kind}/{where}: {phase}" + (f" ({reason})" if reason else "")
    message = str(((body or {}).get("status") or {}).get("message") or "")
    return line + (f": {message}" if message else "")


class PhaseReporter:
    """Writes one line each time an object's (phase, reason) changes."""

    def __init__(self, write: Callable[[str], None], kinds: Iterable[str]) -> None:
        self._write = write
        self._kinds = set(kinds)
        self._last: dict[tuple[str, str | None, str], tuple[str, str]] = {}

    def observe(
        self, kind: str, namespace: str | None, name: str, body: Mapping[str, Any] | None
    ) -> None:
        if kind not in self._kinds:
            return
        key = (kind, namespace, name)
        phase = phase_of(body)
        if self._last.get(key) == phase or (body is None and key not in self._last):
            return
        if body is None:
            self._last.pop(key, None)
        else:
            self._last[key] = phase
        self._write(phase_line(kind, namespace, name, body))
