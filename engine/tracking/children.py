"""One MLflow child run per entity, logged in bulk from the driver.

Each child costs three tracking requests whatever its size: `create_run` (with every tag),
one `log_batch` (all params and metrics) and `update_run` (finished). MLflow's stores spend
most of that time in Python (SQLAlchemy), so children are fanned out over workers: processes
for a file-backed sqlite store (one GIL each; WAL lets their commits interleave), threads for
a tracking server (the work is on the server, the client waits on sockets).
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Callable, Iterable, Optional

import pandas as pd

# Below this many children a pool costs more to start than it saves.
POOL_MIN_CHILDREN = 200
CHUNK = 100


@dataclass(frozen=True)
class ChildRun:
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


def child_runs(models: pd.DataFrame, parent_id: str, engine_run_id: str) -> list[ChildRun]:
    """What each entity's child run holds, from its gold.models row (pure)."""
    return [_child(row, parent_id, engine_run_id) for row in models.itertuples(index=False)]


def _child(row, parent_id: str, engine_run_id: str) -> ChildRun:
    tags = {"mlflow.parentRunId": parent_id, "mlflow.runName": str(row.entity_id), "entity_id": str(row.entity_id),
            "champion": str(row.champion or "none"), "status": str(row.status),
            "manymodels.run_id": engine_run_id}
    if isinstance(row.reason, str):
        tags["reason"] = row.reason[:5000]
    if isinstance(row.error, str):
        tags["error"] = row.error[:5000]
    params = {"champion": str(row.champion or "none"), "n_obs": str(row.n_obs), "windows": str(row.windows)}
    params.update(_flatten(json.loads(row.params or "{}")))
    metrics = {"fit_seconds": float(row.fit_seconds)}
    candidates = json.loads(row.metrics or "{}")
    for candidate, values in candidates.items():
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[f"{candidate}.{key}"] = float(value)
    for key, value in candidates.get(row.champion, {}).items():   # the champion's figures, unprefixed
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[key] = float(value)
    return ChildRun(str(row.entity_id), tags, params, metrics)


def _flatten(params: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            flat[f"{prefix}{key}"] = text[:6000]   # MLflow's param value limit
    return flat


def log_child_runs(uri: str, experiment_id: str, runs: list[ChildRun], workers: int = 0,
                   tick: Optional[Callable[[int], None]] = None) -> list[str]:
    """Log `runs` as finished child runs; returns their MLflow run ids in order."""
    if not runs:
        return []
    chunks = [runs[i:i + CHUNK] for i in range(0, len(runs), CHUNK)]
    workers = min(workers or os.cpu_count() or 1, len(chunks))
    if workers <= 1 or len(runs) < POOL_MIN_CHILDREN:
        ids = []
        for chunk in chunks:
            ids += _log_chunk(uri, experiment_id, chunk)
            if tick:
                tick(len(chunk))
        return ids
    if _is_local_store(uri):
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    else:
        pool = ThreadPoolExecutor(workers * 4)
    with pool:
        futures = [pool.submit(_log_chunk, uri, experiment_id, chunk) for chunk in chunks]
        ids = []
        for future, chunk in zip(futures, chunks):
            ids += future.result()
            if tick:
                tick(len(chunk))
    return ids


def _is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or "://" not in uri or uri.startswith("file:")


_CLIENTS: dict[str, object] = {}


def _log_chunk(uri: str, experiment_id: str, runs: Iterable[ChildRun]) -> list[str]:
    from mlflow.entities import Metric, Param, RunStatus
    from mlflow.tracking import MlflowClient

    client = _CLIENTS.get(uri) or _CLIENTS.setdefault(uri, MlflowClient(uri))
    ids = []
    for run in runs:
        now = int(time.time() * 1000)
        created = client.create_run(experiment_id, start_time=now, tags=run.tags, run_name=run.name)
        run_id = created.info.run_id
        metrics = [Metric(k, v, now, 0) for k, v in run.metrics.items()]   # MLflow stores inf/NaN itself
        client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in run.params.items()])
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED), end_time=now)
        ids.append(run_id)
    return ids
