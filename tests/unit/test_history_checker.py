"""The per-id linearizability checker: accepts what a correct store may do, names each failure."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import combinations, permutations

import pytest

from librarian.testing.history import (
    FINAL_CLIENT,
    History,
    HistoryTooLarge,
    Kind,
    Operation,
    Outcome,
    PointId,
    Verdict,
    Violation,
    ViolationKind,
    check,
)

ID = 7


def op(
    client: str,
    kind: Kind,
    token: str | None,
    invoked: float,
    completed: float | None,
    outcome: Outcome = "ok",
    point_id: PointId = ID,
) -> Operation:
    return Operation(client, kind, point_id, token, invoked, completed, outcome)


def write(
    token: str, invoked: float, completed: float | None, outcome: Outcome = "ok"
) -> Operation:
    return op(token.split("-")[0], "write", token, invoked, completed, outcome)


def update(
    token: str, invoked: float, completed: float | None, outcome: Outcome = "ok"
) -> Operation:
    return op(token.split("-")[0], "update", token, invoked, completed, outcome)


def delete(invoked: float, completed: float | None, outcome: Outcome = "ok") -> Operation:
    return op("cd", "delete", None, invoked, completed, outcome)


def read(observed: str | None, invoked: float, completed: float) -> Operation:
    return op("cr", "read", observed, invoked, completed)


def final_of(token: str | None) -> dict[PointId, list[str]]:
    return {ID: [] if token is None else [token]}


def only(verdict: Verdict) -> Violation:
    assert len(verdict.violations) == 1, verdict.report()
    return verdict.violations[0]


def accepts(ops: Sequence[Operation], final: Mapping[PointId, Sequence[str]]) -> bool:
    return check(ops, final).ok


# -- valid histories -------------------------------------------------------------------------


def test_sequential_history_is_accepted_and_its_final_value_is_the_only_one() -> None:
    ops = [write("a-1", 0, 1), read("a-1", 2, 3), update("b-1", 4, 5), read("b-1", 6, 7)]
    verdict = check(ops, final_of("b-1"))
    assert verdict.ok, verdict.report()
    assert verdict.summary() == "linearizable: 1 id and 4 operations checked"
    assert not accepts(ops, final_of("a-1"))
    assert not accepts(ops, final_of(None))


def test_concurrent_writes_may_land_in_either_order() -> None:
    ops = [write("a-1", 0, 2), write("b-1", 1, 3)]
    assert accepts(ops, final_of("a-1"))
    assert accepts(ops, final_of("b-1"))
    # Once the writes no longer overlap, only the later one may be final.
    sequential = [write("a-1", 0, 1), write("b-1", 2, 3)]
    assert not accepts(sequential, final_of("a-1"))


def test_operations_that_touch_in_time_are_concurrent() -> None:
    # b-1 was invoked at the very instant a-1 completed: neither surely came first.
    ops = [write("a-1", 0, 1), write("b-1", 1, 2)]
    assert accepts(ops, final_of("a-1"))
    assert not accepts([write("a-1", 0, 1), write("b-1", 1.001, 2)], final_of("a-1"))


def test_reads_must_agree_with_the_order_the_final_value_implies() -> None:
    ops = [write("a-1", 0, 2), write("b-1", 1, 3), read("a-1", 4, 5)]
    assert accepts(ops, final_of("a-1"))
    # The read saw a-1 after both writes completed: b-1 came first, a-1 is final.
    assert not accepts(ops, final_of("b-1"))


def test_read_concurrent_with_a_write_may_see_old_or_new() -> None:
    ops = [write("a-1", 0, 1), write("b-1", 2, 5)]
    for seen in ("a-1", "b-1"):
        assert accepts([*ops, read(seen, 3, 4)], final_of("b-1")), seen
    # But not the new value and then the old one.
    flip = [*ops, read("b-1", 2.5, 3), read("a-1", 3.5, 4)]
    assert not accepts(flip, final_of("b-1"))


# -- unknown outcomes ------------------------------------------------------------------------


@pytest.mark.parametrize("completed", [3.0, None])
def test_unknown_write_may_or_may_not_apply(completed: float | None) -> None:
    ops = [write("a-1", 0, 1), write("b-1", 2, completed, "unknown")]
    assert accepts(ops, final_of("a-1"))
    assert accepts(ops, final_of("b-1"))
    assert not accepts(ops, final_of(None))


def test_unknown_write_may_apply_late_after_later_operations() -> None:
    ops = [
        write("a-1", 0, 1, "unknown"),
        write("b-1", 2, 3),
        read("b-1", 4, 5),
        update("b-2", 6, 7),
        read("b-2", 8, 9),
    ]
    # a-1 timed out at 1 yet took effect after everything else.
    assert accepts(ops, final_of("a-1"))
    # Acknowledged, the same write could not have.
    acknowledged = [write("a-1", 0, 1), *ops[1:]]
    assert not accepts(acknowledged, final_of("a-1"))
    assert accepts(acknowledged, final_of("b-2"))


def test_unknown_write_applies_at_most_once() -> None:
    ops = [
        write("a-1", 0, 1, "unknown"),
        read("a-1", 2, 3),
        write("b-1", 4, 5),
        read("b-1", 6, 7),
        read("a-1", 8, 9),
    ]
    violation = only(check(ops, final_of("a-1")))
    assert violation.kind == "stale_read"
    assert violation.operations[0] == ops[4]


def test_unknown_operations_take_effect_where_the_reads_need_them() -> None:
    ops = [
        write("a-1", 0, 1),
        update("u-1", 2, None, "unknown"),
        delete(3, None, "unknown"),
        read(None, 4, 5),
        write("b-1", 6, 7),
        read("u-1", 8, 9),
    ]
    # Only order: a-1, the delete, the read of nothing, b-1, then the update, then u-1 is seen.
    assert accepts(ops, final_of("u-1"))
    assert not accepts(ops, final_of("b-1"))
    assert not accepts([*ops, read("u-1", 10, 11), read(None, 12, 13)], final_of(None))


def test_unknown_delete_may_remove_an_acknowledged_write() -> None:
    ops = [write("a-1", 0, 1), delete(0.5, None, "unknown")]
    assert accepts(ops, final_of("a-1"))
    assert accepts(ops, final_of(None))


def test_pending_operations_count_as_unknown() -> None:
    now = iter(float(t) for t in range(100))
    history = History(clock=lambda: next(now))
    history.complete(history.invoke("a", "write", ID, "a-1"), "ok")  # [0, 1]
    history.invoke("b", "delete", ID)  # 2, never answered
    assert len(history) == 2
    assert history.operations[-1].outcome == "unknown"
    assert history.operations[-1].completed is None
    assert check(history, final_of(None)).ok
    assert check(history, final_of("a-1")).ok


# -- updates and failures --------------------------------------------------------------------


def test_update_on_an_absent_point_has_no_effect() -> None:
    ops = [write("a-1", 0, 1), delete(2, 3), update("u-1", 4, 5), read(None, 6, 7)]
    assert accepts(ops, final_of(None))
    violation = only(check(ops, final_of("u-1")))
    assert violation.kind == "not_linearizable"
    assert "updates, which do nothing to an absent point" in violation.message
    # On a present point the same update takes effect.
    present = [write("a-1", 0, 1), update("u-1", 4, 5)]
    assert accepts(present, final_of("u-1"))
    assert only(check(present, final_of("a-1"))).kind == "stale"


def test_update_before_any_write_is_a_no_op() -> None:
    ops = [update("u-1", 0, 1), read(None, 2, 3), write("a-1", 4, 5)]
    assert accepts(ops, final_of("a-1"))
    assert only(check([*ops, read("u-1", 6, 7)], final_of("a-1"))).kind == "stale_read"


def test_failed_operations_are_ignored() -> None:
    ops = [write("a-1", 0, 1), delete(2, 3, "fail"), write("b-1", 4, 5, "fail")]
    assert accepts(ops, final_of("a-1"))
    assert only(check(ops, final_of(None))).kind == "lost"
    phantom = only(check(ops, final_of("b-1")))
    assert phantom.kind == "phantom"
    assert "which failed" in phantom.message
    assert ops[2] in phantom.operations


def test_failed_and_unanswered_reads_observe_nothing() -> None:
    ops = [
        write("a-1", 0, 1),
        op("r", "read", "zzz", 2, 3, "fail"),
        op("r", "read", None, 4, None, "unknown"),
    ]
    assert accepts(ops, final_of("a-1"))


# -- each failure, by name -------------------------------------------------------------------


def test_lost_write() -> None:
    ops = [write("a-1", 0, 1), read("a-1", 2, 3)]
    violation = only(check(ops, final_of(None)))
    assert violation.kind == "lost"
    assert ops[0] in violation.operations
    assert "a-1" in violation.message
    # A delete that could come after it explains the absence.
    assert accepts([*ops, delete(2.5, 4)], final_of(None))


def test_lost_write_shown_by_a_read_of_an_unknown_write() -> None:
    ops = [write("a-1", 0, None, "unknown"), read("a-1", 2, 3)]
    violation = only(check(ops, final_of(None)))
    assert violation.kind == "lost"
    assert violation.operations[0] == ops[1]
    assert accepts(ops[:1], final_of(None))


def test_stale_read_names_the_read() -> None:
    ops = [write("a-1", 0, 1), write("b-1", 2, 3), read("b-1", 3.5, 3.8), read("a-1", 4, 5)]
    violation = only(check(ops, final_of("b-1")))
    assert violation.kind == "stale_read"
    assert violation.operations[0] == ops[3]
    assert "read (saw 'a-1') by cr [4.000, 5.000] ok" in violation.message
    assert "replaced 'a-1'" in violation.message
    assert accepts(ops[:3], final_of("b-1"))


def test_read_of_absent_after_an_acknowledged_write_is_stale() -> None:
    ops = [write("a-1", 0, 1), read(None, 2, 3)]
    violation = only(check(ops, final_of("a-1")))
    assert violation.kind == "stale_read"
    assert "no delete could come between" in violation.message


def test_read_from_the_future() -> None:
    ops = [read("a-1", 0, 1), write("a-1", 2, 3)]
    violation = only(check(ops, final_of("a-1")))
    assert violation.kind == "stale_read"
    assert "before any write of it began" in violation.message


def test_stale_final_value() -> None:
    ops = [write("a-1", 0, 1), write("b-1", 2, 3)]
    violation = only(check(ops, final_of("a-1")))
    assert violation.kind == "stale"
    assert ops[1] in violation.operations
    assert "b-1" in violation.message


def test_stale_final_value_shown_by_a_read() -> None:
    # The unknown write a-1 was seen after b-1 completed, so it came last.
    ops = [write("a-1", 0, None, "unknown"), write("b-1", 1, 2), read("a-1", 3, 4)]
    violation = only(check(ops, final_of("b-1")))
    assert violation.kind == "stale"
    assert ops[2] in violation.operations


def test_resurrected_after_an_acknowledged_delete() -> None:
    ops = [write("a-1", 0, 1), delete(2, 3)]
    violation = only(check(ops, final_of("a-1")))
    assert violation.kind == "resurrected"
    assert ops[1] in violation.operations
    # A delete concurrent with the write may come first.
    assert accepts([write("a-1", 0, 2.5), delete(2, 3)], final_of("a-1"))


def test_overwritten_after_a_delete_is_stale_rather_than_resurrected() -> None:
    ops = [write("a-1", 0, 1), delete(2, 3), write("b-1", 4, 5)]
    assert only(check(ops, final_of("a-1"))).kind == "stale"
    reordered = [write("a-1", 0, 1), write("b-1", 2, 3), delete(4, 5)]
    assert only(check(reordered, final_of("a-1"))).kind == "resurrected"


def test_duplicate() -> None:
    ops = [write("a-1", 0, 1)]
    violation = only(check(ops, {ID: ["a-1", "a-1"]}))
    assert violation.kind == "duplicate"
    assert "2 copies" in violation.message


def test_phantom_id_never_written() -> None:
    ops = [write("a-1", 0, 1)]
    verdict = check(ops, {ID: ["a-1"], 99: ["x-1"]})
    violation = only(verdict)
    assert violation.point_id == 99
    assert violation.kind == "phantom"
    assert verdict.ids_checked == 2


def test_token_never_written_to_this_id_is_phantom() -> None:
    ops = [write("a-1", 0, 1), op("b", "write", "b-1", 0, 1, point_id=8)]
    violation = only(check(ops, {ID: ["b-1"], 8: ["b-1"]}))
    assert violation.point_id == ID
    assert violation.kind == "phantom"


def test_unknown_writes_ordered_by_reads_make_the_final_value_stale() -> None:
    ops = [
        write("a-1", 0, None, "unknown"),
        write("b-1", 0, None, "unknown"),
        read("a-1", 1, 2),
        read("b-1", 3, 4),
    ]
    assert accepts(ops, final_of("b-1"))
    # a-1 took effect (once) before the first read, b-1 after it: a-1 cannot be final.
    violation = only(check(ops, final_of("a-1")))
    assert violation.kind == "stale"
    assert ops[3] in violation.operations


def test_read_conflicting_only_with_the_final_value_is_not_linearizable() -> None:
    ops = [
        write("a-1", 0, 1),
        delete(1.5, None, "unknown"),
        update("u-1", 2, 10),
        read(None, 3, 4),
    ]
    # Either alone is fine: the update applies (no delete), or the delete comes before the read.
    assert accepts(ops[:3], final_of("u-1"))
    assert accepts(ops, final_of(None))
    # Together the delete precedes the read, so the update found nothing to change.
    violation = only(check(ops, final_of("u-1")))
    assert violation.kind == "not_linearizable"
    assert ops[3] in violation.operations
    assert "read (saw ABSENT) by cr [3.000, 4.000] ok" in violation.message


# -- the verdict across ids ------------------------------------------------------------------


def test_ids_are_checked_separately_and_summarized() -> None:
    ops = [
        op("a", "write", "a-1", 0, 1, point_id=1),
        op("a", "write", "a-2", 0, 1, point_id=2),
        op("a", "write", "a-3", 0, 1, point_id=3),
        op("b", "delete", None, 2, 3, point_id=3),
    ]
    verdict = check(ops, {1: ["a-1"], 2: [], 3: ["a-3"], "s": ["x", "y"]})
    assert not verdict.ok
    assert [v.point_id for v in verdict.violations] == [2, 3, "s"]
    assert verdict.counts() == {"lost": 1, "resurrected": 1, "duplicate": 1}
    assert verdict.summary() == (
        "NOT linearizable: 1 duplicate, 1 lost, 1 resurrected (4 ids and 4 operations checked)"
    )
    assert verdict.report(limit=1).splitlines()[-1] == "... and 2 more"
    only_one = check(ops, {1: ["a-1"], 2: []}, ids=[1])
    assert only_one.ok
    assert only_one.ids_checked == 1


def test_missing_final_entry_means_absent() -> None:
    ops = [write("a-1", 0, 1)]
    assert only(check(ops, {})).kind == "lost"


def test_operation_validation() -> None:
    with pytest.raises(ValueError, match="no answer"):
        op("a", "write", "a-1", 0, None, "ok")
    with pytest.raises(ValueError, match="names the token"):
        op("a", "write", None, 0, 1)
    with pytest.raises(ValueError, match="completed before"):
        op("a", "delete", None, 2, 1)
    with pytest.raises(TypeError, match="list of tokens"):
        check([write("a-1", 0, 1)], {ID: "a-1"})


def test_history_records_with_its_clock() -> None:
    ticks = iter([10.0, 11.0, 12.0, 13.0, 14.0])
    history = History(clock=lambda: next(ticks))
    w = history.invoke("a", "write", 1, "a-1")
    r = history.invoke("b", "read", 1)
    written = history.complete(w, "ok")
    seen = history.complete(r, "ok", observed="a-1")
    assert (written.invoked, written.completed, written.token) == (10.0, 12.0, "a-1")
    assert (seen.invoked, seen.completed, seen.token) == (11.0, 13.0, "a-1")
    with pytest.raises(ValueError, match="already completed"):
        history.complete(w, "ok")
    assert check(history, {1: ["a-1"]}).ok
    assert not check(history, {1: []}).ok
    unanswered = history.no_answer(history.invoke("c", "delete", 1))
    assert (unanswered.invoked, unanswered.completed, unanswered.outcome) == (14.0, None, "unknown")
    assert check(history, {1: []}).ok


# -- limits ----------------------------------------------------------------------------------


def test_too_many_operations_for_one_id_raise() -> None:
    ops = [write(f"a-{i}", 2 * i, 2 * i + 1) for i in range(201)]
    with pytest.raises(HistoryTooLarge, match="limit of 200"):
        check(ops, final_of("a-200"))
    assert check(ops[:199], final_of("a-198")).ok


def test_search_budget_raises_rather_than_hanging() -> None:
    # Twenty overlapping acknowledged writes, then a read nothing explains: proving that
    # takes every subset of the writes, far more than the budget.
    ops = [write(f"a-{i}", 0, 10) for i in range(20)]
    ops.append(read("zzz", 11, 12))
    with pytest.raises(HistoryTooLarge, match="max_states"):
        check(ops, final_of("a-1"), max_states=10_000)
    # Few enough writes fit in the same budget, and the read is caught.
    assert only(check(ops[:8] + ops[-1:], final_of("a-1"), max_states=10_000)).kind == "stale_read"


# -- randomized: simulate a register, jitter the times, mutate the final state ---------------

CLIENTS = ("c0", "c1", "c2", "c3")
JITTER = 3.0  # an operation's span reaches this far either side of the instant it takes effect
KINDS: tuple[Kind, ...] = ("write", "write", "update", "delete", "read", "read")
OUTCOMES: tuple[Outcome, ...] = ("ok", "unknown", "fail")


def simulate(
    seed: int, point_ids: Sequence[int], steps: int
) -> tuple[list[Operation], dict[PointId, list[str]]]:
    """A valid history: each operation takes effect at its own instant, inside a jittered span."""
    rng = random.Random(seed)
    values: dict[int, str | None] = dict.fromkeys(point_ids)
    ops: list[Operation] = []
    for step in range(steps):
        at = float(step)
        point_id = rng.choice(point_ids)
        client = rng.choice(CLIENTS)
        kind = rng.choice(KINDS)
        outcome = rng.choices(OUTCOMES, weights=[8, 1, 1])[0]
        applies = outcome == "ok" or (outcome == "unknown" and rng.random() < 0.5)
        token = None if kind in ("delete", "read") else f"{client}-{step}"
        if kind == "read":
            token = values[point_id] if outcome == "ok" else None
        elif applies:
            values[point_id] = _after(kind, token, values[point_id])
        invoked = at - rng.uniform(0, JITTER)
        completed: float | None = at + rng.uniform(0, JITTER)
        if outcome == "unknown" and rng.random() < 0.5:
            completed = None
        ops.append(Operation(client, kind, point_id, token, invoked, completed, outcome))
    final: dict[PointId, list[str]] = {i: [] if v is None else [v] for i, v in values.items()}
    return ops, final


def _after(kind: Kind, token: str | None, value: str | None) -> str | None:
    if kind == "write":
        return token
    if kind == "update":
        return token if value is not None else None
    return None


def seal(ops: list[Operation], point_ids: Sequence[int]) -> list[Operation]:
    """An acknowledged write per id after everything else: any older acknowledged value is stale."""
    end = max(o.invoked if o.completed is None else o.completed for o in ops) + 1
    return [*ops, *(Operation("s", "write", i, f"s-{i}", end, end + 1, "ok") for i in point_ids)]


SEEDS = range(12)
STEPS = 100
POINT_IDS = (0, 1)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_valid_histories_are_accepted(seed: int) -> None:
    ops, final = simulate(seed, POINT_IDS, steps=STEPS)
    verdict = check(ops, final)
    assert verdict.ok, verdict.report()
    assert verdict.operations_checked == STEPS
    sealed = seal(ops, POINT_IDS)
    assert check(sealed, {i: [f"s-{i}"] for i in POINT_IDS}).ok


def test_random_histories_overlap() -> None:
    # The jitter must make the checker's job non-trivial: most operations overlap another
    # operation on the same id.
    ops, _ = simulate(0, POINT_IDS, steps=STEPS)

    def overlap(a: Operation, b: Operation) -> bool:
        a_end = math.inf if a.completed is None else a.completed
        b_end = math.inf if b.completed is None else b.completed
        return a.point_id == b.point_id and a.invoked <= b_end and b.invoked <= a_end

    overlapping = [a for a in ops if any(overlap(a, b) for b in ops if b is not a)]
    assert len(overlapping) > STEPS // 2


def mutations(ops: Sequence[Operation], point_id: int) -> list[tuple[list[str], ViolationKind]]:
    """Final states of ``point_id`` that its sealed history rules out, and what each one is."""
    mine = [o for o in ops if o.point_id == point_id]
    sealed = f"s-{point_id}"
    found: list[tuple[list[str], ViolationKind]] = [
        ([sealed, sealed], "duplicate"),
        ([f"x-{point_id}"], "phantom"),
    ]
    acknowledged = [o.token for o in mine if o.kind == "write" and o.outcome == "ok" and o.token]
    if acknowledged:
        found.append(([acknowledged[-1]], "stale"))
    # An unknown delete may take effect after the seal, unless a read needed it earlier.
    if not any(o.kind == "delete" and o.outcome == "unknown" for o in mine):
        found.append(([], "lost"))
    return found


def test_random_mutated_final_states_are_rejected() -> None:
    tried: Counter[ViolationKind] = Counter()
    for seed in SEEDS:
        ops, _ = simulate(seed, POINT_IDS, steps=STEPS)
        sealed = seal(ops, POINT_IDS)
        good: dict[PointId, list[str]] = {i: [f"s-{i}"] for i in POINT_IDS}
        for i in POINT_IDS:
            for copies, kind in mutations(ops, i):
                violation = only(check(sealed, {**good, i: copies}))
                assert (violation.point_id, violation.kind) == (i, kind), (
                    f"seed {seed}: {violation}"
                )
                tried[kind] += 1
    assert set(tried) == {"duplicate", "phantom", "stale", "lost"}
    assert min(tried.values()) >= 5, tried


# -- against brute force: every order of every subset of unknown operations -------------------


def brute_force_accepts(ops: Sequence[Operation], final: str | None) -> bool:
    """The definition, literally: slow, but obviously right for a handful of operations."""
    live = [o for o in ops if o.outcome == "ok" or (o.outcome == "unknown" and o.kind != "read")]
    required = [o for o in live if o.outcome == "ok"]
    required.append(op(FINAL_CLIENT, "read", final, math.inf, math.inf))
    optional = [o for o in live if o.outcome == "unknown"]

    def surely_before(a: Operation, b: Operation) -> bool:
        return a.outcome == "ok" and a.completed is not None and a.completed < b.invoked

    def explains(order: Sequence[Operation]) -> bool:
        value: str | None = None
        for position, o in enumerate(order):
            if any(surely_before(later, o) for later in order[position + 1 :]):
                return False
            if o.kind == "read" and o.token != value:
                return False
            value = value if o.kind == "read" else _after(o.kind, o.token, value)
        return True

    subsets = (s for r in range(len(optional) + 1) for s in combinations(optional, r))
    return any(explains(order) for s in subsets for order in permutations([*required, *s]))


def random_small_history(rng: random.Random) -> tuple[list[Operation], str | None]:
    """A few operations with arbitrary times, outcomes, tokens and reads: valid or not."""
    ops: list[Operation] = []
    for n in range(rng.randint(2, 5)):
        kind = rng.choice(KINDS)
        outcome = rng.choices(OUTCOMES, weights=[6, 2, 1])[0]
        invoked = float(rng.randint(0, 6))
        completed: float | None = invoked + rng.randint(0, 3)
        if outcome == "unknown" and rng.random() < 0.5:
            completed = None
        written = [o.token for o in ops if o.kind in ("write", "update")]
        token: str | None = None
        if kind in ("write", "update"):
            token = rng.choice(["a", "b", f"c{n}", f"d{n}"])  # sometimes written twice
        elif kind == "read" and rng.random() < 0.6:
            token = rng.choice([*written, "a"])
        ops.append(op(f"c{n}", kind, token, invoked, completed, outcome))
    written = [o.token for o in ops if o.kind in ("write", "update")]
    return ops, rng.choice([*written, None, None, "zz"])


# The kinds of violation that can explain a final state holding one copy (False) or none (True).
FITS: dict[bool, set[ViolationKind]] = {
    False: {"phantom", "resurrected", "stale", "stale_read", "not_linearizable"},
    True: {"lost", "stale_read", "not_linearizable"},
}


def test_agrees_with_brute_force_on_small_random_histories() -> None:
    rng = random.Random(2024)
    verdicts: Counter[bool] = Counter()
    kinds: Counter[ViolationKind] = Counter()
    for _ in range(600):
        ops, final = random_small_history(rng)
        expected = brute_force_accepts(ops, final)
        verdict = check(ops, final_of(final))
        assert verdict.ok == expected, f"{ops}, final {final!r}: {verdict.report()}"
        assert len(verdict.violations) == (0 if expected else 1)
        verdicts[expected] += 1
        for violation in verdict.violations:
            assert violation.kind in FITS[final is None], violation
            kinds[violation.kind] += 1
    assert min(verdicts[True], verdicts[False]) > 150, verdicts
    assert len(kinds) >= 6, kinds
