"""Node operations on a real 3-node cluster, through the `aether` CLI: `node cordon` (no new placement
there), `node drain` (its instances move off, each replacement ACTIVE first: callers of an idempotent
entry point see no failed call; DRAINED once nothing is left), a drain the floor holds back (it waits,
and the node's state and the blueprint's status say why), `node uncordon` (placements come back), the
events of each, and bad input (an unknown node) that changes nothing.
"""

from __future__ import annotations

import collections
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from cli_support import CliCluster, background_aether, cli_cluster, expect, wait_until
from cluster_support import Callers, kv_of, leader_node_id

from aether_node.client import ApiClient, ApiError

pytestmark = [pytest.mark.integration]


ECHO3 = 'name = "web"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 3\n'
# one greeter per node at most, and all three must stay ACTIVE: a drain cannot move one anywhere
GREETER_PINNED = (
    'name = "greet"\n\n[[slices]]\nartifact = "org.aether:greeter:1.0.0"\ninstances = 3\n'
    'strategy = "spread"\nmax_per_node = 1\nmin_available = 3\n'
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, sample_index: Path) -> Iterator[CliCluster]:
    with cli_cluster(tmp_path_factory.mktemp("node-ops"), sample_index) as running:
        yield running


@pytest.fixture
def api(cluster: CliCluster) -> Iterator[ApiClient]:
    with ApiClient(cluster.urls.split(",")) as client:
        yield client


def apply(cluster: CliCluster, tmp_path: Path, text: str) -> None:
    path = tmp_path / "blueprint.toml"
    path.write_text(text)
    expect(cluster.aether("blueprint", "apply", str(path), "--wait", "--json", timeout=180))


def placement(api: ApiClient, artifact_id: str) -> dict[str, int]:
    """ACTIVE instances per node, once every instance of the slice is ACTIVE ({} before, and while the
    store answers `unavailable`: a node whose replica leads stopping means an election, and a read then
    gets a 503 to retry)."""
    try:
        mine = [i for i in api.list_slices() if i.artifact.rsplit(":", 1)[0] == artifact_id]
    except ApiError as error:
        if error.kind != "unavailable":
            raise
        return {}
    if not mine or any(i.state != "ACTIVE" for i in mine):
        return {}
    return dict(collections.Counter(i.node_id for i in mine))


def node(api: ApiClient, node_id: str) -> Any:
    return next(n for n in api.nodes() if n.node_id == node_id)


def test_drain_moves_instances_without_failed_calls_then_uncordon_places_again(
    cluster: CliCluster, api: ApiClient, tmp_path: Path
) -> None:
    apply(cluster, tmp_path, ECHO3)
    assert placement(api, "org.aether:echo") == {"node-1": 1, "node-2": 1, "node-3": 1}
    ingresses = [n.ingress for n in cluster.local.nodes]

    async def drain_under_load() -> Callers:
        callers = Callers(ingresses, "org.aether:echo", "echo", concurrency=3)
        async with trio.open_nursery() as nursery:
            await nursery.start(callers.run)
            await callers.made(30)
            said = await trio.to_thread.run_sync(
                lambda: cluster.aether("node", "drain", "node-3", "--wait", "--timeout", "60", timeout=90)
            )
            lines = expect(said).stdout.splitlines()
            assert lines[-1] == "node node-3: DRAINED"  # --wait returned once nothing was left there
            assert "instance left on node-3" in said.stdout or "drain of node-3 waits" in said.stdout
            assert node(api, "node-3").state == "DRAINED"
            await callers.made(30)
            nursery.cancel_scope.cancel()
        return callers

    callers = trio.run(drain_under_load)
    failed = [r for r in callers.results if not r.ok]
    assert not failed, failed[:5]
    assert placement(api, "org.aether:echo") in ({"node-1": 2, "node-2": 1}, {"node-1": 1, "node-2": 2})
    shown = expect(cluster.aether("cluster", "nodes")).stdout
    assert "STATE" in shown and "DRAINED" in shown and "ON_DUTY" in shown

    # cordoned (drained): a scale-up places nothing there
    expect(cluster.aether("node", "cordon", "node-2"))
    assert node(api, "node-2").state == "CORDONED"
    expect(cluster.aether("slice", "scale", "org.aether:echo", "4"))
    wait_until(
        lambda: placement(api, "org.aether:echo") == {"node-1": 3, "node-2": 1},
        timeout=60,
        what="the new instances on node-1 only",
    )

    # uncordon: instances are placed there again (the spread evens out)
    expect(cluster.aether("node", "uncordon", "node-3"))
    expect(cluster.aether("node", "uncordon", "node-2"))
    assert node(api, "node-3").state == "ON_DUTY"
    wait_until(
        lambda: placement(api, "org.aether:echo").get("node-3", 0) >= 1,
        timeout=60,
        what="an echo instance back on node-3",
    )
    kinds = [
        (e["kind"], e["node_id"])
        for e in expect(cluster.aether("cluster", "events", "--node", "node-3", "--json")).json_lines()
        if e["kind"].startswith("node_")
    ]
    assert ("node_draining", "node-3") in kinds and ("node_uncordoned", "node-3") in kinds
    expect(cluster.aether("blueprint", "delete", "web"))


