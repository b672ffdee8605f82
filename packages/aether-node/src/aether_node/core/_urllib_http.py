"""urllib's opener for the API client, with connections that tell whether they were made: every request
(plain HTTP and HTTPS with the cluster CA, a proxy from the environment, redirects) and followed streams.
Imported on the first request, not with the client: `aether --help` and bad input need none of it.
"""

from __future__ import annotations

import functools
import http.client
import ssl
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.error import HTTPError as HTTPError
from urllib.request import Request


class _MarksConnected:
    """Mixed into an HTTP(S) connection: calls `connected()` once the connection is made (before anything
    is sent)."""

    def __init__(self, connected: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connected = connected

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._connected()


class _TrackedHTTPConnection(_MarksConnected, http.client.HTTPConnection):
    pass


class _TrackedHTTPSConnection(_MarksConnected, http.client.HTTPSConnection):
    pass


def _connected(req: Request) -> Callable[[], None]:
    """What to call when `req`'s connection is made; nothing for a request urllib made to follow a
    redirect (the connection of the first was made)."""
    return getattr(req, "connected", _nothing)


def _nothing() -> None:
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: Request) -> Any:
        return self.do_open(functools.partial(_TrackedHTTPConnection, _connected(req)), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: Request) -> Any:
        return self.do_open(
            functools.partial(_TrackedHTTPSConnection, _connected(req)),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )


@functools.cache
def _opener(ca_cert: str | None = None) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment, redirects, ...) with connections that tell whether
    they were made, trusting `ca_cert` (PEM) for HTTPS if given; built on first use."""
    if ca_cert is None:
        return urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)
    try:
        context = ssl.create_default_context(cadata=ca_cert)
    except (ssl.SSLError, ValueError) as error:
        raise ValueError(f"the cluster CA certificate is not a PEM certificate ({error})") from None
    return urllib.request.build_opener(_HTTPHandler, _HTTPSHandler(context=context))


def open_url(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    timeout: float | None,
    ca_cert: str | None,
    connected: Callable[[], None],
    node: str,
) -> Any:
    """The answer to the request (a file-like response to read or stream; HTTPError for a status that is
    not 2xx, after redirects). `connected()` is called when a connection is made; a URL or CA that cannot
    be used is a ValueError naming `node` (the node's URL)."""
    request = Request(url, data=body, method=method, headers=dict(headers))
    request.connected = connected  # type: ignore[attr-defined]
    try:
        return _opener(ca_cert).open(request, timeout=timeout)
    except (ValueError, http.client.InvalidURL) as error:
        raise ValueError(f"{node}: not a usable cluster URL ({error})") from None


def exchange(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    timeout: float,
    ca_cert: str | None,
    connected: Callable[[], None],
    node: str,
) -> tuple[int, str, bytes, Mapping[str, str]]:
    """The answer to the request as (status, reason, body, headers), whatever its status."""
    try:
        response = open_url(method, url, headers, body, timeout, ca_cert, connected, node)
    except HTTPError as error:
        return error.code, str(error.reason), error.read(), error.headers
    with response:
        return response.status, response.reason, response.read(), response.headers
