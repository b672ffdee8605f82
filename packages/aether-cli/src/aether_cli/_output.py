"""Human renderings of the API's models (rich tables). Imported only when a command prints for people.

Text from the cluster (names, artifacts, reasons, messages) is data, never rich markup or emoji codes: it
goes through `_text`, and the console has emoji replacement off, so `org.aether:rocket:1.0.0` prints as
itself and a failure reason holding `[/tmp/x]` neither vanishes nor breaks the table.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(emoji=False)

STATE_STYLE = {"ACTIVE": "green", "FAILED": "bold red", "LOADED": "cyan"}


def _text(value: object) -> str:
    """A value from the cluster as markup that prints exactly that value."""
    return escape(str(value))


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


def table(title: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    """Print a table; cells are markup (pass values from the cluster through `_text`)."""
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, no_wrap=column in ("NODE", "INGRESS", "MANAGEMENT", "ARTIFACT"))
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    console.print(grid)


def blueprints(items: Iterable[Any]) -> None:
    table(
        "Blueprints",
        ["NAME", "SLICES"],
        ([_text(b.name), _text(", ".join(f"{s.artifact} x{s.instances}" for s in b.slices))] for b in items),
    )


def instances(items: Iterable[Any], title: str = "Instances") -> None:
    table(
        title,
        ["NODE", "ARTIFACT", "#", "STATE", "AGE", "REASON"],
        (
            [
                _text(i.node_id),
                _text(i.artifact),
                i.instance,
                _state(i.state),
                _age(i.timestamp),
                _text(i.reason),
            ]
            for i in items
        ),
    )


def blueprint_status(status: Any) -> None:
    verdict = "[green]converged[/green]" if status.converged else "[yellow]converging[/yellow]"
    console.print(f"blueprint [bold]{_text(status.name)}[/bold]: {verdict}")
    table(
        "Slices",
        ["ARTIFACT", "DESIRED", "ACTIVE", "PROBLEM"],
        ([_text(s.artifact), s.desired, s.active, _text(s.problem)] for s in status.slices),
    )
    instances([i for s in status.slices for i in s.instances])


def cluster_status(status: Any) -> None:
    health = "[green]healthy[/green]" if status.healthy else "[red]unhealthy[/red]"
    quorum = "yes" if status.has_quorum else "[red]NO[/red]"
    console.print(
        f"cluster {health}: leader [bold]{_text(status.leader or '(none)')}[/bold], quorum {quorum},"
        f" term {status.term}, revision {status.revision}"
    )
    expected = f" of {len(status.expected_nodes)} expected" if status.expected_nodes else ""
    console.print(
        f"{len(status.nodes)}{expected} nodes registered, {status.blueprints} blueprints,"
        f" {status.instances} instances ({status.active} ACTIVE, {status.failed} FAILED)"
    )
    for reason in status.reasons:
        console.print(f"  [red]-[/red] {_text(reason)}", highlight=False)
    nodes(status.nodes)


def nodes(items: Iterable[Any]) -> None:
    items = list(items)
    table(
        "Nodes",
        ["NODE", "LEADER", "ACTIVE/ALL", "STATE", "INGRESS", "MANAGEMENT", "UP"],
        (
            [
                _text(n.node_id),
                "*" if n.leader else "",
                f"{n.active}/{n.instances}",
                _text(n.state),
                _text(n.ingress),
                _text(n.management),
                _age(n.started_at),
            ]
            for n in items
        ),
    )
    for n in items:
        if n.waiting:
            print(n.waiting)  # plain text: not markup


def event(item: Any) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(item.timestamp)) if item.timestamp else "--:--:--"
    console.print(
        f"[dim]{stamp} #{item.revision}[/dim] [bold]{_text(item.kind)}[/bold] {_text(item.message)}",
        highlight=False,
    )
