"""Streaming scoring: request rows appended to a Delta table are forecast through the registered
routing model as they arrive (Spark Structured Streaming), each exactly once.

A request row is `entity_id, ds` plus the exogenous columns (a new weather forecast); any other
column (a request id) is carried to the answer. Each micro-batch is scored on the executors by
the same pyfunc every MLflow client loads (one load per Python worker), and written to two Delta
tables: the forecasts, and the rejects with the reason a row could not be answered (unknown
entity, ds off the grid or out of reach, a missing or implausible regressor). A bad row never
fails the stream.

Exactly once: both writes carry Delta's idempotent-write options (`txnAppId` names this stream,
`txnVersion` is the micro-batch id). A process killed in a micro-batch leaves the batch
uncommitted in the checkpoint; the restarted stream replays it, and each table skips the write
it already holds.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import pandas as pd
import pyarrow as pa

from engine.config import Config
from engine.errors import ConfigError, Unavailable, first_line
from engine.faults import crash_point
from engine.medallion.schemas import spark_ddl
from engine.normalize import entity_id
from engine.routing.bundle import Bundle
from engine.scoring.batch import (_cached_model, bundle_folder, champion_uri, check_model, download_model,
                                  with_timestamps)
from engine.training.tables import FORECASTS, RunContext

REQUIRED = ("entity_id", "ds")
_REASON, _RAW = "_reason", "_request"


class StreamFailed(Unavailable):
    """A micro-batch failed (the store, the tracking server); the checkpoint replays it on restart."""


@dataclass
class StreamReport:
    model_uri: str
    batches: int = 0
    scored: int = 0
    rejected: int = 0
    seconds: float = 0.0
    per_batch: list[dict] = field(default_factory=list)


def answer_requests(rows: pd.DataFrame, model, inputs: list[str], carried: list[str],
                    columns: pa.Schema) -> pd.DataFrame:
    """Forecast rows for one entity's requests (`rows`), with `_reason` set on each row that
    cannot be answered (and `_request`, the row as sent, in JSON). A request the model refuses
    as a whole is retried row by row, so one bad row rejects only itself."""
    raw = rows.reset_index(drop=True)
    router = model.unwrap_python_model().router
    entity = raw["entity_id"].iat[0]
    if pd.isna(entity):
        return _rejected(raw, "entity_id is empty", columns, carried)
    if entity_id(entity) not in router.bundle.index:
        reason = (f"unknown entity {entity!r}: the routing model (run {router.meta.run_id}) has "
                  f"{router.meta.entities} entities, e.g. {router.bundle.first_entity()!r}")
        return _rejected(raw, reason, columns, carried)
    sent = raw[[c for c in inputs if c in raw.columns]]
    answer, reason = _predict(model, sent)
    if reason is None:
        return _answered(answer, raw, columns, carried)
    parts = []
    for i in range(len(raw)):
        answer, reason = _predict(model, sent.iloc[[i]])
        row = raw.iloc[[i]]
        parts.append(_answered(answer, row, columns, carried) if reason is None
                     else _rejected(row, reason, columns, carried))
    return pd.concat(parts, ignore_index=True)


def _predict(model, request: pd.DataFrame):
    """(answer, None), or (None, the reason) when the model refuses the request as MLflow's
    scoring server would (an HTTP 400)."""
    from mlflow.exceptions import MlflowException
    try:
        return model.predict(request), None
    except MlflowException as exc:
        if exc.error_code not in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
            raise
        return None, exc.message


def _answered(answer: pd.DataFrame, raw: pd.DataFrame, columns: pa.Schema, carried: list[str]) -> pd.DataFrame:
    out = with_timestamps(answer.reset_index(drop=True))[columns.names].copy()
    for column in carried:
        out[column] = raw[column].to_numpy()
    out[_REASON], out[_RAW] = None, None
    return out


def _rejected(raw: pd.DataFrame, reason: str, columns: pa.Schema, carried: list[str]) -> pd.DataFrame:
    out = columns.empty_table().to_pandas().reindex(range(len(raw)))     # typed, all missing
    out["entity_id"] = raw["entity_id"].astype(object).to_numpy()
    for column in carried:
        out[column] = raw[column].to_numpy()
    out[_REASON] = reason
    out[_RAW] = [json.dumps(record) for record in json.loads(raw.to_json(orient="records", date_format="iso"))]
    return out


class _Champion:
    """The model the stream scores with, shipped to the executors; `refresh` follows the
    registry alias, so a stream left running picks up the champion the nightly job promotes."""

    def __init__(self, config: Config, model_uri: str, runner, folder: str):
        self.config, self.uri, self.runner, self.folder = config, model_uri, runner, folder
        self.version: Optional[str] = None
        self.path: Callable[[], str] = lambda: ""
        self.bundle: Optional[Bundle] = None
        self.refresh()

    def _current_version(self) -> str:
        if not self.uri.startswith("models:/") or "@" not in self.uri:
            return self.uri          # a fixed version or path: loaded once
        from engine.tracking.client import open_client
        name, _, alias = self.uri[len("models:/"):].partition("@")
        return open_client(self.config.mlflow.tracking_uri).get_model_version_by_alias(name, alias).version

    def refresh(self) -> bool:
        version = self._current_version()
        if version == self.version:
            return False
        local = download_model(self.config, self.uri, tempfile.mkdtemp(prefix="model-", dir=self.folder))
        self.bundle, self.version = Bundle(bundle_folder(local)), version
        self.path = self.runner.ship(local)
        return True


def score_stream(config: Config, model_uri: Optional[str] = None, once: bool = False, spark=None,
                 echo: Callable[[str], None] = print) -> StreamReport:
    """Score request rows from `streaming.requests` as they arrive (`once`: those there now, then
    stop) into `streaming.forecasts`, with rejects in `streaming.rejects`."""
    from pyspark.errors import StreamingQueryException
    from pyspark.sql import functions as F

    from engine.backends import backend_for
    settings = config.streaming
    model_uri = model_uri or champion_uri(config)
    check_model(config, model_uri)
    runner = backend_for(config, "spark", spark)
    lake, spark = runner.lake, runner.spark
    carried = [c for c in _request_columns(lake, settings.requests) if c not in REQUIRED]
    report, started = StreamReport(model_uri), time.perf_counter()
    app_id = "manymodels-score-" + hashlib.sha1(lake.path(settings.checkpoint).encode()).hexdigest()[:16]

    with tempfile.TemporaryDirectory(prefix="manymodels-stream-") as folder:
        champion = _Champion(config, model_uri, runner, folder)

        def process(batch, batch_id: int) -> None:
            crash_point("stream-batch", batch_id)
            t0 = time.perf_counter()
            if champion.refresh():
                echo(f"batch {batch_id}: scoring with {model_uri} version {champion.version} "
                     f"(training run {champion.bundle.meta.run_id})")
            meta = champion.bundle.meta
            columns = RunContext(meta.run_id, 0, meta.levels, pd.Timestamp.now(tz="UTC")).schema(FORECASTS)
            inputs, names, path = ["entity_id", "ds", *meta.exogenous], columns.names, champion.path
            carried_ddl = [f"`{f.name}` {f.dataType.simpleString()}" for f in batch.schema if f.name in carried]
            ddl = ", ".join([spark_ddl(columns), *carried_ddl, f"`{_REASON}` string", f"`{_RAW}` string"])

            def answer(rows: pd.DataFrame) -> pd.DataFrame:
                return answer_requests(rows, _cached_model(path()), inputs, carried, columns)

            answers = (batch.withColumn("entity_id", F.col("entity_id").cast("string"))
                       .groupBy("entity_id").applyInPandas(answer, ddl).persist())
            try:
                totals = answers.agg(F.count(F.when(F.col(_REASON).isNull(), 1)).alias("scored"),
                                     F.count(F.col(_REASON)).alias("rejected")).first()
                now = F.current_timestamp()
                forecasts = (answers.where(F.col(_REASON).isNull())
                             .select(*names, *carried, F.lit(batch_id).cast("bigint").alias("batch_id"),
                                     now.alias("scored_at")))
                if totals["scored"]:
                    lake.append_once(settings.forecasts, forecasts, app_id, batch_id)
                crash_point("stream-forecasts-written", batch_id)
                rejects = (answers.where(F.col(_REASON).isNotNull())
                           .select("entity_id", F.col(_RAW).alias("request"), F.col(_REASON).alias("reason"),
                                   F.lit(batch_id).cast("bigint").alias("batch_id"), now.alias("rejected_at")))
                if totals["rejected"]:
                    lake.append_once(settings.rejects, rejects, app_id, batch_id)
            finally:
                answers.unpersist()
            seconds = time.perf_counter() - t0
            report.batches += 1
            report.scored += totals["scored"]
            report.rejected += totals["rejected"]
            report.per_batch.append({"batch_id": batch_id, "scored": totals["scored"],
                                     "rejected": totals["rejected"], "seconds": seconds,
                                     "model_version": champion.version})
            echo(f"batch {batch_id}: {totals['scored']} rows scored, {totals['rejected']} rejected "
                 f"({seconds:.1f}s)")

        reader = spark.readStream.format("delta")
        if settings.max_files_per_trigger:
            reader = reader.option("maxFilesPerTrigger", settings.max_files_per_trigger)
        writer = (reader.load(lake.path(settings.requests)).writeStream.foreachBatch(process)
                  .option("checkpointLocation", lake.path(settings.checkpoint)).queryName("manymodels-score"))
        writer = (writer.trigger(availableNow=True) if once
                  else writer.trigger(processingTime=f"{settings.trigger_seconds:g} seconds"))
        query = writer.start()
        try:
            query.awaitTermination()
        except KeyboardInterrupt:
            echo("stopping the stream (the checkpoint keeps its place)")
        except StreamingQueryException as exc:
            raise StreamFailed(f"the scoring stream stopped: {first_line(exc)} (rerun the same command once "
                               "the cause is fixed: the checkpoint resumes at the failed micro-batch)") from exc
        finally:
            query.stop()
    report.seconds = time.perf_counter() - started
    return report


def _request_columns(lake, table: str) -> list[str]:
    """The request table's columns, or a clear error when it is missing or lacks entity_id/ds."""
    if not lake.exists(table):
        raise ConfigError(f"no request table at {lake.path(table)} (streaming.requests): append rows of "
                          "entity_id, ds and the model's exogenous columns to a Delta table there "
                          "(Spark, delta-rs' write_deltalake, or any Delta writer), then start the stream")
    columns = lake.read(table).columns
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ConfigError(f"the request table {lake.path(table)} lacks column(s) {', '.join(missing)}; "
                          f"it has {', '.join(columns)} (every request row needs entity_id and ds)")
    return columns
