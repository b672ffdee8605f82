"""A real `aether-node` process runs sample slices from a real wheel index: the lifecycle driven through
the KV, calls through the HTTP ingress, per-slice virtualenvs, resolution failures, ingress errors, and
an index served over HTTP by pypiserver.

Most tests share one node (started once for this module); each test unloads what it created, so the
node is empty again when the next one starts. The nodes here are clients of a KV replica run beside them
(they are never the cluster's leader): the test writes the command states, as a leader would.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
    PINNED,
    NodeProcess,
    activate,
    build_wheel,
    client_node,
    copy_index,
    endpoint_keys,
    free_ports,
    host_of,
    invoke,
    invoke_raw,
    kv_client,
    port_open,
    read_record,
    slice_key,
    wait_for_deleted,
    wait_for_state,
    write_command,
)

from aether_kv import KVClient
from aether_node import EndpointRecord, SliceState, decode_record
from aether_node.routing import MAX_BODY
from support import wait_until, wait_until_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Fixtures shared by the node test modules (pytest finds them as module attributes).

NOENTRY = "org.aether:noentry:1.0.0"


# Distributions that are in the index but cannot be installed, or are no slice: (name, dependencies,
# declares its aether.slices entry point).
BROKEN_DISTRIBUTIONS = [
    ("org.aether.noentry", (), False),
    ("org.aether.missingdep", ("org-aether-nosuchdep",), True),
    ("org.aether.conflict", ("attrs==99.0",), True),
]


@pytest.fixture(scope="module")
def slice_index(sample_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the sample index plus the BROKEN_DISTRIBUTIONS (1.0.0) and a corrupt wheel of
    `org.aether.corrupt` 1.0.0 (not a zip file)."""
    root = tmp_path_factory.mktemp("test-index")
    index = copy_index(sample_index, root / "index")
    with ThreadPoolExecutor() as pool:
        builds = [
            pool.submit(
                build_wheel,
                root / name,
                index,
                name=name,
                version="1.0.0",
                dependencies=dependencies,
                entry_point=name.replace("org.aether.", "org.aether:") if declares else None,
            )
            for name, dependencies, declares in BROKEN_DISTRIBUTIONS
        ]
        for build in builds:
            build.result()
    (index / "org_aether_corrupt-1.0.0-py3-none-any.whl").write_bytes(b"this is not a zip file")
    return index


