"""The management API's request bodies on a real node (one node, dev mode, no key): what Python's parser
takes but JSON has not (NaN, Infinity, a key twice in one object), what nests past the parser's limit and
a key the operation does not know (a misspelt one: it would be left out unseen) are refused with 400 and
a message saying why, before anything runs; never a 500. A client that goes away in the middle of its body
costs no traceback in the node's log (any client could fill the log so)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_support import CliCluster, cli_cluster

pytestmark = [pytest.mark.integration]

TOO_DEEP = b"[" * 100_000 + b"]" * 100_000
LONE_SURROGATE = (
    "the request body is not valid JSON: a string holds a lone UTF-16 surrogate (\\ud800), which is not"
    " text: a surrogate is escaped in JSON only as half of a pair"
)


@pytest.fixture(scope="module")
def open_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliCluster]:
    """One dev-mode node without keys (the API is open) and an empty index: nothing here installs."""
    directory = tmp_path_factory.mktemp("bodies")
    index = directory / "index"
    index.mkdir()
    with cli_cluster(directory, index, nodes=1, dev_mode=True, node_env={"AETHER_API_KEYS": None}) as running:
        yield running


def base(cluster: CliCluster) -> str:
    return f"http://{cluster.local.nodes[0].management}"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        pytest.param(
            "/api/v1/slices/org.aether:echo/invoke/echo",
            b"NaN",
            "the request body is not valid JSON: NaN is not a JSON value",
            id="invoke-nan",
        ),
        pytest.param(
            "/api/v1/slices/org.aether:echo/invoke/echo",
            b'{"x": [1, -Infinity]}',
            "the request body is not valid JSON: -Infinity is not a JSON value",
            id="invoke-infinity-inside",
        ),
        pytest.param(
            "/api/v1/slices/org.aether:echo/invoke/echo",
            b'{"x": 1e400}',
            "the request body is not valid JSON: 1e400 is too large for a number",
            id="invoke-overflow",
        ),
        pytest.param(
            "/api/v1/slices/org.aether:echo/invoke/echo",
            b"1" * 5000,
            "the request body is not valid JSON: Exceeds the limit (4300 digits) for integer string"
            " conversion: value has 5000 digits; use sys.set_int_max_str_digits() to increase the limit",
            id="invoke-long-integer",
        ),
        pytest.param(
            "/api/v1/slices/org.aether:echo/invoke/echo",
            TOO_DEEP,
            "the request body is not valid JSON: nested too deeply",
            id="invoke-too-deep",
        ),
        pytest.param(
            "/api/v1/cluster/restore",
            TOO_DEEP,
            "the request body is not valid JSON: nested too deeply",
            id="restore-too-deep",
        ),
        pytest.param(
            "/api/v1/slices/org.aether:echo/invoke/echo",
            b'"\\ud800"',
            LONE_SURROGATE,
            id="invoke-lone-surrogate",
        ),
        pytest.param(
            "/api/v1/keys",
            b'{"name": "\\ud800", "role": "viewer"}',
            LONE_SURROGATE,
            id="key-lone-surrogate",
        ),
        pytest.param(
            "/api/v1/agent-lease",
            b'{"holder": "\\ud800", "token": "aaaaaaaaaaaaaaaaaaaa", "ttl": 10}',
            LONE_SURROGATE,
            id="agent-lease-lone-surrogate",
        ),
        pytest.param(
            "/api/v1/cluster/policy",
            b'{"\\ud800": 1}',
            LONE_SURROGATE,
            id="policy-lone-surrogate",
        ),
        pytest.param(
            "/api/v1/cluster/policy",
            b'{"rebalance_delay_s": Infinity}',
            "the request body is not valid JSON: Infinity is not a JSON value",
            id="policy-infinity",
        ),
        pytest.param(
            "/api/v1/slices/org.aether:echo/invoke/echo",
            b'{"text": "a", "text": "b"}',
            'the request body is not valid JSON: the key "text" is given twice in one object',
            id="invoke-key-twice",
        ),
        pytest.param(
            "/api/v1/cluster/policy",
            b'{"max_moves": 1, "max_moves": 0}',
            'the request body is not valid JSON: the key "max_moves" is given twice in one object',
            id="policy-key-twice",
        ),
        pytest.param(
            "/api/v1/slices/org.aether:echo/scale",
            b'{"instance": 3}',
            "instance: unknown key (did you mean 'instances'? expected: instances)",
            id="scale-misspelt",
        ),
        pytest.param(
            "/api/v1/keys",
            b'{"name": "ops", "role": "admin", "roles": "viewer", "x y": 1}',
            "roles: unknown key (did you mean 'role'? expected: name, role);"
            ' "x y": unknown key (expected: name, role)',
            id="key-unknown",
        ),
        pytest.param(
            "/api/v1/agent-lease",
            b'{"holder": "me", "token": "aaaaaaaaaaaaaaaaaaaa", "ttl": 10, "ttl_s": 60}',
            "ttl_s: unknown key (did you mean 'ttl'? expected: holder, token, ttl)",
            id="agent-lease-unknown",
        ),
        pytest.param(
            "/api/v1/agent-lease/release",
            b'{"token": "aaaaaaaaaaaaaaaaaaaa", "force": true}',
            "force: unknown key (expected: token)",
            id="agent-release-unknown",
        ),
    ],
)
def test_a_body_json_cannot_carry_is_a_bad_request(
    open_node: CliCluster, path: str, body: bytes, message: str
) -> None:
    answer = httpx.post(base(open_node) + path, content=body, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": {"kind": "bad_request", "message": message}}
    # ... and nothing was done: no key made (the first would close the open API), no lease taken
    assert httpx.get(base(open_node) + "/api/v1/keys", timeout=10).json() == []
    assert httpx.get(base(open_node) + "/api/v1/agent-lease", timeout=10).json() is None


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        (
            "POST",
            "/api/v1/slices/org.aether:echo/invoke/echo?timout=5",
            "timout: unknown query parameter (did you mean 'timeout'? expected: timeout)",
        ),
        (
            "GET",
            "/api/v1/events?limt=5&kind=node_lost",
            "limt: unknown query parameter (did you mean 'limit'? expected: kind, limit, node, since, slice)",
        ),
        ("GET", "/api/v1/cluster?verbose=1", "verbose: unknown query parameter (none is taken here)"),
        (
            "POST",
            "/api/v1/nodes/n1/stop?forse=1",
            "forse: unknown query parameter (did you mean 'force'? expected: force)",
        ),
    ],
)
def test_a_query_parameter_the_request_does_not_take_is_a_bad_request(
    open_node: CliCluster, method: str, path: str, message: str
) -> None:
    """A misspelt parameter was left out unseen: the call took the default timeout, the stop was not
    forced."""
    answer = httpx.request(method, base(open_node) + path, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": {"kind": "bad_request", "message": message}}


def test_what_a_scraper_adds_to_metrics_is_taken(open_node: CliCluster) -> None:
    assert httpx.get(base(open_node) + "/metrics?scrape=1", timeout=30).status_code == 200


def test_the_node_serves_on_after_refusing_them(open_node: CliCluster) -> None:
    for _ in range(3):
        answer = httpx.post(
            base(open_node) + "/api/v1/slices/org.aether:echo/invoke/echo", content=TOO_DEEP, timeout=30
        )
        assert answer.status_code == 400, answer.text
    assert httpx.get(base(open_node) + "/api/v1/cluster", timeout=10).status_code == 200


def test_a_client_gone_in_the_middle_of_its_body_leaves_no_traceback(open_node: CliCluster) -> None:
    node = open_node.local.nodes[0]
    host, _, port = node.management.rpartition(":")
    for path in ("/api/v1/blueprints", "/api/v1/slices/org.aether:echo/invoke/echo", "/api/v1/keys"):
        with socket.create_connection((host, int(port)), timeout=30) as client:
            client.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{".encode())
            client.shutdown(socket.SHUT_WR)  # gone before the rest of the body; still reading
            client.recv(1024)  # the node is done with the request once it answers or closes
    log = (Path(node.data_dir) / "node.log").read_text()
    assert "ClientDisconnect" not in log, log[-3000:]
    assert httpx.get(base(open_node) + "/api/v1/cluster", timeout=10).status_code == 200


def test_a_blueprint_too_large_for_the_store_is_a_bad_request_not_unavailable(open_node: CliCluster) -> None:
    # valid TOML within the API's body limit, but its record (stored with its revision) is over the
    # store's limit for one write: no retry can help, so not a 503 that says "try again"
    text = (
        'name = "big"\n# '
        + "x" * 2_000_000
        + '\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 0\n'
    )
    answer = httpx.post(base(open_node) + "/api/v1/blueprints", content=text.encode(), timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["kind"] == "bad_request"
    # (refused before the store is asked, naming the file and the limit: the store's own words did neither)
    assert error["message"].startswith("blueprint.toml: the blueprint takes 1.9 MiB stored (2,000,"), error
    assert "over the 1020 KiB (1,044,480 bytes) a blueprint may take" in error["message"], error
    assert httpx.get(base(open_node) + "/api/v1/blueprints", timeout=10).json() == []
