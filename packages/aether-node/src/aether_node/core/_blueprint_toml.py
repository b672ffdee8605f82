"""Blueprint TOML → Blueprint, with errors that point at the file, line and column. Pure; importable
without anything server-side (the CLI validates without a cluster)."""

from __future__ import annotations

import datetime
import math
import re
import tomllib
from collections.abc import Sequence
from typing import Any

import attrs

from ._autoscale_spec import parse_autoscale
from ._blueprint import Balancing, Blueprint, Resources, SliceSpec, Strategy
from ._coordinates import Coordinates
from ._errors import InvalidCoordinatesError, NodeError
from ._health_spec import parse_health
from ._reconcile_spec import parse_policy
from ._records import encode_record
from ._table_problems import Fail, Problem, key_named, unknown_key
from ._text import quoted, shown
from ._update_spec import parse_update

MAX_INSTANCES = 10_000
#: The most one value of the store may hold (`aether_kv.MAX_VALUE_BYTES`; the core does not import the KV
#: here, a test checks that they agree). An apply writes the blueprint's record and its revision's, each
#: with the TOML source and every slice's config (as JSON), in one transaction: two values at the limit
#: fit the KV's 4 MiB request (base64 on the wire), so the value limit is the one a blueprint meets.
STORE_VALUE_LIMIT = 1024 * 1024
#: What a blueprint's record may take, as `parse_blueprint` sees it (its time stamp aside): the store's
#: limit less room for what storing it adds (its time stamp, revision number and how it came: "scaled
#: ... from 2 to 3") and for a scale's rewrite of an `instances` line (`control/_rescale.py`); far less.
MAX_STORED_BYTES = STORE_VALUE_LIMIT - 4096
#: The same for a blueprint rewritten to a new count, which its scale may have grown past
#: MAX_STORED_BYTES by a few bytes (its `instances` lines: a count's digits, a line added).
MAX_RESCALED_BYTES = STORE_VALUE_LIMIT - 1024
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
_TOP_KEYS = {"name", "slices", "policy"}
_SLICE_KEYS = {
    "artifact",
    "instances",
    "strategy",
    "max_per_node",
    "min_available",
    "balancing",
    "resources",
    "config",
    "autoscale",
    "update",
    "health",
}
_RESOURCE_KEYS = {"cpu", "memory_mib"}


class BlueprintError(NodeError):
    """A blueprint is invalid. `location` is "file:line:column" (or "file" when unknown); `path` is the
    key path (e.g. slices[2].instances). The operator's input; nothing was changed."""

    def __init__(
        self, source: str, message: str, *, line: int | None = None, column: int | None = None, path: str = ""
    ) -> None:
        where = source + (f":{line}" if line else "") + (f":{column}" if line and column else "")
        super().__init__(f"{where}: {path + ': ' if path else ''}{message}")
        self.source = source
        self.line = line
        self.column = column
        self.path = path
        self.detail = message
        self.problems: tuple[BlueprintError, ...] = (self,)

    @classmethod
    def of(cls, problems: list[BlueprintError]) -> BlueprintError:
        """One error for every problem found (in the order of the file), one line each; the first one's
        location and path are the error's own."""
        problems = sorted(problems, key=lambda problem: (problem.line is None, problem.line or 0))
        if len(problems) == 1:
            return problems[0]
        first = problems[0]
        combined = cls(first.source, first.detail, line=first.line, column=first.column, path=first.path)
        combined.message = "\n".join(problem.message for problem in problems)
        combined.args = (combined.message,)
        combined.problems = tuple(problems)
        return combined