@pytest.fixture(scope="module")
def node(slice_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with client_node(tmp_path_factory.mktemp("slices-node"), slice_index) as started:
        yield started


async def test_echo_walks_the_whole_lifecycle(node: NodeProcess, kv: KVClient) -> None:
    key = slice_key(node.node_id, ECHO, 0)

    await write_command(kv, key, SliceState.LOAD, {})
    await wait_for_state(kv, key, SliceState.LOADED, timeout=60)
    host = host_of(node.data_dir, ECHO, 0)
    assert host is not None, "LOADED, but no slice host process runs for the instance"
    assert host.cwd.startswith(str(node.data_dir / "slices")), host
    assert await endpoint_keys(kv, ECHO) == [], "endpoints published before activation"

    await write_command(kv, key, SliceState.ACTIVATE)
    await wait_for_state(kv, key, SliceState.ACTIVE, timeout=30)
    endpoints = (await kv.range(f"endpoints/{ECHO}/")).kvs
    assert [e.key for e in endpoints] == [f"endpoints/{ECHO}/0"], "one record per instance"
    record = decode_record(endpoints[0].key, endpoints[0].value, EndpointRecord)
    assert (record.node_id, record.instance) == (node.node_id, 0)
    assert (record.entries, record.idempotent) == (("echo", "info"), ("echo", "info"))
    assert endpoints[0].lease != 0, "an endpoint must be bound to the node's lease"
    payload = {"hello": ["wörld", 1, 2.5, None, True], "nested": {"a": []}}
    response = await invoke(node.ingress, "org.aether:echo", "echo", payload)
    assert (response.status_code, response.json()) == (200, payload)
    info = (await invoke(node.ingress, "org.aether:echo", "info")).json()
    assert info == {"version": "1.0.0", "instance": 0, "pid": host.pid}, "the LOADED host was not reused"

    await write_command(kv, key, SliceState.DEACTIVATE)
    await wait_for_state(kv, key, SliceState.LOADED, timeout=30)
    assert await endpoint_keys(kv, ECHO) == [], "endpoints not withdrawn on deactivation"
    response = await invoke(node.ingress, "org.aether:echo", "echo", payload)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["kind"] == "no_endpoint"
    still = host_of(node.data_dir, ECHO, 0)
    assert still is not None and still.pid == host.pid, "deactivation must keep the process (LOADED)"

    await write_command(kv, key, SliceState.UNLOAD)
    await wait_for_deleted(kv, key, timeout=30)

    async def host_gone() -> bool:
        return host_of(node.data_dir, ECHO, 0) is None

    await wait_until(host_gone, timeout=10, what=f"the slice host {host.pid} to end after UNLOAD")


async def test_counter_holds_state_and_its_stop_hook_runs(
    node: NodeProcess, kv: KVClient, tmp_path: Path
) -> None:
    state_file = tmp_path / "counter-state.txt"
    key = slice_key(node.node_id, COUNTER, 0)
    await activate(kv, node, COUNTER, 0, {"state_file": str(state_file)})
    assert state_file.read_text() == "0", "aether_start did not run"

    for expected in (1, 2):
        response = await invoke(node.ingress, "org.aether:counter", "increment")
        assert (response.status_code, response.json()) == (200, expected)
    assert (await invoke(node.ingress, "org.aether:counter", "count")).json() == 2
    assert state_file.read_text() == "2"

    await write_command(kv, key, SliceState.DEACTIVATE)
    await wait_for_state(kv, key, SliceState.LOADED, timeout=30)
    assert state_file.read_text() == "stopped", "aether_stop did not run on DEACTIVATE"


async def test_instances_of_two_configs_are_forked_from_templates_that_imported_the_slice_with_each(
    node: NodeProcess, kv: KVClient
) -> None:
    configs = {0: {"tag": "a"}, 1: {"tag": "b"}}
    for number, config in configs.items():
        await activate(kv, node, FAULTY, number, config)  # (one template for both: the second fails)
    seen: dict[int, dict[str, Any]] = {}

    async def both_seen() -> bool:
        response = await invoke(node.ingress, "org.aether:faulty", "imported")
        assert response.status_code == 200, response.text
        answer = response.json()
        seen[answer["instance"]] = answer
        return len(seen) == 2

    await wait_until(both_seen, timeout=30, what="an answer from each faulty instance")
    for number, answer in seen.items():
        assert answer["config"] == answer["instance_config"] == configs[number]  # imported with its own
        assert answer["pid"] != answer["pid_now"]  # by its template, once
        assert answer["metadata_read"] is False  # from the reference the node read: no metadata scan
    assert seen[0]["pid"] != seen[1]["pid"]


async def test_pinned_slice_sees_its_own_attrs(node: NodeProcess, kv: KVClient) -> None:
    import attrs as node_attrs

    assert node_attrs.__version__ != "23.2.0", "the test needs the node's attrs to differ from the slice's"
    await activate(kv, node, PINNED, 0)
    response = await invoke(node.ingress, "org.aether:pinned", "versions")
    assert (response.status_code, response.json()) == (200, {"attrs": "23.2.0"})


@pytest.mark.parametrize(
    ("coordinates", "kind"),
    [
        ("org.aether:nosuch:1.0.0", "not_found"),
        ("org.aether:echo:9.9.9", "version_not_found"),
        (NOENTRY, "entry_point_missing"),
    ],
)
async def test_resolution_failure_is_recorded_with_its_kind(
    node: NodeProcess, kv: KVClient, coordinates: str, kind: str
) -> None:
    key = slice_key(node.node_id, coordinates, 0)
    await write_command(kv, key, SliceState.ACTIVATE, {})
    record = await wait_for_state(kv, key, SliceState.FAILED, timeout=60)
    assert f"({kind})" in record.reason, record.reason
    assert host_of(node.data_dir, coordinates, 0) is None, "a failed resolution left a process behind"
    assert await endpoint_keys(kv, coordinates) == []
    if kind == "entry_point_missing":
        assert "org.aether:noentry" in record.reason and "aether.slices" in record.reason, record.reason
    if kind == "version_not_found":  # the node's index is a wheel directory: what it holds is said
        said = record.reason
        assert "org.aether:echo:9.9.9: version 9.9.9 of org-aether-echo is not in the index" in said, said
        assert said.endswith(" (it holds 1.0.0, 1.1.0)"), said


async def test_a_slice_spelled_in_another_case_than_its_entry_point_fails_as_missing_on_every_try(
    node: NodeProcess, kv: KVClient
) -> None:
    """A distribution's name is case-insensitive (one virtualenv for both spellings), an entry point's is
    not: once `org.aether:echo` is installed, `ORG.AETHER:ECHO` was loaded from its virtualenv and failed
    in the template with another kind and message than on a node that installed it first."""
    await activate(kv, node, ECHO, 0)
    shouted = ECHO.upper()
    key = slice_key(node.node_id, shouted, 0)
    await write_command(kv, key, SliceState.ACTIVATE, {})
    record = await wait_for_state(kv, key, SliceState.FAILED, timeout=60)
    assert "(entry_point_missing)" in record.reason, record.reason
    assert "it declares: 'org.aether:echo'" in record.reason, record.reason


@pytest.mark.parametrize(
    ("coordinates", "cause"),
    [
        ("org.aether:missingdep:1.0.0", "org-aether-nosuchdep"),
        ("org.aether:conflict:1.0.0", "attrs==99.0"),
        ("org.aether:corrupt:1.0.0", "invalid"),
    ],
)
async def test_uninstallable_slice_is_not_reported_as_missing(
    node: NodeProcess, kv: KVClient, coordinates: str, cause: str
) -> None:
    """The distribution is in the index: the reason must not say it is not, and must name the cause."""
    key = slice_key(node.node_id, coordinates, 0)
    await write_command(kv, key, SliceState.ACTIVATE, {})
    record = await wait_for_state(kv, key, SliceState.FAILED, timeout=60)
    assert "(not_found)" not in record.reason, record.reason
    assert cause in record.reason, record.reason
    # a dependency the index lacks: the way to put it there is named (the others are no missing one)
    hint = "the slice's dependencies there too, `aether slice publish WHEEL --index ... --with-dependencies`"
    assert (hint in record.reason) == (coordinates == "org.aether:missingdep:1.0.0"), record.reason


async def test_ingress_errors(node: NodeProcess, kv: KVClient) -> None:
    await activate(kv, node, ECHO, 1)

    bad_json = await invoke_raw(node.ingress, "org.aether:echo", "echo", b'{"unterminated": ')
    assert bad_json.status_code == 400, bad_json.text
    assert bad_json.json()["error"]["kind"] == "bad_request"
    assert "JSON" in bad_json.json()["error"]["message"]

    unknown = await invoke(node.ingress, "org.aether:nosuch", "echo", {})
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["error"]["kind"] == "no_endpoint"
    assert "org.aether:nosuch" in unknown.json()["error"]["message"]

    no_entry = await invoke(node.ingress, "org.aether:echo", "shout", {})
    assert no_entry.status_code == 404, no_entry.text
    error = no_entry.json()["error"]
    assert error["kind"] == "no_endpoint"
    assert "shout" in error["message"] and "echo" in error["message"] and "info" in error["message"]

    # A payload over the slice host protocol's frame limit: refused as the caller's (it used to be
    # sent, and the instance, reading a frame over its limit, ended), and the instance is left alone.
    # The body is under the ingress's limit (6 MB); its numbers grow as the frame writes them again
    # ("1e9" -> "1000000000.0": ~19.5 MB).
    growing = ("[" + ",".join(["1e9"] * 1_500_000) + "]").encode()
    too_large = await invoke_raw(node.ingress, "org.aether:echo", "echo", growing)
    assert too_large.status_code == 400, too_large.text
    assert too_large.json()["error"]["kind"] == "bad_request"
    assert "over the limit of 16777216" in too_large.json()["error"]["message"]
    # a body over the ingress's own limit is refused before it is held whole
    over_body = await invoke(node.ingress, "org.aether:echo", "echo", "x" * (16 * 1024 * 1024))
    assert over_body.status_code == 400, over_body.text
    assert over_body.json()["error"]["message"] == f"the request body is over {MAX_BODY} bytes"

    # The failed calls changed nothing: the instance still serves.
    ok = await invoke(node.ingress, "org.aether:echo", "echo", [1])
    assert (ok.status_code, ok.json()) == (200, [1])
    record = await read_record(kv, slice_key(node.node_id, ECHO, 1))
    assert record is not None and record.state is SliceState.ACTIVE


async def test_large_and_concurrent_calls_each_get_their_own_answer(node: NodeProcess, kv: KVClient) -> None:
    """Frames far larger than a socket buffer (written in parts), many calls in flight on one instance's
    connection at once: every caller gets exactly its own payload back, and small calls still pass."""
    await activate(kv, node, ECHO, 1)
    answers: dict[int, tuple[int, Any]] = {}

    async def call(number: int, size: int) -> None:
        payload = {"n": number, "text": f"{number}é" * size}
        response = await invoke(node.ingress, "org.aether:echo", "echo", payload)
        answers[number] = (response.status_code, response.json() == payload)

    async with trio.open_nursery() as nursery:
        for number in range(24):
            nursery.start_soon(call, number, 600_000 if number % 3 == 0 else 10)
    assert answers == {number: (200, True) for number in range(24)}


# ---------------------------------------------------------------- nodes with other indexes


@pytest.mark.long
async def test_unreachable_index_is_recorded_as_such(sample_index: Path, tmp_path: Path) -> None:
    (closed_port,) = free_ports(1)
    unreachable = f"http://127.0.0.1:{closed_port}/simple/"
    with client_node(tmp_path, unreachable) as node:
        async with kv_client(node) as kv:
            key = slice_key(node.node_id, ECHO, 0)
            await write_command(kv, key, SliceState.ACTIVATE, {})
            record = await wait_for_state(kv, key, SliceState.FAILED, timeout=90)
            assert "(index_unreachable)" in record.reason, record.reason
            assert f"127.0.0.1:{closed_port}" in record.reason, record.reason


@attrs.frozen
class IndexServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def index_server(sample_index: Path, tmp_path: Path) -> Iterator[IndexServer]:
    """pypiserver serving the sample index directory as a PEP 503 simple index on loopback."""
    (port,) = free_ports(1)
    log = tmp_path / "pypiserver.log"
    script = Path(sys.executable).parent / "pypi-server"
    index = str(sample_index)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            # --disable-fallback: a package it lacks is a 404, not a redirect to the public index
            [str(script), "run", "-v", "--disable-fallback", "-p", str(port), "-i", "127.0.0.1", index],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=node_support.die_with_parent,
        )
    try:

        def listening() -> bool:
            if process.poll() is not None:
                pytest.fail(f"pypiserver exited with {process.returncode}:\n{log.read_text()}")
            return port_open(port)

        wait_until_sync(
            listening,
            timeout=15,
            interval=0.05,
            what=f"pypiserver listening on {port}",
            describe=lambda _: f"its log:\n{log.read_text()}",
        )
        yield IndexServer(f"http://127.0.0.1:{port}/simple/", process, log)
    finally:
        process.kill()
        process.wait()


async def test_slice_resolves_from_an_http_index_server(index_server: IndexServer, tmp_path: Path) -> None:
    with client_node(tmp_path, index_server.url) as node:
        async with kv_client(node) as kv:
            await activate(kv, node, ECHO, 0)
            response = await invoke(node.ingress, "org.aether:echo", "echo", {"via": "pypiserver"})
            assert (response.status_code, response.json()) == (200, {"via": "pypiserver"})

            missing = slice_key(node.node_id, "org.aether:nosuch:1.0.0", 0)
            await write_command(kv, missing, SliceState.ACTIVATE, {})
            record = await wait_for_state(kv, missing, SliceState.FAILED, timeout=60)
            assert "(not_found)" in record.reason, record.reason
    assert "/simple/org-aether-echo/" in index_server.log.read_text(), "the node did not use the server"
