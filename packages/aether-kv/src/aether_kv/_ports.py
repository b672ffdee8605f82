"""Free TCP ports for local clusters (`aether-kv local`, `aether dev up`, the tests).

A planner asks for every port of a cluster before any of its processes binds one (a 3-node cluster: 15),
and a process takes a second or more to start and bind. A port free when chosen can be taken meanwhile:
- by a connection's ephemeral port, had it come from the kernel's ephemeral range (bind(0)): so ports
  come from below that range, at random, checked free;
- by this process's next pick (at random they met once in ~200 plans, the birthday problem): so a port
  handed out is not handed out again while among the last _RECENT;
- by another process's pick (two test workers, two `aether dev up`): one replica of a test run's cluster
  failed to bind a port another worker's cluster had been given 0.5 s before and bound 1.4 s after. So the
  ports handed out lately are also written to a file every process of this user shares
  (`aether-ports-{uid}` in the temporary directory, under an exclusive `flock`), and a port written there
  in the last _SHARED_FOR seconds is not handed out. Where that file cannot be used (none, not a plain
  file of this user's alone: a link, another user's; its lock held over _LOCK_WAIT), a process goes on
  with its own memory alone. Each pick reads and writes the file whole: a few ms with the ~1,000 entries a
  test run on two workers keeps.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import secrets
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_LOWEST_PORT = 10_000
_RECENT = 4_096
_handed_out: collections.deque[int] = collections.deque(maxlen=_RECENT)
_SHARED_FOR = 120.0  # s: longer than any local cluster takes to bind what it was given
_LOCK_WAIT = 1.0  # s: the longest a pick waits for another process's pick (each takes a few ms)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` a moment ago, below the ephemeral range where the system has one, and
    not one this process or another of this user's handed out lately (it may not be bound yet)."""
    start = _ephemeral_start()
    if start - _LOWEST_PORT >= 1_000:
        port = pick_port(host, _LOWEST_PORT, start, _shared_file())
        if port is not None:
            return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pick_port(host: str, low: int, high: int, shared: Path | None) -> int | None:
    """A port in [low, high) that `host` could bind a moment ago, handed out by neither this process lately
    nor, through the file `shared` (None: not shared), by another in the last _SHARED_FOR seconds; None if
    200 tries found none."""
    with _shared_ports(shared) as taken:
        for _ in range(200):
            port = secrets.randbelow(high - low) + low
            if port in _handed_out or port in taken or not _bindable(host, port):
                continue
            _handed_out.append(port)
            taken[port] = time.time()
            return port
    return None


@contextlib.contextmanager
def _shared_ports(path: Path | None) -> Iterator[dict[int, float]]:
    """The ports handed out in the last _SHARED_FOR seconds, by when, as `path` has them, held under an
    exclusive lock; what the caller adds is written back. Without `path`, or where it cannot be opened,
    locked within _LOCK_WAIT, or read: an empty dict, kept nowhere."""
    file = _open_shared(path) if path is not None else None
    taken = _read_entries(file) if file is not None else None
    if file is None or taken is None:
        if file is not None:
            os.close(file)
        yield {}
        return
    try:
        yield taken
        _write_entries(file, taken)
    finally:
        os.close(file)  # (the lock goes with it)


def _open_shared(path: Path) -> int | None:
    """`path` opened and locked, if it is a plain file of this user's alone (the temporary directory is
    everyone's: never through a link, never another user's file, none another user could read or lock)
    and its lock comes within _LOCK_WAIT (a planner stopped while holding it holds up no other)."""
    try:
        file = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None
    try:
        found = os.fstat(file)
        if _own_plain_file(found):
            deadline = time.monotonic() + _LOCK_WAIT
            while True:
                try:
                    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return file
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.005)
    except OSError:
        pass
    os.close(file)
    return None


def _own_plain_file(found: os.stat_result) -> bool:
    """A regular file of this user's with no other name (another user's hard link would be written) that
    only this user may read or write."""
    return (
        stat.S_ISREG(found.st_mode)
        and found.st_uid == os.getuid()
        and found.st_nlink == 1
        and stat.S_IMODE(found.st_mode) & 0o077 == 0
    )


def _read_entries(file: int) -> dict[int, float] | None:
    """`port time` lines of the last _SHARED_FOR seconds (a line that is not one, or of a time that is not,
    as after the clock was set back, is dropped); None if the file cannot be read."""
    chunks = []
    try:
        os.lseek(file, 0, os.SEEK_SET)
        while chunk := os.read(file, 65_536):
            chunks.append(chunk)
    except OSError:
        return None
    now = time.time()
    taken: dict[int, float] = {}
    for line in b"".join(chunks).splitlines():
        try:
            port, when = line.split()
            at = float(when)
        except ValueError:
            continue
        if now - _SHARED_FOR <= at <= now + 1.0 and port.isdigit():  # (+1: written rounded to the ms)
            taken[int(port)] = at
    return taken


def _write_entries(file: int, taken: dict[int, float]) -> None:
    """Written over from the start, then cut to length (a write cut short, a full disk, leaves the older
    lines rather than none); a failure leaves this pick unshared."""
    data = memoryview("".join(f"{port} {when:.3f}\n" for port, when in taken.items()).encode())
    with contextlib.suppress(OSError):
        written = 0
        while written < len(data):
            written += os.pwrite(file, data[written:], written)
        os.ftruncate(file, len(data))


def _shared_file() -> Path | None:
    """`aether-ports-{uid}` in the temporary directory; None where there is none."""
    try:
        return Path(tempfile.gettempdir()) / f"aether-ports-{os.getuid()}"
    except OSError:
        return None


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
