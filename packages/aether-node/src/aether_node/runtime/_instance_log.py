"""An instance's output on its node: read through a pipe, written to size-bounded files that rotate, and
handed to whoever follows it as it comes.

A slice instance's stdout and stderr are the write end of a pipe (`open_pipe`) that its fork request
hands it; the node drains the read end (`drain`): every chunk goes to the instance's `RotatingFile`
(`{stem}.log`; past `LogLimits.max_bytes`, at a line's end, it becomes `{stem}.log.1`, the older ones
shift up to `{stem}.log.{keep}` and the oldest goes), and to every follower's channel
(`InstanceLog.subscribe`). Nothing is lost when the instance dies: the node reads the pipe to its end
(every writer gone) before it lets go. A slow writer of the node only slows the slice (the pipe's buffer
fills), never the other way round; a follower that falls behind by more than FOLLOWER_BUFFER chunks is
dropped (told so), never the node.

Writes happen on the trio thread: a chunk is at most the pipe's read size and the file is unbuffered, so
a follower that opens the files' tail (`InstanceLog.open_tail`) and subscribes without a checkpoint in
between misses nothing and sees nothing twice. `read_tail` and `LogTail.lines` read back across the
rotated files, up to 80 MiB of one endless line at the default limits: on a worker thread, never the
event loop's (it would stall the node's heartbeats).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import BinaryIO

import attrs
import trio

from ._node_problems import LogTrouble

log = logging.getLogger("aether_node.logs")

MAX_BYTES = 10 * 1024 * 1024  # default: a log file this big rotates
KEEP = 3  # default: rotated files kept
FOLLOWER_BUFFER = 1000  # chunks a follower may be behind before it is dropped
_READ = 64 * 1024
_BLOCK = 64 * 1024


@attrs.frozen(kw_only=True)
class LogLimits:
    """How big an instance's log file grows before it rotates, and how many rotated files are kept."""

    max_bytes: int = MAX_BYTES
    keep: int = KEEP

    def __attrs_post_init__(self) -> None:
        if self.max_bytes < 1 or self.keep < 0:
            raise ValueError(f"log limits: max_bytes must be ≥ 1 and keep ≥ 0, got {self}")


def rotated(path: Path, keep: int) -> list[Path]:
    """`path` and its rotated files, newest first: `x.log`, `x.log.1`, …, `x.log.{keep}`."""
    return [path, *(path.with_name(f"{path.name}.{n}") for n in range(1, keep + 1))]


class RotatingFile:
    """Appends to `path`, rotating it once it holds `limits.max_bytes` and a chunk ended a line (or at
    twice the size, whatever it ends with: one endless line must not grow the file without bound)."""

    def __init__(self, path: Path, limits: LogLimits) -> None:
        self.path = path
        self.limits = limits
        self._file: BinaryIO | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (kept open between writes)
            self._size = self._file.seek(0, os.SEEK_END)
        self._file.write(data)
        self._size += len(data)
        full = self._size >= self.limits.max_bytes
        if full and (data.endswith(b"\n") or self._size >= 2 * self.limits.max_bytes):
            self.rotate()

    def rotate(self) -> None:
        self.close()
        files = rotated(self.path, self.limits.keep)
        if self.limits.keep == 0:
            self.path.unlink(missing_ok=True)
            return
        files[-1].unlink(missing_ok=True)
        for newer, older in zip(reversed(files[:-1]), reversed(files[1:]), strict=True):
            if newer.exists():
                newer.rename(older)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._size = 0


def read_tail(path: Path, count: int, keep: int = KEEP) -> list[str]:
    """The last `count` complete lines of the log `path` and, further back, its rotated files. No file
    yet (the instance wrote nothing): no lines."""
    return LogTail.open(path, keep).lines(count)


@attrs.define(eq=False)
class LogTail:
    """A log's files as they were when opened (newest first, each with the size to read back from), to be
    read later, off the event loop, by `lines`: what is written or rotated after `open` is not in it.

    `open` is cheap (a few opens and a stat), so it can be taken with a follower's subscription and no
    checkpoint between; `lines` reads back over up to `keep + 1` files of up to twice the rotation size
    each (one endless line: a progress bar that never ends a line), so it belongs on a worker thread."""

    files: list[tuple[BinaryIO, int]]

    @classmethod
    def open(cls, path: Path, keep: int = KEEP) -> LogTail:
        files: list[tuple[BinaryIO, int]] = []
        try:
            for file_path in rotated(path, keep):
                try:
                    file = open(file_path, "rb")  # noqa: SIM115 (closed by lines)
                except FileNotFoundError:
                    continue
                files.append((file, os.fstat(file.fileno()).st_size))
        except BaseException:
            for file, _ in files:
                file.close()
            raise
        return cls(files=files)

    def lines(self, count: int) -> list[str]:
        """The last `count` complete lines across the files; closes them. Linear in the bytes read."""
        blocks: list[bytes] = []  # newest first
        newlines = 0
        try:
            for file, size in self.files:
                start = size
                while start > 0 and newlines <= count:
                    step = min(_BLOCK, start)
                    start -= step
                    file.seek(start)
                    block = file.read(step)
                    blocks.append(block)
                    newlines += block.count(b"\n")
                if newlines > count:
                    break
        finally:
            for file, _ in self.files:
                file.close()
        data = b"".join(reversed(blocks))
        end = data.rfind(b"\n") + 1
        lines = [line.decode(errors="replace").rstrip("\r") for line in data[:end].split(b"\n")[:-1]]
        return lines[-count:]


