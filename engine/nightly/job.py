"""The nightly job: ingest -> train -> MLflow (runs, registry gate) -> score, once per night.

A *night* is named by its as-of time (``--as-of``, or the hour after the last observation), and
its run id is derived from it, so every table row a night writes is keyed by the same run id:
rerunning a night replaces its rows instead of adding a second copy. The job holds the lake's
lock throughout and records each finished stage in the ledger; a rerun after a crash skips what
is recorded for the same inputs, once the outputs a record claims are found where it says
(`engine.nightly.verify`), and does the rest. When a night's inputs (gold version, last
observation, config) equal a finished night's, its models are reused (`nightly.reuse_models`).
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import pandas as pd

from engine.config import Config
from engine.errors import Exit, ManymodelsError
from engine.nightly.lease import LakeLease
from engine.nightly.ledger import Inputs, Ledger
from engine.nightly.verify import verified
from engine.training.tables import FORECASTS
from engine.training.tuned_params import tuned_params


class NothingToTrain(ManymodelsError):
    """Gold holds no observation (before the as-of time)."""


class Stages(Protocol):
    """How each stage runs and reports (the CLI prints progress bars and stage summaries)."""

    def ingest(self, as_of: Optional[pd.Timestamp]): ...
    def train(self, run_id: str, gold_version: int, as_of: Optional[pd.Timestamp]): ...
    def publish(self, run_id: str, train_seconds: dict): ...
    def score(self, as_of: Optional[pd.Timestamp]): ...
    def say(self, line: str) -> None: ...


@dataclass
class NightReport:
    run_id: str
    as_of: pd.Timestamp
    inputs: Inputs
    outcome: dict = field(default_factory=dict)      # what the night published (the ledger's "done" detail)
    skipped: list[str] = field(default_factory=list)  # stages already done for these inputs
    reused_from: Optional[str] = None
    rejected: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    edges: dict[str, int] = field(default_factory=dict)   # ingest's edge_rows counts by problem

    @property
    def exit_code(self) -> int:
        return Exit.REJECTED if self.rejected else Exit.OK

    def summary(self) -> str:
        o = self.outcome
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(o.get("statuses", {}).items()))
        champions = ", ".join(f"{k} {v}" for k, v in Counter(o.get("champions", {})).most_common())
        parts = [f"nightly summary: night {self.as_of.isoformat()} run {self.run_id}",
                 f"gold version {self.inputs.gold_version} (data to "
                 f"{self.inputs.data_end.isoformat() if self.inputs.data_end is not None else 'none'})"]
        if self.reused_from:
            parts.append(f"nothing changed since run {self.reused_from}: its models and forecasts stand")
        parts += [f"{o.get('entities', 0)} entities ({statuses})", f"champions {champions or 'none'}",
                  f"{o.get('failed', 0)} failed", f"MLflow parent run {o.get('parent_run_id', 'none')}",
                  f"registry: {o.get('registry', 'no new version')}",
                  f"{o.get('forecast_rows', 0)} forecast rows published (origin {o.get('origin', 'n/a')})"]
        if o.get("scored_run_id"):
            parts.append(f"champion scored {o.get('scored_rows', 0)} rows (run {o['scored_run_id']})")
        if self.skipped:
            parts.append("resumed: " + ", ".join(self.skipped) + " already done")
        if self.rejected:
            parts.append(f"{self.rejected} input batch(es) rejected")
        edges = {k: v for k, v in self.edges.items() if v}
        if edges:
            parts.append("data: " + ", ".join(f"{v} {EDGE_WORDS.get(k, k)}" for k, v in edges.items()))
        parts.append("time " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        return "; ".join(parts)


EDGE_WORDS = {"id_too_long": "id(s) too long (left out of gold)", "no_value": "entity(ies) with no valid value",
              "trailing": "entity(ies) ending in invalid values (origin moved earlier)"}


def night_run_id(name: str, as_of: pd.Timestamp) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{as_of:%Y%m%dT%H%M}Z"


def run_night(config: Config, stages: Stages, as_of: Optional[pd.Timestamp] = None,
              retrain: bool = False) -> NightReport:
    """Run (or finish, or confirm) the night `as_of`; `retrain` ignores recorded stages."""
    started = time.perf_counter()
    with LakeLease(config.lake, f"manymodels nightly '{config.name}'", config.nightly.lock_timeout,
                   config.nightly.lease_ttl) as lease:
        t0 = time.perf_counter()
        ingested, rejected = stages.ingest(as_of)
        seconds = {"ingest": time.perf_counter() - t0}
        if ingested.gold_version is None or ingested.data_end is None:
            raise NothingToTrain("gold holds no observation" + (f" before {as_of.isoformat()}" if as_of else "")
                                 + ": check the source (or pick a later --as-of)")
        night = as_of if as_of is not None else ingested.data_end + pd.tseries.frequencies.to_offset(config.series.freq)
        tuned = tuned_params(config)     # new tuned parameters make new models: part of the inputs
        inputs = Inputs(int(ingested.gold_version), ingested.data_end,
                        config.fingerprint() + (f"+tuned:{tuned.run_id}" if tuned else ""))
        report = NightReport(night_run_id(config.name, night), night, inputs, rejected=rejected, seconds=seconds,
                             edges=ingested.edge_counts())
        ledger = Ledger(config.lake)
        reuse = config.nightly.reuse_models and not retrain
        done = verified(config, report.run_id, ledger.progress(report.run_id, inputs), stages.say) if reuse else {}
        if reuse and "done" not in done:
            earlier = ledger.completed_with(inputs)
            if earlier is not None:
                report.reused_from = earlier["run_id"]
                outcome = json.loads(earlier["detail"])
                report.outcome = {**{k: v for k, v in outcome.items() if k not in ("scored_run_id", "model_uri")},
                                  "forecast_rows": 0, "scored_rows": 0}
                ledger.record(report.run_id, night, "done", inputs, **report.outcome, reused_from=report.reused_from)
                stages.say(f"reuse: gold version, last observation and config are those of run "
                           f"{report.reused_from}: no retraining, nothing new to publish")
        if report.reused_from is None:
            _run_stages(config, stages, ledger, report, done, as_of, lease)
        report.seconds["total"] = time.perf_counter() - started
    return report


def _run_stages(config: Config, stages: Stages, ledger: Ledger, report: NightReport, done: dict,
                as_of: Optional[pd.Timestamp], lease: LakeLease) -> None:
    if "done" in done:
        report.outcome, report.skipped = done["done"], ["every stage"]
        stages.say(f"night {report.as_of.isoformat()} (run {report.run_id}) is already complete for these inputs: "
                   "nothing to do (set nightly.reuse_models: false or pass --retrain to train again)")
        return

    def train() -> dict:
        result = stages.train(report.run_id, report.inputs.gold_version, as_of)
        return {"entities": result.entities, "statuses": dict(result.statuses), "champions": dict(result.champions),
                "failed": len(result.failures), "origin": result.origin,
                "forecast_rows": int(result.written.get(FORECASTS, 0)), "train_seconds": result.seconds,
                "written": {t: int(n) for t, n in result.written.items()}}

    trained = _stage("train", train, done, ledger, report, lease)

    def publish() -> dict:
        result = stages.publish(report.run_id, trained.get("train_seconds", {}))
        return {"parent_run_id": result.parent_run_id, "version": result.version,
                "registry": f"{config.mlflow.registered_model} {result.decision.describe()}"}

    def score() -> dict:
        result = stages.score(as_of)
        return {"scored_rows": result.rows, "scored_run_id": result.run_id, "model_uri": result.model_uri}

    published = _stage("mlflow", publish, done, ledger, report, lease)
    scored = _stage("score", score, done, ledger, report, lease)
    lease.ensure_held()
    report.outcome = {**{k: v for k, v in trained.items() if k not in ("train_seconds", "written")}, **published,
                      **scored}
    ledger.record(report.run_id, report.as_of, "done", report.inputs, **report.outcome)


def _stage(name: str, run: Callable[[], dict], done: dict, ledger: Ledger, report: NightReport,
           lease: LakeLease) -> dict:
    """The stage's recorded detail when the ledger has it for these inputs, else run and record it.
    (The ledger's progress stops at the first missing stage, so a rerun stage reruns all after it.)"""
    if name in done:
        report.skipped.append(name)
        return done[name]
    lease.ensure_held()
    started = time.perf_counter()
    detail = run()
    lease.ensure_held()       # a job that lost the lake records nothing more
    ledger.record(report.run_id, report.as_of, name, report.inputs, **detail)
    report.seconds[name] = time.perf_counter() - started
    return detail
