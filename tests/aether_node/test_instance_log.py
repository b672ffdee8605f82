"""An instance's log on its node (`aether_node.runtime._instance_log`): the rotating file (rotated at its
size limit at a line's end, N files kept), the tail read across the rotated files, and the drain of a
real pipe written by real processes: every byte reaches the file and the followers, a process
killed mid-output loses nothing it wrote, a follower that falls behind is dropped and told so, and a
restart appends to the same files."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import trio
from disk_support import fill, small_filesystem
from hypothesis import given
from hypothesis import strategies as st

from aether_node.runtime import _instance_log
from aether_node.runtime._instance_log import (
    InstanceLog,
    LogLimits,
    RotatingFile,
    read_tail,
    rotated,
)
from aether_node.runtime._node_problems import LogTrouble, NodeProblems
from support import wait_until

LINES = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=30),
    max_size=60,
)


# ---------------------------------------------------------------- files


@given(LINES, st.integers(1, 80), st.booleans())
def test_read_tail_is_the_last_complete_lines(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], count: int, partial: bool
) -> None:
    path = tmp_path_factory.mktemp("log") / "x.log"
    path.write_bytes("".join(line + "\n" for line in lines).encode() + (b"half a line" if partial else b""))
    assert read_tail(path, count) == lines[-count:]


def test_read_tail_reads_back_over_blocks(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_bytes(b"".join(b"%06d %s\n" % (n, b"x" * 200) for n in range(2000)))
    assert [line[:6] for line in read_tail(path, 500)] == [f"{n:06d}" for n in range(1500, 2000)]


def test_no_file_yet_is_no_lines(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "none.log", 10) == []


@given(
    lines=st.lists(st.integers(0, 10**6).map(lambda n: f"line {n}"), min_size=1, max_size=200),
    chunk=st.integers(1, 7),
    max_bytes=st.integers(20, 400),
    keep=st.integers(0, 3),
    count=st.integers(1, 250),
)
def test_rotation_bounds_the_files_and_the_tail_reads_across_them(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[str],
    chunk: int,
    max_bytes: int,
    keep: int,
    count: int,
) -> None:
    """Written in chunks of a few lines: no file past its limit by more than a chunk, at most `keep`
    rotated files, every rotated file ends with a whole line, and the tail is the newest lines kept."""
    path = tmp_path_factory.mktemp("log") / "x.log"
    limits = LogLimits(max_bytes=max_bytes, keep=keep)
    file = RotatingFile(path, limits)
    longest = 0
    for start in range(0, len(lines), chunk):
        data = "".join(line + "\n" for line in lines[start : start + chunk]).encode()
        longest = max(longest, len(data))
        file.write(data)
    file.close()
    existing = [p for p in rotated(path, keep + 2) if p.exists()]
    assert len(existing) <= keep + 1
    assert all(p.stat().st_size < max_bytes + longest for p in existing)
    assert all(p.read_bytes().endswith(b"\n") for p in existing if p != path)
    kept = b"".join(p.read_bytes() for p in reversed(existing)).decode().splitlines()
    assert kept == lines[len(lines) - len(kept) :]  # the newest lines, in order, none twice
    assert read_tail(path, count, keep) == kept[-count:]


def test_one_endless_line_still_rotates_at_twice_the_limit(tmp_path: Path) -> None:
    file = RotatingFile(tmp_path / "x.log", LogLimits(max_bytes=100, keep=1))
    for _ in range(30):
        file.write(b"x" * 10)
    file.close()
    assert (tmp_path / "x.log.1").stat().st_size == 200
    assert (tmp_path / "x.log").stat().st_size == 100


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes must be ≥ 1 and keep ≥ 0"):
        LogLimits(max_bytes=0)
    with pytest.raises(ValueError, match="max_bytes must be ≥ 1 and keep ≥ 0"):
        LogLimits(keep=-1)


# ---------------------------------------------------------------- the pipe, with real processes


async def write_through(log: InstanceLog, script: str, *, kill_after: str | None = None) -> None:
    """Run `script` with its stdout and stderr on the log's pipe, as a slice instance has them; with
    `kill_after`, SIGKILL it once that is the log's last line."""
    read_end, write_end = log.open_pipe()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.drain, read_end)
        try:
            command = [sys.executable, "-u", "-c", script]  # unbuffered: a write per print, as slices run
            process = await trio.lowlevel.open_process(command, stdout=write_end, stderr=write_end)
        finally:
            os.close(write_end)  # the process holds its own copy, as an instance does
        if kill_after is not None:
            await wait_until(
                lambda: log.tail(1),
                until=lambda tail: tail == [kill_after],
                timeout=20,
                interval=0.01,
                what=kill_after,
            )
            process.send_signal(signal.SIGKILL)
        await process.wait()


