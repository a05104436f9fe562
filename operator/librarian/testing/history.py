"""Check a recorded history of writes, deletes, updates and reads, one point id at a time.

Why this exists: the router in front of several Qdrant clusters must never lose,
resurrect or serve stale an acknowledged write, even while data moves between
clusters and clusters die. Tests drive concurrent clients through it, record
every operation with when it was invoked, when it completed and how it ended,
read every id once the system is quiet, and hand all of it to :func:`check`.

In the spirit of Jepsen's Knossos, each point id is an independent register
whose value is either absent or the token of the write that produced it. An id
passes when some order of its operations respects real time (an operation that
completed before another was invoked comes first) and explains every read,
including the final one; the search for that order is Wing–Gong–Lowe's, with
memoization of (operations placed, value) states. An id that fails is given
the most specific name the evidence supports (lost, resurrected, stale, ...),
with the operations that show it.

Pure: no I/O, and no clock of its own (a :class:`History` is handed one).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, get_args

__all__ = [
    "FINAL_CLIENT",
    "MAX_OPS_PER_ID",
    "MAX_STATES",
    "History",
    "HistoryTooLarge",
    "Kind",
    "Operation",
    "Outcome",
    "Pending",
    "PointId",
    "Verdict",
    "Violation",
    "ViolationKind",
    "check",
]

PointId: TypeAlias = int | str
Kind: TypeAlias = Literal["write", "delete", "update", "read"]
Outcome: TypeAlias = Literal["ok", "fail", "unknown"]
ViolationKind: TypeAlias = Literal[
    "duplicate", "phantom", "lost", "resurrected", "stale", "stale_read", "not_linearizable"
]

MAX_OPS_PER_ID: Final = 200
"""Operations of one id the search accepts; beyond it :func:`check` raises instead of hanging."""
MAX_STATES: Final = 200_000
"""States one search may visit before :func:`check` raises instead of hanging."""
FINAL_CLIENT: Final = "final"
"""The client named by the final read :func:`check` adds for every id."""

_KINDS: Final = frozenset(get_args(Kind))
_OUTCOMES: Final = frozenset(get_args(Outcome))
_INF: Final = math.inf


class HistoryTooLarge(RuntimeError):
    """One id's history is too long, or too concurrent, to search within the limits."""


@dataclass(frozen=True)
class Operation:
    """One client operation on one point id, as the client saw it.

    ``token`` is the token written (write, update), or for a read the token
    observed, ``None`` meaning the point was absent. ``completed`` is ``None``
    when the client never got an answer. ``outcome`` is ``"ok"``
    (acknowledged), ``"fail"`` (definitely had no effect) or ``"unknown"``
    (may have taken effect, once, at any time after ``invoked``).
    """

    client: str
    kind: Kind
    point_id: PointId
    token: str | None
    invoked: float
    completed: float | None
    outcome: Outcome

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ValueError(f"{problem}: {self!r}")

    def describe(self) -> str:
        """The operation in a violation message: who, what, when, how it ended."""
        if self.kind == "read":
            what = f"read (saw {_show(self.token)})"
        elif self.kind == "delete":
            what = "delete"
        else:
            what = f"{self.kind} {self.token!r}"
        if self.client == FINAL_CLIENT:
            return f"the final {what}"
        end = "no answer" if self.completed is None else f"{self.completed:.3f}"
        return f"{what} by {self.client} [{self.invoked:.3f}, {end}] {self.outcome}"


def _problem(op: Operation) -> str | None:
    """Why ``op`` cannot be an operation of the model, or None."""
    if op.kind not in _KINDS:
        return f"kind must be one of {sorted(_KINDS)}"
    if op.outcome not in _OUTCOMES:
        return f"outcome must be one of {sorted(_OUTCOMES)}"
    if op.kind in ("write", "update") and op.token is None:
        return "a write or an update names the token it writes"
    if op.kind == "delete" and op.token is not None:
        return "a delete writes no token"
    if math.isnan(op.invoked):
        return "invoked is not a time"
    if op.completed is None:
        return None if op.outcome == "unknown" else "only an unknown outcome may have no answer"
    if not op.completed >= op.invoked:
        return "completed before it was invoked"
    return None


