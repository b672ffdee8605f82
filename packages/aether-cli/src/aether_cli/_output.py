"""Human renderings of the API's models (rich tables). Imported only when a command prints for people.

Text from the cluster (names, artifacts, reasons, messages) is data, never rich markup or emoji codes: it
goes through `_text`, and the console has emoji replacement off, so `org.aether:rocket:1.0.0` prints as
itself and a failure reason holding `[/tmp/x]` neither vanishes nor breaks the table. Nor is it terminal
control: its control characters (a slice's exception message may hold ESC sequences) print as escapes.

Output that goes to a pipe or a file (not a terminal, and no COLUMNS set) is never wrapped: one event, one
line, whatever its length, so `aether ... | grep` sees whole lines. `wide=True` adds columns (`-o wide`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.markup import escape

from ._common import plural, visible

UNWRAPPED = 1 << 20  # columns: wider than any line the CLI prints


def piped() -> bool:
    """Output goes to a pipe or a file, and no COLUMNS says how wide to wrap."""
    return not sys.stdout.isatty() and not os.environ.get("COLUMNS")


def _console() -> Console:
    """rich would wrap at 80 columns when it cannot ask a terminal; a pipe gets whole lines instead."""
    return Console(emoji=False, width=UNWRAPPED if piped() else None, soft_wrap=piped())


console = _console()

STATE_STYLE = {"ACTIVE": "green", "FAILED": "bold red", "LOADED": "cyan"}


def _text(value: object, *, one_line: bool = False) -> str:
    """A value from the cluster as markup that prints exactly that value (control characters escaped;
    line breaks too if `one_line`)."""
    return escape(visible(str(value), one_line=one_line))


def _state(state: str) -> str:
    style = STATE_STYLE.get(state, "yellow")
    return f"[{style}]{_text(state)}[/{style}]"


def _age(timestamp: float) -> str:
    if not timestamp:
        return "-"
    seconds = max(0, time.time() - timestamp)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def table(title: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    """Print a table; cells are markup (pass values from the cluster through `_text`)."""
    from rich.table import Table  # here: event lines and `--watch` headers need no table

    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, no_wrap=column in ("NODE", "INGRESS", "MANAGEMENT", "PEER", "ARTIFACT"))
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    console.print(grid)


def blueprints(items: Iterable[Any], *, wide: bool = False) -> None:
    def slices(b: Any) -> str:
        return ", ".join(
            f"{s.artifact} x{s.instances}"
            + (f" ({s.strategy}{f'; health checks {s.health}' if s.health else ''})" if wide else "")
            for s in b.slices
        )

    table(
        "Blueprints",
        ["NAME", "SLICES", *(["APPLIED"] if wide else [])],
        ([_text(b.name), _text(slices(b)), *([_when(b.timestamp)] if wide else [])] for b in items),
    )


def instances(items: Iterable[Any], title: str = "Instances", *, wide: bool = False) -> None:
    table(
        title,
        ["NODE", "ARTIFACT", "#", "STATE", "AGE", *(["SINCE"] if wide else []), "RESTARTS", "REASON"],
        (
            [
                _text(i.node_id),
                _text(i.artifact),
                i.instance,
                _state(i.state),
                _age(i.timestamp),
                *([_when(i.timestamp)] if wide else []),
                i.restarts,
                _text(_reason(i)),
            ]
            for i in items
        ),
    )


def _reason(instance: Any) -> str:
    """Why the instance is in its state; for one that runs again after its process died, how that
    process ended."""
    if instance.reason or not instance.restarts:
        return instance.reason
    return f"last exit: {instance.last_exit}" if instance.last_exit else ""


def slice_status(status: Any, *, wide: bool = False) -> None:
    problem = _problem(status)
    print(
        visible(
            f"{status.artifact}: {status.active}/{status.desired} ACTIVE"
            + (f" — {problem}" if problem else "")
        )
    )
    if status.rollout is not None:
        rollout(status.rollout)
    for note in rollback_notes([status]):
        print(visible(note))
    instances(status.instances, wide=wide)


def _problem(status: Any) -> str:
    """A slice's problem: the leader's, else why its rollout was aborted (it serves the stable version
    until the blueprint is applied again)."""
    return status.problem or status.aborted


def rollback_note(kept: Any) -> str:
    """Information, not a reason to wait: the old set a blue-green rollout SWITCHED keeps for a fast
    rollback, and until when (local time). `kept`: the cluster status' `KeptForRollback`, or such a
    slice's `RolloutInfo` (both have `artifact`, `stable` and `until`)."""
    until = time.strftime("%H:%M:%S", time.localtime(kept.until)) if kept.until else "its grace period ends"
    return f"{kept.artifact}: old set ({kept.stable}) kept until {until} for rollback"


