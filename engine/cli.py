"""The `manymodels` command line. User mistakes print one clear line, never a stack trace."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from engine.config import BACKENDS, load_config
from engine.errors import ConfigError, Exit, ManymodelsError, first_line, root_cause
from engine.nightly.lease import LakeBusy, LakeLease
from engine.storage import LakeStore


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH", help="job config YAML (see configs/nightly.yaml)")
    parser.add_argument("--backend", choices=BACKENDS, help="override the config's backend for this run")


def build_parser() -> argparse.ArgumentParser:
    codes = "; ".join(f"{code.value} {code.name.lower().replace('_', ' ')}" for code in Exit)
    parser = argparse.ArgumentParser(prog="manymodels", description="Many-models forecasting on Spark, Delta Lake "
                                     "and MLflow: one model per entity, thousands in parallel.",
                                     epilog=f"exit codes: {codes}")
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
    score.add_argument("--stream", action="store_true", help="score request rows (entity_id, ds, exogenous) "
                       "appended to the streaming.requests Delta table as they arrive, each exactly once, into "
                       "streaming.forecasts (bad rows, with the reason, into streaming.rejects); runs until Ctrl-C")
    score.add_argument("--once", action="store_true", help="with --stream: score the requests there now, then "
                       "stop (for a scheduler)")

    serve = sub.add_parser("serve", help="serve the champion routing model over REST (MLflow scoring server)",
                           description="Serve the registered routing model with MLflow's scoring server: POST "
                           "rows of entity_id, ds (+ exogenous) to /invocations; GET /ping for health. Runs until "
                           "stopped (Ctrl-C).")
    serve.add_argument("--config", required=True, metavar="PATH", help="job config YAML (see configs/nightly.yaml)")
    serve.add_argument("--port", type=int, default=5001, help="port (default 5001)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1, loopback only; "
                       "another needs --allow-remote)")
    serve.add_argument("--allow-remote", action="store_true", help="allow a --host other machines can reach "
                       "(put TLS in front, and set a token)")
    serve.add_argument("--token-file", metavar="PATH", help="require 'Authorization: Bearer <token>' on "
                       "/invocations, the token read from PATH (or set MANYMODELS_SERVE_TOKEN); /ping stays open")
    serve.add_argument("--max-body-mb", type=float, default=10.0, help="largest request body in MB, else HTTP 413 "
                       "(default 10)")
    serve.add_argument("--max-rows", type=int, default=100_000, help="most rows per request, else HTTP 400 "
                       "(default 100000)")
    serve.add_argument("--model-uri", metavar="URI", help="model to serve (default: "
                       "models:/<mlflow.registered_model>@champion)")
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1; each keeps its own "
                       "model cache)")

    deploy = sub.add_parser(
        "deploy", help="a Dockerfile and Kubernetes manifests for the routing model and the nightly job",
        description="Write, under --output: serving/ (MLflow's generate-dockerfile output for the registered "
        "model), nightly/Dockerfile (this engine's image for the job), k8s/serving.yaml (Deployment, Service, "
        "HorizontalPodAutoscaler, PodDisruptionBudget) and k8s/nightly.yaml (ConfigMap, CronJob). Manifests are "
        "validated against the Kubernetes schemas first; no credential is written (pods read the Secret "
        "<name>-credentials).")
    deploy.add_argument("--config", required=True, metavar="PATH", help="job config YAML (its lake and tracking "
                        "store must be reachable from the cluster)")
    deploy.add_argument("--output", required=True, metavar="DIR", help="folder to write")
    deploy.add_argument("--image", metavar="NAME", help="serving image as pushed (default <name>-router:latest)")
    deploy.add_argument("--nightly-image", metavar="NAME", help="job image as pushed (default manymodels:latest)")
    deploy.add_argument("--model-uri", metavar="URI", help="model to package (default: "
                        "models:/<mlflow.registered_model>@champion)")
    deploy.add_argument("--namespace", default="default", help="Kubernetes namespace (default: default)")
    deploy.add_argument("--replicas", type=int, default=2, help="serving replicas, the autoscaler's minimum "
                        "(default 2)")
    deploy.add_argument("--schedule", default="0 2 * * *", help="the nightly job's cron schedule, UTC "
                        "(default '0 2 * * *')")

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

    tune = sub.add_parser(
        "tune", help="hyperopt search of model hyperparameters on a sample of entities; the next train uses it",
        description="For each model (tuning.models, else every candidate with hyperparameters), score its "
        "configured parameters and then hyperopt TPE trials by the mean backtest metric over a seeded, stratified "
        "sample of entities (tuning.sample). On the spark backend trials run in parallel as Spark tasks "
        "(SparkTrials, tuning.parallelism). Every trial is an MLflow run nested under the model's run and the "
        "tuning parent run; the best parameters go to _manymodels/tuning, which the next `manymodels train` reads "
        "(training.tuned_params). Budgets: tuning.max_evals, tuning.trial_timeout, tuning.timeout, "
        "tuning.early_stop. See tuning.space in the README for the search space.")
    _config_arg(tune)
    tune.add_argument("--model", nargs="+", metavar="NAME", help="tune only these models")
    tune.add_argument("--max-evals", type=int, metavar="N", help="override tuning.max_evals (trials per model, "
                      "the configured parameters included)")
    tune.add_argument("--parallelism", type=int, metavar="N", help="override tuning.parallelism (concurrent "
                      "SparkTrials trials)")
    tune.add_argument("--sample", type=int, metavar="N", help="override tuning.sample (entities per trial)")
    tune.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    nightly = sub.add_parser(
        "nightly", help="the nightly job: ingest, train, MLflow and registry gate, score; ends with a summary",
        description="Run one night: ingest (bronze/silver/gold), train (backtest, champion, forecast) on the gold "
        "version just written, log to MLflow (parent and child runs, a routing model version through the "
        "promotion gate), then score every entity with the champion into gold.forecasts. The night's run id comes "
        "from its as-of time, so rerunning a night replaces its rows; stages a crashed run finished are not "
        "redone; a night whose inputs equal a finished night's reuses its models (nightly.reuse_models). One job "
        "per lake at a time. Exit codes: 0 done, 1 unexpected error, 2 user mistake, 3 input batch(es) rejected, "
        "4 too many entities failed, 75 lake busy.")
    _config_arg(nightly)
    nightly.add_argument("--as-of", metavar="TIMESTAMP", help="replay the night at this time (UTC unless an offset "
                         "is given): ingest only data received by then (observations before it) and forecast from "
                         "there, e.g. --as-of 2008-06-24")
    nightly.add_argument("--retrain", action="store_true", help="train and publish again even if this night (or "
                         "one with the same inputs) is already done")
    nightly.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_mlflow()
    config = None
    try:
        config = load_config(args.config, _overrides(args))
        if args.command not in ("serve", "deploy"):
            LakeStore.of(config.lake).check()     # a wrong endpoint or key: one line now, not a trace later
        if _uses_tracking(args):                  # ... and an unwritable or silent tracking store too
            from engine.tracking.client import check_tracking   # imports MLflow: only for commands that log
            check_tracking(config.mlflow.tracking_uri, config.mlflow.experiment, config.mlflow.timeout)
        if args.command == "serve":
            return _run_serve(config, args)
        if args.command == "deploy":
            return _run_deploy(config, args)
        if args.command == "forecasts":
            return _run_pull(config, args)
        if args.command == "nightly":
            return _run_nightly(config, args)     # holds the lake's lock itself
        if args.command == "tune":
            return _run_tune(config, args)        # reads gold, appends its result atomically: no lock
        if args.command == "score" and args.stream:
            return _run_stream(config, args)      # writes only its own tables, idempotently: no lock
        # Every command that writes to the lake holds its lock (one writer at a time).
        with LakeLease(config.lake, f"manymodels {args.command} '{config.name}'", config.nightly.lock_timeout,
                       config.nightly.lease_ttl):
            if args.command == "train":
                return _run_train(config, args)
            if args.command == "score":
                return _run_score(config, args)
            return _run_ingest(config, args, title="ingest")[1]
    except ManymodelsError as exc:      # each error class carries its exit code (engine.errors.Exit)
        print(f"{'busy' if isinstance(exc, LakeBusy) else 'error'}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: Delta commits are atomic, so rerun the same command to finish", file=sys.stderr)
        return Exit.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug or an outage: one line here, the trace in a file
        log = _write_trace(config)
        cause = root_cause(exc)    # the innermost error says what went wrong; the outer ones only where
        print(f"error: {args.command} failed: {type(cause).__name__}: {first_line(cause)} "
              f"(full trace in {log}); rerun the same command to finish once the cause is fixed", file=sys.stderr)
        return Exit.FAILED


def _uses_tracking(args) -> bool:
    if args.command in ("nightly", "tune", "score"):
        return True
    return args.command == "train" and not args.no_mlflow


def _overrides(args) -> dict:
    """Config keys set by command-line flags (validated with the rest of the config)."""
    flags = {"max_evals": "tuning.max_evals", "parallelism": "tuning.parallelism", "sample": "tuning.sample",
             "model": "tuning.models"}
    return {key: getattr(args, flag) for flag, key in flags.items() if getattr(args, flag, None) is not None}


def _run_tune(config, args) -> int:
    from engine.tuning.job import tune

    backend = args.backend or config.backend
    print(f"manymodels tune '{config.name}': lake {config.lake.root}, backend {backend}, metric "
          f"{config.backtest.metric}, up to {config.tuning.max_evals} trials per model", flush=True)
    report = tune(config, backend=backend, show_progress=not args.no_progress,
                  say=lambda line: print(line, flush=True))
    print(report.summary())
    return Exit.OK


def _write_trace(config) -> str:
    """The trace goes into the lake (`_manymodels/logs/`), on whatever store it is; into the local
    temp folder when there is no config or the store cannot take it (an outage)."""
    import tempfile
    import traceback
    trace, name = traceback.format_exc(), f"error-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    if config is not None:
        try:
            return LakeStore.of(config.lake).put_object(f"_manymodels/logs/{name}", trace.encode())
        except Exception:  # noqa: BLE001 - the store is what failed: keep the trace locally
            pass
    path = Path(tempfile.gettempdir()) / name
    path.write_text(trace)
    return str(path)


def _quiet_mlflow() -> None:
    """MLflow's INFO lines and download bars would drown the job's own progress and summary."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")   # read when mlflow is imported


