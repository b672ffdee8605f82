"""What is wrong on this node itself, as the cluster's status names it (`NodeRecord.problems`).

Each source of trouble keeps one line, or none (`set`); the node's registration carries the lines and is
written again when they change (`node/_node.py`), so `aether cluster status` says "node node-1: …" until
the trouble is over. The one source so far: instance logs that cannot be written (`LogTrouble`: a full
disk under `{data-dir}/logs`, whose output is dropped rather than ending the node). Pure bookkeeping; the
waiting is trio's.
"""

from __future__ import annotations

from pathlib import Path

import trio


class NodeProblems:
    def __init__(self) -> None:
        self._lines: dict[str, str] = {}  # source → its line
        self._changed = trio.Event()

    def set(self, source: str, line: str | None) -> None:
        """`source`'s trouble is `line` now (None: it has none)."""
        if self._lines.get(source) == line:
            return
        if line is None:
            del self._lines[source]
        else:
            self._lines[source] = line
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def sources(self) -> frozenset[str]:
        """The sources that have a line now."""
        return frozenset(self._lines)

    def lines(self) -> tuple[str, ...]:
        return tuple(self._lines[source] for source in sorted(self._lines))

    def next_change(self) -> trio.Event:
        """An event set at the next change (take it before reading `lines`: nothing is missed)."""
        return self._changed


class LogTrouble:
    """The instance logs whose output cannot be written now, as one line of `NodeProblems` ("logs")."""

    def __init__(self, problems: NodeProblems, logs_dir: Path) -> None:
        self.problems = problems
        self.logs_dir = logs_dir
        self._failing: dict[Path, str] = {}  # log file → why its last write failed

    def failed(self, path: Path, why: str) -> None:
        self._failing[path] = why
        self._tell()

    def over(self, path: Path) -> None:
        """`path` was written again, or will never be (its instance ended)."""
        if self._failing.pop(path, None) is not None:
            self._tell()

    def _tell(self) -> None:
        if not self._failing:
            self.problems.set("logs", None)
            return
        why = self._failing[max(self._failing)]
        count = len(self._failing)
        logs = "1 instance's output" if count == 1 else f"{count} instances' output"
        self.problems.set(
            "logs", f"{logs} cannot be written under {self.logs_dir} ({why}): dropped until it can"
        )
