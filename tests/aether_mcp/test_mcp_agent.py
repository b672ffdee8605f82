"""The one-agent rule (pure) and the gate that carries it out, against a fake of the cluster gateway (the
seam where the service meets the management API)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aether_mcp import AgentBusyError, ClusterError
from aether_mcp._agent import Agent, AgentGate, Verdict, decide

ALPHA = Agent("a", "alpha 1.0 from 127.0.0.1")
BETA = Agent("b", "beta 2.0 from 127.0.0.1")


def test_nobody_admitted_means_take() -> None:
    assert decide(None, ALPHA, busy=False, last_seen=0, now=0, idle_timeout=10) is Verdict.TAKE


def test_the_same_agent_passes() -> None:
    assert decide(ALPHA, ALPHA, busy=True, last_seen=0, now=1e9, idle_timeout=10) is Verdict.SAME


def test_another_agent_is_refused_while_the_first_is_active() -> None:
    assert decide(ALPHA, BETA, busy=False, last_seen=5, now=14.9, idle_timeout=10) is Verdict.REFUSE
    assert decide(ALPHA, BETA, busy=True, last_seen=0, now=100, idle_timeout=10) is Verdict.REFUSE


def test_a_quiet_agent_is_replaced() -> None:
    assert decide(ALPHA, BETA, busy=False, last_seen=5, now=15, idle_timeout=10) is Verdict.REPLACE


@given(st.floats(0, 1e6), st.floats(0, 1e6), st.booleans())
def test_an_agent_that_never_times_out_is_never_replaced(last_seen: float, now: float, busy: bool) -> None:
    verdict = decide(ALPHA, BETA, busy=busy, last_seen=last_seen, now=now, idle_timeout=math.inf)
    assert verdict is Verdict.REFUSE


class FakeCluster:
    """The management API's agent lease, as the gateway sees it."""

    def __init__(self) -> None:
        self.holder: tuple[str, str] | None = None  # (holder, token)
        self.calls: list[str] = []

    def acquire_agent_lease(self, holder: str, token: str, ttl: float) -> object:
        self.calls.append("acquire")
        if self.holder is not None and self.holder[1] != token:
            raise ClusterError(f"another agent is operating this cluster: {self.holder[0]}", kind="conflict")
        self.holder = (holder, token)
        return object()

    def release_agent_lease(self, token: str) -> bool:
        self.calls.append("release")
        if self.holder is not None and self.holder[1] == token:
            self.holder = None
            return True
        return False


class FakeGateway:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    async def call(self, operation: Any) -> Any:
        return operation(self.cluster)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def gate(cluster: FakeCluster, clock: Clock, idle_timeout: float = 10.0) -> AgentGate:
    return AgentGate(
        FakeGateway(cluster),  # type: ignore[arg-type]
        service="aether-mcp (test)",
        ttl=15,
        idle_timeout=idle_timeout,
        clock=clock,
    )


async def test_the_gate_takes_the_lease_for_the_first_agent_and_refuses_the_second() -> None:
    cluster, clock = FakeCluster(), Clock()
    one = gate(cluster, clock)
    async with one.serving(ALPHA):
        pass
    assert cluster.holder is not None
    assert cluster.holder[0] == "alpha 1.0 from 127.0.0.1 via aether-mcp (test)"
    with pytest.raises(AgentBusyError) as refused:
        await one.admit(BETA)
    assert "alpha 1.0 from 127.0.0.1 via aether-mcp (test)" in refused.value.message
    assert cluster.calls == ["acquire"], "a refused agent must not touch the cluster"


async def test_a_refusal_tells_the_true_time_left() -> None:
    cluster, clock = FakeCluster(), Clock()
    one = gate(cluster, clock, idle_timeout=120)
    await one.admit(ALPHA)
    clock.now = 45
    with pytest.raises(AgentBusyError, match=r"try again in 75 s \(it made a request 45 s ago\)"):
        await one.admit(BETA)
    async with one.serving(ALPHA):
        with pytest.raises(AgentBusyError, match="it has a request in flight"):
            await one.admit(BETA)


