"""The embedded default, end to end: what ``make demo`` runs — a scripted scenario on ``librarian up``.

Why this exists: a new user (and CI) should see the whole product work with
nothing to install by hand, on the very machinery they would run on their own
data. The scenario:

1. loads the bundled data (real Debian package descriptions and their
   embeddings) into the embedded source cluster with the service
   ``librarian load`` uses (:mod:`librarian.services.loading`);
2. runs ``librarian up``'s machinery (:func:`librarian.local.up.local_library`)
   on the example DomainMap with a fresh state directory: the emulated
   Kubernetes API, the operator, the migration Jobs and the router behind one
   address, printing each phase as ``up`` does;
3. waits for the DomainMap to be Ready and every ClusterSpecialization to
   finish (conditions re-checked at each change of the API, see
   :mod:`librarian.local.watch`), and for the router to serve every domain
   from its specialized collection;
4. queries the library through ``qdrant-client`` at that address
   (:mod:`librarian.demo.workload`), then skews the load and applies the
   example RebalancePolicy with the same address as its load source
   (:mod:`librarian.demo.rebalancing`);
5. returns what it measured, which :mod:`librarian.demo.report` prints.

``up`` runs in-process rather than as a child process: the scenario applies
the RebalancePolicy to the running API and waits on its objects as they
change, which ``up`` offers in-process (its :class:`RunningLibrary`) and not
over its address; and a test can then run the scenario with smaller
parameters and see any failure as an exception, not as a log to read.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import yaml
from rich.console import Console
from rich.markup import escape
from sklearn.metrics import normalized_mutual_info_score

from librarian.contracts import api
from librarian.contracts.api import resource
from librarian.contracts.payload import LABEL_KEY
from librarian.demo.data import DemoData, load_demo_data, load_demo_sections
from librarian.demo.output import QuietWatch, progress_lines
from librarian.demo.rebalancing import RebalancingFailed, run_rebalancing
from librarian.demo.report import DemoReport
from librarian.demo.workload import router_status, run_router_workload
from librarian.local.job_controller import CommandRunner
from librarian.local.up import UpConfig, UpError, local_library
from librarian.local.watch import ResourceWatch, WaitTimeout
from librarian.services.loading import LoadRefused, load_points, plan_load
from librarian.settings import Settings
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.errors import QdrantError

__all__ = ["DemoError", "DemoScenario", "load_source", "read_labels", "run_demo"]

DOMAINMAPS = resource(api.DOMAINMAPS)
SPECIALIZATIONS = resource(api.CLUSTERSPECIALIZATIONS)
DEMO_SETTINGS = Settings.model_validate(
    # one query in five is also asked of every domain, so the router estimates its own recall
    # from enough comparisons within the demo's few hundred queries; the result cache is on,
    # as it pays where queries repeat (the demo asks some again)
    {
        "domain_library_orchestrator": {
            "shadow_fraction": 0.2,
            "caching": {"enable_result_cache": True},
        }
    }
)


class DemoError(RuntimeError):
    """The demo could not run or did not reach Ready; the message says why."""


@dataclass(frozen=True)
class DemoScenario:
    """What the scenario runs on and how much it asks; ``make demo`` takes the defaults.

    Tests run the same scenario smaller: fewer points, queries and a shorter
    load window (and their own manifests).
    """

    manifest: Path = Path("manifests/examples/domainmap.yaml")
    # The QdrantFleet the DomainMap names in spec.fleetRef (None: the DomainMap lists its
    # clusters inline).
    fleet: Path | None = Path("manifests/examples/qdrantfleet.yaml")
    policy: Path | None = Path("manifests/examples/rebalancepolicy.yaml")
    root: Path = Path(".demo")  # the state directory and the files loaded go under it
    points: int | None = None  # the first N bundled points (all 3,000 by default)
    queries: int = 300  # through qdrant-client, against exhaustive search
    repeated: int = 50  # of them asked again (answered from the router's cache)
    skewed_queries: int = 400  # per pass of the skewed load
    load_window_s: float = 10.0  # the router's load window the policy reads
    timeout_s: float = 600.0  # for each wait
    quiet_s: float = 5.0  # a progress line when a step has printed nothing for this long
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port

    @property
    def state_dir(self) -> Path:
        return self.root / "state"


def _clusters_of(manifest: Mapping[str, Any], fleet: Mapping[str, Any] | None) -> list[Any]:
    """The DomainMap's clusters: its own, or those of the fleet it names."""
    spec = manifest["spec"]
    if "fleetRef" not in spec:
        return list(spec.get("clusters") or [])
    wanted = spec["fleetRef"]["name"]
    if fleet is None or fleet["metadata"]["name"] != wanted:
        raise DemoError(f"the demo DomainMap names QdrantFleet {wanted!r}: give its file (--fleet)")
    return list(fleet["spec"]["clusters"])


