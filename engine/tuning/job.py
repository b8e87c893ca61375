"""`manymodels tune`: a hyperopt TPE search per model over a sample of entities.

Flow: gold.series -> a seeded, stratified sample of entities (engine.tuning.sample) -> per
model: its configured parameters as the baseline trial, then TPE trials, each scored by the
mean backtest metric over the sample (engine.tuning.search.sample_loss). On the spark backend
trials run as Spark tasks through hyperopt's `SparkTrials(parallelism=...)`, the sample's rows
shipped once as a broadcast; elsewhere they run one after another with local `Trials`.

MLflow gets one tuning parent run, a child run per model and a grandchild per trial (params,
loss, duration, status), logged in bulk from the driver. The best parameters per model go to
`_manymodels/tuning` (and `tuned_params.json` on the parent run), which the next training run
reads (training.tuned_params). The lake lock is not held: the search only reads gold, and the
result is one atomic Delta append.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from engine.backends import backend_for
from engine.backends.base import Backend
from engine.config import Config
from engine.errors import ConfigError
from engine.lake import GOLD_SERIES, DeltaRsLake, latest_gold_version
from engine.models.space import Dimension, hyperopt_space, model_space, point_params
from engine.tracking.children import flat_params
from engine.tracking.client import experiment_id, log_batch, open_client
from engine.training import tuned_params as store
from engine.training.entity import TrainSpec
from engine.training.search import configured_params, quiet_hyperopt, run_fmin, stop_without_improvement
from engine.tuning.sample import entity_stats, stratified_sample
from engine.tuning.search import sample_folds, sample_loss


@dataclass
class Trial:
    number: int                 # 0 is the configured parameters
    params: dict[str, Any]
    status: str                 # ok | failed
    loss: Optional[float]
    error: Optional[str]
    started: float              # epoch seconds
    seconds: float


@dataclass
class ModelTuning:
    model: str
    dims: tuple[Dimension, ...]
    trials: list[Trial]
    stopped: str
    seconds: float
    search_seconds: float = 0.0   # in hyperopt's fmin: the trials after trial 0, run `parallelism` at a time
    mlflow_run_id: str = ""

    @property
    def trials_per_minute(self) -> float:
        """Throughput of the parallel part (trial 0 runs alone before it)."""
        return (len(self.trials) - 1) / max(self.search_seconds / 60, 1e-9) if self.search_seconds else 0.0

    @property
    def ok(self) -> list[Trial]:
        return [t for t in self.trials if t.status == "ok"]

    @property
    def best(self) -> Optional[Trial]:
        return min(self.ok, key=lambda t: (t.loss, t.number), default=None)

    @property
    def default_loss(self) -> Optional[float]:
        return self.trials[0].loss if self.trials and self.trials[0].status == "ok" else None

    @property
    def failed(self) -> int:
        return sum(t.status != "ok" for t in self.trials)

    @property
    def improvement(self) -> Optional[float]:
        """Fraction by which the best loss is below the configured parameters' loss."""
        if self.best is None or not self.default_loss:
            return None
        return (self.default_loss - self.best.loss) / self.default_loss


