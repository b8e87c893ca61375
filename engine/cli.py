"""The `manymodels` command line. User mistakes print one clear line, never a stack trace."""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from typing import Optional, Sequence

from engine.config import BACKENDS, load_config
from engine.errors import ManymodelsError

EXIT_USER_ERROR, EXIT_REJECTED = 2, 3


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH", help="job config YAML (see configs/nightly.yaml)")
    parser.add_argument("--backend", choices=BACKENDS, help="override the config's backend for this run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="manymodels", description="Many-models forecasting on Spark, Delta Lake "
                                     "and MLflow: one model per entity, thousands in parallel.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = sub.add_parser("ingest", help="sources -> bronze -> silver -> gold; prints rows per layer",
                            description="Ingest the configured source into the Delta Lake medallion. Re-running "
                            "with the same input adds nothing; new batches append to bronze and rebuild "
                            "silver and gold.")
    _config_arg(ingest)
    ingest.add_argument("--rebuild", action="store_true", help="rebuild silver and gold even if bronze is unchanged")

    train = sub.add_parser("train", help="train, select and forecast every entity of gold.series",
                           description="Backtest every configured candidate per entity, pick the champion by "
                           "backtest.metric, refit it and forecast the horizon. Writes gold.backtests, "
                           "gold.models and gold.forecasts; prints a summary.")
    _config_arg(train)
    train.add_argument("--gold-version", type=int, metavar="N", help="train on this Delta version of gold.series "
                       "(default: the latest)")
    train.add_argument("--run-id", metavar="ID", help="reuse a run id: its rows in the output tables are replaced")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    train.add_argument("--no-mlflow", action="store_true", help="skip MLflow: no parent/child runs, no new "
                       "routing model version (the Delta tables are still written)")

    score = sub.add_parser("score", help="batch-score entities through the registered routing model into "
                           "gold.forecasts", description="Forecast every entity (or --entity ...) of the routing "
                           "model: the horizon after each entity's training end, through the registered model "
                           "on Spark (one model load per executor), MERGEd into gold.forecasts.")
    _config_arg(score)
    score.add_argument("--model-uri", metavar="URI", help="model to score with (default: "
                       "models:/<mlflow.registered_model>@champion)")
    score.add_argument("--entity", nargs="+", metavar="ID", help="score only these entities")

    serve = sub.add_parser("serve", help="serve the champion routing model over REST (MLflow scoring server)",
                           description="Serve the registered routing model with MLflow's scoring server: POST "
                           "rows of entity_id, ds (+ exogenous) to /invocations; GET /ping for health. Runs until "
                           "stopped (Ctrl-C).")
    serve.add_argument("--config", required=True, metavar="PATH", help="job config YAML (see configs/nightly.yaml)")
    serve.add_argument("--port", type=int, default=5001, help="port (default 5001)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1, loopback only)")
    serve.add_argument("--model-uri", metavar="URI", help="model to serve (default: "
                       "models:/<mlflow.registered_model>@champion)")
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1; each keeps its own "
                       "model cache)")

    forecasts = sub.add_parser("forecasts", help="forecasts for analysts (no Spark, no JVM)",
                               description="Read published forecasts and actuals from gold with delta-rs.")
    pull_cmd = forecasts.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser(
        "pull", help="the latest (or a given) forecast origin with actuals, as csv, parquet or a png chart",
        description="Write the latest published forecast per entity (or that of --origin) with its 80/95% "
        "intervals and the actuals where known: a table (csv, parquet) or a chart, one panel per entity (png).")
    pull_cmd.add_argument("--config", required=True, metavar="PATH", help="job config YAML")
    pull_cmd.add_argument("--entity", nargs="+", metavar="ID", help="only these entities (default: all)")
    pull_cmd.add_argument("--start", metavar="T", help="first forecast timestamp to include (UTC unless given)")
    pull_cmd.add_argument("--end", metavar="T", help="last forecast timestamp to include")
    pull_cmd.add_argument("--origin", metavar="T", help="forecast origin to read (default: each entity's latest)")
    pull_cmd.add_argument("--format", required=True, choices=("csv", "parquet", "png"), help="output format")
    pull_cmd.add_argument("--output", required=True, metavar="PATH", help="file to write")
    pull_cmd.add_argument("--history", type=int, default=0, metavar="STEPS",
                          help="history shown before the origin in png (default: 3 x horizon)")

    nightly = sub.add_parser("nightly", help="the nightly job: every stage built so far, with a summary",
                             description="Run the nightly job. Stages so far: ingest (bronze/silver/gold), then "
                             "train (backtest, champion, forecast) on the gold version just written, then MLflow "
                             "(parent and child runs, a routing model version through the promotion gate), then "
                             "score every entity with the champion into gold.forecasts; ends with a summary.")
    _config_arg(nightly)
    nightly.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_mlflow()
    try:
        config = load_config(args.config)
        if args.command == "train":
            return _run_train(config, args)
        if args.command == "score":
            return _run_score(config, args)
        if args.command == "serve":
            return _run_serve(config, args)
        if args.command == "forecasts":
            return _run_pull(config, args)
        if args.command == "nightly":
            return _run_nightly(config, args)
        return _run_ingest(config, args, title="ingest")[1]
    except ManymodelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: Delta commits are atomic, so rerun the same command to finish", file=sys.stderr)
        return 130