def test_a_drain_the_floor_holds_back_waits_and_says_why(
    cluster: CliCluster, api: ApiClient, tmp_path: Path
) -> None:
    apply(cluster, tmp_path, GREETER_PINNED)
    before = placement(api, "org.aether:greeter")
    assert before == {"node-1": 1, "node-2": 1, "node-3": 1}
    drained = expect(cluster.aether("node", "drain", "node-2", "--json")).json()
    assert drained["state"] == "DRAINING"

    def waiting() -> str:
        return node(api, "node-2").waiting if "below its floor" in node(api, "node-2").waiting else ""

    said = wait_until(waiting, timeout=30, what="the drain to say what it waits for")
    assert said.startswith("drain of node-2 waits for 1 instance to move: org.aether:greeter:1.0.0#")
    assert "the drain of node-2 waits for room elsewhere" in said
    status = api.blueprint_status("greet")
    assert "the drain of node-2 waits" in status.slices[0].problem
    assert placement(api, "org.aether:greeter") == before  # nothing went below the floor
    human = expect(cluster.aether("cluster", "nodes")).stdout
    assert "drain of node-2 waits" in human

    # --wait gives up after its timeout, says what the drain waits for, and leaves the drain on
    waited = cluster.aether("node", "drain", "node-2", "--wait", "--timeout", "1")
    assert waited.returncode == 1, waited
    assert "node-2 is not DRAINED after 1 s (drain of node-2 waits for 1 instance" in waited.stderr
    assert "the drain goes on" in waited.stderr and node(api, "node-2").state == "DRAINING"

    # an uncordon while --wait waits: it says the drain ended and fails
    with background_aether(
        "node", "drain", "node-2", "--wait", cwd=cluster.cwd, env={"AETHER_CLUSTER": cluster.urls}
    ) as waiting_drain:
        waiting_drain.wait_for(lambda line: "drain of node-2 waits" in line, timeout=30, what="progress")
        expect(cluster.aether("node", "uncordon", "node-2"))
        assert waiting_drain.process.wait(timeout=30) == 1
        assert waiting_drain.process.stderr is not None
        assert "the drain of node-2 ended before it was DRAINED: the node is ON_DUTY" in (
            waiting_drain.process.stderr.read()
        )
    wait_until(lambda: not api.blueprint_status("greet").slices[0].problem, timeout=30, what="no problem")
    assert node(api, "node-2").state == "ON_DUTY" and node(api, "node-2").waiting == ""
    expect(cluster.aether("blueprint", "delete", "greet"))


def test_bad_node_operations_are_refused_and_change_nothing(cluster: CliCluster, api: ApiClient) -> None:
    states = {n.node_id: n.state for n in api.nodes()}
    for operation in ("cordon", "uncordon", "drain"):
        run = expect(cluster.aether("node", operation, "node-9"), 1)
        assert run.stderr.strip() == (
            "aether: error: no node 'node-9' is registered (registered: node-1, node-2, node-3)"
        )
    assert {n.node_id: n.state for n in api.nodes()} == states


