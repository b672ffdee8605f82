"""Whatever an entry point raises answers its call as `raised` (`aether_slice.host.Host`, in this process
with the slice registered as if its template had preloaded it), and the instance lives on: an async entry
point's CancelledError, GeneratorExit or BaseException of its own went unanswered (the caller waited out
its whole timeout), a sync one's killed the instance with every call in flight on it, and so did an
exception whose `str()` raises; a lone surrogate in a message reached the node, whose answer then failed
as a bare 500. Only SystemExit ends the instance, as the slice asked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aether_slice import SliceContext, hookimpl, protocol
from aether_slice import host as host_module
from aether_slice.protocol import Kind

NAME = "org.example:odd"


class Weird(BaseException):
    """An exception of the slice's own that is no Exception."""


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words for it")


def raising(error: BaseException, *, is_async: bool) -> Any:
    if is_async:

        async def entry(payload: Any) -> Any:
            await asyncio.sleep(0)
            raise error

        return entry

    def sync_entry(payload: Any) -> Any:
        raise error

    return sync_entry


ODD = {
    "cancelled": (asyncio.CancelledError(), "CancelledError", "CancelledError"),
    "generator_exit": (GeneratorExit(), "GeneratorExit", "GeneratorExit"),
    "weird": (Weird("its own"), "Weird", "its own"),
    "interrupt": (KeyboardInterrupt(), "KeyboardInterrupt", "KeyboardInterrupt"),
    "unprintable": (Unprintable(), "Unprintable", "<Unprintable whose str() raised RuntimeError>"),
    "surrogate": (ValueError("bad \udcff text"), "ValueError", "bad \\udcff text"),
}


class Odd:
    @hookimpl
    def aether_entry_points(self, context: SliceContext) -> Any:
        entries: dict[str, Any] = {}
        for name, (error, _, _) in ODD.items():
            entries[f"async_{name}"] = raising(error, is_async=True)
            entries[f"sync_{name}"] = raising(error, is_async=False)
        entries["sync_long"] = raising(ValueError("x" * 100_000), is_async=False)
        entries["sync_exit"] = raising(SystemExit(3), is_async=False)
        entries["ok"] = lambda payload: payload
        return entries


async def answers(monkeypatch: pytest.MonkeyPatch, entries: list[str]) -> list[dict[str, Any]]:
    """Invoke each entry point of the loaded slice, in turn, and the answer of each (then `ok` once more:
    the instance serves on)."""
    monkeypatch.setitem(host_module._preloaded, NAME, host_module._manager_of(Odd()))
    frames: list[bytes] = []
    host = host_module.Host(write=frames.append)
    host.load(
        protocol.request(1, Kind.LOAD, entry_point=NAME, coordinates=f"{NAME}:1.0.0", instance=0, config={})
    )
    found = []
    for number, entry in enumerate([*entries, "ok"], start=2):
        replies: list[bytes] = []
        host.serve(protocol.request(number, Kind.INVOKE, entry=entry, payload=7, timeout=5), replies)
        async with asyncio.timeout(5):  # (an answer never written is this test's failure, not a hang)
            while not replies and not frames:
                await asyncio.sleep(0.001)
        frame = (replies or frames).pop(0)
        found.append(protocol.decode(frame[protocol.HEADER.size :]))
    assert found[-1] == {"id": len(entries) + 2, "ok": 7}
    return found[:-1]


@pytest.mark.parametrize("flavour", ["async", "sync"])
@pytest.mark.parametrize("name", sorted(ODD))
def test_an_odd_exception_is_answered_as_raised_and_the_instance_serves_on(
    monkeypatch: pytest.MonkeyPatch, flavour: str, name: str
) -> None:
    _, remote_type, message = ODD[name]
    (answer,) = asyncio.run(answers(monkeypatch, [f"{flavour}_{name}"]))
    failure = protocol.failure_of(answer)
    assert (failure.kind, failure.type, failure.message) == ("raised", remote_type, message)
    protocol.encode(answer)  # (what the node reads: strict JSON, no lone surrogate left)
    assert "\udcff" not in (failure.detail or "")


def test_a_long_message_is_cut_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    (answer,) = asyncio.run(answers(monkeypatch, ["sync_long"]))
    message = protocol.failure_of(answer).message
    assert len(message) <= 65536 and message.endswith("… (100,000 characters, cut)")


def test_system_exit_ends_the_instance_as_the_slice_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        asyncio.run(answers(monkeypatch, ["sync_exit"]))
