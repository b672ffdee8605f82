"""One agent at a time. The service admits one agent and holds the cluster's agent lease for it (through
the management API: `POST /api/v1/agent-lease`), renewing it while that agent is connected.

"Connected" depends on the transport:
- stdio: the agent is the process on the other end of the pipe; it leaves when the pipe closes.
- Streamable HTTP with a session (protocol versions before 2026-07-28): it leaves when it ends its session
  (DELETE), or after `idle_timeout` without a request.
- Streamable HTTP without sessions (2026-07-28): each request stands alone, so an agent counts as connected
  while it has a request in flight, a `subscriptions/listen` stream open, or made a request within
  `idle_timeout`.
If this service dies, the cluster drops the lease itself `ttl` seconds after the last renewal.

`decide` is the pure rule; `AgentGate` carries it out.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

from aether_node.client import ErrorKind

from ._errors import AgentBusyError, ClusterError
from ._gateway import ClusterGateway

log = logging.getLogger("aether_mcp.agent")


MAX_HOLDER = 200  # characters of the agent lease's holder the node takes (`api/_agent_lease.py`)


def holder_of(agent: Agent, service: str) -> str:
    """The agent lease's holder: who the agent is, through which service; at most `MAX_HOLDER` characters
    (the node refuses a longer one, and that agent was never admitted)."""
    holder = f"{agent.description} via {service}"
    return holder if len(holder) <= MAX_HOLDER else holder[: MAX_HOLDER - 1] + "…"


@attrs.frozen
class Agent:
    """`key` tells agents apart; `description` is what another agent is told about this one."""

    key: str
    description: str


class Verdict(enum.Enum):
    SAME = "same"  # the admitted agent again
    TAKE = "take"  # nobody is admitted: admit this one
    REPLACE = "replace"  # the admitted agent has gone quiet: release its lease, admit this one
    REFUSE = "refuse"  # another agent is connected


def decide(
    current: Agent | None, candidate: Agent, *, busy: bool, last_seen: float, now: float, idle_timeout: float
) -> Verdict:
    """Whether `candidate` may operate the cluster through this service. `busy`: the current agent has a
    request in flight or a stream open."""
    if current is None:
        return Verdict.TAKE
    if current.key == candidate.key:
        return Verdict.SAME
    if not busy and now - last_seen >= idle_timeout:
        return Verdict.REPLACE
    return Verdict.REFUSE


def service_description(transport: str, listen: str | None = None) -> str:
    where = f" on {listen}" if listen else ""
    return f"aether-mcp ({transport}{where}, pid {os.getpid()} on {socket.gethostname()})"


def _renew(client: Any, *, holder: str, token: str, ttl: float) -> Any:
    return client.acquire_agent_lease(holder, token, ttl)


class AgentGate:
    def __init__(
        self,
        gateway: ClusterGateway,
        *,
        service: str,
        ttl: float,
        idle_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.service = service
        self.ttl = ttl
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.current: Agent | None = None
        self._token = ""
        self._last_seen = 0.0
        self._in_flight = 0
        self._lock = anyio.Lock()

    @property
    def holder(self) -> str:
        return f"{self.current.description} via {self.service}" if self.current else ""

    async def admit(self, agent: Agent) -> None:
        """Let `agent` through, taking the cluster's lease for it if needed; AgentBusyError otherwise."""
        async with self._lock:
            now = self.clock()
            verdict = decide(
                self.current,
                agent,
                busy=self._in_flight > 0,
                last_seen=self._last_seen,
                now=now,
                idle_timeout=self.idle_timeout,
            )
            if verdict is Verdict.REFUSE:
                assert self.current is not None
                raise AgentBusyError(
                    f"another agent is operating this cluster: {self.holder}. Only one agent at a time:"
                    f" {self._when_free(now)}"
                )
            if verdict is Verdict.REPLACE:
                await self._release_locked()
            if verdict is not Verdict.SAME:
                await self._acquire_locked(agent)
            self._last_seen = now

    def _when_free(self, now: float) -> str:
        """When the admitted agent will have gone quiet, as far as this service can tell now."""
        if self._in_flight:
            return (
                "it has a request in flight or a stream open; try again once it has been"
                f" {self.idle_timeout:g} s without one (or when it disconnects)."
            )
        quiet_for = now - self._last_seen
        left = max(0.0, self.idle_timeout - quiet_for)
        return f"try again in {left:.0f} s (it made a request {quiet_for:.0f} s ago), or when it disconnects."

    async def _acquire_locked(self, agent: Agent) -> None:
        token = secrets.token_urlsafe(24)
        holder = holder_of(agent, self.service)
        try:
            await self.gateway.call(lambda c: c.acquire_agent_lease(holder, token, self.ttl))
        except ClusterError as error:
            if error.kind == ErrorKind.CONFLICT:
                raise AgentBusyError(error.message) from None
            if error.kind != ErrorKind.FORBIDDEN:
                raise
            # A viewer key may not take the lease, and cannot change anything either: no lease needed.
            log.info("no agent lease: %s", error.message)
            token = ""
        self.current, self._token = agent, token

    async def _release_locked(self) -> None:
        token, self.current, self._token = self._token, None, ""
        if token:
            try:
                await self.gateway.call(lambda c: c.release_agent_lease(token))
            except ClusterError:
                pass  # unreachable: the cluster drops it after ttl anyway

    async def release(self, agent_key: str | None = None) -> None:
        """The agent left (or the service stops): give the lease back at once. With `agent_key`, only if
        that agent is the admitted one."""
        async with self._lock:
            if self.current is not None and (agent_key is None or agent_key == self.current.key):
                await self._release_locked()

    @asynccontextmanager
    async def serving(self, agent: Agent) -> AsyncIterator[None]:
        """Admit `agent` for one request (or one open stream): it counts as connected until the end."""
        await self.admit(agent)
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._last_seen = self.clock()

    async def keep(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Renew the lease every ttl/3 while the agent is connected; let it go once it has gone quiet."""
        task_status.started()
        while True:
            await anyio.sleep(self.ttl / 3)
            async with self._lock:
                if self.current is None:
                    continue
                quiet = self._in_flight == 0 and self.clock() - self._last_seen >= self.idle_timeout
                if quiet:
                    await self._release_locked()
                    continue
                if not self._token:
                    continue  # admitted without a lease (a viewer key)
                renew = functools.partial(_renew, holder=self.holder, token=self._token, ttl=self.ttl)
                try:
                    await self.gateway.call(renew)
                except ClusterError as error:
                    if error.kind == ErrorKind.CONFLICT:  # lost it (a long partition): re-admit the agent
                        self.current, self._token = None, ""
