"""What `aether_entry_points` returns is checked when the instance loads (`aether_slice.host.Host.load`,
in this process, with the slice registered as if its template had preloaded it): an entry point whose
function is not callable fails the load with kind `entry_point`, naming it and what it got (it used to
load and go ACTIVE, and every call of it failed with a TypeError)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aether_slice import EntryPoint, SliceContext, hookimpl, protocol
from aether_slice import host as host_module
from aether_slice.protocol import Kind

NAME = "org.example:declared"


class Declares:
    def __init__(self, declared: Any) -> None:
        self.declared = declared

    @hookimpl
    def aether_entry_points(self, context: SliceContext) -> Any:
        return self.declared


def load(declared: Any, monkeypatch: pytest.MonkeyPatch) -> host_module.Host:
    monkeypatch.setitem(host_module._preloaded, NAME, host_module._manager_of(Declares(declared)))
    host = host_module.Host(write=lambda frame: None)
    message = protocol.request(
        1, Kind.LOAD, entry_point=NAME, coordinates="org.example:declared:1.0.0", instance=0, config={}
    )
    host.load(message)
    return host


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"ok": str, "a": 42}, "entry point 'a': its function must be callable, got int 42"),
        (
            [EntryPoint(name="work", function="work")],
            "entry point 'work': its function must be callable, got str 'work'",
        ),
        (
            {"big": "x" * 500},
            "entry point 'big': its function must be callable, got str '" + "x" * 76 + "...",
        ),
    ],
)
def test_an_entry_point_whose_function_is_not_callable_fails_the_load_naming_it(
    declared: Any, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(host_module.HostError) as refused:
        load(declared, monkeypatch)
    assert (refused.value.kind, refused.value.message) == ("entry_point", message)


def test_callables_of_every_kind_load(monkeypatch: pytest.MonkeyPatch) -> None:
    class Callable:
        def __call__(self, payload: Any) -> Any:
            return payload

    async def coroutine(payload: Any) -> Any:
        return payload

    host = load({"f": len, "g": coroutine, "h": Callable(), "i": lambda p: p}, monkeypatch)
    assert sorted(host.entries) == ["f", "g", "h", "i"]


class DeclaresLater:
    @hookimpl
    async def aether_entry_points(self, context: SliceContext) -> Any:
        return {"work": str}


def test_an_async_aether_entry_points_fails_the_load_saying_it_must_not_be(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It failed as `raised`: "TypeError: 'coroutine' object is not iterable"."""
    monkeypatch.setitem(host_module._preloaded, NAME, host_module._manager_of(DeclaresLater()))
    host = host_module.Host(write=lambda frame: None)
    message = protocol.request(
        1, Kind.LOAD, entry_point=NAME, coordinates="org.example:declared:1.0.0", instance=0, config={}
    )
    with pytest.raises(host_module.HostError) as refused:
        host.load(message)
    assert refused.value.kind == "entry_point"
    assert refused.value.message.startswith("aether_entry_points is a coroutine function (`async def`)")


def test_a_hook_whose_arguments_are_not_the_hooks_fails_the_import_saying_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`def aether_entry_points(self, ctx)`: pluggy refuses the plugin as it is registered, which was not
    caught: the template died with nothing said ("the slice process died during load")."""
    (tmp_path / "misnamed_hook.py").write_text(
        "from aether_slice import hookimpl\n\n\n"
        "class Slice:\n"
        "    @hookimpl\n"
        "    def aether_entry_points(self, ctx):\n"
        "        return {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(host_module.HostError) as refused:
        host_module._plugin_manager(NAME, "misnamed_hook:Slice")
    assert refused.value.kind == "entry_point"
    assert refused.value.message.startswith("misnamed_hook:Slice: Plugin ")
    said = refused.value.message
    assert "{'ctx'} are declared in the hookimpl but can not be found in the hookspec" in said
    assert host_module._preload(NAME + "x", "misnamed_hook:Slice") is False  # (the template lives on)
    assert "not preloading org.example:declaredx: misnamed_hook:Slice: Plugin " in capsys.readouterr().out
