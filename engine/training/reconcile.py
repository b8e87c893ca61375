"""The training stage's reconciliation: each declared tree's forecasts made to add up, in place.

After every entity is trained on its own, the entities of `hierarchy.parents` are gathered on
the driver (their result rows only), each tree is reconciled (engine.hierarchy: the method chosen
by the champions' backtests), and their result rows are rewritten: the forecast becomes the
reconciled one (bounds moved with the mean, floored at zero for nonnegative series, a
`reconciliation` column naming the method), and the model's envelope records the same
adjustment, so the routing model serves exactly what gold.forecasts publishes.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from engine.backends.base import Backend
from engine.config import Config
from engine.hierarchy import Backtest, Reconciled, Tree, incoherence, reconcile
from engine.models.base import read_envelope, write_envelope
from engine.training.entity import OK, forecast_frame, forecast_json
from engine.training.tasks import TASK_RESULT_SCHEMA

NODE_SCHEMA = pa.schema([("entity_id", pa.string()), ("status", pa.string()), ("forecast", pa.string()),
                         ("model", pa.binary()), ("paths", pa.string()), ("scores", pa.string())])
# A window's bands: level -> (nodes, 2, steps), each node's lower and upper bound; OBSERVED -> (nodes,
# steps), the steps its scores counted.
Bands = dict[int, np.ndarray]
OBSERVED = -1


@dataclass
class TreeReport:
    root: str
    nodes: list[str]                      # the tree's entities, aggregates top down, then the bottom
    method: str = ""                      # empty: not reconciled (`skipped` says why)
    scores: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    note: str = ""
    skipped: str = ""
    gap: Optional[float] = None           # the history's largest parent-to-children gap (engine.hierarchy.incoherence)
    coverage: dict[int, tuple[float, float]] = field(default_factory=dict)    # level -> (own bands, reconciled)

    @property
    def entities(self) -> int:
        return len(self.nodes)

    def describe(self) -> str:
        if self.skipped:
            return f"hierarchy {self.root} ({self.entities} entities): not reconciled, {self.skipped}"
        scores = ", ".join(f"{m} {s:.3f}" for m, s in sorted(self.scores.items(), key=lambda kv: kv[1]))
        line = f"hierarchy {self.root} ({self.entities} entities): reconciled by {self.method}"
        line += f" (backtest RMSE relative to unreconciled: {scores})" if scores else f" ({self.note})"
        if self.gap is not None:
            line += f"; its history adds up to within {self.gap:.2%}"
        if self.coverage:
            line += "; interval coverage in backtests, own -> reconciled: " + ", ".join(
                f"{lvl}% {100 * own:.1f}% -> {100 * moved:.1f}%" for lvl, (own, moved) in self.coverage.items())
        # Why a listed method is not among the scores (too large a tree, too few windows, below zero).
        return line + "".join(f"; {method} out: {why}" for method, why in self.failures.items() if scores)


def reconcile_results(runner: Backend, results, config: Config) -> tuple[Any, list[TreeReport]]:
    """`results` (TASK_RESULT_SCHEMA rows) with every tree of the config's hierarchy reconciled."""
    tree = config.hierarchy.tree
    wanted = set(tree.nodes)

    def nodes_only(batch: pd.DataFrame) -> pd.DataFrame:
        return batch.loc[batch["entity_id"].isin(wanted), NODE_SCHEMA.names]

    rows = runner.to_pandas(runner.map_batches(results, nodes_only, NODE_SCHEMA)).set_index("entity_id")
    replaced: dict[str, dict[str, Any]] = {}     # entity -> its result's new forecast, model and scores
    reports = [_reconcile_tree(tree, root, rows, config, replaced) for root in tree.roots()]
    # Each entity's notes in gold.models say what became of its tree: recorded as data, where an
    # analyst looks for why an entity's forecast was or was not made to add up.
    noted = {node: report.describe() for report in reports for node in report.nodes if node in rows.index}

    def rewritten(batch: pd.DataFrame) -> pd.DataFrame:
        hit = batch["entity_id"].isin(noted.keys())
        if not hit.any():
            return batch
        batch = batch.copy()
        batch.loc[hit, "notes"] = [json.dumps([*json.loads(notes or "[]"), noted[e]])
                                   for e, notes in zip(batch.loc[hit, "entity_id"], batch.loc[hit, "notes"])]
        hit = batch["entity_id"].isin(replaced.keys())
        for column in ("forecast", "model", "scores") if hit.any() else ():
            batch.loc[hit, column] = pd.Series([replaced[e][column] for e in batch.loc[hit, "entity_id"]],
                                               index=batch.index[hit], dtype=object)
        return batch

    return runner.map_batches(results, rewritten, TASK_RESULT_SCHEMA), reports


