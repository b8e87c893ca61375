"""Delta Lake tables under `lake.root`, through delta-rs (no JVM) or delta-spark.

Both writers produce the same protocol (no deletion vectors, UTC timestamps), so either can
read what the other wrote; `tests/engine/test_lake.py` holds them to that.
"""
from __future__ import annotations

import re
import uuid
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import pandas as pd
import pyarrow as pa

from engine.storage import LakeStore, storage_errors

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame
    from pyspark.sql import SparkSession

    from engine.config import LakeConfig

BRONZE, REJECTED, SLICES = "bronze", "bronze/_rejected_batches", "bronze/_slices"
# Clustered tables (gold.series) are sorted by their key in row groups of this many rows: file and
# row-group min/max statistics then skip by entity without a folder per entity
# (benchmarks/gold_layout.py measured the layouts at 10^5 entities).
CLUSTERED_ROW_GROUP = 65_536
SILVER_SERIES, GOLD_SERIES, GOLD_HOLIDAYS = "silver/series", "gold/series", "gold/holidays"


# Ingest's own columns on every bronze row; and, while a batch is parsed in row ranges, the
# range's index and its group key (batch id and index).
BRONZE_META = ("_source", "_file", "_batch_id", "_ingested_at", "_row")
PART, PART_KEY = "_part", "_part_key"


def bronze_table(dataset: str) -> str:
    return f"{BRONZE}/{dataset}"


def _run_scope(run_id: str, alias: str = "t.") -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id):
        raise ValueError(f"run id {run_id!r} may only hold letters, digits, '.', '_' and '-'")
    return f"{alias}run_id = '{run_id}'"


def _key_predicate(keys: Sequence[str]) -> str:
    return " AND ".join(f"t.{k} = s.{k}" for k in keys)


_LITERAL_KEYS = 64      # a key with at most this many values in the source is also matched as literals


def insert_predicate(frame: pd.DataFrame, keys: Sequence[str]) -> str:
    """An insert-new MERGE's condition: the join on `keys`, and each string key with few values
    in `frame` (a bronze batch's one `_batch_id`) also as a list of literals, by which Delta skips
    the target files without them from their statistics (each batch's rows sit in files of their
    own) instead of reading the whole table: bronze grows every night."""
    literals = []
    for key in keys:
        if frame[key].dtype == object:
            values = pd.unique(frame[key])
            if 0 < len(values) <= _LITERAL_KEYS and all(isinstance(v, str) for v in values):
                literals.append(sql_in(f"t.{key}", values))
    return " AND ".join([*literals, _key_predicate(keys)])


def sql_in(column: str, values: Sequence[str]) -> str:
    """`column IN ('a', 'b')` in SQL, for Delta predicates (quotes doubled)."""
    quoted = ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


def _store_errors(method):
    """A store failure inside a lake method becomes one message that says what to fix."""
    @wraps(method)
    def wrapped(self, *args, **kwargs):
        with storage_errors(self.store):
            return method(self, *args, **kwargs)
    return wrapped


