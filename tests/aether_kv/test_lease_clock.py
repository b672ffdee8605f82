"""The leader's in-memory lease deadlines (`aether_kv._raft.LeaseClock`): keep-alives move them, a new
leadership starts every lease at a full TTL plus the takeover margin."""

from __future__ import annotations

from aether_kv._raft import LeaseClock


def test_a_renewal_moves_the_deadline_a_full_ttl_from_now() -> None:
    clock = LeaseClock(takeover_margin=3.0)
    ttls = {1: 10.0}
    assert clock.due(epoch=1.0, now=100.0, ttls=ttls) == []  # takeover: due at 113
    assert clock.renew(1, epoch=1.0, now=112.0, ttls=ttls)  # due at 122
    assert clock.due(epoch=1.0, now=121.9, ttls=ttls) == []
    assert clock.due(epoch=1.0, now=122.0, ttls=ttls) == [1]


def test_a_lease_past_its_deadline_cannot_be_renewed() -> None:
    clock = LeaseClock(takeover_margin=0.0)
    ttls = {1: 5.0}
    assert clock.due(epoch=1.0, now=0.0, ttls=ttls) == []
    assert not clock.renew(1, epoch=1.0, now=5.0, ttls=ttls)
    assert not clock.renew(2, epoch=1.0, now=1.0, ttls=ttls)  # unknown lease


def test_a_lease_granted_during_a_leadership_gets_a_full_ttl_without_the_margin() -> None:
    clock = LeaseClock(takeover_margin=3.0)
    assert clock.due(epoch=1.0, now=0.0, ttls={}) == []
    assert clock.due(epoch=1.0, now=50.0, ttls={7: 2.0}) == []
    assert clock.due(epoch=1.0, now=52.0, ttls={7: 2.0}) == [7]


def test_a_new_leadership_starts_every_lease_afresh_and_forgets_revoked_ones() -> None:
    clock = LeaseClock(takeover_margin=3.0)
    clock.due(epoch=1.0, now=0.0, ttls={1: 5.0, 2: 5.0})
    assert clock.due(epoch=1.0, now=9.0, ttls={1: 5.0, 2: 5.0}) == [1, 2]
    # leadership lost and regained later: old deadlines do not count
    assert clock.due(epoch=2.0, now=9.0, ttls={1: 5.0}) == []
    assert clock.renew(1, epoch=2.0, now=16.0, ttls={1: 5.0})
    assert clock.due(epoch=2.0, now=20.9, ttls={1: 5.0}) == []
    assert clock.due(epoch=2.0, now=21.0, ttls={1: 5.0}) == [1]


def test_a_stalled_leader_expires_nothing_and_then_postpones_every_lease_by_the_stall() -> None:
    # e.g. a 10-minute log compaction blocked the tick thread for 3 s: keep-alives went unheard meanwhile
    clock = LeaseClock(takeover_margin=0.0, stall=0.5)
    ttls = {1: 1.5, 2: 1.5}
    clock.tick(0.0)
    assert clock.due(epoch=1.0, now=0.0, ttls=ttls) == []  # due at 1.5
    for now in (0.4, 0.8):
        clock.tick(now)
    assert clock.renew(2, epoch=1.0, now=1.0, ttls=ttls)  # due at 2.5 (a renewal counts as a tick)
    # silence from t=1.0: at t=4.0 both deadlines have passed, but the tick thread has not run
    assert clock.due(epoch=1.0, now=4.0, ttls=ttls) == []
    clock.tick(4.0)  # back after 3 s: lease 1 now due at 4.5, lease 2 at 5.5
    assert clock.due(epoch=1.0, now=4.4, ttls=ttls) == []
    assert clock.renew(2, epoch=1.0, now=4.4, ttls=ttls)  # its next keep-alive arrives in time
    clock.tick(4.5)
    assert clock.due(epoch=1.0, now=4.5, ttls=ttls) == [1]  # the client that stays silent still loses it


def test_short_gaps_between_ticks_postpone_nothing() -> None:
    clock = LeaseClock(takeover_margin=0.0, stall=0.5)
    ttls = {1: 1.0}
    for step in range(11):
        clock.tick(step * 0.1)
    assert clock.due(epoch=1.0, now=0.0, ttls=ttls) == []
    clock.tick(1.0)
    assert clock.due(epoch=1.0, now=1.0, ttls=ttls) == [1]


def test_the_expiry_loop_held_up_postpones_every_lease() -> None:
    clock = LeaseClock(takeover_margin=0.0, stall=0.5)
    ttls = {1: 1.0}
    assert clock.due(epoch=1.0, now=0.0, ttls=ttls) == []
    clock.postpone(2.0)
    assert clock.due(epoch=1.0, now=2.9, ttls=ttls) == []
    assert clock.due(epoch=1.0, now=3.0, ttls=ttls) == [1]


def test_a_keepalive_heard_first_after_a_stall_finds_its_lease_postponed() -> None:
    # the leader's first work after a 3 s stall is a queued keep-alive, before any tick callback ran
    clock = LeaseClock(takeover_margin=0.0, stall=0.5)
    ttls = {1: 1.5}
    clock.tick(0.0)
    assert clock.due(epoch=1.0, now=0.0, ttls=ttls) == []  # due at 1.5
    assert clock.renew(1, epoch=1.0, now=3.0, ttls=ttls)  # postponed to 4.5 first, then renewed to 4.5
    for now in (3.4, 3.8, 4.2, 4.4):
        clock.tick(now)
    assert clock.due(epoch=1.0, now=4.4, ttls=ttls) == []
    clock.tick(4.5)
    assert clock.due(epoch=1.0, now=4.5, ttls=ttls) == [1]


def test_the_next_deadline_is_the_earliest_and_follows_renewals_and_grants() -> None:
    """What the expiry loop sleeps until: the earliest deadline; none without leases."""
    clock = LeaseClock(takeover_margin=3.0)
    assert clock.next_deadline(epoch=1.0, now=0.0, ttls={}) is None
    assert clock.next_deadline(epoch=1.0, now=0.0, ttls={1: 5.0, 2: 10.0}) == 5.0  # granted now: no margin
    assert clock.renew(1, epoch=1.0, now=4.0, ttls={1: 5.0, 2: 10.0})  # 1 now due at 9
    assert clock.next_deadline(epoch=1.0, now=4.0, ttls={1: 5.0, 2: 10.0}) == 9.0
    assert clock.next_deadline(epoch=1.0, now=4.5, ttls={1: 5.0, 2: 10.0, 3: 1.0}) == 5.5  # a short grant
    assert clock.next_deadline(epoch=2.0, now=6.0, ttls={2: 10.0}) == 19.0  # a new leadership: TTL + margin
