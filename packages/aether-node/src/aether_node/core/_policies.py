"""How the slice runtime retries and how long it waits: a restart policy and per-step deadlines. Pure
values, set in the node's configuration (`[restart]`, `[timeouts]`) and read by the runtime."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class RestartPolicy:
    """A process that dies while wanted is restarted after `initial`·2ⁿ s (capped at `maximum`); the
    `max_restarts`-th death within `window` s ends in FAILED."""

    max_restarts: int = 5
    window: float = 60.0
    initial: float = 0.25
    maximum: float = 4.0

    def delay(self, restarts: int) -> float:
        return min(self.initial * 2 ** max(restarts - 1, 0), self.maximum)


@attrs.frozen(kw_only=True)
class HealthChecks:
    """An ACTIVE instance that has sent nothing for `interval` s is asked `health`; one that leaves
    `failures` checks in a row unanswered for `timeout` s each is hung (stopped, or its event loop
    blocked): the node kills it and restarts it as it restarts one that died (configurable per node)."""

    interval: float = 10.0
    timeout: float = 5.0
    failures: int = 3


@attrs.frozen(kw_only=True)
class StepTimeouts:
    """Per-step deadlines in seconds (configurable per node)."""

    install: float = 300.0
    load: float = 30.0
    activate: float = 30.0
    deactivate: float = 15.0
    invoke: float = 30.0
    template_idle: float = 60.0  # a slice template with no instance left is stopped after this long
