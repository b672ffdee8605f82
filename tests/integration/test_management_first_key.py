"""The first named key on a real node whose API is open (dev mode, no key configured): it closes the API,
so it must be an admin's. Another role is refused with nothing written and the API stays open; an admin
key is made and closes it, and from then on keys of any role are made with it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from cli_support import CliCluster, cli_cluster, wait_until

pytestmark = [pytest.mark.integration]


@pytest.fixture
def open_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliCluster]:
    """One dev-mode node without keys and an empty index: nothing here installs."""
    directory = tmp_path_factory.mktemp("first-key")
    index = directory / "index"
    index.mkdir()
    with cli_cluster(directory, index, nodes=1, dev_mode=True, node_env={"AETHER_API_KEYS": None}) as running:
        yield running


def test_the_first_key_must_be_an_admin_key(open_node: CliCluster) -> None:
    base = f"http://{open_node.local.nodes[0].management}"
    for role in ("operator", "viewer"):
        answer = httpx.post(f"{base}/api/v1/keys", json={"name": "ci", "role": role}, timeout=10)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["message"] == (
            "the API is open (no key yet) and the first key closes it: make it an admin key (--role admin),"
            f' or no one could manage keys afterwards; got role "{role}"'
        )
    listed = httpx.get(f"{base}/api/v1/keys", timeout=10)
    assert listed.status_code == 200 and listed.json() == [], "a refused key was written, or closed the API"

    admin = httpx.post(f"{base}/api/v1/keys", json={"name": "root", "role": "admin"}, timeout=10)
    assert admin.status_code == 200, admin.text
    secret = admin.json()["secret"]
    wait_until(
        lambda: httpx.get(f"{base}/api/v1/keys", timeout=10).status_code,
        until=lambda status: status == 401,
        timeout=10,
        what="the first (admin) key to close the open API",
    )
    answer = httpx.post(
        f"{base}/api/v1/keys",
        json={"name": "ci", "role": "operator"},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["role"] == "operator", answer.text