@dataclass
class TuneReport:
    run_id: str                 # the MLflow tuning parent run, also the id in _manymodels/tuning
    experiment_id: str
    metric: str
    runner: str
    entities: list[str]
    models: list[ModelTuning]
    gold_version: int
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"tuning summary: run {self.run_id}, {len(self.entities)} sampled entities, {self.runner}, "
                 f"{self.seconds.get('total', 0):.0f}s; mean backtest {self.metric} per model "
                 "(configured -> best):"]
        for m in self.models:
            best = m.best
            gain = f" ({m.improvement:+.1%} better)" if m.improvement is not None else ""
            default = f"{m.default_loss:.4g}" if m.default_loss is not None else "failed"
            chosen = (", ".join(f"{k}={_short(best.params[k])}" for k in (d.name for d in m.dims))
                      if best else "none (every trial failed)")
            per_min = m.trials_per_minute
            lines.append(f"  {m.model}: {default} -> {best.loss:.4g}{gain}" if best else f"  {m.model}: {default}")
            lines[-1] += (f"; {len(m.trials)} trials ({m.failed} failed, {per_min:.1f}/min, stopped: {m.stopped}); "
                          f"chosen {chosen}")
        if any(m.best is not None for m in self.models):
            lines.append(f"tuned parameters written to {store.TUNING} (run {self.run_id}); the next `manymodels "
                         "train` uses them (training.tuned_params: latest)")
        else:
            lines.append("no trial succeeded: nothing was written; the configured parameters stay in use")
        return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def tune(config: Config, backend: Optional[str] = None, show_progress: bool = True,
         say: Callable[[str], None] = print, spark=None) -> TuneReport:
    """Search the space of each model in `config.tuned_models` and record the best parameters."""
    quiet_hyperopt()
    # pyspark warns once per SparkTrials thread that it was given no session to copy job tags from.
    warnings.filterwarnings("ignore", message="Spark session is not provided")
    started = time.perf_counter()
    models = config.tuned_models
    if not models:
        raise ConfigError("nothing to tune: none of the configured models has hyperparameters "
                          "(list some in tuning.models)")
    spec = TrainSpec.from_config(config)      # configured parameters only: the baseline
    spaces = {m: model_space(m, config.tuning.space.get(m)) for m in models}
    runner = backend_for(config, backend, spark)
    rows, gold_version = _sample_rows(config, spec, runner)
    entities = sorted(rows)
    say(f"  sample: {len(entities)} entities ({', '.join(entities[:8])}{', ...' if len(entities) > 8 else ''}), "
        f"gold version {gold_version}")
    data = runner.share(rows)
    parallelism = runner.search_parallelism(config.tuning.parallelism)
    trials_by = runner.describe_trials(parallelism)

    client = open_client(config.mlflow.tracking_uri)
    experiment = experiment_id(client, config.mlflow.experiment)
    parent = client.create_run(experiment, run_name=f"tune-{config.name}", tags={
        "manymodels.kind": "tuning", "manymodels.config_name": config.name,
        "manymodels.gold_version": str(gold_version), "manymodels.tuning_runner": trials_by}).info.run_id
    results: list[ModelTuning] = []
    try:
        log_batch(client, parent, params=_params({
            "tuning.models": ",".join(models), "tuning.sample": config.tuning.sample, "tuning.seed": config.tuning.seed,
            "tuning.max_evals": config.tuning.max_evals, "tuning.timeout": config.tuning.timeout,
            "tuning.trial_timeout": config.tuning.trial_timeout, "tuning.early_stop": config.tuning.early_stop,
            "tuning.parallelism": parallelism, "backtest.metric": config.backtest.metric,
            "entities": json.dumps(entities)}))
        deadline = started + config.tuning.timeout if config.tuning.timeout else None
        for model in models:
            left = None if deadline is None else deadline - time.perf_counter()
            say(f"  tuning {model}: {', '.join(f'{d.name} {d.describe()}' for d in spaces[model])}")
            tuning = _search(model, spaces[model], data, spec, config, runner,
                             parallelism, left, show_progress)
            tuning.mlflow_run_id = _log_model(client, experiment, parent, tuning, config.backtest.metric)
            results.append(tuning)
        tuned = {m.model: m.best.params for m in results if m.best is not None}
        client.log_dict(parent, {"tuning_run_id": parent, "metric": config.backtest.metric, "entities": entities,
                                 "params": tuned}, "tuned_params.json")
        _log_metrics(client, parent, {f"{m.model}.{k}": v for m in results for k, v in _figures(m).items()})
        if tuned:
            store.record(config.lake, _rows(parent, config, results, entities, gold_version))
        client.set_terminated(parent, "FINISHED")
    except BaseException:
        client.set_terminated(parent, "FAILED")
        raise
    finally:
        runner.unshare(data)
    return TuneReport(parent, experiment, config.backtest.metric, trials_by, entities, results, gold_version,
                      {"total": time.perf_counter() - started})