async def test_a_quiet_agent_gives_way_and_its_lease_is_released() -> None:
    cluster, clock = FakeCluster(), Clock()
    one = gate(cluster, clock, idle_timeout=10)
    await one.admit(ALPHA)
    clock.now = 10
    await one.admit(BETA)
    assert cluster.calls == ["acquire", "release", "acquire"]
    assert cluster.holder is not None and cluster.holder[0].startswith("beta 2.0")


async def test_an_agent_with_a_request_in_flight_is_not_quiet() -> None:
    cluster, clock = FakeCluster(), Clock()
    one = gate(cluster, clock, idle_timeout=10)
    async with one.serving(ALPHA):
        clock.now = 1000
        with pytest.raises(AgentBusyError):
            await one.admit(BETA)


async def test_a_conflict_in_the_cluster_is_reported_with_its_holder() -> None:
    cluster, clock = FakeCluster(), Clock()
    cluster.holder = ("gamma via aether-mcp elsewhere", "someone-elses-token")
    with pytest.raises(AgentBusyError, match="gamma via aether-mcp elsewhere"):
        await gate(cluster, clock).admit(ALPHA)


async def test_release_gives_the_lease_back_and_only_for_the_admitted_agent() -> None:
    cluster, clock = FakeCluster(), Clock()
    one = gate(cluster, clock)
    await one.admit(ALPHA)
    await one.release("somebody-else")
    assert cluster.holder is not None
    await one.release(ALPHA.key)
    assert cluster.holder is None and one.current is None


class ViewerCluster(FakeCluster):
    def acquire_agent_lease(self, holder: str, token: str, ttl: float) -> object:
        self.calls.append("acquire")
        raise ClusterError("this operation needs the operator role; your key has viewer", kind="forbidden")


async def test_a_viewer_key_is_admitted_without_a_lease_and_still_one_at_a_time() -> None:
    cluster, clock = ViewerCluster(), Clock()
    one = gate(cluster, clock)
    await one.admit(ALPHA)
    assert one.current == ALPHA and cluster.holder is None
    with pytest.raises(AgentBusyError):
        await one.admit(BETA)
    await one.release()
    assert cluster.calls == ["acquire"], "nothing to release without a lease"


async def test_an_unreachable_cluster_is_not_an_admission() -> None:
    class Unreachable(FakeCluster):
        def acquire_agent_lease(self, holder: str, token: str, ttl: float) -> object:
            raise ClusterError("cannot reach the cluster: http://127.0.0.1:9: refused", kind="unreachable")

    one = gate(Unreachable(), Clock())
    with pytest.raises(ClusterError, match="cannot reach the cluster"):
        await one.admit(ALPHA)
    assert one.current is None


def test_what_an_agent_says_of_itself_is_cut_and_its_control_characters_escaped() -> None:
    """The lease's holder is built from the client's name, version and `Aether-Agent` header, unchecked:
    a long one was refused by the node ("holder: expected ... 1 to 200 characters") and that agent never
    admitted; a line break or ESC in it reached the next agent's "another agent is operating" as sent."""
    from aether_mcp._server import said

    assert said("claude 1.0", 60) == "claude 1.0"
    assert said("x" * 100, 60) == "x" * 59 + "…"
    assert said("evil\nagent \x1b[2J\u202e", 60) == "evil\\nagent \\x1b[2J\\u202e"
    assert len(said("\x01" * 100, 60)) == 60  # (escaped first, then cut)


def test_the_lease_holder_is_never_longer_than_the_node_takes() -> None:
    from aether_mcp._agent import MAX_HOLDER, Agent, holder_of

    long = Agent("agent:x", "y" * 60 + " (" + "z" * 60 + ") from 2001:db8::1234:5678:9abc:def0")
    assert (
        len(holder_of(long, "aether-mcp 0.1 (pid 123 on a-host-with-a-long-name.example.com)")) <= MAX_HOLDER
    )
    assert holder_of(Agent("stdio", "claude over stdio"), "aether-mcp") == "claude over stdio via aether-mcp"
