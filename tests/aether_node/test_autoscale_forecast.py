"""The call-rate trend of the autoscaler's forecast (`aether_node.control._autoscale_forecast`): a
least-squares line, valued at the last point, used only when it rises."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aether_node.control._autoscale_forecast import MIN_POINTS, Trend, fit, rising


def test_a_straight_line_is_found_exactly() -> None:
    trend = fit([(t, 10 + 2 * t) for t in (0.0, 1.0, 2.0, 3.0, 4.0)])
    assert trend is not None
    assert (trend.rate, trend.slope) == (pytest.approx(18.0), pytest.approx(2.0))
    assert trend.at(5.0) == pytest.approx(28.0)


def test_too_few_points_or_no_spread_in_time_give_no_trend() -> None:
    assert fit([(float(t), 5.0) for t in range(MIN_POINTS - 1)]) is None
    assert fit([(3.0, float(r)) for r in range(MIN_POINTS)]) is None


def test_a_falling_line_is_never_forecast_below_zero() -> None:
    assert Trend(rate=4.0, slope=-1.0).at(10.0) == 0.0


def test_only_a_rising_line_counts() -> None:
    assert rising([(float(t), 20.0 - t) for t in range(6)]) is None
    assert rising([(float(t), 20.0) for t in range(6)]) is None
    assert rising([(float(t), 20.0 + t) for t in range(6)]) == Trend(rate=25.0, slope=1.0)


@given(
    rate=st.floats(0.0, 1e5, allow_nan=False),
    times=st.lists(st.floats(0.0, 1e4), min_size=MIN_POINTS, max_size=30, unique=True),
)
def test_a_constant_rate_is_never_rising(rate: float, times: list[float]) -> None:
    """However the samples fall in time, a steady rate gives no forecast: the forecast cannot make a
    steady load flap."""
    assert rising([(t, rate) for t in sorted(times)]) is None


@given(
    base=st.floats(0.0, 1000.0),
    slope=st.floats(0.01, 100.0),
    noise=st.lists(st.floats(-0.001, 0.001), min_size=MIN_POINTS, max_size=20),
)
def test_the_fit_recovers_a_rising_line_under_small_noise(
    base: float, slope: float, noise: list[float]
) -> None:
    points = [(float(t), base + slope * t + n) for t, n in enumerate(noise)]
    trend = rising(points)
    assert trend is not None
    assert trend.slope == pytest.approx(slope, abs=0.01)
    assert trend.rate == pytest.approx(base + slope * (len(points) - 1), abs=0.01)
