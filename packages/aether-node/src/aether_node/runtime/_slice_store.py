"""SliceStore: the slice instances of this node — load (install + spawn + import), activate (start),
deactivate (stop), unload (end the process). It does not touch the KV; the NodeDeploymentManager decides
when, and records the outcomes."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import trio

from aether_kv import out_of_files_hint
from aether_slice.protocol import Kind

from ..core._coordinates import Coordinates
from ..core._errors import NodeError, ResolutionError, SliceHostError, StepTimeoutError
from ..core._policies import StepTimeouts
from ..core._schema import InstanceKey
from ._installer import InstalledSlice, SliceInstaller
from ._instance_log import InstanceLog, LogLimits
from ._lifecycle import Phase
from ._memory_cgroup import MemoryCgroups
from ._node_problems import LogTrouble, NodeProblems
from ._slice_host import Ahead, CallHandler, SliceHost, SliceTemplate

memory_log = logging.getLogger("aether_node.memory")


@attrs.define(eq=False)
class LocalInstance:
    key: InstanceKey
    host: SliceHost
    entry_points: dict[str, bool]  # name → idempotent
    phase: Phase = Phase.LOADED
    in_flight: int = 0
    withdrawn: bool = True  # its endpoints are withdrawn (or being): nothing may publish them again
    starting: Ahead | None = None  # its START, sent right behind its LOAD (`SliceStore.load(start=True)`)

    @property
    def alive(self) -> bool:
        return not self.host.exited.is_set()


def describe_failure(step: str, error: Exception) -> str:
    """A reason a person can read, for the FAILED record."""
    if isinstance(error, ResolutionError):
        return f"{step}: cannot resolve the slice ({error.kind}): {error.message}"
    if isinstance(error, StepTimeoutError):
        return f"{step}: timed out: {error.message}"
    if isinstance(error, SliceHostError):
        if not (error.detail and error.detail.strip()):
            return f"{step}: the slice failed ({error.kind}): {error.message}"
        # (the traceback's last line, if it says more than the message; the instance logged it whole)
        last = error.detail.strip().splitlines()[-1]
        detail = "" if last in error.message else f" [{last}]"
        return (
            f"{step}: the slice failed ({error.kind}): {error.message}{detail}"
            " (the traceback is in the instance's log: `aether slice logs`)"
        )
    if isinstance(error, NodeError):
        return f"{step}: {error.message}"
    if (hint := out_of_files_hint(error)) is not None:
        return f"{step}: {error}: {hint}"
    return f"{step}: unexpected {type(error).__name__}: {error}"


class SliceStore:
    def __init__(
        self,
        nursery: trio.Nursery,
        installer: SliceInstaller,
        logs_dir: Path,
        on_call: CallHandler,
        timeouts: StepTimeouts = StepTimeouts(),  # noqa: B008 (a frozen value)
        log_limits: LogLimits = LogLimits(),  # noqa: B008 (a frozen value)
        cgroups: MemoryCgroups | None = None,
        memory_mib: Callable[[str], int] = lambda artifact_id: 0,
        problems: NodeProblems | None = None,
    ) -> None:
        self._nursery = nursery
        # what is wrong on this node, for its registration (here: instance output that cannot be written)
        self.problems = problems or NodeProblems()
        self.log_trouble = LogTrouble(self.problems, logs_dir)
        # Where an instance of a slice that declares memory_mib (`memory_mib(artifact_id)`) gets a memory
        # cgroup with that limit (None: nowhere, the health checks look at its memory instead).
        self.cgroups = cgroups
        self.memory_mib = memory_mib
        self.installer = installer
        self.logs_dir = logs_dir
        self.log_limits = log_limits
        self.logs: dict[InstanceKey, InstanceLog] = {}  # every instance that ran here: its output
        self._on_call = on_call
        self.timeouts = timeouts
        self.instances: dict[InstanceKey, LocalInstance] = {}
        self._templates: dict[tuple[Coordinates, str], SliceTemplate] = {}
        self._template_locks: dict[tuple[Coordinates, str], trio.Lock] = {}
        # called with each instance as it becomes ACTIVE (the health checks start watching it)
        self.activation_listeners: set[Callable[[LocalInstance], None]] = set()

    async def _template(self, installed: InstalledSlice, config: dict[str, Any]) -> SliceTemplate:
        """The running fork server of this slice version and config, started on first use (or after it
        died). One per config: the template imports the slice with it (a blueprint gives all the
        instances of a slice one config, so a version has one template)."""
        coordinates = installed.coordinates
        key = (coordinates, json.dumps(config, sort_keys=True))
        async with self._template_locks.setdefault(key, trio.Lock()):
            template = self._templates.get(key)
            if template is None or not template.alive:
                stem = f"{coordinates.distribution}-{coordinates.version}"
                template = SliceTemplate(installed, self.logs_dir / f"{stem}-template.log", config)
                await template.start(self._nursery)
                self._templates[key] = template
            template.users += 1  # (the caller releases it: `_release`)
            return template

    @staticmethod
    def _release(template: SliceTemplate) -> None:
        """An instance of `template` ended (or was never made): the template is idle when none is left."""
        template.users -= 1
        if template.users == 0:
            template.idle_since = trio.current_time()

    async def retire_idle_templates(self) -> None:
        """Stop every template that has had no instance for `timeouts.template_idle` s, until cancelled:
        one per slice version and config ran for the node's lifetime, a process (~15 MiB) left behind by
        every upgrade. The next instance of its version and config starts it again."""
        idle = self.timeouts.template_idle
        while True:
            await trio.sleep(idle / 2)
            now = trio.current_time()
            for key, template in list(self._templates.items()):
                if template.users or now - template.idle_since < idle:
                    continue
                async with self._template_locks[key]:
                    if self._templates.get(key) is template and not template.users:
                        del self._templates[key]
                        await template.stop()

    def log_path(self, key: InstanceKey) -> Path:
        """The file of instance `key`'s stdout and stderr (kept after it ends; appended on restart;
        rotated by `InstanceLog` to `.1` … `.{keep}`)."""
        return self.logs_dir / f"{key.coordinates.distribution}-{key.coordinates.version}-{key.instance}.log"

    def log_of(self, key: InstanceKey) -> InstanceLog:
        """The output of instance `key`: its `InstanceLog` if it ran in this node process, else one over
        its files only (one that ran before a restart of the node; nothing will be written to it)."""
        return self.logs.get(key) or InstanceLog(self.log_path(key), self.log_limits)

    def get(self, key: InstanceKey) -> LocalInstance | None:
        return self.instances.get(key)

    def active(self) -> Iterator[LocalInstance]:
        return (i for i in self.instances.values() if i.phase is Phase.ACTIVE and i.alive)

    async def load(
        self, key: InstanceKey, config: dict[str, Any], *, start: bool = False, first: bool = False
    ) -> LocalInstance:
        """Install (if needed), spawn the host and import the slice. With `start`, the START of the
        activation that follows is sent right behind the LOAD (one exchange with the process, not two;
        the host serves them in order): `activate` then awaits its answer, and must follow at once (the
        deployment manager calls it with no checkpoint in between). `first`: the first process of a new
        instance (its log says so where an earlier instance of the same number wrote lines). Raises
        NodeError subclasses."""
        with trio.fail_after(self.timeouts.install):
            installed = await self.installer.install(key.coordinates)
        template = await self._template(installed, config)
        try:
            instance = await self._fork_and_load(key, template, config, start, first)
        except BaseException:
            self._release(template)
            raise
        self.instances[key] = instance
        return instance

    async def _fork_and_load(
        self, key: InstanceKey, template: SliceTemplate, config: dict[str, Any], start: bool, first: bool
    ) -> LocalInstance:
        log = self.logs.get(key)
        if log is None:
            log = self.logs[key] = InstanceLog(self.log_path(key), self.log_limits, self.log_trouble)
        if first:
            log.mark_new_instance(key.label, time.strftime("%Y-%m-%d %H:%M:%S %Z"))
        try:
            read_end, write_end = log.open_pipe()
        except OSError as error:
            hint = out_of_files_hint(error)
            why = f"{key.label}: cannot make the pipe for its output: {error}" + (f": {hint}" if hint else "")
            raise SliceHostError("log", why) from None
        self._nursery.start_soon(log.drain, read_end)
        limit = self.memory_mib(key.coordinates.artifact_id) if self.cgroups is not None else 0
        cgroup = (
            self.cgroups.create(f"{key.coordinates.distribution}-{key.instance}", limit) if limit else None
        )
        try:
            host = await SliceHost.spawn(
                self._nursery,
                template,
                label=key.label,
                name=f"{key.coordinates.artifact}#{key.instance}",
                config=config,
                output=write_end,
                log_path=self.log_path(key),
                on_call=self._on_call,
                cgroup=cgroup,
            )
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
        finally:
            os.close(write_end)  # the process holds its own copy now (or never will): the pipe is its
        try:
            loading = host.send_ahead(
                Kind.LOAD,
                entry_point=key.coordinates.artifact_id,
                coordinates=str(key.coordinates),
                instance=key.instance,
                config=config,
            )
            starting = host.send_ahead(Kind.START) if start else None
            reply = await host.result_of(loading, self.timeouts.load)  # (the fork's time included)
            host.loaded(reply)
            if cgroup is not None and host.pid is not None:
                host.hard_limited = cgroup.holds(host.pid)
                if not host.hard_limited:
                    memory_log.warning(
                        "%s: not in its memory cgroup (its log says why): its memory is checked every 2 s",
                        key.label,
                    )
        except BaseException:
            await host.close(grace=0)  # (a START sent ahead is answered None: nobody waits for it)
            raise
        entries = {str(e["name"]): bool(e.get("idempotent")) for e in reply.get("entry_points", [])}
        return LocalInstance(key=key, host=host, entry_points=entries, starting=starting)

    async def activate(self, instance: LocalInstance) -> None:
        """Run the slice's start hook (the answer to the START sent with the load, if it was)."""
        starting, instance.starting = instance.starting, None
        if starting is not None:
            await instance.host.result_of(starting, self.timeouts.activate)
        else:
            await instance.host.request(Kind.START, self.timeouts.activate)
        instance.phase = Phase.ACTIVE
        for listener in list(self.activation_listeners):
            listener(instance)

    async def deactivate(self, instance: LocalInstance) -> None:
        instance.phase = Phase.LOADED
        await instance.host.request(Kind.STOP, self.timeouts.deactivate)

    async def unload(self, key: InstanceKey) -> None:
        instance = self.instances.pop(key, None)
        if instance is not None:
            try:
                await instance.host.close()
            finally:
                self._release(instance.host.template)

    async def close_all(self) -> None:
        """Stop every instance: stop hooks for active ones (bounded), then end every process."""
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for key, instance in list(self.instances.items()):
                    nursery.start_soon(self._stop_and_unload, key, instance)
            for template in self._templates.values():
                await template.stop()

    async def _stop_and_unload(self, key: InstanceKey, instance: LocalInstance) -> None:
        if instance.phase is Phase.ACTIVE and instance.alive:
            try:
                await self.deactivate(instance)
            except NodeError:
                pass
        await self.unload(key)
