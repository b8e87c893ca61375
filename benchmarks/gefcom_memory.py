"""GEFCom2012: does tempreg's error memory, its recency effect, or a weather scenario, help a
week-ahead forecast, judged on many earlier weeks?

    python benchmarks/gefcom_memory.py [--years 2005 2006 2007] [--memory 0 24] [--first 06-02 --last 08-25]
    python benchmarks/gefcom_memory.py --weather normal persisted --memory 0
    python benchmarks/gefcom_memory.py --memory 0 --lags 0:0 0:2 12:2 [--known-weather]

One week per year (`gefcom_years.py`) is three samples of a week's weather: a change that helps on
average can lose on it. This fits tempreg per zone (1-21) as the nightly does (`prepare` on the
rows before 06:00 of each origin day, the forecast week's weather by `training.weather`, the
config's `training.long_history`), once per `--weather` scenario, `memory` value and `--lags`
(tempreg's `lag_hours:lag_days`, the recency effect; the config's values when not given), at weekly
origins from `--first` to `--last` of each year, and scores the 168 hours after each origin with
the competition's weights (a zone-hour 1, a system-hour 20); a week with hours of no load is left
out. The competition week (2008-07-01..07) is the test set and is never among the origins. Prints
each year's weighted RMSE per variant, its ratio to the first variant's and how many origins it
won; appends rows to benchmarks/results/gefcom_memory.csv. `--known-weather` gives every variant
the temperatures that came (a perfect weather forecast in gold) instead of a weather scenario.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import record, say  # noqa: E402
from benchmarks.gefcom_years import SYSTEM_WEIGHT  # noqa: E402
from engine.config import WEATHER  # noqa: E402

COMPETITION_YEAR = 2008


def gold_rows() -> pd.DataFrame:
    """Zones 1-21 with the mean temperature and the holiday flag, as the nightly's gold has them."""
    from engine.sources.gefcom2012 import parse_holidays, parse_load, parse_temperature, read_gefcom2012

    raw = {batch.dataset: batch.frame for batch in read_gefcom2012()}
    load = parse_load(raw["gefcom2012_load"])[["entity_id", "ds", "y"]]
    temperature = parse_temperature(raw["gefcom2012_temperature"])[["ds", "temperature"]]
    holidays = set(pd.to_datetime(parse_holidays(raw["gefcom2012_holidays"])["date"]).dt.date)
    rows = load.merge(temperature, on="ds", how="left")
    rows["is_holiday"] = rows["ds"].dt.date.isin(holidays).astype("float64")
    return rows.sort_values(["entity_id", "ds"], ignore_index=True)


def squared_errors(rows: pd.DataFrame, origin: pd.Timestamp, spec, params: dict, known: bool = False) -> float:
    """The zone's mean squared error over the 168 hours from `origin`, tempreg fitted before it
    (NaN when some of those hours have no load: GEFCom2012 lacks 2005-06-20..26)."""
    from engine.models import make_model
    from engine.training.history import prepare

    history, future, _ = prepare(rows[rows["ds"] < origin], spec)
    if known:
        future["temperature"] = rows.set_index("ds")["temperature"].reindex(future["ds"]).to_numpy()
    model = make_model("tempreg", spec.model, {**spec.hyperparameters.get("tempreg", {}), **params})
    forecast = model.fit(history).forecast(future).mean
    truth = rows.set_index("ds")["y"].reindex(future["ds"]).to_numpy()
    return float(np.mean((forecast - truth) ** 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/nightly.yaml")
    parser.add_argument("--years", type=int, nargs="+", default=[2005, 2006, 2007])
    parser.add_argument("--memory", type=int, nargs="+", default=[0, 24], help="values compared (first: baseline)")
    parser.add_argument("--weather", nargs="+", default=["persisted"], choices=WEATHER,
                        help="future weather scenarios compared (training.weather; first: baseline)")
    parser.add_argument("--lags", nargs="+", default=[None], type=_lags,
                        help="tempreg lag_hours:lag_days pairs compared (first: baseline; default: the config's)")
    parser.add_argument("--known-weather", action="store_true",
                        help="forecast with the temperatures that came, not a weather scenario")
    parser.add_argument("--first", default="06-02", help="first origin of each year (MM-DD)")
    parser.add_argument("--last", default="08-25", help="last origin of each year (MM-DD)")
    args = parser.parse_args()
    if COMPETITION_YEAR in args.years:
        raise SystemExit("2008 holds the competition week, the test set: choose on earlier years")

    from engine.config import load_config
    from engine.training.entity import TrainSpec

    spec = TrainSpec.from_config(load_config(args.config))
    variants = [(weather, memory, lags) for weather in args.weather for memory in args.memory for lags in args.lags]
    specs = {weather: dataclasses.replace(spec, horizon=168, weather=weather) for weather in args.weather}
    rows = gold_rows()
    zones = {entity: group.reset_index(drop=True) for entity, group in rows.groupby("entity_id")}
    results = []
    for year in args.years:
        started = time.perf_counter()
        origins = pd.date_range(f"{year}-{args.first} 06:00", f"{year}-{args.last} 06:00", freq="7D", tz="UTC")
        # Weighted mean squared error per origin and variant.
        scores = np.zeros((len(origins), len(variants)))
        for i, origin in enumerate(origins):
            for entity, zone in zones.items():
                weight = SYSTEM_WEIGHT if entity == "zone_21" else 1
                for j, (weather, memory, lags) in enumerate(variants):
                    params = {"memory": memory, **(lags or {})}
                    scores[i, j] += weight * squared_errors(zone, origin, specs[weather], params,
                                                            args.known_weather)
        scores /= len(zones) - 1 + SYSTEM_WEIGHT
        scored = np.isfinite(scores).all(axis=1)
        origins, scores = origins[scored], scores[scored]
        wrmse = np.sqrt(scores.mean(axis=0))
        for j, (weather, memory, lags) in enumerate(variants):
            won = int((scores[:, j] < scores[:, 0]).sum())
            lag_text = "config" if lags is None else f"{lags['lag_hours']}:{lags['lag_days']}"
            label = "known" if args.known_weather else weather
            results.append({"year": year, "origins": len(origins), "memory": memory, "weather": label,
                            "lags": lag_text,
                            "wrmse": round(wrmse[j], 1), "ratio": round(wrmse[j] / wrmse[0], 4), "origins_won": won,
                            "seconds": round(time.perf_counter() - started, 1)})
            say(f"{year}: weather {label:>9}, memory {memory:>3}, lags {lag_text:>6}: weighted RMSE "
                f"{wrmse[j]:>9,.0f}  ({wrmse[j] / wrmse[0]:.3f} of the first variant; "
                f"better on {won} of {len(origins)} weeks)")
    record("gefcom_memory", results)


def _lags(text: str) -> dict:
    """`lag_hours:lag_days` as tempreg's hyperparameters."""
    hours, _, days = text.partition(":")
    try:
        return {"lag_hours": int(hours), "lag_days": int(days)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected lag_hours:lag_days (like 12:2), got {text!r}") from None


if __name__ == "__main__":
    main()
