"""Slice instance logs for the management API: the last lines of an instance's output (its stdout and
stderr, which its node writes to rotated files: `runtime/_instance_log.py`) and, when followed, each line
written after them. Any node answers: the instances on another node are fetched from that node's
management API with the caller's own credentials (so the other node checks them too).

Following is pushed, not polled: a local follower subscribes to the instance's `InstanceLog`, which hands
it each chunk as the node writes it; a remote one reads the other node's stream. While it follows, a node
sends an empty line every HEARTBEAT seconds, so a node that follows another's stream knows within
PEER_SILENCE that the other is gone (killed, paused, cut off) and says so, instead of waiting forever.

It reads files and sends HTTP; which instances exist is the KV's word (`Handlers.instances_of`). A file
or a peer that fails is an error of this request only (a RequestError), never of the node.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import trio

from ..client import MAX_LOG_LINES as MAX_LINES
from ..client import InstanceInfo, InstanceLogs, LogLine, NodeInfo, from_json, to_json
from ..core._coordinates import Coordinates
from ..core._error_kinds import ErrorKind
from ..core._errors import RequestError
from ..core._schema import InstanceKey
from ..core._text import shown
from ..runtime._instance_log import FOLLOWER_BUFFER, InstanceLog
from ._handlers import Handlers

DEFAULT_LINES = 100
PEER_TIMEOUT = 10.0  # seconds another node has to answer for its instances' last lines
HEARTBEAT = 5.0  # seconds between the empty lines a followed stream carries while nothing else comes
PEER_SILENCE = 3 * HEARTBEAT  # seconds without a byte from another node's stream: it is gone
FORWARDED = ("authorization", "x-api-key")  # the caller's credentials, sent on to the other node

Send = Callable[[bytes], Awaitable[None]]


# ---------------------------------------------------------------- files (pure but for the reads)


def split_lines(buffer: bytes) -> tuple[list[str], bytes]:
    """The complete lines of `buffer` (decoded, newline dropped) and the incomplete rest."""
    *complete, rest = buffer.split(b"\n")
    return [line.decode(errors="replace").rstrip("\r") for line in complete], rest


# ---------------------------------------------------------------- the request


LOG_QUERY = ("instance", "node", "lines", "follow")  # what `LogRequest.parse` reads


@attrs.frozen(kw_only=True)
class LogRequest:
    artifact: str
    instance: int | None = None
    node: str | None = None
    lines: int = DEFAULT_LINES
    follow: bool = False

    @classmethod
    def parse(cls, artifact: str, params: Mapping[str, str]) -> LogRequest:
        """From the query string: ?instance=N&node=ID&lines=K&follow=1. Bad values are bad requests."""

        def number(name: str) -> int | None:
            raw = params.get(name)
            if raw is None:
                return None
            try:
                return int(raw)
            except ValueError:
                raise RequestError(
                    ErrorKind.BAD_REQUEST, f"{name}: expected an integer, got {shown(raw)}"
                ) from None

        lines = number("lines")
        lines = DEFAULT_LINES if lines is None else lines
        if not 1 <= lines <= MAX_LINES:
            raise RequestError(
                ErrorKind.BAD_REQUEST, f"lines: must be between 1 and {MAX_LINES}, got {shown(lines)}"
            )
        instance = number("instance")
        if instance is not None and instance < 0:
            raise RequestError(ErrorKind.BAD_REQUEST, f"instance: must be ≥ 0, got {shown(instance)}")
        follow = params.get("follow", "0").lower() in ("1", "true", "yes")
        node = params.get("node") or None
        return cls(artifact=artifact, instance=instance, node=node, lines=lines, follow=follow)

    def for_node(self, node_id: str) -> dict[str, str]:
        """The query string that asks node `node_id` for its own instances of this request."""
        params = {"node": node_id, "lines": str(self.lines)}
        if self.instance is not None:
            params["instance"] = str(self.instance)
        if self.follow:
            params["follow"] = "1"
        return params


def choose(artifact_id: str, instances: list[InstanceInfo], request: LogRequest) -> list[InstanceInfo]:
    """The instances `request` names; none is a not-found error that lists what there is. Pure."""
    if not instances:
        raise RequestError(
            ErrorKind.NOT_FOUND,
            f"no instance of {artifact_id} exists in the cluster (`aether slice list` shows what runs)",
        )
    chosen = [
        i
        for i in instances
        if (request.instance is None or i.instance == request.instance)
        and (request.node is None or i.node_id == request.node)
    ]
    if not chosen:
        wanted = "instance" if request.instance is None else f"instance {request.instance}"
        wanted += f" on node {request.node}" if request.node else ""
        there = ", ".join(f"{i.node_id}/{i.instance}" for i in instances)
        raise RequestError(ErrorKind.NOT_FOUND, f"{artifact_id} has no {wanted}; its instances: {there}")
    return chosen


def _line(info: InstanceInfo, line: str) -> bytes:
    record = LogLine(node_id=info.node_id, artifact=info.artifact, instance=info.instance, line=line)
    return json.dumps(to_json(record)).encode() + b"\n"


# ---------------------------------------------------------------- the service


class SliceLogs:
    """`tail` and `follow` for the management API of node `node_id`, whose instances' output is
    `log_of(key)` (`SliceStore.log_of`)."""

    def __init__(
        self,
        node_id: str,
        handlers: Handlers,
        log_of: Callable[[InstanceKey], InstanceLog],
        *,
        tls: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self.node_id = node_id
        self.handlers = handlers
        self.log_of = log_of
        # the cluster's management APIs speak HTTPS from the cluster CA: this node's client context
        self.tls = tls

    async def _plan(self, request: LogRequest) -> tuple[list[InstanceInfo], dict[str, str]]:
        """This node's chosen instances, and the management address of each other node that has some."""
        artifact_id, instances = await self.handlers.instances_of(request.artifact)
        chosen = choose(artifact_id, instances, request)
        local = [i for i in chosen if i.node_id == self.node_id]
        others = sorted({i.node_id for i in chosen} - {self.node_id})
        addresses: dict[str, str] = {}
        if others:
            registered: dict[str, NodeInfo] = {n.node_id: n for n in await self.handlers.nodes()}
            for node_id in others:
                node = registered.get(node_id)
                if node is None or not node.management:
                    why = "is not registered (down?)" if node is None else "serves no management API"
                    raise RequestError(
                        ErrorKind.UNAVAILABLE,
                        f"node {node_id} {why}: cannot fetch the logs of its instances of {artifact_id}",
                    )
                addresses[node_id] = node.management
        return local, addresses

    @staticmethod
    def _unreadable(log: InstanceLog, error: OSError) -> RequestError:
        return RequestError(
            ErrorKind.UNAVAILABLE, f"cannot read the log {log.path}: {error.strerror or error}"
        )

    def _key(self, info: InstanceInfo) -> InstanceKey:
        return InstanceKey(info.node_id, Coordinates.parse(info.artifact), info.instance)

    async def tail(self, request: LogRequest, headers: Mapping[str, str]) -> list[InstanceLogs]:
        """The last lines of each chosen instance, this node's first, then the others' in node order."""
        local, addresses = await self._plan(request)
        found = []
        for info in local:
            log = self.log_of(self._key(info))
            try:
                lines = await trio.to_thread.run_sync(log.tail, request.lines)
            except OSError as error:
                raise self._unreadable(log, error) from None
            found.append(
                InstanceLogs(
                    node_id=info.node_id, artifact=info.artifact, instance=info.instance, lines=tuple(lines)
                )
            )
        async with httpx.AsyncClient(timeout=PEER_TIMEOUT, verify=self._verify()) as client:
            for node_id, address in addresses.items():
                answer = await self._ask(client, node_id, address, request, headers)
                try:
                    found += [from_json(item, InstanceLogs) for item in answer.json()]
                except (ValueError, TypeError) as error:  # not this API's answer (JSON, models)
                    raise RequestError(
                        ErrorKind.UNAVAILABLE,
                        f"node {node_id} ({address}) answered what is not logs: {error}",
                    ) from None
        return found

    async def _ask(
        self,
        client: httpx.AsyncClient,
        node_id: str,
        address: str,
        request: LogRequest,
        headers: Mapping[str, str],
    ) -> httpx.Response:
        try:
            answer = await client.get(
                self._url(address, request), params=request.for_node(node_id), headers=_forwarded(headers)
            )
        except httpx.HTTPError as error:
            raise RequestError(
                ErrorKind.UNAVAILABLE, f"node {node_id} ({address}) did not give its logs: {error!r}"
            ) from None
        if answer.status_code != 200:
            raise _refusal(node_id, answer.status_code, answer.content)
        return answer

    def _verify(self) -> ssl.SSLContext | bool:
        return self.tls() if self.tls is not None else True

    def _url(self, address: str, request: LogRequest) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{address}/api/v1/slices/{quote(request.artifact, safe='')}/logs"

    async def plan_follow(
        self, request: LogRequest, headers: Mapping[str, str]
    ) -> Callable[[Send], Awaitable[None]]:
        """Check the request now (its errors are the answer's), and return what streams it: the last
        lines, then every new line, of each chosen instance, as JSON lines (`LogLine`), until each has
        gone away or the caller has."""
        local, addresses = await self._plan(request)

        async def stream(send: Send) -> None:
            async with trio.open_nursery() as outer:
                outer.start_soon(_heartbeat, send)
                async with trio.open_nursery() as nursery:
                    for info in local:
                        nursery.start_soon(self._follow_local, info, request.lines, send)
                    for node_id, address in addresses.items():
                        nursery.start_soon(self._follow_remote, node_id, address, request, headers, send)
                outer.cancel_scope.cancel()

        return stream

    async def _follow_local(self, info: InstanceInfo, count: int, send: Send) -> None:
        """The last `count` lines, then each line as the node writes it, until the instance's last
        process has ended (its lines all sent: a last line without a newline too)."""
        log = self.log_of(self._key(info))
        subscription = log.subscribe()  # and the tail with no checkpoint between: nothing lost
        rest = b""
        async with subscription.channel:  # closed however this ends (a follower gone mid-tail too)
            try:
                tail = log.open_tail()
                # on a worker thread: one endless line read back would stall the node's event loop
                lines = await trio.to_thread.run_sync(tail.lines, count)
            except OSError as error:
                await send(_error(info.node_id, self._unreadable(log, error).message))
                return
            for line in lines:
                await send(_line(info, line))
            async for chunk in subscription.channel:
                complete, rest = split_lines(rest + chunk)
                for line in complete:
                    await send(_line(info, line))
        if rest:
            await send(_line(info, rest.decode(errors="replace")))
        if subscription.dropped:
            await send(
                _error(
                    info.node_id,
                    f"this follower of {info.node_id}/{info.instance} fell more than {FOLLOWER_BUFFER}"
                    " chunks behind the instance's output and was dropped; follow again",
                )
            )

    async def _follow_remote(
        self, node_id: str, address: str, request: LogRequest, headers: Mapping[str, str], send: Send
    ) -> None:
        timeout = httpx.Timeout(PEER_TIMEOUT, read=PEER_SILENCE)  # a live stream beats every HEARTBEAT
        try:
            async with httpx.AsyncClient(timeout=timeout, verify=self._verify()) as client:
                url, params = self._url(address, request), request.for_node(node_id)
                async with client.stream("GET", url, params=params, headers=_forwarded(headers)) as answer:
                    if answer.status_code != 200:
                        refusal = _refusal(node_id, answer.status_code, await answer.aread())
                        await send(_error(node_id, refusal.message))
                        return
                    async for line in answer.aiter_lines():
                        if line.strip():
                            await send(line.encode() + b"\n")
        except httpx.ReadTimeout:
            await send(
                _error(
                    node_id,
                    f"node {node_id} ({address}) sent nothing for {PEER_SILENCE:g} s (not even its"
                    " heartbeat): it is down, paused or cut off; its logs stop here",
                )
            )
        except httpx.HTTPError as error:
            await send(_error(node_id, f"node {node_id} ({address}) stopped sending its logs: {error!r}"))


def _forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in FORWARDED if name in headers}


def _refusal(node_id: str, status: int, body: bytes) -> RequestError:
    """Another node's error answer as this request's error, saying which node answered it."""
    try:
        detail: Any = json.loads(body)["error"]
        kind, message = str(detail["kind"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        kind, message = str(ErrorKind.UNAVAILABLE), f"HTTP {status} {body[:200]!r}"
    return RequestError(kind, f"node {node_id}: {message}")


def _error(node_id: str, message: str) -> bytes:
    return json.dumps(to_json(LogLine(node_id=node_id, error=message))).encode() + b"\n"


async def _heartbeat(send: Send) -> None:
    """An empty line every HEARTBEAT seconds (readers skip them), until cancelled."""
    while True:
        await trio.sleep(HEARTBEAT)
        await send(b"\n")
