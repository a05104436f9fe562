"""The ``librarian`` command: load, up, status, demo, operator, router, discover, migrate,
analyze, label, config.

Why this exists: one entrypoint for people and for containers. The operator
image runs ``librarian operator``; people run ``librarian discover`` on a
collection or a ``.npy`` file, ``librarian load`` and ``librarian up`` for the
library on their own data without a cluster, and ``librarian demo`` for the
embedded default. Commands parse arguments, call the library and print; they
hold no algorithm.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from librarian import __version__
from librarian.core.discovery import STRATEGIES, DiscoveryError, DiscoveryResult, discover
from librarian.settings import ConfigError, Settings, load_settings, settings_as_yaml
from librarian.storage.errors import QdrantError

if TYPE_CHECKING:
    from librarian.core.collection_spec import Distance

console = Console(
    stderr=True, soft_wrap=True
)  # messages stay whole: paths and URLs copy as they are


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LIBRARIAN_CONFIG",
    help="Configuration file (default: built-in defaults; see config/multi-cluster-managers.yaml).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override one configuration key, e.g. --set domain_discovery.strategy=kmeans.",
)
@click.version_option(
    __version__, "--version", prog_name="librarian", message="%(prog)s %(version)s"
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """qdrant-librarian: discover, specialize, route and rebalance Qdrant domains."""
    try:
        ctx.obj = load_settings(config_path, overrides=overrides)
    except ConfigError as error:
        raise click.UsageError(str(error)) from None


@main.command("config")
@click.pass_obj
def show_config(settings: Settings) -> None:
    """Print the effective configuration (defaults, file, environment and --set applied)."""
    click.echo(settings_as_yaml(settings), nl=False)


# --------------------------------------------------------------------------- discover


@main.command("discover")
@click.option(
    "--npy",
    "npy_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Analyse a .npy file of vectors (n, d) offline.",
)
@click.option(
    "--texts",
    "texts_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --npy: a .jsonl (one object per row, see --text-field) or .txt "
    "(one line per row) giving each vector's text for keywords.",
)
@click.option("--url", help="Analyse a collection on a remote Qdrant cluster at this URL.")
@click.option(
    "--embedded",
    type=click.Path(file_okay=False, path_type=Path),
    help="Analyse a collection on an embedded Qdrant engine stored at this path.",
)
@click.option("--collection", help="The source collection (with --url or --embedded).")
@click.option(
    "--api-key-env", metavar="VAR", help="Read the API key of --url from this environment variable."
)
@click.option(
    "--text-field",
    default="text",
    show_default=True,
    help="Payload (or .jsonl) field holding each point's text.",
)
@click.option(
    "--sample-size",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Points sampled from the collection.",
)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    help="Discovery strategy (default: domain_discovery.strategy of the configuration).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-domains", type=click.IntRange(min=1), help="Upper bound on domains.")
@click.option("--min-domains", type=click.IntRange(min=1), help="Lower bound on domains.")
@click.option("--min-domain-size", type=click.IntRange(min=1), help="Smallest domain kept.")
@click.option(
    "--merge-similarity",
    type=click.FloatRange(0.0, 1.0),
    help="Cosine similarity above which domains merge.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.pass_obj
def discover_command(
    settings: Settings,
    npy_path: Path | None,
    texts_path: Path | None,
    url: str | None,
    embedded: Path | None,
    collection: str | None,
    api_key_env: str | None,
    text_field: str,
    sample_size: int,
    strategy: str | None,
    seed: int,
    max_domains: int | None,
    min_domains: int | None,
    min_domain_size: int | None,
    merge_similarity: float | None,
    as_json: bool,
) -> None:
    """Find the semantic domains in a collection or a .npy file and print them."""
    sources = [s for s in (npy_path, url, embedded) if s is not None]
    if len(sources) != 1:
        raise click.UsageError("give exactly one source: --npy FILE, --url URL or --embedded PATH")
    if npy_path is None and not collection:
        raise click.UsageError("--collection is required with --url or --embedded")
    if texts_path is not None and npy_path is None:
        raise click.UsageError("--texts goes with --npy; collections carry their text in payloads")
    thresholds: dict[str, Any] = {
        key: value
        for key, value in {
            "max_domains": max_domains,
            "min_domains": min_domains,
            "min_domain_size": min_domain_size,
            "merge_similarity": merge_similarity,
        }.items()
        if value is not None
    }
    chosen = strategy or settings.domain_discovery.strategy
    with _progress(quiet=as_json) as step:
        try:
            if npy_path is not None:
                step("loading vectors")
                vectors = _load_npy(npy_path)
                texts = _load_texts(texts_path, text_field, len(vectors)) if texts_path else None
                source = str(npy_path)
            else:
                step("sampling the collection")
                vectors, texts, source = _sample_collection(
                    url, embedded, str(collection), api_key_env, text_field, sample_size
                )
            step(f"discovering domains ({chosen}) in {len(vectors):,} vectors")
            result = discover(vectors, strategy=chosen, texts=texts, seed=seed, **thresholds)
        except (DiscoveryError, QdrantError) as error:
            raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(result_as_json(result, source=source, points=len(vectors)), indent=2))
    else:
        Console().print(domains_table(result, title=f"{len(result.domains)} domains in {source}"))


def _load_npy(path: Path) -> npt.NDArray[np.float32]:
    """The vectors of ``path`` with the same checks as ``librarian load`` (shape, numbers, finite)."""
    from librarian.services.loading import LoadRefused, read_vectors

    try:
        return np.asarray(read_vectors(path), dtype=np.float32)
    except LoadRefused as error:
        raise click.ClickException(str(error)) from None


def _load_texts(path: Path, field: str, expected: int) -> list[str]:
    lines = path.read_text().splitlines()
    if path.suffix == ".jsonl":
        try:
            texts = [str(json.loads(line).get(field, "")) for line in lines if line.strip()]
        except (json.JSONDecodeError, AttributeError) as error:
            raise click.ClickException(f"{path} is not JSON lines of objects: {error}") from None
    else:
        texts = lines
    if len(texts) != expected:
        raise click.ClickException(
            f"{path} has {len(texts)} texts but the vectors file has {expected} rows; "
            "they must match row for row"
        )
    return texts


def _sample_collection(
    url: str | None,
    embedded: Path | None,
    collection: str,
    api_key_env: str | None,
    text_field: str,
    sample_size: int,
) -> tuple[npt.NDArray[np.float32], list[str] | None, str]:
    from librarian.services.sampling import sample_points
    from librarian.storage.fleet import ClusterConfig, connect

    api_key = _api_key(api_key_env)
    where = url or str(embedded)
    config = ClusterConfig(
        name=where, url=url, embedded=str(embedded) if embedded else None, api_key=api_key
    )
    port = connect(config)
    try:
        sample = sample_points(port, collection, sample_size, text_field=text_field)
    finally:
        port.close()
    return sample.vectors, sample.texts, f"{where} / {collection}"


@contextmanager
def _progress(*, quiet: bool) -> Iterator[Callable[[str], None]]:
    if quiet or (not sys.stderr.isatty() and os.environ.get("CI")):
        yield lambda _description: None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=None)
        yield lambda description: progress.update(task, description=description)


def domains_table(result: DiscoveryResult, *, title: str) -> Table:
    """A readable table of domains: name, size, keywords, cohesion."""
    table = Table(title=title, title_justify="left")
    for column, justify in (
        ("id", "left"),
        ("name", "left"),
        ("size", "right"),
        ("share", "right"),
        ("cohesion", "right"),
        ("keywords", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    total = max(1, sum(d.size for d in result.domains))
    for domain in sorted(result.domains, key=lambda d: -d.size):
        table.add_row(
            domain.id,
            domain.name,
            f"{domain.size:,}",
            f"{domain.size / total:.1%}",
            f"{domain.cohesion:.3f}",
            ", ".join(domain.keywords[:6]),
        )
    table.caption = f"strategy {result.strategy}, confidence {result.confidence:.3f}"
    return table


def result_as_json(result: DiscoveryResult, *, source: str, points: int) -> dict[str, Any]:
    """The discovery result as plain JSON (centroids included: this is for files, not etcd)."""
    return {
        "source": source,
        "points": points,
        "strategy": result.strategy,
        "confidence": round(float(result.confidence), 6),
        "domains": [
            {
                "id": d.id,
                "name": d.name,
                "size": d.size,
                "radius": round(float(d.radius), 6),
                "cohesion": round(float(d.cohesion), 6),
                "keywords": list(d.keywords),
                "parent": d.parent,
                "centroid": [round(float(x), 6) for x in d.centroid],
            }
            for d in result.domains
        ],
        "labels": [int(x) for x in result.labels],
        "partitions": [{"id": p.id, "domain": p.domain, "size": p.size} for p in result.partitions],
    }


def run(argv: Sequence[str] | None = None) -> int:
    """Entry for tests: run the CLI and return the exit code."""
    try:
        main.main(args=list(argv or ()), standalone_mode=False)
    except click.ClickException as error:
        error.show()
        return error.exit_code
    return 0


# --------------------------------------------------------------------------- load


def _api_key(api_key_env: str | None) -> str | None:
    """The API key from the environment variable named by ``--api-key-env`` (never an argument)."""
    if not api_key_env:
        return None
    api_key = os.environ.get(api_key_env)
    if not api_key:
        raise click.UsageError(f"environment variable {api_key_env} is not set or empty")
    return api_key


@main.command("load")
@click.option(
    "--embedded",
    type=click.Path(file_okay=False, path_type=Path),
    help="Load into an embedded Qdrant engine stored at this path (created if missing).",
)
@click.option("--url", help="Load into the remote Qdrant cluster at this URL.")
@click.option(
    "--api-key-env", metavar="VAR", help="Read the API key of --url from this environment variable."
)
@click.option("--collection", required=True, help="The collection (created if missing).")
@click.option(
    "--npy",
    "npy_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The vectors: a .npy array (points, dimensions); row i becomes point id i.",
)
@click.option(
    "--payload",
    "payload_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="RECORDS.jsonl: one JSON object per line, line i+1 the payload of point i.",
)
@click.option(
    "--distance",
    type=click.Choice(["Cosine", "Dot", "Euclid"]),
    help="Distance of a new collection (default Cosine); an existing one must match.",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=500, show_default=True, hidden=True
)
def load_command(
    embedded: Path | None,
    url: str | None,
    api_key_env: str | None,
    collection: str,
    npy_path: Path,
    payload_path: Path | None,
    distance: str | None,
    batch_size: int,
) -> None:
    """Load a .npy of vectors (and a .jsonl of payloads) into a collection.

    Every check runs before anything is written; running it again upserts the
    same points.
    """
    from librarian.services.loading import LoadRefused, load_points, plan_load
    from librarian.storage.fleet import ClusterConfig, FleetConfigError, connect

    if (embedded is None) == (url is None):
        raise click.UsageError("give exactly one target: --embedded PATH or --url URL")
    if api_key_env and url is None:
        raise click.UsageError("--api-key-env goes with --url")
    try:
        config = ClusterConfig(
            name=url or str(embedded),
            url=url,
            embedded=str(embedded) if embedded is not None else None,
            api_key=_api_key(api_key_env),
        )
    except FleetConfigError as error:
        raise click.UsageError(str(error)) from None
    where = f"embedded:{embedded}" if embedded is not None else str(url)
    try:
        port = connect(config)
    except QdrantError as error:
        raise click.ClickException(str(error)) from None
    try:
        plan = plan_load(
            port, collection, npy_path, payload_path, cast("Distance | None", distance)
        )
        with _bar(f"loading {plan.rows:,} points", plan.rows) as advance:
            report = load_points(port, plan, batch_size=batch_size, on_progress=advance)
    except LoadRefused as error:
        raise click.ClickException(str(error)) from None
    except QdrantError as error:
        raise click.ClickException(str(error)) from None
    finally:
        port.close()
    click.echo(
        f"{'Created' if report.created else 'Updated'} collection {report.collection!r} on "
        f"{where}: {report.points:,} points upserted ({report.dimensions}-d, {report.distance}), "
        f"{report.points_in_collection:,} in the collection"
    )


@contextmanager
def _bar(description: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (silent when stderr is not a terminal)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done, _total: progress.update(task, completed=done)


# --------------------------------------------------------------------------- operator and demo


@main.command("operator")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only these namespaces (default: the whole cluster).",
)
@click.option(
    "--liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Liveness endpoint served by the operator ('' to disable).",
)
@click.option(
    "--server",
    envvar="LIBRARIAN_KUBERNETES_SERVER",
    help="API server URL without credentials (for an emulated API); "
    "default: in-cluster service account, then kubeconfig.",
)
@click.pass_obj
def operator_command(
    settings: Settings, namespaces: tuple[str, ...], liveness: str, server: str | None
) -> None:
    """Run the operator (the container's command)."""
    import asyncio
    import logging

    from librarian.kube.job_pod import job_pod_from_env
    from librarian.operator.context import OperatorContext
    from librarian.operator.runtime import run_operator
    from librarian.storage.tls import qdrant_ssl_context

    level = os.environ.get("LIBRARIAN_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        # Checked before anything runs: a bad jobs.* value or an unreadable CA bundle stops
        # the operator with a message naming it, instead of failing every Job later.
        job_pod = job_pod_from_env()
        qdrant_ssl_context()
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    asyncio.run(
        run_operator(
            server_url=server,
            namespaces=namespaces,
            liveness_endpoint=liveness or None,
            context=OperatorContext.from_settings(settings, job_pod=job_pod),
        )
    )


@main.command("router")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=6333, show_default=True)
@click.option(
    "--domainmap",
    "domainmaps",
    multiple=True,
    envvar="LIBRARIAN_DOMAINMAP",
    help="Serve this DomainMap's library (NAMESPACE/NAME), following its ClusterSpecializations "
    "(repeatable: each library under its own collection name, at the same ports).",
)
@click.option(
    "--all-domainmaps",
    "all_domainmaps",
    metavar="NAMESPACE",
    envvar="LIBRARIAN_ALL_DOMAINMAPS",
    help="Serve every DomainMap of NAMESPACE, following those created and deleted while it runs.",
)
@click.option(
    "--server",
    envvar="LIBRARIAN_KUBERNETES_SERVER",
    help="API server URL (default: in-cluster service account, then kubeconfig).",
)
@click.option(
    "--cluster",
    "clusters",
    multiple=True,
    metavar="NAME=URL|NAME=embedded:PATH",
    help="Without --domainmap: a cluster of the fleet (API key from LIBRARIAN_API_KEY_<NAME>); "
    "an embedded PATH must exist.",
)
@click.option(
    "--source",
    metavar="CLUSTER/COLLECTION",
    help="Without --domainmap: the source; every domain is served from it.",
)
@click.option("--catalog", metavar="CLUSTER/COLLECTION", help="Without --domainmap: the catalog.")
@click.option("--owner", help="Without --domainmap: the catalog owner (NAMESPACE/NAME).")
@click.option("--library", "library_name", help="The library's collection name (default: source).")
@click.option(
    "--vector",
    "source_vector",
    metavar="NAME",
    help="Without --domainmap: the source's dense vector to route on, as the DomainMap's "
    "spec.source.vector (default: the unnamed one, or the only dense one).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=9090,
    show_default=True,
    envvar="LIBRARIAN_ROUTER_METRICS_PORT",
    help="Prometheus /metrics is served on this port, apart from the API.",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    default=6334,
    show_default=True,
    envvar="LIBRARIAN_ROUTER_GRPC_PORT",
    help="Qdrant's gRPC API is served on this port (0: not served).",
)
@click.option(
    "--passthrough",
    multiple=True,
    metavar="COLLECTION",
    envvar="LIBRARIAN_ROUTER_PASSTHROUGH",
    help="A collection of the default cluster served as it is (repeatable; none by default). "
    "The product's own collections are never served.",
)
@click.option(
    "--insecure",
    is_flag=True,
    envvar="LIBRARIAN_ROUTER_INSECURE",
    help="Serve beyond loopback without LIBRARIAN_ROUTER_API_KEY (anyone can read and write).",
)
@click.pass_obj
def router_command(
    settings: Settings,
    host: str,
    port: int,
    domainmaps: tuple[str, ...],
    all_domainmaps: str | None,
    server: str | None,
    clusters: tuple[str, ...],
    source: str | None,
    catalog: str | None,
    owner: str | None,
    library_name: str | None,
    source_vector: str | None,
    metrics_port: int,
    grpc_port: int,
    passthrough: tuple[str, ...],
    insecure: bool,
) -> None:
    """Serve Qdrant's REST and gRPC APIs for the library (the router's container command).

    Callers authenticate as with Qdrant (``api-key`` header or a Bearer JWT)
    with the keys of LIBRARIAN_ROUTER_API_KEY and LIBRARIAN_ROUTER_READ_ONLY_API_KEY
    (and their _SECONDARY); without a key the router listens on loopback only
    unless told --insecure.

    With --domainmap the router follows the DomainMap and its
    ClusterSpecializations: a specialized domain is read from its own
    collection. Given several --domainmap (or --all-domainmaps NAMESPACE) it
    serves each library under its own collection name; /readyz waits for
    every one, /metrics labels each sample with its library. Without Kubernetes (--cluster, --source, --catalog) it reads
    the catalog only and serves every domain from the source collection;
    specialized collections are not used. Clusters, source and catalog must
    exist when it starts.
    """
    import asyncio
    import logging

    from librarian.router.auth import check_bind
    from librarian.router.libraries import LibrarySet
    from librarian.router.main import (
        RouterSource,
        access_options,
        clusters_of,
        domainmap_router,
        kubernetes_login,
        prepare_router,
        serve,
        serve_libraries,
        split_pair,
    )
    from librarian.storage.tls import qdrant_ssl_context

    level = os.environ.get("LIBRARIAN_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    domainmap = domainmaps[0] if len(domainmaps) == 1 and not all_domainmaps else None
    several = len(domainmaps) > 1 or all_domainmaps is not None
    try:
        if all_domainmaps is not None and domainmaps:
            raise ValueError("give --domainmap or --all-domainmaps, not both")
        if len(set(domainmaps)) != len(domainmaps):
            raise ValueError("each --domainmap once: " + ", ".join(domainmaps))
        spec = RouterSource(
            domainmap=domainmap,
            clusters=clusters_of(clusters),
            source=split_pair(source, "--source") if source else None,
            catalog=split_pair(catalog, "--catalog") if catalog else None,
            owner=owner,
            library_name=library_name,
            vector=source_vector,
        )
        if not (domainmap or several) and not (clusters and source and catalog):
            raise ValueError(
                "give --domainmap NAMESPACE/NAME (repeatable), --all-domainmaps NAMESPACE, "
                "or --cluster, --source and --catalog"
            )
        if several and library_name:
            raise ValueError(
                "--library names one library: with several DomainMaps each is served under "
                "its own source collection's name"
            )
        access = access_options(os.environ, insecure=insecure, passthrough=passthrough)
        check_bind(host, access["keys"], insecure=insecure)
        qdrant_ssl_context()  # a CA bundle that cannot be read stops the router at start
    except ValueError as error:
        raise click.UsageError(str(error)) from None

    async def main() -> None:
        if domainmap or several:
            kubernetes_login(server)
        if several:
            libraries = LibrarySet(
                keys=access["keys"],
                insecure=insecure,
                max_body_bytes=settings.domain_library_orchestrator.limits.max_body_bytes,
            )
            await serve_libraries(
                libraries,
                host,
                port,
                settings=settings,
                domainmaps=[d if "/" in d else f"default/{d}" for d in domainmaps],
                follow_namespace=all_domainmaps,
                make_state=lambda d: domainmap_router(settings, d, access=access),
                metrics_port=metrics_port,
                grpc_port=grpc_port,
            )
            return
        state = await prepare_router(settings, spec, access=access)
        await serve(state, host, port, metrics_port=metrics_port, grpc_port=grpc_port)

    try:
        asyncio.run(main())
    except (QdrantError, RuntimeError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise SystemExit(1) from None


@main.command("demo")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    default=Path("manifests/examples/domainmap.yaml"),
    show_default=True,
    help="The DomainMap librarian up is started on.",
)
@click.option(
    "--fleet",
    type=click.Path(path_type=Path),
    default=Path("manifests/examples/qdrantfleet.yaml"),
    show_default=True,
    help="The QdrantFleet the DomainMap names in spec.fleetRef (started with it).",
)
@click.option(
    "--policy",
    type=click.Path(path_type=Path),
    default=Path("manifests/examples/rebalancepolicy.yaml"),
    show_default=True,
    help="The RebalancePolicy applied once the load is skewed.",
)
@click.option(
    "--timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to wait for each step (the DomainMap Ready, the specializations, the moves).",
)
def demo_command(manifest: Path, fleet: Path, policy: Path, timeout: float) -> None:
    """Run the embedded default end to end on librarian up and print what it measured.

    Loads the bundled data, starts librarian up on --manifest with a fresh
    state in .demo/state/ (librarian status --state .demo/state shows it
    afterwards), queries the library through qdrant-client, skews the load and
    applies --policy.
    """
    _require_local("demo")
    import asyncio

    from librarian.demo.output import log_to_file
    from librarian.demo.report import print_report
    from librarian.demo.runner import DemoError, DemoScenario, run_demo

    scenario = DemoScenario(manifest=manifest, fleet=fleet, policy=policy, timeout_s=timeout)
    log = log_to_file(scenario.root / "demo.log")
    # Bound to the real stdout now: a Job's command runs under CliRunner, which swaps sys.stdout.
    out = Console(file=sys.stdout, width=max(Console().width, 120))
    out.print(f"[dim]The operator's, the router's and the Jobs' logs go to {log}[/dim]")
    try:
        report = asyncio.run(run_demo(scenario, console=out, run_command=run_job_command))
    except DemoError as error:
        raise click.ClickException(f"{error} (the logs are in {log})") from None
    print_report(report, out)


def run_job_command(
    args: Sequence[str], environment: Mapping[str, str] | None = None
) -> tuple[bool, str]:
    """Run a Job container's ``args`` (and environment) in-process, as the image's entry point would."""
    from click.testing import CliRunner

    result = CliRunner().invoke(main, list(args), env=dict(environment or {}))
    return result.exit_code == 0, result.output


def _require_local(command: str) -> None:
    """``up`` and ``demo`` run an in-process Kubernetes API: the ``local`` extra."""
    try:
        import kmock  # noqa: F401
    except ImportError:
        raise click.ClickException(
            f"librarian {command} runs an in-process Kubernetes API, which needs the local "
            "extra: pip install 'qdrant-librarian[local]'"
        ) from None


# --------------------------------------------------------------------------- up and status


@main.command("up")
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML with DomainMap, ClusterSpecialization, RebalancePolicy and Secret documents "
    "(repeatable; optional when resuming a state).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=6333, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".librarian"),
    show_default=True,
    help="Where resources and their status are kept; the same --state resumes where it was.",
)
@click.option(
    "--passthrough",
    multiple=True,
    metavar="COLLECTION",
    help="A collection served as it is beside the libraries (repeatable; none by default).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Serve beyond loopback without LIBRARIAN_ROUTER_API_KEY (anyone can read and write).",
)
@click.pass_obj
def up_command(
    settings: Settings,
    files: tuple[Path, ...],
    port: int,
    host: str,
    state_dir: Path,
    passthrough: tuple[str, ...],
    insecure: bool,
) -> None:
    """Run the library on your own data without a cluster: operator, Jobs and routers in one process.

    Serves Qdrant's REST API at http://HOST:PORT (each library under its source
    collection's name; GET /readyz is 200 once every library is loaded; callers
    authenticate with LIBRARIAN_ROUTER_API_KEY / _READ_ONLY_API_KEY when set) and
    prints each resource's phase as it changes. Stops cleanly on Ctrl-C or
    SIGTERM.
    """
    _require_local("up")
    import asyncio
    import logging
    import signal

    from librarian.local.up import UpConfig, UpError, run_up

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("kopf").setLevel(logging.ERROR)
    out = sys.stdout  # kept: a Job's command runs under CliRunner, which swaps sys.stdout

    def write(line: str) -> None:
        print(line, file=out, flush=True)

    from librarian.router.auth import RouterKeys, check_bind

    try:
        keys = RouterKeys.from_env(os.environ)
        check_bind(host, keys, insecure=insecure)  # before anything starts
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    config = UpConfig(
        files=files,
        state_dir=state_dir,
        host=host,
        port=port,
        settings=settings,
        keys=keys,
        insecure=insecure,
        passthrough=frozenset(passthrough),
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        interrupts = []

        def on_signal(number: int) -> None:
            if number == signal.SIGINT:
                interrupts.append(number)
            if len(interrupts) > 1:
                write(
                    "Stopped without waiting (an interrupted migration resumes at the next start)"
                )
                os._exit(130)
            if not stop.is_set():
                write("Stopping (Ctrl-C again to stop without waiting)")
            stop.set()

        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, on_signal, number)

        def ready(running: Any) -> None:
            names = ", ".join(library.name for library in running.libraries)
            write(
                f"Serving Qdrant's REST API at {running.url} (libraries: {names}); "
                f"state in {state_dir}/; Ctrl-C to stop"
            )

        await run_up(config, run_command=run_job_command, write=write, stop=stop, on_ready=ready)

    try:
        asyncio.run(serve())
    except UpError as error:
        raise click.ClickException(str(error)) from None
    write("Stopped.")


@main.command("status")
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".librarian"),
    show_default=True,
    help="The state directory of librarian up.",
)
@click.option("--port", type=click.IntRange(1, 65535), help="Ask a running librarian up instead.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--wide", is_flag=True, help="More columns, as kubectl get -o wide.")
def status_command(state_dir: Path, port: int | None, host: str, wide: bool) -> None:
    """Print the resources of librarian up as kubectl get would: a table per kind."""
    from librarian.local.crds import packaged_crds
    from librarian.local.printer import get_tables
    from librarian.local.state import StateDirectory, StateError

    if port is not None:
        items = _live_resources(f"http://{host}:{port}")
    else:
        state = StateDirectory(state_dir)
        if not state.resources.is_dir():
            raise click.ClickException(
                f"no state in {state_dir}/: start with librarian up -f FILE (or give --state DIR)"
            )
        try:
            items = state.load()
        except StateError as error:
            raise click.ClickException(str(error)) from None
        running = state.running()
        click.echo(
            f"librarian up is running at {running.url} (pid {running.pid})"
            if running
            else f"librarian up is not running; as stored in {state_dir}/:",
            err=True,
        )
    click.echo(get_tables(items, packaged_crds(), wide=wide))


