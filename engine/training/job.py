"""The training stage: gold.series (version V) -> plan -> backend -> gold.backtests/models/forecasts.

Reads the gold table once, plans tasks with `partitions`, runs the pure per-entity function
through the chosen backend, enforces `max_failure_rate`, and writes the three output tables
with run-keyed MERGEs. Nothing is written when too many entities failed.
"""
from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Optional

import numpy as np
import pandas as pd

from engine.backends import backend_for
from engine.backends.base import Backend
from engine.config import Config
from engine.errors import ConfigError, Exit, ManymodelsError
from engine.faults import crash_point
from engine.lake import DeltaRsLake, latest_gold_version, observed_before
from engine.models import model_costs
from engine.training.entity import FAILED, OK, TrainSpec
from engine.training.reconcile import TreeReport, reconcile_results
from engine.training.global_stage import GLOBAL_NN, GlobalReport, TooLittleHistory, train_global_nn
from engine.training.tables import BACKTESTS, FORECASTS, KEYS, MODELS, RunContext
from engine.training.tasks import plain_ids
from engine.training.tuned_params import tuned_params
from partitions.plan import PartitionPlan, plan_partitions

SUMMARY_COLUMNS = ["entity_id", "status", "champion", "reason", "error", "n_obs", "fit_seconds", "attempt",
                   "forecast_origin", "scores"]


class TrainingFailed(ManymodelsError):
    """More entities failed than `max_failure_rate` allows."""

    exit_code = Exit.TRAINING_FAILED


@dataclass
class TrainReport:
    run_id: str
    gold_version: int
    backend: str
    plan: PartitionPlan
    summary: pd.DataFrame                       # one row per entity, SUMMARY_COLUMNS
    written: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    tuning_run: Optional[str] = None            # the `manymodels tune` run whose parameters were used
    global_nn: Optional[GlobalReport] = None    # the panel-wide network, when global_nn is a candidate
    global_nn_error: Optional[str] = None       # why it could not be trained (the candidate then fails)
    hierarchy: list[TreeReport] = field(default_factory=list)    # each reconciled tree (hierarchy.parents)

    @property
    def entities(self) -> int:
        return len(self.summary)

    @property
    def statuses(self) -> Counter:
        return Counter(self.summary["status"])

    @property
    def champions(self) -> Counter:
        return Counter(self.summary["champion"].dropna())

    @property
    def failures(self) -> pd.DataFrame:
        return self.summary[self.summary["status"] == FAILED]

    @property
    def retried(self) -> int:
        return int((self.summary["attempt"] > 0).sum())

    @property
    def origin(self) -> Optional[str]:
        """The latest forecast origin of the run (ISO), None when nothing was forecast."""
        origins = pd.to_datetime(self.summary["forecast_origin"], utc=True).dropna()
        return origins.max().isoformat() if len(origins) else None

    def coverage(self) -> dict[int, float]:
        """Each interval level's empirical coverage in the champions' backtests, over the entities
        trained normally (nominal: the level itself)."""
        scores = [json.loads(s) for s in self.summary.loc[self.summary["status"] == OK, "scores"]]
        levels = sorted({int(k.split("_")[1]) for score in scores for k in score if k.startswith("coverage_")})
        return {lvl: float(np.mean(values)) for lvl in levels
                if (values := [sc[f"coverage_{lvl}"] for sc in scores if f"coverage_{lvl}" in sc])}

    @property
    def entities_per_second(self) -> float:
        return self.entities / max(self.seconds.get("train", 0.0), 1e-9)


