"""Canary and blue-green rollouts. Pure: (a slice's spec, its rollout record, what runs, now, a verdict)
→ the next rollout record, and what the reconcile planner should aim for meanwhile. No I/O, no clock.

A rollout starts when a slice whose `[slices.update]` strategy is canary or blue_green is asked for a
new version, or a new config, while another version or config serves (ACTIVE instances); its stable
version is the one that takes the calls (a rollout's switched or promoted candidate, if the blueprint
moved on from one mid-way: `_taking_calls`), else the one with the most ACTIVE instances. The instances
are told apart by variant (version and config digest): in `Running` the candidate's config goes by its
version (`1.0`), any other config by its version and digest (`1.0 (config 1a2b3c4d)`). The record keeps
the versions (what the router splits and the verdict judges by) and the stable config when it differs
(what an abort goes back to). Until it ends, the planner is given a spec for the new version with the
count of the current step, and the old version's instances are *held*
(`_reconcile.plan(..., held=)`): never removed, never counted against the surge. So a failing new
version never takes the old version's capacity, let alone its floor; its instances simply fail, and the
rollout aborts. Nor does a node failure: the stable version is kept at the slice's count meanwhile
(`stable_spec`, `_stable_set.py`), its lost instances replaced on the other nodes, and the rollout stays
in its phase (losing the stable instances is no reason to promote the candidate).

- canary, `steps` [10, 50, 100]: DEPLOYING step k brings up ceil(instances × steps[k] / 100) new
  instances (at least 1); once they are settled (below), OBSERVING routes steps[k] % of the calls to
  them for `step_window_s`; then `_canary_verdict.evaluate` judges the window (error rate and p99 per
  version): a pass moves to step k + 1 (or, after the last step, PROMOTED), a fail aborts. With no
  verdict (no figures to judge from) it waits and says so: `aether slice promote|abort` decides.
- blue_green: DEPLOYING brings up the full new set (the old one keeps every call); once every new
  instance is settled, SWITCHED routes every call to it in one step and keeps the old set `grace_s`
  seconds (abort switches back at once); then PROMOTED.
- PROMOTED: the hold ends and the rolling planner removes the old instances (never below the floor);
  the record is deleted once no other version has an instance. A new instance that fails meanwhile
  aborts it while the stable version still runs. ABORTED: the planner is given the stable
  version instead (the new instances go) until the blueprint asks for something else. A blueprint that
  goes back to the stable version mid-way (a rollback) aborts the rollout the same way.

Settled: a new instance counts for a step or the switch only once it has stayed ACTIVE for the slice's
`min_ready_s` (`[slices.update]`), by the leader's own clock (`active_since`, as for the planner's
removals): a new version whose instances crash soon after they start never gets the switch or a step's
share; its crash loop ends in FAILED, which aborts the rollout. Only the two transitions that give the
candidate more calls wait for it: DEPLOYING → OBSERVING and DEPLOYING → SWITCHED. The step's window
starts then, so it runs on instances that have stayed up (though longer than `min_ready_s`, a window
begun on instances about to die would be judged mostly on the stable version's calls). The end of a
window needs no count of its own: a pass moves to DEPLOYING step k + 1, which counts again, or to
PROMOTED, where the planner's floor rule counts each new instance the same way before an old one goes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from aether_kv import KeyValue

from ..core._bad_records import log_once
from ..core._blueprint import SliceSpec
from ..core._config_digest import config_digest
from ..core._coordinates import Coordinates
from ..core._errors import InvalidCoordinatesError
from ..core._records import RecordError, RolloutPhase, RolloutRecord, SliceState, decode_record
from ..core._schema import ROLLOUTS
from ..core._text import plural
from ..core._update_spec import UpdateSpec, UpdateStrategy
from ._canary_verdict import Verdict
from ._instance_index import ArtifactInstances, InstanceIndex, Variant, as_index
from ._reconcile import REMOVING, ObservedInstance, is_settling

log = logging.getLogger("aether_node.cluster")

IN_PROGRESS = frozenset({RolloutPhase.DEPLOYING, RolloutPhase.OBSERVING, RolloutPhase.SWITCHED})


@attrs.frozen(kw_only=True)
class Running:
    """What runs of one artifact: ACTIVE instances per version, the versions with any instance record
    (not being removed), and the new version's failures ("node: reason"). A version with a config other
    than the candidate's is labelled with its config (`label`); `configs` maps such a label to its
    version and config. `settling`: the candidate's ACTIVE instances (counted in `active` too) seen ACTIVE
    for less than the slice's `min_ready_s`, which do not count yet."""

    active: Mapping[str, int]
    present: frozenset[str]
    failed: tuple[str, ...] = ()
    configs: Mapping[str, tuple[str, Mapping[str, Any]]] = attrs.field(factory=dict)
    settling: int = 0

    def split(self, label: str) -> tuple[str, Mapping[str, Any] | None]:
        """A label's version, and its config if it is not the candidate's (None)."""
        return self.configs.get(label, (label, None))


