"""GEFCom2012 load track: the engine's forecast of the competition week vs the official benchmark.

    make nightly                          # trains on the competition history, registers the champion
    python benchmarks/gefcom_wrmse.py [--config configs/nightly.yaml] [--model-uri URI]

The competition's forecast week is 2008-07-01 00:00 to 2008-07-07 23:00 (zones 1-20 and the
system total, zone 21). The registered routing model forecasts those hours from each entity's
training end (2008-06-30 05:00); the score is the competition's weighted RMSE with the weights
of `Load_solution.csv` (8 per zone-day, 160 per system-day), next to the vanilla benchmark's
forecasts (`Load_benchmark.csv`) on exactly the same hours. Target: >= 20% below the benchmark.

Temperature for the forecast week was not given to competitors. Four assumptions are scored:
`persisted` (what the engine does without a weather forecast, `training.weather: persisted`: each
hour takes the mean of the same hour within +-7 days of the same date in the earlier years of its
history, plus what the history says persists of the last day's departure from that), `normal`
(that mean alone, `training.weather: normal`), `persistence` (each hour repeats the same hour of
the last observed week) and `actual` (the realized temperatures of `temperature_solution.csv`, the
bound a perfect weather forecast would reach). Only the first two use no information from after
the origin besides the calendar; the target is judged on the engine's own, the config's
`training.weather`. Holidays come from the calendar (2008-07-04 is Independence Day) in all four.

When the config declares a hierarchy (zone 21 = zones 1-20), the served forecasts are the
reconciled ones; the same forecasts without the reconciliation's adjustment are scored beside
them. The quantiles (each level's bounds and the point forecast as the median) are scored by the
GEFCom2014 probabilistic track's pinball loss, averaged over quantiles and hours, against the same
quantiles of a seasonal naive forecast (the same hour a week before the origin, repeated) with
empirical errors (the quantiles of that forecast's errors over the last eight weeks, per entity).
Appends rows to benchmarks/results/gefcom_wrmse.csv.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import record, say  # noqa: E402

WEEK = pd.date_range("2008-07-01 00:00", "2008-07-07 23:00", freq="h", tz="UTC")


def competition_file(name: str) -> pd.DataFrame:
    from engine.sources.gefcom2012 import data_dir
    return pd.read_csv(data_dir() / name)


def hourly(frame: pd.DataFrame, value: str = "load") -> pd.DataFrame:
    """Zone-day rows with h1..h24 -> one row per zone and hour (h1 is the hour from 00:00)."""
    hours = [f"h{i}" for i in range(1, 25)]
    long = frame.melt(id_vars=[c for c in frame.columns if c not in hours], value_vars=hours, var_name="h",
                      value_name=value)
    day = pd.to_datetime(long[["year", "month", "day"]])
    long["ds"] = (day + pd.to_timedelta(long["h"].str[1:].astype(int) - 1, unit="h")).dt.tz_localize("UTC")
    long["entity_id"] = "zone_" + long["zone_id"].astype(str)
    return long


def week_truth() -> pd.DataFrame:
    solution = hourly(competition_file("Load_solution.csv"))
    benchmark = hourly(competition_file("Load_benchmark.csv"), "benchmark")
    truth = solution[solution["ds"].isin(WEEK)][["id", "entity_id", "ds", "load", "weight"]]
    return truth.merge(benchmark[["id", "ds", "benchmark"]], on=["id", "ds"])


def actual_temperature() -> pd.Series:
    temps = competition_file("temperature_solution.csv")
    temps["ds"] = (pd.to_datetime(temps[["year", "month", "day"]]) + pd.to_timedelta(temps["hour"] - 1, unit="h")
                   ).dt.tz_localize("UTC")
    value = [c for c in temps.columns if c.startswith("T")][0]
    return temps.groupby("ds")[value].mean()   # the engine's temperature: mean of the 11 stations


def last_week(temperature: pd.Series, stamps: pd.Series, origin: pd.Timestamp) -> np.ndarray:
    """Each hour's temperature one week earlier, a further week back until it is observed."""
    values = []
    for stamp in stamps:
        back = stamp - pd.Timedelta(days=7)
        while back > origin:
            back -= pd.Timedelta(days=7)
        values.append(temperature.get(back, np.nan))
    return np.asarray(values, dtype="float64")