def _sample_rows(config: Config, spec: TrainSpec, runner: Backend) -> tuple[dict[str, pd.DataFrame], int]:
    """The sampled entities' gold rows, by entity (only those a backtest can score)."""
    version = latest_gold_version(DeltaRsLake(config.lake))
    gold = runner.read(GOLD_SERIES, version=version)
    chosen = stratified_sample(entity_stats(runner.extents(gold)), config.tuning.sample, config.tuning.seed,
                               spec.min_length())
    frame = runner.to_pandas(runner.read(GOLD_SERIES, version=version, entities=chosen))
    rows = {str(e): g.reset_index(drop=True) for e, g in frame.groupby("entity_id", sort=True)}
    usable = {e: r for e, r in rows.items() if sample_folds(r, spec) is not None}
    if not usable:
        raise ConfigError("none of the sampled entities can be backtested (constant or too short series)")
    return usable, version


def _objective(model: str, dims, base: dict, data, spec: TrainSpec, trial_timeout: float):
    """The trial function (runs on an executor under SparkTrials): hyperopt point -> result dict."""
    def objective(point: dict) -> dict:
        params = {**base, **point_params(dims, point)}
        rows = data.value if hasattr(data, "value") else data    # a Spark broadcast, or the dict itself
        started = time.time()
        folds = {e: sample_folds(r, spec) for e, r in rows.items()}
        return {**sample_loss(model, params, folds, spec, trial_timeout), "params": params, "started": started}
    return objective


def _search(model: str, dims, data, spec: TrainSpec, config: Config, runner: Backend, parallelism: int,
            time_left: Optional[float], show_progress: bool) -> ModelTuning:
    from hyperopt import STATUS_OK
    started = time.perf_counter()
    if time_left is not None and time_left <= 0:
        return ModelTuning(model, dims, [], "tuning.timeout reached before it started", 0.0)
    base = configured_params(model, dims, spec.hyperparameters.get(model, {}))
    objective = _objective(model, dims, base, data, spec, config.tuning.trial_timeout)
    # Trial 0: the configured parameters, which every later trial has to beat.
    point = {d.name: base[d.name] for d in dims}
    first = runner.run_once(lambda: objective(point))
    trials_run = [_trial(0, first)]
    stopped = "max_evals"
    budget = config.tuning.max_evals - 1
    search_started = time.perf_counter()
    if budget > 0:
        remaining = None if time_left is None else max(1.0, time_left - (time.perf_counter() - started))
        trials = runner.trials(parallelism, remaining)
        run_fmin(objective, hyperopt_space(dims), max_evals=budget, trials=trials,
                 timeout=None if runner.trials_own_timeout else remaining, show_progressbar=show_progress,
                 rstate=np.random.default_rng(config.tuning.seed),
                 early_stop_fn=stop_without_improvement(config.tuning.early_stop) if config.tuning.early_stop
                 else None)
        for number, doc in enumerate(sorted(trials.trials, key=lambda t: t["tid"]), start=1):
            trials_run.append(_trial(number, doc.get("result") or {}, doc))
        done = len(trials.trials)
        if getattr(trials, "_fmin_cancelled_reason", None) or (remaining is not None and
                                                               time.perf_counter() - started >= time_left):
            stopped = "tuning.timeout"
        elif done < budget:
            stopped = f"early stop ({config.tuning.early_stop} trials without improvement)"
    if not any(t.status == STATUS_OK for t in trials_run):
        stopped += "; every trial failed"
    searched = time.perf_counter() - search_started if budget > 0 else 0.0
    return ModelTuning(model, dims, trials_run, stopped, time.perf_counter() - started, searched)


