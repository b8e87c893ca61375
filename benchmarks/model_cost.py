"""Seconds per fit of each model on 90 days of hourly data (one core, median of several).

    python benchmarks/model_cost.py [--repeats 5] [--days 90]

Prints a table and appends it to benchmarks/results/model_cost.csv. The per-1,000-row
figures feed partitions/costs.py (MODEL_SECONDS_PER_KROW).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402
from engine.config import MODELS  # noqa: E402
from engine.models import EnsembleModel, ModelSpec, make_model  # noqa: E402
from engine.sources.synthetic import synthetic_panel  # noqa: E402
from engine.config import SyntheticConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)

    rows = 24 * args.days
    panel = synthetic_panel(SyntheticConfig(entities=args.repeats, periods=rows + 24, seed=5))
    spec = ModelSpec(freq="h", season_lengths=(24, 168), exogenous=("temperature",))
    results = []
    say(f"seconds per fit on {rows} hourly rows (median of {args.repeats} series, one core)")
    for name in MODELS:
        times = []
        for _, series in panel.groupby("entity_id"):
            history = series.iloc[:rows].assign(y=lambda f: f["y"].interpolate(limit_direction="both"))
            model = (EnsembleModel(spec, ["seasonal_naive", "theta"], make_model) if name == "ensemble"
                     else make_model(name, spec))
            started = time.perf_counter()
            model.fit(history)
            model.forecast(series.iloc[rows:].drop(columns="y"))
            times.append(time.perf_counter() - started)
        seconds = med(times)
        results.append({"model": name, "rows": rows, "repeats": args.repeats, "seconds_per_fit": round(seconds, 4),
                        "seconds_per_krow": round(1000 * seconds / rows, 4)})
        say(f"  {name:15s} {seconds:8.3f} s/fit  ({1000 * seconds / rows:.4f} s per 1,000 rows)")
    say(f"results: {record('model_cost', results)}")


if __name__ == "__main__":
    main()
