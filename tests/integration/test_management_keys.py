"""Named API keys and the audit log on a real 3-node cluster that runs with keys and without dev mode:
`aether key create|list|revoke` (admin only), a new key served by every node, a revoked one refused by
every node within a second, bad names and roles refused with nothing changed; and an `audit` event for
each change made through the management API, a refused one included.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import CliCluster, cli_cluster, expect, wait_until

pytestmark = [pytest.mark.integration]


ADMIN = "admin-key-0123456789abcdef"  # the bootstrap keys of the nodes' configuration
OPERATOR = "operator-key-0123456789abcdef"
EMPTY = 'name = "audited"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 0\n'
NO_KEY = "an API key is required (Authorization: Bearer KEY)"
UNKNOWN_KEY = "the API key is not one of this cluster's keys (mistyped, or revoked)"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, sample_index: Path) -> Iterator[CliCluster]:
    keys = f"admin:{ADMIN},operator:{OPERATOR}"
    directory = tmp_path_factory.mktemp("keys")
    with cli_cluster(directory, sample_index, dev_mode=False, node_env={"AETHER_API_KEYS": keys}) as running:
        yield running


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def management(cluster: CliCluster) -> list[str]:
    return [f"http://{node.management}" for node in cluster.local.nodes]


def answer_on(base: str, key: str | None) -> tuple[int, str]:
    """(status, error message or "") of a read on one node with `key`."""
    answer = httpx.get(f"{base}/api/v1/cluster", headers=bearer(key), timeout=10)
    return answer.status_code, answer.json().get("error", {}).get("message", "") if answer.is_error else ""


def create(cluster: CliCluster, name: str, role: str, key: str = ADMIN) -> str:
    """The secret of a new key, read from what `aether key create` prints."""
    run = expect(cluster.aether("key", "create", name, "--role", role, api_key=key))
    first, secret = run.stdout.splitlines()
    assert first == f"key {name!r} created (role {role}); its secret, shown only this once:", str(run)
    return secret


def key_names(cluster: CliCluster) -> dict[str, dict[str, Any]]:
    listed = expect(cluster.aether("key", "list", "--json", api_key=ADMIN)).json()
    return {item["name"]: item for item in listed}


def test_a_missing_and_a_wrong_key_get_different_messages(secured: CliCluster) -> None:
    for base in management(secured):
        assert answer_on(base, None) == (401, NO_KEY)
        assert answer_on(base, "wrong-key-0123456789abcdef") == (401, UNKNOWN_KEY)


def test_a_created_key_works_on_every_node_and_a_revoked_one_is_refused_by_every_node(
    secured: CliCluster,
) -> None:
    secret = create(secured, "ci", "viewer")
    assert secret.startswith("aek_") and len(secret) > 40
    nodes = management(secured)
    wait_until(
        lambda: all(answer_on(base, secret)[0] == 200 for base in nodes),
        timeout=5,
        what="every node to take the new key",
    )
    listed = key_names(secured)["ci"]
    assert (listed["role"], listed["created_by"]) == ("viewer", "config-key")
    assert listed["created_at"] > 0 and "secret" not in listed and "digest" not in listed
    # its use is recorded (to a minute: one write per key and node per minute at most)
    used = wait_until(
        lambda: key_names(secured)["ci"]["last_used"], timeout=5, what="the key's last use recorded"
    )
    assert listed["created_at"] <= used
    table = expect(secured.aether("key", "list", api_key=ADMIN)).stdout
    assert "ci" in table and "viewer" in table and secret not in table

    # revoked: every node refuses it within a second of the answer (the deadline is the bound)
    answer = httpx.delete(f"{nodes[0]}/api/v1/keys/ci", headers=bearer(ADMIN), timeout=10)
    assert (answer.status_code, answer.json()) == (200, {"revoked": "ci"}), answer.text
    wait_until(
        lambda: all(answer_on(base, secret) == (401, UNKNOWN_KEY) for base in nodes),
        timeout=1.0,
        interval=0.02,
        what="every node to refuse the revoked key",
    )
    assert "ci" not in key_names(secured)
    run = expect(secured.aether("key", "revoke", "ci", api_key=ADMIN), 1)
    assert run.stderr == "aether: error: no key named 'ci' (`aether key list` shows them)\n", str(run)


def test_only_the_admin_role_manages_keys(secured: CliCluster) -> None:
    named_operator = create(secured, "deployer", "operator")
    named_admin = create(secured, "root2", "admin")

    def roles() -> dict[str, str]:
        return {name: key["role"] for name, key in key_names(secured).items()}

    before = roles()
    base = management(secured)[1]
    for key in (OPERATOR, named_operator):
        for method, path, body in (
            ("POST", "/api/v1/keys", {"name": "sneaky", "role": "admin"}),
            ("GET", "/api/v1/keys", None),
            ("DELETE", "/api/v1/keys/root2", None),
        ):
            answer = httpx.request(method, base + path, json=body, headers=bearer(key), timeout=10)
            assert answer.status_code == 403, answer.text
            message = "this operation needs the admin role; your key has operator"
            assert answer.json()["error"]["message"] == message
    run = secured.aether("key", "create", "sneaky", "--role", "admin", api_key=named_operator)
    assert run.returncode == 1 and "needs the admin role" in run.stderr, str(run)
    assert roles() == before, "a refused request changed the keys"
    # a named admin key creates keys, and is who created them
    create(secured, "made-by-root2", "viewer", key=named_admin)
    assert key_names(secured)["made-by-root2"]["created_by"] == "root2"


@pytest.mark.parametrize(
    "name", ["", "Upper", "a/b", "-lead", "x" * 64, "config-key", "spa ce", "é"], ids=repr
)
def test_bad_names_and_roles_are_refused_and_change_nothing(secured: CliCluster, name: str) -> None:
    before = key_names(secured)
    base = management(secured)[0]
    answer = httpx.post(
        f"{base}/api/v1/keys", json={"name": name, "role": "viewer"}, headers=bearer(ADMIN), timeout=10
    )
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert message.startswith(
        "name: expected 1 to 63 characters of a-z, 0-9, - and _, starting with a letter or digit"
    ), message
    for bad_role in ("root", 3, None):
        answer = httpx.post(
            f"{base}/api/v1/keys", json={"name": "fine", "role": bad_role}, headers=bearer(ADMIN), timeout=10
        )
        assert answer.status_code == 400 and answer.json()["error"]["message"].startswith(
            "role: expected one of viewer, operator, admin"
        ), answer.text
    assert key_names(secured) == before


def test_a_name_in_use_is_refused_and_the_key_keeps_its_secret(secured: CliCluster) -> None:
    secret = create(secured, "twice", "viewer")
    run = expect(secured.aether("key", "create", "twice", "--role", "admin", api_key=ADMIN), 1)
    assert "a key named 'twice' exists already" in run.stderr, str(run)
    assert key_names(secured)["twice"]["role"] == "viewer"
    assert answer_on(management(secured)[0], secret)[0] == 200


def audit_events(cluster: CliCluster) -> list[dict[str, Any]]:
    run = cluster.aether("cluster", "events", "--kind", "audit", "--limit", "200", "--json", api_key=ADMIN)
    return expect(run).json_lines()


def test_every_change_leaves_an_audit_event_with_who_and_result(secured: CliCluster) -> None:
    deployer = create(secured, "auditor-op", "operator")
    watcher = create(secured, "auditor-view", "viewer")
    (secured.cwd / "audited.toml").write_text(EMPTY)
    expect(secured.aether("blueprint", "apply", "audited.toml", api_key=deployer))
    expect(secured.aether("slice", "scale", "org.aether:echo", "0", api_key=deployer))
    refused = secured.aether("blueprint", "delete", "audited", api_key=watcher)
    assert refused.returncode == 1, str(refused)
    expect(secured.aether("blueprint", "delete", "audited", api_key=deployer))
    # reads are not changes: not recorded
    expect(secured.aether("blueprint", "list", api_key=watcher))

    def seen() -> list[tuple[str, str, str, str, int]]:
        return [
            (
                e["who"],
                e["message"].split(": ", 1)[1].split(" ", 1)[0],
                e["subject"],
                e["node_id"],
                e["status"],
            )
            for e in audit_events(secured)
            if e["who"].startswith("auditor-") or e["subject"].startswith("auditor-")
        ]

    node_ids = set(secured.node_ids)
    found = seen()
    assert [(who, method, subject, status) for who, method, subject, _, status in found] == [
        ("config-key", "POST", "auditor-op", 200),  # key create, by the bootstrap admin key
        ("config-key", "POST", "auditor-view", 200),
        ("auditor-op", "POST", "audited", 200),  # apply
        ("auditor-op", "POST", "org.aether:echo", 200),  # scale
        ("auditor-view", "DELETE", "audited", 403),  # refused: the viewer may not delete
        ("auditor-op", "DELETE", "audited", 200),
    ], found
    assert {node for *_, node, _ in found} <= node_ids
    events = [e for e in audit_events(secured) if e["who"] == "auditor-view"]
    assert events[-1]["message"] == "auditor-view: DELETE /api/v1/blueprints/audited (audited) → 403"
    assert all(e["timestamp"] > 0 and e["kind"] == "audit" for e in events)
