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


def test_timestamp_columns_parse_as_their_text_does_without_a_round_trip_through_text():
    """A Parquet source hands over timestamps, not text: naive ones are UTC, offsets are honoured,
    exactly as the same stamps written as text parse; a missing one rejects the batch."""
    import pandas as pd
    import pytest

    from engine.sources.base import BatchRejected, parse_timestamps, row_labels

    naive = pd.Series(pd.date_range("2024-03-30 22:00", periods=5, freq="h"))
    aware = naive.dt.tz_localize("Europe/Berlin", nonexistent="shift_forward")
    for stamps in (naive, aware, aware.dt.tz_convert("UTC")):
        text = stamps.map(lambda t: t.isoformat())
        parsed = parse_timestamps(stamps, "ds")
        assert str(parsed.dtype) == "datetime64[us, UTC]"
        pd.testing.assert_series_equal(parsed, parse_timestamps(text, "ds"))
    with pytest.raises(BatchRejected, match=f"column 'ds' is empty in {row_labels([2])}$"):
        parse_timestamps(naive.where(naive.index != 2), "ds")
