"""The local backend: pandas frames, Delta through delta-rs (no JVM), tasks in a pool of worker
processes (forked from a warm forkserver) with BLAS on one thread each. `PandasBackend` is the
frame half the Ray backend shares."""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from engine.backends.base import Backend, GroupFn, Shared
from engine.errors import WorkersLost
from engine.lake import BRONZE_META, GOLD_SERIES, PART, PART_KEY, DeltaRsLake, bronze_table, observed_before
from engine.processes import die_with_job
from engine.training.tasks import TASK_RESULT_SCHEMA, Progress, Task, train_bucket
from partitions.plan import PartitionPlan

# A local worker that dies (OOM, killed) breaks the pool: its tasks rerun up to this many times.
LOCAL_MAX_ATTEMPTS = 3


def resolve_cores(workers: int) -> int:
    return workers or os.cpu_count() or 1


class PandasBackend(Backend):
    """pandas frames and Delta through delta-rs, shared by the local and Ray backends (which
    differ in where `train` runs the tasks); other per-entity work runs in this process."""

    def __init__(self, lake, workers: int = 0):
        self.lake = DeltaRsLake(lake)
        self.workers = resolve_cores(workers)

    @classmethod
    def from_config(cls, config, spark=None) -> "PandasBackend":
        return cls(config.lake, config.training.workers)

    def from_pandas(self, frame: pd.DataFrame):
        return frame

    def to_pandas(self, frame) -> pd.DataFrame:
        return frame

    def read(self, table: str, version: Optional[int] = None, entities: Optional[Sequence[str]] = None):
        filters = [("entity_id", "in", list(entities))] if entities is not None else None
        return self.lake.read(table, version=version, filters=filters)

    def read_bronze(self, dataset: str, exclude_batches: Sequence[str]) -> pd.DataFrame:
        rows = self.lake.read(bronze_table(dataset))
        return rows[~rows["_batch_id"].isin(list(exclude_batches))]

    def select(self, frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
        return frame[list(columns)].copy()

    def keep_entities(self, frame: pd.DataFrame, entities: Sequence[str]) -> pd.DataFrame:
        return frame[frame["entity_id"].isin(list(entities))]

    def apply_by(self, frame: pd.DataFrame, key: str, fn: GroupFn, schema: pa.Schema,
                 rows: Optional[int] = None) -> pd.DataFrame:
        parts = [fn(group) for _, group in frame.groupby(key, sort=True)]
        return _conform([p for p in parts if len(p)], schema)

    def map_groups(self, frame: pd.DataFrame, key: str, fn: GroupFn, schema: pa.Schema) -> pd.DataFrame:
        return fn(frame)

    def map_batches(self, frame: pd.DataFrame, fn: GroupFn, schema: pa.Schema) -> pd.DataFrame:
        return fn(frame)

    def bronze_ranges(self, frame: pd.DataFrame, rows: int) -> pd.DataFrame:
        part = (frame["_row"] // rows).astype("int64")
        return frame.assign(**{PART: part, PART_KEY: frame["_batch_id"] + ":" + part.astype(str)})

    def bronze_columns(self, frame: pd.DataFrame) -> dict[str, tuple[str, ...]]:
        raw = [c for c in frame.columns if c not in BRONZE_META]
        present = frame[raw].notna().groupby(frame["_batch_id"]).any()
        return {str(batch): tuple(c for c in raw if has[c]) for batch, has in present.iterrows()}

    def add_exogenous(self, frame: pd.DataFrame, shared: pd.DataFrame, holidays: Optional[pd.DataFrame]):
        out = frame.merge(shared, on="ds", how="left") if len(shared.columns) > 1 else frame
        if holidays is not None:
            dates = set(holidays["date"])
            out = out.assign(is_holiday=out["ds"].dt.date.isin(dates).astype("float64"))
        return out

    def overwrite(self, table: str, frame: pd.DataFrame, schema: pa.Schema, clustered_by: Optional[str] = None,
                  entities: Optional[Sequence[str]] = None) -> int:
        return self.lake.overwrite(table, frame, schema, clustered_by, entities)

    def insert_new(self, table: str, frame: pd.DataFrame, keys: Sequence[str]) -> int:
        return self.lake.insert_new(table, frame, keys)

    def holds_batch(self, table: str, batch_id: str) -> bool:
        return self.lake.exists(table) and len(self.lake.read(table, columns=["_row"],
                                                              filters=[("_batch_id", "=", batch_id)])) > 0

    def summarize(self, frame: pd.DataFrame, flags: Sequence[str]) -> dict:
        return {"rows": len(frame), "entities": int(frame["entity_id"].nunique()),
                **{f: int(frame[f].sum()) for f in flags}}

    def last_observed(self, frame: pd.DataFrame, before: Optional[pd.Timestamp] = None) -> Optional[pd.Timestamp]:
        seen = observed_before(frame, before)
        seen = seen.loc[seen["y"].notna(), "ds"]
        return seen.max() if len(seen) else None

    def is_empty(self, frame: pd.DataFrame) -> bool:
        return frame.empty

    def lengths(self, frame: pd.DataFrame) -> dict[str, int]:
        return {str(k): int(v) for k, v in frame.groupby("entity_id").size().items()}

    def edge_stats(self, silver: pd.DataFrame) -> pd.DataFrame:
        on_grid = ~silver["flag_off_grid"].astype(bool)
        valid = on_grid & silver["y"].notna()
        stamps = silver["ds"]
        stats = silver.assign(
            on_grid=on_grid, valid=valid, bad_id=silver["flag_bad_id"].astype(bool) & on_grid,
            grid_ds=stamps.where(on_grid), valid_ds=stamps.where(valid),
            invalid_ds=stamps.where(on_grid & silver["flag_invalid"].astype(bool)),
        ).groupby("entity_id").agg(received=("ds", "size"), rows=("on_grid", "sum"), bad_id=("bad_id", "any"),
                                   valid=("valid", "sum"), last_received=("grid_ds", "max"),
                                   last_valid=("valid_ds", "max"), last_invalid=("invalid_ds", "max"))
        return stats.reset_index()

    def extents(self, gold: pd.DataFrame) -> pd.DataFrame:
        # The ids hashed once, then counted, maxed and summed by their integer codes: a groupby by
        # the strings hashed and sorted 6.7 million rows once per aggregation (1.5 s of 10,000
        # entities' stage). The mean and (two-pass) sample std are the groupby's to rounding.
        codes, ids = id_codes(gold["entity_id"])
        n = len(ids)
        named = codes >= 0                                   # a missing id: no entity's row
        y = gold["y"].to_numpy(dtype="float64", na_value=np.nan)
        seen = named & ~np.isnan(y)
        stamps = gold["ds"].array
        dated = seen & ~stamps.isna()
        last = np.full(n, np.iinfo(np.int64).min)           # NaT where an entity has no observation
        np.maximum.at(last, codes[dated], stamps.asi8[dated])
        at, values = codes[seen], y[seen]
        counts = np.bincount(at, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(at, weights=values, minlength=n) / counts           # NaN without a value
            spread = np.bincount(at, weights=(values - mean[at]) ** 2, minlength=n)
            std = np.where(counts > 1, np.sqrt(spread / (counts - 1)), np.nan)
        return pd.DataFrame({"entity_id": ids, "rows": np.bincount(codes[named], minlength=n),
                             "observed": np.bincount(codes[dated], minlength=n),
                             "last_observed": pd.array(last, dtype=f"M8[{stamps.unit}]").tz_localize(stamps.tz),
                             "mean": mean, "std": std})

    def persist(self, frame):
        return frame

    def release(self, frame) -> None:
        return None

    @property
    def cores(self) -> int:
        return self.workers

    def tag_with_plan(self, gold: pd.DataFrame, mapping: pd.DataFrame) -> pd.DataFrame:
        # An inner join on entity_id, in gold's row order, by position rather than a merge (which
        # copied every column of gold's rows twice).
        at = positions_in(pd.Index(mapping["entity_id"]), gold["entity_id"])
        cutoff = mapping["cutoff"].array.take(at)           # at -1 (no such entity): dropped below
        keep = (at >= 0) & (cutoff.isna() | (gold["ds"].array >= cutoff))
        return gold[keep].assign(bucket=mapping["bucket"].to_numpy()[at[keep]]).reset_index(drop=True)

    def ship(self, folder: str) -> Callable[[], str]:
        return lambda: folder

    def share(self, value) -> Shared:
        return Shared(value)

    def unshare(self, handle) -> None:
        return None

    def run_once(self, fn: Callable[[], Any]) -> Any:
        return fn()

    def trials(self, parallelism: int, timeout: Optional[float]):
        from hyperopt import Trials
        return Trials()

    def search_parallelism(self, configured: int) -> int:
        return 1      # hyperopt's local Trials run one at a time

    def describe_trials(self, parallelism: int) -> str:
        return "local Trials (one at a time)"


class LocalBackend(PandasBackend):
    """A pool of Python worker processes on this machine; no JVM."""

    name = "local"

    def __init__(self, lake, workers: int = 0, task: Optional[Task] = None):
        super().__init__(lake, workers)
        self.task = task or train_bucket

    def read_gold(self, version: int) -> pd.DataFrame:
        # Ids as a Categorical: gold has a string per row (6.7 million at 10,000 entities), and
        # making, hashing and pickling them was most of the driver's planning at 10^5 entities.
        return self.lake.read(GOLD_SERIES, version=version, categories=["entity_id"])

    def train(self, planned: pd.DataFrame, plan: PartitionPlan, spec,
              progress: Optional[Progress] = None) -> pd.DataFrame:
        tasks = {bucket: _own_ids(rows.drop(columns="bucket")) for bucket, rows in planned.groupby("bucket", sort=True)}
        attempts = {bucket: 0 for bucket in tasks}
        results: list[pd.DataFrame] = []
        while tasks:
            try:
                self._run_pool(tasks, attempts, spec, results, progress)
            except BrokenProcessPool:
                for bucket in tasks:
                    attempts[bucket] += 1
                    if attempts[bucket] >= LOCAL_MAX_ATTEMPTS:
                        raise WorkersLost(
                            f"a training worker died {LOCAL_MAX_ATTEMPTS} times on a task with entities "
                            f"{plan.entities_in(bucket)[:10]}: most likely out of memory; lower "
                            "training.workers or training.max_history") from None
        # One Arrow table of every task's rows, read back as the Spark backend reads its results: a
        # pandas concat would guess each column's type from tasks where it is all missing.
        return pa.concat_tables([pa.Table.from_pandas(frame, schema=TASK_RESULT_SCHEMA, preserve_index=False)
                                 for frame in results] or [TASK_RESULT_SCHEMA.empty_table()]).to_pandas()

    def _run_pool(self, tasks, attempts, spec, results, progress) -> None:
        job = (os.getpid(), dict(os.environ), os.getcwd())
        with ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)), mp_context=worker_context(),
                                 initializer=init_worker, initargs=job) as pool:
            running = {pool.submit(self.task, rows, spec, attempts[b]): b for b, rows in tasks.items()}
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    bucket = running.pop(future)
                    frame = future.result()
                    results.append(frame)
                    del tasks[bucket]
                    if progress:
                        progress(len(frame))