class _Problems:
    """The problems found so far; `check` runs one check that stands on its own and keeps its error, so
    one run reports every problem of a blueprint, not only the first."""

    def __init__(self) -> None:
        self.found: list[BlueprintError] = []

    def check(self, run: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return run(*args, **kwargs)
        except BlueprintError as error:
            self.found.extend(error.problems)
            return None

    def add(self, error: BlueprintError) -> None:
        self.found.append(error)


class TomlLocator:
    """Finds the line of a key in the TOML text, for errors after parsing (tomllib keeps no positions)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.slice_starts = [i for i, line in enumerate(self.lines) if _header(line) == "[[slices]]"]

    def find(
        self, key: str, slice_index: int | None = None, table: str | None = None
    ) -> tuple[int | None, int | None]:
        start, end = 0, len(self.lines)
        if slice_index is not None and slice_index < len(self.slice_starts):
            start = self.slice_starts[slice_index]
            following = [s for s in self.slice_starts if s > start]
            end = following[0] if following else len(self.lines)
        if table:  # a slice's table, or (no slice) a top-level one: [policy]
            wanted: str | None = f"slices.{table}" if slice_index is not None else table
        else:
            wanted = "slices" if slice_index is not None else None
        header = None  # None: the top level
        table_line = None  # the wanted table's header: where a key it lacks is reported
        for number in range(start, end):
            stripped = self.lines[number].strip()
            if stripped.startswith("["):
                header = _header(stripped).strip("[]").strip()
                if header == wanted:
                    if not key:  # no key: the table's header itself
                        return number + 1, self.lines[number].index("[") + 1
                    table_line = table_line or number + 1
                elif wanted is None and key and header.split(".")[0] == key:  # `[[slice]]`: a table
                    return number + 1, self.lines[number].index("[") + 1
                continue
            written = re.match(rf"^({re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')\s*=", stripped)
            if header == wanted and written:  # (bare, or quoted without escapes: `"x y" = 1`)
                return number + 1, self.lines[number].index(written[1]) + 1
        if table_line is not None:  # a key the table lacks (a required one): its header
            return table_line, 1
        return None, None


def _header(line: str) -> str:
    """A table header without its comment and inner spaces: `[[ slices ]]  # x` → `[[slices]]`."""
    return line.split("#", 1)[0].replace(" ", "").replace("\t", "")


def parse_blueprint(
    text: str, source: str = "blueprint.toml", *, timestamp: float = 0.0, max_stored: int = MAX_STORED_BYTES
) -> Blueprint:
    """Parse and validate; raise BlueprintError naming file, line, column and key path. `max_stored`: the
    most its record may take (`_refuse_oversized`)."""
    try:
        data = tomllib.loads(text)
    except RecursionError:  # (the parser's own limit: about a thousand tables or arrays within each other)
        raise BlueprintError(
            source, f"TOML: nested too deeply to read (a slice's config may nest {MAX_CONFIG_DEPTH} levels)"
        ) from None
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        if found:
            detail = message[: found.start()].strip()
            raise BlueprintError(
                source, f"TOML syntax: {detail}", line=int(found[1]), column=int(found[2])
            ) from None
        raise BlueprintError(source, f"TOML syntax: {message}") from None
    locate = TomlLocator(text)

    def fail(
        path: str, message: str, key: str, index: int | None = None, table: str | None = None
    ) -> BlueprintError:
        line, column = locate.find(key, index, table)
        return BlueprintError(source, message, line=line, column=column, path=path)

    problems = _Problems()
    for key in data:
        if key not in _TOP_KEYS:
            problems.add(fail(key_named(key), unknown_key(key, _TOP_KEYS), key))
    name = data.get("name")
    if not isinstance(name, str):
        problems.add(fail("name", "required: a string naming the blueprint", "name"))
    elif not _NAME.fullmatch(name):  # (`match` took a name ending in a newline: `$` matches before it)
        problems.add(
            fail(
                "name",
                f"{quoted(name)} must be 1–64 lowercase letters, digits, '.', '_' or '-',"
                " beginning and ending with a letter or digit",
                "name",
            )
        )
    policy = None
    if "policy" in data:
        fail_policy = _table_fail(fail, "policy", None)
        policy = problems.check(parse_policy, data["policy"], "policy", fail_policy)
    raw_slices = data.get("slices")
    if not isinstance(raw_slices, list) or not raw_slices:
        problems.add(BlueprintError(source, "at least one [[slices]] table is required", path="slices"))
        raw_slices = []
    specs = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_slices):
        path = f"slices[{index}]"
        if not isinstance(raw, dict):
            problems.add(BlueprintError(source, "must be a table ([[slices]])", path=path))
            continue
        spec = _parse_slice(raw, index, path, fail, problems)
        if spec is None:
            continue
        artifact_id = spec.artifact.rsplit(":", 1)[0]
        if artifact_id in seen:
            problems.add(
                fail(
                    f"{path}.artifact",
                    f"{artifact_id} is already deployed by slices[{seen[artifact_id]}]: one entry per slice",
                    "artifact",
                    index,
                )
            )
        seen[artifact_id] = index
        specs.append(spec)
    blueprint = Blueprint(
        name=name if isinstance(name, str) else "",
        slices=tuple(specs),
        timestamp=timestamp,
        source=text,
        policy=policy,
    )  # (with problems, what parsed of it: its size is then at least what a fixed file would take)
    problems.check(_refuse_oversized, blueprint, source, max_stored)
    if problems.found:
        raise BlueprintError.of(problems.found)
    return blueprint


def _refuse_oversized(blueprint: Blueprint, source: str, max_stored: int) -> None:
    """Refuse a blueprint whose record is over `max_stored` bytes (the store would refuse the apply, with
    an error naming neither the file nor what takes the room), measured as the store will see it, less
    its time stamp (the same size whenever it is checked: the headroom covers the time stamp's digits)."""
    size = len(encode_record(attrs.evolve(blueprint, timestamp=0.0)))
    if size <= max_stored:
        return
    configs = {f"slices[{i}].config": len(encode_record(s.config)) for i, s in enumerate(blueprint.slices)}
    biggest = max(configs, key=configs.__getitem__, default=None)
    of_it = f"; {biggest}: {_size(configs[biggest])} of it" if biggest and configs[biggest] > 2 else ""
    raise BlueprintError(
        source,
        f"the blueprint takes {_size(size)} stored ({size:,} bytes: its TOML source, and each slice's"
        f" config again as JSON{of_it}), over the {_size(max_stored)} ({max_stored:,} bytes)"
        f" a blueprint may take (one value of the store holds at most {_size(STORE_VALUE_LIMIT)}): keep"
        " [slices.config] small; put big data in the slice's package, or have the slice fetch it when it"
        " starts",
    )


def _size(count: int) -> str:
    """A byte count for a person: "1.2 MiB", "1020 KiB"."""
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f}".removesuffix(".0") + " MiB"
    return f"{count / 1024:.1f}".removesuffix(".0") + " KiB"


def _parse_slice(
    raw: dict[str, Any], index: int, path: str, fail: Any, problems: _Problems
) -> SliceSpec | None:
    """The slice, or None when it has a problem (each one goes to `problems`; every independent check
    runs, so all of them are reported together)."""
    before = len(problems.found)
    for key in raw:
        if key not in _SLICE_KEYS:
            problems.add(fail(f"{path}.{key_named(key)}", unknown_key(key, _SLICE_KEYS), key, index))
    artifact = problems.check(_artifact, raw, index, path, fail)
    instances = problems.check(
        _integer, raw, "instances", path, index, fail, minimum=0, maximum=MAX_INSTANCES, required=True
    )
    strategy = problems.check(_choice, raw, "strategy", Strategy, Strategy.ROUND_ROBIN, path, index, fail)
    balancing = problems.check(_choice, raw, "balancing", Balancing, Balancing.ROUND_ROBIN, path, index, fail)
    max_per_node = problems.check(
        _integer, raw, "max_per_node", path, index, fail, minimum=1, maximum=MAX_INSTANCES, default=1
    )
    if "max_per_node" in raw and max_per_node is not None and strategy not in (None, Strategy.SPREAD):
        problems.add(  # (it was taken and ignored: the placement did not cap anything)
            fail(
                f"{path}.max_per_node",
                f'applies to strategy = "spread" only (this slice\'s: "{strategy.value}"): add strategy ='
                ' "spread", or remove it',
                "max_per_node",
                index,
            )
        )
    min_available = None
    if "min_available" in raw:  # (at most `instances`; checked alone if that is wrong itself)
        most = MAX_INSTANCES if instances is None else instances
        min_available = problems.check(
            _integer, raw, "min_available", path, index, fail, minimum=0, maximum=most
        )
    resources = problems.check(_resources, raw, index, path, fail)
    config = problems.check(_config, raw, index, path, fail)
    autoscale = None
    if "autoscale" in raw:  # (checked against `instances` only if that is valid itself)
        fail_autoscale = _table_fail(fail, "autoscale", index)
        autoscale = problems.check(
            parse_autoscale,
            raw["autoscale"],
            f"{path}.autoscale",
            fail_autoscale,
            instances=instances,
            min_available=min_available,
            max_instances=MAX_INSTANCES,
        )
    update = None
    if "update" in raw:
        fail_update = _table_fail(fail, "update", index)
        update = problems.check(parse_update, raw["update"], f"{path}.update", fail_update)
    health = None
    if "health" in raw:
        fail_health = _table_fail(fail, "health", index)
        health = problems.check(parse_health, raw["health"], f"{path}.health", fail_health)
    if len(problems.found) > before:
        return None
    return SliceSpec(
        artifact=artifact,
        instances=instances,
        strategy=strategy,
        max_per_node=max_per_node,
        resources=resources,
        min_available=min_available,
        balancing=balancing,
        config=config,
        autoscale=autoscale,
        update=update,
        health=health,
    )


def _table_fail(fail: Any, table: str, index: int | None) -> Fail:
    """The error maker a table's parser raises with: one BlueprintError of all its problems, each at its
    key's line inside the table (key `table`: the `table = ...` line of the slice or the blueprint itself;
    key "": the table's header; a key of an inline table, `table = {...}`: that line)."""

    def at(problem: Problem) -> BlueprintError:
        if problem.key != table:
            error = fail(problem.path, problem.message, problem.key, index, table)
            if error.line is not None:
                return error
        return fail(problem.path, problem.message, table, index)

    def fail_table(found: Sequence[Problem]) -> BlueprintError:
        return BlueprintError.of([at(p) for p in found])

    return fail_table


def _artifact(raw: dict[str, Any], index: int, path: str, fail: Any) -> str:
    artifact = raw.get("artifact")
    if not isinstance(artifact, str):
        what = "required" if artifact is None else f"must be a string, got {type(artifact).__name__}"
        raise fail(
            f"{path}.artifact",
            f"{what}: coordinates group:artifact:version (e.g. org.aether:echo:1.0.0)",
            "artifact",
            index,
        )
    try:
        Coordinates.parse(artifact)
    except InvalidCoordinatesError as error:
        raise fail(f"{path}.artifact", error.message, "artifact", index) from None
    return artifact


def _config(raw: dict[str, Any], index: int, path: str, fail: Any) -> dict[str, Any]:
    """The slice's config table. It reaches the slice as JSON, so what JSON has no value for (a TOML
    date or time; nan and inf, which also never compare equal, so that every apply of the same file
    would be a new revision) is refused here, each one naming its key, rather than failing later."""
    config = raw.get("config", {})
    if not isinstance(config, dict):
        raise fail(f"{path}.config", "must be a table: [slices.config]", "config", index)
    depths = {key: 1 + _depth(value) for key, value in config.items()}  # (the config table is one level)
    deepest = max(depths, key=depths.__getitem__, default=None)
    if deepest is not None and depths[deepest] > MAX_CONFIG_DEPTH:
        raise fail(
            f"{path}.config.{deepest}",
            f"nested {depths[deepest]} levels deep, with the config table (tables and arrays within each"
            f" other): at most {MAX_CONFIG_DEPTH}",
            deepest,
            index,
            "config",
        )
    found = []
    for where, top, value in _not_json(config, "", ""):
        if isinstance(value, float):
            text, what = (
                str(value),
                f"{value} is not a JSON number, and the config travels to the slice as JSON",
            )
        else:
            text = value.isoformat()
            what = f"a TOML date or time ({text}) cannot be handed to a slice, whose config travels as JSON"
        error = fail(
            f"{path}.config{where}", f'{what}: write it as a string ("{text}")', top, index, "config"
        )
        if error.line is None:  # an inline table (config = {...}): point at the config key itself
            error = fail(f"{path}.config{where}", error.detail, "config", index)
        found.append(error)
    if found:
        raise BlueprintError.of(found)
    return config


#: How deeply tables and arrays may nest in a slice's config: far past any config's need, and far below
#: the recursion limit of what handles it after (the records' encoder, JSON on every wire).
MAX_CONFIG_DEPTH = 64


def _depth(value: Any) -> int:
    """How many tables and arrays deep `value` nests (0: a scalar), without recursion."""
    deepest, level = 0, [(value, 0)]
    while level:
        item, depth = level.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth + 1)
            level.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _not_json(value: Any, where: str, top: str) -> list[tuple[str, str, Any]]:
    """(key path, top-level key, value) of every value inside a config that JSON cannot carry."""
    if isinstance(value, datetime.date | datetime.time) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        return [(where, top, value)]
    if isinstance(value, dict):
        return [
            found for key, item in value.items() for found in _not_json(item, f"{where}.{key}", top or key)
        ]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in _not_json(item, f"{where}[{i}]", top)]
    return []


