"""The harness's one wait (tests/support.py): what it returns, and what it says when it times out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from support import kill_processes_under, processes_under, wait_until, wait_until_sync


async def test_wait_until_returns_the_value_that_held() -> None:
    seen = iter([0, 1, 2, 3])

    async def probe() -> int:
        return next(seen)

    assert await wait_until(probe, until=lambda n: n >= 2, timeout=5, interval=0, what="two") == 2


async def test_a_timeout_names_what_was_awaited_and_the_last_value(autojump_clock: trio.abc.Clock) -> None:
    async def probe() -> list[str]:
        return ["still", "here"]

    with pytest.raises(pytest.fail.Exception) as failure:
        await wait_until(probe, until=lambda v: not v, timeout=3, what="the list to empty", describe=len)
    assert str(failure.value) == "timed out after 3 s waiting for the list to empty; last seen: 2"


async def test_a_probe_that_never_answers_is_told_apart(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(pytest.fail.Exception, match="waiting for an answer; no answer yet"):
        await wait_until(trio.sleep_forever, timeout=1, what="an answer")


def test_wait_until_sync_returns_the_value_and_fails_with_the_last_one() -> None:
    values = iter(["", "", "ready"])
    assert wait_until_sync(lambda: next(values), timeout=5, interval=0, what="ready") == "ready"
    with pytest.raises(pytest.fail.Exception, match=r"after 0.1 s waiting for zero; last seen: 1$"):
        wait_until_sync(lambda: 1, until=lambda n: n == 0, timeout=0.1, interval=0.01, what="zero")


def test_kill_processes_under_ends_every_process_of_a_directory(tmp_path: Path) -> None:
    sleepers = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path) for _ in "ab"
    ]
    try:
        wait_until_sync(
            lambda: len(processes_under(tmp_path)) == 2, timeout=10, interval=0.05, what="2 sleepers"
        )
        kill_processes_under(tmp_path)
        assert [s.wait(timeout=10) for s in sleepers] == [-9, -9]
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
