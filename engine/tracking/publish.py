"""After training: the parent run, a child run per entity, the routing model and the gate.

Reads the run's rows back from gold.models (the published record, not the in-memory
results), so a run can be (re)published from the lake alone: `publish(config, run_id)`.
"""
from __future__ import annotations

import dataclasses
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
from mlflow.tracking import MlflowClient

import engine
from engine.config import Config
from engine.errors import ConfigError
from engine.lake import GOLD_SERIES, DeltaRsLake
from engine.routing.bundle import write_bundle
from engine.routing.pyfunc import log_routing_model
from engine.tracking.children import MAX_PARAMS, child_runs, flat_params, log_child_runs
from engine.tracking.registry import GateDecision, gate
from engine.tracking.store import experiment_id, prepared_uri
from engine.training.entity import FAILED, OK
from engine.training.global_stage import read_global
from engine.training.tables import MODELS


@dataclass
class PublishReport:
    parent_run_id: str
    experiment_id: str
    children: int
    model_uri: str
    version: str
    decision: GateDecision
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def children_per_second(self) -> float:
        return self.children / max(self.seconds.get("children", 0.0), 1e-9)


def aggregate_metric(models: pd.DataFrame, metric: str) -> float:
    """Mean backtest `metric` of each entity's champion, over entities trained normally."""
    values = []
    for row in models[models["status"] == OK].itertuples():
        value = json.loads(row.metrics or "{}").get(row.champion, {}).get(metric)
        if value is not None and np.isfinite(value):
            values.append(value)
    return float(np.mean(values)) if values else float("inf")


def publish(config: Config, run_id: str, train_seconds: Optional[dict[str, float]] = None,
            backend: Optional[str] = None, progress: Optional[Callable[[int], Callable[[int], None]]] = None
            ) -> PublishReport:
    """Log run `run_id` of gold.models to MLflow and register its routing model."""
    timings, started = {}, time.perf_counter()
    lake = DeltaRsLake(config.lake)
    if not lake.exists(MODELS):
        raise ConfigError(f"no gold/models table under {config.lake.root}: run `manymodels train` first")
    models = lake.read(MODELS, filters=[("run_id", "=", run_id)]).sort_values("entity_id", ignore_index=True)
    if models.empty:
        raise ConfigError(f"run {run_id} has no rows in gold/models")
    uri = prepared_uri(config.mlflow.tracking_uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = experiment_id(client, config.mlflow.experiment)
    metric = config.backtest.metric
    aggregate = aggregate_metric(models, metric)

    _end_abandoned(client, experiment, run_id)
    parent = client.create_run(experiment, tags=_parent_tags(config, models, run_id, backend),
                               run_name=f"{config.name}-{run_id[:8]}").info.run_id
    try:
        _log_parent(client, parent, config, models, aggregate, train_seconds or {})
        network = read_global(config, run_id)
        if network is not None:
            _log_global_network(client, experiment, parent, network)
        timings["parent"] = time.perf_counter() - started

        # The model first: it is what scoring waits for; child runs of many entities take longer.
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="manymodels-bundle-") as tmp:
            folder = Path(tmp) / "bundle"
            write_bundle(models, folder, run_id=run_id, freq=config.series.freq, levels=tuple(config.training.levels),
                         horizon=config.horizon, max_steps=config.routing.max_steps,
                         shard_size=config.routing.shard_size)
            with mlflow.start_run(run_id=parent):
                info = log_routing_model(folder, config.routing.cache_size,
                                         registered_model_name=config.mlflow.registered_model)
        version = str(info.registered_model_version)
        decision = gate(client, config.mlflow.registered_model, version, metric, aggregate,
                        config.mlflow.promotion_tolerance)
        _log_decision(client, parent, decision)
        timings["register"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        runs = child_runs(models, parent, run_id) if config.mlflow.child_runs else []
        if runs:
            log_child_runs(uri, experiment, runs, config.mlflow.log_workers, progress(len(runs)) if progress else None)
        timings["children"] = time.perf_counter() - t0
        _log_figures(client, parent, {"mlflow.child_runs": len(runs),
                                      "mlflow.child_runs_per_second": len(runs) / max(timings["children"], 1e-9),
                                      **{f"seconds.publish_{k}": v for k, v in timings.items()}})
        client.set_terminated(parent, RunStatus.to_string(RunStatus.FINISHED))
    except BaseException:
        client.set_terminated(parent, RunStatus.to_string(RunStatus.FAILED))
        raise
    timings["total"] = time.perf_counter() - started
    return PublishReport(parent, experiment, len(runs), f"models:/{config.mlflow.registered_model}/{version}",
                         version, decision, timings)


def _end_abandoned(client: MlflowClient, experiment: str, run_id: str) -> None:
    """Mark KILLED the parent runs of `run_id` that a crashed earlier attempt left RUNNING."""
    for run in client.search_runs([experiment], filter_string=f"tags.`manymodels.run_id` = '{run_id}' "
                                  "and attributes.status = 'RUNNING'"):
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))


