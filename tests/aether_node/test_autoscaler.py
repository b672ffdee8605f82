"""The leader's autoscaler: its pure bookkeeping (`_autoscale_plan`: which slices, last scale time from the
revision history, which decisions are recorded), the run-time settings (`_autoscale_settings`), the
`autoscale_decision` event, and the shell (`_autoscaler.Autoscaler`) on the in-memory KV with usage
answers given at its seams (this node's usage, a peer's answer or its silence).
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from aether_kv import Compare, CompareTarget, Event, EventKind, KeyValue, MemoryStore
from aether_node.control._autoscale import Action, Decision, NodeSample, Reading, decide
from aether_node.control._autoscale_plan import (
    HOLD_EVERY,
    KEEP,
    Scaled,
    appended,
    autoscaled,
    entry_of,
    last_scaled_at,
    paused_decision,
    scale_change,
    worth_recording,
)
from aether_node.control._autoscale_settings import (
    SettingsError,
    bound_problems,
    check,
    effective,
    parse_changes,
    read_changes,
)
from aether_node.control._autoscaler import Autoscaler, decode_log
from aether_node.control._revisions import history, read_current, store_revision
from aether_node.core._autoscale_spec import AutoscaleSpec
from aether_node.core._blueprint import Blueprint, SliceSpec
from aether_node.core._blueprint_toml import parse_blueprint
from aether_node.core._kv_cache import KVCache
from aether_node.core._records import (
    AutoscaleEntry,
    AutoscaleLog,
    AutoscaleSettings,
    Capacity,
    LeaderClaim,
    NodeRecord,
    encode_record,
)
from aether_node.core._schema import BLUEPRINTS, LEADER_KEY, autoscale_decisions_key, autoscale_key, node_key
from aether_node.observe._events import EventFilter, describe
from support import wait_until

BUSY_ID = "org.aether:busy"
SPEC = AutoscaleSpec(min=1, max=4, cpu=0.7, up_after_s=2.0, down_after_s=4.0, up_cooldown_s=0.0)
TOML = f"""name = "busy"

[[slices]]
artifact = "{BUSY_ID}:1.0.0"
instances = 1  # kept
min_available = 1