def wrmse(error: np.ndarray, weight: np.ndarray) -> float:
    return float(np.sqrt(np.sum(weight * error ** 2) / np.sum(weight)))


def band_columns(levels) -> list[str]:
    return [f"yhat_{side}_{level}" for level in levels for side in ("lower", "upper")]


def served_quantiles(scored: pd.DataFrame, levels):
    """The served point forecast (the median) and bands as one Forecast over the scored hours."""
    from engine.models.base import Forecast
    column = {c: scored[c].to_numpy(dtype=float) for c in ["yhat", *band_columns(levels)]}
    return Forecast(column["yhat"], {lvl: (column[f"yhat_lower_{lvl}"], column[f"yhat_upper_{lvl}"]) for lvl in levels})


def pinball(actual: np.ndarray, forecast) -> float:
    """The pinball loss averaged over quantiles and hours (GEFCom2014's probabilistic score): the
    engine's backtest metric (engine.training.metrics), unscaled."""
    from engine.training.metrics import window_metrics
    return window_metrics(actual, forecast, 1.0)["pinball"]


def naive_quantiles(gold: pd.DataFrame, origins: dict, scored: pd.DataFrame, levels):
    """Seasonal naive with empirical errors, at the scored rows: the last observed week repeated,
    plus each quantile of the 168-step-ahead naive errors of the last eight weeks of history."""
    from engine.models.base import Forecast
    qs = [0.5, *(q for lvl in levels for q in (0.5 - lvl / 200, 0.5 + lvl / 200))]
    out = {q: np.empty(len(scored)) for q in qs}
    for entity, history in gold.groupby("entity_id"):
        y = history.set_index("ds")["y"].sort_index()
        y = y[y.index <= origins[entity]].dropna()
        week = y.iloc[-168:].to_numpy()
        errors = (y.iloc[-168 * 9:] - y.shift(168).iloc[-168 * 9:]).dropna().iloc[-168 * 8:].to_numpy()
        rows = np.flatnonzero((scored["entity_id"] == entity).to_numpy())
        steps = ((scored["ds"].iloc[rows] - origins[entity]) / pd.Timedelta(hours=1)).astype(int).to_numpy()
        point = week[(steps - 1) % 168]
        for q in qs:
            out[q][rows] = point + np.quantile(errors, q)
    return Forecast(out[0.5], {lvl: (out[0.5 - lvl / 200], out[0.5 + lvl / 200]) for lvl in levels})


