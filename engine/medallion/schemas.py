"""Declared schemas of the medallion tables, built once from the config.

One pyarrow schema per table serves both writers: delta-rs writes it directly, and Spark's
``applyInPandas`` gets the same schema as a DDL string, so both produce identical tables.
"""
from __future__ import annotations

from typing import Sequence

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
SILVER_FLAGS = ("flag_gap", "flag_invalid", "flag_duplicate", "flag_negative", "flag_outlier", "flag_off_grid",
                "flag_bad_id")


def parsed_target_schema(exogenous: Sequence[str]) -> pa.Schema:
    """Target rows after parsing one bronze batch (before cleaning)."""
    return pa.schema([("entity_id", pa.string()), ("ds", TS), ("y", pa.float64()), ("flag_invalid", pa.bool_()),
                    *((c, pa.float64()) for c in exogenous),
                    ("_batch_id", pa.string()), ("_ingested_at", TS), ("_seq", pa.int64())])


def parsed_exogenous_schema(columns: Sequence[str]) -> pa.Schema:
    return pa.schema([("ds", TS), *((c, pa.float64()) for c in columns), ("_ingested_at", TS), ("_seq", pa.int64())])


def parsed_calendar_schema() -> pa.Schema:
    return pa.schema([("date", pa.date32()), ("holiday", pa.string())])


def silver_schema(exogenous: Sequence[str]) -> pa.Schema:
    return pa.schema([("entity_id", pa.string()), ("ds", TS), ("y", pa.float64()),
                    *((c, pa.float64()) for c in exogenous),
                    *((f, pa.bool_()) for f in SILVER_FLAGS), ("problem", pa.string()), ("_batch_id", pa.string())])


def edge_schema() -> pa.Schema:
    """One row per entity whose rows need a word in the ingest summary (see `cleaning.edge_rows`)."""
    return pa.schema([("entity_id", pa.string()), ("problem", pa.string()), ("rows", pa.int64()),
                    ("last_valid", TS), ("last_received", TS)])


def gold_schema(exogenous: Sequence[str]) -> pa.Schema:
    return pa.schema([("entity_id", pa.string()), ("ds", TS), ("y", pa.float64()),
                    *((c, pa.float64()) for c in exogenous), ("is_imputed", pa.bool_())])


def rejected_schema() -> pa.Schema:
    return pa.schema([("_batch_id", pa.string()), ("dataset", pa.string()), ("file", pa.string()),
                    ("rows", pa.int64()), ("reason", pa.string()), ("rejected_at", TS)])


_SPARK_TYPES = {pa.string(): "string", TS: "timestamp", pa.float64(): "double", pa.bool_(): "boolean",
                pa.int64(): "bigint", pa.date32(): "date", pa.binary(): "binary"}


def spark_ddl(schema: pa.Schema) -> str:
    return ", ".join(f"`{f.name}` {_SPARK_TYPES[f.type]}" for f in schema)
