"""An instance over the memory its slice declares (`[slices.resources] memory_mib`) is ended and
restarted, with a real `aether-node` process, both ways a node holds the limit: where the host lets it
make memory cgroups (cgroup v1, as root), the kernel ends the instance at the limit (`hard`:
`runtime/_memory_cgroup.py`); otherwise, or with `--no-memory-cgroups`, the node looks at its PSS every
`CHECK_EVERY` s (`soft`: `runtime/_memory_limit.py`). One under it, or of a slice that declares none, is
left alone. The node is a client of a KV replica run beside it; the test writes the blueprint (for the
limit) and the command states as a cluster leader would (`node_support`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import node_support
import pytest
from node_support import (
    NodeProcess,
    activate,
    apply_blueprint,
    build_wheel,
    client_node,
    collect_events,
    host_of,
    invoke,
    slice_key,
    wait_for_state,
    write_command,
)

from aether_kv import Event, KVClient
from aether_node import Resources, SliceRecord, SliceState, decode_record
from support import memory_cgroups_here, wait_until, woken

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOG = "org.aether:hog"
HOG_1 = f"{HOG}:1.0.0"
HOG_MODULE = '''"""A slice whose entry `hold` keeps `payload` MiB more of memory, written (so resident); with
`at_load_mib` in its config it takes that much as it loads."""

from aether_slice import EntryPoint, hookimpl

HELD = []


@hookimpl
def aether_entry_points(context):
    HELD.append(bytearray(b"\\x01") * (context.config.get("at_load_mib", 0) << 20))

    def hold(payload):
        HELD.append(bytearray(b"\\x01") * (payload << 20))
        return sum(len(block) for block in HELD) >> 20

    return [EntryPoint(name="hold", function=hold, idempotent=False)]
'''
LIMIT_MIB = 64
CHECK_EVERY = 2.0  # s between two looks at an instance's memory (`runtime/_memory_limit.CHECK_EVERY`)
HEALTH_EVERY = 0.5  # s between two health checks of an idle instance, in this module's nodes


async def _left_alone(node: NodeProcess, kv: KVClient, pid: int) -> None:
    """The instance stays the same process, its record unchanged, for two looks at its memory and more:
    as many health checks answered as fit in them (the node's health-check task looks at the memory too,
    `HEALTH_EVERY` s apart here)."""
    key = slice_key(node.node_id, HOG_1, 0)
    before = await kv.get(key)
    checks = int(2 * CHECK_EVERY / HEALTH_EVERY) + 1
    await woken(pid, checks, timeout=30, what=f"{checks} health checks answered")
    after = await kv.get(key)
    assert before is not None and after is not None and after.mod_revision == before.mod_revision
    now = host_of(node.data_dir, HOG_1, 0)
    assert now is not None and now.pid == pid, (now, pid)


@pytest.fixture(scope="module")
def index(sample_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hog-index")
    index = node_support.copy_index(sample_index, root / "index")
    build_wheel(
        root / "hog", index, name="org.aether.hog", version="1.0.0", entry_point=HOG, source=HOG_MODULE
    )
    return index


@pytest.fixture(params=["soft", "hard"])
def limits(request: pytest.FixtureRequest) -> str:
    """How the node holds the limit: every 2 s (`soft`) or by the kernel (`hard`, where it can)."""
    if request.param == "hard" and not memory_cgroups_here():
        pytest.skip("this host lets no memory cgroup be made here (cgroup v1 as root): only the soft limit")
    return str(request.param)


@pytest.fixture
def node(index: Path, tmp_path: Path, limits: str) -> Iterator[NodeProcess]:
    extra = ("--no-memory-cgroups",) if limits == "soft" else ()
    health = f"[health]\ninterval = {HEALTH_EVERY}\n"
    with client_node(tmp_path, index, extra_args=extra, config_text=health) as started:
        yield started


def _records(events: list[Event]) -> list[SliceRecord]:
    return [decode_record(e.kv.key, e.kv.value, SliceRecord) for e in events if e.kv.value]


async def test_an_instance_over_its_slices_memory_is_killed_and_restarted(
    node: NodeProcess, kv: KVClient, limits: str
) -> None:
    await apply_blueprint(
        kv, "hog", [{"artifact": HOG_1, "instances": 1, "resources": Resources(memory_mib=LIMIT_MIB)}]
    )
    await activate(kv, node, HOG_1, 0)
    first = host_of(node.data_dir, HOG_1, 0)
    assert first is not None
    key = slice_key(node.node_id, HOG_1, 0)
    before = (await kv.get_with_revision(key)).revision

    held = await invoke(node.ingress, HOG, "hold", 16)  # under the limit: it stays
    assert (held.status_code, held.json()) == (200, 16), held.text
    await _left_alone(node, kv, first.pid)
    held = await invoke(node.ingress, HOG, "hold", LIMIT_MIB)  # 80 MiB held and more: over
    if limits == "soft":  # (it holds it until the next look)
        assert (held.status_code, held.json()) == (200, 16 + LIMIT_MIB), held.text
    else:  # the kernel ends it as it goes over: the call with it
        assert held.status_code == 503, held.text
        assert "the kernel ended it at the 64 MiB its slice declares" in held.json()["error"]["message"]

    def active_again(events: list[Event]) -> bool:
        return any(r.state.value == "ACTIVE" for r in _records(events)) and any(
            "memory:" in r.reason for r in _records(events)
        )

    events = await collect_events(kv, key, before + 1, until=active_again, timeout=60)
    reasons = [r.reason for r in _records(events) if "memory:" in r.reason]
    said = {
        "soft": f"MiB (PSS), over the {LIMIT_MIB} MiB its slice declares",
        "hard": f"the kernel ended it at the {LIMIT_MIB} MiB its slice declares",
    }
    assert f"{said[limits]} ([slices.resources] memory_mib)" in reasons[0], reasons
    await wait_until(
        lambda: (found := host_of(node.data_dir, HOG_1, 0)) is not None and found.pid != first.pid,
        timeout=30,
        what="a new process for the instance",
    )
    again = await invoke(node.ingress, HOG, "hold", 1)  # the new process starts from nothing held
    assert (again.status_code, again.json()) == (200, 1), again.text
    record = decode_record(key, (await kv.get(key)).value, SliceRecord)  # what `slice status` shows
    assert record.restarts == 1 and f"{said[limits]} ([slices.resources] memory_mib)" in record.last_exit, (
        record
    )
    assert node.returncode() is None, node.log_tail(40)


async def test_an_instance_of_a_slice_that_declares_no_memory_is_left_alone(
    node: NodeProcess, kv: KVClient
) -> None:
    await apply_blueprint(kv, "hog", [{"artifact": HOG_1, "instances": 1}])
    await activate(kv, node, HOG_1, 0)
    first = host_of(node.data_dir, HOG_1, 0)
    assert first is not None
    held = await invoke(node.ingress, HOG, "hold", 2 * LIMIT_MIB)
    assert (held.status_code, held.json()) == (200, 2 * LIMIT_MIB), held.text
    await _left_alone(node, kv, first.pid)
    # the same memory held under a limit is found within a check or two: declared now, it is
    await apply_blueprint(
        kv, "hog", [{"artifact": HOG_1, "instances": 1, "resources": Resources(memory_mib=LIMIT_MIB)}]
    )
    await wait_until(
        lambda: (found := host_of(node.data_dir, HOG_1, 0)) is None or found.pid != first.pid,
        timeout=30,
        what="the instance to be killed once its slice declares a limit it is over",
    )
    assert "memory:" in node.log_tail(200), node.log_tail(40)


async def test_a_new_limit_reaches_a_running_instance_the_kernel_holds(
    node: NodeProcess, kv: KVClient, limits: str
) -> None:
    if limits == "soft":
        pytest.skip("the soft limit reads the slice's settings at each look (the test above)")
    await apply_blueprint(
        kv, "hog", [{"artifact": HOG_1, "instances": 1, "resources": Resources(memory_mib=LIMIT_MIB)}]
    )
    await activate(kv, node, HOG_1, 0)
    first = host_of(node.data_dir, HOG_1, 0)
    assert first is not None
    held = await invoke(node.ingress, HOG, "hold", 48)
    assert (held.status_code, held.json()) == (200, 48), held.text
    # raised: what would have been over the old limit is not over the new one
    await apply_blueprint(
        kv, "hog", [{"artifact": HOG_1, "instances": 1, "resources": Resources(memory_mib=2 * LIMIT_MIB)}]
    )
    await wait_until(
        lambda: "its memory limit is now 128 MiB" in node.log_tail(200), timeout=30, what="the new limit"
    )
    held = await invoke(node.ingress, HOG, "hold", 32)
    assert (held.status_code, held.json()) == (200, 80), held.text
    # lowered under what it holds: the kernel cannot reclaim it, so the node ends it, saying why
    await apply_blueprint(
        kv, "hog", [{"artifact": HOG_1, "instances": 1, "resources": Resources(memory_mib=LIMIT_MIB // 2)}]
    )
    await wait_until(
        lambda: (found := host_of(node.data_dir, HOG_1, 0)) is None or found.pid != first.pid,
        timeout=30,
        what="the instance ended under a limit below what it holds",
    )
    assert "uses more than the 32 MiB its slice now declares" in node.log_tail(200), node.log_tail(40)


async def test_an_instance_the_kernel_ends_during_its_load_says_why(
    node: NodeProcess, kv: KVClient, limits: str
) -> None:
    """A limit too small for the instance to load in (it takes 8 MiB as it loads, under a limit of 4):
    the kernel ends it during LOAD, and its FAILED record says it was the memory limit, not only 'died
    during load (killed by SIGKILL)'."""
    if limits == "soft":
        pytest.skip("the soft limit looks at ACTIVE instances only")
    config = {"at_load_mib": 8}
    resources = Resources(memory_mib=4)
    await apply_blueprint(
        kv, "hog", [{"artifact": HOG_1, "instances": 1, "resources": resources, "config": config}]
    )
    key = slice_key(node.node_id, HOG_1, 0)
    await write_command(kv, key, SliceState.ACTIVATE, config)
    failed = await wait_for_state(kv, key, SliceState.FAILED, timeout=60)
    assert "died during load" in failed.reason, failed.reason
    assert "memory: the kernel ended it at the 4 MiB its slice declares" in failed.reason, failed.reason
