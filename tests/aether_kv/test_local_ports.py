"""`free_port` plans local clusters' ports below the kernel's ephemeral range, where neither bind(0) nor
an outgoing connection takes one between the plan and the server's bind; each port it gives binds."""

from __future__ import annotations

import collections
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aether_kv import _ports, free_port
from aether_kv._ports import pick_port

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@pytest.mark.skipif(not RANGE.exists(), reason="no /proc/sys/net/ipv4/ip_local_port_range here")
def test_ports_come_from_below_the_ephemeral_range_and_bind() -> None:
    ephemeral = int(RANGE.read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert all(10_000 <= port < ephemeral for port in ports), ports
    assert len(set(ports)) > 40, ports  # chosen at random: two planners rarely meet
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_ports_handed_out_in_a_row_are_all_different() -> None:
    """A planner asks for many before any is bound (a 3-node cluster: 15); at random, two of them met in
    ~1 plan of 200 and a node then failed to bind its port: one handed out lately is not given again."""
    ephemeral = _ports._ephemeral_start() or 32_768
    # (at random, ~88 repeats would be expected; the shared file aside, which another test covers)
    ports = [pick_port("127.0.0.1", 10_000, ephemeral, None) for _ in range(2_000)]
    assert len(set(ports)) == len(ports)


PICKER = """
import json, os, sys, time
from pathlib import Path
from aether_kv._ports import pick_port
start = Path(sys.argv[2])
while not start.exists():  # (both processes pick at once)
    time.sleep(0.001)
ports = []
for _ in range(30):
    ports.append(pick_port("127.0.0.1", LOW, LOW + 200, Path(sys.argv[1])))
    time.sleep(0.001)
print(json.dumps(ports))
"""


def test_processes_planning_at_once_are_given_different_ports_through_the_shared_file(tmp_path: Path) -> None:
    """Two processes of this user (test workers, two `aether dev up`) plan clusters at once; neither binds
    a port before the other has planned (a replica took 1.4 s to bind what it was given, and another
    worker's replica had been given the same port in between). Through the shared file they are given
    different ports (without it, 30 picks each out of 200 ports meet in ~99 % of pairs, ~4.5 repeats)."""
    script, start = PICKER.replace("LOW", str(_free_run(200))), tmp_path / "start"
    pickers = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "ports"), str(start)],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    start.touch()
    picks = [json.loads(picker.communicate(timeout=60)[0]) for picker in pickers]
    assert [picker.returncode for picker in pickers] == [0, 0]
    assert None not in picks[0] + picks[1]
    assert not set(picks[0]) & set(picks[1])
    assert len((tmp_path / "ports").read_text().splitlines()) == 60


def test_the_shared_file_forgets_old_picks_and_lines_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_ports, "_handed_out", collections.deque())  # (this process's picks aside)
    low, shared = _free_run(4), _own_file(tmp_path / "ports")
    now = time.time()
    lines = [
        f"{low} {now - 121:.3f}",
        f"{low + 1} {now:.3f}",
        "not a line",
        f"{low + 2} later",
        f"{low + 3} {now + 3600:.3f}",
    ]  # fmt: skip  (low + 3: before the clock was set back)
    shared.write_text("\n".join(lines) + "\n")
    picked = {pick_port("127.0.0.1", low, low + 4, shared) for _ in range(3)}
    assert picked == {low, low + 2, low + 3}  # low + 1 handed out a moment ago
    kept = sorted(int(line.split()[0]) for line in shared.read_text().splitlines())
    assert kept == list(range(low, low + 4))


def test_a_shared_file_whose_lock_is_held_is_left_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planner stopped while it holds the lock (Ctrl-Z, a debugger) holds up no other: after
    _LOCK_WAIT the pick goes on, unshared."""
    monkeypatch.setattr(_ports, "_LOCK_WAIT", 0.2)
    shared, low = _own_file(tmp_path / "ports"), _free_run(3)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1]);"
         " fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(shared)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert pick_port("127.0.0.1", low, low + 3, shared) is not None
        assert shared.read_text() == ""  # (not written: unshared)
    finally:
        holder.kill()
        holder.wait()


def _free_run(size: int) -> int:
    """The start of `size` ports in a row, below the ephemeral range, none of which is bound now (the
    pickers skip a bound one, and must not run out)."""
    ephemeral = _ports._ephemeral_start() or 32_768
    for low in range(20_000, ephemeral - size, size):
        if all(_ports._bindable("127.0.0.1", port) for port in range(low, low + size)):
            return low
    pytest.skip(f"no {size} free ports in a row below {ephemeral}")


@pytest.mark.parametrize("kind", ["symlink", "hard link", "readable by others"])
def test_a_link_in_place_of_the_shared_file_is_not_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The temporary directory is everyone's: a link put where the file goes must not make a port pick
    write (as whoever plans a cluster, root too) into the file it names. The pick goes on unshared."""
    monkeypatch.setattr(_ports, "_handed_out", collections.deque())
    target, shared = tmp_path / "precious", tmp_path / "ports"
    target.write_text("keep me\n")
    if kind == "readable by others":  # (another user could hold its lock, or fill it)
        shared.write_text("")
        shared.chmod(0o644)
        target = shared
    else:
        (shared.symlink_to if kind == "symlink" else shared.hardlink_to)(target)
    low = _free_run(3)
    assert pick_port("127.0.0.1", low, low + 3, shared) is not None
    assert target.read_text() == ("" if kind == "readable by others" else "keep me\n")


def _own_file(path: Path) -> Path:
    """An empty file at `path` only this user may read or write, as the shared file must be."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    return path