def _show(token: str | None) -> str:
    return "ABSENT" if token is None else repr(token)


@dataclass(frozen=True)
class Pending:
    """An operation invoked and not yet completed (see :meth:`History.invoke`)."""

    client: str
    kind: Kind
    point_id: PointId
    token: str | None
    invoked: float
    serial: int


class History:
    """The operations of a test run, recorded as clients invoke and complete them.

    ``clock`` gives every invocation and completion time (any monotonic
    float clock shared by all clients). Thread-safe. Operations still pending
    when :attr:`operations` is read count as unknown with no answer: a client
    that never heard back cannot say whether its write happened.
    """

    def __init__(self, clock: Callable[[], float], operations: Iterable[Operation] = ()) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._done: list[Operation] = list(operations)
        self._pending: dict[int, Pending] = {}
        self._serial = 0

    def add(self, operation: Operation) -> None:
        """Record an operation whose times the caller already knows."""
        with self._lock:
            self._done.append(operation)

    def invoke(
        self, client: str, kind: Kind, point_id: PointId, token: str | None = None
    ) -> Pending:
        """Record that ``client`` starts an operation now; complete it with the handle returned."""
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)}, not {kind!r}")
        now = self._clock()
        with self._lock:
            self._serial += 1
            pending = Pending(client, kind, point_id, token, now, self._serial)
            self._pending[pending.serial] = pending
        return pending

    def complete(
        self, pending: Pending, outcome: Outcome, *, observed: str | None = None
    ) -> Operation:
        """Record the answer to ``pending`` now; ``observed`` is what a read saw (None: absent)."""
        if observed is not None and pending.kind != "read":
            raise ValueError(f"only a read observes a value, not a {pending.kind}")
        with self._lock:
            if pending.serial not in self._pending:
                raise ValueError(f"operation already completed: {pending!r}")
        token = observed if pending.kind == "read" else pending.token
        return self._finish(pending, token, self._clock(), outcome)

    def no_answer(self, pending: Pending) -> Operation:
        """Record that ``pending`` will never be answered (the client gave up or died)."""
        token = None if pending.kind == "read" else pending.token
        return self._finish(pending, token, None, "unknown")

    def _finish(
        self, pending: Pending, token: str | None, completed: float | None, outcome: Outcome
    ) -> Operation:
        operation = Operation(
            pending.client,
            pending.kind,
            pending.point_id,
            token,
            pending.invoked,
            completed,
            outcome,
        )
        with self._lock:
            if self._pending.pop(pending.serial, None) is None:
                raise ValueError(f"operation already completed: {pending!r}")
            self._done.append(operation)
        return operation

    @property
    def operations(self) -> tuple[Operation, ...]:
        """Every operation so far, the ones still pending as unknown with no answer."""
        with self._lock:
            done = list(self._done)
            pending = list(self._pending.values())
        unanswered = [
            Operation(p.client, p.kind, p.point_id, p.token, p.invoked, None, "unknown")
            for p in pending
        ]
        return (*done, *unanswered)

    def __len__(self) -> int:
        with self._lock:
            return len(self._done) + len(self._pending)


