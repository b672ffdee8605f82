"""A change that a frozen node runs late does not undo the changes that came after it, on a real 3-node
cluster (`control/_write_guard.py`).

The client sends a change "as of" the KV revision it read just before, and resends it to the next node
when the first does not answer. Here the first node is SIGSTOPped with the change unread in its socket;
the resend lands elsewhere, the operator goes on (apply C, uncordon), and then the frozen node resumes
and runs the change it was sent. Without the guard it would put blueprint B back over C, and cordon the
node again; with it, each late copy is refused (409, in the node's audit) and changes nothing.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cli_support import CliCluster, cli_cluster, wait_until

from aether_node.client import SINCE_HEADER, ApiClient

pytestmark = [pytest.mark.integration]


def blueprint(instances: int) -> str:
    return f'name = "late"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = {instances}\n'


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, sample_index: Path) -> Iterator[CliCluster]:
    with cli_cluster(tmp_path_factory.mktemp("late"), sample_index) as running:
        yield running


def send_unanswered(url: str, method: str, path: str, body: bytes, since: int) -> socket.socket:
    """Send one request as the client does, on a connection left open: the frozen node reads it when
    it resumes (its kernel took the connection and the bytes)."""
    address = urlsplit(url)
    conn = socket.create_connection((address.hostname, address.port), timeout=5)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: application/octet-stream\r\n{SINCE_HEADER}: {since}\r\n\r\n"
    )
    conn.sendall(head.encode() + body)
    return conn


def late_answers(api: ApiClient, node_id: str) -> list[tuple[str, int]]:
    """What the node's audit says it answered to the changes it made (subject, status), oldest first."""
    return [(e.subject, e.status) for e in reversed(api.events(50, kind="audit", node=node_id))]


def test_changes_a_frozen_node_runs_late_change_nothing(cluster: CliCluster) -> None:
    urls = cluster.urls.split(",")
    frozen_id, other_id = cluster.node_ids[0], cluster.node_ids[2]
    frozen = cluster.local.processes[frozen_id]
    with ApiClient(urls[1:]) as api:
        api.apply_blueprint(blueprint(1))
        since = api.current_revision()
        frozen.send_signal(signal.SIGSTOP)
        try:
            late = [
                send_unanswered(urls[0], "POST", "/api/v1/blueprints", blueprint(2).encode(), since),
                send_unanswered(urls[0], "POST", f"/api/v1/nodes/{other_id}/cordon", b"", since),
            ]
            # the client's resends land on a node that answers; then the operator goes on
            api.apply_blueprint(blueprint(2))
            api.node_operation(other_id, "cordon")
            api.apply_blueprint(blueprint(3))
            api.node_operation(other_id, "uncordon")
        finally:
            frozen.send_signal(signal.SIGCONT)
        try:
            answers = wait_until(
                lambda: late_answers(api, frozen_id),
                until=lambda found: len(found) >= 2,
                timeout=60,
                what=f"{frozen_id} to answer the two changes it was sent while frozen",
            )
        finally:
            for conn in late:
                conn.close()
        assert sorted(answers) == sorted([("/api/v1/blueprints", 409), (other_id, 409)]), answers
        assert api.get_blueprint("late").slices[0].instances == 3
        state = {n.node_id: n.state for n in api.nodes()}[other_id]
        assert state == "ON_DUTY", state


def test_a_bad_revision_is_refused_and_changes_nothing(cluster: CliCluster) -> None:
    url = cluster.urls.split(",")[1]
    with ApiClient([url]) as api:
        before = {b.name: b.slices for b in api.list_blueprints()}
        for bad in ("soon", "-1", "1e3", "9" * 21):
            response = httpx.post(
                f"{url}/api/v1/blueprints", content=blueprint(5).encode(), headers={SINCE_HEADER: bad}
            )
            assert response.status_code == 400, response.text
            message = response.json()["error"]["message"]
            assert message.startswith(f"{SINCE_HEADER}: expected a revision (a whole number), got "), message
        assert {b.name: b.slices for b in api.list_blueprints()} == before


def test_a_revision_the_cluster_has_not_reached_is_refused_and_changes_nothing(cluster: CliCluster) -> None:
    """A revision ahead of the KV's cannot have been read from it, and would turn the guard off: 400."""
    url = cluster.urls.split(",")[1]
    with ApiClient([url]) as api:
        before = {b.name: b.slices for b in api.list_blueprints()}
        now = api.current_revision()
        ahead = now + 1_000_000
        for method, path, content in (
            ("POST", "/api/v1/blueprints", blueprint(5).encode()),
            ("DELETE", "/api/v1/blueprints/late", None),
        ):
            response = httpx.request(
                method, f"{url}{path}", content=content, headers={SINCE_HEADER: str(ahead)}
            )
            assert response.status_code == 400, response.text
            message = response.json()["error"]["message"]
            assert message.startswith(
                f"{SINCE_HEADER}: revision {ahead} is ahead of the cluster's revision "
            ), message
        assert {b.name: b.slices for b in api.list_blueprints()} == before
        # the revision the cluster is at (or any before it) is accepted as before
        assert api.apply_blueprint(blueprint(3)).name == "late"
