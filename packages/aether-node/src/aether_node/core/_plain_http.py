"""One HTTP/1.1 request and its answer over a plain socket: the API client's path for `http://` when urllib
would send the request straight to the node anyway (no proxy, no redirect, a plain URL and headers).

Why: urllib.request, http.client and the email package it parses headers with cost ~25 ms of CPU at
import, paid by every `aether` command (benchmarks/README.md, "CLI"); a request to a node needs none of it.
What goes on the wire is what urllib sends (the same headers, `Connection: close`) and an answer is read
as http.client reads it (status line, headers, then Content-Length, chunked or up to the close); a
malformed answer raises http.client's own error (imported only then), so the client words it as before.
`usable` says when this path applies; for the rest (HTTPS, a proxy from the environment, a redirect) the
client uses urllib. No TLS here, nothing kept open.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping
from typing import BinaryIO, NoReturn
from urllib.parse import SplitResult

USER_AGENT = f"Python-urllib/{sys.version_info[0]}.{sys.version_info[1]}"  # as urllib sends it
REDIRECTS = frozenset((301, 302, 303, 307, 308))  # urllib follows these: an answer for its path
_MAX_LINE = 65536  # http.client's limits
_MAX_HEADERS = 100


def usable(parts: SplitResult, headers: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> bool:
    """True if urllib would send this request straight to the node as `exchange` does: `http://`, no
    `http_proxy` in the environment (in any case: urllib reads them all), no user in the URL, a host name
    the idna codec takes as it is, and the URL and the header values in visible ASCII (else urllib and
    http.client check or encode them, and say so in their own words)."""
    if parts.scheme != "http" or "@" in parts.netloc:
        return False
    if any(name.lower() == "http_proxy" and value for name, value in environ.items()):
        return False
    labels = (parts.hostname or "").split(".")  # as the idna codec checks a host name (urllib's path)
    if not all(0 < len(label) < 64 for label in labels[:-1]) or len(labels[-1]) >= 64:
        return False
    return all(_visible(text) for text in (parts.netloc, parts.path, parts.query)) and all(
        _visible(value.replace(" ", "")) for value in headers.values()
    )


def _visible(text: str) -> bool:
    """Visible ASCII only (0x21-0x7e): nothing urllib or http.client would refuse or encode."""
    return text.isascii() and text.isprintable() and " " not in text


def exchange(
    method: str,
    parts: SplitResult,
    headers: Mapping[str, str],
    body: bytes | None,
    timeout: float,
    connected: Callable[[], None],
) -> tuple[int, str, bytes]:
    """Send the request to `parts` (a URL `usable` accepted); its answer as (status, reason, body).
    `connected()` is called once the connection is made, before anything is sent. Errors are the socket's
    (OSError, TimeoutError) and http.client's for a malformed or cut-off answer."""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", "Accept-Encoding: identity", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"User-Agent: {USER_AGENT}", "Connection: close", "", ""]
    # the host as ASCII bytes: a str would be encoded with the idna codec (and its tables imported)
    host = (parts.hostname or "").encode("ascii")
    with socket.create_connection((host, parts.port or 80), timeout) as sock:  # type: ignore[arg-type]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client does
        connected()
        sock.sendall("\r\n".join(lines).encode("ascii") + (body or b""))
        with sock.makefile("rb") as answer:
            return _read_answer(answer, method)


def _read_answer(answer: BinaryIO, method: str) -> tuple[int, str, bytes]:
    while True:
        status, reason = _status_line(answer)
        fields = _header_fields(answer)
        if status != 100:  # 100 Continue comes before the answer: skipped, as http.client does
            break
    if status in (204, 304) or status < 200 or method == "HEAD":
        return status, reason, b""
    if fields.get("transfer-encoding", "").lower() == "chunked":
        return status, reason, _chunked(answer)
    try:
        length = int(fields["content-length"])
    except (KeyError, ValueError):
        length = -1
    if length < 0:  # none given: up to the close
        return status, reason, answer.read()
    data = answer.read(length)
    if len(data) < length:
        _http_client_error("IncompleteRead", data, length - len(data))
    return status, reason, data


def _line(answer: BinaryIO, what: str) -> bytes:
    line = answer.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        _http_client_error("LineTooLong", what)
    return line


def _status_line(answer: BinaryIO) -> tuple[int, str]:
    raw = _line(answer, "status line")
    if not raw:
        _http_client_error("RemoteDisconnected", "Remote end closed connection without response")
    line = raw.decode("iso-8859-1")
    words = line.split(None, 2)
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
        _http_client_error("BadStatusLine", line)
    status = int(words[1])
    if not 100 <= status <= 999:
        _http_client_error("BadStatusLine", line)
    return status, (words[2] if len(words) > 2 else "").strip()


def _header_fields(answer: BinaryIO) -> dict[str, str]:
    """The header fields by lower-case name, the first of a repeated one (a continuation line joins
    the field before it)."""
    fields: dict[str, str] = {}
    name = ""
    for count in range(_MAX_HEADERS + 1):
        line = _line(answer, "header line")
        if line in (b"\r\n", b"\n", b""):
            break
        if count == _MAX_HEADERS:
            _http_client_error("HTTPException", f"got more than {_MAX_HEADERS} headers")
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and name in fields:
            fields[name] += " " + text.strip()
        elif ":" in text:
            name, value = text.split(":", 1)
            name = name.strip().lower()
            fields.setdefault(name, value.strip())
    return fields


def _chunked(answer: BinaryIO) -> bytes:
    """A chunked body; cut off, http.client's IncompleteRead with the whole chunks read before."""
    chunks: list[bytes] = []
    while True:
        try:
            size = int(_line(answer, "chunk size").split(b";", 1)[0], 16)
        except ValueError:
            size = -1
        if size == 0:
            while _line(answer, "trailer line") not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        chunk = answer.read(size + 2) if size > 0 else b""  # the chunk and its CRLF
        if len(chunk) < size + 2 or size < 0:
            _http_client_error("IncompleteRead", b"".join(chunks))
        chunks.append(chunk[:-2])


def _http_client_error(name: str, *args: object) -> NoReturn:
    """Raise http.client's error `name`, as http.client would on the same answer (imported only now)."""
    import http.client

    raise getattr(http.client, name)(*args)
