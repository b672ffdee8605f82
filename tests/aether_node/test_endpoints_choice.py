"""Choosing one endpoint per call (`_endpoints.choose`): each balancing strategy's behaviour and its
determinism given `turn` and a seeded rng; a rollout's split of the calls between two versions
(`_endpoints.split_by_version`), and within it the candidate's endpoints that are not ready yet (seen
less than the slice's `min_ready_s` ago: a new or restarted instance, perhaps crash-looping), which get
none of the candidate's share while anything else serves. Pure: no registry, no KV, no clock."""

from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aether_node.core._blueprint import Balancing
from aether_node.core._coordinates import Coordinates
from aether_node.routing._endpoints import Endpoint, VersionSplit, choose, split_by_version

PROPERTY = settings(max_examples=200, deadline=None)
ECHO = Coordinates.parse("org.example:echo:1.0")


def endpoint(
    instance: int, node_id: str, coordinates: Coordinates = ECHO, *, seen: float | None = None
) -> Endpoint:
    return Endpoint(
        coordinates=coordinates,
        entry="echo",
        instance=instance,
        node_id=node_id,
        idempotent=False,
        seen=seen,
    )


ENDPOINTS = [endpoint(1, "a"), endpoint(2, "b"), endpoint(3, "c"), endpoint(4, "a")]


def pick(
    strategy: Balancing,
    endpoints: list[Endpoint] = ENDPOINTS,
    *,
    local_node: str = "z",
    in_flight: dict[tuple[str, int], int] | None = None,
    turn: int = 0,
    rng: random.Random | None = None,
) -> Endpoint:
    return choose(
        endpoints,
        strategy,
        local_node=local_node,
        in_flight=in_flight or {},
        turn=turn,
        rng=rng or random.Random(0),
    )


def test_target_names_coordinates_and_instance() -> None:
    assert endpoint(7, "a").target == ("org.example:echo:1.0", 7)


def test_round_robin_cycles_by_turn() -> None:
    chosen = [pick(Balancing.ROUND_ROBIN, turn=t).instance for t in range(9)]
    assert chosen == [1, 2, 3, 4, 1, 2, 3, 4, 1]


def test_round_robin_ignores_the_rng_and_the_load() -> None:
    rng = random.Random(5)
    state = rng.getstate()
    busy = {e.target: 100 for e in ENDPOINTS[:1]}
    assert pick(Balancing.ROUND_ROBIN, turn=4, in_flight=busy, rng=rng) is ENDPOINTS[0]
    assert rng.getstate() == state


def test_local_first_prefers_the_local_node_and_cycles_among_its_endpoints() -> None:
    chosen = [pick(Balancing.LOCAL_FIRST, local_node="a", turn=t).instance for t in range(5)]
    assert chosen == [1, 4, 1, 4, 1]


def test_local_first_with_one_local_endpoint_always_takes_it() -> None:
    assert {pick(Balancing.LOCAL_FIRST, local_node="c", turn=t).instance for t in range(6)} == {3}


def test_local_first_falls_back_to_round_robin_over_all() -> None:
    chosen = [pick(Balancing.LOCAL_FIRST, local_node="elsewhere", turn=t).instance for t in range(5)]
    assert chosen == [1, 2, 3, 4, 1]


def test_random_uses_the_rng() -> None:
    expected = random.Random(42).choice(ENDPOINTS)
    assert pick(Balancing.RANDOM, rng=random.Random(42), turn=3) is expected
    rng = random.Random(1)
    seen = collections.Counter(pick(Balancing.RANDOM, rng=rng).instance for _ in range(400))
    assert set(seen) == {1, 2, 3, 4}
    assert min(seen.values()) > 50  # roughly uniform


def test_random_ignores_turn() -> None:
    assert {pick(Balancing.RANDOM, rng=random.Random(9), turn=t).instance for t in range(10)} == {
        pick(Balancing.RANDOM, rng=random.Random(9)).instance
    }


def test_power_of_two_picks_the_less_busy_of_two() -> None:
    two = ENDPOINTS[:2]
    load = {two[0].target: 5, two[1].target: 1}
    for seed in range(20):
        assert pick(Balancing.POWER_OF_TWO, two, in_flight=load, rng=random.Random(seed)) is two[1]


