"""Group commit on the trio side: commands proposed during one pass of trio's scheduler go to Raft as one
`Batch` entry (one log entry, one forwarded message from a follower, one apply call) instead of one entry
each. Each caller still gets its own command's result; a failure of the entry fails each of them alike.

Runs on the trio thread only (`submit`, and `flush` through `run_sync_soon`); the callbacks it hands to
`propose` run on pysyncobj's tick thread and only call the callers' own callbacks.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ._errors import KVError
from ._records import MAX_BATCH_COMMANDS, Batch, BatchResult, Command, Put, Result, Txn

Callback = Callable[[Result | None, KVError | None], None]
Propose = Callable[[Command | Batch, Callback], None]

#: A batch is sent at once when it holds this many value bytes; a larger command goes alone.
MAX_BATCH_BYTES = 256 * 1024


def value_bytes(command: Command) -> int:
    """The bytes a command carries in values (what makes a Raft entry large)."""
    if isinstance(command, Put):
        return len(command.value)
    if isinstance(command, Txn):
        return sum(len(op.value) for op in (*command.success, *command.failure) if isinstance(op, Put))
    return 0


class ProposalBatcher:
    def __init__(self, propose: Propose) -> None:
        self._propose = propose
        self._pending: list[tuple[Command, Callback]] = []
        self._bytes = 0
        self._scheduled = False

    def submit(self, command: Command, callback: Callback) -> None:
        """Propose `command` with the others submitted in this scheduler pass (trio thread only)."""
        size = value_bytes(command)
        if size >= MAX_BATCH_BYTES:
            self._propose(command, callback)
            return
        self._pending.append((command, callback))
        self._bytes += size
        if len(self._pending) >= MAX_BATCH_COMMANDS or self._bytes >= MAX_BATCH_BYTES:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            trio.lowlevel.current_trio_token().run_sync_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        pending, self._pending, self._bytes = self._pending, [], 0
        if len(pending) == 1:
            self._propose(*pending[0])
        elif pending:
            callbacks = [callback for _command, callback in pending]
            self._propose(Batch(commands=tuple(c for c, _callback in pending)), _split(callbacks))


def _split(callbacks: list[Callback]) -> Callback:
    def done(result: Result | None, error: KVError | None) -> None:  # on the tick thread
        if isinstance(result, BatchResult) and len(result.results) == len(callbacks):
            for callback, one in zip(callbacks, result.results, strict=True):
                callback(one, None)
        else:  # the entry failed (or the batch was refused whole): the same answer for each
            for callback in callbacks:
                callback(result, error)

    return done
