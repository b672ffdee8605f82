"""API keys and roles on the management API (viewer ⊂ operator ⊂ admin), on a real cluster that runs
with keys and without dev mode: every endpoint over HTTP and through the `aether` CLI, the probes that
need no key, and a node that refuses to start with an open API.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cli_support
import httpx
import pytest
from cli_support import (
    ANSWERED,
    ECHO,
    CliCluster,
    cli_cluster,
    cli_env,
    expect,
    processes_of,
    run_aether,
    wait_until,
)

from aether_node.dev import plan_cluster

pytestmark = [pytest.mark.integration]


KEYS = {
    "viewer": "viewer-key-0123456789abcdef",
    "operator": "operator-key-0123456789abcdef",
    "admin": "admin-key-0123456789abcdef",
}
API_KEYS = ",".join(f"{role}:{key}" for role, key in KEYS.items())
WRONG_KEY = "wrong-key-0123456789abcdef"
SMALL = 'name = "demo"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n'

UNAUTHENTICATED = "an API key is required (Authorization: Bearer KEY)"
UNKNOWN_KEY = "the API key is not one of this cluster's keys (mistyped, or revoked)"
# what the CLI makes of the node's 401: no key sent, or a key sent and refused
NO_KEY = (
    "no API key given: the cluster (--cluster) needs one; pass --api-key KEY (or AETHER_API_KEY), or add it"
    " to the context (`aether context add NAME URL --api-key -`)"
)


def key_refused(source: str = "--cluster") -> str:
    return (
        f"the API key was refused by {source}: it is not one of the cluster's keys (check --api-key,"
        " AETHER_API_KEY or the context's key)"
    )


def forbidden(role: str) -> str:
    return f"this operation needs the operator role; your key has {role}"


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture
def secured(tmp_path: Path, sample_index: Path) -> Iterator[CliCluster]:
    """A 3-node cluster with API keys (AETHER_API_KEYS in the nodes' environment), dev mode off."""
    with cli_cluster(
        tmp_path, sample_index, dev_mode=False, node_env={"AETHER_API_KEYS": API_KEYS}
    ) as cluster:
        yield cluster


def assert_error(answer: httpx.Response, status: int, kind: str, message: str) -> None:
    assert answer.status_code == status, f"{answer.request.method} {answer.request.url}: {answer.text}"
    assert answer.json() == {"error": {"kind": kind, "message": message}}


def test_every_endpoint_checks_the_role(secured: CliCluster) -> None:
    base = f"http://{secured.local.nodes[0].management}"
    with httpx.Client(base_url=base, timeout=30) as http:
        _check_probes(secured)
        _check_mutations_and_reads(http)


def _check_probes(cluster: CliCluster) -> None:
    for node in cluster.local.nodes:
        for probe, body in (("/healthz", {"ok": True}), ("/readyz", {"ready": True})):
            answer = httpx.get(f"http://{node.management}{probe}", timeout=10)
            assert (answer.status_code, answer.json()) == (200, body), f"{node.node_id} {probe}"


def _check_mutations_and_reads(http: httpx.Client) -> None:
    def request(method: str, path: str, key: str | None, **kw: Any) -> httpx.Response:
        return http.request(method, path, headers=bearer(key), **kw)

    def denied(method: str, path: str, **kw: Any) -> None:
        """401 without a key or with an unknown one (each with its message); 403 naming operator for a
        viewer key."""
        assert_error(request(method, path, None, **kw), 401, "unauthenticated", UNAUTHENTICATED)
        assert_error(request(method, path, WRONG_KEY, **kw), 401, "unauthenticated", UNKNOWN_KEY)
        assert_error(request(method, path, KEYS["viewer"], **kw), 403, "forbidden", forbidden("viewer"))

    # POST /api/v1/blueprints
    denied("POST", "/api/v1/blueprints", content=SMALL.encode())
    assert request("GET", "/api/v1/blueprints", KEYS["viewer"]).json() == [], "a denied apply applied"
    answer = request("POST", "/api/v1/blueprints", KEYS["operator"], content=SMALL.encode())
    assert answer.status_code == 200 and answer.json()["created"] is True, answer.text
    answer = request("POST", "/api/v1/blueprints", KEYS["admin"], content=SMALL.encode())
    assert answer.status_code == 200 and answer.json()["created"] is False, answer.text

    def echo_active() -> bool:
        status = request("GET", "/api/v1/blueprints/demo/status", KEYS["viewer"]).json()
        return status["slices"][0]["active"] == 1

    wait_until(echo_active, timeout=60, what="demo's echo instance ACTIVE")

    # POST /api/v1/slices/{artifact}/invoke/{entry}
    path = "/api/v1/slices/org.aether:echo/invoke/echo"
    denied("POST", path, json={"n": 1})
    for role in ("operator", "admin"):
        answer = request("POST", path, KEYS[role], json={"by": role})
        assert (answer.status_code, answer.json()) == (200, {"by": role}), answer.text

    # reads: 401 without a key, fine with every role; X-API-Key works like Authorization
    reads = [
        ("GET", "/api/v1/blueprints", {}),
        ("GET", "/api/v1/blueprints/demo", {}),
        ("GET", "/api/v1/blueprints/demo/status", {}),
        ("POST", "/api/v1/blueprints/validate", {"content": SMALL.encode()}),
        ("POST", "/api/v1/blueprints/diff", {"content": SMALL.encode()}),
        ("GET", "/api/v1/blueprints/demo/history", {}),
        ("GET", "/api/v1/slices", {}),
        ("GET", f"/api/v1/slices/{ECHO}", {}),
        ("GET", "/api/v1/slices/org.aether:echo/entries", {}),
        ("GET", "/api/v1/slices/org.aether:echo/logs", {}),  # perhaps from another node, with this key
        ("GET", "/api/v1/cluster", {}),
        ("GET", "/api/v1/nodes", {}),
        ("GET", "/api/v1/events", {}),
        ("GET", "/api/v1/agent-lease", {}),
        ("GET", "/api/v1/autoscale", {}),
        ("GET", "/metrics", {}),
    ]
    for method, path, kw in reads:
        assert_error(request(method, path, None, **kw), 401, "unauthenticated", UNAUTHENTICATED)
        assert_error(request(method, path, WRONG_KEY, **kw), 401, "unauthenticated", UNKNOWN_KEY)
        for key in KEYS.values():
            answer = request(method, path, key, **kw)
            assert answer.status_code == 200, f"{method} {path}: {answer.text}"
        answer = http.request(method, path, headers={"X-API-Key": KEYS["viewer"]}, **kw)
        assert answer.status_code == 200, f"{method} {path} with X-API-Key: {answer.text}"
    for key, status in ((None, 401), (WRONG_KEY, 401), (KEYS["viewer"], 200)):
        with http.stream("GET", "/api/v1/events/stream", headers=bearer(key), params={"limit": 1}) as answer:
            assert answer.status_code == status, f"events/stream with {key}"
            if status == 200:
                assert answer.headers["content-type"].startswith("text/event-stream")
                first = next(line for line in answer.iter_lines() if line)
                assert json.loads(first.removeprefix("data: "))["revision"] > 0

    # the agent lease: taking and releasing it needs operator; who holds it is a read
    lease = {"holder": "an agent", "token": "token-0123456789abcdef", "ttl": 10}
    denied("POST", "/api/v1/agent-lease", json=lease)
    denied("POST", "/api/v1/agent-lease/release", json={"token": lease["token"]})
    assert request("GET", "/api/v1/agent-lease", KEYS["viewer"]).json() is None, "a denied take took it"
    answer = request("POST", "/api/v1/agent-lease", KEYS["operator"], json=lease)
    assert answer.status_code == 200 and answer.json()["holder"] == "an agent", answer.text
    other = {**lease, "holder": "another agent", "token": "other-0123456789abcdef"}
    answer = request("POST", "/api/v1/agent-lease", KEYS["admin"], json=other)
    assert answer.status_code == 409 and answer.json()["error"]["kind"] == "conflict", answer.text
    assert "another agent is operating this cluster: an agent (since" in answer.json()["error"]["message"]
    assert "token-0123456789abcdef" not in answer.text, "a holder's token must never be shown"
    assert request("GET", "/api/v1/agent-lease", KEYS["viewer"]).json()["holder"] == "an agent"
    bad_requests = (({**lease, "ttl": 0.5}, "ttl"), ({**lease, "token": "short"}, "token"), ({}, "holder"))
    for bad, field in bad_requests:
        answer = request("POST", "/api/v1/agent-lease", KEYS["operator"], json=bad)
        assert answer.status_code == 400 and answer.json()["error"]["message"].startswith(f"{field}:")
    answer = request("POST", "/api/v1/agent-lease", KEYS["operator"], content=b"[1")
    assert answer.status_code == 400 and "not valid JSON" in answer.text
    answer = request("POST", "/api/v1/agent-lease/release", KEYS["operator"], json={"token": other["token"]})
    assert answer.json() == {"released": False}, "only the holder can release"
    answer = request("POST", "/api/v1/agent-lease/release", KEYS["operator"], json={"token": lease["token"]})
    assert answer.json() == {"released": True}
    assert request("GET", "/api/v1/agent-lease", KEYS["viewer"]).json() is None

    # blueprint rollback, slice scale and node operations need operator; a denied one changes nothing
    history = request("GET", "/api/v1/blueprints/demo/history", KEYS["viewer"]).json()
    denied("POST", "/api/v1/blueprints/demo/rollback", params={"to": "1"})
    denied("POST", "/api/v1/slices/org.aether:echo/scale", json={"instances": 1})
    denied("POST", "/api/v1/slices/org.aether:echo/retry")
    answer = request("POST", "/api/v1/slices/org.aether:echo/retry", KEYS["operator"])  # nothing failed
    assert answer.json() == {"artifact": "org.aether:echo", "let_go": []}, answer.text
    for operation in ("cordon", "uncordon", "drain", "stop"):
        denied("POST", f"/api/v1/nodes/node-1/{operation}")
    denied("POST", "/api/v1/autoscale/org.aether:echo/set", json={"cpu": 0.5})
    for operation in ("pause", "resume"):
        denied("POST", f"/api/v1/autoscale/org.aether:echo/{operation}")
    answer = request("POST", "/api/v1/autoscale/org.aether:echo/pause", KEYS["operator"])
    assert_error(
        answer,
        404,
        "not_found",
        "org.aether:echo is not autoscaled: its blueprint has no [slices.autoscale] table"
        " (or several blueprints deploy it)",
    )
    assert request("GET", "/api/v1/blueprints/demo/history", KEYS["viewer"]).json() == history
    assert {n["state"] for n in request("GET", "/api/v1/nodes", KEYS["viewer"]).json()} == {"ON_DUTY"}
    answer = request("POST", "/api/v1/slices/org.aether:echo/scale", KEYS["operator"], json={"instances": 1})
    assert answer.status_code == 200 and answer.json()["blueprint_revision"] == 1, answer.text  # no change
    for operation in ("cordon", "uncordon"):
        answer = request("POST", f"/api/v1/nodes/node-1/{operation}", KEYS["admin"])
        assert answer.status_code == 200 and answer.json()["node_id"] == "node-1", answer.text
    answer = request("POST", "/api/v1/nodes/node-1/reboot", KEYS["operator"])
    assert answer.status_code == 404 and "no node operation 'reboot'" in answer.text, answer.text
    for bad in ({"instances": -1}, {"instances": "2"}, {}):
        answer = request("POST", "/api/v1/slices/org.aether:echo/scale", KEYS["operator"], json=bad)
        assert answer.status_code == 400 and answer.json()["error"]["message"].startswith("instances:")

    # DELETE /api/v1/nodes/{id}: forgetting a node needs operator
    denied("DELETE", "/api/v1/nodes/node-9")
    answer = request("DELETE", "/api/v1/nodes/node-9", KEYS["operator"])
    assert answer.status_code == 404 and "node node-9 is not expected" in answer.text, answer.text

    # DELETE /api/v1/blueprints/{name}
    denied("DELETE", "/api/v1/blueprints/demo")
    assert request("GET", "/api/v1/blueprints/demo", KEYS["viewer"]).status_code == 200, "a denied delete"
    for role in ("operator", "admin"):
        if role == "admin":
            assert request("POST", "/api/v1/blueprints", KEYS["operator"], content=SMALL.encode()).is_success
        answer = request("DELETE", "/api/v1/blueprints/demo", KEYS[role])
        assert (answer.status_code, answer.json()) == (200, {"deleted": "demo"}), answer.text
        assert request("GET", "/api/v1/blueprints/demo", KEYS["viewer"]).status_code == 404


@pytest.mark.long
def test_the_cli_passes_the_key_and_reports_a_refusal(secured: CliCluster) -> None:
    aether = secured.aether
    (secured.cwd / "small.toml").write_text(SMALL)

    def refused(run: Any, message: str) -> None:
        expect(run, 1)
        assert run.stderr == f"aether: error: {message}\n", str(run)
        assert run.stdout == ""

    # reads: no key → refused; a viewer key by --api-key or by AETHER_API_KEY → fine
    for command in (
        ("blueprint", "list"),
        ("cluster", "status", "--json"),
        ("cluster", "events", "--follow"),
    ):
        refused(aether(*command), NO_KEY)
        refused(aether(*command, "--api-key", WRONG_KEY), key_refused())
    assert expect(aether("blueprint", "list", "--json", "--api-key", KEYS["viewer"])).json() == []
    status = expect(aether("cluster", "status", "--json", api_key=KEYS["viewer"]), ANSWERED)
    assert status.json()["has_quorum"] is True
    # validate is local: no key needed
    expect(aether("blueprint", "validate", "small.toml"))

    # apply: viewer refused (nothing applied), operator fine
    refused(aether("blueprint", "apply", "small.toml"), NO_KEY)
    refused(aether("blueprint", "apply", "small.toml", api_key=KEYS["viewer"]), forbidden("viewer"))
    refused(aether("blueprint", "apply", "small.toml", "--api-key", KEYS["viewer"]), forbidden("viewer"))
    assert expect(aether("blueprint", "list", "--json", api_key=KEYS["viewer"])).json() == []
    run = expect(aether("blueprint", "apply", "small.toml", "--wait", "--api-key", KEYS["operator"]))
    assert f"converged: {ECHO} 1/1" in run.stdout, str(run)

    # invoke: viewer refused, operator and admin fine
    refused(aether("slice", "invoke", "org.aether:echo", "echo", "--data", "1"), NO_KEY)
    refused(
        aether("slice", "invoke", "org.aether:echo", "echo", "--data", "1", api_key=KEYS["viewer"]),
        forbidden("viewer"),
    )
    for role in ("operator", "admin"):
        run = aether(
            "slice", "invoke", "org.aether:echo", "echo", "--data", f'"{role}"', "--json", api_key=KEYS[role]
        )
        assert expect(run).json() == role

    # delete: viewer refused (still there), admin fine
    refused(aether("blueprint", "delete", "demo", api_key=KEYS["viewer"]), forbidden("viewer"))
    expect(aether("blueprint", "get", "demo", api_key=KEYS["viewer"]))
    expect(aether("blueprint", "delete", "demo", api_key=KEYS["admin"]))
    expect(aether("blueprint", "get", "demo", api_key=KEYS["viewer"]), 1)

    # a context carries the cluster and its key; a key from the flag or the environment wins over it
    expect(secured.aether("context", "add", "secured", secured.urls, "--api-key", "-", input=KEYS["viewer"]))
    expect(secured.aether("context", "add", "wrong", secured.urls, "--api-key", WRONG_KEY))

    def bare(*args: str, **env: str) -> Any:  # no AETHER_CLUSTER: the context says where
        return run_aether(*args, cwd=secured.cwd, env=env)

    assert expect(bare("blueprint", "list", "--json")).json() == []
    assert (
        expect(bare("blueprint", "list", "--json", "--context", "wrong", "-k", KEYS["viewer"])).json() == []
    )
    run = expect(bare("blueprint", "list", "--context", "wrong"), 1)
    assert run.stderr == "aether: error: " + key_refused("context 'wrong'") + "\n", str(run)
    run = expect(bare("blueprint", "apply", "small.toml", AETHER_API_KEY=KEYS["operator"]))
    assert "blueprint 'demo' created" in run.stdout, str(run)


def test_keys_take_precedence_over_dev_mode(tmp_path: Path, sample_index: Path) -> None:
    with cli_cluster(
        tmp_path, sample_index, nodes=1, dev_mode=True, node_env={"AETHER_API_KEYS": API_KEYS}
    ) as cluster:
        base = f"http://{cluster.local.nodes[0].management}"
        assert_error(httpx.get(f"{base}/api/v1/cluster"), 401, "unauthenticated", UNAUTHENTICATED)
        assert httpx.get(f"{base}/api/v1/cluster", headers=bearer(KEYS["viewer"])).status_code == 200


def test_dev_mode_without_keys_is_open(tmp_path: Path, sample_index: Path) -> None:
    with cli_cluster(
        tmp_path, sample_index, nodes=1, dev_mode=True, node_env={"AETHER_API_KEYS": None}
    ) as cluster:
        base = f"http://{cluster.local.nodes[0].management}"
        answer = httpx.post(f"{base}/api/v1/blueprints", content=SMALL.encode(), timeout=30)
        assert answer.status_code == 200, answer.text
        # any key is ignored rather than refused
        answer = httpx.get(f"{base}/api/v1/blueprints", headers=bearer(WRONG_KEY))
        assert answer.status_code == 200 and [b["name"] for b in answer.json()] == ["demo"]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            None,
            "aether-node: error: no API keys configured (api_keys_file or AETHER_API_KEYS): the management"
            " API would be open; configure keys, or run with --dev-mode on a machine of your own\n",
        ),
        (
            "viewer:short",
            "aether-node: error: AETHER_API_KEYS: expected role:key with role one of viewer, operator, admin"
            " and a key of at least 16 characters\n",
        ),
        (
            f"viewer:{KEYS['viewer']},root:{KEYS['admin']}",
            "aether-node: error: AETHER_API_KEYS, item 2: expected role:key with role one of viewer,"
            " operator, admin and a key of at least 16 characters\n",
        ),
    ],
    ids=["no-keys", "short-key", "unknown-role"],
)
def test_a_node_without_usable_keys_refuses_to_start(
    tmp_path: Path, sample_index: Path, keys: str | None, message: str
) -> None:
    local = plan_cluster(tmp_path / "cluster", 1, str(sample_index))
    local.dev_mode = False
    env = cli_env({"AETHER_API_KEYS": keys} if keys is not None else {})
    try:
        result = subprocess.run(
            local.command(local.nodes[0]), env=env, capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        cli_support.kill_processes_of(local.directory)
    assert result.returncode == 2, result
    assert result.stderr == message
    assert processes_of(local.directory) == []
