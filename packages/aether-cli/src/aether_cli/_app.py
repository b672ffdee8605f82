"""`aether`: operate an Aether cluster. Exit codes: 0 ok, 1 failed, 2 bad arguments or input, 3 cannot
reach the cluster, 4 a status command's answer is not well (unhealthy, not converged), 130 interrupted
(Ctrl-C); every command, flag and code is in docs/CLI.md. Heavy modules
are imported inside the commands, so `aether --help` stays fast."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

from cyclopts import App, Parameter

from . import _context_commands
from ._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_UNHEALTHY,
    Common,
    InputFile,
    WholeNumber,
    call,
    check_wait_timeout,
    client_for,
    emit,
    fail,
    plural,
    read_input,
    target,
    visible,
)


def _version() -> str:
    from importlib.metadata import version

    return version("aether-cli")


app = App(
    name="aether",
    help="Operate an Aether cluster: blueprints, slices, the cluster, a local dev cluster.",
    help_format="plaintext",
    version=_version,
)
blueprint_app = App(name="blueprint", help="Apply, inspect and delete blueprints (TOML).")
slice_app = App(
    name="slice", help="Slice instances: list, status, invoke, logs; new slice projects, publish."
)
cluster_app = App(
    name="cluster",
    help="The cluster: status, nodes, events, forget a node, backup and restore, its policy, rebalance.",
)
node_app = App(name="node", help="Operate one node: cordon, uncordon, drain, stop, restart.")
key_app = App(name="key", help="The cluster's named API keys: create, list, revoke (admin role).")
dev_app = App(name="dev", help="A local cluster on this machine, for trying Aether.")
context_app = App(name="context", help="Named clusters and their API keys, in ~/.config/aether/config.toml.")
autoscale_app = App(name="autoscale", help="Autoscaled slices: status; set targets, pause, resume.")
for sub in (blueprint_app, slice_app, cluster_app, node_app, key_app, dev_app, context_app):
    app.command(sub)
slice_app.command(autoscale_app)
policy_app = App(name="policy", help="The reconciliation policy: rebalance delay, moves in flight.")
cluster_app.command(policy_app)

DEFAULT_COMMON = Common()
BLUEPRINT_FILE = "a blueprint is UTF-8 TOML"
Watch = Annotated[
    bool,
    Parameter(
        name=("--watch", "-w"),
        negative=(),
        help="Ask again every 2 s and show the answer again when it changes, until Ctrl-C.",
    ),
]


def _watch(common: Common, fetch: Any, render: Any) -> None:
    from ._watch import watch

    watch(common, fetch, render)


# ---------------------------------------------------------------- blueprint


def validate(file: InputFile, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Check a blueprint file (`-`: stdin) without a cluster: TOML syntax, keys, types, coordinates."""
    from aether_node import BlueprintError, parse_blueprint

    text, source = read_input(file, BLUEPRINT_FILE)
    try:
        blueprint = parse_blueprint(text, source)
    except BlueprintError as error:
        fail(EXIT_BAD_INPUT, error.message)
    if common.json:
        print(
            json.dumps(
                {"valid": True, "name": blueprint.name, "slices": [s.artifact for s in blueprint.slices]}
            )
        )
    else:
        print(f"{source}: valid blueprint {blueprint.name!r} with {plural(len(blueprint.slices), 'slice')}")


def apply(
    file: InputFile,
    /,
    *,
    wait: Annotated[
        bool, Parameter(negative=(), help="Show progress until every instance is ACTIVE.")
    ] = False,
    timeout: Annotated[
        float | None, Parameter(help="With --wait: give up after this many seconds (default 120).")
    ] = None,
    common: Common = DEFAULT_COMMON,
) -> None:
    """Apply a blueprint (FILE, or `-` for stdin): the cluster makes reality match it."""
    seconds = check_wait_timeout(timeout, wait, default=120.0)
    text, source = read_input(file, BLUEPRINT_FILE)
    result = call(common, lambda client: client.apply_blueprint(text, source))
    for note in result.notes:  # (stderr: a JSON answer on stdout stays whole)
        print(f"note: {note}", file=sys.stderr)
    if not wait:
        emit(
            common,
            result,
            lambda: print(
                f"blueprint {result.name!r} {_verb(result)} (revision {result.blueprint_revision})"
            ),
        )
        return
    if not common.json:
        print(f"blueprint {result.name!r} {_verb(result)}; waiting for it to converge...")
    status = _wait_for(common, result.name, seconds)

    def human() -> None:
        from . import _output

        print(
            f"blueprint {status.name!r} converged: "
            + ", ".join(f"{s.artifact} {s.active}/{s.desired}" for s in status.slices)
        )
        for note in _output.rollback_notes(status.slices):
            print(visible(note))

    emit(common, status, human)


