"""Blueprint TOML (`aether_node.core._blueprint_toml`): the example parses; every kind of bad blueprint is
rejected with its exact message, naming file:line:column (where the line is known) and the key path.
Pure: no processes."""

from __future__ import annotations

from pathlib import Path

import pytest

import aether_kv
from aether_node.core._autoscale_spec import AutoscaleSpec
from aether_node.core._blueprint import Balancing, Blueprint, Resources, Strategy
from aether_node.core._blueprint_toml import (
    MAX_CONFIG_DEPTH,
    MAX_INSTANCES,
    MAX_STORED_BYTES,
    STORE_VALUE_LIMIT,
    BlueprintError,
    parse_blueprint,
)
from aether_node.core._records import decode_record, encode_record
from aether_node.core._update_spec import UpdateSpec, UpdateStrategy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "blueprint.toml"
SOURCE = "bp.toml"

# The start of a valid blueprint: name on line 1, [[slices]] on line 3, artifact on line 4; the next
# line a case adds is line 5.
HEAD = 'name = "demo"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\n'
# ... with instances on line 5, the [slices.autoscale] header on line 7, min and max on 8 and 9: the
# next line a case adds is line 10.
AUTOSCALE = HEAD + "instances = 2\n\n[slices.autoscale]\nmin = 1\nmax = 4\n"
AUTOSCALE_KEYS = (
    "calls_per_second, cpu, down_after_s, down_below, down_cooldown_s, down_step, forecast_s, in_flight,"
    " max, min, p99_ms, up_after_s, up_cooldown_s, up_step"
)
SLICE_KEYS = (
    "artifact, autoscale, balancing, config, health, instances, max_per_node, min_available, resources,"
    " strategy, update"
)
# ... with instances on line 5 and the [slices.update] header on line 7: the next line is line 8.
UPDATE = HEAD + "instances = 2\n\n[slices.update]\n"
UPDATE_KEYS = (
    "grace_s, max_error_rate, max_p99_ratio, max_surge, min_ready_s, p99_slack_ms, step_window_s, steps,"
    " strategy"
)


def with_artifact(artifact: str) -> str:
    return f'name = "demo"\n\n[[slices]]\nartifact = "{artifact}"\ninstances = 1\n'


NAME_RULE = (
    "must be 1–64 lowercase letters, digits, '.', '_' or '-', beginning and ending with a letter or digit"
)


def with_name(name: str) -> str:
    return f'name = "{name}"\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n'


def error_of(text: str, source: str = SOURCE) -> BlueprintError:
    with pytest.raises(BlueprintError) as caught:
        parse_blueprint(text, source)
    return caught.value


# ---------------------------------------------------------------- the example


def test_the_example_blueprint_parses() -> None:
    text = EXAMPLE.read_text()
    blueprint = parse_blueprint(text, str(EXAMPLE), timestamp=123.5)

    assert blueprint.name == "demo"
    assert blueprint.timestamp == 123.5
    assert blueprint.source == text
    echo, greeter, counter = blueprint.slices
    assert echo.artifact == "org.aether:echo:1.0.0"
    assert (echo.instances, echo.strategy, echo.balancing) == (3, Strategy.ROUND_ROBIN, Balancing.ROUND_ROBIN)
    assert (echo.min_available, echo.floor) == (2, 2)
    assert greeter.artifact == "org.aether:greeter:1.0.0"
    assert (greeter.instances, greeter.strategy, greeter.max_per_node) == (2, Strategy.SPREAD, 1)
    assert greeter.resources == Resources(cpu=0.1, memory_mib=64)
    assert greeter.floor == 2  # default: more than half
    assert counter.artifact == "org.aether:counter:1.0.0"
    assert counter.instances == 1
    assert dict(counter.config) == {"state_file": "/tmp/aether-counter-demo.txt"}
    assert counter.resources == Resources()


def test_the_commented_autoscale_example_parses_once_uncommented() -> None:
    text = EXAMPLE.read_text()
    block = text[text.index('# [[slices]]\n# artifact = "org.aether:busy') :]
    uncommented = "\n".join(line.removeprefix("# ").removeprefix("#") for line in block.splitlines())
    blueprint = parse_blueprint(text + "\n" + uncommented, str(EXAMPLE))

    busy = blueprint.slices[-1]
    assert (busy.artifact, busy.instances) == ("org.aether:busy:1.0.0", 2)
    assert busy.autoscale == AutoscaleSpec(
        min=1, max=6, cpu=0.7, p99_ms=200.0, calls_per_second=50.0, in_flight=4.0, forecast_s=10.0
    )  # every other value written is the default


def test_the_commented_update_example_parses_once_uncommented() -> None:
    text = EXAMPLE.read_text()
    start = text.index("# [slices.update]")
    end = text.index("\n\n", start)
    lines = [line.removeprefix("# ") for line in text[start:end].splitlines()]
    canary = "\n".join(line for line in lines if not line.startswith("grace_s"))
    blueprint = parse_blueprint(text[:start] + canary + text[end:], str(EXAMPLE))

    assert blueprint.slices[0].update == UpdateSpec(strategy=UpdateStrategy.CANARY)


@pytest.mark.parametrize("instances", [0, 1, MAX_INSTANCES])
def test_instance_counts_at_the_bounds_are_accepted(instances: int) -> None:
    blueprint = parse_blueprint(HEAD + f"instances = {instances}\n", SOURCE)
    assert blueprint.slices[0].instances == instances