[slices.autoscale]
min = 1
max = 4
cpu = 0.7
up_after_s = 2
down_after_s = 4
up_cooldown_s = 0
"""


def blueprint(
    name: str = "busy", *, autoscale: AutoscaleSpec | None = SPEC, artifact: str = BUSY_ID
) -> Blueprint:
    spec = SliceSpec(artifact=f"{artifact}:1.0.0", instances=1, min_available=1, autoscale=autoscale)
    return Blueprint(name=name, slices=(spec,))


# ---------------------------------------------------------------- which slices, with which table


def test_autoscaled_slices_carry_the_operator_settings_and_pause() -> None:
    settings = {BUSY_ID: AutoscaleSettings(paused=True, max=6, cpu=0.5)}
    plain = Blueprint(name="plain", slices=(SliceSpec(artifact="org.aether:echo:1.0.0", instances=2),))
    (found,) = autoscaled([blueprint(), plain], settings)
    assert (found.artifact_id, found.blueprint, found.index, found.paused) == (BUSY_ID, "busy", 0, True)
    assert (found.spec.min, found.spec.max, found.spec.cpu) == (1, 6, 0.5)
    assert found.spec.up_after_s == SPEC.up_after_s  # what was not set stays the blueprint's


def test_a_slice_two_blueprints_deploy_is_not_autoscaled() -> None:
    assert autoscaled([blueprint("a"), blueprint("b", autoscale=None)], {}) == []


def test_the_last_scale_time_comes_from_the_revision_history() -> None:
    revisions = [
        attrs.evolve(blueprint(), timestamp=10.0, change="applied"),
        attrs.evolve(blueprint(), timestamp=20.0, change=scale_change(BUSY_ID, 1, 2)),
        attrs.evolve(blueprint(), timestamp=30.0, change=f"scaled {BUSY_ID} from 2 to 3"),
        attrs.evolve(blueprint(), timestamp=40.0, change="autoscaled org.aether:busybox from 1 to 2"),
        attrs.evolve(blueprint(), timestamp=50.0, change="rolled back to revision 1"),
    ]
    assert last_scaled_at(revisions, BUSY_ID) == 30.0
    assert last_scaled_at(revisions[:1], BUSY_ID) is None


# ---------------------------------------------------------------- what is recorded


def hold(leaf: str, at: float, reason: str = "r") -> AutoscaleEntry:
    decision = Decision(action=Action.HOLD, current=1, target=1, path=("bounds: within", leaf), reason=reason)
    return entry_of(decision, BUSY_ID, at)


def test_every_move_is_recorded_and_a_hold_when_its_reason_changes() -> None:
    up = entry_of(
        Decision(action=Action.UP, current=1, target=2, path=("scale up",), reason="cpu"), BUSY_ID, 5.0
    )
    log = appended(None, hold("warming up", 1.0))
    assert worth_recording(up, log) and worth_recording(hold("x", 0.0), None)
    assert not worth_recording(hold("warming up", 2.0, "other numbers"), log)
    assert worth_recording(hold("complete: partial", 2.0), log)
    assert worth_recording(hold("warming up", 1.0 + HOLD_EVERY), log)  # told again, now and then


def test_a_paused_hold_is_told_again_when_the_bounds_in_force_change() -> None:
    before = entry_of(paused_decision(1, SPEC), BUSY_ID, 1.0)
    log = appended(None, before)
    assert not worth_recording(entry_of(paused_decision(1, SPEC), BUSY_ID, 2.0), log)
    changed = entry_of(paused_decision(1, attrs.evolve(SPEC, min=2)), BUSY_ID, 2.0)
    assert worth_recording(changed, log) and "min 2" in changed.message


def test_the_log_keeps_the_last_decisions() -> None:
    log = None
    for at in range(KEEP + 5):
        log = appended(log, hold("h", float(at)))
    assert log is not None and len(log.entries) == KEEP and log.entries[-1].at == KEEP + 4


def test_a_decision_record_is_an_autoscale_decision_event() -> None:
    decision = Decision(
        action=Action.UP, current=1, target=2, path=("bounds: within", "scale up"), reason="cpu 0.9 > 0.7"
    )
    key = autoscale_decisions_key(BUSY_ID)
    value = encode_record(appended(None, entry_of(decision, BUSY_ID, 12.5)))
    raw = Event(
        kind=EventKind.PUT,
        kv=KeyValue(key=key, value=value, create_revision=7, mod_revision=7, version=1),
        prev=None,
        revision=7,
    )
    (event,) = describe(raw)
    assert (event.kind, event.subject, event.timestamp) == ("autoscale_decision", BUSY_ID, 12.5)
    assert event.message == "scale org.aether:busy 1 -> 2: cpu 0.9 > 0.7"
    assert event.reason == "bounds: within > scale up" and event.state == "up"
    assert EventFilter.parse(["autoscale_decision"], slice=BUSY_ID).matches(event)
    broken = attrs.evolve(raw, kv=KeyValue(key=key, value=b"{", create_revision=7, mod_revision=7, version=1))
    assert describe(broken) == [] and decode_log(key, b"{") is None


# ---------------------------------------------------------------- run-time settings


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "nothing to set: give at least one of min, max, cpu, p99_ms, calls_per_second, in_flight"),
        ({"cpu": None}, "nothing to set"),
        ({"steps": 2}, "steps: not a setting (settable: min, max, cpu, p99_ms, calls_per_second, in_flight)"),
        ({"min": 0}, "min: expected a whole number in 1..10000, got 0"),
        ({"max": True}, "max: expected a whole number in 1..10000, got true"),
        ({"max": 2.5}, "max: expected a whole number in 1..10000, got 2.5"),
        ({"cpu": -1}, "cpu: expected a number in (0, 1024], got -1"),
        ({"p99_ms": "200"}, 'p99_ms: expected a number in (0, 8.64e+07], got "200"'),
        ({"in_flight": float("nan")}, "in_flight: expected a number in (0, 1e+09], got nan"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_changes(raw)
    assert str(caught.value).startswith(message), str(caught.value)


def test_settings_must_keep_min_and_max_together_and_above_the_floor() -> None:
    assert parse_changes({"cpu": 1, "min": 2}) == {"cpu": 1.0, "min": 2}
    with pytest.raises(SettingsError, match=r"^max: must be ≥ min \(3\), got 2$"):
        check(SPEC, AutoscaleSettings(min=3, max=2), min_available=None)
    with pytest.raises(SettingsError, match=r"^max: must be ≥ min \(5\), got 4$"):
        check(SPEC, AutoscaleSettings(min=5), min_available=None)  # against the blueprint's max
    with pytest.raises(SettingsError, match=r"min_available \(2\), got 1$"):
        check(SPEC, AutoscaleSettings(min=1), min_available=2)
    assert check(SPEC, AutoscaleSettings(p99_ms=200.0), min_available=1).targets() == {
        "cpu": 0.7,
        "p99_ms": 200.0,
    }
    assert effective(SPEC, None) is SPEC


def test_every_bad_setting_is_named_at_once() -> None:
    raw = {"min": 0, "max": 2.5, "cpu": -1, "p99_ms": 100, "steps": 2, "later": 1}
    changes, problems = read_changes(raw)
    assert changes == {"p99_ms": 100.0}  # the good one is read
    assert problems == (
        "later: not a setting (settable: min, max, cpu, p99_ms, calls_per_second, in_flight)",
        "steps: not a setting (settable: min, max, cpu, p99_ms, calls_per_second, in_flight)",
        "min: expected a whole number in 1..10000, got 0",
        "max: expected a whole number in 1..10000, got 2.5",
        "cpu: expected a number in (0, 1024], got -1",
    )
    with pytest.raises(SettingsError) as caught:
        parse_changes(raw)
    assert caught.value.problems == problems and str(caught.value) == "; ".join(problems)
    # min above max and below the floor at once: both said
    assert bound_problems(SPEC, AutoscaleSettings(min=1, max=0), min_available=2) == (
        "max: must be ≥ min (1), got 0",
        "min: must be ≥ the slice's min_available (2), got 1",
    )
    with pytest.raises(SettingsError, match=r"^max: must be ≥ min \(1\), got 0; min: must be ≥"):
        check(SPEC, AutoscaleSettings(min=1, max=0), min_available=2)
    # a setting refused for its value is not judged again by its old value
    assert bound_problems(SPEC, AutoscaleSettings(min=5), min_available=None, bad={"max"}) == ()
    assert bound_problems(SPEC, AutoscaleSettings(min=1), min_available=2, bad={"min"}) == ()


@given(
    low=st.integers(1, 6),
    span=st.integers(0, 6),
    floor=st.none() | st.integers(1, 6),
    current=st.integers(0, 20),
    load=st.floats(0.0, 4.0),
)
def test_a_decision_under_any_accepted_settings_stays_within_bounds_and_floor(
    low: int, span: int, floor: int | None, current: int, load: float
) -> None:
    """Whatever an operator set (once `check` accepted it), what the controller asks for lies within
    min..max and never below min_available."""
    settings = AutoscaleSettings(min=low, max=low + span)
    try:
        spec = check(SPEC, settings, min_available=floor)
    except SettingsError:
        return
    window = [
        Reading(
            at=float(t),
            nodes={"n1": NodeSample(calls=0, cpu_seconds={f"1.0.0/{i}": load * t for i in range(current)})},
        )
        for t in range(6)
    ]
    decision = decide(spec, current=current, window=window, expected=["n1"], now=5.0, min_available=floor)
    if decision.action is not Action.HOLD:
        assert spec.min <= decision.target <= spec.max
        assert floor is None or decision.target >= floor


# ---------------------------------------------------------------- the shell, on the in-memory KV


class Cluster:
    """Two registered nodes (n1 leads and runs the autoscaler); n1's usage is what `cpu` says per
    instance, n2 answers with nothing or, `silent`, not at all."""

    def __init__(self, toml: str = TOML, change: str = "applied") -> None:
        self.toml = toml
        self.change = change  # how the blueprint's revision came (a scale: the cooldown counts from it)
        self.kv = MemoryStore(clock=trio.current_time, address="n1")
        self.cpu = 0.0  # CPU seconds per second of each instance on n1
        self.instances = 1
        self.silent = False
        self.started = 0.0
        self.passes = 0  # the autoscaler's passes (each reads this node's usage once)

    def local_usage(self) -> Any:
        self.passes += 1
        elapsed = trio.current_time() - self.started
        seconds = {f"1.0.0/{i}": self.cpu * elapsed for i in range(self.instances)}
        return {BUSY_ID: {"calls": 0, "buckets": [], "in_flight": 0, "cpu_seconds": seconds}}

    async def ask_peer(self, address: str, timeout: float) -> Any:
        if self.silent:
            await trio.sleep_forever()
        return {}

    async def start(self, nursery: trio.Nursery) -> Autoscaler:
        for node_id in ("n1", "n2"):
            record = NodeRecord(node_id=node_id, ingress="", peer=f"{node_id}:1", capacity=Capacity())
            await self.kv.put(node_key(node_id), encode_record(record))
        await self.kv.put(LEADER_KEY, encode_record(LeaderClaim(node_id="n1", since=0.0, term=1)))
        applied = parse_blueprint(self.toml, timestamp=trio.current_time())
        await store_revision(self.kv, applied, change=self.change)
        self.started = trio.current_time()
        scaler = Autoscaler(
            self.kv, "n1", local_usage=self.local_usage, ask_peer=self.ask_peer, clock=trio.current_time
        )
        nursery.start_soon(scaler._lead)
        return scaler

    async def log(self) -> AutoscaleLog | None:
        found = await self.kv.get(autoscale_decisions_key(BUSY_ID))
        return decode_log(found.key, found.value) if found else None

    async def wait_for(self, check: Any, what: str = "the autoscaler's decisions") -> AutoscaleLog:
        """The decision log once `check` holds of it (fails after 60 virtual s with the last log)."""
        log = await wait_until(
            self.log, until=lambda log: log is not None and check(log), timeout=60, what=what
        )
        assert log is not None
        return log


async def test_the_shell_scales_up_as_a_revision_and_records_why(autojump_clock: Any) -> None:
    cluster = Cluster()
    cluster.cpu = 0.95
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        with trio.fail_after(60):
            log = await cluster.wait_for(lambda log: any(e.action == "up" for e in log.entries))
        nursery.cancel_scope.cancel()
    up = next(e for e in log.entries if e.action == "up")
    assert up.message.startswith("scale org.aether:busy 1 -> 2: cpu 0.95 > 0.7 for 2 s"), up.message
    current, _ = await read_current(cluster.kv, "busy")
    assert current is not None and current.slices[0].instances == 2
    assert current.change == scale_change(BUSY_ID, 1, 2)
    assert "instances = 2  # kept" in current.source  # rewritten like `slice scale` does
    assert [b.change for b in await history(cluster.kv, "busy")] == ["applied", current.change]


async def test_the_shell_holds_on_a_silent_node_and_says_which(autojump_clock: Any) -> None:
    cluster = Cluster()
    cluster.cpu = 0.95
    cluster.silent = True
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        with trio.fail_after(60):
            log = await cluster.wait_for(lambda log: log.entries[-1].at > cluster.started + 10)
        nursery.cancel_scope.cancel()
    assert {e.path[-1] for e in log.entries} == {"complete: partial"}
    assert "no reading from n2" in log.entries[0].message
    current, _ = await read_current(cluster.kv, "busy")
    assert current is not None and current.slices[0].instances == 1


async def test_the_shell_makes_no_decision_for_a_paused_slice(autojump_clock: Any) -> None:
    cluster = Cluster()
    cluster.cpu = 0.95
    await cluster.kv.put(autoscale_key(BUSY_ID), encode_record(AutoscaleSettings(paused=True, min=2)))
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        log = await cluster.wait_for(lambda log: bool(log.entries), "the paused slice's first record")
        nursery.cancel_scope.cancel()
    assert {e.path for e in log.entries} == {("paused",)}
    current, _ = await read_current(cluster.kv, "busy")
    assert current is not None and current.slices[0].instances == 1


async def test_a_deposed_leader_writes_nothing(autojump_clock: Any) -> None:
    cluster = Cluster()
    cluster.cpu = 0.95
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)

        async def passed(count: int) -> bool:
            return cluster.passes >= count

        await wait_until(lambda: passed(1), timeout=60, what="the first pass (it has read the claim)")
        await cluster.kv.put(LEADER_KEY, encode_record(LeaderClaim(node_id="n2", since=1.0, term=2)))
        # passes enough for a leader to have scaled up several times over (up_after_s = 2, 1 s apart)
        then = cluster.passes
        await wait_until(lambda: passed(then + 10), timeout=60, what="ten more passes")
        nursery.cancel_scope.cancel()
    current, _ = await read_current(cluster.kv, "busy")
    assert current is not None and current.slices[0].instances == 1


async def test_a_new_leader_keeps_the_cooldown_of_the_last_scale(autojump_clock: Any) -> None:
    """The last scale is in the blueprint's revisions: a leader that starts right after it (no memory of
    its own) still waits out the cooldown, then scales."""
    toml = TOML.replace("up_cooldown_s = 0", "up_cooldown_s = 30")
    cluster = Cluster(toml, change=scale_change(BUSY_ID, 2, 1))
    cluster.cpu = 0.95
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)
        with trio.fail_after(120):
            log = await cluster.wait_for(lambda log: any(e.action == "up" for e in log.entries))
        nursery.cancel_scope.cancel()
    up = next(e for e in log.entries if e.action == "up")
    assert any(e.path[-1] == "cooldown" for e in log.entries), [e.message for e in log.entries]
    assert up.at - cluster.started >= 30 - 1, up  # not before the cooldown of the earlier scale ended


async def test_a_scale_by_an_operator_starts_a_cooldown_too(autojump_clock: Any) -> None:
    """`aether slice scale` while the autoscaler runs: it takes the new count and waits out the cooldown
    from the operator's revision before it scales again."""
    from aether_node.control._rescale import scaled_blueprint

    cluster = Cluster(TOML.replace("up_cooldown_s = 0", "up_cooldown_s = 30"))
    cluster.cpu = 0.95
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery)

        async def stored() -> bool:
            return (await read_current(cluster.kv, "busy"))[0] is not None

        await wait_until(stored, timeout=30, what="the blueprint's current revision")
        current, _ = await read_current(cluster.kv, "busy")
        assert current is not None
        operator_at = trio.current_time()
        scaled = scaled_blueprint(current, 0, 2, timestamp=operator_at)
        await store_revision(cluster.kv, scaled, change=f"scaled {BUSY_ID} from 1 to 2")
        cluster.instances = 2
        with trio.fail_after(120):
            log = await cluster.wait_for(lambda log: any(e.action == "up" for e in log.entries))
        nursery.cancel_scope.cancel()
    up = next(e for e in log.entries if e.action == "up")
    assert (up.current, up.target) == (2, 3) and up.at - operator_at >= 30 - 1, up


