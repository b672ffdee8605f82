"""The MCP service against a real 3-node cluster, driven by the official `mcp.Client` over Streamable HTTP
and over stdio: tools and resources listed, a blueprint applied and followed to ACTIVE, a slice invoked,
a subscription notified, writes refused in read-only mode, one agent at a time (and the lease going
when the agent disconnects, goes quiet, or its service dies), and the HTTP endpoint's token.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cli_support import ECHO, GREETER, CliCluster, LineReader, cli_cluster, cli_env
from mcp import Client, MCPDeprecationWarning
from mcp.shared.subscriptions import ResourceUpdated
from mcp_support import (
    aether_mcp_command,
    blueprint_toml,
    http_client,
    mcp_service,
    stdio_client,
    stdio_server,
    structured,
    text,
)

from aether_mcp import TOOLS
from aether_mcp._errors import ClusterError
from aether_mcp._gateway import ClusterGateway
from aether_mcp._notifications import EventPump
from support import wait_until

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, sample_index: Path) -> Iterator[CliCluster]:
    with cli_cluster(tmp_path_factory.mktemp("mcp-cluster"), sample_index) as running:
        yield running


async def converge(client: Client, name: str, *, timeout: float = 90.0) -> dict[str, Any]:
    """Follow a blueprint to ACTIVE through the `blueprint_status` tool, as an agent would."""

    async def status() -> dict[str, Any]:
        return structured(await client.call_tool("blueprint_status", {"name": name}))

    return await wait_until(
        status,
        until=lambda last: all(s["active"] == s["desired"] for s in last["slices"]),
        timeout=timeout,
        interval=0.25,
        what=f"blueprint {name} to converge",
    )


async def apply(client: Client, name: str, *slices: tuple[str, int]) -> dict[str, Any]:
    """Apply a blueprint through the tool; its answer."""
    return structured(await client.call_tool("blueprint_apply", {"toml": blueprint_toml(name, *slices)}))


async def delete_quietly(client: Client, name: str) -> None:
    await client.call_tool("blueprint_delete", {"name": name})


async def call_until_admitted(client: Client, *, timeout: float) -> Any:
    """Call `cluster_status` until the service lets this agent in; the last refusal on timeout."""
    result = await wait_until(
        lambda: client.call_tool("cluster_status", {}),
        until=lambda result: not result.is_error,
        timeout=timeout,
        interval=0.2,
        what="the service to let this agent in",
        describe=text,
    )
    return structured(result)


# ---------------------------------------------------------------- what an agent sees


async def test_tools_and_resources_are_listed(cluster: CliCluster) -> None:
    with mcp_service(cluster.urls) as service:
        async with http_client(service.url, "lister") as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == {spec.name for spec in TOOLS}
            for spec in TOOLS:
                annotations = tools[spec.name].annotations
                assert annotations is not None and annotations.read_only_hint is (not spec.mutating), (
                    spec.name
                )
            assert tools["blueprint_delete"].annotations.destructive_hint is True
            assert tools["cluster_status"].annotations.idempotent_hint is True
            schema = tools["blueprint_apply"].input_schema
            assert schema["required"] == ["toml"] and schema["properties"]["toml"]["type"] == "string"
            assert tools["cluster_events"].input_schema["properties"]["limit"]["maximum"] == 1000

            resources = {str(r.uri) for r in (await client.list_resources()).resources}
            assert "aether://cluster/status" in resources
            templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
            assert templates == {"aether://blueprints/{name}", "aether://slices/{artifact}"}
            status = json.loads((await client.read_resource("aether://cluster/status")).contents[0].text)
            assert status["has_quorum"] is True and len(status["nodes"]) == 3


async def test_an_agent_applies_follows_and_invokes_over_http(cluster: CliCluster) -> None:
    with mcp_service(cluster.urls) as service:
        async with http_client(service.url, "deployer") as client:
            applied = structured(
                await client.call_tool("blueprint_apply", {"toml": blueprint_toml("mcp-http", (ECHO, 2))})
            )
            assert applied == {
                "name": "mcp-http",
                "created": True,
                "revision": applied["revision"],
                "slices": 1,
                "blueprint_revision": 1,
                "change": "applied",
                "notes": [],
                "unchanged": False,
            }
            try:
                status = await converge(client, "mcp-http")
                assert status["slices"][0]["artifact"] == ECHO
                assert sorted(i["state"] for i in status["slices"][0]["instances"]) == ["ACTIVE", "ACTIVE"]

                answer = await client.call_tool(
                    "slice_invoke", {"artifact": "org.aether:echo", "entry": "echo", "data": {"from": "mcp"}}
                )
                assert not answer.is_error and json.loads(text(answer)) == {"from": "mcp"}

                resources = {str(r.uri) for r in (await client.list_resources()).resources}
                assert {"aether://blueprints/mcp-http", "aether://slices/org.aether:echo"} <= resources
                read = await client.read_resource("aether://blueprints/mcp-http")
                content = json.loads(read.contents[0].text)
                assert content["blueprint"]["name"] == "mcp-http"
                assert content["status"]["slices"][0]["active"] == 2
            finally:
                await delete_quietly(client, "mcp-http")
            gone = await client.call_tool("blueprint_get", {"name": "mcp-http"})
            assert gone.is_error and text(gone) == "no blueprint named 'mcp-http'"


async def test_apply_and_drain_with_wait_report_progress_then_the_state(cluster: CliCluster) -> None:
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    with mcp_service(cluster.urls) as service:
        async with http_client(service.url, "waiter") as client:
            toml = blueprint_toml("mcp-wait", (GREETER, 1))
            node = None
            try:
                result = await client.call_tool(
                    "blueprint_apply",
                    {"toml": toml, "wait": True, "timeout": 90},
                    progress_callback=on_progress,
                )
                status = structured(result)
                assert status["name"] == "mcp-wait" and status["slices"][0]["active"] == 1
                assert progress and progress[-1] == (1, 1), progress

                # a drain followed the same way: its instance moves, then the node is DRAINED
                node = status["slices"][0]["instances"][0]["node_id"]
                progress.clear()
                drain = {"node": node, "wait": True, "timeout": 90}
                drained = structured(
                    await client.call_tool("node_drain", drain, progress_callback=on_progress)
                )
                assert drained["node_id"] == node and drained["state"] == "DRAINED", drained
                assert progress and progress[-1] == (1, 1), progress
            finally:
                if node:
                    await client.call_tool("node_uncordon", {"node": node})
                await delete_quietly(client, "mcp-wait")


async def test_bad_input_is_a_tool_error_that_changes_nothing(cluster: CliCluster) -> None:
    with mcp_service(cluster.urls) as service:
        async with http_client(service.url, "careless") as client:
            before = structured(await client.call_tool("blueprint_list", {}))
            bad = await client.call_tool(
                "blueprint_apply", {"toml": 'name = "x"\n[[slices]]\ninstances = -3\n'}
            )
            assert bad.is_error and text(bad).startswith("blueprint.toml:"), text(bad)
            assert structured(await client.call_tool("blueprint_list", {})) == before
            wrong = await client.call_tool("cluster_events", {"limit": 0})
            # (one sentence, as the CLI's: not pydantic's report with its model's name and a URL)
            said = "cluster_events: limit: must be greater than or equal to 1, got 0"
            assert wrong.is_error and text(wrong) == said, text(wrong)
            wrong = await client.call_tool("slice_invoke", {"artifact": "org.aether:echo", "timeout": 5000})
            assert text(wrong) == (
                "slice_invoke: entry: Field required;"
                " slice_invoke: timeout: must be less than or equal to 3600, got 5000"
            ), text(wrong)
            unknown = await client.call_tool("slice_status", {"artifact": "not-coordinates"})
            assert unknown.is_error and "not-coordinates" in text(unknown)
            # numbers and yes/no are taken as JSON's own (the CLI takes digits alone), and an argument the
            # tool does not take is refused: none of these changes anything (pydantic took `true` as 1 and
            # "2" as 2, and dropped `forse` unseen)
            for tool, arguments, said in [
                (
                    "blueprint_rollback",
                    {"name": "x", "to": True},
                    "blueprint_rollback: to: must be a valid integer",
                ),
                (
                    "slice_scale",
                    {"artifact": "org.aether:echo", "instances": "2"},
                    "slice_scale: instances: must be a valid integer",
                ),
                ("cluster_events", {"limit": 2.0}, "cluster_events: limit: must be a valid integer"),
                ("node_stop", {"node": "node-9", "force": "no"}, "node_stop: force: must be a valid boolean"),
                (
                    "slice_invoke",
                    {"artifact": "x:y", "entry": "e", "timeout": True},
                    "slice_invoke: timeout: must be a valid number",
                ),
                (
                    "node_stop",
                    {"node": "node-9", "forse": True},
                    "node_stop: forse: unknown argument (did you mean 'force'? expected: force, node)",
                ),
            ]:
                refused = await client.call_tool(tool, arguments)
                assert refused.is_error and text(refused).startswith(said), (tool, text(refused))
            assert structured(await client.call_tool("blueprint_list", {})) == before
            # a whole number where a number is asked is one: the call goes on to the cluster
            whole = await client.call_tool(
                "slice_invoke", {"artifact": "org.aether:none", "entry": "e", "timeout": 5}
            )
            assert whole.is_error and "timeout" not in text(whole) and "org.aether:none" in text(whole), text(
                whole
            )


# ---------------------------------------------------------------- notifications


async def _notified_of(client: Client, uri: str, apply: Any) -> None:
    async with client.listen(resource_subscriptions=[uri]) as subscription:
        assert subscription.honored.resource_subscriptions == [uri]
        await apply()
        with trio.fail_after(30):
            async for event in subscription:
                if isinstance(event, ResourceUpdated) and event.uri == uri:
                    return


async def test_a_subscriber_is_notified_when_a_blueprint_changes_over_http(cluster: CliCluster) -> None:
    uri = "aether://blueprints/mcp-sub"
    with mcp_service(cluster.urls) as service:
        async with http_client(service.url, "subscriber") as client:
            try:
                await _notified_of(client, uri, lambda: apply(client, "mcp-sub", (ECHO, 1)))
                content = json.loads((await client.read_resource(uri)).contents[0].text)
                assert content["blueprint"]["slices"][0]["artifact"] == ECHO
            finally:
                await delete_quietly(client, "mcp-sub")


async def test_a_subscriber_is_notified_over_stdio(cluster: CliCluster) -> None:
    uri = "aether://cluster/status"
    async with stdio_client(stdio_server(cluster.urls), "stdio-agent") as client:
        try:
            await _notified_of(client, uri, lambda: apply(client, "mcp-stdio", (ECHO, 1)))
            await converge(client, "mcp-stdio")
            answer = await client.call_tool(
                "slice_invoke", {"artifact": "org.aether:echo", "entry": "echo", "data": 7}
            )
            assert json.loads(text(answer)) == 7
            # every result keeps its shape: one JSON text (a list came as a block per item, null and []
            # both as nothing, "42" as 42), and structured as {"result": ...}
            for value in ([1, 2], [], None, "42", {"a": [None]}):
                answer = await client.call_tool(
                    "slice_invoke", {"artifact": "org.aether:echo", "entry": "echo", "data": value}
                )
                assert len(answer.content) == 1 and json.loads(text(answer)) == value, answer
                assert answer.structured_content == {"result": value}, answer
        finally:
            await delete_quietly(client, "mcp-stdio")


async def test_an_agent_of_the_older_protocol_subscribes_per_resource(cluster: CliCluster) -> None:
    """Agents on protocol versions before 2026-07-28 use resources/subscribe and a session; the session's
    end frees the agent lease at once."""
    uri = "aether://blueprints/mcp-legacy"
    seen: list[str] = []

    async def on_message(message: Any) -> None:
        seen.append(str(getattr(getattr(message, "params", None), "uri", "")))

    with mcp_service(cluster.urls) as service:
        client = http_client(service.url, "older", mode="legacy", message_handler=on_message)
        async with client:
            assert client.protocol_version < "2026-07-28"
            assert client.server_capabilities.resources.subscribe is True
            with pytest.warns(MCPDeprecationWarning):
                await client.subscribe_resource(uri)
            toml = blueprint_toml("mcp-legacy", (ECHO, 1))
            try:
                assert not (await client.call_tool("blueprint_apply", {"toml": toml})).is_error
                await wait_until(lambda: uri in seen, timeout=30, what=f"an update of {uri}")
            finally:
                await delete_quietly(client, "mcp-legacy")
        async with stdio_client(stdio_server(cluster.urls), "next") as following:
            structured(await following.call_tool("cluster_status", {}))  # the ended session let go


async def test_the_event_pump_outlives_a_notification_that_fails(
    cluster: CliCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A notification the subscription bus could not take (or a bug on the way) is logged and the pump
    starts over, everything said changed: it ended the pump, inside a task group whose error no `except`
    caught, and with it the whole MCP service (the pump runs in the service's nursery). The bus refuses
    three times in a row here: the traceback is logged once for the spell, not once a round."""
    gateway = ClusterGateway(cluster.urls.split(","), api_key=None)
    published: list[Any] = []
    failed: list[Any] = []

    async def publish(event: Any) -> None:
        if len(failed) < 3:
            failed.append(event)
            raise RuntimeError("the bus could not take it")
        published.append(event)

    pump = EventPump(gateway, publish, retry=0.1)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(pump.run)
                await gateway.call(lambda c: c.apply_blueprint(blueprint_toml("mcp-pump", (ECHO, 1))))
                await wait_until(lambda: failed, timeout=30, what="the first notification, refused")
                # started over: it said everything may have changed, from the revision it read then
                # (a change made before that is in that revision, and is not delivered as an event)
                await wait_until(lambda: published, timeout=30, what="the pump started over")
                before = pump.delivered
                await gateway.call(lambda c: c.apply_blueprint(blueprint_toml("mcp-pump", (ECHO, 2))))
                await wait_until(lambda: pump.delivered > before, timeout=30, what="a later change delivered")
                nursery.cancel_scope.cancel()
    finally:
        with contextlib.suppress(ClusterError):
            await gateway.call(lambda c: c.delete_blueprint("mcp-pump"))
    updated = [event for event in published if getattr(event, "uri", "") == "aether://blueprints/mcp-pump"]
    assert updated, f"no update of the blueprint after the failure: {published}"
    tracebacks = [r for r in caplog.records if "unexpected error; starting over" in r.getMessage()]
    assert len(tracebacks) == 1 and tracebacks[0].exc_info, caplog.text
    again = [r.getMessage() for r in caplog.records if "the bus could not take it')" in r.getMessage()]
    assert len(again) == 3, caplog.text  # each round's one line, with its wait