def label(version: str, digest: str, candidate_digest: str) -> str:
    """How `Running` names a variant: its version, with its config's digest if not the candidate's."""
    return version if digest == candidate_digest else f"{version} (config {digest[:8]})"


def is_candidate(record: RolloutRecord, version: str, digest: str) -> bool:
    """Whether the blueprint asks for the record's candidate (version and config)."""
    return record.candidate == version and record.candidate_config in ("", digest)


def is_stable(record: RolloutRecord, version: str, digest: str) -> bool:
    """Whether the blueprint went back to what the record's stable instances run."""
    if record.stable != version:
        return False
    if record.stable_config is not None:
        return config_digest(record.stable_config) == digest
    return record.candidate_config in ("", digest)


class RolloutCommandError(Exception):
    """`aether slice promote|abort` asked of a rollout in a phase that cannot take it. The operator's
    input; nothing was changed."""


def update_of(spec: SliceSpec) -> UpdateSpec:
    return spec.update if spec.update is not None else UpdateSpec()


def running(
    instances: Iterable[ObservedInstance] | InstanceIndex | ArtifactInstances,
    candidate: Coordinates,
    config: Mapping[str, Any] | None = None,
    *,
    active_since: Mapping[str, float] | None = None,
    now: float = 0.0,
    min_ready_s: float = 0.0,
) -> Running:
    """The observed instances of `candidate`'s artifact (a list, an `InstanceIndex`, or its records of
    that artifact) → `Running` for the rollout to `candidate` with `config` (None: an empty one).
    `active_since` (instance key → when the leader first saw it ACTIVE, on `now`'s clock; None: no window
    known) says which of the candidate's ACTIVE instances are still settling (`Running.settling`)."""
    if not isinstance(instances, ArtifactInstances):
        instances = as_index(instances).artifact(candidate.artifact_id)
    wanted = Variant.of(candidate, config or {})
    active: dict[str, int] = {}
    present: set[str] = set()
    configs: dict[str, tuple[str, Mapping[str, Any]]] = {}
    failed = []
    settling = 0
    for node_id, versions in instances.nodes.items():
        for variant, states in versions.items():
            version = label(variant.version, variant.config, wanted.config)
            for state, bucket in states.items():
                if state in REMOVING:
                    continue
                present.add(version)
                if version != variant.version and version not in configs:
                    configs[version] = (variant.version, next(iter(bucket.values())).config)
                if state is SliceState.ACTIVE:
                    active[version] = active.get(version, 0) + len(bucket)
                    if variant == wanted and active_since and min_ready_s > 0:
                        settling += sum(is_settling(k, active_since, now, min_ready_s) for k in bucket)
                elif state is SliceState.FAILED and variant == wanted:
                    failed += [f"{node_id}: {i.reason or 'failed'}" for i in bucket.values()]
    return Running(
        active=active,
        present=frozenset(present),
        failed=tuple(sorted(failed)),
        configs=configs,
        settling=settling,
    )


def _taking_calls(record: RolloutRecord | None, candidate_digest: str) -> str | None:
    """The variant that takes the calls under `record` (as `Running` labels it for a candidate of config
    `candidate_digest`): its candidate once switched or promoted, else its stable version. That one is the
    stable version of a rollout that follows (a blueprint applied again mid-way): a blue-green rollout
    applied a third version during its grace period took the old set, which had as many instances, as
    stable, and every call went back to the version it had replaced. None without a record."""
    if record is None:
        return None
    if record.phase in (RolloutPhase.SWITCHED, RolloutPhase.PROMOTED):
        return label(record.candidate, record.candidate_config, candidate_digest)
    config = record.candidate_config if record.stable_config is None else config_digest(record.stable_config)
    return label(record.stable, config, candidate_digest)


def step_count(spec: SliceSpec, step: int) -> int:
    """New instances a canary step runs: its share of the slice's instances, at least one."""
    steps = update_of(spec).steps
    share = steps[min(step, len(steps) - 1)]
    return min(spec.instances, max(1, math.ceil(spec.instances * share / 100)))


