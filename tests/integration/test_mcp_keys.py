"""The MCP service can do no more than its API key allows, and says so with the CLI's words; with no
cluster to reach, every tool says that too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_support import ECHO, CliCluster, cli_cluster
from mcp_support import blueprint_toml, http_client, mcp_service, structured, text

pytestmark = [pytest.mark.integration]


VIEWER = "viewer-key-0123456789abcdef"
OPERATOR = "operator-key-0123456789abcdef"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, sample_index: Path) -> Iterator[CliCluster]:
    keys = f"viewer:{VIEWER},operator:{OPERATOR}"
    directory = tmp_path_factory.mktemp("mcp-keys")
    with cli_cluster(directory, sample_index, dev_mode=False, node_env={"AETHER_API_KEYS": keys}) as running:
        yield running


@pytest.mark.long
async def test_a_viewer_key_reads_and_is_refused_writes_in_the_clis_words(secured: CliCluster) -> None:
    with mcp_service(secured.urls, "--api-key", VIEWER) as service:
        async with http_client(service.url, "viewer") as client:
            assert structured(await client.call_tool("cluster_status", {}))["has_quorum"] is True
            refused = await client.call_tool("blueprint_apply", {"toml": blueprint_toml("k", (ECHO, 1))})
            assert refused.is_error
            cli = secured.aether("blueprint", "delete", "k", api_key=VIEWER)
            assert cli.returncode == 1
            assert text(refused) == cli.stderr.strip().removeprefix("aether: error: ")
            assert text(refused) == "this operation needs the operator role; your key has viewer"


async def test_an_operator_agent_cannot_make_itself_a_key(secured: CliCluster) -> None:
    with mcp_service(secured.urls, "--api-key", OPERATOR) as service:
        async with http_client(service.url, "operator") as client:
            for name, arguments in (
                ("key_create", {"name": "agent-admin", "role": "admin"}),
                ("key_create", {"name": "agent-viewer", "role": "viewer"}),
                ("key_list", {}),
                ("key_revoke", {"name": "anything"}),
                ("cluster_backup", {}),
            ):
                refused = await client.call_tool(name, arguments)
                assert refused.is_error, name
                assert text(refused) == "this operation needs the admin role; your key has operator"


async def test_without_a_key_every_tool_says_a_key_is_needed(secured: CliCluster) -> None:
    with mcp_service(secured.urls) as service:
        async with http_client(service.url, "keyless") as client:
            refused = await client.call_tool("cluster_status", {})
            assert refused.is_error and text(refused) == "an API key is required (Authorization: Bearer KEY)"


async def test_an_operator_key_takes_the_lease_and_works(secured: CliCluster) -> None:
    management = f"http://{secured.local.nodes[0].management}/api/v1/agent-lease"
    with mcp_service(secured.urls, "--api-key", OPERATOR) as service:
        async with http_client(service.url, "operator") as client:
            toml = blueprint_toml("k", (ECHO, 1))
            assert structured(await client.call_tool("blueprint_apply", {"toml": toml}))["name"] == "k"
            holder = httpx.get(management, headers={"Authorization": f"Bearer {VIEWER}"}, timeout=10).json()
            port = service.url.removeprefix("http://").split("/")[0].split(":")[1]
            expected = f"operator 1.0 from 127.0.0.1 via aether-mcp (http on 127.0.0.1:{port}, pid "
            assert holder["holder"].startswith(expected), holder  # the port bound (it said 0)
            assert structured(await client.call_tool("blueprint_delete", {"name": "k"})) == {"deleted": "k"}
    # the service stopped (SIGTERM): it gave the lease back
    assert httpx.get(management, headers={"Authorization": f"Bearer {VIEWER}"}, timeout=10).json() is None


async def test_an_unreachable_cluster_is_a_tool_error_naming_it(tmp_path: Path) -> None:
    with mcp_service("http://127.0.0.1:9") as service:
        async with http_client(service.url, "stranded") as client:
            result = await client.call_tool("cluster_status", {})
            assert result.is_error and text(result).startswith("cannot reach the cluster: http://127.0.0.1:9")