# ---------------------------------------------------------------- read-only


async def test_read_only_refuses_every_write(cluster: CliCluster) -> None:
    with mcp_service(cluster.urls, "--read-only") as service:
        async with http_client(service.url, "reader") as client:
            writes = {
                "blueprint_apply": {"toml": blueprint_toml("mcp-ro", (ECHO, 1))},
                "blueprint_delete": {"name": "mcp-ro"},
                "slice_invoke": {"artifact": "org.aether:echo", "entry": "echo", "data": 1},
            }
            for name, arguments in writes.items():
                refused = await client.call_tool(name, arguments)
                assert refused.is_error, name
                assert (
                    text(refused)
                    == f"{name} changes the cluster, and this MCP service runs with --read-only: refused"
                )
            listed = structured(await client.call_tool("blueprint_list", {}))
            assert "mcp-ro" not in {b["name"] for b in listed}
            assert structured(await client.call_tool("cluster_status", {}))["has_quorum"] is True


async def test_over_stdio_the_same_tools_and_resources_and_read_only_refuses(cluster: CliCluster) -> None:
    """Read-only, the tools that change the cluster are not listed (an agent sees what it may use) and
    one called anyway is refused, saying why."""
    async with stdio_client(stdio_server(cluster.urls, "--read-only"), "stdio-reader") as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
        assert listed == {spec.name for spec in TOOLS if not spec.mutating}
        assert "cluster_status" in listed and "blueprint_apply" not in listed
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert "aether://cluster/status" in resources
        refused = await client.call_tool("blueprint_apply", {"toml": blueprint_toml("mcp-ro2", (ECHO, 1))})
        assert refused.is_error and "--read-only: refused" in text(refused)
        assert "mcp-ro2" not in {b["name"] for b in structured(await client.call_tool("blueprint_list", {}))}


