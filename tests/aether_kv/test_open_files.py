"""`raise_open_files_limit` in a real process started with a low soft limit (as a login shell or a unit
starts a server), and `out_of_files_hint` for the errors that say no file descriptor is left."""

from __future__ import annotations

import errno
import resource
import subprocess
import sys

from aether_kv import out_of_files_hint

RAISE_AND_SAY = "from aether_kv import raise_open_files_limit as r; print(r())"


def run_with_limits(soft: int, hard: int) -> tuple[str, tuple[int, int]]:
    """What the child printed, and its limits after raising them (read from /proc before it ends)."""
    script = (
        f"{RAISE_AND_SAY}; import resource, sys; print(*resource.getrlimit(resource.RLIMIT_NOFILE));"
        " sys.stdout.flush()"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )
    returned, limits = done.stdout.splitlines()
    low, high = limits.split()
    return returned, (int(low), int(high))


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    assert run_with_limits(64, 1000) == ("1000", (1000, 1000))


def test_a_soft_limit_already_at_the_hard_one_stays() -> None:
    assert run_with_limits(500, 500) == ("500", (500, 500))


def test_the_hint_names_the_limit_for_a_process_out_of_files_and_nothing_else() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    hint = out_of_files_hint(OSError(errno.EMFILE, "Too many open files"))
    assert hint is not None and f"as many files open as its limit allows ({soft})" in hint
    assert "LimitNOFILE=" in hint
    system = out_of_files_hint(OSError(errno.ENFILE, "Too many open files in system"))
    assert system is not None and "fs.file-max" in system
    assert out_of_files_hint(OSError(errno.ENOSPC, "No space left on device")) is None
    assert out_of_files_hint(ValueError("not an OSError")) is None