class DeltaRsLake:
    """JVM-free access for the local backend and for analysts, on any store delta-rs reaches."""

    def __init__(self, lake: "LakeConfig | LakeStore | str | Path"):
        self.store = LakeStore.of(lake)
        self.root = self.store.root
        self.options = self.store.storage_options()

    def path(self, table: str) -> str:
        return self.store.rs_path(table)

    def table(self, table: str, version: Optional[int] = None):
        """The delta-rs DeltaTable of `table`."""
        from deltalake import DeltaTable
        return DeltaTable(self.path(table), version=version, storage_options=self.options)

    def write(self, table: str, data, **kwargs) -> None:
        """`write_deltalake` on `table` with this store's options."""
        from deltalake import write_deltalake
        with storage_errors(self.store):
            write_deltalake(self.path(table), data, storage_options=self.options, **kwargs)

    @_store_errors
    def exists(self, table: str) -> bool:
        from deltalake import DeltaTable
        return DeltaTable.is_deltatable(self.path(table), storage_options=self.options)

    @_store_errors
    def version(self, table: str) -> Optional[int]:
        return self.table(table).version() if self.exists(table) else None

    @_store_errors
    def committed_at(self, table: str) -> Optional[int]:
        """Epoch milliseconds of the table's latest commit (None: no table)."""
        return self.table(table).history(1)[0]["timestamp"] if self.exists(table) else None

    @_store_errors
    def read(self, table: str, version: Optional[int] = None, columns: Optional[list[str]] = None,
             filters=None, categories: Sequence[str] = ()) -> pd.DataFrame:
        """Rows of `table` (at `version`, for time travel) as pandas; the string columns named in
        `categories` as pandas Categoricals (one Python string per distinct value, not per row)."""
        dt = self.table(table, version=version)
        as_pandas = {"categories": list(categories)} if categories else {}
        try:
            return dt.to_pyarrow_table(columns=columns, filters=filters).to_pandas(**as_pandas)
        except pa.ArrowNotImplementedError:
            # Files written by delta-rs MERGE can hold strings as string_view, which pyarrow's
            # filter kernels do not compare with plain strings: filter after reading instead.
            wanted = None if columns is None else list(dict.fromkeys([*columns, *(c for c, _, _ in filters)]))
            frame = dt.to_pyarrow_table(columns=wanted).to_pandas(**as_pandas)
            return _apply_filters(frame, filters)[columns or frame.columns].reset_index(drop=True)

    @_store_errors
    def insert_new(self, table: str, frame: pd.DataFrame, keys: Sequence[str]) -> int:
        """Insert the rows whose `keys` are not in the table yet (atomic MERGE); returns rows inserted."""
        data = _to_arrow(frame)
        if not self.exists(table):
            self.write(table, data, mode="append")
            return data.num_rows
        # streamed_exec=False: a streamed merge source left a native thread running that
        # aborted the interpreter at exit ("terminate called without an active exception").
        metrics = (self.table(table)
                   .merge(data, insert_predicate(frame, keys), source_alias="s", target_alias="t", merge_schema=True,
                          streamed_exec=False)
                   .when_not_matched_insert_all().execute())
        return int(metrics.get("num_target_rows_inserted", 0))

    def replace_run(self, table: str, frame: pd.DataFrame, schema: pa.Schema, keys: Sequence[str],
                    run_id: str) -> int:
        """Upsert one run's rows by `keys` and drop that run's rows missing from `frame`, in one
        MERGE commit; other runs' rows are untouched. Returns rows in `frame`."""
        return self.upsert(table, frame, schema, keys, delete_scope=_run_scope(run_id))

    @_store_errors
    def upsert(self, table: str, frame: pd.DataFrame, schema: pa.Schema, keys: Sequence[str],
               delete_scope: Optional[str] = None) -> int:
        """MERGE `frame` by `keys` (update or insert) in one commit; with `delete_scope`, target
        rows in that scope that `frame` lacks are deleted in the same commit. Returns rows in `frame`."""
        data = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
        if not self.exists(table):
            self.write(table, data, mode="append")
            return data.num_rows
        merge = (self.table(table)
                 .merge(data, _key_predicate(keys), source_alias="s", target_alias="t", merge_schema=True,
                        streamed_exec=False)
                 .when_matched_update_all().when_not_matched_insert_all())
        if delete_scope:
            merge = merge.when_not_matched_by_source_delete(predicate=delete_scope)
        merge.execute()
        return data.num_rows

    @_store_errors
    def append(self, table: str, frame: pd.DataFrame, schema: pa.Schema) -> None:
        """Append `frame` (the columns of `schema`; timestamps in any unit) in one commit."""
        data = frame[schema.names].copy()
        for field in schema:
            if pa.types.is_timestamp(field.type):
                unit = f"datetime64[{field.type.unit}, UTC]"
                data[field.name] = pd.to_datetime(data[field.name], utc=True).astype(unit)
        self.write(table, pa.Table.from_pandas(data, schema=schema, preserve_index=False), mode="append")

    def overwrite_at(self, table: str, data: pa.Table, version: Optional[int]) -> bool:
        """Replace the table's rows as version `version + 1` (0: create it), or False when another
        writer committed that version first (optimistic concurrency, no retry)."""
        from deltalake import CommitProperties, write_deltalake
        from deltalake.exceptions import CommitFailedError
        target = self.table(table, version=version) if version is not None else self.path(table)
        try:
            with storage_errors(self.store):
                write_deltalake(target, data, mode="overwrite", storage_options=self.options,
                                commit_properties=CommitProperties(max_commit_retries=0))
        except (CommitFailedError, FileExistsError):
            return False
        except Exception as exc:     # the first commit of a new table lost the race for version 0
            if version is None and "already exists" in str(exc).lower():
                return False
            raise
        return True

    @_store_errors
    def overwrite(self, table: str, frame: pd.DataFrame, schema: pa.Schema, clustered_by: Optional[str] = None,
                  entities: Optional[Sequence[str]] = None) -> int:
        """Replace the table's rows in one commit (sorted by `clustered_by`, then `ds`, in row
        groups of CLUSTERED_ROW_GROUP rows, when given); returns the new version. With
        `entities`, only their rows are replaced (every row of `frame` is one of theirs) and the
        other entities' files are kept as they are."""
        from deltalake import WriterProperties
        kwargs = {}
        if clustered_by:
            frame = frame.sort_values(_cluster_keys(clustered_by, schema), kind="stable")
            kwargs["writer_properties"] = WriterProperties(max_row_group_size=CLUSTERED_ROW_GROUP)
        data = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
        if entities is not None:
            kwargs["predicate"] = sql_in("entity_id", entities)
        else:       # a whole overwrite drops any partitioning the table had (lakes written by older versions)
            kwargs.update(partition_by=[], schema_mode="overwrite")
        self.write(table, data, mode="overwrite", **kwargs)
        return self.table(table).version()

    @_store_errors
    def columns(self, table: str) -> list[str]:
        """The table's column names, from its schema (no data read)."""
        return [f.name for f in self.table(table).schema().fields]