def _verb(result: Any) -> str:
    if result.created:
        return "created"
    return "unchanged" if result.unchanged else "updated"


def _wait_for(common: Common, name: str, timeout: float) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn

    from aether_node.client import Convergence

    convergence = Convergence(name, timeout=timeout, now=time.monotonic())
    with Progress(
        TextColumn("{task.description}", markup=False),  # an artifact is data, not markup
        BarColumn(),
        TextColumn("{task.completed}/{task.total} ACTIVE"),
        disable=common.json,
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}
        # Not a terminal (a pipe, a CI log): no bar is drawn, so each change is a line of its own.
        lines = not common.json and not progress.console.is_terminal
        shown = ""
        rollouts: dict[str, str] = {}  # artifact → the rollout line last shown
        while True:
            status = call(common, lambda client: client.blueprint_status(name))
            for item in status.slices:
                if item.artifact not in tasks:
                    tasks[item.artifact] = progress.add_task(item.artifact, total=max(item.desired, 1))
                progress.update(tasks[item.artifact], completed=item.active, total=max(item.desired, 1))
            if status.converged:
                return status
            line = ", ".join(f"{item.artifact} {item.active}/{item.desired} ACTIVE" for item in status.slices)
            if lines and line != shown:
                print(f"converging: {line}", flush=True)
                shown = line
            # A canary or blue-green rollout's phase and what it waits for (a canary step with too few
            # calls to judge waits for `aether slice promote` or `abort`: the counts alone never say so).
            for item in status.slices:
                rollout = item.rollout
                if common.json or rollout is None or rollout.phase in ("PROMOTED", "ABORTED"):
                    continue
                said = f"{rollout.strategy.replace('_', '-')} rollout of {rollout.artifact} {rollout.phase}"
                said += f": {rollout.reason}" if rollout.reason else ""
                if rollouts.get(item.artifact) != said:
                    rollouts[item.artifact] = said
                    progress.console.print(said, markup=False, highlight=False, soft_wrap=True)
            problem = convergence.problem(status, time.monotonic())
            if problem:
                progress.stop()
                fail(EXIT_FAILED, problem + _cluster_reasons(common))
            time.sleep(0.25)


def _cluster_reasons(common: Common) -> str:
    """Why the cluster is not well, as more lines of a wait's failure (a hung leader reconciles nothing,
    and a blueprint's status does not say so); "" if it is well or cannot say."""
    from aether_node.client import ApiError, ClusterUnreachableError, NoAnswerError

    try:
        with client_for(common, target(common)) as client:
            reasons = client.cluster_status().reasons
    except (ApiError, ClusterUnreachableError, NoAnswerError):  # (a hint only: the wait's answer stands)
        return ""
    return "".join(f"\n  the cluster: {reason}" for reason in reasons)


