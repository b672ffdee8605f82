"""aether-slice: everything a slice author imports.

A slice is a distribution whose `aether.slices` entry point (named exactly `group:artifact`) names a
pluggy plugin — usually the slice's module — implementing the hooks in `aether_slice.hookspecs`.
"""

from ._context import EntryPoint as EntryPoint
from ._context import SliceCallError as SliceCallError
from ._context import SliceContext as SliceContext
from .hookspecs import hookimpl as hookimpl

ENTRY_POINT_GROUP = "aether.slices"
__version__ = "0.1.0"
