"""The hooks a slice implements (pluggy project name "aether"). Every hook is optional but
`aether_entry_points`, without which a slice has nothing to call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ._context import SliceContext

PROJECT = "aether"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def aether_entry_points(context: SliceContext) -> Any:
    """Fires once when the instance loads; returns the slice's entry points: a list of `EntryPoint`, or a
    mapping of name → callable. Declare here, start nothing: it may run before the instance's event loop
    (it does when the template preloaded the slice), so what needs the loop is made in `aether_start`."""


@hookspec
def aether_start(context: SliceContext) -> Any:
    """Fires when the instance is activated, before it receives calls; may be async. Acquire resources
    here. Raising (or not returning within the node's activation timeout) fails the activation."""


@hookspec
def aether_stop(context: SliceContext) -> Any:
    """Fires when the instance is deactivated, after its endpoints were withdrawn; may be async. Release
    what `aether_start` acquired."""