def rollback_notes(slices: Iterable[Any]) -> list[str]:
    """`rollback_note` per slice whose old set is kept for a rollback (`SliceStatus.kept_for_rollback`)."""
    return [rollback_note(s.rollout) for s in slices if s.kept_for_rollback]


def blueprint_status(status: Any, *, wide: bool = False) -> None:
    if status.converged:
        verdict = "[green]converged[/green]"
    elif any(s.aborted for s in status.slices):  # (settled: it will not converge until applied again)
        verdict = "[red]rollout aborted[/red]"
    else:
        verdict = "[yellow]converging[/yellow]"
    console.print(f"blueprint [bold]{_text(status.name)}[/bold]: {verdict}")
    table(
        "Slices",
        ["ARTIFACT", "DESIRED", "ACTIVE", "PROBLEM"],
        ([_text(s.artifact), s.desired, s.active, _text(_problem(s))] for s in status.slices),
    )
    for s in status.slices:
        if s.rollout is not None:
            rollout(s.rollout)
    for note in rollback_notes(status.slices):
        console.print(visible(note), markup=False, highlight=False)
    instances([i for s in status.slices for i in s.instances], wide=wide)


def rollout(info: Any) -> None:
    """One line for a canary or blue-green rollout: strategy, versions, phase, share, and why (as text:
    every part of it comes from the cluster)."""
    share = "by instance count" if info.share is None else f"{info.share}% of calls on {info.candidate}"
    config = " (config changed)" if getattr(info, "config_changed", False) else ""
    versions = f"{info.stable} → {info.candidate}{config}"
    line = f"rollout of {info.artifact} ({info.strategy}) {versions}: {info.phase}"
    line += f", {share}"
    console.print(visible(line + (f" — {info.reason}" if info.reason else "")), markup=False, highlight=False)


def cluster_status(status: Any, *, wide: bool = False) -> None:
    health = "[green]healthy[/green]" if status.healthy else "[red]unhealthy[/red]"
    quorum = "yes" if status.has_quorum else "[red]NO[/red]"
    console.print(
        f"cluster {health}: leader [bold]{_text(status.leader or '(none)')}[/bold], quorum {quorum},"
        f" term {status.term}, revision {status.revision}"
    )
    registered = plural(len(status.nodes), "node")
    if status.expected_nodes:
        registered = f"{len(status.nodes)} of {plural(len(status.expected_nodes), 'expected node')}"
    console.print(
        f"{registered} registered, {plural(status.blueprints, 'blueprint')},"
        f" {plural(status.instances, 'instance')} ({status.active} ACTIVE, {status.failed} FAILED)"
    )
    for reason in status.reasons:
        console.print(f"  [red]-[/red] {_text(reason)}", highlight=False)
    for kept in status.kept_for_rollback:
        console.print(visible(rollback_note(kept)), markup=False, highlight=False)
    nodes(status.nodes, wide=wide)


def nodes(items: Iterable[Any], *, wide: bool = False) -> None:
    """Every node with its state and capacity (CPU, MEMORY: what it offers to slices); wide adds role and
    peer; a draining node says what its drain waits for."""
    items = list(items)
    table(
        "Nodes",
        [
            "NODE",
            "LEADER",
            "ACTIVE/ALL",
            "STATE",
            "CPU",
            "MEMORY",
            *(["ROLE"] if wide else []),
            "INGRESS",
            "MANAGEMENT",
            *(["PEER"] if wide else []),
            "UP",
        ],
        (
            [
                _text(n.node_id),
                "*" if n.leader else "",
                f"{n.active}/{n.instances}",
                _text(n.state),
                f"{n.cpu:g}",
                f"{n.memory_mib} MiB",
                *([_text(n.role)] if wide else []),
                _text(n.ingress),
                _text(n.management),
                *([_text(n.peer)] if wide else []),
                _age(n.started_at),
            ]
            for n in items
        ),
    )
    for n in items:
        if n.waiting:
            print(visible(n.waiting))  # plain text: not markup


def event(item: Any) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(item.timestamp)) if item.timestamp else "--:--:--"
    console.print(
        f"[dim]{stamp} #{item.revision}[/dim] [bold]{_text(item.kind, one_line=True)}[/bold]"
        f" {_text(item.message, one_line=True)}",
        highlight=False,
    )