@pytest.mark.long
def test_node_stop_stops_the_node_gracefully_and_its_instances_are_replaced(
    cluster: CliCluster, api: ApiClient, tmp_path: Path
) -> None:
    """It ends node-3 (a KV replica: two of three keep the quorum), then starts it again."""
    apply(cluster, tmp_path, ECHO3)
    refused = expect(cluster.aether("node", "stop", "node-9"), 1)
    assert "no node 'node-9' is registered" in refused.stderr
    assert cluster.local.processes["node-3"].poll() is None  # nothing was stopped

    stopped = expect(cluster.aether("node", "stop", "node-3", "--json")).json()
    assert (stopped["node_id"], stopped["state"]) == ("node-3", "LEAVING")
    process = cluster.local.processes["node-3"]
    assert process.wait(timeout=30) == 0  # a clean exit, after its graceful stop
    wait_until(
        lambda: placement(api, "org.aether:echo") in ({"node-1": 2, "node-2": 1}, {"node-1": 1, "node-2": 2}),
        timeout=60,
        what="node-3's echo instance replaced on the others",
    )
    assert "node-3" not in {n.node_id for n in api.nodes()}
    left = expect(cluster.aether("cluster", "events", "--kind", "node_left", "--json")).json_lines()
    assert [(e["node_id"], e["reason"]) for e in left][-1] == ("node-3", "it shut down")

    async def stop_request() -> object:
        async with kv_of(cluster.local) as kv:
            return await kv.get("cluster/node-stop/node-3")

    assert trio.run(stop_request) is None  # the node deleted it as it stopped: a restart stays up

    # with node-3's replica gone, node-2's is one of the two the KV store needs: its stop is refused
    wait_until(
        lambda: cluster.local.plan("node-3").raft in api.cluster_status().disconnected_replicas,
        timeout=30,
        what="node-3's KV replica seen as down",
    )
    refused = expect(cluster.aether("node", "stop", "node-2"), 1)
    assert "would leave 1 of the KV store's 3 replicas up, fewer than the 2 it needs" in refused.stderr
    assert "or stop it anyway with force (the CLI's --force, the MCP tools' force)" in refused.stderr, (
        refused.stderr
    )
    assert cluster.local.processes["node-2"].poll() is None
    assert node(api, "node-2").state == "ON_DUTY"
    cluster.local.processes.pop("node-3")
    cluster.local.start("node-3")
    wait_until(
        lambda: any(n.node_id == "node-3" and n.state == "ON_DUTY" for n in api.nodes()),
        timeout=60,
        what="node-3 registered again, on duty",
    )
    expect(cluster.aether("blueprint", "delete", "web"))


@pytest.mark.long
def test_node_restart_brings_the_same_node_back_as_the_same_process(
    cluster: CliCluster, api: ApiClient, tmp_path: Path
) -> None:
    """node-3 (a KV replica) stops gracefully and replaces itself by the same command line: the same
    process (PID) runs on, registers again as node-3 with its data (its KV replica rejoins from its own
    directory, its installed slice environment is still there) and takes instances again."""
    apply(cluster, tmp_path, ECHO3)
    process = cluster.local.processes["node-3"]
    before = node(api, "node-3").started_at
    installed = Path(cluster.local.plan("node-3").data_dir) / "slices"
    kept = sorted(p.name for p in installed.iterdir())
    assert kept, "node-3 installed nothing"
    refused = expect(cluster.aether("node", "restart", "node-9"), 1)
    assert "no node 'node-9' is registered" in refused.stderr

    restarted = expect(cluster.aether("node", "restart", "node-3", "--json")).json()
    assert (restarted["node_id"], restarted["state"]) == ("node-3", "LEAVING")
    wait_until(
        lambda: any(n.node_id == "node-3" and n.started_at > before for n in api.nodes()),
        timeout=90,
        what="node-3 registered again, a new run",
    )
    assert process.poll() is None  # the same process: it replaced itself, nothing ended
    assert node(api, "node-3").state == "ON_DUTY"
    assert sorted(p.name for p in installed.iterdir()) == kept  # its data stayed
    assert "aether-node: restarting" in cluster.local.log_tail("node-3", 400)
    wait_until(
        lambda: placement(api, "org.aether:echo") == {"node-1": 1, "node-2": 1, "node-3": 1},
        timeout=90,
        what="echo evened out over the three nodes again",
    )
    wait_until(lambda: not cluster_status_reasons(api), timeout=60, what="a healthy cluster")

    async def stop_request() -> object:
        async with kv_of(cluster.local) as kv:
            return await kv.get("cluster/node-stop/node-3")

    assert trio.run(stop_request) is None  # deleted as it stopped: the new run stays up
    expect(cluster.aether("blueprint", "delete", "web"))


