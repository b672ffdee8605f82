"""Linearizability checker for key-value register histories (pure, no I/O).

This module owns exactly one decision: could a recorded history of concurrent
``put`` / ``get`` / ``cas`` calls against a key-value store have been produced by
one atomic register per key? It never talks to the store, never reads a clock and
never sleeps. The integration harness records :class:`Operation` values while it
drives the cluster and hands them to :func:`check_linearizable` afterwards.

Algorithm
---------
Wing & Gong's search with Lowe's memoisation ("Testing for linearizability",
2017), the same shape Porcupine/Knossos use:

* Every operation has a *call* event at ``invoked`` and a *return* event at
  ``returned``. All events of one key sit in a doubly linked list sorted by time.
* Walking the list from its head, each call event is a candidate. If the model
  accepts the operation in the current state, it is linearized (its call and
  return events are unlinked, the choice pushed on an explicit stack) and the walk
  restarts at the head. Reaching a *return* event means that operation had to take
  effect already but nothing placed it: pop the last choice and try the next
  candidate after it.
* Memoisation: a search configuration is (set of linearized operations, model
  state). Its future does not depend on how we got there, so a configuration seen
  before has already failed and is pruned. This turns the exponential search into
  something close to linear for histories with bounded concurrency.

Keys are independent registers, so the history is split per key and each part is
checked alone (linearizability is compositional, Herlihy & Wing's "locality").
That keeps both the bitsets and the concurrency window small.

Unknown outcomes
----------------
A call that timed out or never returned may or may not have taken effect, at any
moment after it was invoked. Its return time is treated as +infinity, so it never
forces a backtrack, and the search succeeds as soon as every *known* operation is
linearized: unknown operations still pending at that point are the ones that never
took effect. Their results are ignored, so an unknown ``get`` constrains nothing
and is dropped up front, and an unknown ``cas`` is only worth placing where its
comparison succeeds (a failed one is indistinguishable from one that never ran).

Without a further rule, pending unknown writes make the search exponential: before
every known operation it would try every subset of them. We therefore only allow
an unknown operation to be placed if it changes the register *and* the next placed
operation observes it (anything but a ``put``). This loses no linearization:
an unknown write that is overwritten before anyone reads it, or that changes
nothing, can simply be dropped from any valid order (it "never took effect"), so
if any valid order exists, one obeying the rule exists too. Because the rule makes
the future depend on whether the last placed operation was unknown, that flag is
part of the memo key.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import attrs

__all__ = ["CheckResult", "Operation", "check_linearizable"]

KINDS = frozenset({"put", "get", "cas"})

# How many operations of the best partial linearization a failure message shows:
# the tail is what led into the dead end; the whole prefix would drown it.
_MESSAGE_TAIL = 8
# Cap on the "also pending" list in a failure message, for the same reason.
_MESSAGE_PENDING = 10


def _check_interval(instance: Operation, attribute: attrs.Attribute, returned: float | None) -> None:
    if returned is not None and returned < instance.invoked:
        raise ValueError(f"returned ({returned}) is before invoked ({instance.invoked})")


@attrs.frozen(kw_only=True)
class Operation:
    """One client call against the store, as observed by the client.

    ``value`` is the value written (``put``) or the new value (``cas``); ``expected``
    is what a ``cas`` compared against, ``None`` meaning "key absent". ``result`` is
    what the call returned: the value read by a ``get`` (``None`` when absent),
    whether a ``cas`` succeeded, ``None`` for a ``put``.

    ``unknown=True`` (or ``returned=None``) marks a call whose outcome the client
    never learned: it may have taken effect at any time after ``invoked``, or never.
    Its ``result`` is ignored and its ``returned`` (e.g. a timeout instant) does not
    bound when it took effect.
    """

    client: int
    kind: str = attrs.field(validator=attrs.validators.in_(KINDS))
    key: str
    value: str | None = None
    expected: str | None = None
    invoked: float
    returned: float | None = attrs.field(validator=_check_interval)
    result: str | bool | None = None
    unknown: bool = False

    def __attrs_post_init__(self) -> None:
        # A known cas must say whether it succeeded; anything else is a recording bug
        # in the harness, and guessing would hide it.
        if self.kind == "cas" and not self.is_unknown and not isinstance(self.result, bool):
            raise ValueError(f"a cas with a known outcome needs a bool result, got {self.result!r}")

    @property
    def is_unknown(self) -> bool:
        """True when the outcome is unknown (explicitly, or because it never returned)."""
        return self.unknown or self.returned is None

    def describe(self) -> str:
        """Human-readable one-liner, e.g. ``client 3: get('k') -> 'v'  [1.5, 2]``."""
        if self.kind == "put":
            call = f"put({self.key!r}, {_show(self.value)})"
        elif self.kind == "get":
            call = f"get({self.key!r})"
        else:
            call = f"cas({self.key!r}, expected={_show(self.expected)}, new={_show(self.value)})"
        outcome = ""
        if self.is_unknown:
            end = "outcome unknown" if self.returned is None else f"{self.returned:g}, timed out"
        else:
            end = f"{self.returned:g}"
            if self.kind == "get":
                outcome = f" -> {_show(self.result)}"
            elif self.kind == "cas":
                outcome = f" -> {self.result}"
        return f"client {self.client}: {call}{outcome}  [{self.invoked:g}, {end}]"


@attrs.frozen(kw_only=True)
class CheckResult:
    """Verdict of :func:`check_linearizable`.

    ``explored`` counts search configurations visited (summed over keys), a measure
    of how hard the history was. ``message`` explains a failure: the key and the
    operations no order could place.
    """

    ok: bool
    explored: int
    message: str


def check_linearizable(history: Sequence[Operation]) -> CheckResult:
    """Decide whether ``history`` is linearizable w.r.t. one register per key.

    Every key starts absent. Keys are checked independently and all of them are
    checked, so a failure message lists every non-linearizable key.
    """
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)

    explored = 0
    failures: dict[str, str] = {}  # key -> explanation
    for key in sorted(by_key):
        key_ok, key_explored, explanation = _check_key(key, by_key[key])
        explored += key_explored
        if not key_ok:
            failures[key] = explanation

    if failures:
        header = (
            f"NOT linearizable ({explored} states explored); failing keys: {', '.join(map(repr, failures))}"
        )
        message = "\n\n".join([header, *failures.values()])
        return CheckResult(ok=False, explored=explored, message=message)
    return CheckResult(
        ok=True,
        explored=explored,
        message=(
            f"linearizable: {len(history)} operations over {len(by_key)} keys ({explored} states explored)"
        ),
    )


# --------------------------------------------------------------------------- model


def _step(state: str | None, op: Operation) -> tuple[bool, str | None]:
    """Apply ``op`` to a register holding ``state``: (is it legal here?, new state)."""
    if op.kind == "put":
        return True, op.value
    if op.kind == "get":
        return op.result == state, state
    matches = state == op.expected
    if op.is_unknown or op.result:
        # An unknown cas is only ever placed as a successful one (see module docs).
        return matches, op.value if matches else state
    return not matches, state


def _why_not(state: str | None, op: Operation) -> str:
    """Explain why the model rejects ``op`` in ``state`` (or that it does not)."""
    if op.kind == "get" and op.result != state:
        return f"it read {_show(op.result)} but the register holds {_show(state)}"
    if op.kind == "cas" and op.result is True and state != op.expected:
        return f"it succeeded comparing against {_show(op.expected)} but the register holds {_show(state)}"
    if op.kind == "cas" and op.result is False and state == op.expected:
        return f"it failed, yet the register holds {_show(state)}, so it would have succeeded"
    return "every order that places it here runs into a dead end further on"


def _show(value: object) -> str:
    return "absent" if value is None else repr(value)


# -------------------------------------------------------------------------- search


@attrs.frozen
class _Stuck:
    """The deepest dead end seen: material for a readable failure message."""

    placed_known: int
    op: int
    state: str | None
    after_unknown: bool
    tail: tuple[int, ...]
    pending: tuple[int, ...]


def _check_key(key: str, key_ops: list[Operation]) -> tuple[bool, int, str]:
    """WGL search for one key: (linearizable?, configurations explored, explanation)."""
    # Unknown gets have no effect and an ignored result: they constrain nothing.
    ops = [op for op in key_ops if not (op.is_unknown and op.kind == "get")]
    unknown = [op.is_unknown for op in ops]
    n_known = unknown.count(False)
    if n_known == 0:
        return True, 0, ""

    # Event list. Unknown ops get no return event: their return is at +infinity,
    # past every known return, and the search stops once all known ops are placed.
    # At equal timestamps calls sort before returns, so touching intervals count as
    # concurrent: clocks are coarse, and claiming an order we cannot observe would
    # produce false alarms.
    events = [(op.invoked, 0, i) for i, op in enumerate(ops)]
    events += [(op.returned, 1, i) for i, op in enumerate(ops) if not unknown[i]]
    events.sort(key=lambda e: (e[0] if e[0] is not None else math.inf, e[1], e[2]))

    # Doubly linked list over entries 1..m; entry 0 is the head sentinel, -1 is "none".
    m = len(events)
    is_call = [False] + [kind == 0 for _, kind, _ in events]
    op_of = [-1] + [i for _, _, i in events]
    nxt = [*range(1, m + 1), -1]
    prv = list(range(-1, m))
    match = [-1] * (m + 1)  # call entry -> its return entry (-1 for unknown ops)
    call_entry = [0] * len(ops)
    for e in range(1, m + 1):
        if is_call[e]:
            call_entry[op_of[e]] = e
        else:
            match[call_entry[op_of[e]]] = e

    def unlink(e: int) -> None:
        nxt[prv[e]] = nxt[e]
        if nxt[e] != -1:
            prv[nxt[e]] = prv[e]

    def relink(e: int) -> None:
        # Dancing links: e still remembers its neighbours, valid because entries are
        # restored in exact reverse order of removal (the stack guarantees it).
        nxt[prv[e]] = e
        if nxt[e] != -1:
            prv[nxt[e]] = e

    # Search state. `linearized` is a bitset over op indices (Python ints hash fast
    # and are immutable, so they go straight into the memo key).
    linearized = 0
    state: str | None = None
    after_unknown = False  # was the last placed op an unknown one? (see module docs)
    known_left = n_known
    stack: list[tuple[int, str | None, bool]] = []  # (call entry, prior state, prior flag)
    seen: set[tuple[int, str | None, bool]] = set()
    stuck: _Stuck | None = None

    entry = nxt[0]
    while known_left:
        # Some known op is unplaced, so its return event lies ahead: the walk always
        # meets a return event before running off the end of the list.
        assert entry != -1, "unreachable: walked past every return event"
        i = op_of[entry]
        if is_call[entry]:
            op = ops[i]
            legal, new_state = _step(state, op)
            if after_unknown and op.kind == "put":
                legal = False  # would silently overwrite the unknown write just placed
            if unknown[i] and new_state == state:
                legal = False  # a no-op unknown write is the same as it never happening
            if legal:
                config = (linearized | (1 << i), new_state, unknown[i])
                if config not in seen:
                    seen.add(config)
                    stack.append((entry, state, after_unknown))
                    linearized, state, after_unknown = config
                    known_left -= not unknown[i]
                    unlink(entry)
                    if match[entry] != -1:
                        unlink(match[entry])
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
            continue

        # A return event: op i had to take effect by now and nothing could place it.
        placed = n_known - known_left
        if (
            stuck is None
            or placed > stuck.placed_known
            or (placed == stuck.placed_known and stuck.after_unknown and not after_unknown)
        ):
            stuck = _Stuck(
                placed_known=placed,
                op=i,
                state=state,
                after_unknown=after_unknown,
                tail=tuple(op_of[e] for e, _, _ in stack[-_MESSAGE_TAIL:]),
                pending=_pending_before(entry, nxt, is_call, op_of),
            )
        if not stack:
            return False, len(seen), _explain(key, ops, n_known, stuck)
        entry, state, after_unknown = stack.pop()
        i = op_of[entry]
        linearized ^= 1 << i
        known_left += not unknown[i]
        if match[entry] != -1:
            relink(match[entry])
        relink(entry)
        entry = nxt[entry]
    return True, len(seen), ""


def _pending_before(stop: int, nxt: list[int], is_call: list[bool], op_of: list[int]) -> tuple[int, ...]:
    """Ops whose call events precede ``stop``: invoked, unplaced, candidates there."""
    pending = []
    e = nxt[0]
    while e != stop:
        if is_call[e]:
            pending.append(op_of[e])
        e = nxt[e]
    return tuple(pending)


def _explain(key: str, ops: list[Operation], n_known: int, stuck: _Stuck) -> str:
    op = ops[stuck.op]
    lines = [
        f"key {key!r}: no linearization exists. This operation cannot be placed:",
        f"  {op.describe()}",
        f"  it had to take effect by t={op.returned:g} and cannot: {_why_not(stuck.state, op)}.",
    ]
    # Best-effort minimal culprit set: the stuck op plus the ops that were candidates
    # at the same point, none of which could be placed before it either.
    others = [j for j in stuck.pending if j != stuck.op]
    if others:
        lines.append("Also invoked before it returned and not placeable there:")
        lines += [f"  {ops[j].describe()}" for j in others[:_MESSAGE_PENDING]]
        if len(others) > _MESSAGE_PENDING:
            lines.append(f"  ... and {len(others) - _MESSAGE_PENDING} more")
    lines.append(
        f"Deepest partial linearization placed {stuck.placed_known} of {n_known} "
        f"known operations; register then held {_show(stuck.state)}."
    )
    if stuck.tail:
        lines.append("It ended with:")
        lines += [f"  {ops[j].describe()}" for j in stuck.tail]
    return "\n".join(lines)