def _live_resources(url: str) -> list[dict[str, Any]]:
    import urllib.error
    import urllib.request

    from librarian.contracts.router_keys import caller_key

    key = caller_key()  # the key librarian up was started with, from the same variables
    request = urllib.request.Request(
        f"{url}/librarian/resources", headers={"api-key": key} if key else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise click.ClickException(
                f"librarian up at {url} refused the request (HTTP {error.code}): set "
                "LIBRARIAN_ROUTER_READ_ONLY_API_KEY or LIBRARIAN_ROUTER_API_KEY to its key"
            ) from None
        raise click.ClickException(f"librarian up at {url} answered HTTP {error.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise click.ClickException(
            f"no librarian up answers at {url} ({error}): is it running on that port?"
        ) from None
    return list(data.get("items") or [])


# --------------------------------------------------------------------------- migrate


def _placement(
    opened: list[tuple[Any, Any]],
    target: Any,
    target_collection: str,
    domain_id: str,
    *,
    catalog: tuple[str | None, Path | None, str | None, str | None],
    vector: str,
) -> Any:
    """The partition placement of a target placed by partition: its indexed partition field,
    or one shard key per partition (``None`` for any other target)."""
    from librarian.core.collection_spec import RoutingVectorError, routing_vector_name
    from librarian.operator.jobs import CATALOG_API_KEY_ENV
    from librarian.services.placement import placed_by_field, read_placement
    from librarian.storage.errors import CollectionNotFound
    from librarian.storage.fleet import ClusterConfig, connect

    url, embedded, collection, owner = catalog
    try:
        info = target.collection_info(target_collection)
    except CollectionNotFound:
        return None
    spec = info.spec
    by_field = placed_by_field(info)
    if spec.shard_keys is None and not by_field:
        return None
    try:
        vector = routing_vector_name(spec, vector or None)
    except RoutingVectorError as error:
        raise click.UsageError(f"--routing-vector: {error}") from None
    if not collection or not owner or not (url or embedded):
        raise click.UsageError(
            f"{target_collection} is placed by partition: give --catalog-collection, "
            "--catalog-owner and --catalog-url or --catalog-embedded so each point is marked "
            "with its partition"
        )
    wanted = (url, str(embedded) if embedded else None)
    port = next((p for config, p in opened if (config.url, config.embedded) == wanted), None)
    own = port is None
    if port is None:  # the catalog lives on a third cluster
        port = connect(
            ClusterConfig(
                name="catalog",
                url=url,
                embedded=wanted[1],
                api_key=os.environ.get(CATALOG_API_KEY_ENV) or None,
            )
        )
    try:
        placement = read_placement(port, collection, owner, domain_id, vector, by_field=by_field)
        if placement is not None and spec.shard_keys is not None:
            placement = placement.restricted(spec.shard_keys)
    finally:
        if own:
            port.close()
    if placement is None:
        raise click.ClickException(
            f"the catalog {collection} holds no partitions of domain {domain_id}; "
            f"{target_collection} cannot place its points"
        )
    return placement


@main.command("migrate")
@click.option("--name", required=True, help="Unique migration name (checkpoint key).")
@click.option("--domain", "domain_id", required=True, help="Domain id (the label value).")
@click.option("--source-url", help="Source cluster URL.")
@click.option("--source-embedded", type=click.Path(file_okay=False, path_type=Path))
@click.option("--source-collection", required=True)
@click.option("--target-url", help="Target cluster URL.")
@click.option("--target-embedded", type=click.Path(file_okay=False, path_type=Path))
@click.option("--target-collection", required=True)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Points per batch (default: cluster_specialization.migration.batch_size).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Parallel upserts (default: cluster_specialization.migration.parallel_workers).",
)
@click.option(
    "--verify/--no-verify",
    default=None,
    help="Verify before anything is deleted (default: migration.verify_migration).",
)
@click.option(
    "--cleanup",
    is_flag=True,
    help="Delete the moved points from the source after verification and the grace period.",
)
@click.option("--grace", default="0s", show_default=True, help="Grace period before cleanup.")
@click.option(
    "--fence-version",
    type=click.IntRange(min=0, max=2**53 - 1),
    default=None,
    help="The first version of the routers' dual writes: the copy never overwrites a point "
    "at this version or newer (default: none, the copy overwrites; for a move nobody writes).",
)
@click.option(
    "--dedicated-source/--shared-source",
    default=False,
    show_default=True,
    help="The source collection holds only this domain: its unlabelled points (written "
    "around the library) are moved too, labelled.",
)
@click.option(
    "--verify-tries",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Checks of differing points (with a growing pause between: in-flight writes land) "
    "before the migration fails naming them.",
)
@click.option("--catalog-url", help="The catalog's cluster URL (a target placed by partition).")
@click.option("--catalog-embedded", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--catalog-collection",
    help="The catalog collection holding the domain's partitions: each point is written marked "
    "with its partition (in the partition field of a target with that payload index, or under "
    "its shard key in a target created with one shard key per partition).",
)
@click.option("--catalog-owner", help="The catalog's owner (the DomainMap, namespace/name).")
@click.option(
    "--routing-vector",
    default="",
    help="The dense vector points are placed by (default: the unnamed one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def migrate_command(
    settings: Settings,
    name: str,
    domain_id: str,
    source_url: str | None,
    source_embedded: Path | None,
    source_collection: str,
    target_url: str | None,
    target_embedded: Path | None,
    target_collection: str,
    batch_size: int | None,
    workers: int | None,
    verify: bool | None,
    cleanup: bool,
    grace: str,
    fence_version: int | None,
    dedicated_source: bool,
    verify_tries: int,
    catalog_url: str | None,
    catalog_embedded: Path | None,
    catalog_collection: str | None,
    catalog_owner: str | None,
    routing_vector: str,
    as_json: bool,
) -> None:
    """Move one domain's points to its collection: copy, catch up, verify, clean up (resumable).

    API keys come from LIBRARIAN_SOURCE_API_KEY and LIBRARIAN_TARGET_API_KEY.
    Exit codes: 0 done or verified, 3 verification failed (nothing deleted; the
    differing ids are printed, and kept in the checkpoint), 1 a cluster error (retry).
    """
    import time

    from librarian.core.durations import DurationError, parse_duration
    from librarian.operator.jobs import SOURCE_API_KEY_ENV, TARGET_API_KEY_ENV
    from librarian.services.migration import MigrationFailed, MigrationPlan, migrate
    from librarian.storage.fleet import ClusterConfig, FleetConfigError, connect

    try:
        grace_s = parse_duration(grace)
        source_config = ClusterConfig(
            name="source",
            url=source_url,
            embedded=str(source_embedded) if source_embedded else None,
            api_key=os.environ.get(SOURCE_API_KEY_ENV) or None,
        )
        target_config = ClusterConfig(
            name="target",
            url=target_url,
            embedded=str(target_embedded) if target_embedded else None,
            api_key=os.environ.get(TARGET_API_KEY_ENV) or None,
        )
    except (DurationError, FleetConfigError) as error:
        raise click.UsageError(str(error)) from None
    defaults = settings.cluster_specialization.migration
    plan = MigrationPlan(
        name=name,
        source_collection=source_collection,
        target_collection=target_collection,
        domain_id=domain_id,
        batch_size=batch_size or defaults.batch_size,
        workers=workers or defaults.parallel_workers,
        verify=defaults.verify_migration if verify is None else verify,
        cleanup=cleanup,
        grace_s=grace_s,
        fence_version=fence_version,
        dedicated_source=dedicated_source,
        verify_tries=verify_tries,
    )
    source = connect(source_config)
    same = (source_url, source_embedded) == (target_url, target_embedded)
    target = source if same else connect(target_config)
    try:
        placement = _placement(
            [(target_config, target), (source_config, source)],
            target,
            target_collection,
            domain_id,
            catalog=(catalog_url, catalog_embedded, catalog_collection, catalog_owner),
            vector=routing_vector,
        )
        report = migrate(
            source,
            target,
            plan,
            placement=placement,
            now=time.time,
            on_progress=None
            if as_json
            else lambda phase, done, total: console.print(f"{phase}: {done:,}/{total:,}"),
        )
    except MigrationFailed as error:
        console.print(f"[red]{error}[/red]")
        if as_json:
            click.echo(json.dumps({"error": str(error), "differing": list(error.differing)}))
        raise SystemExit(3) from None
    except QdrantError as error:
        raise click.ClickException(str(error)) from None
    finally:
        source.close()
        if target is not source:
            target.close()
    data = {
        "phase": report.phase,
        "copied": report.copied,
        "sourceCount": report.source_count,
        "targetCount": report.target_count,
        "verified": report.verified,
        "verifiedSample": report.verified_sample,
        "removedFromSource": report.removed_from_source,
        "cleanupDueInSeconds": report.cleanup_due_in_s,
        "verifiedPoints": report.verified_points,
        "unversioned": report.unversioned,
        "unlabelled": report.unlabelled,
        "differing": list(report.differing),
        "notes": list(report.notes),
    }
    click.echo(
        json.dumps(data)
        if as_json
        else f"{report.phase}: copied {report.copied:,}, target {report.target_count:,}, "
        f"verified={report.verified} ({report.verified_points:,} points by version), "
        f"removed from source {report.removed_from_source:,}, written around the library: "
        f"{report.unversioned:,} without a version, {report.unlabelled:,} without a label"
    )


