"""After training: the parent run, a child run per entity, the routing model and the gate.

Reads the run's rows back from gold.models (the published record, not the in-memory
results), so a run can be (re)published from the lake alone: `publish(config, run_id)`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import engine
from engine.config import Config
from engine.errors import ConfigError
from engine.faults import crash_point
from engine.lake import GOLD_SERIES, DeltaRsLake
from engine.routing.bundle import write_bundle
from engine.routing.pyfunc import log_routing_model
from engine.tracking.children import child_runs, flat_params, log_child_runs
from engine.tracking.registry import GateDecision, gate
from engine.tracking.client import experiment_id, log_batch, open_client
from engine.training.entity import FAILED, OK
from engine.training.global_stage import read_global
from engine.training.tables import MODELS

SEARCH_PAGE = 50_000     # MLflow's largest search page
FINISHED = RunStatus.to_string(RunStatus.FINISHED)
ROLE_TAG = "manymodels.kind"                # parent | global_model (entity runs carry entity_id)
PUBLISHED = "manymodels.published"          # set (to the models digest) just before the parent finishes
VERSION_TAG = "manymodels.model_version"    # the routing model version this parent registered
LOGGED_TAG = "manymodels.parent_logged"     # the parent's params, figures and tables are in


@dataclass
class PublishReport:
    parent_run_id: str
    experiment_id: str
    children: int
    model_uri: str
    version: str
    decision: GateDecision
    seconds: dict[str, float] = field(default_factory=dict)
    already: bool = False      # an earlier attempt had published these models: nothing was logged

    @property
    def children_per_second(self) -> float:
        return self.children / max(self.seconds.get("children", 0.0), 1e-9)


def aggregate_metric(models: pd.DataFrame, metric: str, missing: float = float("inf")) -> float:
    """Mean `metric` of each entity's champion as published (`scores`: conformal bands are judged on
    held-out windows), over entities trained normally; rows written before `scores` existed read
    the champion's backtest metrics. `missing` when no entity has it."""
    values = []
    for row in models[models["status"] == OK].itertuples():
        scores = json.loads(row.scores) if isinstance(getattr(row, "scores", None), str) else None
        value = (scores or json.loads(row.metrics or "{}").get(row.champion, {})).get(metric)
        if value is not None and np.isfinite(value):
            values.append(value)
    return float(np.mean(values)) if values else missing