def advance(
    spec: SliceSpec,
    record: RolloutRecord | None,
    now_running: Running,
    *,
    now: float,
    verdict: Verdict | None = None,
) -> RolloutRecord | None:
    """The rollout record after this pass (None: no rollout). `verdict` judges the current canary step's
    window (None: nobody could judge it). Returns `record` itself when nothing changes."""
    coordinates = Coordinates.parse(spec.artifact)
    version = coordinates.version
    digest = config_digest(spec.config)
    update = update_of(spec)
    moved_on: RolloutRecord | None = None  # a rollout in flight that the blueprint moved on from
    if record is not None and not is_candidate(record, version, digest):
        if is_stable(record, version, digest) and record.phase is not RolloutPhase.PROMOTED:
            # The blueprint went back (a rollback): an abort, until the new instances are gone.
            if now_running.present <= {version}:
                return None
            if record.phase is RolloutPhase.ABORTED:
                return record
            went_back = version if record.stable != record.candidate else f"the config {version} ran with"
            return _abort(record, now, f"the blueprint went back to {went_back}")
        moved_on, record = record, None  # the blueprint moved on: a new rollout (or a rolling update)
    if record is None:
        serving = {v: n for v, n in now_running.active.items() if v != version and n > 0}
        if update.strategy is UpdateStrategy.ROLLING or not serving or spec.instances == 0:
            return None
        taking_calls = _taking_calls(moved_on, digest)
        if taking_calls not in serving:  # (no rollout before, or what took its calls runs no more)
            taking_calls = max(serving, key=lambda v: (serving[v], v))
        stable, stable_config = now_running.split(taking_calls)
        return RolloutRecord(
            artifact_id=coordinates.artifact_id,
            strategy=update.strategy.value,
            stable=stable,
            candidate=version,
            phase=RolloutPhase.DEPLOYING,
            share=0,
            since=now,
            reason=_deploying(spec, update, 0),
            candidate_config=digest,
            stable_config=None if stable_config is None else dict(stable_config),
        )
    if record.phase is RolloutPhase.PROMOTED and now_running.present <= {version}:
        return None
    if record.phase is RolloutPhase.ABORTED:
        return record
    if now_running.failed and (
        record.phase is not RolloutPhase.PROMOTED or record.stable in now_running.present
    ):
        # (once promoted, only while the stable version still runs: then it can take the calls back)
        return _abort(
            record,
            now,
            f"{plural(len(now_running.failed), 'new instance')} failed: {'; '.join(now_running.failed)}",
        )
    if record.phase is RolloutPhase.PROMOTED:
        return record
    # (Stable instances lost with their nodes change nothing here: the planner replaces them, `stable_spec`;
    # only a verdict, the grace period or an operator ends a rollout.)
    active = now_running.active.get(version, 0)
    ready = active - now_running.settling  # those that stayed ACTIVE min_ready_s
    elapsed = now - record.since
    if record.phase is RolloutPhase.DEPLOYING:
        blue_green = record.strategy == UpdateStrategy.BLUE_GREEN.value
        needed = spec.instances if blue_green else step_count(spec, record.step)
        if ready < needed:
            # (The settling ones are named once as many as needed are ACTIVE: the reason, a write of the
            # record, does not change with each new instance that comes up; it does, once, as each settles.)
            waiting = now_running.settling if active >= needed else 0
            return _note(record, _deploying(spec, update, record.step, waiting))
        if blue_green:
            return attrs.evolve(
                record,
                phase=RolloutPhase.SWITCHED,
                share=100,
                since=now,
                reason=f"switched; the old set stays {update.grace_s:g} s",
            )
        share = update.steps[min(record.step, len(update.steps) - 1)]
        return attrs.evolve(
            record,
            phase=RolloutPhase.OBSERVING,
            share=share,
            since=now,
            reason=f"step {record.step + 1} of {len(update.steps)}: {share}% for {update.step_window_s:g} s",
        )
    if record.phase is RolloutPhase.SWITCHED:
        if elapsed < update.grace_s:
            return record
        return attrs.evolve(record, phase=RolloutPhase.PROMOTED, since=now, reason="grace period over")
    # OBSERVING
    if elapsed < update.step_window_s:
        return record
    where = f"step {record.step + 1} ({record.share}%)"
    if verdict is None or verdict.passed is None:
        why = verdict.reason if verdict is not None else "no figures to judge it"
        return _note(record, f"{where} ran its window; {why}: waiting for `aether slice promote` or `abort`")
    if not verdict.passed:
        return _abort(record, now, f"{where}: {verdict.reason}")
    if record.step + 1 >= len(update.steps):
        return attrs.evolve(
            record, phase=RolloutPhase.PROMOTED, share=100, since=now, reason=f"{where}: {verdict.reason}"
        )
    return attrs.evolve(
        record,
        phase=RolloutPhase.DEPLOYING,
        step=record.step + 1,
        since=now,
        reason=_deploying(spec, update, record.step + 1),
    )