@dataclass(frozen=True)
class Violation:
    """Why one id's history cannot be explained, and the operations that show it.

    ``kind``, the most specific that applies: ``duplicate`` (the final state
    holds several copies), ``phantom`` (it holds a value no operation that
    took effect wrote to the id), ``lost`` (it holds none, though an
    acknowledged write, or a read that saw the point, came after every delete
    that could remove it), ``resurrected`` (it holds a value an acknowledged
    delete removed after its last write), ``stale`` (it holds a value an
    acknowledged write, an update or a read of another value came after),
    ``stale_read`` (a read in the middle saw what no order explains), and
    ``not_linearizable`` when no simpler story fits.
    """

    point_id: PointId
    kind: ViolationKind
    message: str
    operations: tuple[Operation, ...] = ()

    def __str__(self) -> str:
        return f"id {self.point_id!r}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class Verdict:
    """What :func:`check` found: at most one violation per id, and how much it checked."""

    violations: tuple[Violation, ...]
    ids_checked: int
    operations_checked: int

    @property
    def ok(self) -> bool:
        return not self.violations

    def counts(self) -> dict[ViolationKind, int]:
        """How many ids failed, by kind of violation."""
        return dict(Counter(v.kind for v in self.violations))

    def summary(self) -> str:
        """One line for a failed assertion or a benchmark log: counts, ids and operations."""
        scope = (
            f"{_count(self.ids_checked, 'id')} and "
            f"{_count(self.operations_checked, 'operation')} checked"
        )
        if self.ok:
            return f"linearizable: {scope}"
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts().items()))
        return f"NOT linearizable: {counts} ({scope})"

    def report(self, limit: int = 20) -> str:
        """The summary and the first ``limit`` violations, one a line."""
        lines = [self.summary(), *(str(v) for v in self.violations[:limit])]
        if len(self.violations) > limit:
            lines.append(f"... and {len(self.violations) - limit} more")
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def check(
    history: History | Iterable[Operation],
    final: Mapping[PointId, Sequence[str]],
    *,
    ids: Iterable[PointId] | None = None,
    max_ops_per_id: int = MAX_OPS_PER_ID,
    max_states: int = MAX_STATES,
) -> Verdict:
    """Whether every id's operations, ending with its final read, are linearizable.

    ``final`` maps an id to the tokens of the copies the final read found
    (normally none or one); an id missing from it was found absent. The final
    read comes after every other operation. ``ids`` are the ids to check, by
    default every id of the history or of ``final``.

    Acknowledged operations take effect once, between invocation and
    completion; unknown ones once at any time after invocation, or never;
    failed ones never (failed and unknown reads saw nothing). An operation
    comes surely before another only when it completed strictly before the
    other was invoked.

    Raises :class:`HistoryTooLarge` when an id has more than
    ``max_ops_per_id`` operations or a search visits more than ``max_states``
    states.
    """
    operations = history.operations if isinstance(history, History) else tuple(history)
    by_id: dict[PointId, list[Operation]] = {}
    for op in operations:
        by_id.setdefault(op.point_id, []).append(op)
    chosen = set(by_id) | set(final) if ids is None else set(ids)
    violations: list[Violation] = []
    checked = 0
    for point_id in sorted(chosen, key=_id_order):
        ops = by_id.get(point_id, [])
        checked += len(ops)
        copies = final.get(point_id, ())
        if isinstance(copies, str):
            raise TypeError(f"final[{point_id!r}] is a list of tokens, not the string {copies!r}")
        register = _Register(point_id, ops, tuple(copies), max_ops_per_id, max_states)
        violation = register.verdict()
        if violation is not None:
            violations.append(violation)
    return Verdict(tuple(violations), len(chosen), checked)


def _id_order(point_id: PointId) -> tuple[int, int, str]:
    if isinstance(point_id, int):
        return (0, point_id, "")
    return (1, 0, point_id)


# -- the search -------------------------------------------------------------------------------


def _by_invocation(ops: Iterable[Operation]) -> list[Operation]:
    return sorted(ops, key=lambda op: (op.invoked, op.completed is None, op.completed or 0.0))


def _apply(op: Operation, value: str | None) -> str | None:
    """The register's value after ``op`` takes effect on ``value``."""
    if op.kind == "write":
        return op.token
    if op.kind == "delete":
        return None
    if op.kind == "update":
        return op.token if value is not None else None
    return value