def _trial(number: int, result: dict, doc: Optional[dict] = None) -> Trial:
    """A Trial from a hyperopt result (and its trial document, for trials hyperopt ran)."""
    status = "ok" if result.get("status") == "ok" else "failed"
    error = result.get("error")
    if doc is not None and status == "failed" and not error:
        error = str((doc.get("misc") or {}).get("error") or f"trial ended in state {doc.get('state')}")
    started = result.get("started")
    if started is None and doc is not None and doc.get("book_time"):
        started = doc["book_time"].timestamp()
    return Trial(number, result.get("params", {}), status, result.get("loss"), error, started or time.time(),
                 float(result.get("seconds", 0.0)))


def _figures(m: ModelTuning) -> dict[str, float]:
    figures = {"trials": len(m.trials), "failed_trials": m.failed, "seconds": m.seconds,
               "trials_per_minute": m.trials_per_minute}
    if m.best is not None:
        figures["best_loss"] = m.best.loss
    if m.default_loss is not None:
        figures["default_loss"] = m.default_loss
    if m.improvement is not None:
        figures["improvement"] = m.improvement
    return figures


def _log_model(client, experiment: str, parent: str, m: ModelTuning, metric: str) -> str:
    """The model's child run and one grandchild run per trial, logged from the driver."""
    start = int(min((t.started for t in m.trials), default=time.time()) * 1000)
    run = client.create_run(experiment, start_time=start, run_name=f"tune {m.model}", tags={
        "mlflow.parentRunId": parent, "manymodels.kind": "tuning", "manymodels.model": m.model,
        "stopped": m.stopped[:5000]}).info.run_id
    log_batch(client, run, params=_params({"model": m.model, **{f"space.{d.name}": d.describe() for d in m.dims},
                                          **({f"best.{k}": v for k, v in m.best.params.items()} if m.best else {})}))
    _log_metrics(client, run, _figures(m))
    for t in m.trials:
        trial = client.create_run(experiment, start_time=int(t.started * 1000), run_name=f"{m.model} trial {t.number}",
                                  tags={"mlflow.parentRunId": run, "manymodels.kind": "tuning-trial",
                                        "manymodels.model": m.model, "trial": str(t.number),
                                        "configured": str(t.number == 0).lower(),
                                        **({"error": t.error[:5000]} if t.error else {})}).info.run_id
        figures = {"seconds": t.seconds, **({metric: t.loss, "loss": t.loss} if t.loss is not None else {})}
        log_batch(client, trial, params=_params(t.params))
        _log_metrics(client, trial, figures)
        client.set_terminated(trial, "FINISHED" if t.status == "ok" else "FAILED",
                              end_time=int((t.started + t.seconds) * 1000))
    client.log_table(run, data=pd.DataFrame([{"trial": t.number, "status": t.status, "loss": t.loss,
                                              "seconds": t.seconds, "error": t.error, **t.params}
                                             for t in m.trials]), artifact_file="trials.json")
    client.set_terminated(run, "FINISHED")
    return run


def _params(values: dict) -> list:
    from mlflow.entities import Param
    return [Param(k, v) for k, v in flat_params(values).items()]


def _log_metrics(client, run: str, figures: dict[str, float]) -> None:
    from mlflow.entities import Metric
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in figures.items() if v is not None and np.isfinite(v)]
    log_batch(client, run, metrics=metrics)


def _rows(run_id: str, config: Config, results: list[ModelTuning], entities: list[str],
          gold_version: int) -> pd.DataFrame:
    now = pd.Timestamp.now(tz="UTC")
    return pd.DataFrame([{"tuning_run_id": run_id, "config_name": config.name, "model": m.model,
                          "params": json.dumps(m.best.params, sort_keys=True), "metric": config.backtest.metric,
                          "default_loss": m.default_loss, "best_loss": m.best.loss, "trials": len(m.trials),
                          "failed_trials": m.failed, "entities": json.dumps(entities), "gold_version": gold_version,
                          "finished_at": now} for m in results if m.best is not None],
                        columns=store.SCHEMA.names)