async def test_a_scale_decided_on_a_blueprint_an_operator_changed_meanwhile_is_not_written(
    autojump_clock: Any,
) -> None:
    """The decision is made on the leader's copy; an apply lands before it is written: it must not
    write the copy's other content over the apply (it decides again on its next pass)."""
    kv = MemoryStore(clock=trio.current_time, address="n1")
    applied = parse_blueprint(TOML, timestamp=0.0)
    await store_revision(kv, applied, change="applied")
    async with trio.open_nursery() as nursery:
        cache = KVCache(kv, [BLUEPRINTS])
        await nursery.start(cache.run)
        await cache.caught_up(BLUEPRINTS, (await kv.status()).revision)
        nursery.cancel_scope.cancel()  # (the copy stays as it was: the apply below lands unseen)
    operator = parse_blueprint(TOML.replace(":1.0.0", ":1.1.0"), timestamp=1.0)
    await store_revision(kv, operator, change="applied", dedupe=True)
    scaler = Autoscaler(kv, "n1", local_usage=dict, ask_peer=None, clock=trio.current_time)  # type: ignore[arg-type]
    target = Scaled(
        artifact_id=BUSY_ID, blueprint="busy", index=0, slice=applied.slices[0], spec=SPEC, paused=False
    )
    decision = Decision(action=Action.UP, current=1, target=2, path=("up",), reason="busy")
    fence = Compare(key=BLUEPRINTS + "busy", target=CompareTarget.EXISTS, operand=True)
    with trio.fail_after(10):  # (a write would wait for the stopped copy to see it)
        assert await scaler._scale(cache, target, decision, fence) is False
    current, _ = await read_current(kv, "busy")
    assert current is not None and current.slices[0].artifact == f"{BUSY_ID}:1.1.0"
    assert current.slices[0].instances == 1
