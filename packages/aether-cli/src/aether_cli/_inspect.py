"""`aether slice logs` (an instance's output, from the node that runs it, through any node's management
API) and `aether describe KIND NAME` (one object, its status and its recent events). Each has its MCP
tool (`slice_logs`, `describe`)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal

from cyclopts import Parameter

from ._common import EXIT_BAD_INPUT, EXIT_FAILED, Common, WholeNumber, call, emit, fail, plural, visible

DEFAULT_COMMON = Common()


def slice_logs(
    artifact: str,
    /,
    *,
    instance: Annotated[
        WholeNumber | None, Parameter(help="Only this instance (its number: `aether slice list`).")
    ] = None,
    node: Annotated[str | None, Parameter(help="Only the instances on this node.")] = None,
    lines: Annotated[
        WholeNumber, Parameter(name=("--lines", "-n"), help="How many of the last lines of each.")
    ] = 100,
    follow: Annotated[
        bool,
        Parameter(
            name=("--follow", "-f"),
            negative=(),
            help="Then print each new line until the instances end, or Ctrl-C (exit 130).",
        ),
    ] = False,
    common: Common = DEFAULT_COMMON,
) -> None:
    """What instances of a slice (group:artifact; group:artifact:version for that version's alone)
    wrote to stdout and stderr: the last lines of each, from
    the node that runs it. Lines are prefixed with NODE/INSTANCE when several instances are shown (with
    --follow: unless --instance is given)."""
    from aether_node.client import MAX_LOG_LINES as MAX_LINES

    if not 1 <= lines <= MAX_LINES:
        fail(EXIT_BAD_INPUT, f"--lines must be between 1 and {MAX_LINES}, got {lines}")
    if instance is not None and instance < 0:
        fail(EXIT_BAD_INPUT, f"--instance must be ≥ 0, got {instance}")
    if follow:
        _follow(common, artifact, instance, node, lines)
        return
    result = call(
        common, lambda client: client.slice_logs(artifact, instance=instance, node=node, lines=lines)
    )

    def human() -> None:
        several = len(result) > 1
        for logs in result:
            prefix = f"{logs.node_id}/{logs.instance} " if several else ""
            for line in logs.lines:
                print(prefix + line)
        if not any(logs.lines for logs in result):  # (on stderr: stdout stays the lines only)
            which = plural(len(result), "instance")
            print(  # (a line shows once it ends: one never ended, a progress bar's, is not a line yet)
                f"{artifact}: no line of output yet ({which}; nothing written to stdout or stderr and ended"
                " with a newline)",
                file=sys.stderr,
            )

    emit(common, result, human)


def _follow(common: Common, artifact: str, instance: int | None, node: str | None, lines: int) -> None:
    from aether_node.client import to_json

    errors = []

    def show(client: Any) -> None:
        for item in client.follow_slice_logs(artifact, instance=instance, node=node, lines=lines):
            if item.error:
                errors.append(item.error)
                print(f"aether: error: {visible(item.error)}", file=sys.stderr, flush=True)
            elif common.json:
                print(json.dumps(to_json(item)), flush=True)
            else:
                prefix = f"{item.node_id}/{item.instance} " if instance is None else ""
                print(prefix + item.line, flush=True)

    call(common, show)
    if errors:
        sys.exit(EXIT_FAILED)


def describe(
    kind: Literal["blueprint", "slice", "node"],
    name: str,
    /,
    *,
    events: Annotated[
        WholeNumber, Parameter(name=("--events", "-n"), help="How many recent events to show, 1 to 1000.")
    ] = 20,
    common: Common = DEFAULT_COMMON,
) -> None:
    """One blueprint (NAME), slice (group:artifact) or node (its id): its status and its recent events."""
    from aether_node.client import MAX_EVENTS

    if not 1 <= events <= MAX_EVENTS:
        fail(EXIT_BAD_INPUT, f"--events must be between 1 and {MAX_EVENTS}, got {events}")
    result = call(common, lambda client: client.describe(kind, name, limit=events))

    def human() -> None:
        from . import _output

        if result.blueprint is not None:
            _output.blueprint_status(result.blueprint, wide=common.wide)
        if result.slice is not None:
            _output.slice_status(result.slice, wide=common.wide)
        if result.node is not None:
            _output.nodes([result.node], wide=common.wide)
        print(f"Events ({len(result.events)} most recent):" if result.events else "Events: none")
        for item in result.events:
            _output.event(item)

    emit(common, result, human)
