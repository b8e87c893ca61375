"""Child-run logging throughput: plain MLflow, the engine on MLflow's public API, and the bulk plugin.

    python benchmarks/mlflow_logging.py [--entities 10000] [--baseline 300] [--repeats 3] [--uri URI]

Every child run carries what a real one does (6 tags, 8 params, 43 metrics: six candidates'
backtest metrics plus the champion's). Three ways to log them, each into a fresh sqlite
file (or into `--uri`, e.g. a tracking server from scripts/tracking-server.sh):

* plain: `mlflow.start_run(nested=True)` + set_tags/log_params/log_metrics + end_run;
* public API: `log_child_runs(..., bulk=False)`, the engine's fallback: `MlflowClient.create_run`
  + one `log_batch` + `set_terminated` per child (sequential for sqlite, fanned out over threads
  for a server);
* bulk: `log_child_runs`, through the tracking-store plugin (`manymodels+sqlite`) or the server's
  app plugin (`mlflow server --app-name manymodels`): 500 finished runs per transaction.

The first two run on `--baseline` entities (they take minutes for 10,000); runs/s is what is
compared. Target: bulk >= 500 runs/s for 10,000 entities.
Appends one row per method and repeat to benchmarks/results/mlflow_logging.csv.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402

CANDIDATES = ("seasonal_naive", "ets", "theta", "arima", "prophet", "ensemble")
METRICS = ("mae", "rmse", "smape", "mase", "coverage_80", "coverage_95")


def children(n: int, parent: str):
    from engine.tracking.children import ChildRun
    runs = []
    for i in range(n):
        entity = f"meter-{i:06d}"
        metrics = {f"{c}.{m}": 1.0 + (i % 97) / 10 + j for j, c in enumerate(CANDIDATES) for m in METRICS}
        metrics.update({m: metrics[f"ets.{m}"] for m in METRICS}, fit_seconds=0.5)
        runs.append(ChildRun(entity, {"mlflow.parentRunId": parent, "mlflow.runName": entity, "entity_id": entity,
                                      "champion": "ets", "status": "ok", "manymodels.run_id": "bench"},
                             {"champion": "ets", "n_obs": "2016", "windows": "3", "trend": "add",
                              "damped": "true", "season": "24", "aicc": "1234.5", "members": "[]"}, metrics))
    return runs


def fluent(uri: str, experiment: str, runs, workers: int) -> None:
    import mlflow
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment):
        for run in runs:
            with mlflow.start_run(nested=True, run_name=run.name):
                mlflow.set_tags({k: v for k, v in run.tags.items() if k != "mlflow.parentRunId"})
                mlflow.log_params(run.params)
                mlflow.log_metrics(run.metrics)


def public_api(uri: str, experiment: str, runs, workers: int) -> None:
    from engine.tracking.children import log_child_runs
    log_child_runs(uri, experiment, runs, workers=workers, bulk=False)


def bulk(uri: str, experiment: str, runs, workers: int) -> None:
    from engine.tracking.children import _bulk_logger, log_child_runs
    assert _bulk_logger(uri) is not None, f"the bulk path is off for {uri}: is the plugin installed (make setup)?"
    log_child_runs(uri, experiment, runs, workers=workers)


METHODS = {"plain": fluent, "public API": public_api, "bulk": bulk}


def fresh_store(base: Path, label: str, uri: str | None) -> tuple[str, str, str]:
    from mlflow.tracking import MlflowClient

    from engine.tracking.client import experiment_id, prepared_uri
    uri = uri or prepared_uri(f"sqlite:///{base / (label + '.db')}")
    client = MlflowClient(uri)
    experiment = experiment_id(client, f"bench-{label}-{time.time_ns()}")
    parent = client.create_run(experiment).info.run_id
    return uri, experiment, parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=10000)
    parser.add_argument("--baseline", type=int, default=300, help="entities for the plain-MLflow baselines")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="engine workers (0: one per core)")
    parser.add_argument("--uri", help="tracking URI to log into instead of fresh sqlite files")
    args = parser.parse_args()
    workers = args.workers or os.cpu_count()
    base = Path(tempfile.mkdtemp(prefix="mlflow-bench-"))
    rows, rates = [], {m: [] for m in METHODS}
    store = "server" if args.uri else "sqlite"
    try:
        for repeat in range(args.repeats):
            for method, log in METHODS.items():
                n = args.entities if method == "bulk" else args.baseline
                uri, experiment, parent = fresh_store(base, f"{method.replace(' ', '-')}-{repeat}", args.uri)
                runs = children(n, parent)
                started = time.perf_counter()
                log(uri, experiment, runs, workers)
                seconds = time.perf_counter() - started
                rate = n / seconds
                rates[method].append(rate)
                say(f"repeat {repeat + 1}: {method:10s} {n:6d} child runs in {seconds:7.1f}s = {rate:7.1f} runs/s")
                rows.append({"store": store, "method": method, "entities": n, "workers": workers,
                             "repeat": repeat, "seconds": round(seconds, 3), "runs_per_s": round(rate, 2)})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    plain, public, fast = (med(rates[m]) for m in METHODS)
    say(f"\nmedian of {args.repeats} ({store}): plain {plain:.1f} runs/s, public API {public:.1f} runs/s "
        f"({workers} workers), bulk {fast:.1f} runs/s")
    say(f"bulk / plain = {fast / plain:.1f}x, bulk / public API = {fast / public:.1f}x; "
        f"target 500 runs/s: {'met' if fast >= 500 else 'NOT met'}")
    path = record("mlflow_logging", rows)
    say(f"results appended to {path}")


if __name__ == "__main__":
    main()
