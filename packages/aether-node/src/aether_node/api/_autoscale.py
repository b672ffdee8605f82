"""`aether slice autoscale status|set|pause|resume`: an autoscaled slice's state and an operator's run-time
settings (`cluster/autoscale/{group:artifact}`, `AutoscaleSettings`). Protocol-agnostic like `_handlers`:
typed request in, typed result out, or a RequestError. Bad input is refused before anything is written;
the leader's autoscaler (`control/_autoscaler.py`) reads the settings on its next pass.

With `signals`, a status also carries the figures the controller compares with the targets (CPU, p99,
calls per second and in flight per instance), for the dashboard's charts. Only the leader keeps a
window, so the node that answers measures them itself: it reads every node's usage (as the leader does,
over the peer connections) and compares the reading with its own earlier one at least SIGNAL_SPAN
seconds old (kept in memory, the last SIGNAL_KEEP seconds). The first request, or one after a long
pause, has no signals yet.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..client import AutoscaleDecision, AutoscaleStatus
from ..control._autoscale import reading_for
from ..control._autoscale import signals as signals_between
from ..control._autoscale_plan import Scaled, artifact_id_of, autoscaled
from ..control._autoscale_settings import SETTABLE, bound_problems, read_changes
from ..control._autoscaler import decode_log, decode_settings
from ..control._write_guard import holds_setting
from ..core._error_kinds import ErrorKind
from ..core._errors import RequestError
from ..core._records import AutoscaleSettings, encode_record
from ..core._schema import AUTOSCALE, AUTOSCALE_DECISIONS, autoscale_decisions_key, autoscale_key
from ._handlers import Handlers

OPERATIONS = ("pause", "resume")
SIGNAL_SPAN = 1.5  # seconds: the shortest interval signals are measured over (shorter ones are noise)
SIGNAL_KEEP = 30.0  # seconds of earlier usage readings kept for that


class AutoscaleOperations:
    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self.kv = handlers.kv
        self.clock = handlers.clock
        self._usage: list[tuple[float, dict[str, Any]]] = []  # (when, node id → usage answer)

    async def _targets(self) -> tuple[dict[str, Scaled], dict[str, AutoscaleSettings]]:
        await self.handlers._fresh()
        settings = decode_settings(await self.handlers._read(AUTOSCALE))
        blueprints = (await self.handlers._blueprints()).values()
        return {t.artifact_id: t for t in autoscaled(blueprints, settings)}, settings

    async def _target(self, artifact: str) -> tuple[Scaled, AutoscaleSettings | None]:
        targets, settings = await self._targets()
        artifact_id = await self.handlers.named_slice(artifact)
        target = targets.get(artifact_id)
        if target is None:
            deployed = any(
                artifact_id_of(s) == artifact_id
                for b in (await self.handlers._blueprints()).values()
                for s in b.slices
            )
            why = (
                "its blueprint has no [slices.autoscale] table (or several blueprints deploy it)"
                if deployed
                else "no blueprint deploys it"
            )
            raise RequestError(ErrorKind.NOT_FOUND, f"{artifact_id} is not autoscaled: {why}")
        return target, settings.get(artifact_id)

    async def status(
        self, artifact: str | None = None, *, signals: bool = False
    ) -> list[AutoscaleStatus] | AutoscaleStatus:
        if artifact is not None:
            target, own = await self._target(artifact)
            found = await self._statuses([target], {target.artifact_id: own})
        else:
            targets, settings = await self._targets()
            found = await self._statuses(list(targets.values()), settings)
        if signals and found:
            found = await self._with_signals(found)
        return found[0] if artifact is not None else found

    async def _with_signals(self, statuses: list[AutoscaleStatus]) -> list[AutoscaleStatus]:
        """`statuses` with the signals between this node's usage reading now and its newest reading at
        least SIGNAL_SPAN seconds older (none if there is no such reading)."""
        now = self.clock()
        answers = await self.handlers.invoker.usage_readings(await self.handlers._nodes())
        self._usage = [(at, old) for at, old in self._usage if now - SIGNAL_KEEP <= at < now]
        earlier = [(at, old) for at, old in self._usage if at <= now - SIGNAL_SPAN]
        self._usage.append((now, answers))
        if not earlier:
            return statuses
        at, old = earlier[-1]
        found = []
        for status in statuses:
            figures = signals_between(
                reading_for(status.artifact, at, old), reading_for(status.artifact, now, answers)
            )
            found.append(
                status if figures is None else attrs.evolve(status, signals=figures, signals_s=now - at)
            )
        return found

    async def _statuses(
        self, targets: list[Scaled], settings: dict[str, AutoscaleSettings | None]
    ) -> list[AutoscaleStatus]:
        instances = await self.handlers._instances()
        logs = await self.handlers._read(AUTOSCALE_DECISIONS)
        found = []
        for target in targets:
            key = autoscale_decisions_key(target.artifact_id)
            log = decode_log(key, logs[key].value if key in logs else None)
            own = settings.get(target.artifact_id)
            found.append(
                AutoscaleStatus(
                    artifact=target.artifact_id,
                    blueprint=target.blueprint,
                    instances=target.slice.instances,
                    active=sum(
                        1 for i in instances if i.artifact == target.slice.artifact and i.state == "ACTIVE"
                    ),
                    min=target.spec.min,
                    max=target.spec.max,
                    targets=target.spec.targets(),
                    settings={
                        name: value
                        for name in SETTABLE
                        if own is not None and (value := getattr(own, name)) is not None
                    },
                    paused=target.paused,
                    decisions=tuple(
                        AutoscaleDecision(**attrs.asdict(entry, recurse=False))
                        for entry in (log.entries if log else ())
                    ),
                )
            )
        return found

    async def set(self, artifact: str, raw: Any, *, since: int | None = None) -> AutoscaleStatus:
        """Lay `raw` (name → value; a None value changes nothing) over the slice's table and its earlier
        settings; refused, changing nothing, if a value is bad, or min and max do not fit together or go
        below the floor: the refusal names every bad setting at once (an unknown slice is refused first:
        nothing can be checked against it). Not over settings changed after `since` (the revision the
        client read) to others."""
        if not isinstance(raw, dict):
            raise RequestError(ErrorKind.BAD_REQUEST, "the settings must be a JSON object")
        changes, problems = read_changes(raw)
        target, own = await self._target(artifact)
        updated = attrs.evolve(own or AutoscaleSettings(), **changes, updated=self.clock())
        bad = {name for name in SETTABLE if raw.get(name) is not None and name not in changes}
        problems += bound_problems(
            target.slice.autoscale or target.spec, updated, min_available=target.slice.min_available, bad=bad
        )
        if problems:
            raise RequestError(ErrorKind.BAD_REQUEST, f"{target.artifact_id}: {'; '.join(problems)}")
        return await self._write(target, updated, since)

    async def operation(self, artifact: str, operation: str, *, since: int | None = None) -> AutoscaleStatus:
        if operation not in OPERATIONS:
            raise RequestError(
                ErrorKind.NOT_FOUND,
                f"no autoscale operation {operation!r} (known: status, set, {', '.join(OPERATIONS)})",
            )
        target, own = await self._target(artifact)
        updated = attrs.evolve(own or AutoscaleSettings(), paused=operation == "pause", updated=self.clock())
        return await self._write(target, updated, since)

    async def _write(self, target: Scaled, settings: AutoscaleSettings, since: int | None) -> AutoscaleStatus:
        await self.handlers.set_guarded(
            autoscale_key(target.artifact_id),
            encode_record(settings),
            holds=holds_setting(settings),
            since=since,
            what=f"the autoscaling settings of {target.artifact_id}",
        )
        result = await self.status(target.artifact_id)
        assert isinstance(result, AutoscaleStatus)
        return result
