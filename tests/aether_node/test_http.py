"""The app ingress over real HTTP on 127.0.0.1 (an ephemeral port), from both servers (hypercorn on trio, and
the fast ingress's worker process), with a recording invoke in place of the cluster: statuses, JSON
bodies, per-call options, and the routes around the invoke route; in HTTP and in HTTPS."""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from aether_node.core._blueprint import Balancing
from aether_node.core._errors import InvocationError
from aether_node.routing._fast_ingress import serve_fast_ingress
from aether_node.routing._http import MAX_BODY, ingress_app, ingress_ssl_context, serve_http
from support import operator_certificate


class Recorder:
    """An invoke that records its calls and answers with `answer` (or raises it, if an exception)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, dict[str, Any]]] = []
        self.answer: Any = None

    async def __call__(self, artifact: str, entry: str, payload: Any, **options: Any) -> Any:
        self.calls.append((artifact, entry, payload, options))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return payload if self.answer is None else self.answer


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(params=["trio", "fast", "trio-https", "fast-https"])
async def client(
    request: pytest.FixtureRequest, recorder: Recorder, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The same surface from both ingress servers: hypercorn on trio, and the fast one (an HTTP worker
    process linked to this trio loop); in HTTP, and in HTTPS with an operator's certificate."""
    server, _, https = request.param.partition("-")
    verify: ssl.SSLContext | bool = False
    cert = key = None
    if https:
        ca, cert, key = operator_certificate(tmp_path)
        verify = ssl.create_default_context(cafile=str(ca))
    async with trio.open_nursery() as nursery:
        if server == "trio":
            context = ingress_ssl_context(cert, key) if cert and key else None
            serve = functools.partial(serve_http, max_body=MAX_BODY, ssl_context=context)
            bound = await nursery.start(serve, ingress_app(recorder), "127.0.0.1:0")
        else:
            serve = functools.partial(serve_fast_ingress, cert=cert, key=key)
            bound = await nursery.start(serve, recorder, "127.0.0.1:0")
        base = bound[0].replace("0.0.0.0", "127.0.0.1")
        assert base.startswith(f"{'https' if https else 'http'}://127.0.0.1:")
        async with httpx.AsyncClient(base_url=base, verify=verify, timeout=30.0) as http:  # a loaded machine
            yield http
        nursery.cancel_scope.cancel()


async def test_a_call_answers_the_result_as_json(client: httpx.AsyncClient, recorder: Recorder) -> None:
    payload = {"message": "héllo", "n": 42, "items": [1, 2, 3], "ok": True, "none": None}
    response = await client.post("/invoke/org.aether:echo/echo", content=json.dumps(payload))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == payload
    # compact, UTF-8 (not \\u escapes), as starlette's JSONResponse renders it
    assert response.content == json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    assert int(response.headers["content-length"]) == len(response.content)
    assert recorder.calls == [("org.aether:echo", "echo", payload, {})]


async def test_an_empty_body_is_a_null_payload(client: httpx.AsyncClient, recorder: Recorder) -> None:
    recorder.answer = {"got": "nothing"}
    for body in (b"", b"  \n"):
        response = await client.post("/invoke/org.aether:echo/info", content=body)
        assert (response.status_code, response.json()) == (200, {"got": "nothing"})
    assert [call[2] for call in recorder.calls] == [None, None]


async def test_a_body_that_is_not_json_is_a_bad_request(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    # (nested deeper than the parser goes: a 400 too, not a 500, nor a connection left without answer)
    for body in (b'{"unterminated": ', b"\xff\xfe{}", b"[" * 100_000):
        response = await client.post("/invoke/org.aether:echo/echo", content=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["kind"] == "bad_request"
        assert error["message"].startswith("the request body is not valid JSON: ")
    assert recorder.calls == []


SURROGATE = (
    "a string holds a lone UTF-16 surrogate (\\u{}), which is not text: a surrogate is escaped in JSON"
    " only as half of a pair"
)


async def test_an_escaped_surrogate_pair_is_one_character(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    response = await client.post("/invoke/org.aether:echo/echo", content=b'{"face": "\\ud83d\\ude00"}')
    assert response.status_code == 200, response.text
    assert recorder.calls[-1][2] == {"face": "\U0001f600"}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        pytest.param(b"NaN", "NaN is not a JSON value", id="nan"),
        pytest.param(b'{"x": [1, -Infinity]}', "-Infinity is not a JSON value", id="infinity-inside"),
        pytest.param(b'{"x": 1e400}', "1e400 is too large for a number", id="overflow"),
        pytest.param(b'"\\ud800"', SURROGATE.format("d800"), id="lone-surrogate"),
        pytest.param(b'{"k\\udfff": [1]}', SURROGATE.format("dfff"), id="lone-surrogate-in-a-key"),
        pytest.param(b'["\\udc00\\ud800"]', SURROGATE.format("dc00"), id="a-pair-the-wrong-way-round"),
        pytest.param(
            b'{"k\xed\xbf\xbf": 1}',  # (a surrogate encoded as UTF-8 bytes: not UTF-8)
            "'utf-8' codec can't decode byte 0xed in position 3: invalid continuation byte",
            id="lone-surrogate-as-bytes",
        ),
    ],
)
async def test_a_body_with_what_json_has_not_is_a_bad_request_saying_why(
    client: httpx.AsyncClient, recorder: Recorder, body: bytes, why: str
) -> None:
    """Python's parser takes NaN and Infinity (and makes 1e400 infinite): the call used to run, with a
    payload no answer or slice could carry. Refused as the management API refuses them."""
    response = await client.post("/invoke/org.aether:echo/echo", content=body)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": {"kind": "bad_request", "message": f"the request body is not valid JSON: {why}"}
    }
    assert recorder.calls == []


