"""`ConnectionSlots`: a server holds at most its limit of connections at once, on real sockets; the next
waits in the kernel's backlog until one closes. An accept that meets EMFILE is tried again, and said
once, not raised to `trio.serve_listeners` (which logged it with a traceback ten times a second).
(A whole node under a flood of connections: tests/integration/test_node_open_files.py.)"""

from __future__ import annotations

import errno
import logging

import pytest
import trio

from aether_node.routing._connection_slots import FEWEST, ConnectionSlots, connection_limit
from support import wait_until


def test_each_server_takes_its_share_of_the_open_files_limit_and_at_least_a_few() -> None:
    assert [connection_limit(s, 65536) for s in ("ingress", "peer", "management")] == [32768, 8192, 4096]
    assert connection_limit("management", 64) == FEWEST


async def test_a_server_holds_at_most_its_limit_and_takes_the_next_once_one_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slots = ConnectionSlots("test server", 2)
    served: list[trio.SocketStream] = []

    async def handler(stream: trio.SocketStream) -> None:
        served.append(stream)
        async with stream:
            await stream.receive_some()  # until the client closes

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, slots.handler(handler), slots.listeners(listeners))
            clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]  # (the backlog)
            await wait_until(lambda: len(served), until=lambda n: n == 2, timeout=10, what="two served")
            await wait_until(lambda: "connections at once" in caplog.text, timeout=10, what="said full")
            await trio.sleep(0.2)  # a window in which the third must not be taken
            assert len(served) == 2 and slots.held == 2

            await clients[0].aclose()  # one closes: its slot goes to the third
            await wait_until(lambda: len(served), until=lambda n: n == 3, timeout=10, what="the third served")
            for client in clients[1:]:
                await client.aclose()
            # (given back but for the one the next accept holds while it waits)
            await wait_until(lambda: slots.held, until=lambda n: n == 1, timeout=10, what="slots given back")
            nursery.cancel_scope.cancel()
    said = [r for r in caplog.records if "connections at once" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text


class _OutOfFiles(trio.abc.Listener[trio.SocketStream]):
    """A listener whose first accepts meet EMFILE (as the kernel says when the process has no descriptor
    left), then hand over a real connection."""

    def __init__(self, inner: trio.SocketListener, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def accept(self) -> trio.SocketStream:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return await self.inner.accept()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_accept_that_meets_emfile_is_tried_again_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slots = ConnectionSlots("test server", 4)
    served: list[trio.SocketStream] = []

    async def handler(stream: trio.SocketStream) -> None:
        served.append(stream)
        await stream.aclose()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            (inner,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = inner.socket.getsockname()[1]
            listeners = slots.listeners([_OutOfFiles(inner, failures=5)])
            nursery.start_soon(trio.serve_listeners, slots.handler(handler), listeners)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await wait_until(lambda: served, timeout=10, what="the connection served after the EMFILEs")
            await client.aclose()
            await wait_until(lambda: slots.held, until=lambda n: n == 1, timeout=10, what="one slot held")
            nursery.cancel_scope.cancel()
    said = [r.getMessage() for r in caplog.records if "cannot accept a connection" in r.getMessage()]
    assert len(said) == 1 and "as many files open as its limit allows" in said[0], said
    assert not [r for r in caplog.records if r.name.startswith("trio")], caplog.text
