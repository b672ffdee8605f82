"""`free_port` plans local clusters' ports below the kernel's ephemeral range, where neither bind(0) nor
an outgoing connection takes one between the plan and the server's bind; each port it gives binds."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aether_kv import free_port

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@pytest.mark.skipif(not RANGE.exists(), reason="no /proc/sys/net/ipv4/ip_local_port_range here")
def test_ports_come_from_below_the_ephemeral_range_and_bind() -> None:
    ephemeral = int(RANGE.read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert all(10_000 <= port < ephemeral for port in ports), ports
    assert len(set(ports)) > 40, ports  # chosen at random: two planners rarely meet
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_ports_handed_out_in_a_row_are_all_different() -> None:
    """A planner asks for many before any is bound (a 3-node cluster: 15); at random, two of them met in
    ~1 plan of 200 and a node then failed to bind its port: one handed out lately is not given again."""
    ports = [free_port() for _ in range(2_000)]  # (at random, ~88 repeats would be expected)
    assert len(set(ports)) == len(ports)