def _parent_tags(config: Config, models: pd.DataFrame, run_id: str, backend: Optional[str]) -> dict[str, str]:
    tags = {"manymodels.run_id": run_id, "manymodels.version": engine.__version__,
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
               "fit_seconds.total": float(models["fit_seconds"].sum()),
               **{f"seconds.{k}": float(v) for k, v in train_seconds.items()}}
    for i in range(0, len(params), MAX_PARAMS):
        client.log_batch(parent, params=params[i:i + MAX_PARAMS])
    _log_figures(client, parent, figures)
    summary = models[["entity_id", "status", "champion", "reason", "error", "n_obs", "fit_seconds", "attempt"]]
    client.log_table(parent, data=summary, artifact_file="entities.json")
    client.log_table(parent, data=summary[summary["status"] == FAILED], artifact_file="failures.json")
    client.log_dict(parent, dataclasses.asdict(config), "config.json")


def _log_global_network(client: MlflowClient, experiment: str, parent: str, network: pd.Series) -> None:
    """A child run for the panel-wide network: its shape and settings, loss per epoch, throughput,
    and the network itself (the weights every entity that chose it carries)."""
    run = client.create_run(experiment, run_name=f"{network['model']}-{network['digest']}",
                            tags={"mlflow.parentRunId": parent, "manymodels.kind": "global_model",
                                  "manymodels.network": network["digest"], "device": network["device"]}).info.run_id
    params = {**flat_params(json.loads(network["shape"]), "shape."),
              **flat_params(json.loads(network["settings"]), "training.")}
    now = int(time.time() * 1000)
    losses = json.loads(network["losses"])
    metrics = [Metric("loss", float(v), now, epoch) for epoch, v in enumerate(losses)]
    metrics += [Metric(k, float(network[k]), now, 0)
                for k in ("samples", "world_size", "samples_per_second", "seconds")]
    client.log_batch(run, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    client.log_dict(run, json.loads(network["network"]), "network.json")
    client.set_terminated(run, RunStatus.to_string(RunStatus.FINISHED))


def _log_decision(client: MlflowClient, parent: str, decision: GateDecision) -> None:
    figures = {"gate.challenger": decision.challenger_value, "gate.promoted": float(decision.promoted)}
    if decision.champion_value is not None:
        figures["gate.champion"] = decision.champion_value
    tags = [RunTag("gate.decision", "promoted" if decision.promoted else "rejected"),
            RunTag("gate.reason", decision.reason), RunTag("gate.version", str(decision.version)),
            RunTag("gate.champion_version", str(decision.champion_version or "none"))]
    client.log_batch(parent, params=[Param("gate.tolerance", str(decision.tolerance)),
                                     Param("gate.metric", decision.metric)], tags=tags)
    _log_figures(client, parent, figures)


def _log_figures(client: MlflowClient, parent: str, figures: dict[str, float]) -> None:
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in figures.items()])