async def test_per_call_options_come_from_the_query_string(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    response = await client.post(
        "/invoke/org.aether:echo/echo", params={"timeout": "2.5", "balancing": "random"}, content=b"[1]"
    )
    assert (response.status_code, response.json()) == (200, [1])
    assert recorder.calls == [
        ("org.aether:echo", "echo", [1], {"timeout": 2.5, "balancing": Balancing.RANDOM})
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"timeout": "soon"}, 'timeout: expected seconds, got "soon"'),
        ({"timeout": "0"}, "timeout: must be in (0, 3600] seconds, got 0"),
        ({"timeout": "3601"}, "timeout: must be in (0, 3600] seconds, got 3601"),
        ({"balancing": "fastest"}, "balancing: must be one of "),
        (
            {"timout": "5"},  # misspelt: it was left out unseen, the call taking the default timeout
            "timout: unknown query parameter (did you mean 'timeout'? expected: balancing, timeout)",
        ),
    ],
)
async def test_bad_options_are_bad_requests(
    client: httpx.AsyncClient, recorder: Recorder, query: dict[str, str], message: str
) -> None:
    response = await client.post("/invoke/org.aether:echo/echo", params=query, content=b"{}")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["kind"] == "bad_request"
    assert error["message"].startswith(message)
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("bad_request", 400),
        ("no_endpoint", 404),
        ("raised", 500),
        ("bad_result", 502),
        ("unavailable", 503),
        ("timeout", 504),
        ("something_new", 500),
    ],
)
async def test_invocation_errors_become_statuses_with_a_json_body(
    client: httpx.AsyncClient, recorder: Recorder, kind: str, status: int
) -> None:
    recorder.answer = InvocationError(kind, f"it went {kind}")
    response = await client.post("/invoke/org.aether:echo/echo", content=b"{}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {"kind": kind, "message": f"it went {kind}"}}
    # a 503 (a slice restarting, a node stopping) says when to try again; no other answer does
    assert response.headers.get("retry-after") == ("1" if status == 503 else None)


async def test_a_raised_error_names_the_slice_exception(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    recorder.answer = InvocationError("raised", "ValueError: no", remote_type="ValueError")
    response = await client.post("/invoke/org.aether:echo/echo", content=b"{}")
    assert response.status_code == 500
    assert response.json() == {"error": {"kind": "raised", "message": "ValueError: no", "type": "ValueError"}}


async def test_an_error_whose_text_holds_a_lone_surrogate_is_answered_with_it_escaped(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    """A slice's exception message (a node's peer may pass one from a slice host of another version)
    with a lone surrogate: its answer failed, and the caller got a bare 500."""
    recorder.answer = InvocationError("raised", "bad \udcff text", remote_type="ValueError")
    response = await client.post("/invoke/org.aether:echo/echo", content=b"{}")
    assert response.status_code == 500, response.text
    assert response.json() == {
        "error": {"kind": "raised", "message": "bad \\udcff text", "type": "ValueError"}
    }


async def test_an_unexpected_failure_is_a_plain_500(client: httpx.AsyncClient, recorder: Recorder) -> None:
    recorder.answer = RuntimeError("a bug in the node")
    response = await client.post("/invoke/org.aether:echo/echo", content=b"{}")
    assert (response.status_code, response.text) == (500, "Internal Server Error")


async def test_a_result_that_is_not_strict_json_is_a_bad_result_not_a_bare_500(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    """A slice process of this version refuses to send NaN (`bad_result`); one of another version, or
    a peer passing its answer on, may not: the ingress answers it as the same kind."""
    recorder.answer = {"x": float("nan")}
    response = await client.post("/invoke/org.aether:echo/echo", content=b"{}")
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["kind"] == "bad_result"
    assert error["message"].startswith("org.aether:echo/echo: the result cannot be answered: ")


async def test_the_path_is_percent_decoded(client: httpx.AsyncClient, recorder: Recorder) -> None:
    response = await client.post("/invoke/org.aether%3Aecho/ech%6F", content=b"1")
    assert (response.status_code, response.json()) == (200, 1)
    assert recorder.calls[0][:2] == ("org.aether:echo", "echo")


async def test_an_entry_ending_in_a_newline_is_that_entry_not_another(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    """The path's pattern ended in `$`, which matches before a final newline: `echo%0A` called `echo`."""
    await client.post("/invoke/org.aether:echo/echo%0A", content=b"1")
    assert recorder.calls[0][:2] == ("org.aether:echo", "echo\n")


async def test_other_routes_and_methods(client: httpx.AsyncClient, recorder: Recorder) -> None:
    health = await client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"ok": True})
    wrong_method = await client.get("/invoke/org.aether:echo/echo")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    for path in ("/invoke/org.aether:echo", "/invoke/org.aether:echo/echo/more", "/nothing"):
        missing = await client.post(path, content=b"{}")
        assert missing.status_code == 404, path
    assert recorder.calls == []
