"""TCP keep-alive on a server's accepted connections, so that one whose other end is gone for good (its
machine lost its power or its network: nothing says goodbye) is found and ended.

A KV replica's client port and a node's peer port keep a connection per client node open for as long as
that node lives, and wait on it for the next request: a connection of a machine that died hard was never
read from with an error, nor written to, and stayed, holding its descriptor (and on the node, its
connection slot) until the process ended. With keep-alive the kernel probes a connection idle for
`IDLE` seconds, every `INTERVAL` seconds, and after `COUNT` probes unanswered ends it (the waiting read
fails): ~60 s after the other end went silent.
"""

from __future__ import annotations

import contextlib
import socket

import trio

IDLE = 30  # s of quiet before the first probe
INTERVAL = 10  # s between probes
COUNT = 3  # probes unanswered before the connection is ended


def keep_alive(stream: trio.SocketStream) -> None:
    """Turn TCP keep-alive on for `stream`'s connection (where the platform lets a process set its
    timing; elsewhere the system's). A connection already gone is left as it is."""
    with contextlib.suppress(OSError):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", IDLE), ("TCP_KEEPINTVL", INTERVAL), ("TCP_KEEPCNT", COUNT)):
            if hasattr(socket, option):
                stream.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