def id_codes(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each row's code (-1 where missing) into the sorted distinct ids, and those ids: what
    `pd.factorize(ids, sort=True)` gives, read off a Categorical's codes without hashing a row."""
    if not isinstance(ids.dtype, pd.CategoricalDtype):
        codes, uniques = pd.factorize(ids, sort=True)
        return codes, np.asarray(uniques, dtype=object)
    categories, raw = ids.cat.categories, ids.cat.codes.to_numpy()
    used = np.flatnonzero(np.bincount(raw[raw >= 0], minlength=len(categories)))    # rows filtered away
    order = used[categories[used].argsort()]
    rank = np.full(len(categories) + 1, -1, dtype=np.int64)         # code -1 (missing) stays -1
    rank[order] = np.arange(len(order))
    return rank[raw], np.asarray(categories[order], dtype=object)


def positions_in(index: pd.Index, ids: pd.Series) -> np.ndarray:
    """Each row's position in `index` (-1: not there), a Categorical's looked up once per id."""
    if not isinstance(ids.dtype, pd.CategoricalDtype):
        return index.get_indexer(ids)
    found = np.append(index.get_indexer(ids.cat.categories), -1)
    return found[ids.cat.codes.to_numpy()]


def _own_ids(rows: pd.DataFrame) -> pd.DataFrame:
    """A task's rows with only its own ids as categories (not every entity's, in every task)."""
    if isinstance(rows["entity_id"].dtype, pd.CategoricalDtype):
        return rows.assign(entity_id=rows["entity_id"].cat.remove_unused_categories())
    return rows


def worker_context():
    """Workers fork from a forkserver that imported the training code and the zoo's libraries
    once per job process (`engine.training.preload`); a spawned worker paid those imports,
    about 3 s of CPU, on every `train`. Spawn where there is no forkserver."""
    import multiprocessing
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload(["engine.training.preload"])
    return context


def init_worker(job_pid: int, environ: Optional[dict] = None, cwd: Optional[str] = None) -> None:
    """A worker dies with the job (kill -9 included), runs BLAS on one thread, and sees the
    job's environment and folder as they are now, as a spawned worker would (the forkserver
    holds them as they were when it started)."""
    from threadpoolctl import threadpool_limits
    die_with_job(job_pid)
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    if cwd is not None:
        os.chdir(cwd)
    threadpool_limits(limits=1)


def _conform(parts: list[pd.DataFrame], schema: pa.Schema) -> pd.DataFrame:
    """The parts as one frame of exactly `schema` (an empty one when there are none)."""
    if not parts:
        return schema.empty_table().to_pandas()
    return pa.Table.from_pandas(pd.concat(parts, ignore_index=True)[schema.names], schema=schema,
                                preserve_index=False).to_pandas()