# ---------------------------------------------------------------- one agent at a time


async def test_a_second_agent_is_refused_and_told_who_holds_the_cluster(cluster: CliCluster) -> None:
    with mcp_service(cluster.urls) as first:
        async with http_client(first.url, "alpha") as alpha, http_client(first.url, "beta") as beta:
            structured(await alpha.call_tool("cluster_status", {}))
            refused = await beta.call_tool("cluster_status", {})
            assert refused.is_error
            assert text(refused).startswith(
                "another agent is operating this cluster: alpha 1.0 from 127.0.0.1"
            )
            async with stdio_client(stdio_server(cluster.urls), "gamma") as gamma:
                elsewhere = await gamma.call_tool("blueprint_list", {})
                assert elsewhere.is_error
                assert "alpha 1.0 from 127.0.0.1 via aether-mcp (http on" in text(elsewhere), text(elsewhere)
                structured(await alpha.call_tool("cluster_nodes", {}))  # the holder goes on
                # the holder's service stops: the lease is given back at once, and gamma gets in
                first.process.terminate()
                first.process.wait(timeout=10)
                await call_until_admitted(gamma, timeout=10)


@pytest.mark.long
async def test_the_lease_goes_when_the_agent_disconnects(cluster: CliCluster) -> None:
    server = stdio_server(cluster.urls)
    async with stdio_client(server, "first") as first:
        structured(await first.call_tool("cluster_status", {}))
        async with stdio_client(server, "second") as second:
            refused = await second.call_tool("cluster_status", {})
            assert refused.is_error and "first 1.0 over stdio" in text(refused)
    async with stdio_client(server, "third") as third:  # first hung up: the lease went with it
        structured(await third.call_tool("cluster_status", {}))