def _deploying(spec: SliceSpec, update: UpdateSpec, step: int, settling: int = 0) -> str:
    """A DEPLOYING record's reason; `settling`: the new instances ACTIVE but not yet for min_ready_s."""
    if update.strategy is UpdateStrategy.BLUE_GREEN:
        doing = f"bringing up the new set ({plural(spec.instances, 'instance')}) beside the old one"
        then = "the switch"
    else:
        coming = plural(step_count(spec, step), "new instance")
        doing = f"step {step + 1} of {len(update.steps)}: bringing up {coming}"
        then = f"{update.steps[min(step, len(update.steps) - 1)]}% of the calls go to the new version"
    if not settling:
        return doing
    return (
        f"{doing}; waiting for {plural(settling, 'new instance')} to stay ACTIVE for"
        f" {update.min_ready_s:g} s (min_ready_s) before {then}"
    )


def _note(record: RolloutRecord, reason: str) -> RolloutRecord:
    return record if record.reason == reason else attrs.evolve(record, reason=reason)


def _abort(record: RolloutRecord, now: float, reason: str) -> RolloutRecord:
    return attrs.evolve(record, phase=RolloutPhase.ABORTED, share=0, since=now, reason=reason)


def command(record: RolloutRecord | None, operation: str, *, now: float, artifact_id: str) -> RolloutRecord:
    """`aether slice promote|abort`: the record after the operator's command. Promote ends a canary now
    (the rest of the new instances replace the old ones as in a rolling update; calls split by instance
    count meanwhile) or a blue-green grace period; abort sends every call back to the stable version and
    removes the new instances. Raises RolloutCommandError when the phase cannot take it."""
    if record is None:
        raise RolloutCommandError(f"{artifact_id} has no canary or blue-green rollout in progress")
    if record.phase not in IN_PROGRESS:
        raise RolloutCommandError(
            f"the rollout of {artifact_id} to {record.candidate} is already {record.phase.value}"
            + (
                "; to go back, roll the blueprint back (aether blueprint rollback)"
                if operation == "abort"
                else ""
            )
        )
    if operation == "abort":
        return _abort(record, now, f"aborted by an operator in {record.phase.value}")
    if operation != "promote":
        raise RolloutCommandError(f"unknown rollout command {operation!r}: promote or abort")
    if record.strategy == UpdateStrategy.BLUE_GREEN.value:
        if record.phase is RolloutPhase.DEPLOYING:
            raise RolloutCommandError(
                f"the new set of {artifact_id} is not ACTIVE yet: it switches by itself once every new"
                " instance has stayed ACTIVE for min_ready_s (abort to stop)"
            )
        return attrs.evolve(record, phase=RolloutPhase.PROMOTED, since=now, reason="promoted by an operator")
    return attrs.evolve(
        record, phase=RolloutPhase.PROMOTED, share=None, since=now, reason="promoted by an operator"
    )


def carried_on(now: RolloutRecord, between: Sequence[RolloutRecord | None]) -> bool:
    """Whether the rollout `now` is the one its key held at an earlier revision, only advanced by the
    leader since: every value the key took in between (`between`, oldest first; None: deleted) was the
    same rollout (strategy, versions, config) still in progress. An operator's promote or abort read as
    of that revision is then still meant for it (a change of its step or reason alone must not refuse
    it); one that ended, or was replaced by another rollout, in between is not the one they saw."""
    same = (now.strategy, now.stable, now.candidate, now.candidate_config, now.stable_config)
    return all(
        record is not None
        and record.phase in IN_PROGRESS
        and (record.strategy, record.stable, record.candidate, record.candidate_config, record.stable_config)
        == same
        for record in between
    )


def planned_spec(spec: SliceSpec, record: RolloutRecord | None) -> tuple[SliceSpec, bool]:
    """What the reconcile planner should aim for while `record` runs: the spec to plan (the new version at
    the step's count, or the stable version once aborted) and whether the other versions' instances are
    held (neither removed nor counted against the surge)."""
    if record is None or not is_candidate(
        record, Coordinates.parse(spec.artifact).version, config_digest(spec.config)
    ):
        return spec, False
    if record.phase is RolloutPhase.ABORTED:  # back to the stable version, with its config
        config = spec.config if record.stable_config is None else record.stable_config
        return attrs.evolve(spec, artifact=f"{record.artifact_id}:{record.stable}", config=config), False
    if record.phase is RolloutPhase.PROMOTED:
        return spec, False
    if record.strategy == UpdateStrategy.BLUE_GREEN.value:
        return spec, True
    return attrs.evolve(spec, instances=step_count(spec, record.step)), True


