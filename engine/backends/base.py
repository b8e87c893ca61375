"""The one interface every execution backend implements.

A backend owns a *native frame* type (pandas for local and Ray, Spark DataFrames for Spark) and
the lake access that reads and writes it (`DeltaRsLake` or `SparkLake`: the same methods). Jobs
pass native frames between these methods and only ever receive pandas where they ask for it
(`to_pandas`, `extents`, `summary`), so a job's code is the same on every backend. Per-entity
work is a pure pandas -> pandas function; the backend decides where it runs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Optional, Sequence

import pandas as pd
import pyarrow as pa

from partitions.plan import PartitionPlan

GroupFn = Callable[[pd.DataFrame], pd.DataFrame]


class Backend(ABC):
    name: str
    lake: Any          # DeltaRsLake (local, ray) or SparkLake (spark)

    @classmethod
    @abstractmethod
    def from_config(cls, config, spark=None) -> "Backend":
        """The backend on `config`'s lake (a Spark backend reuses `spark` when given)."""

    # -- frames ---------------------------------------------------------------------------
    @abstractmethod
    def from_pandas(self, frame: pd.DataFrame): ...

    @abstractmethod
    def to_pandas(self, frame) -> pd.DataFrame: ...

    @abstractmethod
    def read(self, table: str, version: Optional[int] = None, entities: Optional[Sequence[str]] = None):
        """A lake table (at `version`), only the rows of `entities` when given."""

    def read_gold(self, version: int):
        """gold.series at `version`, as the training stage plans and tags it (a frame `extents`
        and `tag_with_plan` take; the local backend's holds its ids as a pandas Categorical)."""
        from engine.lake import GOLD_SERIES
        return self.read(GOLD_SERIES, version=version)

    @abstractmethod
    def read_bronze(self, dataset: str, exclude_batches: Sequence[str]): ...

    @abstractmethod
    def select(self, frame, columns: Sequence[str]): ...

    @abstractmethod
    def keep_entities(self, frame, entities: Sequence[str]):
        """The rows of `frame` whose `entity_id` is one of `entities`."""

    @abstractmethod
    def apply_by(self, frame, key: str, fn: GroupFn, schema: pa.Schema, rows: Optional[int] = None):
        """`fn` on the rows of each `key` value, where the backend runs work; rows of `schema`.
        `rows`, the input's row count when known, lets a distributed backend size its tasks."""

    @abstractmethod
    def map_groups(self, frame, key: str, fn: GroupFn, schema: pa.Schema):
        """`fn` on frames that each hold whole `key` groups (any number of them per call)."""

    @abstractmethod
    def map_batches(self, frame, fn: GroupFn, schema: pa.Schema):
        """`fn` on batches of rows (any split), where the backend runs work; rows of `schema`."""

    @abstractmethod
    def add_exogenous(self, frame, shared: pd.DataFrame, holidays: Optional[pd.DataFrame]): ...

    @abstractmethod
    def bronze_ranges(self, frame, rows: int):
        """Bronze rows tagged with their batch's row range of `rows` rows (`PART`, and `PART_KEY`
        to group by): a big batch parses in many tasks."""

    @abstractmethod
    def bronze_columns(self, frame) -> dict[str, tuple[str, ...]]:
        """Each batch's own raw columns: those with a value in some row of the batch (the bronze
        table also holds, all-null, the columns other files added)."""

    @abstractmethod
    def overwrite(self, table: str, frame, schema: pa.Schema, clustered_by: Optional[str] = None,
                  entities: Optional[Sequence[str]] = None) -> int:
        """Replace `table`'s rows (with `entities`, only theirs) with `frame`'s in one commit; the new version."""

    @abstractmethod
    def insert_new(self, table: str, frame: pd.DataFrame, keys: Sequence[str]) -> int: ...

    @abstractmethod
    def holds_batch(self, table: str, batch_id: str) -> bool:
        """Whether the bronze `table` holds rows of the batch `batch_id` (read by its statistics)."""

    @abstractmethod
    def summarize(self, frame, flags: Sequence[str]) -> dict: ...

    @abstractmethod
    def last_observed(self, frame, before: Optional[pd.Timestamp] = None) -> Optional[pd.Timestamp]: ...

    @abstractmethod
    def is_empty(self, frame) -> bool: ...

    @abstractmethod
    def lengths(self, frame) -> dict[str, int]: ...

    @abstractmethod
    def edge_stats(self, silver) -> pd.DataFrame:
        """Per entity of silver with something to say (`cleaning.edge_rows`), as pandas: `entity_id`,
        `received` (rows), and over its on-grid rows `rows`, `bad_id`, `valid` (rows with a value),
        `last_received`, `last_valid`, `last_invalid` (the last flagged invalid). Aggregated where
        the rows are: entities with no problem may be left out."""

    @abstractmethod
    def extents(self, gold) -> pd.DataFrame:
        """Per entity (pandas): `rows`, `observed` (non-missing y), `last_observed`, and the `mean`
        and (sample) `std` of the observed y."""

    @abstractmethod
    def persist(self, frame): ...

    @abstractmethod
    def release(self, frame) -> None: ...

    # -- per-entity work ------------------------------------------------------------------
    @property
    @abstractmethod
    def cores(self) -> int: ...

    @abstractmethod
    def tag_with_plan(self, gold, mapping: pd.DataFrame):
        """Gold rows joined with `mapping` (entity_id, bucket, cutoff) and cut at each entity's
        cutoff (rows from it on, or all when it is missing)."""

    @abstractmethod
    def train(self, planned, plan: PartitionPlan, spec, progress: Optional[Callable[[int], None]] = None):
        """Every planned bucket through `engine.training.tasks.train_bucket`; a persisted native
        frame of TASK_RESULT_SCHEMA rows (release it when done)."""

    @abstractmethod
    def ship(self, folder: str) -> Callable[[], str]:
        """Make a local folder readable where the work runs; returns how a task finds it."""

    # -- hyperparameter search ------------------------------------------------------------
    @abstractmethod
    def share(self, value):
        """`value` for every task (a Spark broadcast); the handle's `.value` is the value."""

    @abstractmethod
    def unshare(self, handle) -> None: ...

    @abstractmethod
    def run_once(self, fn: Callable[[], Any]) -> Any:
        """`fn()` where trials run (an executor on Spark), its result back here."""

    @abstractmethod
    def trials(self, parallelism: int, timeout: Optional[float]):
        """The hyperopt trials object of a search (SparkTrials on Spark; `timeout` is its own)."""

    @abstractmethod
    def search_parallelism(self, configured: int) -> int: ...

    @abstractmethod
    def describe_trials(self, parallelism: int) -> str: ...

    @property
    def trials_own_timeout(self) -> bool:
        """Whether `trials(...)` enforces the time limit itself (else fmin's `timeout` does)."""
        return False


class Shared:
    """A value shared with tasks in-process (the local stand-in for a Spark broadcast)."""

    def __init__(self, value):
        self.value = value
