"""Frequencies: calendar steps at month ends and across DST, normalizing stamps of the same period,
mismatch messages that say what fits, and config defaults that follow the frequency."""
from __future__ import annotations

import pandas as pd
import pytest

from engine.config import parse_config
from engine.errors import ConfigError
from engine.frequency import config_name, frequency


def utc(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(stamps), utc=True))


def test_calendar_steps_are_months_not_thirty_days():
    month_end, month_start = frequency("me"), frequency("ms")
    jan31 = pd.Timestamp("2024-01-31", tz="UTC")
    assert list(month_end.after(jan31, 3)) == list(utc("2024-02-29", "2024-03-31", "2024-04-30"))
    assert month_end.add(jan31, 13) == pd.Timestamp("2025-02-28", tz="UTC")
    assert month_start.add(pd.Timestamp("2024-03-01", tz="UTC"), -2) == pd.Timestamp("2024-01-01", tz="UTC")
    assert list(month_start.steps(pd.Timestamp("2023-11-01", tz="UTC"), utc("2024-01-01", "2024-11-01"))) == [2, 12]
    quarter = frequency("qe")
    assert list(quarter.on_grid(utc("2024-03-31", "2024-04-30", "2024-06-30", "2024-06-29"))) == [
        True, False, True, False]
    assert list(quarter.steps(pd.Timestamp("2023-12-31", tz="UTC"), utc("2024-03-31", "2025-12-31"))) == [1, 8]
    year = frequency("ys")
    assert year.add(pd.Timestamp("2020-01-01", tz="UTC"), 4) == pd.Timestamp("2024-01-01", tz="UTC")
    assert list(year.on_grid(utc("2024-01-01", "2024-02-01"))) == [True, False]


def test_fixed_steps_and_anchored_weeks():
    quarter_hour = frequency("15min")
    assert list(quarter_hour.on_grid(utc("2024-03-10 07:15", "2024-03-10 07:20"))) == [True, False]
    assert list(quarter_hour.steps(pd.Timestamp("2024-03-10", tz="UTC"), utc("2024-03-11"))) == [96]
    sunday, monday = frequency("w"), frequency("w-mon")
    assert sunday.alias == "W-SUN" and monday.alias == "W-MON"
    assert list(sunday.on_grid(utc("2024-01-07", "2024-01-08"))) == [True, False]
    assert list(monday.on_grid(utc("2024-01-07", "2024-01-08"))) == [False, True]


def test_local_midnights_across_dst_become_the_dates_they_name():
    # Daily readings sent as local midnight in New York: 05:00 UTC before 10 March, 04:00 after.
    local = pd.date_range("2024-03-05", "2024-03-15", freq="D", tz="America/New_York")
    sent = pd.Series(local.tz_convert("UTC"))
    assert set(sent.dt.hour) == {4, 5}
    daily = frequency("d")
    normalized = daily.normalize(sent)
    assert list(normalized) == list(pd.date_range("2024-03-05", "2024-03-15", freq="D", tz="UTC"))
    assert daily.mismatch(sent) is None
    # Hourly data is left alone at every fixed step below a day.
    hours = pd.Series(pd.date_range("2024-03-09 22:00", periods=6, freq="h", tz="UTC"))
    assert frequency("h").normalize(hours).equals(hours)


def test_month_end_and_month_start_stamps_of_one_month_are_one_step():
    sent = pd.Series(utc("2024-01-31", "2024-02-01", "2024-03-31", "2024-04-15"))
    assert list(frequency("ms").normalize(sent)) == list(utc("2024-01-01", "2024-02-01", "2024-03-01", "2024-04-15"))
    assert list(frequency("me").normalize(sent)) == list(utc("2024-01-31", "2024-02-29", "2024-03-31", "2024-04-15"))
    quarters = pd.Series(utc("2024-03-31", "2024-04-01"))
    assert list(frequency("qs").normalize(quarters)) == list(utc("2024-01-01", "2024-04-01"))


@pytest.mark.parametrize("data, freq, message", [
    (pd.date_range("2024-01-01", periods=200, freq="h", tz="UTC"), "ms",
     "typically 1 hour apart (e.g. 2024-01-01 00:00, 2024-01-01 01:00), which does not fit series.freq 'ms' "
     "(monthly (month start)); set series.freq: h"),
    (pd.date_range("2020-01-01", periods=36, freq="MS", tz="UTC"), "h",
     "typically 1 month apart (e.g. 2020-01-01 00:00, 2020-02-01 00:00), which does not fit series.freq 'h' "
     "(hourly); set series.freq: ms"),
    (pd.date_range("2020-01-06", periods=30, freq="W-MON", tz="UTC"), "w", "set series.freq: w-mon"),
    (pd.date_range("2020-03-31", periods=12, freq="QE", tz="UTC"), "d", "typically 3 months apart"),
])
def test_timestamps_that_do_not_fit_say_what_they_look_like_and_which_freq_fits(data, freq, message):
    assert message in frequency(freq).mismatch(pd.Series(data))


def test_gaps_and_a_few_off_grid_rows_still_fit():
    months = pd.Series(pd.date_range("2020-01-01", periods=24, freq="MS", tz="UTC")).drop([5, 6, 11])
    assert frequency("ms").mismatch(months.reset_index(drop=True)) is None
    two_entities = pd.Series(list(pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC")) * 2)
    assert frequency("h").mismatch(two_entities, pd.Series(["a"] * 48 + ["b"] * 48)) is None


@pytest.mark.parametrize("freq, seasons, horizon, step", [
    ("5min", [288, 2016], 288, 288), ("15min", [96, 672], 96, 96), ("h", [24, 168], 168, 168),
    ("d", [7], 14, 14), ("w", [52], 8, 8), ("ms", [12], 12, 12), ("qe", [4], 8, 8), ("ys", [], 5, 5),
])
def test_keys_left_out_follow_the_frequency(freq, seasons, horizon, step):
    config = parse_config({"name": "x", "series": {"freq": freq}, "models": ["seasonal_naive", "theta"]})
    assert config_name(config.series.frequency) == freq
    assert config.series.season_lengths == seasons and config.horizon == horizon and config.backtest.step == step
    assert config.training.long_history >= config.training.max_history >= 2
    # Keys that are given win.
    given = parse_config({"name": "x", "series": {"freq": freq, "season_lengths": seasons}, "horizon": 3,
                          "backtest": {"step": 2}, "training": {"max_history": 50}})
    assert (given.horizon, given.backtest.step, given.training.max_history) == (3, 2, 50)


@pytest.mark.parametrize("data, message", [
    ({"series": {"freq": "m"}}, "'m' is ambiguous: write ms or me for months, min for minutes"),
    ({"series": {"freq": "fortnight"}}, "must be one of 5min, 15min, 30min, h, d, w, w-mon..w-sun, ms, me"),
    ({"series": {"freq": "ms", "season_lengths": [24]}}, "[24], which spans no day, week or year at series.freq "
                                                         "'ms' (monthly (month start)); use 12"),
    ({"series": {"freq": "ys", "season_lengths": [4]}}, "yearly (year start) data has no season"),
    ({"series": {"freq": "ye"}, "models": ["mstl"]}, "lists mstl, which needs at least one series.season_lengths"),
    ({"series": {"freq": "ms"}, "models": ["tempreg"], "source": {"exogenous": ["temperature"]}},
     "lists tempreg, which needs sub-daily data (it models the hour of the day): series.freq is 'ms'"),
])
def test_frequency_config_errors_are_specific(data, message):
    with pytest.raises(ConfigError) as err:
        parse_config({"name": "x", **data})
    assert message in str(err.value)
