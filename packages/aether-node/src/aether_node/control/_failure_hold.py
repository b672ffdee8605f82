"""How long a FAILED instance keeps its node out of the running for its slice. Pure: records and times in,
yes or no out. No I/O, no clock.

A FAILED record keeps its node out (the work is tried elsewhere) for `retry_after` seconds after the
failure, then it is removed and the node may be tried again; an operator's `aether slice retry` lets go at
once of the slice's failures recorded up to the revision it covers (`core/_records.RetryRequest`): fixed
what failed (published a missing dependency, say), the operator need not wait for the retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:  # (the planner imports this module)
    from ._reconcile import ObservedInstance

RETRIED_WHY = "retried: an operator let its failure go (`aether slice retry`)"


@attrs.frozen(kw_only=True)
class FailureHold:
    """`retry_after`: seconds a failure keeps its node out; `retried`: artifact id → the revision up to
    which an operator's retry let that slice's failures go (a record's mod revision at most that)."""

    retry_after: float = 60.0
    retried: Mapping[str, int] = attrs.field(factory=dict)

    def keeps_out(self, failed: ObservedInstance, now: float) -> bool:
        """Whether the FAILED record `failed` still keeps its node out at `now`."""
        return now - failed.timestamp < self.retry_after and not self.let_go(failed)

    def let_go(self, failed: ObservedInstance) -> bool:
        """Whether an operator's retry let go of the FAILED record `failed`."""
        covers = self.retried.get(failed.coordinates.artifact_id)
        return covers is not None and failed.mod_revision <= covers