class _Search:
    """Wing–Gong–Lowe over one id's operations, sorted by invocation.

    A state is the set of operations placed so far (a bitmask) and the value
    they leave. An operation may be placed next when no unplaced acknowledged
    operation completed before it was invoked; acknowledged operations must
    all be placed, unknown ones may be (at any time after invocation) or not.

    Two prunings keep it small. A read whose value matches is placed at once:
    that never loses a solution. And of two states with the same acknowledged
    operations placed and the same value, the one with fewer unknown
    operations placed can do all the other can (an unknown operation not yet
    placed may still be placed, or never be), so a state is skipped when one
    with a subset of its unknown operations placed was already reached; for
    that, acknowledged operations are tried before unknown ones.
    """

    def __init__(self, ops: Sequence[Operation], point_id: PointId, max_states: int) -> None:
        self.ops = _by_invocation(ops)
        self.point_id = point_id
        self.max_states = max_states
        self.invoked = [op.invoked for op in self.ops]
        done = [op.completed if op.outcome == "ok" else None for op in self.ops]
        self.deadlines = sorted((d, i) for i, d in enumerate(done) if d is not None)
        self.required = sum(1 << i for _, i in self.deadlines)
        self.optional = ((1 << len(self.ops)) - 1) & ~self.required
        # (acknowledged operations placed, value) -> the minimal sets of unknown ones placed
        self.reached: dict[tuple[int, str | None], list[int]] = {}
        self.states = 0

    def run(self) -> bool:
        start: tuple[int, str | None] = (0, None)
        self._first_reach(*start)
        stack = [start]
        while stack:
            mask, value = stack.pop()
            if mask & self.required == self.required:
                return True
            for state in reversed(self._successors(mask, value)):
                if self._first_reach(*state):
                    stack.append(state)
            if self.states > self.max_states:
                raise HistoryTooLarge(
                    f"id {self.point_id!r}: the search visited more than {self.max_states} "
                    f"states over {len(self.ops)} operations; record fewer or less "
                    "concurrent operations per id, or raise max_states"
                )
        return False

    def _first_reach(self, mask: int, value: str | None) -> bool:
        """Record the state; False when it, or a state that can do all it can, was reached."""
        placed = mask & self.optional
        known = self.reached.setdefault((mask & self.required, value), [])
        if any(other & placed == other for other in known):
            return False
        known[:] = [other for other in known if other & placed != placed]
        known.append(placed)
        self.states += 1
        return True

    def _horizon(self, mask: int) -> float:
        """The earliest completion of an acknowledged operation not placed yet."""
        for deadline, i in self.deadlines:
            if not mask >> i & 1:
                return deadline
        return _INF

    def _successors(self, mask: int, value: str | None) -> list[tuple[int, str | None]]:
        horizon = self._horizon(mask)
        acknowledged: list[tuple[int, str | None]] = []
        unknown: list[tuple[int, str | None]] = []
        for i, invoked in enumerate(self.invoked):
            if invoked > horizon:
                break
            op = self.ops[i]
            if mask >> i & 1:
                continue
            if op.kind == "read":
                if op.token == value:
                    return [(mask | 1 << i, value)]
                continue
            successors = acknowledged if self.required >> i & 1 else unknown
            successors.append((mask | 1 << i, _apply(op, value)))
        return acknowledged + unknown


# -- one id: the verdict and its explanation ---------------------------------------------------


def _precedes(a: Operation, b: Operation) -> bool:
    """``a`` certainly took effect before ``b`` was invoked (acknowledged, completed earlier)."""
    return a.outcome == "ok" and a.completed is not None and a.completed < b.invoked


def _shows_present(op: Operation) -> bool:
    """``op`` proves the point existed at its linearization point."""
    return (op.kind == "write" and op.outcome == "ok") or (
        op.kind == "read" and op.token is not None
    )


def _leaves(op: Operation, token: str) -> bool:
    """``op`` (acknowledged) proves the value was not ``token`` right after it."""
    return op.kind == "delete" or op.token != token


def _removes(op: Operation) -> bool:
    return op.kind == "delete" or (op.kind == "read" and op.token is None)


def _listing(ops: Sequence[Operation]) -> str:
    return "; ".join(op.describe() for op in ops)