async def test_the_drain_writes_everything_and_a_killed_process_loses_nothing_it_wrote(
    tmp_path: Path,
) -> None:
    log = InstanceLog(tmp_path / "x.log", LogLimits(max_bytes=4096, keep=5))
    script = (
        "import sys, time\n"
        "for n in range(2000): print(f'line {n}')\n"
        "sys.stdout.flush(); print('to stderr', file=sys.stderr, flush=True)\n"
        "print('last words', flush=True); time.sleep(60)\n"
    )
    await write_through(log, script, kill_after="last words")
    assert not log.writing
    lines = read_tail(log.path, 10_000, 5)
    assert lines[-2:] == ["to stderr", "last words"]
    assert lines[0] == f"line {2000 - len(lines) + 2}"  # the oldest rotated away, the rest in order
    # rotated at least once, never more files than kept (how often: how the pipe was read; a busy machine
    # may read the whole output in one chunk)
    assert 1 <= len([p for p in rotated(log.path, 10) if p.exists()]) <= 6
    # a restart of the instance appends to the same files
    await write_through(log, "print('again')")
    assert read_tail(log.path, 2, 5) == ["last words", "again"]


async def test_followers_get_each_chunk_until_the_end_and_a_slow_one_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_instance_log, "FOLLOWER_BUFFER", 2)
    log = InstanceLog(tmp_path / "x.log")
    read_end, write_end = log.open_pipe()
    fast, slow = log.subscribe(), log.subscribe()
    received = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.drain, read_end)

        async def read_fast() -> None:
            nonlocal received
            async for chunk in fast.channel:
                received += chunk

        nursery.start_soon(read_fast)
        with open(write_end, "wb", buffering=0) as own:
            for n in range(20):
                own.write(b"chunk %d\n" % n)
                await trio.sleep(0.02)  # a chunk at a time through the pipe; `slow` reads none
    assert received == b"".join(b"chunk %d\n" % n for n in range(20))
    assert (fast.dropped, slow.dropped) == (False, True)
    behind = b"".join([chunk async for chunk in slow.channel])  # what it had room for, then the end
    assert behind and received.startswith(behind) and behind != received


async def test_a_follower_of_a_log_nobody_writes_ends_at_once(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path / "x.log")
    (tmp_path / "x.log").write_bytes(b"from an earlier run\n")
    subscription = log.subscribe()
    assert [chunk async for chunk in subscription.channel] == []
    assert log.tail(5) == ["from an earlier run"]


async def test_a_full_disk_drops_the_output_not_the_node_and_writing_resumes_once_there_is_room(
    tmp_path: Path,
) -> None:
    """Found by an operator: with the node's log directory on a full disk, the first line an instance
    printed raised ENOSPC out of the drain into the node's nursery, and the node restarted over and over,
    taking its instances with it. Now the output is dropped (the followers still get it), and once there
    is room again the file says how much was lost and goes on. A real tmpfs, filled."""
    with small_filesystem(tmp_path / "logs", mib=1) as logs:
        problems = NodeProblems()
        log = InstanceLog(logs / "x.log", trouble=LogTrouble(problems, logs))
        filler = fill(logs)
        # a process whose output is lost while it runs: the node's registration says so (`cluster status`:
        # "node …: …") until it ends
        await write_through(log, "print('lost line')")
        assert log.lost == 10 and problems.lines() == ()
        read_end, write_end = log.open_pipe()  # the instance again, on the disk still full
        follower = log.subscribe()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.drain, read_end)
            with open(write_end, "wb", buffering=0) as own:
                own.write(b"lost again\n")
                await wait_until(problems.lines, timeout=10, what="the trouble told again")
                (line,) = problems.lines()
                assert line.startswith(f"1 instance's output cannot be written under {logs} (No space left")
                filler.unlink()  # room again
                own.write(b"kept line\n")
                await wait_until(lambda: not problems.lines(), timeout=10, what="the trouble over")
        said = "[aether: 21 bytes of output could not be written here]"
        assert read_tail(log.path, 5) == [said, "kept line"]
        assert b"".join([chunk async for chunk in follower.channel]) == b"lost again\nkept line\n"