def _reconcile_tree(tree: Tree, root: str, rows: pd.DataFrame, config: Config,
                    replaced: dict[str, dict[str, Any]]) -> TreeReport:
    summing = tree.summing(root)
    report = TreeReport(root, summing.nodes)
    unusable = [n for n in summing.nodes if n not in rows.index or rows.loc[n, "status"] != OK
                or not isinstance(rows.loc[n, "forecast"], str)]
    if unusable:
        report.skipped = (f"{len(unusable)} of its entities have no backtested forecast "
                          f"({', '.join(unusable[:5])}{' ...' if len(unusable) > 5 else ''}); each keeps its own")
        return report
    frames = [forecast_frame(rows.loc[n]) for n in summing.nodes]
    if any(not f["ds"].equals(frames[0]["ds"]) for f in frames):
        report.skipped = "its entities' forecasts do not cover the same timestamps (different training ends)"
        return report
    base = np.vstack([f["yhat"].to_numpy() for f in frames])
    windows, bands = _common_windows(rows, summing.nodes, base.shape[1])
    gaps = incoherence(summing, windows)
    report.gap = max(gaps.values(), default=None)
    if report.gap is not None and report.gap > config.hierarchy.tolerance:
        worst = max(gaps, key=gaps.get)
        report.skipped = (f"its history does not add up: {worst} is {report.gap:.1%} away from the sum of the "
                          f"{len(tree.leaves(worst))} entities under it over {len(windows)} backtest window(s) "
                          f"(hierarchy.tolerance: {config.hierarchy.tolerance:.1%}); each entity keeps its own "
                          "forecast. Check hierarchy.parents, or add what the children lack (losses, unmetered "
                          "load) as an entity under it")
        return report
    envelopes = [read_envelope(rows.loc[n, "model"]) for n in summing.nodes]
    nonnegative = all(e.get("floor") is not None for e in envelopes)
    result = reconcile(summing, base, windows, config.hierarchy.methods, nonnegative)
    report.method, report.scores, report.failures, report.note = (result.method, result.scores, result.failures,
                                                                  result.note or "")
    floors = np.array([-np.inf if e.get("floor") is None else e["floor"] for e in envelopes], dtype="float64")
    coverage = band_coverage(windows, bands, result.held_out, floors)
    report.coverage = {lvl: (float(np.nanmean(c[0])), float(np.nanmean(c[1]))) for lvl, c in coverage.items()
                       if np.isfinite(c).all(axis=0).any()}
    for i, node in enumerate(summing.nodes):
        forecast, model = _adjusted(frames[i], envelopes[i], result, result.mean[i] - base[i])
        replaced[node] = {"forecast": forecast, "model": model, "scores": _rescored(rows.loc[node, "scores"],
                                                                                     coverage, i)}
    return report


def _rescored(scores: str, coverage: dict[int, np.ndarray], node: int) -> str:
    """A node's scores with each level's coverage that of its bands as published (reconciled);
    its own bands' as `unreconciled_coverage_<level>`. Scores are what was published, as judged."""
    out = json.loads(scores) if isinstance(scores, str) else {}
    for level, shares in coverage.items():
        if np.isfinite(shares[1, node]):
            key = f"coverage_{level}"
            out[f"unreconciled_{key}"] = out.get(key, float(shares[0, node]))
            out[key] = float(shares[1, node])
    return json.dumps(out)


