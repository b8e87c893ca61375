"""`gpu_additive` inside a training task: batched fits against the per-entity path, in one run.

    python benchmarks/gpu_train.py                          # 512 hourly entities, 3 runs each
    python benchmarks/gpu_train.py --entities 2048 --windows 1 --repeats 5

A synthetic hourly panel (4 weeks, temperature as a regressor) is trained with `gpu_additive`
as the only candidate, by the same code a backend task runs:
- per-entity path: `train_entity` for one entity after another (every fit a batch of one);
- batched: `train_bucket`, what a task runs: the entities on one clean grid as a panel (one set
  of folds, each fold's fits in one batched call, forecasts and metrics from arrays:
  engine.training.panel), the others (the panel's missing stretches) through `train_entity` with
  their fits batched ahead (engine.training.ahead); on CUDA when present, else the CPU.
BLAS is pinned to one thread on both sides (one task per core). Prints entities/s of each (median
of `--repeats`) and the ratio, the same for the fits alone (seconds inside `gpu.additive.fit_batch`),
and checks that both produce the same result rows, bit for bit; appends to
benchmarks/results/gpu_train.csv (or --results DIR).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402
from engine.config import parse_config  # noqa: E402
from engine.sources.synthetic import synthetic_panel  # noqa: E402
from engine.training.entity import RESULT_COLUMNS, TrainSpec, train_entity  # noqa: E402
from engine.training.tasks import train_bucket  # noqa: E402
from gpu import additive  # noqa: E402

NAME = "gpu_train"


def panel_and_spec(entities: int, weeks: int, windows: int, history: int) -> tuple[pd.DataFrame, TrainSpec]:
    config = parse_config({"name": NAME, "source": {"kind": "synthetic",
                                                    "synthetic": {"entities": entities, "periods": 24 * 7 * weeks},
                                                    "exogenous": ["temperature"]},
                           "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": 24,
                           "backtest": {"windows": windows, "step": 24}, "models": ["gpu_additive"],
                           "training": {"max_history": history}})
    return synthetic_panel(config.source.synthetic), TrainSpec.from_config(config)


def per_entity(gold: pd.DataFrame, spec: TrainSpec) -> pd.DataFrame:
    """Today's path without batching: every entity alone, as `train_bucket` did."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        rows = [row for _, group in gold.groupby("entity_id", sort=True)
                for row in train_entity(group, spec).to_dict("records")]
    # One frame from the rows, as `train_bucket` builds its own (a concat of one-row frames would
    # guess a column's type from rows where it is missing).
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


class FitClock:
    """Seconds spent inside `gpu.additive.fit_batch` and the fits it made, while installed."""

    def __init__(self):
        self.seconds, self.fits, self._original = 0.0, 0, additive.fit_batch

    def __enter__(self) -> "FitClock":
        def clocked(t, y, *args, **kwargs):
            started = time.perf_counter()
            try:
                return self._original(t, y, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.fits += len(y)
        additive.fit_batch = clocked
        return self

    def __exit__(self, *exc) -> None:
        additive.fit_batch = self._original


def timed(fn, *args) -> tuple[float, FitClock, pd.DataFrame]:
    with FitClock() as clock:
        started = time.perf_counter()
        out = fn(*args)
        took = time.perf_counter() - started
    return took, clock, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=512, help="entities in the panel (one task)")
    parser.add_argument("--weeks", type=int, default=4, help="hourly history per entity, in weeks")
    parser.add_argument("--windows", type=int, default=3, help="backtest windows (each one fit)")
    parser.add_argument("--history", type=int, default=336, help="training.max_history (rows a fit sees)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path")
    parser.add_argument("--results", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()

    gold, spec = panel_and_spec(args.entities, args.weeks, args.windows, args.history)
    say(f"gpu_additive in a training task: {args.entities} entities x {len(gold) // args.entities} hours, "
        f"{args.windows} backtest window(s) + the final fit, max_history {args.history}")
    train_bucket(gold[gold["entity_id"] == gold["entity_id"].iloc[0]], spec)         # warm-up: imports, torch
    seconds = {"per_entity": [], "batched": []}
    fit_rates = {"per_entity": [], "batched": []}
    results = {}
    for repeat in range(args.repeats):
        for path, fn in (("per_entity", per_entity), ("batched", train_bucket)):
            took, clock, results[path] = timed(fn, gold, spec)
            seconds[path].append(took)
            fit_rates[path].append(clock.fits / clock.seconds)
            say(f"  #{repeat} {path}: {took:.2f}s, {args.entities / took:,.1f} entities/s; "
                f"{clock.fits} fits in {clock.seconds:.2f}s")
    columns = [c for c in results["per_entity"].columns if c != "fit_seconds"]
    same = results["batched"][columns].equals(results["per_entity"][columns])
    rates = {path: args.entities / med(s) for path, s in seconds.items()}
    fits = {path: med(r) for path, r in fit_rates.items()}
    ratio, fit_ratio = rates["batched"] / rates["per_entity"], fits["batched"] / fits["per_entity"]
    say(f"task: per-entity path {rates['per_entity']:,.1f} entities/s, batched {rates['batched']:,.1f} entities/s: "
        f"{ratio:.2f}x")
    say(f"fits alone: per-entity path {fits['per_entity']:,.0f} fits/s, batched {fits['batched']:,.0f} fits/s: "
        f"{fit_ratio:.2f}x (medians of {args.repeats}); result rows identical: {same}")
    record(NAME, [{"entities": args.entities, "weeks": args.weeks, "windows": args.windows,
                   "max_history": args.history, "repeats": args.repeats,
                   "per_entity_entities_per_s": round(rates["per_entity"], 2),
                   "batched_entities_per_s": round(rates["batched"], 2), "ratio": round(ratio, 2),
                   "per_entity_fits_per_s": round(fits["per_entity"], 1),
                   "batched_fits_per_s": round(fits["batched"], 1), "fit_ratio": round(fit_ratio, 2),
                   "identical": same}], args.results)
    if not same:
        raise SystemExit("the batched path's result rows differ from the per-entity path's")


if __name__ == "__main__":
    main()
