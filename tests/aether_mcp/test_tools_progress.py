"""A waiting tool's progress notifications (`_tools._Progress`): each change is sent, the same one again
only every PROGRESS_HEARTBEAT seconds (a poll every 0.25 s sent the same line four times a second)."""

from __future__ import annotations

from aether_mcp._tools import PROGRESS_HEARTBEAT, _Progress


class Sent:
    """What a tool's context was asked to send."""

    def __init__(self) -> None:
        self.notifications: list[tuple[float, float | None, str]] = []

    async def report_progress(self, progress: float, total: float | None, message: str) -> None:
        self.notifications.append((progress, total, message))


async def test_progress_is_sent_when_it_changes_and_now_and_then_when_it_does_not() -> None:
    sent, now = Sent(), [0.0]
    progress = _Progress(sent, clock=lambda: now[0])  # type: ignore[arg-type]
    for _ in range(3):
        await progress.report(0, 2, "0/2 instances ACTIVE")
        now[0] += 0.25
    await progress.report(1, 2, "1/2 instances ACTIVE")
    assert sent.notifications == [(0, 2, "0/2 instances ACTIVE"), (1, 2, "1/2 instances ACTIVE")]
    now[0] += PROGRESS_HEARTBEAT
    await progress.report(1, 2, "1/2 instances ACTIVE")  # a long wait: said again, the client sees it live
    assert len(sent.notifications) == 3