class SparkLake:
    """Native Delta access through delta-spark, for the Spark backend."""

    def __init__(self, spark: "SparkSession", lake: "LakeConfig | LakeStore | str | Path"):
        self.spark, self.store = spark, LakeStore.of(lake)
        self.root = self.store.root

    def path(self, table: str) -> str:
        return self.store.spark_path(table)

    def exists(self, table: str) -> bool:
        from delta.tables import DeltaTable
        return DeltaTable.isDeltaTable(self.spark, self.path(table))

    def version(self, table: str) -> Optional[int]:
        from delta.tables import DeltaTable
        if not self.exists(table):
            return None
        return DeltaTable.forPath(self.spark, self.path(table)).history(1).select("version").first()[0]

    def read(self, table: str, version: Optional[int] = None) -> "SparkFrame":
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.path(table))

    def append_once(self, table: str, frame: "SparkFrame", writer: str, version: int) -> None:
        """Append `frame` unless `table` already holds `version` of `writer` (Delta's idempotent
        writes, `txnAppId`/`txnVersion`): a streaming micro-batch replayed after a crash is
        written once."""
        (frame.write.format("delta").mode("append").option("mergeSchema", "true")
         .option("txnAppId", writer).option("txnVersion", version).save(self.path(table)))

    def insert_new(self, table: str, frame: "SparkFrame", keys: Sequence[str], condition: Optional[str] = None) -> int:
        """As `DeltaRsLake.insert_new`; `condition`: the MERGE's (`insert_predicate` of the rows
        as pandas), else the join on `keys`."""
        from delta.tables import DeltaTable
        if not self.exists(table):
            frame.write.format("delta").mode("append").save(self.path(table))
            return self.read(table).count()
        metrics = (DeltaTable.forPath(self.spark, self.path(table)).alias("t")
                   .merge(frame.alias("s"), condition or _key_predicate(keys)).whenNotMatchedInsertAll().execute())
        return int(metrics.first()["num_inserted_rows"])

    def replace_run(self, table: str, frame: "SparkFrame", schema: pa.Schema, keys: Sequence[str],
                    run_id: str) -> int:
        """As `DeltaRsLake.replace_run`, with delta-spark.

        Where the keys hold the run id, the run's rows are replaced with `replaceWhere` (one
        commit: delete the run's rows, append the new ones), which skips every file without the
        run by its statistics. delta-spark's MERGE with a not-matched-by-source clause rewrites
        every file of the table instead, so each night copied all earlier nights' rows."""
        if "run_id" not in keys or not self.exists(table):
            return self.upsert(table, frame, schema, keys, delete_scope=_run_scope(run_id))
        tag = _commit_tag()
        (frame.select(*schema.names).write.format("delta").mode("overwrite")
         .option("replaceWhere", _run_scope(run_id, alias="")).option("mergeSchema", "true")
         .option("userMetadata", tag).save(self.path(table)))
        return self._rows_written(table, tag)

    def upsert(self, table: str, frame: "SparkFrame", schema: pa.Schema, keys: Sequence[str],
               delete_scope: Optional[str] = None) -> int:
        """As `DeltaRsLake.upsert`, with delta-spark."""
        from delta.tables import DeltaTable
        frame = frame.select(*schema.names)
        if not self.exists(table):
            tag = _commit_tag()
            frame.write.format("delta").mode("append").option("userMetadata", tag).save(self.path(table))
            return self._rows_written(table, tag)
        merge = (DeltaTable.forPath(self.spark, self.path(table)).alias("t")
                 .merge(frame.alias("s"), _key_predicate(keys)).withSchemaEvolution()
                 .whenMatchedUpdateAll().whenNotMatchedInsertAll())
        if delete_scope:
            merge = merge.whenNotMatchedBySourceDelete(condition=delete_scope)
        metrics = merge.execute().first()
        # Each source row updates one target row or is inserted (the keys are unique in the source).
        return int(metrics["num_updated_rows"]) + int(metrics["num_inserted_rows"])

    def _rows_written(self, table: str, tag: str) -> int:
        """Rows written by the commit tagged `tag`, from Delta's own operation metrics: counting the
        frame again would run the whole plan (Python UDFs included) a second time."""
        from delta.tables import DeltaTable
        history = DeltaTable.forPath(self.spark, self.path(table)).history(_TAG_LOOKBACK)
        for commit in history.select("userMetadata", "operationMetrics").collect():
            if commit["userMetadata"] == tag:
                return int(commit["operationMetrics"]["numOutputRows"])
        raise RuntimeError(f"the commit to {table} tagged {tag} is not in its last {_TAG_LOOKBACK} versions")

    def overwrite(self, table: str, frame: "SparkFrame", schema: pa.Schema, clustered_by: Optional[str] = None,
                  entities: Optional[Sequence[str]] = None) -> int:
        """As `DeltaRsLake.overwrite`: ranges of `clustered_by` per file, sorted within each; with
        `entities`, delta-spark's `replaceWhere` (the files without them are skipped by their
        statistics and kept)."""
        frame = frame.select(*schema.names)
        if clustered_by:
            keys = _cluster_keys(clustered_by, schema)
            frame = frame.repartitionByRange(clustered_by).sortWithinPartitions(*keys)
        writer = frame.write.format("delta").mode("overwrite")
        if entities is not None:
            writer = writer.option("replaceWhere", sql_in("entity_id", entities))
        else:
            writer = writer.option("overwriteSchema", "true")
        writer.save(self.path(table))
        return self.version(table)


