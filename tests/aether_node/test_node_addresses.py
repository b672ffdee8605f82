"""The node's addresses: every one but the ingress is also what the node tells the others to call (its
registration, the replicas' Raft group), so a wildcard there is refused at start-up: the other hosts would
call 0.0.0.0, that is themselves, and with the wildcard in every certificate's names TLS would not stop
it. docs/DEPLOY.md said "never 0.0.0.0"; the node now says so too."""

from __future__ import annotations

from pathlib import Path

import pytest

from aether_node.core._config import ConfigError, load_config


def config_file(tmp_path: Path) -> Path:
    (tmp_path / "secret").write_text("s" * 32)
    path = tmp_path / "node.toml"
    path.write_text(
        'node_id = "n1"\ndata_dir = "data"\nindex = "index"\ningress = "10.0.0.1:1"\npeer = "10.0.0.1:2"\n'
        '[kv]\nendpoints = ["10.0.0.2:3"]\nsecret_file = "secret"\n'
    )
    return path


@pytest.mark.parametrize(
    ("flag", "address"),
    [("peer", "0.0.0.0:7002"), ("management", "[::]:7003"), ("peer", ":7002")],
)
def test_a_wildcard_address_the_other_nodes_would_call_is_refused(
    tmp_path: Path, flag: str, address: str
) -> None:
    """Other nodes would call the wildcard address: that is themselves."""
    path = config_file(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_config(path, {flag: address})
    assert raised.value.message == (
        f"{path}: {flag} {address}: a wildcard address cannot be told to the other nodes (they would call"
        " themselves); give this host's own address, which the node also binds"
    )


def test_a_wildcard_kv_address_is_refused_and_the_ingress_may_bind_every_interface(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_config(path, {"kv": {"raft": "0.0.0.0:7004", "client": "10.0.0.1:7005"}})
    assert raised.value.message.startswith(f"{path}: kv.raft 0.0.0.0:7004: a wildcard address")
    assert load_config(path, {"ingress": "0.0.0.0:8080"}).ingress == "0.0.0.0:8080"


@pytest.mark.parametrize(
    ("ingress", "peer", "advertised"),
    [
        ("0.0.0.0:8080", "10.0.0.1:7100", "10.0.0.1:8080"),
        (":8080", "node-1.example:7100", "node-1.example:8080"),
        ("[::]:8080", "[fd00::1]:7100", "[fd00::1]:8080"),
        ("10.0.0.9:8080", "10.0.0.1:7100", "10.0.0.9:8080"),
    ],
)
def test_an_ingress_on_every_interface_is_told_at_the_peer_address_s_host(
    tmp_path: Path, ingress: str, peer: str, advertised: str
) -> None:
    """The node registered `0.0.0.0:8080` as its ingress (`cluster status`, the dashboard, the agents'
    tools showed an address no client could call); a wildcard is now told at the peer's host."""
    config = load_config(config_file(tmp_path), {"ingress": ingress, "peer": peer})
    assert (config.ingress, config.advertised_ingress) == (ingress, advertised)


@pytest.mark.parametrize(("key", "address"), [("peer", "127.0.0.1:7002"), ("peer", "localhost:7002")])
def test_a_loopback_address_beside_other_hosts_is_refused(tmp_path: Path, key: str, address: str) -> None:
    """A host's node.toml with 127.0.0.1 (a copy of a one-machine setup): it started, and every other node
    dialled its own loopback to reach it."""
    path = config_file(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_config(path, {key: address})
    assert raised.value.message == (
        f"{path}: {key} {address}: a loopback address, but the other hosts (as 10.0.0.2:3) would call it,"
        " that is themselves; give this host's own address, which the node also binds"
    )
    with pytest.raises(ConfigError, match=r"kv.client 127.0.0.5:7005: a loopback address"):
        load_config(path, {"kv": {"raft": "10.0.0.1:7004", "client": "127.0.0.5:7005"}})


def test_loopback_everywhere_is_one_machine_and_fine(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    config = load_config(path, {"peer": "127.0.0.1:2", "kv": {"endpoints": ["127.0.0.1:3"]}})
    assert config.peer == "127.0.0.1:2"
    assert load_config(path, {"management": "127.0.0.1:9090"}).management == "127.0.0.1:9090"