def train(config: Config, backend: Optional[str] = None, gold_version: Optional[int] = None,
          run_id: Optional[str] = None, progress: Optional[Callable[[int, int], Callable[[int], None]]] = None,
          spark=None, as_of: Optional[pd.Timestamp] = None) -> TrainReport:
    """Train every entity of gold.series; `progress(total, tasks)` returns a per-entity tick.
    With `as_of`, only gold rows before it are seen (a replayed night)."""
    run_id = run_id or uuid.uuid4().hex
    tuned = tuned_params(config)
    spec = TrainSpec.from_config(config, tuned.params if tuned else None, tuned.run_id if tuned else None)
    lake = DeltaRsLake(config.lake)
    latest = latest_gold_version(lake)
    version = latest if gold_version is None else gold_version
    if not 0 <= version <= latest:
        raise ConfigError(f"--gold-version {version} does not exist; gold.series has versions 0..{latest}")
    timings: dict[str, float] = {}
    started = time.perf_counter()

    runner = backend_for(config, backend, spark)
    gold = observed_before(runner.read_gold(version), as_of)
    extents = runner.extents(gold)
    config.check_against_data(dict(zip(extents["entity_id"], extents["rows"])))
    global_report = global_error = None
    if GLOBAL_NN in spec.models:
        t0 = time.perf_counter()
        columns = ["entity_id", "ds", "y", *(c for c in spec.model.exogenous if c in gold.columns)]
        frame = plain_ids(runner.to_pandas(runner.select(gold, columns)))
        try:
            net, global_report = train_global_nn(config, frame, spec, run_id)
            spec = dataclasses.replace(spec, trained={GLOBAL_NN: net})
        except TooLittleHistory as exc:
            # Like a candidate failing for an entity: every entity's global_nn backtest records why.
            global_error = str(exc)
            spec = dataclasses.replace(spec, trained={GLOBAL_NN: {"unavailable": global_error}})
        timings["global_nn"] = time.perf_counter() - t0
    plan = plan_partitions(dict(zip(extents["entity_id"], extents["observed"])),
                           strategy=config.partitions.strategy, cores=runner.cores,
                           tasks_per_core=config.partitions.tasks_per_core, models=model_costs(spec.models),
                           fits_per_model=spec.windows + spec.years + 1, max_history=spec.max_history,
                           recorded=_recorded_costs(lake))
    timings["plan"] = time.perf_counter() - started

    tick = _crash_point_on(progress(len(plan.assignment), plan.buckets) if progress else None)
    planned = tag_with_plan(runner, gold, extents, plan, spec)
    t0 = time.perf_counter()
    results = runner.train(planned, plan, spec, tick)
    timings["train"] = time.perf_counter() - t0

    summary = runner.to_pandas(runner.select(results, SUMMARY_COLUMNS)).sort_values("entity_id", ignore_index=True)
    try:
        _check_failures(summary, config.max_failure_rate)
    except TrainingFailed:
        runner.release(results)
        raise

    trained, trees = results, []        # the backend's frame, released once written
    if config.hierarchy.parents:
        t0 = time.perf_counter()
        results, trees = reconcile_results(runner, trained, config)
        if any(tree.coverage for tree in trees):    # the scores of the bands as published, reconciled
            summary = runner.to_pandas(runner.select(results, SUMMARY_COLUMNS)).sort_values("entity_id",
                                                                                             ignore_index=True)
        timings["reconcile"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    context = RunContext(run_id, version, spec.model.levels, datetime.now(timezone.utc))
    written = {}
    for table in (BACKTESTS, MODELS, FORECASTS):
        schema = context.schema(table)
        rows = runner.map_batches(results, context.rows(table), schema)
        crash_point(f"before-write:{table}")
        written[table] = runner.lake.replace_run(table, rows, schema, KEYS[table], run_id)
        crash_point(f"after-write:{table}")
    runner.release(trained)
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    return TrainReport(run_id, version, runner.name, plan, summary, written, timings, tuned.run_id if tuned else None,
                       global_report, global_error, trees)


def _crash_point_on(tick: Optional[Callable[[int], None]]) -> Callable[[int], None]:
    """The progress tick, plus the `training` crash point once an entity has finished."""
    def ticked(done: int) -> None:
        if tick:
            tick(done)
        crash_point("training")
    return ticked


def tag_with_plan(runner: Backend, gold, extents: pd.DataFrame, plan: PartitionPlan, spec: TrainSpec):
    """Gold rows tagged with their bucket, cut to the history the pure function will use
    (the last `max_history` observed steps plus any rows after them), so less data moves."""
    mapping = extents.assign(bucket=extents["entity_id"].map(plan.assignment).astype("int32"),
                             cutoff=spec.model.frequency.add(extents["last_observed"], 1 - spec.max_history))
    return runner.tag_with_plan(gold, mapping[["entity_id", "bucket", "cutoff"]])


def _recorded_costs(lake: DeltaRsLake) -> Optional[dict[str, tuple[int, float]]]:
    """`(n_obs, fit_seconds)` per entity from the most recent run in gold.models, if any."""
    if not lake.exists(MODELS):
        return None
    # Two narrow reads: gold.models holds a row per entity per night, so reading every night's
    # entity ids to keep one night's grows with the lake's age.
    runs = lake.read(MODELS, columns=["run_id", "trained_at"])
    if runs.empty:
        return None
    last = runs.loc[runs["trained_at"].idxmax(), "run_id"]
    latest = lake.read(MODELS, columns=["entity_id", "n_obs", "fit_seconds"], filters=[("run_id", "=", last)])
    return dict(zip(latest["entity_id"], zip(latest["n_obs"].astype(int).tolist(),
                                              latest["fit_seconds"].astype(float).tolist())))


def _check_failures(summary: pd.DataFrame, max_rate: float) -> None:
    failed = summary[summary["status"] == FAILED]
    if len(summary) and len(failed) / len(summary) > max_rate:
        listing = "\n".join(f"  {r.entity_id}: {r.error}" for r in failed.head(20).itertuples())
        more = f"\n  ... and {len(failed) - 20} more" if len(failed) > 20 else ""
        raise TrainingFailed(f"{len(failed)} of {len(summary)} entities failed ({len(failed) / len(summary):.1%}), "
                             f"more than max_failure_rate {max_rate:.1%}; nothing was published:\n{listing}{more}")