# --------------------------------------------------------------------------- analyze


@main.command("analyze")
@click.option("--name", required=True, help="The analysis request's name (the operator writes it).")
@click.option("--source-url", help="Source cluster URL.")
@click.option("--source-embedded", type=click.Path(file_okay=False, path_type=Path))
@click.option("--catalog-url", help="Catalog cluster URL (default: the source cluster).")
@click.option("--catalog-embedded", type=click.Path(file_okay=False, path_type=Path))
def analyze_command(
    name: str,
    source_url: str | None,
    source_embedded: Path | None,
    catalog_url: str | None,
    catalog_embedded: Path | None,
) -> None:
    """Sample a DomainMap's source, discover its domains and publish them to the catalog.

    The request (the spec's analysis parameters) is read from the source
    cluster, where the operator wrote it; progress is recorded there too. The
    catalog is published in one atomic step at the end: a run killed before it
    leaves the previous publication served, and runs again from the start. A run
    the operator replaced meanwhile publishes nothing (exit code 0). API keys come from
    LIBRARIAN_SOURCE_API_KEY and LIBRARIAN_CATALOG_API_KEY. Exit code 1: a
    cluster error (retry).
    """
    from librarian.operator.jobs import CATALOG_API_KEY_ENV, SOURCE_API_KEY_ENV
    from librarian.services.analysis_job import AnalysisStore, NoAnalysisRequest, run_analysis
    from librarian.storage.fleet import ClusterConfig, FleetConfigError, connect

    separate_catalog = bool(catalog_url or catalog_embedded)
    try:
        source_config = ClusterConfig(
            name="source",
            url=source_url,
            embedded=str(source_embedded) if source_embedded else None,
            api_key=os.environ.get(SOURCE_API_KEY_ENV) or None,
        )
        catalog_config = (
            ClusterConfig(
                name="catalog",
                url=catalog_url,
                embedded=str(catalog_embedded) if catalog_embedded else None,
                api_key=os.environ.get(CATALOG_API_KEY_ENV) or None,
            )
            if separate_catalog
            else source_config
        )
    except FleetConfigError as error:
        raise click.UsageError(str(error)) from None
    source = connect(source_config)
    catalog = connect(catalog_config) if separate_catalog else source
    try:
        store = AnalysisStore(source)
        request = store.load_request(name)
        end = run_analysis(source, catalog, request, store=store)
    except NoAnalysisRequest as error:
        # The operator removes the request of an analysis it replaced, and of a DomainMap
        # that went: nothing is left to do (a failure would only make the Job retry).
        click.echo(f"analysis {name}: Superseded: {error}")
        return
    except QdrantError as error:
        raise click.ClickException(str(error)) from None
    finally:
        source.close()
        if catalog is not source:
            catalog.close()
    click.echo(f"analysis {name}: {end.phase}: {end.message}")


