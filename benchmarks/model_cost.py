"""Seconds per fit of each model on 90 days of hourly data (one core, median of several).

    python benchmarks/model_cost.py [--repeats 5] [--days 90] [--short-days 14]

Also times a short history, and fits seconds = fixed + per_krow x rows/1000 through the two
points: those coefficients are each model's declared `cost` (engine/models/*.py), the partition
planner's estimate. Prints a table and appends it to benchmarks/results/model_cost.csv.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402
from engine.config import SyntheticConfig  # noqa: E402
from engine.models import MODEL_CLASSES, MODEL_NAMES, EnsembleModel, ModelSpec, make_model  # noqa: E402
from engine.sources.synthetic import synthetic_panel  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--short-days", type=int, default=14)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)

    rows, short = 24 * args.days, 24 * args.short_days
    panel = synthetic_panel(SyntheticConfig(entities=args.repeats, periods=rows + 24, seed=5))
    spec = ModelSpec(freq="h", season_lengths=(24, 168), exogenous=("temperature",))
    results = []
    say(f"seconds per fit and forecast (median of {args.repeats} series, one core)")
    say(f"  {'model':15s} {rows:>6d} rows {short:>6d} rows   fixed s  s/1000 rows")
    # global_nn applies a network trained on the whole panel: benchmarks/gpu_bench.py times it.
    for name in [m for m in MODEL_NAMES if not MODEL_CLASSES[m].needs_trained_network]:
        long_fit, short_fit = med(_time_fits(name, panel, rows, spec)), med(_time_fits(name, panel, short, spec))
        per_krow = max(0.0, 1000 * (long_fit - short_fit) / (rows - short))
        fixed = max(0.0, short_fit - per_krow * short / 1000)
        results.append({"model": name, "rows": rows, "repeats": args.repeats, "seconds_per_fit": round(long_fit, 4),
                        "short_rows": short, "short_seconds_per_fit": round(short_fit, 4),
                        "fixed_seconds": round(fixed, 4), "seconds_per_krow": round(per_krow, 4)})
        say(f"  {name:15s} {long_fit:9.3f} s {short_fit:9.3f} s {fixed:9.4f} {per_krow:11.4f}")
    say(f"results: {record('model_cost', results)}")


def _time_fits(name: str, panel, rows: int, spec) -> list[float]:
    times = []
    for _, series in panel.groupby("entity_id"):
        history = series.iloc[-rows - 24:-24].assign(y=lambda f: f["y"].interpolate(limit_direction="both"))
        model = (EnsembleModel(spec, ["seasonal_naive", "theta"], make_model) if name == "ensemble"
                 else make_model(name, spec))
        started = time.perf_counter()
        model.fit(history)
        model.forecast(series.iloc[-24:].drop(columns="y"))
        times.append(time.perf_counter() - started)
    return times


if __name__ == "__main__":
    main()
