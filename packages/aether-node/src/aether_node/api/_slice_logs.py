"""Slice instance logs for the management API: the last lines of an instance's output (its stdout and
stderr, in the file `SliceStore.log_path` gives it on its node) and, when followed, each line written
after them. Any node answers: the instances on another node are fetched from that node's management API
with the caller's own credentials (so the other node checks them too).

It reads files and sends HTTP; which instances exist is the KV's word (`Handlers.instances_of`). A file
or a peer that fails is an error of this request only (a RequestError), never of the node.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
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
from ._handlers import Handlers

DEFAULT_LINES = 100
POLL = 0.2  # seconds between looks at a followed file that did not grow
PEER_TIMEOUT = 10.0  # seconds another node has to answer for its instances' last lines
_BLOCK = 64 * 1024
FORWARDED = ("authorization", "x-api-key")  # the caller's credentials, sent on to the other node

Send = Callable[[bytes], Awaitable[None]]


# ---------------------------------------------------------------- files (pure but for the reads)


def split_lines(buffer: bytes) -> tuple[list[str], bytes]:
    """The complete lines of `buffer` (decoded, newline dropped) and the incomplete rest."""
    *complete, rest = buffer.split(b"\n")
    return [line.decode(errors="replace").rstrip("\r") for line in complete], rest


def read_tail(path: Path, count: int) -> tuple[list[str], int]:
    """The last `count` complete lines of `path`, and the offset just after them (where following
    starts). No file yet (the instance wrote nothing): no lines, offset 0."""
    try:
        with open(path, "rb") as file:
            start = file.seek(0, os.SEEK_END)
            data = b""
            while start > 0 and data.count(b"\n") <= count:
                step = min(_BLOCK, start)
                start -= step
                file.seek(start)
                data = file.read(step) + data
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    lines, _ = split_lines(data[:end])
    return lines[-count:], start + end


def read_from(path: Path, offset: int) -> tuple[bytes, int]:
    """What `path` holds from `offset` on, and the offset to read from next; a file cut shorter than
    `offset` (rotated by hand) is read again from its start."""
    try:
        with open(path, "rb") as file:
            if file.seek(0, os.SEEK_END) < offset:
                offset = 0
            file.seek(offset)
            data = file.read(_BLOCK)
    except FileNotFoundError:
        return b"", 0
    return data, offset + len(data)


# ---------------------------------------------------------------- the request


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
                    ErrorKind.BAD_REQUEST, f"{name}: expected an integer, got {raw[:40]!r}"
                ) from None

        lines = number("lines")
        lines = DEFAULT_LINES if lines is None else lines
        if not 1 <= lines <= MAX_LINES:
            raise RequestError(
                ErrorKind.BAD_REQUEST, f"lines: must be between 1 and {MAX_LINES}, got {lines}"
            )
        instance = number("instance")
        if instance is not None and instance < 0:
            raise RequestError(ErrorKind.BAD_REQUEST, f"instance: must be ≥ 0, got {instance}")
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
    """`tail` and `follow` for the management API of node `node_id`, whose instances' files are at
    `log_path(key)` and which run while `running(key)`."""

    def __init__(
        self,
        node_id: str,
        handlers: Handlers,
        log_path: Callable[[InstanceKey], Path],
        running: Callable[[InstanceKey], bool],
        *,
        tls: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self.node_id = node_id
        self.handlers = handlers
        self.log_path = log_path
        self.running = running
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
    async def _read(reader: Callable[[Path, int], Any], path: Path, number: int) -> Any:
        """`reader(path, number)` in a thread; a file that cannot be read is this request's error."""
        try:
            return await trio.to_thread.run_sync(reader, path, number)
        except OSError as error:
            raise RequestError(
                ErrorKind.UNAVAILABLE, f"cannot read the log {path}: {error.strerror or error}"
            ) from None

    def _key(self, info: InstanceInfo) -> InstanceKey:
        return InstanceKey(info.node_id, Coordinates.parse(info.artifact), info.instance)

    async def tail(self, request: LogRequest, headers: Mapping[str, str]) -> list[InstanceLogs]:
        """The last lines of each chosen instance, this node's first, then the others' in node order."""
        local, addresses = await self._plan(request)
        found = []
        for info in local:
            lines, _ = await self._read(read_tail, self.log_path(self._key(info)), request.lines)
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
            async with trio.open_nursery() as nursery:
                for info in local:
                    nursery.start_soon(self._follow_local, info, request.lines, send)
                for node_id, address in addresses.items():
                    nursery.start_soon(self._follow_remote, node_id, address, request, headers, send)

        return stream

    async def _follow_local(self, info: InstanceInfo, count: int, send: Send) -> None:
        key = self._key(info)
        path = self.log_path(key)
        try:
            await self._follow_file(info, key, path, count, send)
        except RequestError as error:
            await send(_error(info.node_id, error.message))

    async def _follow_file(
        self, info: InstanceInfo, key: InstanceKey, path: Path, count: int, send: Send
    ) -> None:
        lines, offset = await self._read(read_tail, path, count)
        for line in lines:
            await send(_line(info, line))
        rest = b""
        while True:
            alive = self.running(key)  # before the read: a line written just before it ended is sent
            data, offset = await self._read(read_from, path, offset)
            if data:
                complete, rest = split_lines(rest + data)
                for line in complete:
                    await send(_line(info, line))
                continue
            if not alive:
                return
            await trio.sleep(POLL)

    async def _follow_remote(
        self, node_id: str, address: str, request: LogRequest, headers: Mapping[str, str], send: Send
    ) -> None:
        timeout = httpx.Timeout(PEER_TIMEOUT, read=None)  # a followed log may be quiet for long
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
