"""The memory limit's decision (`runtime/_memory_limit.over_limit`) and the PSS read from /proc."""

from __future__ import annotations

import os

import pytest

from aether_node.observe._metrics import parse_pss, read_pss_bytes, read_rss_bytes
from aether_node.runtime._memory_limit import over_limit

MIB = 1 << 20


@pytest.mark.parametrize(
    ("pss", "limit", "killed"),
    [
        (100 * MIB, 0, False),  # no limit declared
        (None, 64, False),  # the process is gone: its end is someone else's to handle
        (64 * MIB, 64, False),  # at the limit is within it
        (64 * MIB + 1, 64, True),
        (3 * MIB, 64, False),
    ],
)
def test_an_instance_is_killed_only_over_a_declared_limit(pss: int | None, limit: int, killed: bool) -> None:
    assert (over_limit(pss, limit) is not None) is killed


def test_the_reason_says_how_much_and_which_setting() -> None:
    assert over_limit(200 * MIB, 64) == (
        "memory: it used 200 MiB (PSS), over the 64 MiB its slice declares ([slices.resources] memory_mib)"
    )


def test_pss_is_read_from_smaps_rollup_in_bytes() -> None:
    text = "00400000-7ffd rw-p 00000000 00:00 0 [rollup]\nRss:  2048 kB\nPss:  1234 kB\nPss_Anon: 1000 kB\n"
    assert parse_pss(text) == 1234 * 1024
    with pytest.raises(ValueError):
        parse_pss("Rss: 2048 kB\n")
    own = read_pss_bytes(os.getpid())
    assert own is not None and own > MIB
    assert read_pss_bytes(2**22 + 12345) is None  # no such process


def test_rss_is_read_from_statm_and_is_never_below_pss() -> None:
    rss, pss = read_rss_bytes(os.getpid()), read_pss_bytes(os.getpid())
    assert rss is not None and pss is not None and rss >= pss
    assert read_rss_bytes(2**22 + 12345) is None
