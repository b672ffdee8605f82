"""TLS across hosts: three real `aether-node` processes, each in its own network namespace with its own
address on one bridge (tests/net_namespaces.py), TLS on (no dev mode), and a fifth namespace for the
clients (the fourth holds a fresh one-node cluster, started for the restore); netns_support.py starts
them. node-1 starts with the cluster secret and runs the KV (one voter); node-2 joins through node-1
and node-3 through node-2, each by `aether-node token create` run on node-1's host and `--join
HOST:PORT --token T` from inside its own namespace (no file copied: the secret comes over TLS, pinned
by the CA fingerprint in the token).

From the client namespace: every port (peer, KV client, management API) refuses a client without a
certificate, with another CA's or with an expired one; the management API answers only a key and is
trusted only through the cluster CA; the joined nodes serve calls (one echo instance: calls cross the
peer links, mutual TLS between namespaces); certificates that live 15 s are renewed under calls and KV
writes and fail none; a reused and an expired token are refused; a revoked key is refused by every
node within a second (measured, printed); a backup taken through a joined node and restored into the
fresh cluster (its own secret, so its own CA) gives back the same blueprints and histories.

Needs root and `ip` (skipped with the reason otherwise). Everything it makes (namespaces, veths, the
bridge, processes, temporary directories) is removed when the module ends, also on failure; names carry
a per-run id (the namespaces' state file records the owner, so a killed run's leftovers are swept).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from net_namespaces import Network, missing_tools
from netns_support import ADMIN, INGRESS, LIFETIME, MANAGEMENT, PEER, RAFT, NsCluster, NsNode, write_secret
from tls_support import (
    calls_and_writes,
    client_context,
    forge_identities,
    kv_status,
    management_answer,
    node_script,
    port_greetings,
    served_serial,
)

from aether_kv import client_identity, cluster_ca
from support import wait_until_sync

MISSING = missing_tools()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.long,
    pytest.mark.skipif(bool(MISSING), reason=f"network namespaces need {', '.join(MISSING)}"),
]

ECHO = 'name = "demo"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n'
NO_KEY = "an API key is required (Authorization: Bearer KEY)"
UNKNOWN_KEY = "the API key is not one of this cluster's keys (mistyped, or revoked)"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, sample_index: Path) -> Iterator[NsCluster]:
    """node-1 with the secret; node-2 joined through node-1, node-3 through node-2 (tokens made on node-1's
    host); every node registered; one echo instance applied by the CLI in the client namespace."""
    directory = tmp_path_factory.mktemp("tls-netns")
    network = Network.create(5)  # three nodes, the fresh cluster's node and the client
    ns = NsCluster(directory, network, sample_index, Path(tempfile.mkdtemp(prefix="atn-")))
    try:
        for i, host in enumerate(network.hosts[:3], start=1):
            ns.nodes.append(NsNode(f"node-{i}", host, directory / f"node-{i}", voter=i == 1))
        first = ns.nodes[0]
        write_secret(first)
        ns.start(first)
        ns.wait_registered(1)
        for node, through in ((ns.nodes[1], ns.nodes[0]), (ns.nodes[2], ns.nodes[1])):
            ns.tokens[node.node_id] = ns.token()
            ns.start(node, "--join", through.at(MANAGEMENT), "--token", ns.tokens[node.node_id])
            ns.wait_registered(int(node.node_id[-1]))
        applied = ns.aether(
            "blueprint", "apply", "-", "--wait", "--cluster", ns.nodes[2].management_url, input=ECHO
        )
        assert applied.returncode == 0, applied.stderr + "\n".join(n.log_tail(20) for n in ns.nodes)
        yield ns
    finally:
        try:
            ns.end()
        finally:
            network.destroy()


@pytest.fixture(scope="module")
def identities(cluster: NsCluster) -> dict[str, Path | None]:
    return forge_identities(cluster.secret, cluster.directory / "identities")


def test_joined_nodes_got_the_secret_over_tls_and_their_own_certificates(
    cluster: NsCluster, identities: dict[str, Path | None]
) -> None:
    assert cluster.registered() == ["node-1", "node-2", "node-3"]
    for node in cluster.nodes[1:]:
        assert node.secret_file.read_text().strip() == cluster.secret
        assert oct(node.secret_file.stat().st_mode & 0o777) == "0o600"
        assert f"joined through {cluster.nodes[int(node.node_id[-1]) - 2].at(MANAGEMENT)}" in node.log_tail(
            400
        )
    # each node's certificate names its own namespace address (the client checks it on every connection)
    for node in cluster.nodes:
        assert cluster.in_client(
            trio.run, port_greetings, {"peer": node.at(PEER)}, cluster.ca_file, identities
        )["peer", "good"], node.node_id


def test_every_port_refuses_a_stranger_from_another_namespace(
    cluster: NsCluster, identities: dict[str, Path | None]
) -> None:
    ca = cluster.ca_file
    ports = {f"{n.node_id} peer": n.at(PEER) for n in cluster.nodes} | {
        "node-1 kv": cluster.kv_endpoint,
        "node-1 raft": cluster.nodes[0].at(RAFT),
    }
    seen = cluster.in_client(trio.run, port_greetings, ports, ca, identities)
    assert seen == {(port, name): name == "good" for port in ports for name in ("plain", *identities)}

    # the KV client protocol as aether_kv's client sees it, from the client namespace
    tls_dir = cluster.directory / "kv-client"
    assert cluster.in_client(trio.run, kv_status, [cluster.kv_endpoint], cluster.secret, None) == "refused"
    assert (
        cluster.in_client(trio.run, kv_status, [cluster.kv_endpoint], cluster.secret, tls_dir)
        == "leader True"
    )

    # the management API: the API key authenticates (a client certificate is optional, a bad one refused);
    # a client that trusts another CA does not trust the node (a stranger in between would be noticed)
    foreign_ca = cluster.directory / "foreign-ca.pem"
    foreign_ca.write_bytes(cluster_ca("another cluster's secret, 32 chars").pem)
    for node in cluster.nodes:
        url = node.management_url

        def answers(url: str = url) -> dict[str, Any]:
            found: dict[str, Any] = {
                name: management_answer(url, client_context(ca, cert), ADMIN)
                for name, cert in identities.items()
            }
            found["no key"] = management_answer(url, client_context(ca, None), None)
            found["wrong key"] = management_answer(
                url, client_context(ca, None), "wrong-key-0123456789abcdef"
            )
            found["foreign CA"] = management_answer(url, client_context(foreign_ca, None), ADMIN)
            found["plain http"] = management_answer(
                url.replace("https", "http"), client_context(ca, None), ADMIN
            )
            messages = [
                httpx.get(
                    f"{url}/api/v1/cluster", headers=headers, verify=client_context(ca, None), timeout=10
                ).json()["error"]["message"]
                for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789abcdef"})
            ]
            found["messages"] = messages
            return found

        found = cluster.in_client(answers)
        assert found["good"] == found["none"] == 200, (node.node_id, found)
        assert isinstance(found["other"], str) and isinstance(found["expired"], str), (node.node_id, found)
        assert found["no key"] == found["wrong key"] == 401, (node.node_id, found)
        assert found["messages"] == [NO_KEY, UNKNOWN_KEY], (node.node_id, found)
        assert found["foreign CA"] == "ConnectError", (node.node_id, found)
        assert isinstance(found["plain http"], str), (node.node_id, found)


def test_the_joined_nodes_serve_calls_across_the_peer_links(cluster: NsCluster) -> None:
    def call_every_ingress() -> list[tuple[int, Any]]:
        found = []
        for n, node in enumerate(cluster.nodes):
            answer = httpx.post(
                f"http://{node.at(INGRESS)}/invoke/org.aether:echo/echo", json={"n": n}, timeout=30
            )
            found.append((answer.status_code, answer.json() if answer.is_success else answer.text))
        return found

    # one instance, three ingresses: two of the calls cross a peer link between namespaces (mutual TLS)
    assert cluster.in_client(call_every_ingress) == [(200, {"n": n}) for n in range(3)]
    status = cluster.aether("cluster", "status", "--json", "--cluster", cluster.nodes[1].management_url)
    assert status.returncode in (0, 4), status.stderr  # (4: answered, not healthy yet)
    # every node tells the others its own namespace address (what they dial, and its certificate names)
    advertised = {
        n["node_id"]: (n["ingress"], n["peer"], n["management"]) for n in json.loads(status.stdout)["nodes"]
    }
    assert advertised == {
        node.node_id: (node.at(INGRESS), node.at(PEER), node.at(MANAGEMENT)) for node in cluster.nodes
    }


def test_renewal_under_calls_across_namespaces_fails_no_call(
    cluster: NsCluster, identities: dict[str, Path | None]
) -> None:
    """Calls through every ingress (two of three cross a peer link) and KV writes from the client namespace
    go on for 2.5 certificate lifetimes, so every node renews at least twice: none fails, and every peer
    and KV port presents a new certificate afterwards."""
    good = identities["good"]
    assert good is not None
    ports = [*(node.at(PEER) for node in cluster.nodes), cluster.kv_endpoint]

    def serials() -> dict[str, int]:
        return {port: served_serial(port, cluster.ca_file, good) for port in ports}

    before = cluster.in_client(serials)
    ingresses = [f"http://{node.at(INGRESS)}" for node in cluster.nodes]
    tls = client_identity(cluster.secret, cluster.directory / "load-client")
    load = cluster.in_client(
        trio.run, calls_and_writes, ingresses, [cluster.kv_endpoint], tls, cluster.secret, 2.5 * LIFETIME
    )
    after = cluster.in_client(serials)
    print(f"\nunder renewal: {load.calls} calls, {load.writes} KV writes, {len(load.failures)} failed")
    assert load.failures == [], load.failures[:5]
    assert load.calls > 0 and load.writes > 0
    assert all(after[port] != before[port] for port in ports), (before, after)


def test_a_reused_or_expired_token_is_refused(cluster: NsCluster) -> None:
    verify = client_context(cluster.ca_file, None)
    url = f"{cluster.nodes[2].management_url}/api/v1/join"
    expiring = cluster.token(ttl=10)
    made = time.time()  # the token expires before made + 10 s

    def post(token: str) -> tuple[int, str]:
        answer = httpx.post(url, json={"token": token}, verify=verify, timeout=10)
        return answer.status_code, answer.json()["error"]["message"] if answer.is_error else ""

    used = cluster.tokens["node-2"]
    status, message = cluster.in_client(post, used)
    assert status == 401 and "used already" in message, message
    # a fourth node run with the used token in the client namespace: refused, nothing written, nothing bound
    secret_file = cluster.directory / "fourth.secret"
    fourth = [*cluster.network.exec_prefix(cluster.client), *node_script(), "run", "--node-id", "node-4"]
    fourth += ["--data-dir", str(cluster.directory / "node-4"), "--index", str(cluster.index)]
    fourth += [
        "--ingress",
        f"{cluster.client.address}:{INGRESS}",
        "--peer",
        f"{cluster.client.address}:{PEER}",
    ]
    fourth += ["--kv-endpoint", cluster.kv_endpoint, "--secret-file", str(secret_file)]
    run = subprocess.run(
        [*fourth, "--join", cluster.nodes[0].at(MANAGEMENT), "--token", used],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2 and "the cluster refused the token" in run.stderr, run.stderr
    assert "used already" in run.stderr and not secret_file.exists()

    wait_until_sync(lambda: time.time() > made + 10.5, timeout=30, what="the token's expiry")
    status, message = cluster.in_client(post, expiring)
    assert status == 401 and "expired" in message, message
    run = subprocess.run(
        [*fourth, "--join", cluster.nodes[1].at(MANAGEMENT), "--token", expiring],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2 and "expired" in run.stderr and not secret_file.exists(), run.stderr


def test_a_revoked_key_is_refused_by_every_node_within_a_second(cluster: NsCluster) -> None:
    verify = client_context(cluster.ca_file, None)
    urls = [node.management_url for node in cluster.nodes]

    def status_on(url: str, key: str) -> int:
        return httpx.get(
            f"{url}/api/v1/cluster", headers={"Authorization": f"Bearer {key}"}, verify=verify, timeout=5
        ).status_code

    def create_use_revoke() -> float:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        made = httpx.post(
            f"{urls[0]}/api/v1/keys",
            json={"name": "netns-ci", "role": "viewer"},
            headers=admin,
            verify=verify,
        )
        assert made.status_code == 200, made.text
        secret = made.json()["secret"]
        wait_until_sync(
            lambda: all(status_on(url, secret) == 200 for url in urls),
            timeout=5,
            what="every node takes the key",
        )
        revoked = httpx.delete(f"{urls[1]}/api/v1/keys/netns-ci", headers=admin, verify=verify, timeout=10)
        answered = time.monotonic()
        assert revoked.status_code == 200, revoked.text
        wait_until_sync(
            lambda: all(status_on(url, secret) == 401 for url in urls),
            timeout=1.0,
            interval=0.01,
            what="every node refuses the revoked key",
        )
        return time.monotonic() - answered

    took = cluster.in_client(create_use_revoke)
    print(f"\nrevoked key refused by all 3 nodes (separate namespaces) {took * 1000:.0f} ms after the answer")


KEPT = [  # two revisions of a blueprint that runs nothing
    f'name = "kept"\n\n[[slices]]\nartifact = "{artifact}"\ninstances = 0\n' + extra
    for artifact, extra in (
        ("org.aether:greeter:1.0.0", ""),
        ("org.aether:greeter:1.0.0", '\n[[slices]]\nartifact = "org.aether:counter:1.0.0"\ninstances = 0\n'),
    )
]


def test_backup_then_restore_on_a_fresh_cluster_in_another_namespace(cluster: NsCluster) -> None:
    """`aether cluster backup` through a joined node, then `aether cluster restore` into a one-node cluster of
    another secret (another CA) in its own namespace: the same blueprints and the same histories."""
    source = cluster.nodes[1].management_url
    for text in KEPT:
        applied = cluster.aether("blueprint", "apply", "-", "--cluster", source, input=text)
        assert applied.returncode == 0, applied.stderr

    def state(url: str, ca_file: Path | None) -> dict[str, Any]:
        def read(*args: str) -> Any:
            run = cluster.aether(*args, "--json", "--cluster", url, ca_file=ca_file)
            assert run.returncode == 0, run.stderr
            return json.loads(run.stdout)

        names = sorted(b["name"] for b in read("blueprint", "list"))
        return {"names": names} | {name: read("blueprint", "history", name) for name in names}

    before = state(source, None)
    assert before["names"] == ["demo", "kept"] and len(before["kept"]) == 2, before
    backup = cluster.directory / "backup.json"
    made = cluster.aether("cluster", "backup", str(backup), "--cluster", source)
    assert made.returncode == 0, made.stderr

    fresh = NsNode("fresh-1", cluster.network.hosts[3], cluster.directory / "fresh-1", voter=True)
    write_secret(fresh)
    cluster.fresh = fresh
    cluster.start(fresh)
    fresh_ca = cluster.directory / "fresh-ca.pem"
    fresh_ca.write_bytes(cluster_ca(fresh.secret_file.read_text().strip()).pem)
    target = fresh.management_url

    def empty() -> bool:
        assert fresh.process is not None and fresh.process.poll() is None, fresh.log_tail()
        run = cluster.aether("blueprint", "list", "--json", "--cluster", target, ca_file=fresh_ca)
        return run.returncode == 0 and json.loads(run.stdout) == []

    wait_until_sync(empty, timeout=90, what=f"the fresh cluster answers, empty; its log:\n{fresh.log_tail()}")
    # the fresh cluster's CA is not the first one's: a client trusting only that one refuses it
    wrong = cluster.aether("blueprint", "list", "--cluster", target)
    assert wrong.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in wrong.stderr, wrong.stderr
    restored = cluster.aether("cluster", "restore", str(backup), "--cluster", target, ca_file=fresh_ca)
    assert restored.returncode == 0, restored.stderr
    assert state(target, fresh_ca) == before
