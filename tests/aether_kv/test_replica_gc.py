"""A replica's garbage collection settings (`aether_kv._cli._tune_gc`, applied by `aether-kv serve` before
it serves): the imports' objects frozen out of the collector's way, the young generation collected every
10,000 net allocations instead of 700."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from aether_kv._cli import _tune_gc


@pytest.fixture
def gc_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_a_replica_freezes_what_it_imported_and_collects_young_objects_less_often(gc_restored: None) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    _tune_gc()
    assert gc.get_freeze_count() > 1000  # the modules, classes and functions the imports made
    assert gc.get_threshold()[0] == 10_000
