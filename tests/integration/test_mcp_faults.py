"""The MCP service when the node it talks to dies: tools fail over to the next node of --cluster, and the
cluster event stream behind the notifications reconnects, so a subscriber keeps being told of changes."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from cli_support import ECHO, CliCluster, cli_cluster
from mcp.shared.subscriptions import ResourceUpdated
from mcp_support import blueprint_toml, http_client, mcp_service, structured, text

from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]


@pytest.fixture
def cluster(tmp_path: Path, sample_index: Path) -> Iterator[CliCluster]:
    with cli_cluster(tmp_path, sample_index) as running:
        yield running


async def test_a_dead_node_is_failed_over_and_notifications_go_on(cluster: CliCluster) -> None:
    with mcp_service(cluster.urls) as service:
        first = cluster.local.nodes[0].node_id  # the first URL of --cluster: where the service talks first
        async with http_client(service.url, "survivor") as client:
            uri = "aether://blueprints/mcp-fault"
            async with client.listen(resource_subscriptions=[uri, "aether://cluster/status"]) as subscription:
                structured(await client.call_tool("cluster_status", {}))
                cluster.local.kill(first, signal.SIGKILL)

                # the next call goes to another node; the cluster still has a quorum (2 of 3)
                await wait_until(
                    lambda: client.call_tool("cluster_status", {}),
                    until=lambda result: not result.is_error and structured(result)["has_quorum"],
                    timeout=60,
                    interval=0.25,
                    what="a quorum, through another node",
                )

                toml = blueprint_toml("mcp-fault", (ECHO, 1))
                applied = await client.call_tool("blueprint_apply", {"toml": toml})
                assert not applied.is_error, text(applied)
                with trio.fail_after(60):
                    async for event in subscription:
                        if isinstance(event, ResourceUpdated) and event.uri == uri:
                            break
            # and the blueprint lands on the nodes that live

            async def active() -> list[dict[str, Any]]:
                status = structured(await client.call_tool("blueprint_status", {"name": "mcp-fault"}))
                return [i for i in status["slices"][0]["instances"] if i["state"] == "ACTIVE"]

            found = await wait_until(active, timeout=90, interval=0.25, what="mcp-fault ACTIVE")
            assert first not in {i["node_id"] for i in found}, found
