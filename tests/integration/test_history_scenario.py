"""The history scenario: clients racing through the router while clusters fail and a domain moves.

Each seed runs the whole scenario once (a module-scoped fixture) and two tests
read its result: that it did what its schedule says (a property of the
harness, which must always hold), and that the history is linearizable and the
clusters' contents consistent (a property of the product): no acknowledged
write lost, no acknowledged delete undone, no stale read, one live copy per
point, labels and versions on every point, and a moved domain's two homes
agreeing by (id, version). ``benchmarks/bench_history.py`` runs the same
checks over many more seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from librarian.testing.scenario import (
    KILL_POINTS,
    ScenarioConfig,
    ScenarioResult,
    run_scenario,
)

pytestmark = pytest.mark.timeout(300)

SEEDS = [3, 11, 29]


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def without_move(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ScenarioResult:
    seed = request.param
    config = ScenarioConfig(seed=seed, move=False)
    result = run_scenario(config, tmp_path_factory.mktemp(f"nomove{seed}"))
    print(result.report())
    return result


def test_with_clusters_failing_no_acknowledged_write_is_lost_or_delete_undone(
    without_move: ScenarioResult,
) -> None:
    events = "\n".join(without_move.events)
    for step in (" down", "healed", "hung", "quiet:"):
        assert step in events, events
    assert without_move.ops["write"].get("unknown", 0) > 0, "no write was left in doubt"
    counts = without_move.verdict.counts()
    for kind in ("lost", "stale", "resurrected", "phantom", "not_linearizable"):
        assert not counts.get(kind), without_move.report()


def test_with_clusters_failing_every_read_is_fresh_and_every_point_in_one_home(
    without_move: ScenarioResult,
) -> None:
    assert without_move.ok, without_move.report()


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ScenarioResult:
    seed = request.param
    result = run_scenario(ScenarioConfig(seed=seed), tmp_path_factory.mktemp(f"seed{seed}"))
    print(result.report())
    return result


def test_the_scenario_runs_its_schedule(scenario: ScenarioResult) -> None:
    """Faults, the move and the checker all happened, with enough traffic around them."""
    events = "\n".join(scenario.events)
    for step in (" down", "healed", "hung", ": dualWrite", "quiet:"):
        assert step in events, events
    assert "killed at call" in events, f"the kill ({KILL_POINTS} calls) did not land:\n{events}"
    moved = ": fence lifted" in events
    assert moved or ": rolled back" in events, events
    if moved:
        for phase in (": switched", ": done", "old home cleaned", "compared once the copy"):
            assert phase in events, events
    config = ScenarioConfig(seed=scenario.seed)
    assert scenario.operations >= config.clients * config.ops
    assert scenario.verdict.ids_checked == config.ids
    assert scenario.verdict.operations_checked == scenario.operations
    for kind in ("write", "update", "delete", "read"):
        assert scenario.ops[kind].get("ok", 0) > 0, scenario.ops
    assert scenario.ops["write"].get("unknown", 0) > 0, "no write was left in doubt by a fault"


def test_the_history_is_linearizable_and_the_clusters_consistent(
    scenario: ScenarioResult,
) -> None:
    assert scenario.ok, scenario.report()


def test_the_scenario_sees_a_write_path_that_leaves_stale_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the settling step gone (older copies in the homes a write leaves are kept),
    points that change domain are left live in two homes: the checker and the structural
    checks both say so."""

    async def keep_older_copies(*args: object, **kwargs: object) -> None:
        return None

    monkeypatch.setattr("librarian.router.writes.Writes._settle", keep_older_copies)
    config = ScenarioConfig(seed=5, outage=False, hang=False, move=False)
    result = run_scenario(config, tmp_path)
    assert not result.ok
    counts = result.verdict.counts()
    assert counts.get("duplicate", 0) + counts.get("stale", 0) >= 3, result.report()
    assert any("homes:" in p for p in result.problems), result.report()


@pytest.mark.parametrize("seed", [3, 11])
def test_homes_placed_by_partition_field_keep_every_invariant(seed: int, tmp_path: Path) -> None:
    """The same clients, faults and move with every home one shard whose points carry their
    partition in the indexed field (the move's copy marks it too): the history stays
    linearizable, one live copy per point, the moved domain's homes agree by (id, version)."""
    result = run_scenario(ScenarioConfig(seed=seed, sharded=True, partition_field=True), tmp_path)
    print(result.report())
    events = "\n".join(result.events)
    assert ": dualWrite" in events, events
    assert result.ok, result.report()


@pytest.mark.parametrize("seed", [3, 11])
def test_homes_sharded_by_partition_keep_every_invariant(seed: int, tmp_path: Path) -> None:
    """The same clients, faults and move with every home sharded by partition (writes placed
    under their partition's shard key, the move's copy too): the history stays linearizable,
    one live copy per point, the moved domain's homes agree by (id, version)."""
    result = run_scenario(ScenarioConfig(seed=seed, sharded=True), tmp_path)
    print(result.report())
    events = "\n".join(result.events)
    assert ": dualWrite" in events, events
    assert result.ok, result.report()