def _quiet_mlflow() -> None:
    """MLflow's INFO lines and download bars would drown the job's own progress and summary."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")   # read when mlflow is imported


def _run_ingest(config, args, title: str):
    from engine.medallion import frames_for
    from engine.medallion.pipeline import ingest

    run_id, started = getattr(args, "run_id", None) or uuid.uuid4().hex, time.perf_counter()
    backend = args.backend or config.backend
    print(f"manymodels {title} '{config.name}' run {run_id}: lake {config.lake.root}, backend {backend}")
    report = ingest(config, frames_for(config, backend), progress=lambda msg: print(f"  {msg}", flush=True),
                    rebuild=getattr(args, "rebuild", False))
    print(f"summary: {report.gold.get('entities', 0)} entities, {report.gold.get('rows', 0)} gold rows, "
          f"gold version {report.gold_version}, "
          + ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
          + f", total {time.perf_counter() - started:.1f}s")
    for rej in report.rejected:
        print(f"rejected{' (new)' if rej['new'] else ''}: {rej['file']}: {rej['reason']}", file=sys.stderr)
    if report.rejected:
        print(f"error: {len(report.rejected)} batch(es) rejected; their raw rows are in bronze "
              "(see bronze/_rejected_batches). Fix or remove the file(s) and rerun.", file=sys.stderr)
        return report, EXIT_REJECTED
    return report, 0


def _run_nightly(config, args) -> int:
    """ingest -> train -> MLflow (runs, registry gate) -> score with the champion, one run id."""
    args.run_id = uuid.uuid4().hex
    started, seconds = time.perf_counter(), {}
    ingested, code = _run_ingest(config, args, title="nightly")
    seconds["ingest"] = time.perf_counter() - started
    t0 = time.perf_counter()
    trained, published = _train_and_publish(config, args, gold_version=ingested.gold_version)
    seconds["train"] = trained.seconds["total"]
    seconds["mlflow"] = time.perf_counter() - t0 - seconds["train"]
    t0 = time.perf_counter()
    scored = _score(config, args)
    seconds["score"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(trained.statuses.items()))
    print(f"nightly summary: run {trained.run_id}, gold version {trained.gold_version}; {trained.entities} entities "
          f"({statuses}); champions " + ", ".join(f"{k} {v}" for k, v in trained.champions.most_common())
          + f"; {len(trained.failures)} failed; MLflow parent run {published.parent_run_id}; registry: "
          f"{published.decision.describe()}; {scored.rows} forecast rows published from run {scored.run_id}; "
          "time " + ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items()))
    return code


def _run_train(config, args) -> int:
    _train_and_publish(config, args)
    return 0


def _train_and_publish(config, args, gold_version=None):
    from engine.training.job import train

    backend = args.backend or config.backend
    print(f"manymodels train '{config.name}': lake {config.lake.root}, backend {backend}, "
          f"models {', '.join(config.models)}", flush=True)
    bar = []

    def progress(total: int, tasks: int):
        from tqdm import tqdm
        bar.append(tqdm(total=total, unit="entity", desc=f"training ({tasks} tasks)",
                        disable=getattr(args, "no_progress", False)))
        return bar[0].update

    try:
        report = train(config, backend=backend,
                       gold_version=gold_version if gold_version is not None else getattr(args, "gold_version", None),
                       run_id=getattr(args, "run_id", None), progress=progress)
    finally:
        for b in bar:
            b.close()
    print(training_summary(report))
    published = None if getattr(args, "no_mlflow", False) else _run_publish(config, report, args)
    return report, published


def _run_publish(config, report, args):
    from tqdm import tqdm

    from engine.tracking.publish import publish

    bars = []

    def progress(total: int):
        bars.append(tqdm(total=total, unit="run", desc="mlflow child runs",
                         disable=getattr(args, "no_progress", False)))
        return bars[0].update

    try:
        result = publish(config, report.run_id, train_seconds=report.seconds, backend=report.backend,
                         progress=progress)
    finally:
        for bar in bars:
            bar.close()
    print(f"mlflow: parent run {result.parent_run_id} in experiment '{config.mlflow.experiment}' "
          f"({config.mlflow.tracking_uri}), {result.children} child runs in {result.seconds['children']:.1f}s "
          f"({result.children_per_second:.0f}/s)")
    print(f"registry: {config.mlflow.registered_model} {result.decision.describe()}")
    return result


def _run_score(config, args) -> int:
    _score(config, args)
    return 0


def _score(config, args):
    from engine.scoring.batch import score

    backend = args.backend or config.backend
    report = score(config, model_uri=getattr(args, "model_uri", None), entities=getattr(args, "entity", None),
                   backend=backend)
    print(f"scored {report.entities} entities with {report.model_uri} (training run {report.run_id}): "
          f"{report.rows} forecast rows MERGEd into gold/forecasts, "
          + ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items()))
    return report


def _run_pull(config, args) -> int:
    from engine.analyst.pull import pull

    history = args.history or 3 * config.horizon
    pulled = pull(config, entities=args.entity, start=args.start, end=args.end, origin=args.origin,
                  history_steps=history if args.format == "png" else 0)
    frame = pulled.forecasts
    if args.format == "csv":
        frame.to_csv(args.output, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    elif args.format == "parquet":
        frame.to_parquet(args.output, index=False)
    else:
        from engine.analyst.plot import plot_forecasts
        plot_forecasts(pulled, args.output, tuple(config.training.levels))
    origins = frame.groupby("entity_id")["forecast_origin"].first()
    print(f"wrote {args.output}: {frame['entity_id'].nunique()} entities, {len(frame)} forecast rows "
          f"({int(frame['y'].notna().sum())} with actuals), origin "
          + (origins.iloc[0].isoformat() if origins.nunique() == 1 else
             f"{origins.min().isoformat()} .. {origins.max().isoformat()}"))
    return 0


def _run_serve(config, args) -> int:
    """Replace this process with MLflow's scoring server (signals and exit codes are its own)."""
    from engine.scoring.batch import champion_uri, check_model
    from engine.tracking.store import prepared_uri

    model_uri = args.model_uri or champion_uri(config)
    check_model(config, model_uri)
    # MLflow starts `uvicorn` by name: put this interpreter's scripts folder first on PATH.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = dict(os.environ, MLFLOW_TRACKING_URI=prepared_uri(config.mlflow.tracking_uri), PATH=path)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "--model-uri", model_uri, "--host", args.host,
               "--port", str(args.port), "--env-manager", "local", "--workers", str(args.workers)]
    print(f"serving {model_uri} on http://{args.host}:{args.port}/invocations (health: /ping); Ctrl-C stops",
          flush=True)
    sys.stderr.flush()
    os.execve(sys.executable, command, env)
    return 0   # not reached