def _run_ingest(config, args, title: str, as_of=None):
    from engine.backends import backend_for
    from engine.medallion.pipeline import ingest

    started, backend = time.perf_counter(), args.backend or config.backend
    print(f"manymodels {title} '{config.name}': lake {config.lake.root}, backend {backend}"
          + (f", as of {as_of.isoformat()}" if as_of is not None else ""), flush=True)
    report = ingest(config, backend_for(config, backend), progress=lambda msg: print(f"  {msg}", flush=True),
                    rebuild=getattr(args, "rebuild", False), as_of=as_of)
    print(f"summary: {report.gold.get('entities', 0)} entities, {report.gold.get('rows', 0)} gold rows, "
          f"gold version {report.gold_version}, "
          + ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
          + f", total {time.perf_counter() - started:.1f}s"
          + "".join(f", {n} {kind.replace('_', ' ')}" for kind, n in report.edge_counts().items() if n))
    for rej in report.rejected:
        print(f"rejected{' (new)' if rej['new'] else ''}: {rej['file']}: {rej['reason']}", file=sys.stderr)
    if report.rejected:
        print(f"error: {len(report.rejected)} batch(es) rejected; their raw rows are in bronze "
              "(see bronze/_rejected_batches). Fix or remove the file(s) and rerun.", file=sys.stderr)
        return report, Exit.REJECTED
    return report, 0


