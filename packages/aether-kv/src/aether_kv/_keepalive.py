"""TCP keep-alive on a server's accepted connections, so that one whose other end is gone for good (its
machine lost its power or its network: nothing says goodbye) is found and ended.

A KV replica's client port and a node's peer port keep a connection per client node open for as long as
that node lives, and wait on it for the next request: a connection of a machine that died hard was never
read from with an error, nor written to, and stayed, holding its descriptor (and on the node, its
connection slot) until the process ended. With keep-alive the kernel probes a connection idle for
`IDLE` seconds, every `INTERVAL` seconds, and after `COUNT` probes unanswered ends it (the waiting read
fails): ~60 s after the other end went silent.

Data sent and not acknowledged (a partition, a machine gone while a request or an answer was on its way)
ends the connection after `UNACKNOWLEDGED` seconds (`bound_unacknowledged`, TCP_USER_TIMEOUT): otherwise
it waited on TCP's retransmission backoff (tries up to two minutes apart) and the calls on it waited out
their own timeouts. Raft links, a node's accepted connections and its links to other nodes set it.
"""

from __future__ import annotations

import contextlib
import socket

import trio

IDLE = 30  # s of quiet before the first probe
INTERVAL = 10  # s between probes
COUNT = 3  # probes unanswered before the connection is ended
UNACKNOWLEDGED = 10  # s data may go unacknowledged before the connection is ended


def bound_unacknowledged(sock: socket.socket | trio.SocketStream) -> None:
    """Have the kernel end `sock`'s connection once data it sent has gone unacknowledged for
    `UNACKNOWLEDGED` seconds (Linux; elsewhere nothing). A connection already gone is left as it is."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, UNACKNOWLEDGED * 1000)


def keep_alive(stream: trio.SocketStream) -> None:
    """Turn TCP keep-alive on for `stream`'s connection (where the platform lets a process set its
    timing; elsewhere the system's), and bound its unacknowledged data. A connection already gone is left
    as it is."""
    with contextlib.suppress(OSError):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", IDLE), ("TCP_KEEPINTVL", INTERVAL), ("TCP_KEEPCNT", COUNT)):
            if hasattr(socket, option):
                stream.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    bound_unacknowledged(stream)