def _source_of(
    manifest: Mapping[str, Any], fleet: Mapping[str, Any] | None
) -> tuple[Path, str, str]:
    source = manifest["spec"]["source"]
    cluster = next(c for c in _clusters_of(manifest, fleet) if c["name"] == source["cluster"])
    if "embedded" not in cluster:
        raise DemoError("the demo manifest's source cluster must be embedded (a local path)")
    return (
        Path(cluster["embedded"]),
        str(source["collection"]),
        str(source.get("textField", "text")),
    )


def load_source(path: Path, collection: str, text_field: str, data: DemoData, files: Path) -> None:
    """(Re)create the source collection with the demo data, as ``librarian load`` would.

    The vectors and one JSON payload per point are written under ``files``
    and loaded by :mod:`librarian.services.loading`: row ``i`` becomes point ``i``.
    """
    shutil.rmtree(path, ignore_errors=True)
    files.mkdir(parents=True, exist_ok=True)
    np.save(files / "vectors.npy", data.vectors)
    with (files / "records.jsonl").open("w", encoding="utf-8") as out:
        for record in data.records:
            payload = {text_field: str(record["text"]), "package": str(record["package"])}
            out.write(json.dumps(payload) + "\n")
    port = EmbeddedQdrant("general", path)
    try:
        plan = plan_load(port, collection, files / "vectors.npy", files / "records.jsonl")
        load_points(port, plan)
    except (LoadRefused, QdrantError) as error:
        raise DemoError(f"loading the bundled data failed: {error}") from None
    finally:
        port.close()


def read_labels(path: Path, collection: str) -> dict[int, str]:
    """Every point's domain label, as the operator wrote it in the source collection."""
    port = EmbeddedQdrant("general", path)
    labels: dict[int, str] = {}
    try:
        offset = None
        while True:
            page, offset = port.scroll(collection, limit=1000, offset=offset, with_vectors=False)
            for point in page:
                if LABEL_KEY in point.payload:
                    labels[int(point.id)] = str(point.payload[LABEL_KEY])
            if offset is None:
                break
    finally:
        port.close()
    return labels


_PHASE_LINE = re.compile(r"^\S+ (?P<kind>[A-Za-z]+)/\S+: (?P<phase>[A-Za-z]+)")
_QUIET = {"Job": None, "ClusterSpecialization": ("Ready", "Failed")}  # kind -> phases shown


def _shown(line: str) -> bool:
    """Which of ``up``'s lines the demo shows: not every Job, nor every step of a specialization.

    Each specialization is shown once finished (with its recall and latency);
    the DomainMap, the RebalancePolicy and the library served, at every change.
    """
    match = _PHASE_LINE.match(line)
    if match is None or match["kind"] not in _QUIET:
        return True
    shown = _QUIET[match["kind"]]
    return shown is not None and match["phase"] in shown


