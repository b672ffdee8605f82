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
