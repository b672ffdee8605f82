"""The call-rate forecast of the autoscaler (`[slices.autoscale] forecast_s`), pure: a least-squares line
through the slice's recent call rates, and where it will be `forecast_s` seconds from now. No I/O, no
clock, no dependency: a straight trend is what a ramp is, and it needs nothing heavier.

The controller (`_autoscale.decide`) uses it only to scale *up* ahead of a rising rate: the line is
fitted over the last `forecast_s` seconds (look back as far as you look ahead), needs at least
MIN_POINTS intervals, and counts only when it rises; a flat or falling line, or too few points, gives
no forecast (the reactive branches decide alone).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

MIN_POINTS = 4  # intervals: fewer fit any noise


@attrs.frozen(kw_only=True)
class Trend:
    """A straight line through (time, calls per second of the whole slice)."""

    rate: float  # the line's value at the last point's time
    slope: float  # calls per second, per second

    def at(self, seconds: float) -> float:
        """The line's value `seconds` after the last point (never below 0)."""
        return max(0.0, self.rate + self.slope * seconds)


def fit(points: Sequence[tuple[float, float]]) -> Trend | None:
    """The least-squares line through `points` (time, rate), valued at the last time; None for fewer
    than MIN_POINTS points or no spread in time."""
    if len(points) < MIN_POINTS:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread <= 0:
        return None
    slope = sum((t - mean_t) * (r - mean_r) for t, r in points) / spread
    last = points[-1][0]
    return Trend(rate=mean_r + slope * (last - mean_t), slope=slope)


def rising(points: Sequence[tuple[float, float]]) -> Trend | None:
    """The fitted line if it rises (slope > 0), else None: the forecast only ever scales ahead of a
    growing load; a steady or falling one is the reactive controller's."""
    trend = fit(points)
    if trend is None:
        return None
    # a hair above 0: equal rates summed in floating point can leave a slope of ±1e-17
    return trend if trend.slope > 1e-9 * (1.0 + abs(trend.rate)) else None
