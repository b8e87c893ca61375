"""Hyperparameter tuning: tuned vs configured parameters, and SparkTrials throughput.

    python benchmarks/tuning.py [--dataset gefcom2012 synthetic] [--max-evals 12] [--sample 8]
                                [--speed-repeats 3] [--skip-speed] [--skip-accuracy]

Accuracy, per dataset (GEFCom2012 as in configs/nightly.yaml; a seeded synthetic panel), each on
its own lake under benchmarks/.work/:
1. `manymodels tune` (SparkTrials, parallelism 2) on a stratified sample of entities;
2. training twice on every entity, with `training.tuned_params: none` and then `latest`;
3. from gold.models: each tuned model's mean backtest metric (MASE) with configured and with
   tuned parameters, over all entities and over the *holdout* entities the search never saw,
   and the mean metric of the selected champions (what the registry gate compares).

Speed: the same search (ets, `--speed-trials` trials on the synthetic sample) with SparkTrials
parallelism 1 and 2, `--speed-repeats` times each; trials per minute of the parallel part
(trial 0, the configured parameters, runs alone first and is left out), median and ratio.

Appends to benchmarks/results/tuning.csv and tuning_parallelism.csv.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work" / "tuning"
SYNTHETIC = {"kind": "synthetic", "exogenous": ["temperature"],
             "synthetic": {"entities": 24, "start": "2023-01-01", "periods": 24 * 90, "seed": 42}}


def dataset_config(name: str, args):
    from engine.config import load_config
    folder = WORK / name
    overrides = {"lake.root": str(folder / "lake"), "mlflow.tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
                 "mlflow.experiment": f"tuning-benchmark-{name}", "backend": "spark",
                 "spark.master": "local[2]", "spark.ui": False,
                 "tuning.sample": args.sample, "tuning.max_evals": args.max_evals, "tuning.parallelism": 2,
                 "tuning.early_stop": 0, "tuning.timeout": 0, "tuning.trial_timeout": 0}
    if name == "synthetic":
        overrides.update({"name": "synthetic-tuning", "source": SYNTHETIC,
                          "models": ["seasonal_naive", "ets", "theta", "arima", "prophet", "ensemble"]})
    return load_config("configs/nightly.yaml", overrides)


def ingested(config) -> None:
    from engine.lake import GOLD_SERIES, DeltaRsLake
    from engine.backends import backend_for
    from engine.medallion.pipeline import ingest
    if not DeltaRsLake(config.lake).exists(GOLD_SERIES):
        ingest(config, backend_for(config, "local"), progress=lambda msg: say(f"    {msg}"))


def model_metrics(config, run_id: str, metric: str) -> tuple[pd.DataFrame, pd.Series]:
    """(entity x candidate metric table, champion metric per entity) of a training run."""
    from engine.lake import DeltaRsLake
    from engine.training.tables import MODELS
    rows = DeltaRsLake(config.lake).read(MODELS, filters=[("run_id", "=", run_id)])
    rows = rows[rows["status"] == "ok"]
    table = pd.DataFrame({r.entity_id: {m: v.get(metric) for m, v in json.loads(r.metrics).items()}
                          for r in rows.itertuples()}).T
    champions = pd.Series({r.entity_id: json.loads(r.metrics)[r.champion][metric] for r in rows.itertuples()})
    return table.astype(float), champions


def accuracy(name: str, args, spark) -> list[dict]:
    from engine.training.job import train
    from engine.tuning.job import tune
    config = dataset_config(name, args)
    say(f"[{name}] ingest -> {config.lake.root}")
    ingested(config)
    say(f"[{name}] tune {', '.join(config.tuned_models)}: sample {args.sample}, {args.max_evals} trials per model")
    report = tune(config, show_progress=False, say=lambda line: say(f"  {line}"), spark=spark)
    say(report.summary())
    metric = config.backtest.metric
    runs = {}
    for which in ("none", "latest"):
        say(f"[{name}] train every entity with training.tuned_params: {which}")
        run = replace(config, training=replace(config.training, tuned_params=which))
        runs[which] = train(run, run_id=f"bench-{which}", spark=spark).run_id
    (before, champ_before), (after, champ_after) = (model_metrics(config, runs[w], metric) for w in ("none", "latest"))
    holdout = sorted(set(before.index) - set(report.entities))
    rows = []
    for m in report.models:
        row = {"dataset": name, "model": m.model, "metric": metric, "entities": len(before),
               "sample": len(report.entities), "holdout": len(holdout), "trials": len(m.trials),
               "failed_trials": m.failed, "tune_seconds": round(m.seconds, 1),
               "sample_configured": m.default_loss, "sample_tuned": m.best.loss if m.best else None,
               "all_configured": before[m.model].mean(), "all_tuned": after[m.model].mean(),
               "holdout_configured": before.loc[holdout, m.model].mean(),
               "holdout_tuned": after.loc[holdout, m.model].mean(),
               "params": json.dumps(m.best.params if m.best else {})}
        rows.append(row)
    rows.append({"dataset": name, "model": "champion", "metric": metric, "entities": len(before),
                 "sample": len(report.entities), "holdout": len(holdout),
                 "all_configured": champ_before.mean(), "all_tuned": champ_after.mean(),
                 "holdout_configured": champ_before.loc[holdout].mean(),
                 "holdout_tuned": champ_after.loc[holdout].mean(),
                 "tune_seconds": round(report.seconds["total"], 1)})
    return rows


def speed(args, spark) -> list[dict]:
    from engine.tuning.job import tune
    config = dataset_config("synthetic", args)
    ingested(config)
    rows = []
    for repeat in range(args.speed_repeats):
        for parallelism in (1, 2):
            run = replace(config, tuning=replace(config.tuning, models=["ets"], parallelism=parallelism,
                                                 max_evals=args.speed_trials, sample=4))
            m = tune(run, show_progress=False, say=lambda line: None, spark=spark).models[0]
            rows.append({"parallelism": parallelism, "repeat": repeat, "trials": len(m.trials) - 1,
                         "search_seconds": round(m.search_seconds, 2),
                         "trials_per_minute": round(m.trials_per_minute, 2)})
            say(f"  parallelism {parallelism}, repeat {repeat}: {len(m.trials) - 1} trials in "
                f"{m.search_seconds:.1f}s = {m.trials_per_minute:.1f} trials/min")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", nargs="+", default=["gefcom2012", "synthetic"],
                        choices=("gefcom2012", "synthetic"))
    parser.add_argument("--max-evals", type=int, default=12, help="trials per model (trial 0 included)")
    parser.add_argument("--sample", type=int, default=8, help="entities per trial")
    parser.add_argument("--speed-repeats", type=int, default=3)
    parser.add_argument("--speed-trials", type=int, default=9, help="trials per speed run (trial 0 included)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()

    from engine.config import SparkConfig
    from engine.spark import get_spark
    spark = get_spark(SparkConfig(master="local[2]", ui=False, shuffle_partitions=2))
    if not args.skip_accuracy:
        rows = [row for name in args.dataset for row in accuracy(name, args, spark)]
        path = record("tuning", rows)
        frame = pd.DataFrame(rows)
        frame["holdout_change"] = frame["holdout_tuned"] / frame["holdout_configured"] - 1
        frame["all_change"] = frame["all_tuned"] / frame["all_configured"] - 1
        say(frame[["dataset", "model", "sample_configured", "sample_tuned", "all_configured", "all_tuned",
                   "all_change", "holdout_configured", "holdout_tuned", "holdout_change"]]
            .to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        say(f"wrote {path}")
    if not args.skip_speed:
        rows = speed(args, spark)
        path = record("tuning_parallelism", rows)
        rate = {p: med(r["trials_per_minute"] for r in rows if r["parallelism"] == p) for p in (1, 2)}
        say(f"SparkTrials trials/min (median of {args.speed_repeats}): parallelism 1 {rate[1]:.1f}, "
            f"parallelism 2 {rate[2]:.1f}, ratio {rate[2] / rate[1]:.2f}x")
        say(f"wrote {path}")
    spark.stop()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