# --------------------------------------------------------------------------- label


@main.command("label")
@click.option("--name", required=True, help="The labeling plan's name (the operator writes it).")
@click.option("--source-url", help="Source cluster URL.")
@click.option("--source-embedded", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--worker",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    envvar="JOB_COMPLETION_INDEX",
    help="Which id range to label (an Indexed Job gives each pod its own).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True)
def label_command(
    name: str,
    source_url: str | None,
    source_embedded: Path | None,
    worker: int,
    batch_size: int,
) -> None:
    """Label one id range of a DomainMap's source with its domains (resumable).

    The plan (domains and id ranges) is read from the source cluster, where the
    operator wrote it; the worker resumes from the last page it committed. The
    API key comes from LIBRARIAN_SOURCE_API_KEY. Exit code 1: a cluster error (retry).
    """
    from librarian.operator.jobs import SOURCE_API_KEY_ENV
    from librarian.services.labeling_job import LabelingProgressStore, label_range
    from librarian.storage.fleet import ClusterConfig, FleetConfigError, connect

    try:
        config = ClusterConfig(
            name="source",
            url=source_url,
            embedded=str(source_embedded) if source_embedded else None,
            api_key=os.environ.get(SOURCE_API_KEY_ENV) or None,
        )
    except FleetConfigError as error:
        raise click.UsageError(str(error)) from None
    source = connect(config)
    try:
        store = LabelingProgressStore(source)
        plan = store.load_plan(name)
        end = label_range(
            source,
            plan,
            worker,
            store=store,
            batch_size=batch_size,
            on_progress=lambda p: console.print(f"range {worker}: labelled {p.labeled:,}"),
        )
    except QdrantError as error:
        raise click.ClickException(str(error)) from None
    finally:
        source.close()
    click.echo(
        f"range {worker} of {len(plan.ranges)}: labelled {end.labeled:,} "
        f"({end.skipped:,} rewritten or deleted meanwhile, left as written)"
    )


if __name__ == "__main__":  # python -m librarian.cli (tests start it so)
    main()
