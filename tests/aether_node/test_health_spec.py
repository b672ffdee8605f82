"""A slice's `[slices.health]` table (`aether_node.core._health_spec`, through the blueprint parser): good
tables parse, each setting left out is the node's own, the record round-trips and an older record without
the field still reads; every bad value is refused with its exact message at file:line:column, all the
table's problems at once, and nothing is applied; `aether blueprint diff` names a change of the table
and replaces no instance for it. Pure: no processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_node_operations import node, observed

from aether_node.control._diff import diff_blueprint
from aether_node.core._blueprint import Blueprint, SliceSpec
from aether_node.core._blueprint_toml import BlueprintError, parse_blueprint
from aether_node.core._health_spec import HealthSpec, checks_of, describe
from aether_node.core._policies import HealthChecks
from aether_node.core._records import decode_record, encode_record

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "blueprint.toml"
SOURCE = "bp.toml"
# name on line 1, [[slices]] on 3, artifact on 4, instances on 5, the [slices.health] header on 7: the
# next line a case adds is line 8.
HEALTH = (
    'name = "demo"\n\n[[slices]]\nartifact = "org.aether:faulty:1.0.0"\ninstances = 1\n\n[slices.health]\n'
)
NODE = HealthChecks(interval=10.0, timeout=5.0, failures=3)


def spec_of(text: str) -> HealthSpec | None:
    return parse_blueprint(text, SOURCE).slices[0].health


def error_of(text: str) -> BlueprintError:
    with pytest.raises(BlueprintError) as caught:
        parse_blueprint(text, SOURCE)
    return caught.value


def test_every_setting_parses_and_the_record_round_trips() -> None:
    blueprint = parse_blueprint(HEALTH + "interval = 30\ntimeout = 12.5\nfailures = 4\n", SOURCE)

    assert blueprint.slices[0].health == HealthSpec(interval=30.0, timeout=12.5, failures=4)
    assert decode_record("blueprints/demo", encode_record(blueprint), Blueprint) == blueprint
    assert checks_of(blueprint.slices[0].health, NODE) == HealthChecks(
        interval=30.0, timeout=12.5, failures=4
    )


def test_a_setting_left_out_is_the_nodes_own() -> None:
    spec = spec_of(HEALTH + "timeout = 60\n")

    assert spec == HealthSpec(timeout=60.0)
    assert checks_of(spec, NODE) == HealthChecks(interval=10.0, timeout=60.0, failures=3)
    assert describe(spec) == "interval: the node's, timeout 60 s, failures: the node's"


def test_no_table_or_an_empty_one_is_the_nodes_settings() -> None:
    without = spec_of(HEALTH.removesuffix("\n[slices.health]\n"))
    empty = spec_of(HEALTH)

    assert without is None and empty == HealthSpec()
    assert checks_of(without, NODE) == checks_of(empty, NODE) == NODE
    assert describe(without) == describe(empty) == "each node's own"


def test_enabled_false_turns_the_checks_off() -> None:
    spec = spec_of(HEALTH + "enabled = false\n")

    assert spec == HealthSpec(enabled=False)
    assert checks_of(spec, NODE) is None
    assert describe(spec) == "off"


def test_the_commented_example_parses_once_uncommented() -> None:
    text = EXAMPLE.read_text()
    start = text.index("# [slices.health]")
    end = text.index("\n\n", start)
    lines = [line.removeprefix("# ") for line in text[start:end].splitlines()]
    settings = "\n".join(line for line in lines if not line.startswith("enabled"))
    off = "\n".join(line for line in lines if line.startswith(("[", "enabled")))

    counter = parse_blueprint(text[:start] + settings + text[end:], str(EXAMPLE)).slices[2]
    assert (counter.artifact, counter.health) == (
        "org.aether:counter:1.0.0",
        HealthSpec(interval=30.0, timeout=60.0, failures=3),
    )
    assert parse_blueprint(text[:start] + off + text[end:], str(EXAMPLE)).slices[2].health == HealthSpec(
        enabled=False
    )


def test_an_older_record_without_the_field_still_reads() -> None:
    blueprint = parse_blueprint(HEALTH.removesuffix("\n[slices.health]\n"), SOURCE)
    data = json.loads(encode_record(blueprint))
    for spec in data["slices"]:
        del spec["health"]  # as a node before [slices.health] wrote it

    assert decode_record("blueprints/demo", json.dumps(data).encode(), Blueprint) == blueprint


# (id, the table's lines, the exact message, line)
BAD = [
    ("unknown-key", "period = 3\n", "slices[0].health.period: unknown key (expected: enabled, failures,"
     " interval, timeout)", 8),
    ("interval-zero", "interval = 0\n", "slices[0].health.interval: must be a number of seconds in"
     " [0.1, 86400], got 0", 8),
    ("interval-negative", "interval = -5\n", "slices[0].health.interval: must be a number of seconds in"
     " [0.1, 86400], got -5", 8),
    ("interval-huge", "interval = 1e9\n", "slices[0].health.interval: must be a number of seconds in"
     " [0.1, 86400], got 1000000000.0", 8),
    ("interval-nan", "interval = nan\n", "slices[0].health.interval: must be a number of seconds in"
     " [0.1, 86400], got nan", 8),
    ("interval-string", 'interval = "10s"\n', "slices[0].health.interval: must be a number of seconds in"
     " [0.1, 86400], got \"10s\"", 8),
    ("timeout-zero", "timeout = 0\n", "slices[0].health.timeout: must be a number of seconds in"
     " [0.1, 86400], got 0", 8),
    ("timeout-bool", "timeout = true\n", "slices[0].health.timeout: must be a number of seconds in"
     " [0.1, 86400], got true", 8),
    ("failures-zero", "failures = 0\n", "slices[0].health.failures: must be a whole number in [1, 100],"
     " got 0", 8),
    ("failures-float", "failures = 2.5\n", "slices[0].health.failures: must be a whole number in [1, 100],"
     " got 2.5", 8),
    ("failures-many", "failures = 1000\n", "slices[0].health.failures: must be a whole number in [1, 100],"
     " got 1000", 8),
    ("enabled-string", 'enabled = "no"\n', "slices[0].health.enabled: must be true or false, got \"no\"", 8),
    ("settings-when-off", "enabled = false\ntimeout = 60\n", "slices[0].health.timeout: has no effect with"
     " enabled = false (no checks at all): remove it, or the enabled line", 9),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "message", "line"), [case[1:] for case in BAD], ids=[c[0] for c in BAD])
def test_a_bad_value_is_refused_at_its_line(lines: str, message: str, line: int) -> None:
    error = error_of(HEALTH + lines)

    assert str(error) == f"bp.toml:{line}:1: {message}"
    assert (error.line, error.column) == (line, 1)


def test_not_a_table_is_refused_at_the_slices_line() -> None:
    text = HEALTH.removesuffix("\n[slices.health]\n") + "health = 30\n"

    assert str(error_of(text)) == (
        "bp.toml:6:1: slices[0].health: must be a table: [slices.health] with interval, timeout, failures"
        " or enabled"
    )


def test_every_problem_of_the_table_is_reported_at_once_with_the_slices_own() -> None:
    text = HEALTH.replace("instances = 1", "instances = -1") + (
        "interval = 0\ntimeout = -1\nfailures = 0\nperiod = 3\n"
    )

    error = error_of(text)

    assert str(error).splitlines() == [
        "bp.toml:5:1: slices[0].instances: must be between 0 and 10000, got -1",
        "bp.toml:8:1: slices[0].health.interval: must be a number of seconds in [0.1, 86400], got 0",
        "bp.toml:9:1: slices[0].health.timeout: must be a number of seconds in [0.1, 86400], got -1",
        "bp.toml:10:1: slices[0].health.failures: must be a whole number in [1, 100], got 0",
        "bp.toml:11:1: slices[0].health.period: unknown key (expected: enabled, failures, interval, timeout)",
    ]
    assert [problem.line for problem in error.problems] == [5, 8, 9, 10, 11]


def test_an_inline_table_points_at_its_line() -> None:
    text = HEALTH.removesuffix("\n[slices.health]\n") + "health = { interval = 0 }\n"

    assert str(error_of(text)).startswith("bp.toml:6:1: slices[0].health.interval: must be a number")


def test_blueprint_diff_names_a_change_of_the_health_checks_and_replaces_nothing() -> None:
    artifact = "org.example:echo:1.0"
    running = [observed("a", 1), observed("b", 2)]

    def change(before: HealthSpec | None, after: HealthSpec | None) -> tuple[str, int, str]:
        stored = Blueprint(name="web", slices=(SliceSpec(artifact=artifact, instances=2, health=before),))
        new = Blueprint(name="web", slices=(SliceSpec(artifact=artifact, instances=2, health=after),))
        (found,) = diff_blueprint(new, [stored], [node("a"), node("b")], running, now=0.0).slices
        return found.change, found.replaced + found.added + found.moved + found.removed, found.health

    assert change(None, HealthSpec(timeout=60.0)) == (
        "changed",
        0,
        "each node's own -> interval: the node's, timeout 60 s, failures: the node's",
    )
    assert change(HealthSpec(timeout=60.0), HealthSpec(enabled=False)) == (
        "changed",
        0,
        "interval: the node's, timeout 60 s, failures: the node's -> off",
    )
    assert change(HealthSpec(enabled=False), HealthSpec(enabled=False)) == ("unchanged", 0, "")
