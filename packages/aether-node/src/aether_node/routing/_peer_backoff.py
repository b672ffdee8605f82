"""Which peers a node could not connect to lately, so that calls go elsewhere meanwhile.

A peer whose connection fails (refused, or no handshake within the connect timeout: a hung or cut-off
machine accepts and never answers) is out for a while, 1 s doubling to 30 s while it keeps failing, and
back at the first connection that succeeds. A call's candidates skip the instances of a peer that is
out while another candidate remains (`usable`): without it, with a node hung and the KV without a
majority to expire its lease, every call balanced to it waited out the connect timeout (2 s) before it
went elsewhere. Once its time is out a peer is tried again by the next call balanced to it (no probe of
its own). Pure: the caller passes the time (trio's clock).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

FIRST = 1.0  # s a peer is out after its first failed connection
LONGEST = 30.0  # s at most, while its connections keep failing

T = TypeVar("T")


class PeerBackoff:
    def __init__(self) -> None:
        self._out: dict[str, tuple[float, float]] = {}  # address → (out until, its last wait)
        self._failed_at: dict[str, float] = {}  # address → when a connection to it last failed
        self._latest = 0.0  # when the last peer out is in again

    def failed(self, address: str, now: float) -> float:
        """A connection to `address` failed at `now`: how long it is out (doubling each time it fails
        again once out no longer; several calls that tried it at once count as one failure)."""
        self._failed_at[address] = now
        until, last = self._out.get(address, (0.0, 0.0))
        if now < until:
            return until - now
        wait = min(LONGEST, last * 2) if last else FIRST
        self._out[address] = (now + wait, wait)
        self._latest = max(self._latest, now + wait)
        return wait

    def reached(self, address: str) -> None:
        """A connection to `address` succeeded (or the node there is gone): it is in again, and its next
        failure waits `FIRST`."""
        self._out.pop(address, None)
        self._failed_at.pop(address, None)

    def failed_since(self, address: str, since: float) -> bool:
        """Whether a connection to `address` failed at `since` or later (a call that waited for another's
        attempt to connect need not try again at once)."""
        return self._failed_at.get(address, -1.0) >= since

    def forget_all_but(self, addresses: set[str]) -> None:
        """Forget the peers not at `addresses` (their nodes are gone: one that comes back at the same
        address starts afresh)."""
        for address in [a for a in self._out if a not in addresses]:
            self.reached(address)

    def is_out(self, address: str, now: float) -> bool:
        found = self._out.get(address)
        return found is not None and now < found[0]

    def usable(
        self, candidates: Sequence[T], address_of: Callable[[T], str | None], now: float
    ) -> Sequence[T]:
        """`candidates` without those at a peer that is out (`address_of`: the candidate's peer address,
        None for one of this node's own), unless that would leave none. Costs nothing while no peer is
        out."""
        if now >= self._latest:
            return candidates
        kept = [c for c in candidates if not self._is_out_at(address_of(c), now)]
        return kept or candidates

    def _is_out_at(self, address: str | None, now: float) -> bool:
        return address is not None and self.is_out(address, now)