def publish(config: Config, run_id: str, train_seconds: Optional[dict[str, float]] = None,
            backend: Optional[str] = None, progress: Optional[Callable[[int], Callable[[int], None]]] = None
            ) -> PublishReport:
    """Log run `run_id` of gold.models to MLflow and register its routing model.

    Idempotent across crashes at any point: an attempt that did not finish is resumed (its
    parent run, model version and finished child runs are reused, half-logged children
    replaced), and a run already published for the same models is returned as it stands. The
    parent is FINISHED only once every child run and the gate are done."""
    timings, started = {}, time.perf_counter()
    lake = DeltaRsLake(config.lake)
    if not lake.exists(MODELS):
        raise ConfigError(f"no gold/models table under {config.lake.root}: run `manymodels train` first")
    models = lake.read(MODELS, filters=[("run_id", "=", run_id)]).sort_values("entity_id", ignore_index=True)
    if models.empty:
        raise ConfigError(f"run {run_id} has no rows in gold/models")
    client = open_client(config.mlflow.tracking_uri)
    uri = client.tracking_uri
    experiment = experiment_id(client, config.mlflow.experiment)
    metric, name = config.backtest.metric, config.mlflow.registered_model
    aggregate = aggregate_metric(models, metric)
    digest = models_digest(models, config)

    earlier = parent_runs(client, experiment, run_id)
    done = [r for r in earlier if r.info.status == FINISHED and r.data.tags.get(PUBLISHED) == digest]
    if done:
        return _report_of(client, done[0], experiment, name, time.perf_counter() - started)
    parent = _resume(client, earlier, digest)
    resumed = parent is not None
    if parent is None:
        parent = client.create_run(experiment, tags=_parent_tags(config, models, run_id, backend, digest),
                                   run_name=parent_run_name(config.name, run_id)).info.run_id
    try:
        if LOGGED_TAG not in client.get_run(parent).data.tags:   # log_table appends: once per parent
            _log_parent(client, parent, config, models, aggregate, train_seconds or {})
            client.set_tag(parent, LOGGED_TAG, "true")
        network = read_global(config, run_id)
        if network is not None and not (resumed and _children(client, experiment, parent, kind="global_model")):
            _log_global_network(client, experiment, parent, network)
        timings["parent"] = time.perf_counter() - started

        t0 = time.perf_counter()
        version = _registered_version(client, name, parent)
        if version is None:
            crash_point("before-register")
            version = _register(config, models, run_id, parent)
        client.set_tag(parent, VERSION_TAG, version)
        crash_point("after-register")
        timings["register"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        runs = child_runs(models, parent, run_id) if config.mlflow.child_runs else []
        if resumed:      # only an earlier attempt can have logged some (a fresh parent skips two searches)
            runs = _not_logged(client, experiment, parent, runs)
        if runs:
            log_child_runs(uri, experiment, runs, config.mlflow.log_workers, progress(len(runs)) if progress else None)
        logged = len(_children(client, experiment, parent)) if resumed and config.mlflow.child_runs else len(runs)
        timings["children"] = time.perf_counter() - t0

        # The gate last: the champion alias only ever moves to a version whose children are all logged.
        decision = _decision_of(client.get_run(parent), client, name, version)
        if decision is None:
            decision = gate(client, name, version, metric, aggregate, config.mlflow.promotion_tolerance,
                            backtest_windows(config))
            _log_decision(client, parent, decision)
        crash_point("after-alias")
        _log_figures(client, parent, {"mlflow.child_runs": logged,
                                      "mlflow.child_runs_per_second": len(runs) / max(timings["children"], 1e-9),
                                      **{f"seconds.publish_{k}": v for k, v in timings.items()}})
        client.set_tag(parent, PUBLISHED, digest)
        client.set_terminated(parent, RunStatus.to_string(RunStatus.FINISHED))
    except BaseException:
        client.set_terminated(parent, RunStatus.to_string(RunStatus.FAILED))
        raise
    timings["total"] = time.perf_counter() - started
    return PublishReport(parent, experiment, logged, f"models:/{name}/{version}", version, decision, timings)


def parent_run_name(name: str, run_id: str) -> str:
    """The night's run id (it starts with the job's name) or `<name>-<run id>` for a train run."""
    return run_id if run_id.startswith(f"{name}-") else f"{name}-{run_id}"


def models_digest(models: pd.DataFrame, config: Config) -> str:
    """What a publish is a function of: the run's rows of gold.models (a retrained run differs)
    and the settings of what is logged and served."""
    columns = ["entity_id", "status", "champion", "forecast_origin", "params", "metrics", "model"]
    hashed = pd.util.hash_pandas_object(models[columns].astype({"model": object}), index=False)
    digest = hashlib.sha256(hashed.to_numpy().tobytes())
    logged = {k: v for k, v in dataclasses.asdict(config.mlflow).items() if k not in ("timeout", "log_workers")}
    digest.update(json.dumps([logged, dataclasses.asdict(config.routing),
                              config.series.freq, config.horizon, list(config.training.levels)],
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def parent_runs(client: MlflowClient, experiment: str, run_id: str) -> list:
    """Every parent run logged for engine run `run_id`, newest first."""
    return client.search_runs([experiment], filter_string=f"tags.`manymodels.run_id` = '{run_id}' and "
                              f"tags.`{ROLE_TAG}` = 'parent'", order_by=["attributes.start_time DESC"],
                              max_results=SEARCH_PAGE)


def _resume(client: MlflowClient, earlier: list, digest: str) -> Optional[str]:
    """The unfinished attempt for these models to carry on with (RUNNING again); attempts for
    other models (a retrained run) are marked KILLED: superseded, never promoted."""
    resumed = None
    for run in earlier:
        if run.data.tags.get(PUBLISHED) is not None:
            continue                                    # a finished publish of other models: history
        if resumed is None and run.data.tags.get("manymodels.models_digest") == digest:
            resumed = run.info.run_id
            client.update_run(resumed, status="RUNNING")
        elif run.info.status != RunStatus.to_string(RunStatus.KILLED):
            client.set_tag(run.info.run_id, "manymodels.superseded", "true")
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
    return resumed


def _registered_version(client: MlflowClient, name: str, parent: str) -> Optional[str]:
    """The version an earlier attempt of this parent registered (a crash may have come before
    the parent was tagged with it)."""
    tagged = client.get_run(parent).data.tags.get(VERSION_TAG)
    if tagged:
        return tagged
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{parent}'")
    except MlflowException:
        return None
    return str(max(int(v.version) for v in versions)) if versions else None


def _register(config: Config, models: pd.DataFrame, run_id: str, parent: str) -> str:
    with tempfile.TemporaryDirectory(prefix="manymodels-bundle-") as tmp:
        folder = Path(tmp) / "bundle"
        write_bundle(models, folder, run_id=run_id, freq=config.series.freq, levels=tuple(config.training.levels),
                     horizon=config.horizon, max_steps=config.routing.max_steps,
                     shard_size=config.routing.shard_size, exogenous_order=config.source.exogenous)
        mlflow.start_run(run_id=parent)
        try:
            info = log_routing_model(folder, config.routing.cache_size,
                                     registered_model_name=config.mlflow.registered_model)
        finally:
            # Leave the parent RUNNING: `with start_run` would mark it FINISHED here, before
            # its children and the gate.
            mlflow.end_run(status="RUNNING")
    return str(info.registered_model_version)


def _children(client: MlflowClient, experiment: str, parent: str, kind: Optional[str] = None) -> list:
    query = f"tags.mlflow.parentRunId = '{parent}'"
    if kind:
        query += f" and tags.`{ROLE_TAG}` = '{kind}'"
    runs, token = [], None
    while True:
        page = client.search_runs([experiment], filter_string=query, max_results=SEARCH_PAGE, page_token=token)
        runs += page
        token = page.token
        if not token:
            return [r for r in runs if kind or r.data.tags.get(ROLE_TAG) != "global_model"]


def _not_logged(client: MlflowClient, experiment: str, parent: str, runs: list) -> list:
    """The entity runs an earlier attempt did not finish; its half-logged ones are deleted."""
    finished = set()
    for run in _children(client, experiment, parent):
        if run.info.status == FINISHED:
            finished.add(run.data.tags.get("entity_id"))
        else:
            client.delete_run(run.info.run_id)
    return [r for r in runs if r.tags["entity_id"] not in finished]


def _decision_of(run, client: MlflowClient, name: str, version: str) -> Optional[GateDecision]:
    """The gate decision an earlier attempt recorded for `version` (None: not gated yet)."""
    tags, data = client.get_model_version(name, version).tags, run.data
    if "manymodels.gate" not in tags or data.tags.get("gate.version") != version:
        return None
    champion = data.tags.get("gate.champion_version")
    return GateDecision(version, data.tags["gate.decision"] == "promoted", data.params.get("gate.metric", ""),
                        data.metrics.get("gate.challenger", float("nan")),
                        None if champion in (None, "none") else champion, data.metrics.get("gate.champion"),
                        float(data.params.get("gate.tolerance", "nan")), data.tags.get("gate.reason", ""))


def _report_of(client: MlflowClient, run, experiment: str, name: str, seconds: float) -> PublishReport:
    """A publish that had already finished, as it was recorded."""
    version = run.data.tags[VERSION_TAG]
    decision = _decision_of(run, client, name, version)
    return PublishReport(run.info.run_id, experiment, int(run.data.metrics.get("mlflow.child_runs", 0)),
                         f"models:/{name}/{version}", version, decision, {"children": 0.0, "total": seconds},
                         already=True)


def _parent_tags(config: Config, models: pd.DataFrame, run_id: str, backend: Optional[str],
                 digest: str) -> dict[str, str]:
    tags = {"manymodels.run_id": run_id, "manymodels.version": engine.__version__, ROLE_TAG: "parent",
            "manymodels.models_digest": digest,
            "manymodels.gold_table": DeltaRsLake(config.lake).path(GOLD_SERIES),
            "manymodels.gold_version": str(int(models["gold_version"].iloc[0])),
            "manymodels.backend": backend or config.backend, "manymodels.config_name": config.name}
    tuning = {json.loads(p or "{}").get("tuning_run") for p in models["params"]} - {None}
    if tuning:
        tags["manymodels.tuning_run"] = ",".join(sorted(tuning))
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(engine.__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _log_parent(client: MlflowClient, parent: str, config: Config, models: pd.DataFrame, aggregate: float,
                train_seconds: dict[str, float]) -> None:
    params = [Param(k, v) for k, v in flat_params(dataclasses.asdict(config)).items()]
    statuses = models["status"].value_counts()
    figures = {"entities": len(models), **{f"status.{s}": int(n) for s, n in statuses.items()},
               **{f"champions.{c}": int(n) for c, n in models["champion"].dropna().value_counts().items()},
               f"aggregate.{config.backtest.metric}": aggregate,
               **{f"coverage.{lvl}": aggregate_metric(models, f"coverage_{lvl}", float("nan"))
                  for lvl in config.training.levels},
               "fit_seconds.total": float(models["fit_seconds"].sum()),
               **{f"seconds.{k}": float(v) for k, v in train_seconds.items()}}
    log_batch(client, parent, params=params)
    _log_figures(client, parent, figures)
    summary = models[["entity_id", "status", "champion", "reason", "error", "n_obs", "fit_seconds", "attempt"]]
    client.log_table(parent, data=summary, artifact_file="entities.json")
    client.log_table(parent, data=summary[summary["status"] == FAILED], artifact_file="failures.json")
    client.log_dict(parent, dataclasses.asdict(config), "config.json")


def _log_global_network(client: MlflowClient, experiment: str, parent: str, network: pd.Series) -> None:
    """A child run for the panel-wide network: its shape and settings, loss per epoch, throughput,
    and the network itself (the weights every entity that chose it carries)."""
    run = client.create_run(experiment, run_name=f"{network['model']}-{network['digest']}",
                            tags={"mlflow.parentRunId": parent, ROLE_TAG: "global_model",
                                  "manymodels.network": network["digest"], "device": network["device"]}).info.run_id
    params = {**flat_params(json.loads(network["shape"]), "shape."),
              **flat_params(json.loads(network["settings"]), "training.")}
    now = int(time.time() * 1000)
    losses = json.loads(network["losses"])
    metrics = [Metric("loss", float(v), now, epoch) for epoch, v in enumerate(losses)]
    metrics += [Metric(k, float(network[k]), now, 0)
                for k in ("samples", "world_size", "samples_per_second", "seconds")]
    log_batch(client, run, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    client.log_dict(run, json.loads(network["network"]), "network.json")
    client.set_terminated(run, RunStatus.to_string(RunStatus.FINISHED))


def _log_decision(client: MlflowClient, parent: str, decision: GateDecision) -> None:
    figures = {"gate.challenger": decision.challenger_value, "gate.promoted": float(decision.promoted)}
    if decision.champion_value is not None:
        figures["gate.champion"] = decision.champion_value
    tags = [RunTag("gate.decision", "promoted" if decision.promoted else "rejected"),
            RunTag("gate.reason", decision.reason), RunTag("gate.version", str(decision.version)),
            RunTag("gate.champion_version", str(decision.champion_version or "none"))]
    log_batch(client, parent, params=[Param("gate.tolerance", str(decision.tolerance)),
                                      Param("gate.metric", decision.metric)], tags=tags)
    _log_figures(client, parent, figures)


def _log_figures(client: MlflowClient, parent: str, figures: dict[str, float]) -> None:
    now = int(time.time() * 1000)
    log_batch(client, parent, metrics=[Metric(k, float(v), now, 0) for k, v in figures.items()])


def backtest_windows(config) -> str:
    """What a version's aggregate figure was measured on: the backtest windows and how they were
    scored (imputed hours left out since scoring 2). The gate compares only equal ones."""
    b = config.backtest
    return (f"horizon {config.horizon}; windows {b.windows}, step {b.step}; years {b.years}; "
            f"refit {b.refit_every}; select {b.select}; scoring 2")
