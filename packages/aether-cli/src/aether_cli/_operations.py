"""`aether blueprint history|rollback|diff`, `aether slice scale|promote|abort|pause|resume`, `aether
slice autoscale status|set|pause|resume`, `aether cluster policy show|set`, `aether cluster rebalance`,
`aether node cordon|uncordon|drain|stop|restart`: revisions of blueprints, scaling, rollouts, the
reconciliation policy and operations on nodes, through the management API (each has its MCP tool)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import Parameter

from ._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    Common,
    FiniteNumber,
    InputFile,
    WholeNumber,
    call,
    check_wait_timeout,
    emit,
    fail,
    plural,
    read_input,
    visible,
)

if TYPE_CHECKING:
    from aether_node.client import ApplyResult

DEFAULT_COMMON = Common()


def blueprint_history(name: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """The kept revisions of blueprint NAME (oldest first), which one is current, and how each came."""
    result = call(common, lambda client: client.blueprint_history(name))

    def human() -> None:
        from . import _output

        _output.table(
            f"Blueprint {_output._text(name)}: revisions",
            ["REVISION", "CURRENT", "CHANGE", "SLICES", "AGE"],
            (
                [
                    str(r.revision),
                    "*" if r.current else "",
                    _output._text(r.change or "-"),
                    _output._text(", ".join(f"{s.artifact} ×{s.instances}" for s in r.slices)),
                    _output._age(r.timestamp),
                ]
                for r in result
            ),
        )

    emit(common, result, human)


def blueprint_rollback(
    name: str,
    /,
    *,
    to: Annotated[
        WholeNumber | None,
        Parameter(help="The revision to go back to (default: the one before the current)."),
    ] = None,
    common: Common = DEFAULT_COMMON,
) -> None:
    """Apply an earlier revision of blueprint NAME again, as a new revision."""
    result = call(common, lambda client: client.rollback_blueprint(name, to))
    emit(common, result, lambda: print(_revision_line(result)))


def blueprint_diff(file: InputFile, /, *, common: Common = DEFAULT_COMMON) -> None:
    """What applying FILE (`-`: stdin) would change, per slice and node, without applying it."""
    from ._app import BLUEPRINT_FILE

    text, source = read_input(file, BLUEPRINT_FILE)
    result = call(common, lambda client: client.diff_blueprint(text, source))

    def human() -> None:
        where = f"revision {result.revision}" if result.exists else "a new blueprint"
        print(f"blueprint {result.name!r} ({where}): " + ("changes" if result.changed else "no change"))
        for change in result.slices:
            before = ", ".join(change.versions_before) or "-"
            unplaced = f", {change.unplaced} cannot be placed" if change.unplaced else ""
            print(
                f"  {change.artifact}: {change.change}{unplaced}; instances {change.instances_before} →"
                f" {change.instances_after}; version {before} → {change.version_after or '-'};"
                f" +{change.added} added, {change.moved} moved, -{change.removed} removed,"
                f" {change.replaced} replaced"
            )
            for node in change.nodes:
                later = (
                    ""
                    if node.later is None or node.later == node.after
                    else f", {node.later} after the delay"
                )
                if node.before != node.after or node.awaited or later:
                    awaited = " (lost, awaited: kept in place)" if node.awaited else ""
                    print(f"    {node.node_id}: {node.before} → {node.after}{awaited}{later}")
            if change.config:
                print(f"    config: {change.config}")
            if change.awaiting:
                print(f"    {change.awaiting}")
            if change.rollout:
                print(f"    in flight: {change.rollout}")
            if change.update:
                print(f"    how: {change.update}")
            if change.health:
                print(f"    health checks: {change.health} (on the running instances: none is restarted)")
            if change.problem:
                print(visible(f"    problem: {change.problem}"))

    emit(common, result, human)


def slice_scale(artifact: str, instances: WholeNumber, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Run INSTANCES instances of slice ARTIFACT (group:artifact): a new revision of its blueprint."""
    if instances < 0:
        fail(EXIT_BAD_INPUT, f"instances: must be ≥ 0, got {instances}")
    result = call(common, lambda client: client.scale_slice(artifact, instances))
    for note in result.notes:  # (stderr: a JSON answer on stdout stays whole)
        print(f"note: {note}", file=sys.stderr)
    emit(common, result, lambda: print(_revision_line(result)))