def test_power_of_two_never_picks_the_busiest() -> None:
    load = {ENDPOINTS[2].target: 50, ENDPOINTS[0].target: 3, ENDPOINTS[1].target: 1}
    rng = random.Random(3)
    chosen = collections.Counter(
        pick(Balancing.POWER_OF_TWO, in_flight=load, rng=rng).instance for _ in range(300)
    )
    assert 3 not in chosen
    assert set(chosen) == {1, 2, 4}  # the idle one (4) and the lightly loaded ones all get calls


def test_power_of_two_samples_two_with_the_rng() -> None:
    load = {e.target: e.instance for e in ENDPOINTS}
    for seed in range(30):
        first, second = random.Random(seed).sample(ENDPOINTS, 2)
        expected = first if load[first.target] <= load[second.target] else second
        assert pick(Balancing.POWER_OF_TWO, in_flight=load, rng=random.Random(seed)) is expected


def test_power_of_two_tie_takes_the_first_sampled() -> None:
    for seed in range(10):
        first, _ = random.Random(seed).sample(ENDPOINTS, 2)
        assert pick(Balancing.POWER_OF_TWO, rng=random.Random(seed)) is first


def test_power_of_two_with_one_endpoint_takes_it_without_the_rng() -> None:
    rng = random.Random(0)
    state = rng.getstate()
    assert pick(Balancing.POWER_OF_TWO, ENDPOINTS[:1], rng=rng, turn=7) is ENDPOINTS[0]
    assert rng.getstate() == state


@pytest.mark.parametrize("strategy", list(Balancing))
def test_a_single_endpoint_is_always_chosen(strategy: Balancing) -> None:
    only = [endpoint(9, "q")]
    for turn in range(3):
        assert pick(strategy, only, local_node="a", turn=turn, rng=random.Random(turn)) is only[0]


@pytest.mark.parametrize("strategy", list(Balancing))
def test_accepts_any_sequence(strategy: Balancing) -> None:
    as_tuple = pick(strategy, tuple(ENDPOINTS), local_node="a", turn=2, rng=random.Random(4))  # type: ignore[arg-type]
    assert as_tuple is pick(strategy, ENDPOINTS, local_node="a", turn=2, rng=random.Random(4))


# ---------------------------------------------------------------------------- properties


@st.composite
def calls(
    draw: st.DrawFn,
) -> tuple[list[Endpoint], str, dict[tuple[str, int], int], int, int]:
    count = draw(st.integers(1, 8))
    endpoints = [endpoint(i, draw(st.sampled_from("abcd"))) for i in range(1, count + 1)]
    in_flight = {e.target: draw(st.integers(0, 5)) for e in endpoints if draw(st.booleans())}
    return (
        endpoints,
        draw(st.sampled_from("abcde")),
        in_flight,
        draw(st.integers(0, 10_000)),
        draw(st.integers()),
    )


def reference(
    endpoints: list[Endpoint],
    strategy: Balancing,
    local_node: str,
    in_flight: dict[tuple[str, int], int],
    turn: int,
    seed: int,
) -> Endpoint:
    rng = random.Random(seed)
    if strategy is Balancing.ROUND_ROBIN:
        return endpoints[turn % len(endpoints)]
    if strategy is Balancing.LOCAL_FIRST:
        pool = [e for e in endpoints if e.node_id == local_node] or endpoints
        return pool[turn % len(pool)]
    if strategy is Balancing.RANDOM:
        return rng.choice(endpoints)
    if len(endpoints) == 1:
        return endpoints[0]
    a, b = rng.sample(endpoints, 2)
    return b if in_flight.get(b.target, 0) < in_flight.get(a.target, 0) else a


@PROPERTY
@given(calls(), st.sampled_from(list(Balancing)))
def test_choice_matches_the_strategy_and_is_deterministic(
    call: tuple[list[Endpoint], str, dict[tuple[str, int], int], int, int], strategy: Balancing
) -> None:
    endpoints, local_node, in_flight, turn, seed = call

    def run() -> Endpoint:
        return choose(
            endpoints,
            strategy,
            local_node=local_node,
            in_flight=in_flight,
            turn=turn,
            rng=random.Random(seed),
        )

    chosen = run()
    assert chosen in endpoints
    assert run() is chosen
    assert chosen is reference(endpoints, strategy, local_node, in_flight, turn, seed)
    if strategy is Balancing.LOCAL_FIRST and any(e.node_id == local_node for e in endpoints):
        assert chosen.node_id == local_node
    if strategy is Balancing.POWER_OF_TWO and len(endpoints) > 1:
        loads = sorted(in_flight.get(e.target, 0) for e in endpoints)
        assert in_flight.get(chosen.target, 0) <= loads[-2]  # never the strictly busiest