def unreconciled(router, forecast: pd.DataFrame) -> np.ndarray:
    """The served point forecasts without the hierarchy's adjustment (as each entity forecast alone)."""
    yhat = forecast["yhat"].to_numpy(dtype=float).copy()
    for entity, rows in forecast.groupby("entity_id").indices.items():
        model = router.cache.get(entity)
        if not model.reconciled_steps:
            continue
        origin = router.bundle.index[entity].origin
        steps = ((forecast["ds"].iloc[rows] - origin) / pd.Timedelta(hours=1)).astype(int).to_numpy()
        inside = steps <= model.reconciled_steps
        yhat[rows[inside]] -= np.asarray(model.adjustment_["delta"])[steps[inside] - 1]
    return yhat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/nightly.yaml")
    parser.add_argument("--model-uri", help="default: models:/<mlflow.registered_model>@champion")
    args = parser.parse_args()

    import mlflow

    from engine.config import WEATHER, load_config
    from engine.lake import GOLD_HOLIDAYS, GOLD_SERIES, DeltaRsLake
    from engine.scoring.batch import champion_uri, scoring_request
    from engine.tracking.client import prepared_uri
    from engine.training.entity import TrainSpec

    config = load_config(args.config)
    mlflow.set_tracking_uri(prepared_uri(config.mlflow.tracking_uri))
    model_uri = args.model_uri or champion_uri(config)
    model = mlflow.pyfunc.load_model(model_uri)
    router = model.unwrap_python_model().router
    truth = week_truth()
    lake = DeltaRsLake(config.lake)
    gold = lake.read(GOLD_SERIES, filters=[("entity_id", "in", sorted(truth["entity_id"].unique()))])
    holidays = set(pd.to_datetime(lake.read(GOLD_HOLIDAYS)["date"]).dt.date)
    temperature = actual_temperature()

    rows, scores = [], {}
    own = config.training.weather
    for assumption in dict.fromkeys((own, *WEATHER, "persistence", "actual")):
        requests = []
        for entity, history in gold.groupby("entity_id"):
            origin = router.bundle.index[entity].origin
            steps = int((WEEK[-1] - origin) / pd.Timedelta(hours=1))
            spec = dataclasses.replace(TrainSpec.from_config(config), horizon=steps,
                                       weather=assumption if assumption in WEATHER else own)
            future = scoring_request(history, origin, spec)
            future = future[future["ds"].dt.tz_localize("UTC").isin(WEEK)].copy()
            stamps = future["ds"].dt.tz_localize("UTC")
            if "is_holiday" in future:
                future["is_holiday"] = stamps.dt.date.isin(holidays).astype(float).to_numpy()
            if assumption == "actual" and "temperature" in future:
                future["temperature"] = stamps.map(temperature).to_numpy()
            if assumption == "persistence" and "temperature" in future:
                future["temperature"] = last_week(history.set_index("ds")["temperature"], stamps, origin)
            requests.append(future)
        forecast = model.predict(pd.concat(requests, ignore_index=True))
        forecast["ds"] = pd.to_datetime(forecast["ds"], utc=True)     # the model answers ISO strings
        forecast["alone"] = unreconciled(router, forecast)
        levels = router.meta.levels
        scored = truth.merge(forecast[["entity_id", "ds", "model", "alone", "yhat", *band_columns(levels)]],
                             on=["entity_id", "ds"], how="left")
        if scored["yhat"].isna().any():
            raise SystemExit(f"no forecast for {scored['yhat'].isna().sum()} competition hours")
        weight = scored["weight"].to_numpy(dtype=float)
        load = scored["load"].to_numpy(dtype=float)
        engine = wrmse(load - scored["yhat"].to_numpy(), weight)
        alone = wrmse(load - scored["alone"].to_numpy(), weight)
        vanilla = wrmse(load - scored["benchmark"].to_numpy(), weight)
        origins = {e: router.bundle.index[e].origin for e in scored["entity_id"].unique()}
        quantile_loss = pinball(load, served_quantiles(scored, levels))
        naive_loss = pinball(load, naive_quantiles(gold, origins, scored, levels))
        zones = scored[scored["entity_id"] != "zone_21"]
        zone_weight = zones["weight"].to_numpy(float)
        zone_engine = wrmse((zones["load"] - zones["yhat"]).to_numpy(), zone_weight)
        zone_vanilla = wrmse((zones["load"] - zones["benchmark"]).to_numpy(), zone_weight)
        scores[assumption] = (engine, vanilla)
        say(f"temperature {assumption:11s}: engine WRMSE {engine:,.0f} vs vanilla benchmark {vanilla:,.0f} "
            f"({engine / vanilla - 1:+.1%}); unreconciled {alone:,.0f} ({alone / vanilla - 1:+.1%}); "
            f"zones only {zone_engine:,.0f} vs {zone_vanilla:,.0f}; {len(scored)} hours")
        say(f"{'':23s}pinball loss of {1 + 2 * len(levels)} quantiles {quantile_loss:,.0f} vs seasonal naive with "
            f"empirical errors {naive_loss:,.0f} ({quantile_loss / naive_loss - 1:+.1%})")
        rows.append({"assumption": assumption, "model_uri": model_uri, "run_id": router.meta.run_id,
                     "hours": len(scored), "engine_wrmse": round(engine, 1), "benchmark_wrmse": round(vanilla, 1),
                     "ratio": round(engine / vanilla, 4), "unreconciled_wrmse": round(alone, 1),
                     "pinball": round(quantile_loss, 1), "naive_pinball": round(naive_loss, 1)})
    engine, vanilla = scores[own]
    say(f"\ntarget (>= 20% below the benchmark, the engine's own temperatures: training.weather {own}): "
        f"{'met' if engine <= 0.8 * vanilla else 'NOT met'} ({1 - engine / vanilla:.1%} below)")
    say(f"results appended to {record('gefcom_wrmse', rows)}")


if __name__ == "__main__":
    main()
