"""The API client's own HTTP/1.1 path (`core/_plain_http.py`) against urllib's (`core/_urllib_http.py`), which
it stands in for on plain `http://`: on real sockets, for the same canned answers, both give the same
(status, reason, body), or raise errors of the same type with the same words, and send the same request
headers. `usable` leaves to urllib what urllib would do otherwise (a proxy, HTTPS, a user, odd text)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from aether_node.client import ApiClient, ApiError, NoAnswerError
from aether_node.core import _plain_http, _urllib_http

HEAD_END = b"\r\n\r\n"


class CannedServer:
    """Answers every connection with `answer` (raw bytes, sent after the whole request is read), then
    closes it; keeps each request it read (head and body)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                data = b""
                while HEAD_END not in data and (chunk := conn.recv(65536)):
                    data += chunk
                head, _, body = data.partition(HEAD_END)
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.lower().split(b"\r\n")
                        if line.startswith(b"content-length:")
                    ),
                    0,
                )
                while len(body) < length and (chunk := conn.recv(65536)):
                    body += chunk
                self.requests.append(head + HEAD_END + body)
                conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def canned(answer: bytes) -> Iterator[CannedServer]:
    server = CannedServer(answer)
    try:
        yield server
    finally:
        server.close()


def plain(method: str, url: str, headers: dict[str, str], body: bytes | None) -> tuple[int, str, bytes]:
    return _plain_http.exchange(method, urlsplit(url), headers, body, 5.0, lambda: None)


def by_urllib(method: str, url: str, headers: dict[str, str], body: bytes | None) -> tuple[int, str, bytes]:
    return _urllib_http.exchange(method, url, headers, body, 5.0, None, lambda: None, url)


def outcome(path: Callable[..., tuple[int, str, bytes]], *args: Any) -> object:
    try:
        return path(*args)
    except Exception as error:
        return (type(error), str(error))


JSON_ERROR = json.dumps({"error": {"kind": "not_found", "message": "no blueprint 'x'"}}).encode()
ANSWERS = {
    "length": b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": [1]} ',
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'4;x=y\r\n{"a"\r\n5\r\n: [1]\r\n1\r\n}\r\n0\r\nT: 1\r\n\r\n',
    "until close": b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a": 1}',
    "no content": b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    "continue first": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    "folded header": b"HTTP/1.1 200 OK\r\nX-Long: a\r\n b\r\nContent-Length: 2\r\n\r\n{}",
    "api error": b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(JSON_ERROR), JSON_ERROR),
    "text error": b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 8\r\n\r\nupstream",
    "empty error": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
    "no reason": b"HTTP/1.1 418\r\nContent-Length: 0\r\n\r\n",
    "nothing": b"",
    "not http": b"SSH-2.0-OpenSSH_9.6\r\n",
    "bad status": b"HTTP/1.1 abc OK\r\n\r\n",
    "cut off": b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"a"',
    "cut off chunk": b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n10\r\n{"a',
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nzz\r\n",
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_every_answer_reads_as_urllib_reads_it(name: str, method: str) -> None:
    body = b'{"n": 1}' if method == "POST" else None
    headers = {
        "Authorization": "Bearer k3y",
        **({"Content-Type": "application/octet-stream"} if body else {}),
    }
    with canned(ANSWERS[name]) as server:
        mine = outcome(plain, method, server.url + "/api/v1/x?y=1", headers, body)
        theirs = outcome(by_urllib, method, server.url + "/api/v1/x?y=1", headers, body)
    assert mine == theirs


def header_fields(request: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = request.partition(HEAD_END)
    first, *lines = head.decode().split("\r\n")
    return first, {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}, body


@pytest.mark.parametrize(
    ("method", "body"), [("GET", None), ("POST", b""), ("POST", b"x = 1"), ("DELETE", None)]
)
def test_the_request_on_the_wire_is_what_urllib_sends(method: str, body: bytes | None) -> None:
    headers = {
        "Authorization": "Bearer k3y",
        **({"Content-Type": "application/octet-stream"} if body is not None else {}),
    }
    with canned(ANSWERS["length"]) as server:
        plain(method, server.url + "/api/v1/blueprints?source=b.toml", headers, body)
        by_urllib(method, server.url + "/api/v1/blueprints?source=b.toml", headers, body)
        mine, theirs = server.requests
    assert header_fields(mine) == header_fields(theirs)
    assert header_fields(mine)[0] == f"{method} /api/v1/blueprints?source=b.toml HTTP/1.1"


def test_a_redirect_is_followed_through_urllib() -> None:
    with canned(ANSWERS["length"]) as target:
        with canned(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: %s/api/v1/x\r\nContent-Length: 0\r\n\r\n"
            % target.url.encode()
        ) as first:
            assert ApiClient([first.url])._request("GET", "/api/v1/x") == {"a": [1]}
        assert header_fields(target.requests[0])[0] == "GET /api/v1/x HTTP/1.1"


def test_the_client_words_errors_as_before() -> None:
    with canned(ANSWERS["api error"]) as server, pytest.raises(ApiError) as refused:
        ApiClient([server.url]).cluster_status()
    assert (refused.value.status, refused.value.kind, refused.value.message) == (
        404,
        "not_found",
        "no blueprint 'x'",
    )
    with canned(b"") as server, pytest.raises(NoAnswerError) as dropped:
        ApiClient([server.url], read_patience=0).cluster_status()
    assert (
        "dropped the connection after the request was sent (Remote end closed connection without response)"
        in str(dropped.value)
    )


@pytest.mark.parametrize(
    ("url", "headers", "environ", "expected"),
    [
        ("http://127.0.0.1:9090/api/v1/cluster", {"Authorization": "Bearer k"}, {}, True),
        ("http://node-1.example:9090/api?x=1", {}, {"NO_PROXY": "x", "https_proxy": "http://p:3128"}, True),
        ("http://127.0.0.1:9090/api", {}, {"HTTP_PROXY": "http://p:3128"}, False),
        ("http://127.0.0.1:9090/api", {}, {"http_proxy": "http://p:3128"}, False),
        ("https://127.0.0.1:9090/api", {}, {}, False),
        ("http://user@127.0.0.1:9090/api", {}, {}, False),
        ("http://a..b:9090/api", {}, {}, False),
        ("http://127.0.0.1:9090/api", {"Authorization": "Bearer k\u00e9y"}, {}, False),
        ("http://127.0.0.1:9090/a\u00e9", {}, {}, False),
        ("http://127.0.0.1:9090/a b", {}, {}, False),
        ("http://127.0.0.1:9090/api", {"Authorization": "Bearer k\tx"}, {}, False),
    ],
)
def test_only_what_urllib_would_send_straight_takes_the_plain_path(
    url: str, headers: dict[str, str], environ: dict[str, str], expected: bool
) -> None:
    assert _plain_http.usable(urlsplit(url), headers, environ) is expected