def _run_nightly(config, args) -> int:
    from engine.analyst.pull import utc_timestamp
    from engine.nightly.job import run_night

    as_of = utc_timestamp(args.as_of, "--as-of")
    report = run_night(config, ConsoleStages(config, args), as_of=as_of, retrain=args.retrain)
    print(report.summary())
    if report.exit_code:
        print(f"error: {report.rejected} input batch(es) rejected (their raw rows are in bronze, see "
              "bronze/_rejected_batches); the night ran on the accepted data", file=sys.stderr)
    return report.exit_code


class ConsoleStages:
    """The nightly stages as the CLI runs them: progress bars and a few lines per stage."""

    def __init__(self, config, args):
        self.config, self.args = config, args

    def say(self, line: str) -> None:
        print(line, flush=True)

    def ingest(self, as_of):
        report, code = _run_ingest(self.config, self.args, title="nightly", as_of=as_of)
        return report, len(report.rejected) if code else 0

    def train(self, run_id: str, gold_version: int, as_of):
        self.args.run_id = run_id
        return _train(self.config, self.args, gold_version=gold_version, as_of=as_of)

    def publish(self, run_id: str, train_seconds: dict):
        return _run_publish(self.config, run_id, train_seconds, self.args)

    def score(self, as_of):
        return _score(self.config, self.args, as_of=as_of)


