"""The synthetic panel: seeded, and sampled on the grid of series.freq."""
from __future__ import annotations

import pytest

from engine.config import parse_config
from engine.frequency import frequency
from engine.sources.synthetic import synthetic_panel


def panel(freq: str, periods: int, seed: int = 3):
    config = parse_config({"name": "x", "series": {"freq": freq},
                           "source": {"kind": "synthetic", "synthetic": {"entities": 4, "periods": periods,
                                                                         "seed": seed}}})
    assert config.source.synthetic.freq == config.series.freq       # follows series.freq unless given
    return synthetic_panel(config.source.synthetic)


@pytest.mark.parametrize("freq, periods", [("15min", 96 * 7), ("h", 24 * 14), ("d", 400), ("ms", 60), ("qe", 24)])
def test_the_panel_is_on_the_grid_and_seeded(freq, periods):
    frame = panel(freq, periods)
    assert len(frame) == 4 * periods and frequency(freq).on_grid(frame["ds"]).all()
    assert frame.equals(panel(freq, periods)) and not frame.equals(panel(freq, periods, seed=4))
    assert (frame["y"].dropna() > 0).all() and frame["y"].isna().mean() < 0.05


def test_monthly_totals_follow_the_annual_temperature_cycle():
    frame = panel("ms", 120)
    for _, one in frame.groupby("entity_id"):
        months = one["ds"].dt.month
        temperature = one.groupby(months)["temperature"].mean()
        assert temperature.idxmin() in (1, 2) and temperature.idxmax() in (7, 8)
        # Heating and cooling give every account a season of several percent of its level.
        profile = one.groupby(months)["y"].mean()
        assert (profile.max() - profile.min()) / profile.mean() > 0.03