@PROPERTY
@given(calls(), st.sampled_from(list(Balancing)))
def test_seeded_sequences_repeat(
    call: tuple[list[Endpoint], str, dict[tuple[str, int], int], int, int], strategy: Balancing
) -> None:
    endpoints, local_node, in_flight, turn, seed = call

    def sequence() -> list[Endpoint]:
        rng = random.Random(seed)
        return [
            choose(endpoints, strategy, local_node=local_node, in_flight=in_flight, turn=turn + k, rng=rng)
            for k in range(6)
        ]

    assert sequence() == sequence()


@PROPERTY
@given(calls())
def test_round_robin_visits_every_endpoint_once_per_cycle(
    call: tuple[list[Endpoint], str, dict[tuple[str, int], int], int, int],
) -> None:
    endpoints, local_node, in_flight, turn, seed = call
    rng = random.Random(seed)
    cycle = [
        choose(endpoints, Balancing.ROUND_ROBIN, local_node=local_node, in_flight=in_flight, turn=t, rng=rng)
        for t in range(turn, turn + len(endpoints))
    ]
    assert sorted(e.instance for e in cycle) == sorted(e.instance for e in endpoints)


# ---------------------------------------------------------------- version split (rollouts)

NEW = Coordinates.parse("org.example:echo:2.0")
OTHER = Coordinates.parse("org.example:echo:0.9")
MIXED = [endpoint(1, "a"), endpoint(2, "b"), endpoint(3, "c", NEW), endpoint(4, "a", OTHER)]


@PROPERTY
@given(share=st.integers(0, 100), start=st.integers(0, 10_000))
def test_any_100_consecutive_calls_send_exactly_the_share_to_the_candidate(share: int, start: int) -> None:
    split = VersionSplit(stable="1.0", candidate="2.0", share=share)
    chosen = [split_by_version(MIXED, split, turn, now=0.0) for turn in range(start, start + 100)]
    to_candidate = sum(all(e.coordinates == NEW for e in group) for group in chosen)
    assert to_candidate == share
    assert all(all(e.coordinates == ECHO for e in group) for group in chosen if group[0].coordinates != NEW)


def test_the_split_spreads_the_candidate_calls_evenly() -> None:
    split = VersionSplit(stable="1.0", candidate="2.0", share=25)
    picks = [split_by_version(MIXED, split, turn, now=0.0)[0].coordinates == NEW for turn in range(8)]
    assert picks == [False, False, False, True, False, False, False, True]


def test_a_version_without_endpoints_gives_way_to_the_other_and_then_to_any() -> None:
    stable_only = [e for e in MIXED if e.coordinates == ECHO]
    everything_to_candidate = VersionSplit(stable="1.0", candidate="2.0", share=100)
    assert split_by_version(stable_only, everything_to_candidate, 0, now=0.0) == stable_only
    assert split_by_version([MIXED[3]], everything_to_candidate, 0, now=0.0) == [MIXED[3]]
    assert split_by_version([], everything_to_candidate, 0, now=0.0) == []


# A candidate's endpoints not ready yet: the slice's min_ready_s (5 s here) since this node first saw
# their records.
READY_AFTER = 5.0
NOW = 100.0
STABLE = [endpoint(1, "a"), endpoint(2, "b")]
SETTLED = endpoint(3, "c", NEW, seen=NOW - 60)  # a candidate up for a minute
RESTARTED = endpoint(4, "a", NEW, seen=NOW - 1)  # published again a second ago (a restart)


def canary(share: int, *, ready_after: float = READY_AFTER) -> VersionSplit:
    return VersionSplit(stable="1.0", candidate="2.0", share=share, min_ready_s=ready_after)