def get_blueprint(name: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Show a blueprint as it was applied."""
    result = call(common, lambda client: client.get_blueprint(name))
    emit(common, result, lambda: print(result.source.rstrip() or result))


def list_blueprints(*, common: Common = DEFAULT_COMMON) -> None:
    """Every blueprint in the cluster."""
    result = call(common, lambda client: client.list_blueprints())

    def human() -> None:
        from . import _output

        _output.blueprints(result, wide=common.wide)

    emit(common, result, human)


def delete_blueprint(name: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Delete a blueprint: all its instances are unloaded."""
    call(common, lambda client: client.delete_blueprint(name))
    emit(
        common,
        {"deleted": name},
        lambda: print(f"blueprint {name!r} deleted; its instances are being unloaded"),
    )


def blueprint_status(name: str, /, *, watch: Watch = False, common: Common = DEFAULT_COMMON) -> None:
    """Desired vs actual per slice and per node, with failure reasons."""

    def human(result: Any) -> None:
        from . import _output

        _output.blueprint_status(result, wide=common.wide)

    if watch:
        _watch(common, lambda client: client.blueprint_status(name), human)
    result = call(common, lambda client: client.blueprint_status(name))
    emit(common, result, lambda: human(result))
    _verdict(result.converged)


# ---------------------------------------------------------------- slice


def list_slices(*, common: Common = DEFAULT_COMMON) -> None:
    """Every slice instance in the cluster, with its node and state."""
    result = call(common, lambda client: client.list_slices())

    def human() -> None:
        from . import _output

        _output.instances(result, wide=common.wide)

    emit(common, result, human)


def slice_status(artifact: str, /, *, watch: Watch = False, common: Common = DEFAULT_COMMON) -> None:
    """One slice (group:artifact): desired vs ACTIVE, and every instance."""

    def human(result: Any) -> None:
        from . import _output

        _output.slice_status(result, wide=common.wide)

    if watch:
        _watch(common, lambda client: client.slice_status(artifact), human)
    result = call(common, lambda client: client.slice_status(artifact))
    emit(common, result, lambda: human(result))
    _verdict(result.converged)


def invoke(
    artifact: str,
    entry: str,
    /,
    *,
    data: Annotated[
        str,
        Parameter(
            name=("--data", "-d"),
            allow_leading_hyphen=True,
            help="JSON payload; `@FILE` reads it from a file, `-` (or `@-`) from stdin.",
        ),
    ] = "null",
    timeout: Annotated[
        float,
        Parameter(
            help="Seconds the node gives the call before it answers 504 (this command waits a little"
            " longer). A call that may have run is sent again only if its entry point is idempotent."
        ),
    ] = 30.0,
    common: Common = DEFAULT_COMMON,
) -> None:
    """Call ENTRY of a slice (group:artifact) with a JSON payload; print the JSON result."""
    where = "--data"
    if data in ("-", "@-"):
        data, where = read_input(Path("-"), "a payload is UTF-8 JSON")[0], f"--data {data} (stdin)"
    elif data.startswith("@"):  # (no JSON text starts with @: as curl's --data @FILE)
        if data == "@":
            fail(EXIT_BAD_INPUT, "--data @: name the file after the @ (--data @payload.json)")
        data, where = read_input(Path(data[1:]), "a payload is UTF-8 JSON")
        where = f"--data @{where}"
    payload = _payload(data, where)
    if not 0 < timeout <= 3600:
        fail(EXIT_BAD_INPUT, f"--timeout must be in (0, 3600] seconds, got {timeout:g}")
    result = call(common, lambda client: client.invoke(artifact, entry, payload, timeout=timeout))
    print(json.dumps(result, indent=None if common.json else 2))


def _payload(text: str, where: str) -> Any:
    """The payload's JSON, as strictly as the node reads a call's body (Python's parser takes NaN,
    Infinity and 1e400, which JSON has not): refused here, naming `where`, before anything is sent."""
    from aether_node.client import parse_strict_json

    try:
        return parse_strict_json(text)
    except ValueError as error:  # not JSON (JSONDecodeError), a constant, a number too large, too deep
        fail(EXIT_BAD_INPUT, f"{where} is not valid JSON: {error}")


# ---------------------------------------------------------------- cluster


def cluster_status(*, watch: Watch = False, common: Common = DEFAULT_COMMON) -> None:
    """Leader, quorum, revision, health, nodes and instance counts."""

    def human(result: Any) -> None:
        from . import _output

        _output.cluster_status(result, wide=common.wide)

    if watch:
        _watch(common, lambda client: client.cluster_status(), human)
    result = call(common, lambda client: client.cluster_status())
    emit(common, result, lambda: human(result))
    _verdict(result.healthy)


def _verdict(well: bool) -> None:
    """A status command's exit code, once its answer is printed: 0 if what it shows is well (a healthy
    cluster, a converged blueprint or slice), else EXIT_UNHEALTHY, for scripts and monitoring."""
    if not well:
        sys.stdout.flush()
        sys.exit(EXIT_UNHEALTHY)


def nodes(*, common: Common = DEFAULT_COMMON) -> None:
    """The live nodes: capacity (CPU, memory), instances, addresses, which one leads; `-o wide`: role
    and peer address too."""
    result = call(common, lambda client: client.nodes())

    def human() -> None:
        from . import _output

        _output.nodes(result, wide=common.wide)

    emit(common, result, human)


def forget(node: str, /, *, common: Common = DEFAULT_COMMON) -> None:
    """Stop expecting NODE, a node gone for good: the cluster counts it missing (unhealthy) until then."""
    call(common, lambda client: client.forget_node(node))
    emit(
        common, {"forgotten": node}, lambda: print(f"node {node} forgotten: the cluster no longer expects it")
    )


def events(
    *,
    follow: Annotated[
        bool, Parameter(name=("--follow", "-f"), negative=(), help="Keep streaming new events until Ctrl-C.")
    ] = False,
    limit: Annotated[
        WholeNumber,
        Parameter(
            name=("--limit", "-n"),
            help="How many recent events, 1 to 1000 (with --follow: shown before the new ones).",
        ),
    ] = 50,
    kind: Annotated[
        tuple[str, ...],
        Parameter(
            negative=(),
            help="Only events of this kind (repeat for several): node_joined, node_left, node_lost, "
            "node_restarted, leader_elected, blueprint_applied, blueprint_deleted, instance_state, "
            "instance_removed, rebalance_move, node_cordoned, node_draining, node_uncordoned, "
            "autoscale_decision, rollout_started, rollout_step, rollout_switched, rollout_promoted, "
            "rollout_aborted, rollout_paused, rollout_resumed, rollout_done, reconcile_policy_set, "
            "rebalance_delayed, rebalance_delay_ended, rebalance_requested, retry_requested, audit "
            "(changes made through the management API: who, what, status).",
        ),
    ] = (),
    slice: Annotated[
        str | None, Parameter(help="Only events of this slice (group:artifact or group:artifact:version).")
    ] = None,
    node: Annotated[str | None, Parameter(help="Only events about this node.")] = None,
    since: Annotated[
        WholeNumber | None,
        Parameter(
            help="The first events after this revision instead of the last ones (each event shows its"
            " revision: give the last one seen to read on); with --follow, every one after it, then on."
        ),
    ] = None,
    common: Common = DEFAULT_COMMON,
) -> None:
    """Recent cluster events (nodes, leaders, blueprints, instance states with reasons, rebalance moves,
    the audit log)."""
    from aether_node.client import MAX_EVENTS, to_json

    if not 1 <= limit <= MAX_EVENTS:  # (checked here too: bad usage, said before any cluster is asked)
        fail(EXIT_BAD_INPUT, f"--limit must be between 1 and {MAX_EVENTS}, got {limit}")

    def show(item: Any) -> None:
        if common.json:
            print(json.dumps(to_json(item)), flush=True)
        else:
            from . import _output

            _output.event(item)

    filters: dict[str, Any] = {"kind": kind or None, "slice": slice, "node": node, "since": since}
    if follow:  # until Ctrl-C: exit 130
        call(common, lambda client: [show(item) for item in client.follow_events(limit, **filters)])
        return
    for item in call(common, lambda client: client.events(limit, **filters)):
        show(item)


# ---------------------------------------------------------------- dev


def up(
    *,
    nodes: Annotated[WholeNumber, Parameter(help="How many nodes (the first 3 hold the Raft store).")] = 3,
    directory: Annotated[Path, Parameter(help="Where data, logs and state live.")] = Path(".aether-dev"),
    source: Annotated[
        Path | None,
        Parameter(
            help="Slice projects to build into the local index (default: ./sample-slices if there is one, "
            "else the sample slices bundled with aether-cli)."
        ),
    ] = None,
    index: Annotated[
        str | None,
        Parameter(
            help="Run the nodes against this package index instead of building one: a wheel directory or "
            "a PEP 503 index URL (http://, https://, file://)."
        ),
    ] = None,
    apply_file: Annotated[
        Path | None, Parameter(name="--apply", help="Apply this blueprint and wait for it.")
    ] = None,
    example: Annotated[
        bool,
        Parameter(
            negative="",
            help="Apply the example blueprint (examples/blueprint.toml, bundled with aether-cli) and wait.",
        ),
    ] = False,
    common: Common = DEFAULT_COMMON,
) -> None:
    """Build the slice index (or use --index), start NODES local nodes in the background, wait until
    ready."""
    from ._dev import dev_up, next_steps

    cluster, ingress, blueprint = dev_up(
        nodes=nodes,
        directory=directory,
        source=source,
        index=index,
        apply_file=apply_file,
        example=example,
        common=common,
    )
    if blueprint is not None:
        apply(blueprint, wait=True, common=cluster)
    next_steps(ingress, applied=blueprint is not None, samples=source is None and index is None)


def down(*, directory: Path = Path(".aether-dev")) -> None:
    """Stop the local cluster cleanly; nothing is left running (data stays)."""
    from ._dev import dev_down

    dev_down(directory)


def dev_status(*, directory: Path = Path(".aether-dev"), common: Common = DEFAULT_COMMON) -> None:
    """Which local nodes run, and the cluster's status."""
    from ._dev import dev_status as show

    cluster_status(common=show(directory, common))  # the dev cluster's status, after its processes


# Each command is registered by its import path (with its docstring for the group's help), so cyclopts
# builds a command's parser only when that command runs or its help is shown, not all of them at every
# start: ~5 ms less CPU for each `aether` (benchmarks/README.md, "CLI").
COMMANDS = (
    (
        blueprint_app,
        {
            "validate": validate,
            "apply": apply,
            "get": get_blueprint,
            "list": list_blueprints,
            "delete": delete_blueprint,
            "status": blueprint_status,
        },
    ),
    (slice_app, {"list": list_slices, "status": slice_status, "invoke": invoke}),
    (cluster_app, {"status": cluster_status, "nodes": nodes, "events": events, "forget": forget}),
    (dev_app, {"up": up, "down": down, "status": dev_status}),
)
for group, commands in COMMANDS:
    for command, function in commands.items():
        group.command(f"{__name__}:{function.__name__}", name=command, help=function.__doc__)
# Local-only slice commands (files on this machine, no cluster), each in a module of its own.
slice_app.command("aether_cli._slice_new:slice_new", name="new", help="Start a slice project NAME.")
slice_app.command("aether_cli._slice_publish:slice_publish", name="publish", help="Publish a slice wheel.")
for command, (function_name, summary) in _context_commands.COMMANDS.items():
    context_app.command(f"{_context_commands.__name__}:{function_name}", name=command, help=summary)
app.command(
    "aether_cli._completion:completion",
    name="completion",
    help="Print a shell completion script: `aether completion bash > ~/.local/share/bash-completion/"
    "completions/aether`.",
)
# Blueprint revisions, scaling and node operations (`_operations.py`).
OPERATIONS = (
    (blueprint_app, "history", "blueprint_history", "The kept revisions of blueprint NAME."),
    (blueprint_app, "rollback", "blueprint_rollback", "Apply an earlier revision again, as a new one."),
    (blueprint_app, "diff", "blueprint_diff", "What applying FILE would change, without applying it."),
    (slice_app, "scale", "slice_scale", "Run N instances of a slice: a new revision of its blueprint."),
    (autoscale_app, "status", "slice_autoscale_status", "Count, bounds, targets and last decisions."),
    (autoscale_app, "set", "slice_autoscale_set", "Change bounds or targets at run time."),
    (autoscale_app, "pause", "slice_autoscale_pause", "Stop the autoscaler's decisions for a slice."),
    (autoscale_app, "resume", "slice_autoscale_resume", "Let the autoscaler decide for a slice again."),
    (slice_app, "promote", "slice_promote", "Promote a slice's canary, or end a blue-green grace period."),
    (slice_app, "abort", "slice_abort", "Abort a slice's canary or blue-green rollout: back to stable."),
    (slice_app, "retry", "slice_retry", "Try a slice's failed nodes again now, not 60 s after."),
    (slice_app, "pause", "slice_pause", "Pause a slice's rolling update where it stands."),
    (slice_app, "resume", "slice_resume", "Resume a slice's paused rolling update."),
    (policy_app, "show", "cluster_policy_show", "The reconciliation policy in force; lost nodes awaited."),
    (policy_app, "set", "cluster_policy_set", "Set the cluster's preset, rebalance delay or max moves."),
    (
        cluster_app,
        "rebalance",
        "cluster_rebalance",
        "End every rebalance delay: replace lost nodes' instances.",
    ),
    (node_app, "cordon", "node_cordon", "Place no new instance on NODE."),
    (node_app, "uncordon", "node_uncordon", "Put NODE back on duty (ends a cordon or drain)."),
    (node_app, "drain", "node_drain", "Cordon NODE and move its instances off, never below a floor."),
    (node_app, "stop", "node_stop", "Stop NODE gracefully (as SIGTERM does): it leaves the cluster."),
    (node_app, "restart", "node_restart", "Stop NODE gracefully, then start it again: same id and data."),
)
for group, command, function_name, summary in OPERATIONS:
    group.command(f"aether_cli._operations:{function_name}", name=command, help=summary)
# Named API keys, backup and restore (`_keys.py`, `_backup.py`): the admin role.
ADMIN = (
    (key_app, "create", "_keys:key_create", "Create API key NAME; print its secret once."),
    (key_app, "list", "_keys:key_list", "The named API keys (never a secret)."),
    (key_app, "revoke", "_keys:key_revoke", "Revoke API key NAME on every node, no restart."),
    (cluster_app, "backup", "_backup:cluster_backup", "Save blueprints, revisions and keys to FILE."),
    (cluster_app, "restore", "_backup:cluster_restore", "Restore a backup into a fresh cluster."),
)
for group, command, where, summary in ADMIN:
    group.command(f"aether_cli.{where}", name=command, help=summary)

# An instance's output and one object with its events (`_inspect.py`).
slice_app.command("aether_cli._inspect:slice_logs", name="logs", help="What instances of a slice wrote.")
app.command(
    "aether_cli._inspect:describe",
    name="describe",
    help="One blueprint, slice or node: its status and recent events.",
)


def _unwrapped_help_when_piped() -> None:
    """Help into a pipe is plain text with whole lines (rich would box it and wrap at 80 columns)."""
    if not {"--help", "-h"} & set(sys.argv[1:]):
        return
    from . import _output

    if _output.piped():
        app.help_formatter = "plain"
        app.console = _output.console


# Where a JSON text given as an argument belongs, for commands whose users try it there.
_PAYLOAD_HINTS = {
    ("slice", "invoke"): "a payload goes after --data: `aether slice invoke ARTIFACT ENTRY -d '{...}'`",
}


def main() -> None:
    from cyclopts.exceptions import CycloptsError, UnusedCliTokensError

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `aether ... | head` ends quietly
    _unwrapped_help_when_piped()
    try:
        app(exit_on_error=False, print_error=False)
    except UnusedCliTokensError as error:  # cyclopts says "Unused Tokens: ['3']."
        command = " ".join(["aether", *(error.command_chain or ())])
        unused = error.unused_tokens or []
        hint = f"`{command} --help` says what it takes"
        if unused[-1:] and unused[-1].lstrip()[:1] in ("{", "[", '"'):
            hint = _PAYLOAD_HINTS.get(tuple(error.command_chain or ()), hint)
        extra = f"{'argument' if len(unused) == 1 else 'arguments'} {' '.join(unused)}"
        fail(EXIT_BAD_INPUT, f"{command}: unexpected {extra} ({hint})")
    except CycloptsError as error:  # one plain line, like every other error, never wrapped in a box
        fail(EXIT_BAD_INPUT, " ".join(str(error).split()))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