def _run_train(config, args) -> int:
    report = _train(config, args)
    if not args.no_mlflow:
        _run_publish(config, report.run_id, report.seconds, args)
    return Exit.OK


def _train(config, args, gold_version=None, as_of=None):
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
                       run_id=getattr(args, "run_id", None), progress=progress, as_of=as_of)
    finally:
        for b in bar:
            b.close()
    print(training_summary(report))
    return report


def _run_publish(config, run_id: str, train_seconds: dict, args):
    from tqdm import tqdm

    from engine.tracking.publish import publish

    bars = []

    def progress(total: int):
        bars.append(tqdm(total=total, unit="run", desc="mlflow child runs",
                         disable=getattr(args, "no_progress", False)))
        return bars[0].update

    try:
        result = publish(config, run_id, train_seconds=train_seconds, backend=args.backend or config.backend,
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
    if args.once:
        raise ConfigError("--once applies to --stream (score the requests there now, then stop)")
    _score(config, args)
    return Exit.OK


def _run_stream(config, args) -> int:
    from engine.scoring.stream import score_stream

    if args.entity:
        raise ConfigError("--entity applies to batch scoring; a stream scores the entities its request rows name")
    settings = config.streaming
    print(f"manymodels score --stream '{config.name}': requests {settings.requests} -> forecasts "
          f"{settings.forecasts}, rejects {settings.rejects} (lake {config.lake.root}; checkpoint "
          f"{settings.checkpoint}){'' if args.once else f', every {settings.trigger_seconds:g}s until Ctrl-C'}",
          flush=True)
    report = score_stream(config, model_uri=args.model_uri, once=args.once,
                          echo=lambda line: print(f"  {line}", flush=True))
    print(f"stream: {report.batches} micro-batches, {report.scored} rows scored, {report.rejected} rejected "
          f"(with their reasons in {settings.rejects}) in {report.seconds:.1f}s")
    return Exit.OK


def _score(config, args, as_of=None):
    from engine.scoring.batch import score

    backend = args.backend or config.backend
    report = score(config, model_uri=getattr(args, "model_uri", None), entities=getattr(args, "entity", None),
                   backend=backend, as_of=as_of)
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
    for warning in pulled.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    origins = frame.groupby("entity_id")["forecast_origin"].first()
    print(f"wrote {args.output}: {frame['entity_id'].nunique()} entities, {len(frame)} forecast rows "
          f"({int(frame['y'].notna().sum())} with actuals), origin "
          + (origins.iloc[0].isoformat() if origins.nunique() == 1 else
             f"{origins.min().isoformat()} .. {origins.max().isoformat()}"))
    return Exit.OK


def _run_deploy(config, args) -> int:
    from engine.deploy import DeployOptions, resource_name, write_deployment
    from engine.tracking.client import prepared_uri

    if args.replicas < 1:
        raise ConfigError("--replicas must be at least 1")
    options = DeployOptions(image=args.image or f"{resource_name(config)}-router:latest",
                            nightly_image=args.nightly_image or "manymodels:latest", namespace=args.namespace,
                            replicas=args.replicas, schedule=args.schedule)
    written = write_deployment(config, args.config, Path(args.output), options, args.model_uri,
                               prepared_uri(config.mlflow.tracking_uri))
    print("wrote " + ", ".join(map(str, written)))
    print(f"next: docker build -t {options.image} {written[0].parent} && docker push {options.image}; "
          f"kubectl create secret generic {resource_name(config)}-credentials --from-env-file=<file> "
          f"(storage keys, tracking credentials); kubectl apply -f {written[2].parent}")
    return Exit.OK


def _run_serve(config, args) -> int:
    """Replace this process with MLflow's scoring server (signals and exit codes are its own)."""
    from engine.scoring.batch import champion_uri, check_model
    from engine.tracking.client import prepared_uri

    from engine.routing import server

    server.check_host(args.host, args.allow_remote)
    if args.max_body_mb <= 0 or args.max_rows < 1:
        raise ConfigError("--max-body-mb and --max-rows must be positive")
    model_uri = args.model_uri or champion_uri(config)
    check_model(config, model_uri)
    env = dict(os.environ, MLFLOW_TRACKING_URI=prepared_uri(config.mlflow.tracking_uri),
               **{server.MODEL_ENV: model_uri, server.MAX_BYTES_ENV: str(int(args.max_body_mb * 2 ** 20)),
                  server.MAX_ROWS_ENV: str(args.max_rows)})
    if args.token_file:
        env[server.TOKEN_FILE_ENV] = str(Path(args.token_file).resolve())
    token = server.read_token(env)  # an unreadable or empty token file: one line now
    print(f"serving {model_uri} on http://{args.host}:{args.port}/invocations (health: /ping; "
          f"{'bearer token required' if token else 'no authentication'}); Ctrl-C stops", flush=True)
    command = server.serve_command(args.host, args.port, args.workers)
    sys.stderr.flush()
    os.execve(sys.executable, command, env)
    return Exit.OK   # not reached


def training_summary(report) -> str:
    """The end-of-job lines a person reads: what ran, what won, what failed, how fast."""
    statuses = report.statuses
    lines = [f"run {report.run_id} on gold version {report.gold_version}: {report.plan.describe()}",
             f"entities: {report.entities} ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))})",
             "champions: " + ", ".join(f"{k} {v}" for k, v in report.champions.most_common()),
             f"time: train {report.seconds['train']:.1f}s ({report.entities_per_second:.2f} entities/s), "
             f"total {report.seconds['total']:.1f}s; rows written: "
             + ", ".join(f"{t} {n}" for t, n in report.written.items())]
    coverage = report.coverage()
    if coverage:
        lines.append("interval coverage in backtests (champions): "
                     + ", ".join(f"{lvl}% -> {100 * c:.1f}%" for lvl, c in coverage.items()))
    lines += [tree.describe() for tree in report.hierarchy]
    if report.tuning_run:
        lines.append(f"hyperparameters: tuning run {report.tuning_run} (training.tuned_params)")
    if report.global_nn:
        net = report.global_nn
        lines.append(f"global_nn: network {net.digest} trained on {net.samples:,} samples by {net.world_size} "
                     f"process(es) on {net.device}, loss {net.losses[0]:.4f} -> {net.losses[-1]:.4f}, "
                     f"{net.samples_per_second:,.0f} samples/s, {net.seconds:.1f}s")
    if report.global_nn_error:
        lines.append(f"global_nn: not trained ({report.global_nn_error}); the other candidates were selected from")
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