def _resources(raw: dict[str, Any], index: int, path: str, fail: Any) -> Resources:
    if "resources" not in raw:
        return Resources()
    table = raw["resources"]
    if not isinstance(table, dict):
        raise fail(
            f"{path}.resources",
            "must be a table: [slices.resources] with cpu and memory_mib",
            "resources",
            index,
        )
    found = [
        fail(
            f"{path}.resources.{key_named(key)}",
            unknown_key(key, ("cpu", "memory_mib")),
            key,
            index,
            "resources",
        )
        for key in table
        if key not in _RESOURCE_KEYS
    ]
    cpu = table.get("cpu", 0.0)
    if (
        isinstance(cpu, bool)
        or not isinstance(cpu, int | float)
        or not math.isfinite(cpu)
        or not 0 <= cpu <= 1024
    ):
        found.append(
            fail(
                f"{path}.resources.cpu",
                f"must be a number of cores in [0, 1024], got {shown(cpu)}",
                "cpu",
                index,
                "resources",
            )
        )
    memory = table.get("memory_mib", 0)
    if isinstance(memory, bool) or not isinstance(memory, int) or not 0 <= memory <= 4 * 1024 * 1024:
        found.append(
            fail(
                f"{path}.resources.memory_mib",
                f"must be an integer number of MiB ≥ 0, got {shown(memory)}",
                "memory_mib",
                index,
                "resources",
            )
        )
    if found:
        raise BlueprintError.of(found)
    return Resources(cpu=float(cpu), memory_mib=memory)


def _integer(
    raw: dict[str, Any],
    key: str,
    path: str,
    index: int,
    fail: Any,
    *,
    minimum: int,
    maximum: int,
    default: int | None = None,
    required: bool = False,
) -> int:
    if key not in raw:
        if required:
            raise fail(f"{path}.{key}", "required: an integer", key, index)
        return default  # type: ignore[return-value]
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"{path}.{key}", f"must be an integer, got {shown(value)}", key, index)
    if not minimum <= value <= maximum:
        raise fail(
            f"{path}.{key}", f"must be between {minimum} and {maximum}, got {shown(value)}", key, index
        )
    return value


def _choice(raw: dict[str, Any], key: str, kind: type, default: Any, path: str, index: int, fail: Any) -> Any:
    if key not in raw:
        return default
    try:
        return kind(raw[key])
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise fail(f"{path}.{key}", f"must be one of {choices}, got {shown(raw[key])}", key, index) from None