def _fresh(scenario: DemoScenario, clusters: Sequence[Mapping[str, Any]]) -> None:
    """Every run starts anew: no state, and empty target clusters."""
    shutil.rmtree(scenario.state_dir, ignore_errors=True)
    for cluster in clusters:
        if "embedded" in cluster:
            shutil.rmtree(cluster["embedded"], ignore_errors=True)


def _ready(watch: ResourceWatch, namespace: str, name: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        obj = watch.get(DOMAINMAPS, namespace, name) or {}
        status = obj.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
        if ready and ready["status"] == "False" and status.get("phase") == "Failed":
            raise DemoError(f"DomainMap {name} failed: {ready['reason']}: {ready['message']}")
        current = status.get("observedGeneration") == obj.get("metadata", {}).get("generation")
        return dict(status) if ready and ready["status"] == "True" and current else None

    return check


def _specialized(
    watch: ResourceWatch, namespace: str, expected: int
) -> Callable[[], list[dict[str, Any]] | None]:
    def check() -> list[dict[str, Any]] | None:
        items = watch.items(SPECIALIZATIONS, namespace)
        phases = Counter((i.get("status") or {}).get("phase", "Pending") for i in items)
        finished = phases["Ready"] + phases["Failed"] == len(items)
        return items if len(items) >= expected and finished else None

    return check


def _finished_of(watch: ResourceWatch, namespace: str, expected: int) -> Callable[[], str]:
    def detail() -> str:
        items = watch.items(SPECIALIZATIONS, namespace)
        phases = Counter((i.get("status") or {}).get("phase", "Pending") for i in items)
        return f"{phases['Ready'] + phases['Failed']} of {expected} finished"

    return detail


async def _serving(
    http: aiohttp.ClientSession, url: str, library: str, specialized: int, timeout_s: float
) -> None:
    """Wait until the router serves the library with ``specialized`` domains from their collections.

    The router re-reads the library when its resources change; there is no
    notification of a finished reload, so its status is asked again until then.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        status = await router_status(http, url, library)
        domains = status.library.domains if status.library else []
        if domains and sum(1 for d in domains if d.specialized) >= specialized:
            return
        if loop.time() > deadline:
            raise DemoError(
                f"the router did not serve {specialized} specialized domains within "
                f"{timeout_s:.0f}s ({status.load_error or 'no error'})"
            )
        await asyncio.sleep(0.2)


def _nmi(labels: Mapping[int, str], sections: Sequence[str]) -> float | None:
    ids = sorted(labels)
    if not ids:
        return None
    return float(normalized_mutual_info_score([sections[i] for i in ids], [labels[i] for i in ids]))


async def run_demo(
    scenario: DemoScenario = DemoScenario(),
    *,
    run_command: CommandRunner,
    console: Console | None = None,
) -> DemoReport:
    """Run the scenario on ``librarian up``'s machinery; what it measured."""
    console = console or Console()
    needed = [
        *([scenario.fleet] if scenario.fleet else []),
        scenario.manifest,
        *([scenario.policy] if scenario.policy else []),
    ]
    if not all(path.is_file() for path in needed):
        raise DemoError(
            f"{' or '.join(map(str, needed))} not found: run the demo from the repository root "
            "(make demo)"
        )
    manifest = yaml.safe_load(scenario.manifest.read_text())
    fleet = yaml.safe_load(scenario.fleet.read_text()) if scenario.fleet else None
    clusters = _clusters_of(manifest, fleet)
    storage, collection, text_field = _source_of(manifest, fleet)
    namespace = manifest["metadata"].get("namespace", "default")
    name = manifest["metadata"]["name"]
    started = time.monotonic()

    data = load_demo_data(limit=scenario.points)
    console.print(
        f"[bold]1.[/bold] Loading {len(data.records):,} Debian package descriptions "
        f"({data.vectors.shape[1]}-d embeddings) into embedded cluster 'general' "
        f"({storage}), collection '{collection}'"
    )
    _fresh(scenario, clusters)
    load_source(storage, collection, text_field, data, scenario.root / "input")
    files = [*([scenario.fleet] if scenario.fleet else []), scenario.manifest]
    console.print(
        f"[bold]2.[/bold] librarian up {' '.join(f'-f {f}' for f in files)} --state "
        f"{scenario.state_dir}: "
        "an emulated Kubernetes API, the operator, the migration Jobs and the router"
    )
    config = UpConfig(
        files=files,
        state_dir=scenario.state_dir,
        host=scenario.host,
        port=scenario.port,
        settings=DEMO_SETTINGS,
        load_window_s=scenario.load_window_s,
    )

    def write(line: str) -> None:
        if _shown(line):
            console.print(f"   [dim]{escape(line)}[/dim]")

    quiet = QuietWatch(scenario.quiet_s)
    try:
        async with (
            progress_lines(console, quiet),
            local_library(config, run_command=run_command, write=write) as running,
            aiohttp.ClientSession() as http,
        ):
            watch = ResourceWatch(running.api)
            quiet.step("analysing and labelling the source collection")
            library = next(
                e.name for e in running.libraries if e.domainmap == f"{namespace}/{name}"
            )
            status = await watch.until(
                _ready(watch, namespace, name), scenario.timeout_s, f"DomainMap {name} Ready"
            )
            specializations: list[dict[str, Any]] = []
            if manifest["spec"].get("specialize") == "auto":
                console.print(
                    f"[bold]3.[/bold] Specializing {status['domainCount']} domains onto "
                    + ", ".join(t["cluster"] for t in manifest["spec"]["specialization"]["targets"])
                    + " (librarian up runs their migration Jobs; each shown once Ready)"
                )
                quiet.step(
                    "specializing",
                    _finished_of(watch, namespace, status["domainCount"]),
                )
                specializations = await watch.until(
                    _specialized(watch, namespace, status["domainCount"]),
                    scenario.timeout_s,
                    "every ClusterSpecialization finished",
                )
            ready = sum(1 for i in specializations if i["status"]["phase"] == "Ready")
            quiet.step(f"waiting for the router to serve {ready} specialized domains")
            await _serving(http, running.url, library, ready, scenario.timeout_s)
            console.print(
                f"[bold]4.[/bold] Querying library '{library}' at {running.url} through "
                "qdrant-client"
            )
            ids = list(range(len(data.records)))
            answered = [0]
            quiet.step(
                "querying",
                lambda: f"{answered[0]} of {scenario.queries} queries answered and checked",
            )
            router_report = await run_router_workload(
                http,
                running.url,
                library,
                ids,
                data.vectors,
                queries=scenario.queries,
                repeated=scenario.repeated,
                progress=lambda done: answered.__setitem__(0, done),
            )
            rebalance_report = None
            if scenario.policy is not None:
                console.print(
                    "[bold]5.[/bold] Skewing the query load so one cluster runs hot; "
                    "a RebalancePolicy moves domains off it"
                )
                quiet.step("rebalancing")
                rebalance_report = await run_rebalancing(
                    running.api,
                    watch,
                    http,
                    running.url,
                    library,
                    policy_path=scenario.policy,
                    namespace=namespace,
                    vectors=data.vectors,
                    labels=read_labels(storage, collection),
                    ids=ids,
                    console=console,
                    queries=scenario.skewed_queries,
                    timeout_s=scenario.timeout_s,
                )
            events = running.api.events(namespace)
    except (UpError, WaitTimeout, RebalancingFailed) as error:
        raise DemoError(str(error)) from None
    labels = read_labels(storage, collection)
    return DemoReport(
        status=status,
        labels=labels,
        nmi=_nmi(labels, load_demo_sections()),
        seconds=time.monotonic() - started,
        events=events,
        specializations=specializations,
        router=router_report,
        rebalancing=rebalance_report,
    )
