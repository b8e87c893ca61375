"""Seeded synthetic load panel for scale tests, benchmarks and the README's tour.

Each entity gets its own level, daily/weekly/annual shape, temperature response (heating
and cooling), noise, and, for some, a level shift and missing stretches, so that the
medallion's gap flags and the models' seasonal choices are exercised as on real feeders.
The same load is sampled on any grid (`source.synthetic.freq`, by default series.freq): hourly
feeders, 15-minute meters, monthly billing totals (where the annual temperature cycle shows).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from engine.config import SyntheticConfig
from engine.frequency import frequency
from engine.sources.base import TARGET, Dataset, LongWindow, RawBatch
from engine.sources.files import LongParser

DATASET = "synthetic"


def synthetic_panel(conf: SyntheticConfig) -> pd.DataFrame:
    """Long frame `entity_id, ds, y, temperature` (NaN y in missing stretches)."""
    rng = np.random.default_rng(conf.seed)
    n, t = conf.entities, conf.periods
    grid = frequency(conf.freq or "h")
    ds = pd.date_range(conf.start, periods=t, freq=grid.offset, tz="UTC")
    hour = (ds.hour.to_numpy() + ds.minute.to_numpy() / 60)[None, :]
    # Steps of a day or longer carry no time of day or weekday: the daily shape is its day's mean.
    dow = ds.dayofweek.to_numpy()[None, :] if grid.sub_daily else np.zeros((1, t))
    doy = ds.dayofyear.to_numpy()[None, :]

    region_temp = rng.normal(55, 8, size=(n, 1))
    temp = (region_temp - 18 * np.cos(2 * np.pi * (doy - 15) / 365.25)
            - 8 * np.cos(2 * np.pi * (hour - 3) / 24) + _ar1_noise(rng, n, t, 0.95, 2.0))

    level = rng.lognormal(mean=np.log(500), sigma=0.8, size=(n, 1))
    peak_hour = rng.uniform(16, 20, size=(n, 1))
    daily = 0.25 * np.exp(-0.5 * ((hour - peak_hour) / 3.0) ** 2) + 0.1 * np.exp(-0.5 * ((hour - 8) / 2.0) ** 2)
    if not grid.sub_daily:
        daily = np.full((1, t), 0.25 * 3.0 * np.sqrt(2 * np.pi) / 24 + 0.1 * 2.0 * np.sqrt(2 * np.pi) / 24)
        temp = temp - _ar1_noise(rng, n, t, 0.95, 2.0) * 0.5       # a period's mean is steadier than an hour
    weekend = np.where(dow >= 5, -rng.uniform(0.05, 0.2, size=(n, 1)), 0.0)
    cooling = rng.uniform(0.004, 0.012, size=(n, 1)) * np.clip(temp - 70, 0, None)
    heating = rng.uniform(0.002, 0.008, size=(n, 1)) * np.clip(50 - temp, 0, None)
    shape = 1 + daily + weekend + cooling + heating
    noise = _ar1_noise(rng, n, t, 0.7, 0.03)
    y = level * shape * (1 + noise)

    shifted = rng.random(n) < 0.3
    at = rng.integers(t // 4, 3 * t // 4, size=n)
    steps = np.arange(t)[None, :] >= at[:, None]
    y *= np.where(shifted[:, None] & steps, rng.uniform(0.8, 1.25, size=(n, 1)), 1.0)

    # Outages of 6 to 72 hours, on grids where that is a few steps of a long series.
    longest = max(1, int(72 / (grid.step_days * 24)))
    for i in np.flatnonzero(rng.random(n) < 0.2):
        start, length = rng.integers(0, t - 1), rng.integers(min(6, longest), longest + 1)
        if length <= t // 20:
            y[i, start:start + length] = np.nan

    width = len(str(n))
    ids = np.array([f"entity_{i:0{width}d}" for i in range(n)])
    return pd.DataFrame({"entity_id": np.repeat(ids, t), "ds": np.tile(ds.to_numpy(), n),
                         "y": y.ravel().round(3), "temperature": temp.ravel().round(1)})


def _ar1_noise(rng: np.random.Generator, n: int, t: int, phi: float, scale: float) -> np.ndarray:
    shocks = rng.normal(0, scale * np.sqrt(1 - phi ** 2), size=(n, t))
    out = np.empty_like(shocks)
    out[:, 0] = rng.normal(0, scale, size=n)
    for k in range(1, t):
        out[:, k] = phi * out[:, k - 1] + shocks[:, k]
    return out


def read_synthetic(conf: SyntheticConfig) -> list[RawBatch]:
    frame = synthetic_panel(conf)
    frame["ds"] = frame["ds"].dt.tz_localize(None).astype("datetime64[us]").astype(str)  # as a file would carry it
    return [RawBatch(DATASET, f"synthetic://seed={conf.seed},entities={conf.entities}", frame)]


def synthetic_datasets() -> list[Dataset]:
    return [Dataset(DATASET, TARGET, LongParser("entity_id", "ds", "y", ("temperature",)), provides=("temperature",),
                    window=LongWindow("ds"))]