_TAG_LOOKBACK = 20     # commits other writers may add between a write and reading its metrics


def _commit_tag() -> str:
    """A unique `userMetadata` for one commit, to find its metrics in the table's history."""
    return f"manymodels-write-{uuid.uuid4().hex}"


def _cluster_keys(key: str, schema: pa.Schema) -> list[str]:
    return [key, "ds"] if "ds" in schema.names and key != "ds" else [key]


def latest_gold_version(lake: "DeltaRsLake") -> int:
    """The newest version of gold.series; a clear error when nothing was ingested yet."""
    from engine.errors import ConfigError
    if not lake.exists(GOLD_SERIES):
        raise ConfigError(f"no gold table under {lake.root}: run `manymodels ingest --config ...` first")
    return lake.version(GOLD_SERIES)


def observed_before(frame, as_of: Optional[pd.Timestamp]):
    """Rows of a pandas or Spark frame with `ds` before `as_of` (all rows when None): what a job
    run as of that time may see, future exogenous values included."""
    if as_of is None:
        return frame
    if isinstance(frame, pd.DataFrame):
        return frame[frame["ds"] < as_of].reset_index(drop=True)
    from pyspark.sql import functions as F
    return frame.filter(F.col("ds") < F.lit(as_of.to_pydatetime()))


_OPERATORS = {"=": "__eq__", "==": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__",
              ">=": "__ge__"}


def _apply_filters(frame: pd.DataFrame, filters) -> pd.DataFrame:
    """delta-rs style `[(column, op, value)]` filters (ANDed) applied with pandas."""
    keep = pd.Series(True, index=frame.index)
    for column, op, value in filters:
        values = frame[column]
        if op == "in":
            keep &= values.isin(list(value))
        elif op == "not in":
            keep &= ~values.isin(list(value))
        else:
            keep &= getattr(values, _OPERATORS[op])(value)
    return frame[keep]


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    """Raw rows as arrow; columns with no values at all become strings (Delta has no null type)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
    return table
