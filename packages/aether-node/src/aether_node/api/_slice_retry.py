"""`aether slice retry`: let go of a slice's failures now. A FAILED instance keeps its node out of the
running for its slice for `failed_retry_after` (60 s) after the failure, so that a slice that cannot start
is not started again and again; an operator who fixed the cause (published a missing dependency, a
config the slice refused) need not wait it out. The request is a record, `cluster/reconcile/retry/
{group:artifact}` (`RetryRequest`), that covers the slice's failures up to a revision; the leader removes
those FAILED records and places their instances again on its next pass (`control/_failure_hold.py`).

Protocol-agnostic like `_handlers`, whose reads and errors it shares: a RequestError or a RetryInfo.
"""

from __future__ import annotations

from aether_kv import Compare, CompareOp, CompareTarget, Put

from ..client import InstanceInfo, RetryInfo
from ..core._error_kinds import ErrorKind
from ..core._errors import RequestError
from ..core._kv_errors import store_errors
from ..core._records import RecordError, RetryRequest, SliceState, decode_record, encode_record
from ..core._schema import SLICES, retry_key
from ._cluster_view import instance_info
from ._handlers import Handlers

ATTEMPTS = 3  # another retry of the same slice written between the read and the write: read again


class SliceRetry:
    """`retry` for the management API, on `handlers`' store, reads and clock."""

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self.kv = handlers.kv
        self.clock = handlers.clock

    async def retry(self, artifact: str, *, since: int | None = None) -> RetryInfo:
        """Let go of the failures of slice `artifact` recorded up to `since` (the revision the client read:
        a late copy lets go of no later failure), or up to what this node read. Refused (404) for a slice
        no blueprint deploys; nothing written when nothing failed (an empty RetryInfo). Never moves an
        earlier request's mark back."""
        for _ in range(ATTEMPTS):
            await self.handlers._fresh()
            artifact_id = await self.handlers.named_slice(artifact)
            key = retry_key(artifact_id)
            if not any(
                spec.artifact.rsplit(":", 1)[0] == artifact_id
                for blueprint in (await self.handlers._blueprints()).values()
                for spec in blueprint.slices
            ):
                raise RequestError(
                    ErrorKind.NOT_FOUND, f"no blueprint deploys {artifact_id}: nothing of it to retry"
                )
            records, read_at = await self.handlers._read_at(SLICES)
            covers = read_at if since is None else min(since, read_at)
            let_go = tuple(
                info
                for record_key, kv in sorted(records.items())
                if kv.mod_revision <= covers
                and isinstance(info := instance_info(record_key, kv), InstanceInfo)
                and info.state == SliceState.FAILED
                and info.artifact.rsplit(":", 1)[0] == artifact_id
            )
            if not let_go:
                return RetryInfo(artifact=artifact_id, let_go=())
            with store_errors(f"could not read the retries of {artifact_id}"):
                found = await self.kv.get(key)
            if found is not None:
                try:
                    covers = max(covers, decode_record(key, found.value, RetryRequest).covers)
                except RecordError:
                    pass  # (written over: the leader skips a record it cannot read)
            unchanged = Compare(
                key=key,
                target=CompareTarget.MOD_REVISION,
                op=CompareOp.EQ,
                operand=found.mod_revision if found is not None else 0,
            )
            request = RetryRequest(requested_at=self.clock(), covers=covers)
            with store_errors(f"could not ask for a retry of {artifact_id}"):
                result = await self.kv.txn([unchanged], [Put(key=key, value=encode_record(request))])
            if result.succeeded:
                return RetryInfo(artifact=artifact_id, let_go=let_go)
        raise RequestError(
            ErrorKind.CONFLICT, f"other retries of {artifact} kept changing its retry record: try again"
        )