def _revision_line(result: ApplyResult) -> str:
    """The blueprint's revision after a change, and how it came (for one that changed nothing, only that:
    its change is an earlier one's)."""
    how = "unchanged" if result.unchanged else result.change
    return f"blueprint {result.name!r} at revision {result.blueprint_revision} ({how})"


def slice_autoscale_status(artifact: str | None = None, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Autoscaled slice ARTIFACT (group:artifact; default: every autoscaled slice): its count, bounds and
    targets in force, whether it is paused, and the autoscaler's last decisions (JSON: a list)."""
    result = call(common, lambda client: client.autoscale_status(artifact))
    emit(common, result, lambda: _autoscale_lines(result))


def slice_autoscale_set(
    artifact: str,
    /,
    *,
    min: Annotated[WholeNumber | None, Parameter(help="The fewest instances it scales down to.")] = None,
    max: Annotated[WholeNumber | None, Parameter(help="The most instances it scales up to.")] = None,
    cpu: Annotated[FiniteNumber | None, Parameter(help="Target CPU per instance (cores, e.g. 0.7).")] = None,
    p99_ms: Annotated[FiniteNumber | None, Parameter(help="Target p99 latency of its calls (ms).")] = None,
    calls_per_second: Annotated[
        FiniteNumber | None, Parameter(help="Target calls per second per instance.")
    ] = None,
    in_flight: Annotated[FiniteNumber | None, Parameter(help="Target calls in flight per instance.")] = None,
    common: Common = DEFAULT_COMMON,
) -> None:
    """Change the bounds or targets of autoscaled slice ARTIFACT at run time (over its blueprint's
    [slices.autoscale]; kept across leader changes and blueprint revisions)."""
    from aether_node.client import autoscale_settings

    try:
        settings = autoscale_settings(
            min=min, max=max, cpu=cpu, p99_ms=p99_ms, calls_per_second=calls_per_second, in_flight=in_flight
        )
    except ValueError as error:
        fail(EXIT_BAD_INPUT, str(error))
    result = call(common, lambda client: client.autoscale_set(artifact, settings))
    emit(common, result, lambda: _autoscale_lines([result]))


def slice_autoscale_pause(artifact: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Stop the autoscaler's decisions for slice ARTIFACT (its count stays as it is)."""
    result = call(common, lambda client: client.autoscale_operation(artifact, "pause"))
    emit(common, result, lambda: _autoscale_lines([result]))


def slice_autoscale_resume(artifact: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Let the autoscaler decide for slice ARTIFACT again."""
    result = call(common, lambda client: client.autoscale_operation(artifact, "resume"))
    emit(common, result, lambda: _autoscale_lines([result]))


def _autoscale_lines(statuses: Any) -> None:
    from . import _output

    if not statuses:
        print("no slice is autoscaled")
    for status in statuses:
        targets = ", ".join(f"{name} {value:g}" for name, value in status.targets.items())
        state = "paused" if status.paused else "autoscaling on"
        print(
            f"{_output._text(status.artifact)} ({state}): {status.instances} instances"
            f" ({status.active} ACTIVE), min {status.min}, max {status.max}; targets: {targets}"
        )
        if status.settings:
            print("  set at run time: " + ", ".join(f"{k} {v:g}" for k, v in status.settings.items()))
        for decision in status.decisions[-5:]:
            print(f"  {_output._age(decision.at)} ago: {_output._text(decision.message)}")


def slice_promote(artifact: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Promote the canary of slice ARTIFACT (group:artifact) now, or end its blue-green grace period: the
    new version takes over and the old instances go, never below the floor."""
    _rollout(artifact, "promote", common)


def slice_abort(artifact: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Abort the canary or blue-green rollout of slice ARTIFACT (group:artifact): every call goes back to
    the stable version at once and the new instances go."""
    _rollout(artifact, "abort", common)


def slice_pause(artifact: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Pause the rolling update of slice ARTIFACT (group:artifact) where it stands: no new instance of the
    new version, no old one removed (both keep serving), until `aether slice resume`."""
    _pause(artifact, "pause", common)


def slice_resume(artifact: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Resume the paused rolling update of slice ARTIFACT: it goes on, never below the floor."""
    _pause(artifact, "resume", common)


def slice_retry(artifact: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Let go of the failures of slice ARTIFACT (group:artifact) now: the nodes where its instances FAILED
    are tried again at once, not 60 s after each failure. For when you fixed the cause (published a
    missing dependency, say); nothing changes when nothing failed."""
    result = call(common, lambda client: client.retry_slice(artifact))

    def human() -> None:
        from . import _output

        if not result.let_go:
            print(f"{result.artifact}: no instance has failed: nothing to retry")
            return
        print(f"{result.artifact}: {plural(len(result.let_go), 'failure')} let go; tried again now:")
        for info in result.let_go:
            print(f"  {info.node_id}/{info.instance}: {_output._text(info.reason or 'failed')}")

    emit(common, result, human)


def _pause(artifact: str, operation: str, common: Common) -> None:
    result = call(common, lambda client: client.pause_operation(artifact, operation))

    def human() -> None:
        print(f"{result.artifact}: {'paused' if result.paused else 'rolling update resumed'}")
        if result.status:
            print(f"  {result.status}")

    emit(common, result, human)


def _rollout(artifact: str, operation: str, common: Common) -> None:
    result = call(common, lambda client: client.rollout_command(artifact, operation))

    def human() -> None:
        from . import _output

        _output.rollout(result)

    emit(common, result, human)


def cluster_policy_show(*, common: Common = DEFAULT_COMMON) -> None:
    """The reconciliation policy in force (rebalance delay, moves in flight), what was set, the
    blueprints that override it, and the lost nodes whose instances wait."""
    result = call(common, lambda client: client.reconcile_policy())
    emit(common, result, lambda: _policy_lines(result))


def cluster_policy_set(
    *,
    preset: Annotated[str | None, Parameter(help="aggressive (the default) or conservative.")] = None,
    rebalance_delay: Annotated[
        FiniteNumber | None,
        Parameter(help="Seconds a lost node's instances wait for it before they are replaced."),
    ] = None,
    max_moves: Annotated[
        WholeNumber | None, Parameter(help="Moves in flight at once in the cluster (0: no limit).")
    ] = None,
    common: Common = DEFAULT_COMMON,
) -> None:
    """Change the cluster's reconciliation policy (a blueprint's [policy] table overrides it for its
    slices). A preset starts afresh: values set before and not given again go."""
    settings = {"preset": preset, "rebalance_delay_s": rebalance_delay, "max_moves": max_moves}
    if all(value is None for value in settings.values()):
        fail(EXIT_BAD_INPUT, "nothing to set: give --preset, --rebalance-delay or --max-moves")
    result = call(common, lambda client: client.set_reconcile_policy(settings))
    emit(common, result, lambda: _policy_lines(result))


def cluster_rebalance(*, common: Common = DEFAULT_COMMON) -> None:
    """End every rebalance delay now: the instances of lost nodes are replaced on the leader's next pass."""
    result = call(common, lambda client: client.rebalance())
    emit(common, result, lambda: _policy_lines(result))


def _policy_lines(result: Any) -> None:
    from . import _output

    def values(delay: float, moves: int) -> str:
        wait = f"rebalance delay {delay:g} s" if delay else "no rebalance delay"
        return wait + (f", at most {moves} moves at a time" if moves else ", no limit on moves")

    told = ([f"preset {result.preset}"] if result.preset else []) + [
        f"{k} {v:g}" for k, v in result.settings.items()
    ]
    told_text = ", ".join(told) or "nothing: the default, aggressive"
    print(f"cluster: {values(result.rebalance_delay_s, result.max_moves)} (set: {told_text})")
    for blueprint in result.blueprints:
        own = values(blueprint.rebalance_delay_s, blueprint.max_moves)
        print(f"  blueprint {_output._text(blueprint.name)}: {own}")
    for lost in result.lost:
        state = "awaited" if lost.awaited else "no longer awaited (rebalance)"
        print(
            f"  node {_output._text(lost.node_id)} lost {_output._age(lost.since)} ago:"
            f" {plural(lost.instances, 'instance')}, delay {lost.delay_s:g} s, {state}"
        )


def _node_operation(node: str, operation: str, common: Common, *, force: bool = False) -> None:
    result = call(common, lambda client: client.node_operation(node, operation, force=force))

    def human() -> None:
        print(f"node {result.node_id}: {result.state}")
        if result.waiting:
            print(visible(result.waiting))

    emit(common, result, human)


def node_cordon(node: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Place no new instance on NODE (what runs there stays)."""
    _node_operation(node, "cordon", common)


def node_uncordon(node: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Put NODE back on duty: instances may be placed there again (ends a cordon or a drain)."""
    _node_operation(node, "uncordon", common)


def node_drain(
    node: str,
    /,
    *,
    wait: Annotated[
        bool, Parameter(negative=(), help="Show progress until NODE is DRAINED (nothing left on it).")
    ] = False,
    timeout: Annotated[
        float | None, Parameter(help="With --wait: give up after this many seconds (default 600).")
    ] = None,
    common: Common = DEFAULT_COMMON,
) -> None:
    """Cordon NODE and move its instances off, each replacement ACTIVE first, never below a floor.
    With --wait, stay until nothing is left on it (the drain goes on after a timeout or Ctrl-C)."""
    seconds = check_wait_timeout(timeout, wait, default=600.0)
    if not wait:
        _node_operation(node, "drain", common)
        return
    started = call(common, lambda client: client.node_operation(node, "drain"))
    drained = _wait_drained(common, started, seconds)
    emit(common, drained, lambda: print(f"node {drained.node_id}: {drained.state}"))


def _wait_drained(common: Common, started: Any, timeout: float) -> Any:
    """Poll the node until it is DRAINED; print what the drain waits for whenever that changes. Fails
    (exit 1) if the drain ends otherwise (uncordoned, the node gone) or after `timeout` seconds."""
    from aether_node.client import DrainWatch

    watch = DrainWatch(started.node_id, timeout=timeout, now=time.monotonic())
    shown = ""
    current: Any = started
    while True:
        problem = watch.problem(current, time.monotonic())
        if problem is not None:
            fail(EXIT_FAILED, problem)
        if current.state == "DRAINED":
            return current
        progress = watch.progress(current)
        if progress != shown and not common.json:
            print(visible(progress), flush=True)
            shown = progress
        time.sleep(0.25)
        nodes = call(common, lambda client: client.nodes())
        current = next((n for n in nodes if n.node_id == watch.node_id), None)


def node_restart(node: str, /, *, force: bool = False, common: Common = DEFAULT_COMMON) -> None:
    """Restart NODE: the graceful stop of `node stop` (its instances move elsewhere), then the node process
    starts again in place (the same command line, node id and data directory, the same PID), however it
    was started. It shows LEAVING, then joins again within seconds (`aether cluster nodes`). Refused if
    the node's KV replica is needed for the store's majority, unless --force.

    Parameters
    ----------
    force
        Restart it even if the KV store loses its majority of replicas meanwhile (every change waits).
    """
    _node_operation(node, "restart", common, force=force)


def node_stop(node: str, /, *, force: bool = False, common: Common = DEFAULT_COMMON) -> None:
    """Stop NODE gracefully (as SIGTERM does): it takes no new work, stops its instances (the cluster
    replaces them elsewhere) and leaves. Its process ends; nothing starts it again here. Refused if the
    node's KV replica is needed for the store's majority of replicas up, unless --force.

    Parameters
    ----------
    force
        Stop it even if the KV store is left without a majority of its replicas (every change stops).
    """
    _node_operation(node, "stop", common, force=force)