def stable_spec(spec: SliceSpec, record: RolloutRecord | None) -> SliceSpec | None:
    """The stable version the planner keeps whole while `record` runs (None: no rollout in progress): the
    slice's count of the stable version, with its config. Its instances lost with their nodes are replaced
    (`_reconcile.plan(..., stable=)`), so a node failure neither takes the slice below its floor nor
    leaves the canary without the set it is judged against and falls back to."""
    if record is None or record.phase not in IN_PROGRESS:
        return None
    if not is_candidate(record, Coordinates.parse(spec.artifact).version, config_digest(spec.config)):
        return None
    config = spec.config if record.stable_config is None else record.stable_config
    stable = attrs.evolve(spec, artifact=f"{record.artifact_id}:{record.stable}", config=config)
    try:
        Coordinates.parse(stable.artifact)
    except InvalidCoordinatesError:  # a record no leader wrote: nothing to restore it from
        return None
    return stable


@attrs.frozen(kw_only=True)
class RolloutPass:
    """One leader pass over every slice's rollout: the specs to plan, the artifact ids whose old
    instances are held, the stable version each held one keeps whole (artifact id → its spec), and the
    records that change (artifact id → the new record, None: delete)."""

    specs: tuple[SliceSpec, ...]
    held: frozenset[str]
    changes: Mapping[str, RolloutRecord | None]
    stable: Mapping[str, SliceSpec] = attrs.field(factory=dict)


def rollouts(
    specs: Iterable[SliceSpec],
    instances: Iterable[ObservedInstance] | InstanceIndex,
    records: Mapping[str, RolloutRecord],
    *,
    now: float,
    verdicts: Mapping[str, Verdict] | None = None,
    active_since: Mapping[str, float] | None = None,
) -> RolloutPass:
    """Advance every slice's rollout (`advance`) and say what to plan (`planned_spec`). A record whose
    slice is in no blueprint is deleted; a spec whose coordinates do not parse is left to the planner
    (which reports it). `active_since`: instance key → when the leader first saw it ACTIVE (on `now`'s
    clock), what says whether a DEPLOYING rollout's new instances have settled (None: they count at
    once)."""
    index = as_index(instances)
    planned: list[SliceSpec] = []
    held: set[str] = set()
    changes: dict[str, RolloutRecord | None] = {}
    stable: dict[str, SliceSpec] = {}
    wanted: set[str] = set()
    for spec in specs:
        try:
            coordinates = Coordinates.parse(spec.artifact)
        except InvalidCoordinatesError:
            planned.append(spec)
            continue
        artifact_id = coordinates.artifact_id
        wanted.add(artifact_id)
        before = records.get(artifact_id)
        # (Only a DEPLOYING rollout looks at its instances one by one; every other pass costs per bucket.)
        deploying = before is not None and before.phase is RolloutPhase.DEPLOYING
        now_running = running(
            index.artifact(artifact_id),
            coordinates,
            spec.config,
            active_since=active_since if deploying else None,
            now=now,
            min_ready_s=update_of(spec).min_ready_s,
        )
        after = advance(
            spec,
            before,
            now_running,
            now=now,
            verdict=(verdicts or {}).get(artifact_id),
        )
        if after != before:
            changes[artifact_id] = after
        kept = stable_spec(spec, after)
        spec, hold = planned_spec(spec, after)
        planned.append(spec)
        if hold:
            held.add(artifact_id)
            if kept is not None:
                stable[artifact_id] = kept
    for artifact_id in records:
        if artifact_id not in wanted:
            changes[artifact_id] = None
    return RolloutPass(specs=tuple(planned), held=frozenset(held), changes=changes, stable=stable)


def decode_rollouts(items: Mapping[str, KeyValue]) -> tuple[dict[str, RolloutRecord], dict[str, int]]:
    """`cluster/rollouts/` keys → (artifact id → record, artifact id → its mod revision). A record that
    does not decode is logged and skipped (its slice then updates as if no rollout ran)."""
    records: dict[str, RolloutRecord] = {}
    revisions: dict[str, int] = {}
    for key, kv in items.items():
        if not key.startswith(ROLLOUTS):
            continue
        try:
            record = decode_record(key, kv.value, RolloutRecord)
        except RecordError as error:
            log_once(log, error, key, kv.mod_revision)
            continue
        records[key[len(ROLLOUTS) :]] = record
        revisions[key[len(ROLLOUTS) :]] = kv.mod_revision
    return records, revisions