def training_summary(report) -> str:
    """The end-of-job lines a person reads: what ran, what won, what failed, how fast."""
    statuses = report.statuses
    lines = [f"run {report.run_id} on gold version {report.gold_version}: {report.plan.describe()}",
             f"entities: {report.entities} ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))})",
             "champions: " + ", ".join(f"{k} {v}" for k, v in report.champions.most_common()),
             f"time: train {report.seconds['train']:.1f}s ({report.entities_per_second:.2f} entities/s), "
             f"total {report.seconds['total']:.1f}s; rows written: "
             + ", ".join(f"{t} {n}" for t, n in report.written.items())]
    if report.retried:
        lines.append(f"retried: {report.retried} entities ran in a retried task (a worker crashed or was killed)")
    for row in report.failures.itertuples():
        lines.append(f"failed: {row.entity_id}: {row.error} (forecast: {row.champion or 'none'} fallback)")
    fallbacks = report.summary[report.summary["status"] == "fallback"]
    for row in fallbacks.head(20).itertuples():
        lines.append(f"fallback: {row.entity_id}: {row.reason}")
    if len(fallbacks) > 20:
        lines.append(f"fallback: ... and {len(fallbacks) - 20} more (see gold.models)")
    return "\n".join(lines)


def run() -> None:
    """Console entry point. Exits with os._exit once output is flushed: delta-rs can leave a
    native thread behind that aborts a normal interpreter shutdown after all work has been
    committed (delta-io/delta-rs#2184), which would turn a finished job into exit code 134."""
    code = main()
    spark_sql = sys.modules.get("pyspark.sql")
    if spark_sql is not None and spark_sql.SparkSession.getActiveSession() is not None:
        spark_sql.SparkSession.getActiveSession().stop()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