def _common_windows(rows: pd.DataFrame, nodes: list[str], horizon: int) -> tuple[list[Backtest], list[Bands]]:
    """The backtest windows every node has (by origin), as node x step arrays, and each window's
    bands as scored (the levels every node kept; none from results stored before they were kept),
    with the steps its scores counted (imputed hours are not) under OBSERVED."""
    paths = [json.loads(rows.loc[n, "paths"]) if isinstance(rows.loc[n, "paths"], str) else None for n in nodes]
    if any(p is None for p in paths):
        return [], []
    origins = sorted(set.intersection(*(set(p["origins"]) for p in paths)))
    levels = set.intersection(*(set(p.get("bands", {})) for p in paths))
    windows, bands = [], []
    for origin in origins:
        at = [p["origins"].index(origin) for p in paths]
        forecast = np.array([p["forecast"][i] for p, i in zip(paths, at)], dtype="float64")
        actual = np.array([p["actual"][i] for p, i in zip(paths, at)], dtype="float64")
        if forecast.shape[1] == horizon:
            windows.append(Backtest(forecast, actual))
            masks = [(p.get("observed") or [None] * len(p["origins"]))[i] for p, i in zip(paths, at)]
            observed = np.array([np.ones(horizon, bool) if m is None else m for m in masks], dtype=bool)
            bands.append({OBSERVED: observed & np.isfinite(actual), **{
                int(lvl): np.array([p["bands"][lvl][i] for p, i in zip(paths, at)], dtype="float64")
                for lvl in levels}})
    return windows, bands


def band_coverage(windows: list[Backtest], bands: list[Bands], reconciled: list[np.ndarray],
                  floors: np.ndarray) -> dict[int, np.ndarray]:
    """Each level's coverage in the backtest windows of the tree's bands as each entity scored them
    (row 0) and of the same bands moved with the reconciled mean, floored where the entity is, as
    they are published (row 1): per entity, each window's share of its observed steps, averaged over
    the windows that have one (as its scores average them; NaN without any)."""
    levels = sorted(level for level in (bands[0] if bands else {}) if level != OBSERVED)
    if not levels or not reconciled:
        return {}
    out = {}
    for level in levels:
        shares = []
        for window, band, mean in zip(windows, bands, reconciled):
            actual, observed = window.actual, band[OBSERVED]
            lower, upper = band[level][:, 0], band[level][:, 1]
            delta = mean - window.forecast
            moved = (np.maximum(lower + delta, floors[:, None]), np.maximum(upper + delta, floors[:, None]))
            hits = np.array([((actual >= lo) & (actual <= hi) & observed).sum(axis=1)
                             for lo, hi in ((lower, upper), moved)])
            count = observed.sum(axis=1)
            shares.append(np.divide(hits, count, out=np.full_like(hits, np.nan, dtype="float64"), where=count > 0))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)      # an entity with no observed step: NaN
            out[level] = np.nanmean(np.stack(shares), axis=0)
    return out


def _adjusted(frame: pd.DataFrame, envelope: dict, result: Reconciled, delta: np.ndarray) -> tuple[str, bytes]:
    """The node's forecast JSON and model bytes with the reconciliation's `delta` applied."""
    floor = envelope.get("floor")
    out = frame.copy()
    for column in (c for c in frame.columns if c.startswith("yhat")):
        values = frame[column].to_numpy() + delta
        out[column] = np.maximum(values, floor) if floor is not None else values
    out["reconciliation"] = result.method
    envelope = {**envelope, "adjustment": {"method": result.method, "delta": delta.tolist()}}
    return forecast_json({c: out[c] for c in out.columns if c != "ds"}, out["ds"]), write_envelope(envelope)
