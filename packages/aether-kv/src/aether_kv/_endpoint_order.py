"""The order in which a KV client tries its endpoints (pure; `_client.py` does the connecting).

It goes round them from the one it last used. An endpoint that failed (the connection was refused,
nothing answered the handshake in time, or it made no progress on a request) is tried after the others
for a time that doubles with each failure in a row (`PASS_OVER_START` up to `PASS_OVER_MAX`), forgotten
once it connects (so one that connects and then answers nothing is put back 1 s each time). Without that,
a hung replica (a machine stalled on its disk, a paused process: its kernel still accepts connections)
cost every rotation that came back to it its connect timeout again. Every endpoint is always a candidate:
those put back come after the others, the soonest due first; it never refuses to try.
"""

from __future__ import annotations

import attrs

PASS_OVER_START = 1.0
PASS_OVER_MAX = 30.0
_MOST_FAILURES = 32  # failures in a row counted: the time doubles far past PASS_OVER_MAX before that


@attrs.define
class EndpointOrder:
    endpoints: tuple[str, ...]
    next: int = 0  # the endpoint to try first (modulo their number)
    _until: dict[str, float] = attrs.field(factory=dict)  # endpoint → passed over until then
    _failures: dict[str, int] = attrs.field(factory=dict)  # endpoint → failures in a row

    def candidates(self, now: float) -> list[str]:
        """Every endpoint, in the order to try them at `now`."""
        count = len(self.endpoints)
        order = [self.endpoints[(self.next + i) % count] for i in range(count)]
        due = [endpoint for endpoint in order if self._until.get(endpoint, 0.0) <= now]
        waiting = sorted((e for e in order if e not in due), key=lambda e: self._until[e])
        return due + waiting

    def failed(self, endpoint: str, now: float) -> None:
        """`endpoint` failed at `now`: passed over for a while, and the next one is tried first."""
        failures = min(self._failures.get(endpoint, 0) + 1, _MOST_FAILURES)  # (2 ** 1,024: OverflowError)
        self._failures[endpoint] = failures
        self._until[endpoint] = now + min(PASS_OVER_MAX, PASS_OVER_START * 2.0 ** (failures - 1))
        if self.endpoints[self.next % len(self.endpoints)] == endpoint:
            self.move_on()

    def connected(self, endpoint: str) -> None:
        """`endpoint` connected: tried first from now on, its failures forgotten."""
        self._until.pop(endpoint, None)
        self._failures.pop(endpoint, None)
        self.next = self.endpoints.index(endpoint)

    def move_on(self) -> None:
        """Try the next endpoint first (the current one's connection ended)."""
        self.next += 1
