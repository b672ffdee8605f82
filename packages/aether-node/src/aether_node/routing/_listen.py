"""Listening sockets for the node's ports, and the check that they are free before the node starts.

A node binds its ingress, peer and management ports only once it is registered in the cluster; a port
taken by another process then failed the node after its registration was in the KV, where it stayed
until its lease lapsed (and a restart in that window was refused as a twin of itself). `check_free`
binds each address as the servers will (SO_REUSEADDR, so a port in TIME_WAIT is free) and lets it go at
once, before the node asks the cluster anything.
"""

from __future__ import annotations

import socket

from ..core._config import ConfigError


def listen_socket(address: str, *, backlog: int = 1024) -> socket.socket:
    """A TCP socket bound to host:port ("[::1]:port" for IPv6, an empty host for every address) and
    listening. Raises OSError if the address cannot be bound."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def check_free(ports: dict[str, str | None]) -> None:
    """Raise ConfigError naming each of `ports` (name -> host:port; None: not served) that cannot be
    listened on now (taken by another process, or an address not on this machine)."""
    problems = []
    for name, address in ports.items():
        if not address:
            continue
        try:
            listen_socket(address, backlog=1).close()
        except OSError as error:
            problems.append(f"{name} {address}: cannot listen there ({error.strerror or error})")
    if problems:
        raise ConfigError("; ".join(problems))