@attrs.define(eq=False)
class Subscription:
    """What a follower receives: chunks of output as they come. `dropped` once it fell behind;
    the channel ends when the instance's last process ended (or the follower was dropped)."""

    channel: trio.MemoryReceiveChannel[bytes]
    dropped: bool = False


class InstanceLog:
    """One instance's log on this node, across its processes (a restart appends to the same files)."""

    def __init__(
        self,
        path: Path,
        limits: LogLimits = LogLimits(),
        trouble: LogTrouble | None = None,
    ) -> None:
        self.path = path
        self.limits = limits
        self.trouble = trouble  # told when the file cannot be written, and when that is over
        self.file = RotatingFile(path, limits)
        self.draining = 0  # processes whose output is still being read
        self._followers: dict[trio.MemorySendChannel[bytes], Subscription] = {}
        self.lost = 0  # bytes of output the file could not take since the last write that succeeded
        self._told = False  # the node's problems say this file cannot be written

    @property
    def writing(self) -> bool:
        """A process of the instance may still write (its pipe is open)."""
        return self.draining > 0

    def tail(self, count: int) -> list[str]:
        return read_tail(self.path, count, self.limits.keep)

    def open_tail(self) -> LogTail:
        """The log's files as they are now, for `LogTail.lines` on a worker thread: with `subscribe` and
        no checkpoint between, nothing is missed or seen twice."""
        return LogTail.open(self.path, self.limits.keep)

    def subscribe(self) -> Subscription:
        """Every chunk written from now on, until the last process ends. Synchronous: call it with
        `tail` and no checkpoint between, and nothing is missed or seen twice."""
        send, receive = trio.open_memory_channel[bytes](FOLLOWER_BUFFER)
        subscription = Subscription(channel=receive)
        if self.writing:
            self._followers[send] = subscription
        else:
            send.close()  # nothing will come
        return subscription

    def _write(self, data: bytes) -> None:
        self._to_file(data)
        for send, subscription in list(self._followers.items()):
            try:
                send.send_nowait(data)
            except trio.WouldBlock:
                subscription.dropped = True
                self._unsubscribe(send)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._unsubscribe(send)  # the follower went away

    def _to_file(self, data: bytes) -> None:
        """Write `data` to the file; where it cannot be written (a full disk, a file system gone read-only)
        it is dropped, not raised: the node must not end for a log (its followers still get the output).
        Said once per spell, in the node's log, and in the file once writes succeed again."""
        try:
            if self.lost:
                self.file.write(f"[aether: {self.lost} bytes of output could not be written here]\n".encode())
                log.info("%s: output written again (%d bytes were lost)", self.path, self.lost)
                self.lost = 0
                self._tell(None)
            self.file.write(data)
        except OSError as error:
            if not self.lost:
                log.warning("%s: output cannot be written, dropped until it can: %s", self.path, error)
            self.lost += len(data)
            self._tell(error.strerror or str(error))

    def _tell(self, why: str | None) -> None:
        """Tell the node's problems that this file cannot be written (`why`), or no longer (None), once
        per change (a later process of the instance that meets the same full disk tells it again)."""
        if self.trouble is None or self._told == (why is not None):
            return
        self._told = why is not None
        if why is not None:
            self.trouble.failed(self.path, why)
        else:
            self.trouble.over(self.path)

    def _unsubscribe(self, send: trio.MemorySendChannel[bytes]) -> None:
        self._followers.pop(send, None)
        send.close()

    def mark_new_instance(self, label: str, when: str) -> None:
        """Say in the log that a new instance with this number starts: its lines follow, those above were
        an earlier one's. The leader never gives a number twice, but the file may be older than the
        store's records (a cluster started afresh or restored on this data directory). Only where the log
        has lines already (a first instance's log starts with its own)."""
        try:
            has_lines = self.path.stat().st_size > 0
        except OSError:
            has_lines = False
        if has_lines:
            said = (
                f"[aether: a new instance {label} starts here, {when}; the lines above are an earlier one's]"
            )
            self._write(f"{said}\n".encode())

    def open_pipe(self) -> tuple[int, int]:
        """A fresh pipe for the next process: the node's read end (for `drain`) and the write end, for
        the process; the node closes its copy of that once the process holds its own (or never will:
        the drain then ends)."""
        read_end, write_end = os.pipe()
        self.draining += 1
        return read_end, write_end

    async def drain(self, read_end: int) -> None:
        """Copy the pipe to the file and the followers until every writer has closed it. Owns
        `read_end`. Cancelled: stops reading (what is still in the pipe is lost)."""
        stream = trio.lowlevel.FdStream(read_end)
        try:
            while True:
                try:
                    data = await stream.receive_some(_READ)
                except OSError as error:  # not expected of a pipe; the log must not end the node
                    if error.errno != errno.EINTR:
                        self._write(f"[aether: the output pipe failed: {error}]\n".encode())
                        break
                    continue
                if not data:
                    break
                self._write(data)
        finally:
            await stream.aclose()
            self.draining -= 1
            if not self.writing:
                self.file.close()
                self._tell(None)  # (nothing more to write, or to lose, until a process of it runs again)
                for send in list(self._followers):
                    self._unsubscribe(send)