class _Register:
    """One id's operations, its final read, and the search over them."""

    def __init__(
        self,
        point_id: PointId,
        ops: Sequence[Operation],
        copies: tuple[str, ...],
        max_ops: int,
        max_states: int,
    ) -> None:
        self.point_id = point_id
        self.everything = _by_invocation(ops)
        self.copies = copies
        self.max_states = max_states
        live = [op for op in self.everything if op.outcome != "fail"]
        self.mutations = [op for op in live if op.kind != "read"]
        self.reads = [op for op in live if op.kind == "read" and op.outcome == "ok"]
        token = copies[0] if copies else None
        self.final = Operation(FINAL_CLIENT, "read", point_id, token, _INF, _INF, "ok")
        if len(self.mutations) + len(self.reads) + 1 > max_ops:
            raise HistoryTooLarge(
                f"id {point_id!r} has {len(self.mutations) + len(self.reads)} operations "
                f"to order, more than the limit of {max_ops}; spread the test over more ids"
            )

    def _linearizable(self, ops: Sequence[Operation]) -> bool:
        return _Search(ops, self.point_id, self.max_states).run()

    def _violation(self, kind: ViolationKind, message: str, *ops: Operation) -> Violation:
        return Violation(self.point_id, kind, message, ops)

    def verdict(self) -> Violation | None:
        if len(self.copies) > 1:
            return self._violation(
                "duplicate",
                f"the final state holds {len(self.copies)} copies: {list(self.copies)}",
                *self._producers(set(self.copies)),
            )
        if self._linearizable([*self.mutations, *self.reads, self.final]):
            return None
        token = self.final.token
        if token is not None and not self._producers({token}):
            return self._phantom(token)
        if not self._linearizable([*self.mutations, self.final]):
            return self._final_violation(self.mutations) or self._unexplained_final()
        culprit, before = self._first_failing_read([*self.mutations])
        if culprit is not None:
            return self._stale_read(culprit, _by_invocation([*self.mutations, *before]))
        found = self._final_violation(_by_invocation([*self.mutations, *self.reads]))
        if found is not None:
            return found
        culprit, _ = self._first_failing_read([*self.mutations, self.final])
        return self._violation(
            "not_linearizable",
            f"{_show(token)} as the final value and "
            f"{culprit.describe() if culprit else 'the reads'} cannot both be explained "
            "by any order of the operations that respects real time",
            *((culprit,) if culprit else ()),
            self.final,
        )

    def _producers(self, tokens: set[str]) -> list[Operation]:
        return [op for op in self.mutations if op.kind != "delete" and op.token in tokens]

    def _first_failing_read(
        self, base: list[Operation]
    ) -> tuple[Operation | None, list[Operation]]:
        """The first read, by completion, that ``base`` and the reads before it cannot explain."""
        accepted: list[Operation] = []
        for read in sorted(self.reads, key=lambda op: (op.completed, op.invoked)):
            if not self._linearizable([*base, *accepted, read]):
                return read, accepted
            accepted.append(read)
        return None, accepted

    # -- the final value ---------------------------------------------------------------------

    def _phantom(self, token: str) -> Violation:
        if not self.everything:
            return self._violation(
                "phantom",
                f"the final state holds {token!r} for an id no operation ever touched",
                self.final,
            )
        failed = [op for op in self.everything if op.token == token and op.outcome == "fail"]
        why = f"only by {_listing(failed)}, which failed" if failed else "by no operation"
        return self._violation(
            "phantom",
            f"the final state holds {token!r}, written to this id {why}",
            *failed,
            self.final,
        )

    def _final_violation(self, context: list[Operation]) -> Violation | None:
        """Lost, resurrected or stale, when ``context`` proves it; None otherwise."""
        if self.final.token is None:
            return self._lost(context)
        return self._superseded(self.final.token, context)

    def _lost(self, context: list[Operation]) -> Violation | None:
        deletes = [op for op in context if op.kind == "delete"]
        for evidence in reversed(context):
            if _shows_present(evidence) and all(_precedes(d, evidence) for d in deletes):
                proof = (
                    "was acknowledged" if evidence.kind == "write" else "shows the point existed"
                )
                where = (
                    f"every delete ({_listing(deletes)}) completed before it began"
                    if deletes
                    else "nothing ever deleted it"
                )
                return self._violation(
                    "lost",
                    f"the final state has no copy, but {evidence.describe()} {proof} and {where}",
                    evidence,
                    *deletes,
                    self.final,
                )
        return None

    def _written_by(self, token: str, context: Sequence[Operation]) -> float:
        """The time by which every write of ``token`` had surely taken effect (inf: unknown)."""
        producers = [op for op in context if op.kind != "read" and op.token == token]
        ends = [
            p.completed if p.completed is not None and p.outcome == "ok" else _INF
            for p in producers
        ]
        if len(producers) != 1:
            return max(ends, default=-_INF)
        seen = [r.completed for r in context if r.kind == "read" and r.token == token]
        return min([ends[0], *(s for s in seen if s is not None)])

    def _superseded(self, token: str, context: list[Operation]) -> Violation | None:
        written = self._written_by(token, context)
        later = [
            op
            for op in context
            if op.outcome == "ok" and op.invoked > written and _leaves(op, token)
        ]
        removers = [op for op in later if _removes(op)]
        replacers = [op for op in later if not _removes(op)]
        producers = self._producers({token})
        for remover in reversed(removers):
            if not any(_precedes(remover, r) for r in replacers):
                return self._violation(
                    "resurrected",
                    f"the final state holds {token!r} (from {_listing(producers)}), but "
                    f"{remover.describe()} came after it and no write of it could follow",
                    *producers,
                    remover,
                    self.final,
                )
        if not replacers:
            return None
        newest = max(replacers, key=lambda op: op.invoked)
        return self._violation(
            "stale",
            f"the final state holds {token!r} (from {_listing(producers)}), but "
            f"{newest.describe()} came after it and no write of it could follow",
            *producers,
            newest,
            self.final,
        )

    def _unexplained_final(self) -> Violation:
        token = self.final.token
        producers = self._producers({token}) if token is not None else []
        hint = ""
        if producers and all(p.kind == "update" for p in producers):
            hint = " (it was only written by updates, which do nothing to an absent point)"
        return self._violation(
            "not_linearizable",
            f"no order of this id's writes, updates and deletes that respects real time "
            f"leaves {_show(token)} as the final value{hint}",
            *producers,
            self.final,
        )

    # -- a read in the middle ----------------------------------------------------------------

    def _stale_read(self, read: Operation, context: list[Operation]) -> Violation:
        why, involved = self._why_read_fails(read, context)
        return self._violation("stale_read", f"{read.describe()}: {why}", read, *involved)

    def _why_read_fails(
        self, read: Operation, context: list[Operation]
    ) -> tuple[str, list[Operation]]:
        if read.token is None:
            return self._why_absent_read_fails(read, context)
        token = read.token
        producers = [op for op in context if op.kind != "read" and op.token == token]
        if not producers:
            failed = [op for op in self.everything if op.token == token and op.outcome == "fail"]
            return f"no operation that took effect wrote {token!r} to this id", failed
        if all(read.completed is not None and p.invoked > read.completed for p in producers):
            return f"it saw {token!r} before any write of it began", producers
        written = self._written_by(token, context)
        newer = [
            op
            for op in context
            if op.outcome == "ok"
            and op.invoked > written
            and _leaves(op, token)
            and _precedes(op, read)
        ]
        if newer:
            newest = max(newer, key=lambda op: op.invoked)
            return (
                f"{newest.describe()} replaced {token!r} and completed before the read began",
                [*producers, newest],
            )
        return "no order of the operations before it explains what it saw", producers

    def _why_absent_read_fails(
        self, read: Operation, context: list[Operation]
    ) -> tuple[str, list[Operation]]:
        deletes = [op for op in context if op.kind == "delete"]
        for evidence in reversed(context):
            if not (_shows_present(evidence) and _precedes(evidence, read)):
                continue
            between = [d for d in deletes if not _precedes(d, evidence) and not _precedes(read, d)]
            if not between:
                return (
                    f"it saw no point, but {evidence.describe()} shows it existed before the "
                    "read began and no delete could come between",
                    [evidence],
                )
        return "no order of the operations before it explains seeing no point", []
