"""Faults with a real `aether-node` process: slices that fail on purpose (org.aether:faulty), slice hosts
and nodes killed with SIGKILL, a crash loop, a node restart, and SIGTERM.

The slice faults share one node (activation timeout lowered to 2 s through a `--config` file) that is a
client of a KV replica run beside it, so the test writes the command states as a cluster leader would.
The node faults each start a node with its own KV replica (its cluster's leader), which runs what a
blueprint asks for.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import node_support
import pytest
import trio
from node_support import (
    COUNTER,
    ECHO,
    FAULTY,
    NodeProcess,
    ProcInfo,
    activate,
    apply_blueprint,
    client_node,
    collect_events,
    describe_events,
    endpoint_keys,
    free_ports,
    host_of,
    invoke,
    kill_pid,
    kv_client,
    kv_replicas,
    port_open,
    read_record,
    slice_hosts,
    slice_key,
    started_node,
    template_of,
    wait_for_active_instance,
    wait_for_state,
    write_command,
)

from aether_kv import Event, KVClient
from aether_node import RestartPolicy, SliceRecord, SliceState, decode_record
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Fixtures shared by the node test modules (pytest finds them as module attributes).

ACTIVATE_TIMEOUT = 2.0
FAULTS_CONFIG = f"[timeouts]\nactivate = {ACTIVATE_TIMEOUT:g}\n"


@pytest.fixture(scope="module")
def node(sample_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    root = tmp_path_factory.mktemp("faults-node")
    with client_node(root, sample_index, config_text=FAULTS_CONFIG) as started:
        yield started


async def echo_answers(node: NodeProcess) -> int:
    """Call echo (it must answer) and return the pid of the host that answered."""
    response = await invoke(node.ingress, "org.aether:echo", "echo", {"still": "here"})
    assert (response.status_code, response.json()) == (200, {"still": "here"}), response.text
    info = await invoke(node.ingress, "org.aether:echo", "info")
    assert info.status_code == 200, info.text
    return int(info.json()["pid"])


# ---------------------------------------------------------------- slices that fail on purpose


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("fail_import", ["load:", "(import)", "faulty: import failed on purpose"]),
        ("fail_start", ["activate:", "faulty: start failed on purpose"]),
        ("hang_start", ["activate:", "timed out", f"within {ACTIVATE_TIMEOUT:g} s"]),
        # a sync hook that holds the loop: its START times out, not the LOAD answered before it
        ("hang_start_sync", ["activate:", "timed out", f"within {ACTIVATE_TIMEOUT:g} s"]),
    ],
)
async def test_faulty_mode_ends_in_failed_with_its_reason_while_echo_keeps_serving(
    node: NodeProcess, kv: KVClient, mode: str, expected: list[str]
) -> None:
    await activate(kv, node, ECHO, 0)
    echo_pid = await echo_answers(node)

    key = slice_key(node.node_id, FAULTY, 0)
    await write_command(kv, key, SliceState.ACTIVATE, {"mode": mode})
    record = await wait_for_state(kv, key, SliceState.FAILED, timeout=60)
    for text in expected:
        assert text in record.reason, f"{mode}: {text!r} not in the reason {record.reason!r}"

    async def faulty_host_gone() -> bool:
        return host_of(node.data_dir, FAULTY, 0) is None

    await wait_until(faulty_host_gone, timeout=10, what=f"the {mode} host to end after FAILED")
    assert await endpoint_keys(kv, FAULTY) == []
    assert await echo_answers(node) == echo_pid, "echo's host changed while another slice failed"
    record = await read_record(kv, key)
    assert record is not None and record.state is SliceState.FAILED, "FAILED must stay FAILED"


async def test_raising_entry_answers_500_and_the_instance_stays_active(
    node: NodeProcess, kv: KVClient
) -> None:
    await activate(kv, node, ECHO, 0)
    key = slice_key(node.node_id, FAULTY, 1)
    await activate(kv, node, FAULTY, 1, {"mode": "raise"})
    pid = host_of(node.data_dir, FAULTY, 1)

    for _ in range(3):
        response = await invoke(node.ingress, "org.aether:faulty", "work", {"n": 1})
        assert response.status_code == 500, response.text
        error = response.json()["error"]
        assert (error["kind"], error["type"]) == ("raised", "ValueError"), error
        assert "faulty: work failed on purpose" in error["message"], error

    record = await read_record(kv, key)
    assert record is not None and record.state is SliceState.ACTIVE, record
    assert host_of(node.data_dir, FAULTY, 1) == pid, "a raising entry must not cost the process"
    await echo_answers(node)


async def test_a_call_that_outlives_its_timeout_answers_504_and_the_instance_serves_on(
    node: NodeProcess, kv: KVClient
) -> None:
    await activate(kv, node, FAULTY, 2, {"mode": "hang_work"})
    pid = host_of(node.data_dir, FAULTY, 2)
    for _ in range(2):  # each hangs in the slice until the call's own deadline (?timeout=) ends it
        response = await invoke(node.ingress, "org.aether:faulty", "work?timeout=0.3", {})
        assert response.status_code == 504, response.text
        error = response.json()["error"]
        assert error["kind"] == "timeout", error
        assert "work did not answer within" in error["message"], error
    record = await read_record(kv, slice_key(node.node_id, FAULTY, 2))
    assert record is not None and record.state is SliceState.ACTIVE, record
    assert host_of(node.data_dir, FAULTY, 2) == pid, "a timed-out call must not cost the process"


@pytest.mark.parametrize("victim", ["instance", "template"])
async def test_killed_slice_host_is_restarted(node: NodeProcess, kv: KVClient, victim: str) -> None:
    """SIGKILL of an ACTIVE instance's process (or of the fork server it was forked from, which takes
    the instance with it): the node notices, restarts it with a new pid, and it serves again."""
    await activate(kv, node, ECHO, 0)
    key = slice_key(node.node_id, ECHO, 0)
    old = host_of(node.data_dir, ECHO, 0)
    assert old is not None
    assert await echo_answers(node) == old.pid
    if victim == "template":
        template = template_of(node.data_dir, ECHO)
        if template is None:
            pytest.skip("this node does not fork slice instances from a template process")
        target = template.pid
    else:
        target = old.pid
    before = (await kv.get_with_revision(key)).revision

    kill_pid(target, signal.SIGKILL)

    def active_again(events: list[Event]) -> bool:
        return any(b'"state":"ACTIVE"' in e.kv.value for e in events)

    events = await collect_events(kv, key, before + 1, until=active_again, timeout=30)
    records = [decode_record(key, e.kv.value, SliceRecord) for e in events if e.kv.value]
    restarts = [r.reason for r in records if "restart" in r.reason]
    assert restarts, f"no restart reason recorded: {records}"
    if victim == "instance":
        assert "killed by SIGKILL" in restarts[0], restarts
    new = host_of(node.data_dir, ECHO, 0)
    assert new is not None and new.pid != old.pid, (old, new)
    assert await echo_answers(node) == new.pid
    assert await endpoint_keys(kv, ECHO) == [f"endpoints/{ECHO}/0"]


@pytest.mark.long
async def test_crash_loop_ends_in_failed(node: NodeProcess, kv: KVClient) -> None:
    crash_delay = 0.3
    policy = RestartPolicy()
    # Deaths 1..max_restarts-1 are each followed by a backoff; the max_restarts-th ends in FAILED. Each
    # cycle also spawns, imports and starts the slice (well under a second here) and lives crash_delay.
    backoff = sum(policy.delay(deaths) for deaths in range(1, policy.max_restarts))
    bound = backoff + policy.max_restarts * (crash_delay + 2.0) + 5.0
    assert bound < policy.window, "every death must fall within the policy's window for this test"

    key = slice_key(node.node_id, FAULTY, 2)
    started = trio.current_time()
    await write_command(
        kv, key, SliceState.ACTIVATE, {"mode": "crash_after_start", "crash_delay": crash_delay}
    )
    record = await wait_for_state(kv, key, SliceState.FAILED, timeout=bound)
    assert "crash loop" in record.reason, record.reason
    assert f"{policy.max_restarts} times" in record.reason, record.reason
    assert "exit code 3" in record.reason, record.reason
    assert trio.current_time() - started >= backoff, "FAILED before the restarts' backoff could elapse"

    async def quiet() -> bool:
        return host_of(node.data_dir, FAULTY, 2) is None

    await wait_until(quiet, timeout=10, what="no faulty#2 host after the crash loop")
    assert await endpoint_keys(kv, FAULTY) == []
    with trio.move_on_after(1.0):  # FAILED is final: nothing may restart it
        while True:
            assert host_of(node.data_dir, FAULTY, 2) is None, "a host was started after FAILED"
            await trio.sleep(0.1)


# ---------------------------------------------------------------- the node itself killed or stopped
#
# These nodes run their own KV replica, so each is its cluster's leader: the instances come from a
# blueprint (the leader removes instances that no blueprint asks for).


@pytest.fixture
def own_node(sample_index: Path, tmp_path: Path) -> Iterator[NodeProcess]:
    with started_node(tmp_path / "node", sample_index) as started:
        yield started


async def deploy(client: KVClient, node: NodeProcess, slices: list[dict[str, Any]]) -> dict[str, int]:
    """Apply a blueprint and wait until each of its slices has an ACTIVE instance on the node; returns
    coordinates → instance number."""
    await apply_blueprint(client, "test", slices)
    return {
        spec["artifact"]: await wait_for_active_instance(client, node.node_id, spec["artifact"], 60)
        for spec in slices
    }


def live_host(node: NodeProcess, coordinates: str, instance: int) -> ProcInfo:
    host = host_of(node.data_dir, coordinates, instance)
    assert host is not None, f"no live host for {coordinates}#{instance}"
    return host


@pytest.mark.long
async def test_killed_kv_replica_is_restarted_and_the_node_carries_on(
    own_node: NodeProcess, tmp_path: Path
) -> None:
    node = own_node
    async with kv_client(node) as client:
        echo = (await deploy(client, node, [{"artifact": ECHO, "instances": 1}]))[ECHO]
        (old,) = kv_replicas(node.data_dir)

        kill_pid(old.pid, signal.SIGKILL)

        async def replaced() -> bool:
            replicas = kv_replicas(node.data_dir)
            return len(replicas) == 1 and replicas[0].pid != old.pid and port_open(node.client_port)

        await wait_until(replaced, timeout=30, what="the node to start a new KV replica")
        assert await echo_answers(node) == live_host(node, ECHO, echo).pid
        registration = await client.get(f"nodes/{node.node_id}", linearizable=True)
        assert registration is not None, "the node's registration is gone after its replica restarted"
        assert await endpoint_keys(client, ECHO) == [f"endpoints/{ECHO}/{echo}"]
        # The node still follows the KV: a changed blueprint is carried out.
        state_file = tmp_path / "counter.txt"
        counter_spec = {"artifact": COUNTER, "instances": 1, "config": {"state_file": str(state_file)}}
        await deploy(client, node, [{"artifact": ECHO, "instances": 1}, counter_spec])
        assert (await invoke(node.ingress, "org.aether:counter", "increment")).json() == 1


async def test_node_sigkill_leaves_no_process_and_a_restart_reconciles(
    own_node: NodeProcess, tmp_path: Path
) -> None:
    node = own_node
    state_file = tmp_path / "counter.txt"
    async with kv_client(node) as client:
        counter_spec = {"artifact": COUNTER, "instances": 1, "config": {"state_file": str(state_file)}}
        numbers = await deploy(client, node, [{"artifact": ECHO, "instances": 1}, counter_spec])
        old_pids = {live_host(node, c, n).pid for c, n in numbers.items()}
        assert (await invoke(node.ingress, "org.aether:counter", "increment")).json() == 1
        old_endpoints = {e.key: e for e in (await client.range("endpoints/")).kvs}
        assert len(old_endpoints) == 2, old_endpoints  # one record per instance: echo's, counter's
        before = (await client.range("endpoints/")).revision
    assert kv_replicas(node.data_dir), "no KV replica found for the node's data dir"
    assert slice_hosts(node.data_dir)

    node.kill()

    async def nothing_left() -> bool:
        return not slice_hosts(node.data_dir) and not kv_replicas(node.data_dir)

    await wait_until(nothing_left, timeout=10, what="the node's slice hosts and KV replica to die with it")

    node.start()
    async with kv_client(node) as client:
        # The records still say ACTIVE from before the kill: wait for ACTIVE written by the new node.
        numbers = {
            c: await wait_for_active_instance(client, node.node_id, c, 60, since=before) for c in numbers
        }
        hosts = {c: live_host(node, c, n) for c, n in numbers.items()}
        assert not {h.pid for h in hosts.values()} & old_pids, "the old hosts survived the node"
        assert await echo_answers(node) == hosts[ECHO].pid
        assert (await invoke(node.ingress, "org.aether:counter", "increment")).json() == 1
        assert state_file.read_text() == "1", "the counter was not started again"

        # The restarted node withdrew what its previous life published: every old endpoint key was
        # deleted before anything was published again, and what is there now is the new registration's.
        registration = await client.get(f"nodes/{node.node_id}")
        assert registration is not None
        now = await client.range("endpoints/")
        assert now.kvs, "no endpoints after the restart"
        latest = max(e.mod_revision for e in now.kvs)

        def caught_up(events: list[Event]) -> bool:
            return bool(events) and events[-1].revision >= latest

        events = await collect_events(client, "endpoints/", before + 1, until=caught_up, timeout=10)
        for key in old_endpoints:
            kinds = [str(e.kind) for e in events if e.kv.key == key]
            assert kinds and kinds[0] == "delete", f"{key}: {kinds} ({describe_events(events)})"
        for endpoint in now.kvs:
            assert endpoint.create_revision > before, f"{endpoint.key} is a stale one"
            assert endpoint.lease == registration.lease, f"{endpoint.key} is not bound to the new lease"
            assert endpoint.lease not in {e.lease for e in old_endpoints.values()}


async def test_sigterm_during_start_up_stops_the_node(sample_index: Path, tmp_path: Path) -> None:
    """A node that cannot reach a KV quorum yet (its only peer is down) must still obey SIGTERM."""
    (absent_peer,) = free_ports(1)
    node = NodeProcess(
        tmp_path / "node", index=str(sample_index), extra_args=("--kv-peer", f"127.0.0.1:{absent_peer}")
    )
    with node_support.node_cleanup(node):
        node.spawn()

        async def replica_up() -> bool:
            return port_open(node.client_port) and bool(kv_replicas(node.data_dir))

        await wait_until(replica_up, timeout=30, what="the node's KV replica to listen")
        assert node.returncode() is None, node.log_tail()
        node.signal(signal.SIGTERM)
        code = await node.wait_exit(10)
        assert code is not None, f"the node ignored SIGTERM for 10 s while starting:\n{node.log_tail()}"

        async def replica_gone() -> bool:
            return not kv_replicas(node.data_dir)

        await wait_until(replica_gone, timeout=10, what="the KV replica to stop with the node")


@pytest.mark.long
async def test_a_replica_without_a_quorum_for_a_minute_ends_with_a_sentence(
    sample_index: Path, tmp_path: Path
) -> None:
    """A replica host started alone (the others not yet up): after the node's minute of waiting it ends
    with status 1 (so systemd starts it again) and one line naming the store's addresses, not a traceback
    of trio.TooSlowError in the journal."""
    (absent_peer,) = free_ports(1)
    node = NodeProcess(
        tmp_path / "node", index=str(sample_index), extra_args=("--kv-peer", f"127.0.0.1:{absent_peer}")
    )
    with node_support.node_cleanup(node):
        node.spawn()
        code = await node.wait_exit(120)
        log = node.log()
        assert code == 1, log[-3000:]
        assert (
            f"aether-node: error: the KV store (127.0.0.1:{node.client_port}) had no leader within 60 s"
            in log
        )
        assert "Traceback" not in log and "TooSlowError" not in log, log[-3000:]


# ---------------------------------------------------------------- SIGTERM: a graceful stop


@attrs.frozen
class SigtermRun:
    """What a test saw when it sent SIGTERM to a node running org.aether:counter."""

    exit_code: int | None  # None: still running at the deadline (then killed)
    seconds: float  # from SIGTERM to exit (or to the deadline)
    state_file_text: str
    endpoint_keys: tuple[str, ...]
    deleted: tuple[str, ...]  # keys deleted while the node stopped, as a watcher saw them
    log: str


SIGTERM_DEADLINE = 10.0


async def _sigterm_run(node: NodeProcess, state_file: Path) -> SigtermRun:
    async with kv_client(node) as client:
        counter_spec = {"artifact": COUNTER, "instances": 1, "config": {"state_file": str(state_file)}}
        await deploy(client, node, [counter_spec])
        assert (await invoke(node.ingress, "org.aether:counter", "increment")).json() == 1
        endpoints = tuple(e.key for e in (await client.range("endpoints/")).kvs)
        revision = (await client.range("nodes/")).revision
        deleted: list[str] = []

        async def watch_deletes(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            watch = client.watch("", revision + 1)
            task_status.started()
            async for batch in watch:
                deleted.extend(e.kv.key for e in batch if str(e.kind) == "delete")

        async with trio.open_nursery() as nursery:
            await nursery.start(watch_deletes)
            started = trio.current_time()
            node.signal(signal.SIGTERM)
            # Until the exit; past the deadline (plus a little, so that a slow stop is told apart from
            # one that never runs the stop hook) the node is killed. (Neither wait fails here: the
            # tests below judge what the run recorded, each its own promise.)
            with trio.move_on_after(SIGTERM_DEADLINE):
                while node.returncode() is None:
                    await trio.sleep(0.05)
            seconds = trio.current_time() - started
            # The replica sent what it had before it stopped: give the watcher a moment to take it in.
            expected = {*endpoints, f"nodes/{node.node_id}"}
            with trio.move_on_after(2.0):
                while not expected <= set(deleted):
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    code = node.returncode()
    node.kill()
    return SigtermRun(code, seconds, state_file.read_text(), endpoints, tuple(deleted), node.log_tail())


@pytest.fixture(scope="module")
def sigterm_run(sample_index: Path, tmp_path_factory: pytest.TempPathFactory) -> SigtermRun:
    """One node, one SIGTERM; the tests below each check one promise of a graceful stop."""
    root = tmp_path_factory.mktemp("sigterm")
    with started_node(root / "node", sample_index) as node:
        return trio.run(_sigterm_run, node, root / "counter.txt")


def test_sigterm_runs_the_stop_hooks(sigterm_run: SigtermRun) -> None:
    assert sigterm_run.state_file_text == "stopped", sigterm_run.log


def test_sigterm_exits_0_within_the_deadline(sigterm_run: SigtermRun) -> None:
    # the harness waits for the exit with SIGTERM_DEADLINE and kills the node after it: a late exit is not 0
    assert sigterm_run.exit_code == 0, (sigterm_run.exit_code, sigterm_run.seconds, sigterm_run.log)


def test_sigterm_restarts_no_service_of_the_node(sigterm_run: SigtermRun) -> None:
    """The stop ends the deployment manager on purpose: its supervisor must not take that for a failure
    (an ERROR in the journal at every stop and upgrade, `aether_node_service_restarts_total` counted, and
    the manager started again mid-stop, republishing the endpoints it had just withdrawn)."""
    assert "ended on its own" not in sigterm_run.log, sigterm_run.log
    assert "starting service" not in sigterm_run.log, sigterm_run.log
    # and the withdrawals after the stop go out alone, not into the batcher that is stopping with it
    assert "batcher stopped" not in sigterm_run.log, sigterm_run.log


def test_sigterm_withdraws_endpoints_and_the_registration(sigterm_run: SigtermRun) -> None:
    assert len(sigterm_run.endpoint_keys) == 1, sigterm_run.endpoint_keys  # the counter's one instance
    missing = {*sigterm_run.endpoint_keys, "nodes/n1"} - set(sigterm_run.deleted)
    assert not missing, f"not deleted before the KV replica stopped: {sorted(missing)}; {sigterm_run.log}"