@pytest.mark.long
def test_a_restart_the_node_would_not_come_back_from_is_refused_and_it_runs_on(
    cluster: CliCluster, api: ApiClient
) -> None:
    """The configuration was edited since the node started, and broken (here: its secret file): a
    restart stopped the node, which then failed to start on every try. Now the node reads it again
    first, refuses, runs on, drops the request and says why among its problems."""
    before = node(api, "node-3").started_at
    secret_file = cluster.local.secret_file
    kept = secret_file.read_text()
    secret_file.write_text("short\n")
    try:
        expect(cluster.aether("node", "restart", "node-3"))

        def refusal() -> str | None:
            said = [p for p in node(api, "node-3").problems if p.startswith("a restart was refused")]
            return said[0] if said else None

        said = wait_until(refusal, timeout=30, what="node-3 saying that it refused the restart")
    finally:
        secret_file.write_text(kept)
    assert said == (
        "a restart was refused: the node would not start again: kv.secret_file"
        f" {secret_file}: the secret must be at least 16 characters"
    )
    assert cluster.local.processes["node-3"].poll() is None
    assert node(api, "node-3").started_at == before  # the same run: nothing stopped

    async def stop_request() -> object:
        async with kv_of(cluster.local) as kv:
            return await kv.get("cluster/node-stop/node-3")

    wait_until(lambda: trio.run(stop_request) is None, timeout=30, what="the restart request dropped")
    wait_until(lambda: node(api, "node-3").state == "ON_DUTY", timeout=30, what="node-3 on duty")
    # the configuration mended: the problem goes (it is looked at again every few seconds)
    wait_until(lambda: refusal() is None, timeout=30, what="the refusal gone from node-3's problems")


def cluster_status_reasons(api: ApiClient) -> list[str]:
    return list(api.cluster_status().reasons)


@pytest.mark.long
def test_a_cordon_outlives_a_change_of_leader(cluster: CliCluster, api: ApiClient, tmp_path: Path) -> None:
    """The operator's intent is in the KV, not in the leader's memory: after the leader stops, the new
    one still places nothing on the cordoned node. (Last: it stops the leading node.) Either node left
    may take the lead, the cordoned one too: all four instances go to the one that is not cordoned."""

    async def leader() -> str:
        async with kv_of(cluster.local) as kv:
            return await leader_node_id(cluster.local, kv)

    old = trio.run(leader)
    cordoned, open_node = (n for n in ("node-1", "node-2", "node-3") if n != old)
    expect(cluster.aether("node", "cordon", cordoned))
    cluster.local.kill(old, signal.SIGTERM)  # a graceful stop: another replica takes over
    new = wait_until(lambda: (found := trio.run(leader)) != old and found, timeout=30, what="a new leader")
    assert new in (cordoned, open_node)
    apply(cluster, tmp_path, ECHO3.replace("instances = 3", "instances = 4"))
    assert placement(api, "org.aether:echo") == {open_node: 4}
    assert node(api, cordoned).state == "CORDONED"
    expect(cluster.aether("node", "uncordon", cordoned))
    expect(cluster.aether("blueprint", "delete", "web"))