async def test_the_lease_goes_when_the_agent_goes_quiet(cluster: CliCluster) -> None:
    with mcp_service(cluster.urls, "--agent-idle-timeout", "1") as service:
        async with http_client(service.url, "dozer") as dozer, http_client(service.url, "waker") as waker:
            structured(await dozer.call_tool("cluster_status", {}))
            await call_until_admitted(waker, timeout=20)
            refused = await dozer.call_tool("cluster_status", {})
            assert refused.is_error and "waker 1.0" in text(refused)


@pytest.mark.long
async def test_the_lease_goes_when_the_service_dies(cluster: CliCluster) -> None:
    with mcp_service(cluster.urls, "--lease-ttl", "2") as doomed:
        async with http_client(doomed.url, "doomed") as agent:
            structured(await agent.call_tool("cluster_status", {}))
        with mcp_service(cluster.urls) as survivor:
            async with http_client(survivor.url, "survivor") as other:
                refused = await other.call_tool("cluster_status", {})
                assert refused.is_error and "doomed 1.0" in text(refused)
                doomed.kill()  # SIGKILL: nothing is given back; the cluster drops the lease after its ttl
                await call_until_admitted(other, timeout=30)


# ---------------------------------------------------------------- the HTTP endpoint


async def test_the_http_endpoint_needs_its_token_when_one_is_set(cluster: CliCluster) -> None:
    token = "mcp-token-0123456789abcdef"
    with mcp_service(cluster.urls, "--token", token) as service:
        denied = httpx.post(service.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=10)
        assert denied.status_code == 401
        assert "Authorization: Bearer TOKEN" in denied.json()["error"]["message"]
        for wrong in (f"Basic {token}", f"Bearer {token}x", "Bearer", token):
            answer = httpx.post(
                service.url,
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={"Authorization": wrong},
                timeout=10,
            )
            assert answer.status_code == 401, wrong
        # the scheme's case is the client's choice (RFC 9110): "bearer" was refused
        async with http_client(service.url, "bearer", headers={"Authorization": f"bearer {token}"}) as client:
            assert structured(await client.call_tool("cluster_status", {}))["has_quorum"] is True