def groups(
    endpoints: list[Endpoint], split: VersionSplit, *, now: float = NOW, calls: int = 100
) -> list[list[int]]:
    """The instances each of `calls` consecutive calls may go to."""
    return [
        sorted(e.instance for e in split_by_version(endpoints, split, turn, now=now)) for turn in range(calls)
    ]


def test_a_candidate_seen_less_than_min_ready_s_ago_gets_none_of_the_share_while_another_is_ready() -> None:
    chosen = groups([*STABLE, SETTLED, RESTARTED], canary(50))
    assert chosen.count([3]) == 50 and chosen.count([1, 2]) == 50  # the share, all on the settled one


def test_with_no_candidate_ready_its_share_goes_to_the_stable_version() -> None:
    assert groups([*STABLE, RESTARTED], canary(50)) == [[1, 2]] * 100
    assert groups([*STABLE, RESTARTED], canary(100)) == [[1, 2]] * 100  # a blue-green switch, too


def test_a_candidate_counts_once_it_has_stood_min_ready_s() -> None:
    seen = RESTARTED.seen
    assert seen is not None
    assert groups([*STABLE, RESTARTED], canary(100), now=seen + READY_AFTER - 0.001) == [[1, 2]] * 100
    assert groups([*STABLE, RESTARTED], canary(100), now=seen + READY_AFTER) == [[4]] * 100


def test_a_candidate_not_ready_still_serves_when_nothing_else_does() -> None:
    """A call is never refused for the split: with no stable endpoint (a rollout promoted, its old set
    gone) the candidates that are not ready take every call."""
    assert groups([RESTARTED], canary(10)) == [[4]] * 100
    assert groups([RESTARTED, endpoint(5, "b", OTHER)], canary(10)) == [[4]] * 100


def test_no_window_without_min_ready_s_or_a_time_seen() -> None:
    assert groups([*STABLE, RESTARTED], canary(100, ready_after=0.0)) == [[4]] * 100
    unknown = endpoint(4, "a", NEW)  # (seen: None)
    assert groups([*STABLE, unknown], canary(100)) == [[4]] * 100


def test_a_config_change_alone_sends_the_calls_to_the_endpoints_that_are_ready() -> None:
    """`stable == candidate`: the versions cannot tell the new config's endpoints from the old one's, so
    every endpoint of it that is not ready gives way to those that are; if none is, all serve."""
    config_only = VersionSplit(stable="1.0", candidate="1.0", share=10, min_ready_s=READY_AFTER)
    restarted = endpoint(9, "c", seen=NOW - 1)
    assert groups([*STABLE, restarted], config_only) == [[1, 2]] * 100
    assert groups([restarted], config_only) == [[9]] * 100


SEEN_AGO = st.one_of(st.none(), st.floats(0.0, 20.0))


@PROPERTY
@given(
    versions=st.lists(st.tuples(st.sampled_from([ECHO, NEW, OTHER]), SEEN_AGO), max_size=8),
    share=st.integers(0, 100),
    ready_after=st.floats(0.0, 10.0),
    start=st.integers(0, 10_000),
)
def test_a_candidate_not_ready_is_chosen_only_when_nothing_else_serves(
    versions: list[tuple[Coordinates, float | None]], share: int, ready_after: float, start: int
) -> None:
    endpoints = [
        endpoint(n, "a", coordinates, seen=None if ago is None else NOW - ago)
        for n, (coordinates, ago) in enumerate(versions)
    ]

    def ready(e: Endpoint) -> bool:
        return e.coordinates != NEW or e.seen is None or NOW - e.seen >= ready_after

    split = canary(share, ready_after=ready_after)
    chosen = [split_by_version(endpoints, split, turn, now=NOW) for turn in range(start, start + 100)]
    for group in chosen:
        assert bool(group) == bool(endpoints)  # never refused
        versions_chosen = {e.coordinates for e in group}
        assert len(versions_chosen) <= 1 or list(group) == endpoints  # one version, or any as a last resort
        if any(not ready(e) for e in group):
            assert not any(ready(e) and e.coordinates in (ECHO, NEW) for e in endpoints)
    if any(ready(e) and e.coordinates == NEW for e in endpoints) and any(
        e.coordinates == ECHO for e in endpoints
    ):
        assert sum(all(e.coordinates == NEW for e in group) for group in chosen) == share
