"""Seconds per fit of each model on 90 days of hourly data (one core, median of several), and the
statsforecast implementations against the statsmodels ones they replaced, side by side.

    python benchmarks/model_cost.py [--repeats 5] [--days 90] [--short-days 14] [--zones 20]
                                    [--skip-costs] [--before arima_joint ...]

1. Every candidate: fit + a 168-step forecast on `--repeats` synthetic series, at `--days` and
   `--short-days` of history; seconds = fixed + per_krow x rows/1000 through the two points are
   each model's declared `cost` (engine/models/*.py), the partition planner's estimate.
2. Before/after (ets, arima, theta, mstl vs their `*_statsmodels` versions, and arima vs
   `arima_joint`, its joint estimate before the two-step one): on the same
   synthetic series and on `--zones` GEFCom2012 zones (the last 90 days + 1 week without a gap),
   seconds per fit + forecast, and the MASE of the 168-step forecast of the held-out week
   (scaled by the in-sample daily seasonal naive). Prints the median seconds, the speed-up and
   the median per-series MASE ratio (after / before; <= 1.02 is "no worse").

Appends to benchmarks/results/model_cost.csv and model_cost_pairs.csv.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402
from engine.config import SyntheticConfig  # noqa: E402
from engine.models import MODEL_CLASSES, MODEL_NAMES, EnsembleModel, ModelSpec, make_model  # noqa: E402
from engine.sources.synthetic import synthetic_panel  # noqa: E402
from engine.training.metrics import mase_scale  # noqa: E402

HORIZON = 168
# (after, before): statsforecast against the statsmodels fits it replaced, and arima's two-step
# estimate (regression, then ARIMA errors) against the joint one it replaced.
PAIRS = (("ets", "ets_statsmodels"), ("arima", "arima_statsmodels"), ("arima", "arima_joint"),
         ("theta", "theta_statsmodels"), ("mstl", "mstl_statsmodels"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="synthetic series (default 5)")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--short-days", type=int, default=14)
    parser.add_argument("--zones", type=int, default=20, help="GEFCom2012 zones in the before/after (0: none)")
    parser.add_argument("--skip-costs", action="store_true", help="only the before/after comparison")
    parser.add_argument("--before", nargs="+", choices=[b for _, b in PAIRS], default=[b for _, b in PAIRS],
                        help="the before/after pairs to run, by their 'before' model (default: all)")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)

    rows, short = 24 * args.days, 24 * args.short_days
    synthetic = synthetic_panel(SyntheticConfig(entities=args.repeats, periods=rows + HORIZON, seed=5))
    synthetic["y"] = synthetic.groupby("entity_id")["y"].transform(lambda y: y.interpolate(limit_direction="both"))
    spec = ModelSpec(freq="h", season_lengths=(24, 168), exogenous=("temperature",))
    if not args.skip_costs:
        costs(synthetic, rows, short, spec, args.repeats)
    panels = {"synthetic": synthetic}
    if args.zones:
        panels["gefcom2012"] = gefcom_zones(rows + HORIZON, args.zones)
    before_after(panels, rows, spec, [(a, b) for a, b in PAIRS if b in args.before])


def costs(panel: pd.DataFrame, rows: int, short: int, spec: ModelSpec, repeats: int) -> None:
    results = []
    say(f"seconds per fit and {HORIZON}-step forecast (median of {repeats} series, one core)")
    say(f"  {'model':18s} {rows:>6d} rows {short:>6d} rows   fixed s  s/1000 rows")
    # global_nn applies a network trained on the whole panel: benchmarks/gpu_bench.py times it.
    for name in [m for m in MODEL_NAMES if not MODEL_CLASSES[m].needs_trained_network]:
        long_fit = med(s for s, _ in fits(name, panel, rows, spec))
        short_fit = med(s for s, _ in fits(name, panel, short, spec))
        per_krow = max(0.0, 1000 * (long_fit - short_fit) / (rows - short))
        fixed = max(0.0, short_fit - per_krow * short / 1000)
        results.append({"model": name, "rows": rows, "repeats": repeats, "seconds_per_fit": round(long_fit, 4),
                        "short_rows": short, "short_seconds_per_fit": round(short_fit, 4),
                        "fixed_seconds": round(fixed, 4), "seconds_per_krow": round(per_krow, 4),
                        "horizon": HORIZON})
        say(f"  {name:18s} {long_fit:9.3f} s {short_fit:9.3f} s {fixed:9.4f} {per_krow:11.4f}")
    say(f"results: {record('model_cost', results)}")


def before_after(panels: dict[str, pd.DataFrame], rows: int, spec: ModelSpec,
                 pairs: list[tuple[str, str]]) -> None:
    results = []
    say(f"\nafter vs before (statsmodels, or arima's joint estimate): fit + {HORIZON}-step forecast on {rows} rows, "
        "one core")
    say(f"  {'panel':11s} {'model':7s} {'before':17s} {'series':>6s} {'before s':>9s} {'after s':>8s} {'speed-up':>8s} "
        f"{'MASE before':>11s} {'MASE after':>10s} {'MASE ratio':>10s}")
    for panel_name, panel in panels.items():
        for name, previous in pairs:
            before, after = fits(previous, panel, rows, spec), fits(name, panel, rows, spec)
            ratios = [a / b for (_, a), (_, b) in zip(after, before) if np.isfinite(a) and np.isfinite(b) and b > 0]
            row = {"panel": panel_name, "model": name, "before": previous, "series": len(after), "rows": rows,
                   "horizon": HORIZON,
                   "before_seconds": round(med(s for s, _ in before), 4),
                   "after_seconds": round(med(s for s, _ in after), 4),
                   "before_mase": round(med(m for _, m in before), 4), "after_mase": round(med(m for _, m in after), 4),
                   "median_mase_ratio": round(med(ratios), 4) if ratios else float("nan")}
            row["speedup"] = round(row["before_seconds"] / row["after_seconds"], 2)
            results.append(row)
            say(f"  {panel_name:11s} {name:7s} {previous:17s} {row['series']:6d} {row['before_seconds']:9.3f} "
                f"{row['after_seconds']:8.3f} {row['speedup']:7.1f}x {row['before_mase']:11.3f} "
                f"{row['after_mase']:10.3f} {row['median_mase_ratio']:10.3f}")
    say(f"results: {record('model_cost_pairs', results)}")


def fits(name: str, panel: pd.DataFrame, rows: int, spec: ModelSpec) -> list[tuple[float, float]]:
    """(seconds of fit + forecast, MASE of the held-out week) per series of `panel`."""
    out = []
    for _, series in panel.groupby("entity_id"):
        history, test = series.iloc[-rows - HORIZON:-HORIZON], series.iloc[-HORIZON:]
        model = (EnsembleModel(spec, ["seasonal_naive", "theta"], make_model) if name == "ensemble"
                 else make_model(name, spec))
        started = time.perf_counter()
        try:
            forecast = model.fit(history).forecast(test.drop(columns="y"))
        except Exception as exc:  # noqa: BLE001 - a failed fit is reported, the others still count
            say(f"  {name} failed on {series['entity_id'].iloc[0]}: {exc}")
            out.append((time.perf_counter() - started, float("nan")))
            continue
        seconds = time.perf_counter() - started
        scale = mase_scale(history["y"].to_numpy(), 24)
        out.append((seconds, float(np.mean(np.abs(forecast.mean - test["y"].to_numpy())) / scale)))
    return out


def gefcom_zones(length: int, zones: int) -> pd.DataFrame:
    """The last `length` gap-free hours of each of the first `zones` GEFCom2012 zones, with temperature
    (the mean of the 11 stations, the engine's `temperature`)."""
    from benchmarks.gefcom_wrmse import competition_file, hourly
    load = hourly(competition_file("Load_history.csv"))
    load["y"] = pd.to_numeric(load["load"].astype(str).str.replace(",", ""), errors="coerce")
    from engine.sources.gefcom2012 import parse_temperature
    temperature = parse_temperature(competition_file("temperature_history.csv"))[["ds", "temperature"]]
    parts = []
    for zone in range(1, zones + 1):
        series = load[load["entity_id"] == f"zone_{zone}"].sort_values("ds").reset_index(drop=True)
        gap_free = series["y"].notna().rolling(length).sum() == length
        end = int(np.flatnonzero(gap_free.to_numpy())[-1]) + 1
        window = series.iloc[end - length:end][["entity_id", "ds", "y"]]
        parts.append(window.merge(temperature, on="ds", how="left"))
    panel = pd.concat(parts, ignore_index=True)
    panel["temperature"] = panel["temperature"].interpolate(limit_direction="both")
    return panel


if __name__ == "__main__":
    main()