def test_an_autoscale_table_parses_with_its_defaults_and_round_trips_as_a_record() -> None:
    text = AUTOSCALE + "p99_ms = 200\ncpu = 0.7\nup_step = 2\n"
    blueprint = parse_blueprint(text, SOURCE)

    assert blueprint.slices[0].autoscale == AutoscaleSpec(min=1, max=4, p99_ms=200.0, cpu=0.7, up_step=2)
    assert blueprint.slices[0].autoscale.targets() == {"cpu": 0.7, "p99_ms": 200.0}
    assert decode_record("blueprints/demo", encode_record(blueprint), Blueprint) == blueprint


def test_a_slice_without_autoscale_has_none() -> None:
    assert parse_blueprint(HEAD + "instances = 2\n", SOURCE).slices[0].autoscale is None


def test_a_canary_update_table_parses_and_round_trips_as_a_record() -> None:
    text = UPDATE + 'strategy = "canary"\nsteps = [5, 25, 100]\nstep_window_s = 30\nmax_error_rate = 0.05\n'
    blueprint = parse_blueprint(text + "max_p99_ratio = 2\n", SOURCE)

    assert blueprint.slices[0].update == UpdateSpec(
        strategy=UpdateStrategy.CANARY,
        steps=(5, 25, 100),
        step_window_s=30.0,
        max_error_rate=0.05,
        max_p99_ratio=2.0,
    )
    assert decode_record("blueprints/demo", encode_record(blueprint), Blueprint) == blueprint


def test_a_blue_green_update_table_parses_with_its_defaults() -> None:
    blueprint = parse_blueprint(UPDATE + 'strategy = "blue_green"\ngrace_s = 0\n', SOURCE)
    assert blueprint.slices[0].update == UpdateSpec(strategy=UpdateStrategy.BLUE_GREEN, grace_s=0.0)
    assert parse_blueprint(UPDATE + 'strategy = "canary"\n', SOURCE).slices[0].update.steps == (10, 50, 100)


def test_a_slice_without_update_has_none_and_rolling_is_explicit() -> None:
    assert parse_blueprint(HEAD + "instances = 2\n", SOURCE).slices[0].update is None
    assert parse_blueprint(UPDATE + 'strategy = "rolling"\n', SOURCE).slices[0].update == UpdateSpec()
    surged = parse_blueprint(UPDATE + "max_surge = 3\n", SOURCE).slices[0].update
    assert surged == UpdateSpec(max_surge=3)


def test_min_ready_s_parses_for_every_strategy_and_defaults_to_two_seconds() -> None:
    assert UpdateSpec().min_ready_s == 2.0
    assert parse_blueprint(UPDATE + "min_ready_s = 0\n", SOURCE).slices[0].update == UpdateSpec(
        min_ready_s=0.0
    )
    canary = parse_blueprint(UPDATE + 'strategy = "canary"\nmin_ready_s = 7.5\n', SOURCE).slices[0].update
    assert canary == UpdateSpec(strategy=UpdateStrategy.CANARY, min_ready_s=7.5)
    blue_green = (
        parse_blueprint(UPDATE + 'strategy = "blue_green"\nmin_ready_s = 1\n', SOURCE).slices[0].update
    )
    assert blue_green is not None and blue_green.min_ready_s == 1.0


def test_min_available_equal_to_instances_is_accepted() -> None:
    blueprint = parse_blueprint(HEAD + "instances = 2\nmin_available = 2\n", SOURCE)
    assert blueprint.slices[0].floor == 2


# ---------------------------------------------------------------- bad blueprints: exact messages

