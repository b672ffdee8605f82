"""The MCP service's gateway to the cluster says once, on its log, that the key it was given went to a node
that checks none (an open dev cluster answers `Aether-Access: open`), and says nothing where keys are
checked or when it sends none. Against a real HTTP server on a socket that answers as a node's
management API does."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from aether_mcp._gateway import ClusterGateway

NODES = json.dumps([]).encode()


def serving(open_access: bool) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(NODES)))
            if open_access:
                self.send_header("Aether-Access", "open")
            self.end_headers()
            self.wfile.write(NODES)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def open_node() -> Iterator[str]:
    yield from serving(open_access=True)


@pytest.fixture
def keyed_node() -> Iterator[str]:
    yield from serving(open_access=False)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "aether_mcp.gateway"]


def test_a_key_sent_to_an_open_node_is_said_unchecked_once(
    open_node: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    gateway = ClusterGateway([open_node], api_key="mistyped", timeout=5)
    for _ in range(3):
        assert gateway.call_blocking(lambda client: client.nodes()) == []
    (said,) = warnings_of(caplog)
    assert said.startswith(f"{open_node} checks no API keys") and "was not checked" in said


def test_nothing_is_said_without_a_key_or_where_keys_are_checked(
    open_node: str, keyed_node: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    ClusterGateway([open_node], api_key=None, timeout=5).call_blocking(lambda client: client.nodes())
    ClusterGateway([keyed_node], api_key="a-key", timeout=5).call_blocking(lambda client: client.nodes())
    assert warnings_of(caplog) == []
