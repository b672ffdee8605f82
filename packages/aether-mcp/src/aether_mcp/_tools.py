"""The MCP tools: one per command of the `aether` CLI, named `{group}_{command}`, taking what the command
takes and answering what `aether ... --json` prints. Thin adapters over the management API client: the
command handlers in `aether_node` do the work, so the CLI and the agent get the same results and the same
error sentences. `TOOLS` is the catalogue (the parity test walks it against the CLI).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import time
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import anyio
import attrs
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from aether_node.client import (
    EVENT_KINDS,
    ApiClient,
    Convergence,
    DrainWatch,
    autoscale_settings,
    to_json,
)

from ._errors import ClusterError
from ._gateway import ClusterGateway


class Refused(Exception):
    """A tool's answer is an error: `message` is what the agent reads (the CLI's sentence)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


@attrs.frozen
class ToolSpec:
    name: str
    cli: tuple[str, ...]  # the `aether` command it mirrors
    mutating: bool
    annotations: ToolAnnotations


def _reading(title: str) -> ToolAnnotations:
    return ToolAnnotations(title=title, read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def _changing(
    title: str, *, destructive: bool, idempotent: bool, open_world: bool = False
) -> ToolAnnotations:
    return ToolAnnotations(
        title=title,
        read_only_hint=False,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=open_world,
    )


TOOLS = (
    ToolSpec(
        "blueprint_apply",
        ("blueprint", "apply"),
        True,
        _changing("Apply a blueprint", destructive=True, idempotent=True),
    ),
    ToolSpec("blueprint_validate", ("blueprint", "validate"), False, _reading("Validate a blueprint")),
    ToolSpec("blueprint_get", ("blueprint", "get"), False, _reading("Show a blueprint")),
    ToolSpec("blueprint_list", ("blueprint", "list"), False, _reading("List blueprints")),
    ToolSpec(
        "blueprint_delete",
        ("blueprint", "delete"),
        True,
        _changing("Delete a blueprint", destructive=True, idempotent=True),
    ),
    ToolSpec("blueprint_status", ("blueprint", "status"), False, _reading("Blueprint status")),
    ToolSpec("slice_list", ("slice", "list"), False, _reading("List slice instances")),
    ToolSpec("slice_status", ("slice", "status"), False, _reading("Slice status")),
    ToolSpec(
        "slice_invoke",
        ("slice", "invoke"),
        True,
        _changing("Invoke a slice entry point", destructive=True, idempotent=False, open_world=True),
    ),
    ToolSpec("cluster_status", ("cluster", "status"), False, _reading("Cluster status")),
    ToolSpec("cluster_nodes", ("cluster", "nodes"), False, _reading("Cluster nodes")),
    ToolSpec("cluster_events", ("cluster", "events"), False, _reading("Recent cluster events")),
    ToolSpec(
        "cluster_forget",
        ("cluster", "forget"),
        True,
        _changing("Forget a node gone for good", destructive=True, idempotent=True),
    ),
    ToolSpec("blueprint_history", ("blueprint", "history"), False, _reading("Blueprint revisions")),
    ToolSpec(
        "blueprint_rollback",
        ("blueprint", "rollback"),
        True,
        _changing("Roll a blueprint back", destructive=True, idempotent=False),
    ),
    ToolSpec("blueprint_diff", ("blueprint", "diff"), False, _reading("What applying a blueprint changes")),
    ToolSpec(
        "slice_scale", ("slice", "scale"), True, _changing("Scale a slice", destructive=True, idempotent=True)
    ),
    ToolSpec(
        "slice_autoscale_status", ("slice", "autoscale", "status"), False, _reading("Autoscaled slices")
    ),
    ToolSpec(
        "slice_autoscale_set",
        ("slice", "autoscale", "set"),
        True,
        _changing("Change a slice's autoscaling targets", destructive=False, idempotent=True),
    ),
    ToolSpec(
        "slice_autoscale_pause",
        ("slice", "autoscale", "pause"),
        True,
        _changing("Pause a slice's autoscaling", destructive=False, idempotent=True),
    ),
    ToolSpec(
        "slice_autoscale_resume",
        ("slice", "autoscale", "resume"),
        True,
        _changing("Resume a slice's autoscaling", destructive=False, idempotent=True),
    ),
    ToolSpec(
        "slice_promote",
        ("slice", "promote"),
        True,
        _changing("Promote a slice's rollout", destructive=True, idempotent=False),
    ),
    ToolSpec(
        "slice_abort",
        ("slice", "abort"),
        True,
        _changing("Abort a slice's rollout", destructive=True, idempotent=False),
    ),
    ToolSpec(
        "slice_retry",
        ("slice", "retry"),
        True,
        _changing("Retry a slice's failed nodes now", destructive=False, idempotent=True),
    ),
    ToolSpec(
        "slice_pause",
        ("slice", "pause"),
        True,
        _changing("Pause a slice's rolling update", destructive=False, idempotent=True),
    ),
    ToolSpec(
        "slice_resume",
        ("slice", "resume"),
        True,
        _changing("Resume a slice's rolling update", destructive=False, idempotent=True),
    ),
    ToolSpec(
        "cluster_policy_show", ("cluster", "policy", "show"), False, _reading("The reconciliation policy")
    ),
    ToolSpec(
        "cluster_policy_set",
        ("cluster", "policy", "set"),
        True,
        _changing("Change the reconciliation policy", destructive=False, idempotent=True),
    ),
    ToolSpec(
        "cluster_rebalance",
        ("cluster", "rebalance"),
        True,
        _changing("End every rebalance delay now", destructive=True, idempotent=True),
    ),
    ToolSpec(
        "node_cordon",
        ("node", "cordon"),
        True,
        _changing("Cordon a node", destructive=False, idempotent=True),
    ),
    ToolSpec(
        "node_uncordon",
        ("node", "uncordon"),
        True,
        _changing("Put a node back on duty", destructive=False, idempotent=True),
    ),
    ToolSpec(
        "node_drain", ("node", "drain"), True, _changing("Drain a node", destructive=True, idempotent=True)
    ),
    ToolSpec(
        "node_stop", ("node", "stop"), True, _changing("Stop a node", destructive=True, idempotent=True)
    ),
    ToolSpec(
        "node_restart",
        ("node", "restart"),
        True,
        _changing("Restart a node", destructive=True, idempotent=False),
    ),
    ToolSpec(
        "key_create",
        ("key", "create"),
        True,
        _changing("Create an API key", destructive=False, idempotent=False),
    ),
    ToolSpec("key_list", ("key", "list"), False, _reading("List API keys")),
    ToolSpec(
        "key_revoke",
        ("key", "revoke"),
        True,
        _changing("Revoke an API key", destructive=True, idempotent=True),
    ),
    ToolSpec("cluster_backup", ("cluster", "backup"), False, _reading("Back the cluster's state up")),
    ToolSpec(
        "cluster_restore",
        ("cluster", "restore"),
        True,
        _changing("Restore a backup into a fresh cluster", destructive=False, idempotent=False),
    ),
    ToolSpec("slice_logs", ("slice", "logs"), False, _reading("What slice instances wrote")),
    ToolSpec("describe", ("describe",), False, _reading("One object with its events")),
)
SPECS = {spec.name: spec for spec in TOOLS}

Toml = Annotated[str, Field(description="The blueprint: TOML text, as in a blueprint file.")]
Source = Annotated[str, Field(description="A file name for error messages (file:line:col).")]
Name = Annotated[str, Field(description="The blueprint's name.")]
Artifact = Annotated[str, Field(description="The slice as group:artifact (or group:artifact:version).")]
Node = Annotated[str, Field(description="The node's id.")]
Force = Annotated[
    bool,
    Field(description="Stop or restart it even if the KV store is left without a majority of its replicas."),
]
KeyName = Annotated[str, Field(description="The key's name: 1 to 63 characters of a-z, 0-9, - and _.")]


_NUMBERS = frozenset({int, float, bool})


def _strict(annotation: Any) -> Any:
    """`annotation`, strict if it is a number or a yes/no (or None besides): JSON's `true` is no 1 and
    `"2"` no 2, as the CLI takes digits alone. Pydantic's lax mode took them: `slice_scale` with
    instances "2" scaled, `blueprint_rollback` with to `true` rolled back to revision 1."""
    base = typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation
    members = set(typing.get_args(base)) if isinstance(base, types.UnionType) else {base}
    kinds = members - {type(None)}
    if not kinds or not kinds <= _NUMBERS:
        return annotation
    return Annotated[annotation, Field(strict=True)]


def strict_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """`fn`'s signature with its number and yes/no parameters strict (`_strict`), for the SDK to build
    the tool's argument model from."""
    signature = inspect.signature(fn, eval_str=True)
    parameters = [p.replace(annotation=_strict(p.annotation)) for p in signature.parameters.values()]
    return signature.replace(parameters=parameters)


PROGRESS_HEARTBEAT = 5.0  # seconds: unchanged progress is sent again this often (the client sees a live wait)


class _Progress:
    """A tool's progress notifications: each change, and the same one again every PROGRESS_HEARTBEAT
    seconds (a notification per poll repeated one line four times a second)."""

    def __init__(self, ctx: Context, clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.clock = clock
        self.last: tuple[float, float | None, str] | None = None
        self.sent_at = -math.inf

    async def report(self, done: float, total: float | None, message: str) -> None:
        now = self.clock()
        if (done, total, message) != self.last or now - self.sent_at >= PROGRESS_HEARTBEAT:
            await self.ctx.report_progress(done, total, message)
            self.last, self.sent_at = (done, total, message), now


def register_tools(server: MCPServer, gateway: ClusterGateway, *, read_only: bool) -> None:
    def tool(name: str, description: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        spec = SPECS[name]

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            async def answered(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)
                except Refused as refusal:  # the sentence alone, as the CLI prints it (no SDK prefix)
                    return error_result(refusal.message)

            answered.__signature__ = strict_signature(fn)  # type: ignore[attr-defined]

            server.add_tool(answered, name=name, description=description, annotations=spec.annotations)
            return answered

        return decorate

    async def ask(name: str, operation: Callable[[ApiClient], Any]) -> Any:
        if read_only and SPECS[name].mutating:
            raise Refused(f"{name} changes the cluster, and this MCP service runs with --read-only: refused")
        try:
            return to_json(await gateway.call(operation))
        except ClusterError as error:
            raise Refused(error.message) from None

    @tool(
        "blueprint_apply",
        "Apply a blueprint: the cluster makes reality match it. With wait, report "
        "progress until every instance is ACTIVE, and answer the blueprint's status.",
    )
    async def blueprint_apply(
        toml: Toml,
        ctx: Context,
        source: Source = "blueprint.toml",
        wait: bool = False,
        timeout: Annotated[float, Field(gt=0, le=3600)] = 120.0,
    ) -> dict[str, Any]:
        result = await ask("blueprint_apply", lambda c: c.apply_blueprint(toml, source))
        if not wait:
            return result
        return await _converge(result["name"], timeout, ctx)

    async def _converge(name: str, timeout: float, ctx: Context) -> dict[str, Any]:
        convergence = Convergence(name, timeout=timeout, now=time.monotonic())
        progress = _Progress(ctx)
        while True:
            try:
                status = await gateway.call(lambda c: c.blueprint_status(name))
            except ClusterError as error:
                raise Refused(error.message) from None
            active = sum(s.active for s in status.slices)
            desired = sum(s.desired for s in status.slices)
            await progress.report(active, desired, f"{active}/{desired} instances ACTIVE")
            if status.converged:
                return to_json(status)
            problem = convergence.problem(status, time.monotonic())
            if problem:
                raise Refused(problem)
            await anyio.sleep(0.25)

    @tool(
        "blueprint_validate", "Check a blueprint without applying it: TOML syntax, keys, types, coordinates."
    )
    async def blueprint_validate(toml: Toml, source: Source = "blueprint.toml") -> dict[str, Any]:
        info = await ask("blueprint_validate", lambda c: c.validate_blueprint(toml, source))
        return {"valid": True, "name": info["name"], "slices": [s["artifact"] for s in info["slices"]]}

    @tool("blueprint_get", "A blueprint as it was applied (its TOML source included).")
    async def blueprint_get(name: Name) -> dict[str, Any]:
        return await ask("blueprint_get", lambda c: c.get_blueprint(name))

    @tool("blueprint_list", "Every blueprint in the cluster.")
    async def blueprint_list() -> list[dict[str, Any]]:
        return await ask("blueprint_list", lambda c: c.list_blueprints())

    @tool("blueprint_delete", "Delete a blueprint: all its instances are unloaded.")
    async def blueprint_delete(name: Name) -> dict[str, Any]:
        await ask("blueprint_delete", lambda c: c.delete_blueprint(name))
        return {"deleted": name}

    @tool("blueprint_status", "Desired vs actual per slice and per node, with failure reasons.")
    async def blueprint_status(name: Name) -> dict[str, Any]:
        return await ask("blueprint_status", lambda c: c.blueprint_status(name))

    @tool("slice_list", "Every slice instance in the cluster, with its node and state.")
    async def slice_list() -> list[dict[str, Any]]:
        return await ask("slice_list", lambda c: c.list_slices())

    @tool("slice_status", "One slice (group:artifact): desired vs ACTIVE, and every instance.")
    async def slice_status(artifact: Artifact) -> dict[str, Any]:
        return await ask("slice_status", lambda c: c.slice_status(artifact))

    @tool(
        "slice_invoke",
        "Call an entry point of a slice (group:artifact) with a JSON payload; answers "
        "the entry point's JSON result.",
    )
    async def slice_invoke(
        artifact: Artifact,
        entry: Annotated[str, Field(description="The entry point's name.")],
        data: Annotated[
            Any,
            Field(
                description="The payload: any JSON value. A string that is itself JSON text (an object's,"
                " a list's) is read as that JSON, as some clients send objects; to pass such text as a"
                " string, send it inside an object."
            ),
        ] = None,
        timeout: Annotated[
            float,
            Field(
                gt=0,
                le=3600,
                description="Seconds the node gives the call before it answers with a timeout error. A"
                " call that may have run is sent again only if its entry point is idempotent.",
            ),
        ] = 30.0,
    ) -> Any:
        result = await ask("slice_invoke", lambda c: c.invoke(artifact, entry, data, timeout=timeout))
        # one JSON text whatever the result is, and {"result": ...} structured: left to the SDK, a list
        # came as a text block per item, null and [] both as no content, and "42" as 42
        text = json.dumps(result, ensure_ascii=False)
        return CallToolResult(
            content=[TextContent(type="text", text=text)], structured_content={"result": result}
        )

    @tool("cluster_status", "Leader, quorum, revision, health, nodes and instance counts.")
    async def cluster_status() -> dict[str, Any]:
        return await ask("cluster_status", lambda c: c.cluster_status())

    @tool("cluster_nodes", "The live nodes: addresses, capacity, instances, which one leads.")
    async def cluster_nodes() -> list[dict[str, Any]]:
        return await ask("cluster_nodes", lambda c: c.nodes())

    @tool(
        "cluster_forget",
        "Stop expecting a node that is gone for good: the cluster counts an expected node that is not "
        "registered as missing (unhealthy) until it is back or forgotten.",
    )
    async def cluster_forget(
        node: Annotated[str, Field(description="The node's id.")],
    ) -> dict[str, Any]:
        await ask("cluster_forget", lambda c: c.forget_node(node))
        return {"forgotten": node}

    @tool(
        "cluster_events",
        "Recent cluster events (nodes, leaders, blueprints, instance states with "
        "reasons), oldest first. Subscribe to the resources to be told of new ones.",
    )
    async def cluster_events(
        limit: Annotated[int, Field(ge=1, le=1000)] = 50,
        kind: Annotated[
            list[str] | None,
            Field(
                description=f"Only events of these kinds: {', '.join(EVENT_KINDS)} (audit: changes made"
                " through the management API: who, what, status)."
            ),
        ] = None,
        slice: Annotated[
            str | None, Field(description="Only events of this slice (group:artifact[:version]).")
        ] = None,
        node: Annotated[str | None, Field(description="Only events about this node.")] = None,
        since: Annotated[
            int | None,
            Field(
                ge=0,
                description="The first events after this revision instead of the last ones: give the"
                " last event's revision to read on without missing or repeating one.",
            ),
        ] = None,
    ) -> list[dict[str, Any]]:
        return await ask(
            "cluster_events",
            lambda c: c.events(limit, kind=kind or None, slice=slice, node=node, since=since),
        )

    @tool(
        "blueprint_history",
        "The kept revisions of a blueprint, oldest first: each with its number, how it came (applied, "
        "rolled back, scaled), whether it is current, its slices and its TOML.",
    )
    async def blueprint_history(name: Name) -> list[dict[str, Any]]:
        return await ask("blueprint_history", lambda c: c.blueprint_history(name))

    @tool(
        "blueprint_rollback",
        "Apply an earlier revision of a blueprint again, as a new revision (default: the revision "
        "before the current one).",
    )
    async def blueprint_rollback(
        name: Name,
        to: Annotated[int | None, Field(description="The revision to go back to.")] = None,
    ) -> dict[str, Any]:
        return await ask("blueprint_rollback", lambda c: c.rollback_blueprint(name, to))

    @tool(
        "blueprint_diff",
        "What applying a blueprint would change, per slice and node (placements added, moved, removed; "
        "versions; a change of its config, which replaces the running instances; a change of its health"
        " checks, which restarts nothing), computed by the cluster's planner"
        " without applying anything.",
    )
    async def blueprint_diff(toml: Toml, source: Source = "blueprint.toml") -> dict[str, Any]:
        return await ask("blueprint_diff", lambda c: c.diff_blueprint(toml, source))

    @tool(
        "slice_scale",
        "Run this many instances of a slice: a new revision of the blueprint that holds it. Refused "
        "below the slice's min_available, or for a slice in no blueprint.",
    )
    async def slice_scale(
        artifact: Artifact, instances: Annotated[int, Field(description="How many instances.")]
    ) -> dict[str, Any]:
        if instances < 0:  # the CLI's own check, with its sentence
            raise Refused(f"instances: must be ≥ 0, got {instances}")
        return await ask("slice_scale", lambda c: c.scale_slice(artifact, instances))

    @tool(
        "slice_autoscale_status",
        "Autoscaled slices (every one, or the one named; a list either way): each one's count, the bounds "
        "and targets in force, whether it is paused, and the autoscaler's last decisions with reasons.",
    )
    async def slice_autoscale_status(
        artifact: Annotated[
            str | None, Field(description="The slice, group:artifact (default: every autoscaled slice).")
        ] = None,
    ) -> list[dict[str, Any]]:
        return await ask("slice_autoscale_status", lambda c: c.autoscale_status(artifact))

    @tool(
        "slice_autoscale_set",
        "Change an autoscaled slice's bounds or targets at run time (over its blueprint's "
        "[slices.autoscale]); give at least one of min, max, cpu, p99_ms, calls_per_second, in_flight.",
    )
    async def slice_autoscale_set(
        artifact: Artifact,
        min: Annotated[int | None, Field(description="The fewest instances.")] = None,
        max: Annotated[int | None, Field(description="The most instances.")] = None,
        cpu: Annotated[float | None, Field(description="Target CPU per instance (cores).")] = None,
        p99_ms: Annotated[float | None, Field(description="Target p99 latency (ms).")] = None,
        calls_per_second: Annotated[float | None, Field(description="Target calls/s per instance.")] = None,
        in_flight: Annotated[float | None, Field(description="Target calls in flight per instance.")] = None,
    ) -> dict[str, Any]:
        try:  # the CLI's own check, with its sentence
            settings = autoscale_settings(
                min=min,
                max=max,
                cpu=cpu,
                p99_ms=p99_ms,
                calls_per_second=calls_per_second,
                in_flight=in_flight,
            )
        except ValueError as error:
            raise Refused(str(error)) from None
        return await ask("slice_autoscale_set", lambda c: c.autoscale_set(artifact, settings))

    @tool("slice_autoscale_pause", "Stop the autoscaler's decisions for a slice (its count stays).")
    async def slice_autoscale_pause(artifact: Artifact) -> dict[str, Any]:
        return await ask("slice_autoscale_pause", lambda c: c.autoscale_operation(artifact, "pause"))

    @tool("slice_autoscale_resume", "Let the autoscaler decide for a slice again.")
    async def slice_autoscale_resume(artifact: Artifact) -> dict[str, Any]:
        return await ask("slice_autoscale_resume", lambda c: c.autoscale_operation(artifact, "resume"))

    @tool(
        "slice_promote",
        "Promote a slice's canary rollout now (the new version takes over, the old instances go, never "
        "below the floor), or end a blue-green rollout's grace period. Refused with no rollout in progress.",
    )
    async def slice_promote(artifact: Artifact) -> dict[str, Any]:
        return await ask("slice_promote", lambda c: c.rollout_command(artifact, "promote"))

    @tool(
        "slice_abort",
        "Abort a slice's canary or blue-green rollout: every call goes back to the stable version at once "
        "and the new instances go. Refused with no rollout in progress.",
    )
    async def slice_abort(artifact: Artifact) -> dict[str, Any]:
        return await ask("slice_abort", lambda c: c.rollout_command(artifact, "abort"))

    @tool(
        "slice_retry",
        "Let go of a slice's failures now: the nodes where its instances FAILED are tried again at once, "
        "not 60 s after each failure. For after the cause is fixed (a missing dependency published, say); "
        "returns the failures let go (none: nothing had failed, nothing changed).",
    )
    async def slice_retry(artifact: Artifact) -> dict[str, Any]:
        return await ask("slice_retry", lambda c: c.retry_slice(artifact))

    @tool(
        "slice_pause",
        "Pause a slice's rolling update where it stands: no new instance of the new version, no old one "
        "removed (both keep serving) until resumed. Refused for a canary or blue-green slice.",
    )
    async def slice_pause(artifact: Artifact) -> dict[str, Any]:
        return await ask("slice_pause", lambda c: c.pause_operation(artifact, "pause"))

    @tool("slice_resume", "Resume a slice's paused rolling update (never below its floor).")
    async def slice_resume(artifact: Artifact) -> dict[str, Any]:
        return await ask("slice_resume", lambda c: c.pause_operation(artifact, "resume"))

    @tool(
        "cluster_policy_show",
        "The cluster's reconciliation policy in force (rebalance delay after a node is lost, moves in "
        "flight at once), what an operator set, the blueprints whose [policy] overrides it, and the lost "
        "nodes whose instances wait.",
    )
    async def cluster_policy_show() -> dict[str, Any]:
        return await ask("cluster_policy_show", lambda c: c.reconcile_policy())

    @tool(
        "cluster_policy_set",
        "Change the cluster's reconciliation policy: preset (aggressive, the default, or conservative), "
        "rebalance_delay (seconds a lost node's instances wait before they are replaced; the availability "
        "floor still wins), max_moves (moves in flight at once; 0: no limit). A preset starts afresh.",
    )
    async def cluster_policy_set(
        preset: Annotated[str | None, Field(description="aggressive or conservative.")] = None,
        rebalance_delay: Annotated[float | None, Field(description="Seconds (0: replace at once).")] = None,
        max_moves: Annotated[int | None, Field(description="Moves in flight at once (0: no limit).")] = None,
    ) -> dict[str, Any]:
        settings = {"preset": preset, "rebalance_delay_s": rebalance_delay, "max_moves": max_moves}
        if all(value is None for value in settings.values()):  # the CLI's own check, with its sentence
            raise Refused("nothing to set: give --preset, --rebalance-delay or --max-moves")
        return await ask("cluster_policy_set", lambda c: c.set_reconcile_policy(settings))

    @tool(
        "cluster_rebalance",
        "End every rebalance delay now: the instances of lost nodes are replaced on the leader's next pass.",
    )
    async def cluster_rebalance() -> dict[str, Any]:
        return await ask("cluster_rebalance", lambda c: c.rebalance())

    @tool("node_cordon", "Place no new instance on a node (what runs there stays).")
    async def node_cordon(node: Node) -> dict[str, Any]:
        return await ask("node_cordon", lambda c: c.node_operation(node, "cordon"))

    @tool("node_uncordon", "Put a node back on duty: instances may be placed there again.")
    async def node_uncordon(node: Node) -> dict[str, Any]:
        return await ask("node_uncordon", lambda c: c.node_operation(node, "uncordon"))

    @tool(
        "node_drain",
        "Cordon a node and move its instances off, each replacement ACTIVE before the instance it "
        "replaces goes, never below a slice's floor; the node's state says what the drain waits for. "
        "With wait, report progress until the node is DRAINED (the drain goes on after a timeout).",
    )
    async def node_drain(
        node: Node,
        ctx: Context,
        wait: bool = False,
        timeout: Annotated[float, Field(gt=0, le=3600)] = 600.0,
    ) -> dict[str, Any]:
        started = await ask("node_drain", lambda c: c.node_operation(node, "drain"))
        if not wait:
            return started
        return await _drained(started["node_id"], timeout, ctx)

    async def _drained(node_id: str, timeout: float, ctx: Context) -> dict[str, Any]:
        watch = DrainWatch(node_id, timeout=timeout, now=time.monotonic())
        total = 0  # the most instances seen on the node: progress counts those gone
        progress = _Progress(ctx)
        while True:
            try:
                nodes = await gateway.call(lambda c: c.nodes())
            except ClusterError as error:
                raise Refused(error.message) from None
            current = next((n for n in nodes if n.node_id == node_id), None)
            problem = watch.problem(current, time.monotonic())
            if problem:
                raise Refused(problem)
            assert current is not None  # (a node not found is a problem)
            total = max(total, current.instances)
            await progress.report(total - current.instances, total or None, watch.progress(current))
            if current.state == "DRAINED":
                return to_json(current)
            await anyio.sleep(0.25)

    @tool(
        "node_stop",
        "Stop a node gracefully (as SIGTERM does): it takes no new work, stops its instances (the cluster "
        "replaces them elsewhere) and leaves the cluster; its process ends. Refused if the KV store would be "
        "left without a majority of its replicas up, unless force.",
    )
    async def node_stop(node: Node, force: Force = False) -> dict[str, Any]:
        return await ask("node_stop", lambda c: c.node_operation(node, "stop", force=force))

    @tool(
        "node_restart",
        "Restart a node: the graceful stop of node_stop (its instances move elsewhere), then the node "
        "process starts again in place, with the same id, configuration and data; it rejoins in seconds. "
        "Refused if the KV store would be left without a majority of its replicas meanwhile, unless force.",
    )
    async def node_restart(node: Node, force: Force = False) -> dict[str, Any]:
        return await ask("node_restart", lambda c: c.node_operation(node, "restart", force=force))

    # Named API keys, backup and restore: the cluster refuses them unless this service's own key has the
    # admin role, so an agent can never make itself a key stronger than the one it was given.
    @tool(
        "key_create",
        "Create a named API key with a role (viewer, operator or admin); answers its secret, the only time "
        "it is shown. Needs the admin role.",
    )
    async def key_create(
        name: KeyName,
        role: Annotated[Literal["viewer", "operator", "admin"], Field(description="What the key may do.")],
    ) -> dict[str, Any]:
        return await ask("key_create", lambda c: c.create_key(name, role))

    @tool(
        "key_list",
        "The cluster's named API keys: name, role, when and by whom created, when last used (to a minute); "
        "never a secret.",
    )
    async def key_list() -> list[dict[str, Any]]:
        return await ask("key_list", lambda c: c.list_keys())

    @tool("key_revoke", "Revoke a named API key: every node refuses it from then on. Needs the admin role.")
    async def key_revoke(name: KeyName) -> dict[str, Any]:
        await ask("key_revoke", lambda c: c.revoke_key(name))
        return {"revoked": name}

    @tool(
        "cluster_backup",
        "The cluster's blueprints, their revisions and its named API keys (hashed), read at one revision: "
        "what cluster_restore takes. Needs the admin role.",
    )
    async def cluster_backup() -> dict[str, Any]:
        return await ask("cluster_backup", lambda c: c.backup())

    @tool(
        "cluster_restore",
        "Write a backup (what cluster_backup answers) into a fresh cluster: one with no blueprint, revision "
        "or named key yet. Needs the admin role.",
    )
    async def cluster_restore(
        backup: Annotated[dict[str, Any], Field(description="The backup, as cluster_backup answers it.")],
    ) -> dict[str, Any]:
        return await ask("cluster_restore", lambda c: c.restore(backup))

    @tool(
        "slice_logs",
        "The last lines each instance of a slice wrote to stdout and stderr (oldest first), fetched from "
        "the nodes that run them; narrowed to one instance or the instances on one node.",
    )
    async def slice_logs(
        artifact: Artifact,
        instance: Annotated[int | None, Field(ge=0, description="Only this instance (its number).")] = None,
        node: Annotated[str | None, Field(description="Only the instances on this node.")] = None,
        lines: Annotated[
            int, Field(ge=1, le=10_000, description="How many of the last lines of each.")
        ] = 100,
    ) -> list[dict[str, Any]]:
        return await ask(
            "slice_logs", lambda c: c.slice_logs(artifact, instance=instance, node=node, lines=lines)
        )

    @tool(
        "describe",
        "One blueprint (its name), slice (group:artifact) or node (its id): its status, as its status tool "
        "answers it, and its recent events, oldest first.",
    )
    async def describe(
        kind: Annotated[Literal["blueprint", "slice", "node"], Field(description="What NAME names.")],
        name: Annotated[str, Field(description="The blueprint's name, the slice or the node's id.")],
        events: Annotated[int, Field(ge=1, le=1000, description="How many recent events.")] = 20,
    ) -> dict[str, Any]:
        return await ask("describe", lambda c: c.describe(kind, name, limit=events))