# (id, text, the exact message, line, column); line None where no line can be known.
BAD_BLUEPRINTS = [
    (
        "toml-syntax-unclosed-header",
        'name = "demo"\n[[slices]\nartifact = "x"\n',
        "bp.toml:2:9: TOML syntax: Expected ']]' at the end of an array declaration",
        2,
        9,
    ),
    (
        "toml-syntax-missing-value",
        HEAD + "instances = \n",
        "bp.toml:5:13: TOML syntax: Invalid value",
        5,
        13,
    ),
    (
        "unknown-top-level-key",
        'name = "demo"\nreplicas = 3\n\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n',
        "bp.toml:2:1: replicas: unknown key (expected: name, policy, slices)",
        2,
        1,
    ),
    (
        "a-typo-of-a-slice-key",
        HEAD + "instance = 1\n",
        "bp.toml:3:1: slices[0].instances: required: an integer\nbp.toml:5:1: slices[0].instance:"
        f" unknown key (did you mean 'instances'? expected: {SLICE_KEYS})",
        3,
        1,
    ),
    (
        "a-typo-of-slices",
        'name = "demo"\n\n[[slice]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n',
        "bp.toml:3:1: slice: unknown key (did you mean 'slices'? expected: name, policy, slices)"
        "\nbp.toml: slices: at least one [[slices]] table is required",
        3,
        1,
    ),
    (
        "unknown-slice-key",
        HEAD + "instances = 1\nreplicas = 2\n",
        f"bp.toml:6:1: slices[0].replicas: unknown key (expected: {SLICE_KEYS})",
        6,
        1,
    ),
    (
        "unknown-slice-key-quoted",  # a key TOML writes in quotes is shown so, escaped
        HEAD + 'instances = 1\n"re plicas\u202e" = 2\n"x y" = 3\n',
        f'bp.toml:6:1: slices[0]."re plicas\\u202e": unknown key (expected: {SLICE_KEYS})'
        f'\nbp.toml:7:1: slices[0]."x y": unknown key (expected: {SLICE_KEYS})',
        6,
        1,
    ),
    (
        "instances-wrong-type",
        HEAD + 'instances = "three"\n',
        'bp.toml:5:1: slices[0].instances: must be an integer, got "three"',
        5,
        1,
    ),
    (
        "instances-float",
        HEAD + "instances = 2.5\n",
        "bp.toml:5:1: slices[0].instances: must be an integer, got 2.5",
        5,
        1,
    ),
    (
        "instances-bool",
        HEAD + "instances = true\n",
        "bp.toml:5:1: slices[0].instances: must be an integer, got true",
        5,
        1,
    ),
    (
        "instances-negative",
        HEAD + "instances = -1\n",
        "bp.toml:5:1: slices[0].instances: must be between 0 and 10000, got -1",
        5,
        1,
    ),
    (
        "instances-absurd",
        HEAD + "instances = 10001\n",
        "bp.toml:5:1: slices[0].instances: must be between 0 and 10000, got 10001",
        5,
        1,
    ),
    (
        "instances-beyond-64-bits",
        HEAD + "instances = 99999999999999999999\n",
        "bp.toml:5:1: slices[0].instances: must be between 0 and 10000, got 99999999999999999999",
        5,
        1,
    ),
    (
        "instances-missing",
        HEAD,
        "bp.toml:3:1: slices[0].instances: required: an integer",  # the line of its [[slices]]
        3,
        1,
    ),
    (
        "instances-indented",
        'name = "demo"\n\n[[slices]]\n  artifact = "org.aether:echo:1.0.0"\n  instances = "x"\n',
        'bp.toml:5:3: slices[0].instances: must be an integer, got "x"',
        5,
        3,
    ),
    (
        "coordinates-missing-version",
        with_artifact("org.aether:echo"),
        "bp.toml:4:1: slices[0].artifact: 'org.aether:echo' is not group:artifact:version"
        " (e.g. org.example:echo:1.0.0): it has 2 parts",
        4,
        1,
    ),
    (
        "coordinates-too-many-parts",
        with_artifact("org.aether:echo:1.0.0:extra"),
        "bp.toml:4:1: slices[0].artifact: 'org.aether:echo:1.0.0:extra' is not group:artifact:version"
        " (e.g. org.example:echo:1.0.0): it has 4 parts",
        4,
        1,
    ),
    (
        "coordinates-bad-characters",
        with_artifact("org.aether:ec ho!:1.0.0"),
        "bp.toml:4:1: slices[0].artifact: 'org.aether:ec ho!:1.0.0': the artifact 'ec ho!' must be"
        " letters, digits, '.', '_' or '-', starting and ending with a letter or digit",
        4,
        1,
    ),
    (
        "coordinates-bad-group",
        with_artifact("-org:echo:1.0.0"),
        "bp.toml:4:1: slices[0].artifact: '-org:echo:1.0.0': the group '-org' must be"
        " letters, digits, '.', '_' or '-', starting and ending with a letter or digit",
        4,
        1,
    ),
    (
        "coordinates-not-pep440",
        with_artifact("org.aether:echo:one.two"),
        "bp.toml:4:1: slices[0].artifact: 'org.aether:echo:one.two': the version 'one.two' is not"
        " a PEP 440 version (e.g. 1.0.0)",
        4,
        1,
    ),
    (
        "coordinates-missing",
        'name = "demo"\n\n[[slices]]\ninstances = 1\n',
        "bp.toml:3:1: slices[0].artifact: required: coordinates group:artifact:version"
        " (e.g. org.aether:echo:1.0.0)",
        3,
        1,
    ),
    (
        "coordinates-not-a-string",
        'name = "demo"\n\n[[slices]]\nartifact = 5\ninstances = 1\n',
        "bp.toml:4:1: slices[0].artifact: must be a string, got int: coordinates group:artifact:version"
        " (e.g. org.aether:echo:1.0.0)",
        4,
        1,
    ),
    (
        "min-available-beside-a-bad-count",
        HEAD + 'instances = -1\nmin_available = "two"\n',
        "bp.toml:5:1: slices[0].instances: must be between 0 and 10000, got -1\n"
        'bp.toml:6:1: slices[0].min_available: must be an integer, got "two"',
        5,
        1,
    ),
    (
        "unknown-strategy",
        HEAD + 'instances = 1\nstrategy = "fastest"\n',
        'bp.toml:6:1: slices[0].strategy: must be one of round_robin, spread, bin_pack, got "fastest"',
        6,
        1,
    ),
    (
        "unknown-balancing",
        HEAD + 'instances = 1\nbalancing = "sticky"\n',
        "bp.toml:6:1: slices[0].balancing: must be one of round_robin, random, power_of_two, local_first,"
        ' got "sticky"',
        6,
        1,
    ),
    (
        "duplicate-slice",
        HEAD + 'instances = 1\n\n[[slices]]\nartifact = "org.aether:echo:1.1.0"\ninstances = 2\n',
        "bp.toml:8:1: slices[1].artifact: org.aether:echo is already deployed by slices[0]:"
        " one entry per slice",
        8,
        1,
    ),
    (
        "min-available-above-instances",
        HEAD + "instances = 2\nmin_available = 3\n",
        "bp.toml:6:1: slices[0].min_available: must be between 0 and 2, got 3",
        6,
        1,
    ),
    (
        "max-per-node-zero",
        HEAD + "instances = 1\nmax_per_node = 0\n",
        "bp.toml:6:1: slices[0].max_per_node: must be between 1 and 10000, got 0",
        6,
        1,
    ),
    (
        "resources-negative-cpu",
        HEAD + "instances = 1\n\n[slices.resources]\ncpu = -1\n",
        "bp.toml:8:1: slices[0].resources.cpu: must be a number of cores in [0, 1024], got -1",
        8,
        1,
    ),
    (
        "resources-nan-cpu",
        HEAD + "instances = 1\n\n[slices.resources]\ncpu = nan\n",
        "bp.toml:8:1: slices[0].resources.cpu: must be a number of cores in [0, 1024], got nan",
        8,
        1,
    ),
    (
        "resources-memory-not-integer",
        HEAD + 'instances = 1\n\n[slices.resources]\nmemory_mib = "lots"\n',
        'bp.toml:8:1: slices[0].resources.memory_mib: must be an integer number of MiB ≥ 0, got "lots"',
        8,
        1,
    ),
    (
        "resources-unknown-key",
        HEAD + "instances = 1\n\n[slices.resources]\ngpu = 1\n",
        "bp.toml:8:1: slices[0].resources.gpu: unknown key (expected: cpu, memory_mib)",
        8,
        1,
    ),
    (
        "resources-not-a-table",
        HEAD + "instances = 1\nresources = 5\n",
        "bp.toml:6:1: slices[0].resources: must be a table: [slices.resources] with cpu and memory_mib",
        6,
        1,
    ),
    (
        "config-not-a-table",
        HEAD + "instances = 1\nconfig = 3\n",
        "bp.toml:6:1: slices[0].config: must be a table: [slices.config]",
        6,
        1,
    ),
    (
        "config-date-time",
        HEAD + "instances = 1\n\n[slices.config]\nstarted = 1979-05-27T07:32:00Z\n",
        "bp.toml:8:1: slices[0].config.started: a TOML date or time (1979-05-27T07:32:00+00:00) cannot"
        " be handed to a slice, whose config travels as JSON: write it as a string"
        ' ("1979-05-27T07:32:00+00:00")',
        8,
        1,
    ),
    (
        "config-inline-date",
        HEAD + "instances = 1\nconfig = { day = 1979-05-27 }\n",
        "bp.toml:6:1: slices[0].config.day: a TOML date or time (1979-05-27) cannot be handed to a slice,"
        ' whose config travels as JSON: write it as a string ("1979-05-27")',
        6,
        1,
    ),
    (
        "config-nan",
        HEAD + "instances = 1\n\n[slices.config]\nratio = nan\n",
        "bp.toml:8:1: slices[0].config.ratio: nan is not a JSON number, and the config travels to the slice"
        ' as JSON: write it as a string ("nan")',
        8,
        1,
    ),
    (
        "error-in-the-second-slice",
        HEAD + 'instances = 1\n\n[[slices]]\nartifact = "org.aether:greeter:1.0.0"\ninstances = "two"\n',
        'bp.toml:9:1: slices[1].instances: must be an integer, got "two"',
        9,
        1,
    ),
    (
        "update-not-a-table",
        HEAD + "instances = 1\nupdate = 3\n",
        "bp.toml:6:1: slices[0].update: must be a table: [slices.update] with strategy ="
        " rolling|canary|blue_green",
        6,
        1,
    ),
    (
        "update-unknown-key",
        UPDATE + "surge = 2\n",
        "bp.toml:8:1: slices[0].update.surge: unknown key (did you mean 'max_surge'?"
        f" expected: {UPDATE_KEYS})",
        8,
        1,
    ),
    (
        "update-unknown-strategy",
        UPDATE + 'strategy = "big_bang"\n',
        'bp.toml:8:1: slices[0].update.strategy: must be one of rolling, canary, blue_green, got "big_bang"',
        8,
        1,
    ),
    (
        "update-canary-key-for-blue-green",
        UPDATE + 'strategy = "blue_green"\nsteps = [50, 100]\n',
        "bp.toml:9:1: slices[0].update.steps: only for strategy = 'canary' (this slice's is 'blue_green')",
        9,
        1,
    ),
    (
        "update-grace-for-rolling",
        UPDATE + "grace_s = 10\n",
        "bp.toml:8:1: slices[0].update.grace_s: only for strategy = 'blue_green' (this slice's is 'rolling')",
        8,
        1,
    ),
    (
        "update-surge-for-canary",
        UPDATE + 'strategy = "canary"\nmax_surge = 2\n',
        "bp.toml:9:1: slices[0].update.max_surge: only for strategy = 'rolling' (this slice's is 'canary')",
        9,
        1,
    ),
    (
        "update-surge-zero",
        UPDATE + "max_surge = 0\n",
        "bp.toml:8:1: slices[0].update.max_surge: must be a whole number in [1, 1000], got 0",
        8,
        1,
    ),
    (
        "update-min-ready-negative",
        UPDATE + "min_ready_s = -1\n",
        "bp.toml:8:1: slices[0].update.min_ready_s: must be a number in [0, 3600], got -1",
        8,
        1,
    ),
    (
        "update-min-ready-not-a-number",
        UPDATE + 'strategy = "canary"\nmin_ready_s = "2s"\n',
        'bp.toml:9:1: slices[0].update.min_ready_s: must be a number in [0, 3600], got "2s"',
        9,
        1,
    ),
    (
        "update-min-ready-too-long",
        UPDATE + "min_ready_s = 1e9\n",
        "bp.toml:8:1: slices[0].update.min_ready_s: must be a number in [0, 3600], got 1000000000.0",
        8,
        1,
    ),
    (
        "update-steps-not-a-list",
        UPDATE + 'strategy = "canary"\nsteps = 10\n',
        "bp.toml:9:1: slices[0].update.steps: must be a list of 1 to 20 integer percentages, e.g."
        " [10, 50, 100]; got 10",
        9,
        1,
    ),
    (
        "update-steps-out-of-range",
        UPDATE + 'strategy = "canary"\nsteps = [0, 100]\n',
        "bp.toml:9:1: slices[0].update.steps: each step must be between 1 and 100 (percent), got [0, 100]",
        9,
        1,
    ),
    (
        "update-steps-not-growing",
        UPDATE + 'strategy = "canary"\nsteps = [50, 50, 100]\n',
        "bp.toml:9:1: slices[0].update.steps: steps must grow, got [50, 50, 100]",
        9,
        1,
    ),
    (
        "update-steps-not-ending-at-100",
        UPDATE + 'strategy = "canary"\nsteps = [10, 50]\n',
        "bp.toml:9:1: slices[0].update.steps: the last step must be 100 (all traffic on the new version),"
        " got [10, 50]",
        9,
        1,
    ),
    (
        "update-error-rate-above-one",
        UPDATE + 'strategy = "canary"\nmax_error_rate = 1.5\n',
        "bp.toml:9:1: slices[0].update.max_error_rate: must be a number in [0, 1], got 1.5",
        9,
        1,
    ),
    (
        "update-p99-ratio-below-one",
        UPDATE + 'strategy = "canary"\nmax_p99_ratio = 0.5\n',
        "bp.toml:9:1: slices[0].update.max_p99_ratio: must be a number in [1, 1000], got 0.5",
        9,
        1,
    ),
    (
        "update-negative-grace",
        UPDATE + 'strategy = "blue_green"\ngrace_s = -1\n',
        "bp.toml:9:1: slices[0].update.grace_s: must be a number in [0, 86400], got -1",
        9,
        1,
    ),
    (
        "autoscale-not-a-table",
        HEAD + "instances = 1\nautoscale = 3\n",
        "bp.toml:6:1: slices[0].autoscale: must be a table: [slices.autoscale] with min, max and at least one"
        " target",
        6,
        1,
    ),
    (
        "autoscale-no-target",
        AUTOSCALE,
        "bp.toml:7:1: slices[0].autoscale: [slices.autoscale] needs at least one target: cpu, p99_ms,"
        " calls_per_second, in_flight",
        7,
        1,
    ),
    (
        "autoscale-unknown-key",
        AUTOSCALE + "cpu = 0.5\nrps = 10\n",
        f"bp.toml:11:1: slices[0].autoscale.rps: unknown key (expected: {AUTOSCALE_KEYS})",
        11,
        1,
    ),
    (
        "autoscale-min-missing",
        HEAD + "instances = 2\n\n[slices.autoscale]\nmax = 4\ncpu = 0.5\n",
        "bp.toml:7:1: slices[0].autoscale.min: required: an integer",  # its [slices.autoscale]
        7,
        1,
    ),
    (
        "autoscale-min-zero",
        HEAD + "instances = 2\n\n[slices.autoscale]\nmin = 0\nmax = 4\ncpu = 0.5\n",
        "bp.toml:8:1: slices[0].autoscale.min: must be between 1 and 10000, got 0",
        8,
        1,
    ),
    (
        "autoscale-max-below-min",
        HEAD + "instances = 2\n\n[slices.autoscale]\nmin = 3\nmax = 2\ncpu = 0.5\n",
        "bp.toml:9:1: slices[0].autoscale.max: must be ≥ min (3), got 2",
        9,
        1,
    ),
    (
        "autoscale-instances-above-max",
        HEAD + "instances = 5\n\n[slices.autoscale]\nmin = 1\nmax = 4\ncpu = 0.5\n",
        "bp.toml:9:1: slices[0].autoscale.max: instances (5) must lie within min..max (1..4):"
        " the controller starts there",
        9,
        1,
    ),
    (
        "autoscale-instances-below-min",
        HEAD + "instances = 1\n\n[slices.autoscale]\nmin = 2\nmax = 4\ncpu = 0.5\n",
        "bp.toml:8:1: slices[0].autoscale.min: instances (1) must lie within min..max (2..4):"
        " the controller starts there",
        8,
        1,
    ),
    (
        "autoscale-min-below-min-available",
        HEAD + "instances = 3\nmin_available = 2\n\n[slices.autoscale]\nmin = 1\nmax = 4\ncpu = 0.5\n",
        "bp.toml:9:1: slices[0].autoscale.min: must be ≥ min_available (2): the controller never scales"
        " below the floor",
        9,
        1,
    ),
    (
        "autoscale-target-zero",
        AUTOSCALE + "p99_ms = 0\n",
        "bp.toml:10:1: slices[0].autoscale.p99_ms: must be a number in (0, 8.64e+07], got 0",
        10,
        1,
    ),
    (
        "autoscale-target-not-a-number",
        AUTOSCALE + 'cpu = "high"\n',
        'bp.toml:10:1: slices[0].autoscale.cpu: must be a number in (0, 1024], got "high"',
        10,
        1,
    ),
    (
        "autoscale-target-bool",
        AUTOSCALE + "in_flight = true\n",
        "bp.toml:10:1: slices[0].autoscale.in_flight: must be a number in (0, 1e+09], got true",
        10,
        1,
    ),
    (
        "autoscale-step-zero",
        AUTOSCALE + "cpu = 0.5\nup_step = 0\n",
        "bp.toml:11:1: slices[0].autoscale.up_step: must be between 1 and 10000, got 0",
        11,
        1,
    ),
    (
        "autoscale-negative-cooldown",
        AUTOSCALE + "cpu = 0.5\ndown_cooldown_s = -5\n",
        "bp.toml:11:1: slices[0].autoscale.down_cooldown_s: must be a number in [0, 86400], got -5",
        11,
        1,
    ),
    (
        "autoscale-down-below-one",
        AUTOSCALE + "cpu = 0.5\ndown_below = 1.0\n",
        "bp.toml:11:1: slices[0].autoscale.down_below: must be a number in (0, 1), got 1.0",
        11,
        1,
    ),
    (
        "autoscale-forecast-without-calls-target",
        AUTOSCALE + "cpu = 0.5\nforecast_s = 10\n",
        "bp.toml:11:1: slices[0].autoscale.forecast_s: needs a calls_per_second target: the forecast is of"
        " the call rate, against that target",
        11,
        1,
    ),
    (
        "autoscale-forecast-zero",
        AUTOSCALE + "calls_per_second = 20\nforecast_s = 0\n",
        "bp.toml:11:1: slices[0].autoscale.forecast_s: must be a number in (0, 3600], got 0",
        11,
        1,
    ),
    (
        "autoscale-error-in-the-second-slice",
        AUTOSCALE
        + 'cpu = 0.5\n\n[[slices]]\nartifact = "org.aether:greeter:1.0.0"\ninstances = 1\n\n'
        + "[slices.autoscale]\nmin = 1\nmax = 2\np99_ms = nan\n",
        "bp.toml:19:1: slices[1].autoscale.p99_ms: must be a number in (0, 8.64e+07], got nan",
        19,
        1,
    ),
    (
        "name-missing",
        '[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n',
        "bp.toml: name: required: a string naming the blueprint",
        None,
        None,
    ),
    (
        "name-not-a-string",
        'name = 5\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 1\n',
        "bp.toml:1:1: name: required: a string naming the blueprint",
        1,
        1,
    ),
    (
        "name-bad",
        with_name("Demo App"),
        "bp.toml:1:1: name: 'Demo App' " + NAME_RULE,
        1,
        1,
    ),
    (
        "name-too-long",
        with_name("a" * 65),
        f"bp.toml:1:1: name: {'a' * 65!r} " + NAME_RULE,
        1,
        1,
    ),
    (
        "name-ending-in-a-newline",
        with_name("nl\\n"),
        f"bp.toml:1:1: name: {'nl' + chr(10)!r} " + NAME_RULE,
        1,
        1,
    ),
    (
        "name-path-like",
        with_name("../etc"),
        "bp.toml:1:1: name: '../etc' " + NAME_RULE,
        1,
        1,
    ),
    (
        "empty-file",
        "",
        "bp.toml: name: required: a string naming the blueprint\n"
        "bp.toml: slices: at least one [[slices]] table is required",
        None,
        None,
    ),
    (
        "no-slices",
        'name = "demo"\n',
        "bp.toml: slices: at least one [[slices]] table is required",
        None,
        None,
    ),
    (
        "empty-slices-array",
        'name = "demo"\nslices = []\n',
        "bp.toml: slices: at least one [[slices]] table is required",
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("text", "message", "line", "column"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_BLUEPRINTS],
)
def test_a_bad_blueprint_is_rejected_with_its_exact_message(
    text: str, message: str, line: int | None, column: int | None
) -> None:
    error = error_of(text)
    assert error.message == message
    assert str(error) == message
    assert (error.line, error.column) == (line, column)
    assert error.source == SOURCE


def test_every_problem_of_a_blueprint_is_reported_at_once_in_the_order_of_the_file() -> None:
    text = (
        'name = "Demo"\ncolour = "red"\n\n[[slices]]\nartifact = "org.aether:echo"\ninstances = -1\n'
        'replicas = 2\n\n[[slices]]\nartifact = "org.aether:greeter:1.0.0"\ninstances = 1\n'
        'strategy = "sideways"\n'
    )
    error = error_of(text)
    assert [(p.line, p.path) for p in error.problems] == [
        (1, "name"),
        (2, "colour"),
        (5, "slices[0].artifact"),
        (6, "slices[0].instances"),
        (7, "slices[0].replicas"),
        (12, "slices[1].strategy"),
    ]
    assert error.message.splitlines() == [p.message for p in error.problems]
    assert (error.line, error.path) == (1, "name")  # the first problem's place is the error's own


def test_every_problem_of_every_sub_table_is_reported_at_once_each_at_its_line() -> None:
    text = (
        'name = "demo"\n\n[policy]\npreset = "eager"\nmax_moves = -1\nrebalance_delay_s = 1e9\n'  # 3-6
        '\n[[slices]]\nartifact = "org.aether:echo:1.0.0"\ninstances = 2\n'  # 8-10
        "\n[slices.resources]\ncpu = -1\nmemory_mib = 1.5\ndisk = 3\n"  # 12-15
        "\n[slices.autoscale]\nmin = 0\nmax = 99999\ncpu = -2\nup_step = 0\nforecast_s = 5\n"  # 17-22
        '\n[slices.update]\nstrategy = "canary"\nsteps = [50, 10]\nmax_error_rate = 2\nmax_surge = 2\n'
        "surge = 1\n"  # 24-29
    )
    error = error_of(text)
    assert [(p.line, p.path) for p in error.problems] == [
        (4, "policy.preset"),
        (5, "policy.max_moves"),
        (6, "policy.rebalance_delay_s"),
        (13, "slices[0].resources.cpu"),
        (14, "slices[0].resources.memory_mib"),
        (15, "slices[0].resources.disk"),
        (18, "slices[0].autoscale.min"),
        (19, "slices[0].autoscale.max"),
        (20, "slices[0].autoscale.cpu"),
        (21, "slices[0].autoscale.up_step"),
        (22, "slices[0].autoscale.forecast_s"),
        (26, "slices[0].update.steps"),
        (27, "slices[0].update.max_error_rate"),
        (28, "slices[0].update.max_surge"),
        (29, "slices[0].update.surge"),
    ]
    assert error.message.splitlines() == [p.message for p in error.problems]
    assert error.problems[-2].message == (
        "bp.toml:28:1: slices[0].update.max_surge: only for strategy = 'rolling' (this slice's is 'canary')"
    )


def test_a_sub_table_whose_problems_hide_its_bounds_reports_the_rest() -> None:
    # min and max both wrong: the check of instances against them cannot run, every other one does
    text = AUTOSCALE.replace("min = 1", 'min = "one"').replace("max = 4", "max = 0") + "rps = 1\n"
    assert [(p.line, p.path) for p in error_of(text).problems] == [
        (7, "slices[0].autoscale"),
        (8, "slices[0].autoscale.min"),
        (9, "slices[0].autoscale.max"),
        (10, "slices[0].autoscale.rps"),
    ]


def test_an_autoscale_table_is_checked_when_instances_itself_is_wrong() -> None:
    # instances not an integer: the table's own problems are reported with it (the check of instances
    # against min..max cannot run)
    text = (
        HEAD + 'instances = "x"\n\n[slices.autoscale]\nmin = "a"\nmax = -5\ncpu = "hot"\n'  # 5, 7-10
        '\n[slices.update]\nstrategy = "sideways"\n'  # 12-13
    )
    assert [(p.line, p.path) for p in error_of(text).problems] == [
        (5, "slices[0].instances"),
        (8, "slices[0].autoscale.min"),
        (9, "slices[0].autoscale.max"),
        (10, "slices[0].autoscale.cpu"),
        (13, "slices[0].update.strategy"),
    ]


def with_config_blob(length: int, comment: int = 0) -> str:
    """A valid blueprint whose slice's config holds a string of `length` characters (stored twice: in the
    source and in the config), and `comment` characters of comment (stored once, in the source)."""
    return HEAD + f'instances = 1\n# {"c" * comment}\n\n[slices.config]\nblob = "{"x" * length}"\n'


def stored_size(text: str) -> int:
    return len(encode_record(parse_blueprint(text, SOURCE)))


def test_the_stored_size_limit_is_the_stores_value_limit_less_headroom() -> None:
    assert STORE_VALUE_LIMIT == aether_kv.MAX_VALUE_BYTES
    assert MAX_STORED_BYTES == STORE_VALUE_LIMIT - 4096


def test_a_blueprint_too_big_to_store_is_refused_naming_the_file_its_size_and_the_limit() -> None:
    error = error_of(with_config_blob(650_000))
    assert error.message == (
        "bp.toml: the blueprint takes 1.2 MiB stored (1,300,477 bytes: its TOML source, and each slice's"
        " config again as JSON; slices[0].config: 634.8 KiB of it), over the 1020 KiB (1,044,480 bytes)"
        " a blueprint may take (one value of the store holds at most 1 MiB): keep [slices.config] small;"
        " put big data in the slice's package, or have the slice fetch it when it starts"
    )


def test_a_blueprint_is_taken_up_to_the_stored_size_limit_exactly() -> None:
    text = with_config_blob(500_000)
    at_limit = with_config_blob(500_000, MAX_STORED_BYTES - stored_size(text))
    assert stored_size(at_limit) == MAX_STORED_BYTES
    over = with_config_blob(500_000, MAX_STORED_BYTES - stored_size(text) + 1)
    assert "over the 1020 KiB (1,044,480 bytes) a blueprint may take" in error_of(over).message


def test_a_blueprint_too_big_to_store_is_reported_with_its_other_problems() -> None:
    text = with_config_blob(10).replace('name = "demo"', 'name = "Demo"') + f"# {'c' * MAX_STORED_BYTES}\n"
    assert [(p.line, p.path) for p in error_of(text).problems] == [(1, "name"), (None, "")]
    assert "over the 1020 KiB (1,044,480 bytes) a blueprint may take" in error_of(text).problems[1].message


def test_the_source_name_is_used_as_given() -> None:
    error = error_of(HEAD + "instances = -1\n", "/srv/blueprints/shop.toml")
    assert error.message == (
        "/srv/blueprints/shop.toml:5:1: slices[0].instances: must be between 0 and 10000, got -1"
    )
    assert error.path == "slices[0].instances"
    assert error.detail == "must be between 0 and 10000, got -1"


def test_an_error_in_the_example_points_at_its_line() -> None:
    text = EXAMPLE.read_text().replace('artifact = "org.aether:echo:1.0.0"', 'artifact = "org.aether:echo"')
    error = error_of(text, "examples/blueprint.toml")
    assert error.message == (
        "examples/blueprint.toml:6:1: slices[0].artifact: 'org.aether:echo' is not group:artifact:version"
        " (e.g. org.example:echo:1.0.0): it has 2 parts"
    )


# ---------------------------------------------------------------- bugs


def test_an_error_under_a_commented_table_header_keeps_its_line() -> None:
    text = EXAMPLE.read_text().replace("cpu = 0.1 ", "cpu = -1  ")
    (line,) = [number for number, found in enumerate(text.splitlines(), 1) if found.startswith("cpu = -1")]
    error = error_of(text, "examples/blueprint.toml")
    assert error.message == (
        f"examples/blueprint.toml:{line}:1: slices[1].resources.cpu: must be a number of cores in [0, 1024],"
        " got -1"
    )


def test_an_error_under_a_commented_slices_header_keeps_its_line() -> None:
    text = HEAD.replace("[[slices]]", "[[slices]]  # the echo service") + 'instances = "x"\n'
    assert error_of(text).message == 'bp.toml:5:1: slices[0].instances: must be an integer, got "x"'


def test_a_spaced_slices_header_does_not_misplace_the_error() -> None:
    text = HEAD + 'instances = 1\n\n[[ slices ]]\nartifact = "org.aether:greeter:1.0.0"\ninstances = "two"\n'
    # today: "bp.toml:5:1: ..." — line 5 is `instances = 1` of slices[0]
    assert error_of(text).message == 'bp.toml:9:1: slices[1].instances: must be an integer, got "two"'


def test_every_value_json_cannot_carry_inside_a_config_is_named_by_its_key_path() -> None:
    text = (
        HEAD
        + "instances = 1\n\n[slices.config]\nfine = 1\nnested = { at = 07:32:00, days = [1, 1979-05-27] }\n"
        + "limits = [1.5, -inf]\n"
    )
    error = error_of(text)
    assert [(p.line, p.path) for p in error.problems] == [
        (9, "slices[0].config.nested.at"),
        (9, "slices[0].config.nested.days[1]"),
        (10, "slices[0].config.limits[1]"),
    ]


def nested_config(levels: int) -> str:
    """HEAD with a config whose value `x` is `levels` arrays deep (the config table itself is one more)."""
    return HEAD + "instances = 1\n\n[slices.config]\nx = " + "[" * levels + "1" + "]" * levels + "\n"


def test_a_config_nested_to_the_limit_is_accepted_and_round_trips_as_a_record() -> None:
    blueprint = parse_blueprint(nested_config(MAX_CONFIG_DEPTH - 1), SOURCE)
    assert decode_record("k", encode_record(blueprint), Blueprint) == blueprint


@pytest.mark.parametrize("levels", [MAX_CONFIG_DEPTH, 450, 5000])
def test_a_config_nested_past_the_limit_is_a_clear_error_not_a_crash(levels: int) -> None:
    """Past the limit the records' encoder (and, deeper, the TOML parser itself) would exceed Python's
    recursion limit: the blueprint was said valid, then its apply failed with an internal error."""
    error = error_of(nested_config(levels))
    assert error.source == SOURCE
    if levels < 900:
        assert (error.path, error.line) == ("slices[0].config.x", 8), error
        assert (
            f"nested {levels + 1} levels deep" in error.detail
            and f"at most {MAX_CONFIG_DEPTH}" in error.detail
        )
    else:
        assert "nested too deeply to read" in error.detail, error


def test_max_per_node_without_spread_is_an_error_not_ignored() -> None:
    """It caps only the `spread` strategy: given with another, it was accepted and placed nothing
    differently (5 instances with max_per_node = 1 went 2 to a node)."""
    error = error_of(HEAD + "instances = 5\nmax_per_node = 1\n")
    assert (error.path, error.line) == ("slices[0].max_per_node", 6), error
    assert error.detail == (
        'applies to strategy = "spread" only (this slice\'s: "round_robin"): add strategy = "spread", or'
        " remove it"
    )
    spread = parse_blueprint(HEAD + 'instances = 5\nstrategy = "spread"\nmax_per_node = 2\n', SOURCE)
    assert spread.slices[0].max_per_node == 2
