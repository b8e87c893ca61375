"""One MLflow child run per entity, logged in bulk from the driver.

The bulk path (engine/tracking/bulk.py, MLflow's plugin points) writes `BULK_CHUNK` finished
runs per database transaction: straight into a database tracking store, or through a tracking
server that runs the app plugin (`mlflow server --app-name manymodels`). Without the plugin (a
server without it, a file store, an MLflow the plugin was not verified with) each child costs
three ordinary requests: `create_run` (with every tag), one `log_batch` (all params and metrics)
and `set_terminated`; against a server those fan out over threads (the client only waits on
sockets), against a local store they run one after another (sqlite has one write lock, and
parallel writers were measured slower: benchmarks/mlflow_logging.py).
"""
from __future__ import annotations

import functools
import itertools
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Optional

import pandas as pd

from engine.faults import crash_point
from engine.tracking.bulk import BulkRefused, ChildRun, plugin_uri, post_finished_runs
from engine.tracking.client import log_batch, open_client, prepared_uri

CHUNK = 20           # runs per thread task on the ordinary path
BULK_CHUNK = 500     # runs per transaction on the bulk path (a few MB of rows, one request)
_LOGGED = itertools.count(1)
THREADS_PER_WORKER = 4
_NO_BULK: dict[str, str] = {}     # tracking URI -> why the bulk path is off for it in this process


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
    params.update(flat_params(json.loads(row.params or "{}")))
    candidates = json.loads(row.metrics or "{}")
    metrics = {"fit_seconds": float(row.fit_seconds)}
    for candidate, values in candidates.items():
        metrics.update({f"{candidate}.{k}": v for k, v in _numbers(values).items()})
    # The champion's figures unprefixed: as published where the row has scores (conformal bands judged
    # on held-out windows, a hierarchy's reconciled coverage), else as its backtest had them.
    scores = getattr(row, "scores", None)
    published = json.loads(scores) if isinstance(scores, str) else {}
    metrics.update(_numbers({**candidates.get(row.champion, {}), **published}))
    return ChildRun(str(row.entity_id), tags, params, metrics)


def _numbers(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def flat_params(data: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow params: dotted keys, JSON for non-strings, at most 6000 chars
    (MLflow's limit); an empty mapping is logged as ``{}``."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = (value if isinstance(value, str) else json.dumps(value))[:6000]
    return flat


def log_child_runs(uri: str, experiment_id: str, runs: list[ChildRun], workers: int = 0,
                   tick: Optional[Callable[[int], None]] = None, bulk: bool = True) -> list[str]:
    """Log `runs` as finished child runs; returns their MLflow run ids in order. `bulk`: through
    the plugin where the store allows it (else, or when it is refused, the ordinary way)."""
    ids: list[str] = []
    logger = _bulk_logger(uri) if bulk else None
    if logger is not None:
        chunks = [runs[i:i + BULK_CHUNK] for i in range(0, len(runs), BULK_CHUNK)]
        # A server's workers and database take chunks in parallel; a local file takes one writer.
        threads = 1 if is_local_store(uri) else max(1, workers or os.cpu_count() or 1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                logged = [logger(experiment_id, chunks[0])] if chunks else []     # a refusal shows here
                for chunk, chunk_ids in zip(chunks, itertools.chain(
                        logged, pool.map(functools.partial(logger, experiment_id), chunks[1:]))):
                    ids += chunk_ids
                    for _ in chunk:
                        crash_point("child-run", next(_LOGGED))     # children logged, the parent not finished
                    if tick:
                        tick(len(chunk))
            return ids
        except BulkRefused as exc:
            _NO_BULK[uri] = str(exc)
            print(f"warning: child runs are logged the ordinary way (about 30 per second): {exc}", file=sys.stderr)
    return ids + _log_ordinary(uri, experiment_id, runs[len(ids):], workers, tick)


def _bulk_logger(uri: str) -> Optional[Callable[[str, list[ChildRun]], list[str]]]:
    if uri in _NO_BULK:
        return None
    if uri.startswith(("http://", "https://")):
        return functools.partial(post_finished_runs, uri)
    bulk = plugin_uri(uri)
    if bulk is None:
        return None
    prepared_uri(uri)      # the sqlite file's folder and WAL mode
    from mlflow.tracking._tracking_service.utils import _get_store   # MLflow's registry resolves the plugin
    store = _get_store(bulk)
    return store.log_finished_runs


def _log_ordinary(uri: str, experiment_id: str, runs: list[ChildRun], workers: int,
                  tick: Optional[Callable[[int], None]]) -> list[str]:
    chunks = [runs[i:i + CHUNK] for i in range(0, len(runs), CHUNK)]
    workers = workers or os.cpu_count() or 1
    if is_local_store(uri) or workers <= 1 or len(chunks) <= 1:
        ids = []
        for chunk in chunks:
            ids += _log_chunk(uri, experiment_id, chunk)
            if tick:
                tick(len(chunk))
        return ids
    with ThreadPoolExecutor(workers * THREADS_PER_WORKER) as pool:
        futures = [pool.submit(_log_chunk, uri, experiment_id, chunk) for chunk in chunks]
        ids = []
        for future, chunk in zip(futures, chunks):
            ids += future.result()
            if tick:
                tick(len(chunk))
    return ids


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def _log_chunk(uri: str, experiment_id: str, runs: Iterable[ChildRun]) -> list[str]:
    from mlflow.entities import Metric, Param, RunStatus
    client = open_client(uri, fluent=False)   # cheap: stores are cached per URI by MLflow
    ids = []
    for run in runs:
        now = int(time.time() * 1000)
        created = client.create_run(experiment_id, start_time=now, tags=run.tags, run_name=run.name)
        run_id = created.info.run_id
        metrics = [Metric(k, v, now, 0) for k, v in run.metrics.items()]   # MLflow stores inf/NaN itself
        params = [Param(k, v) for k, v in run.params.items()]
        log_batch(client, run_id, metrics=metrics, params=params)
        crash_point("child-run", next(_LOGGED))     # a child logged but not finished
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED), end_time=now)
        ids.append(run_id)
    return ids