def refused_at_start(*args: str) -> str:
    """`aether-mcp ARGS` must exit 2 at once; its error output."""
    result = subprocess.run(
        [*aether_mcp_command(), *args], capture_output=True, text=True, timeout=60, env=cli_env(), check=False
    )
    assert result.returncode == 2, result
    return result.stderr


def test_listening_beyond_loopback_needs_a_token() -> None:
    listen = ("--transport", "http", "--listen", "0.0.0.0:0")
    stderr = refused_at_start("--cluster", "http://127.0.0.1:9", *listen)
    assert "listening beyond loopback needs a bearer token: pass --token" in stderr


def test_an_unusable_cluster_url_is_refused_at_start() -> None:
    stderr = refused_at_start("--cluster", "ftp://example")
    assert "--cluster 'ftp://example': expected an http:// or https:// URL" in stderr


def test_a_stdio_line_that_is_no_message_is_answered_with_an_error(cluster: CliCluster) -> None:
    """JSON-RPC 2.0 answers a line it cannot read with an error of id null: the SDK dropped it unseen, and
    a client waiting for its answer waited for ever. The service reads on after it."""
    process = subprocess.Popen(
        [*aether_mcp_command(), "--cluster", cluster.urls],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cli_env(),
    )
    try:
        assert process.stdin is not None
        answers = LineReader(process)

        def answer_to(line: str) -> dict[str, Any]:
            assert process.stdin is not None
            process.stdin.write(line + "\n")
            process.stdin.flush()
            return json.loads(answers.wait_for(lambda s: s.startswith("{"), timeout=30, what="an answer"))

        for line, code in [
            ("this is no JSON", -32700),
            ('{"jsonrpc": "2.0", "id": 1, "method": "ping"', -32700),  # cut short
            ('{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600),
            ('{"jsonrpc": "2.0", "method": 7}', -32600),
        ]:
            refused = answer_to(line)
            assert refused["id"] is None and refused["error"]["code"] == code, (line, refused)
            assert refused["error"]["data"], refused  # what the reader said of it
        hello = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1.0"},
            },
        }
        answered = answer_to(json.dumps(hello))
        assert answered["id"] == 7 and "serverInfo" in answered["result"], answered
    finally:
        process.kill()
        process.wait()
