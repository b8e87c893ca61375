"""What a source hands to bronze, and how bronze rows become long-format rows.

A source reads *raw batches*: the rows of one file (or one generated slice) exactly as
received, in one *dataset* (one bronze table). Each dataset has a role and a pure parser:

- ``target``:    raw rows -> long rows ``entity_id, ds, y`` (+ per-entity exogenous columns)
- ``exogenous``: raw rows -> ``ds`` + exogenous columns shared by every entity (joined on ds)
- ``calendar``:  raw rows -> ``date, holiday``

Parsers are pure pandas functions of one batch, so the local path and Spark's
``groupBy(_batch_id).applyInPandas`` run them unchanged. A parser raises `BatchRejected`
when the whole batch is unusable; row-level problems become flags downstream.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from engine.normalize import from_epoch

TARGET, EXOGENOUS, CALENDAR = "target", "exogenous", "calendar"
_TZ_SUFFIX = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")


_DELTA_UNSAFE = re.compile(r"[ ,;{}()\n\t=]")


def bronze_column(name: object) -> str:
    """A raw header as a Delta column name: characters Delta forbids become '_'."""
    text = str(name).strip()
    return _DELTA_UNSAFE.sub("_", text) if text else "_blank"


class BatchRejected(Exception):
    """The batch cannot be parsed; the message says which rows/columns and why."""


# (raw rows, since, until) -> the raw rows an observer would have received in [since, until).
Window = Callable[[pd.DataFrame, Optional[pd.Timestamp], pd.Timestamp], pd.DataFrame]


@dataclass(frozen=True)
class Dataset:
    name: str                                    # bronze table name
    role: str                                    # TARGET | EXOGENOUS | CALENDAR
    parse: Callable[[pd.DataFrame], pd.DataFrame]
    provides: tuple[str, ...] = ()               # exogenous columns its parsed rows carry
    # How to cut a raw batch to a time slice for `--as-of` replays; None: the dataset is
    # reference data (a holiday list) that is received whole.
    window: Optional[Window] = None


@dataclass(frozen=True)
class LongWindow:
    """Rows of a long-format file whose `time` falls in [since, until). Rows whose time does
    not parse stay in every slice, so the batch is rejected with the parser's message."""

    time: str

    def __call__(self, raw: pd.DataFrame, since: Optional[pd.Timestamp], until: pd.Timestamp) -> pd.DataFrame:
        column = bronze_column(self.time)
        if column not in raw.columns:
            return raw
        ds = pd.to_datetime(raw[column].astype("string").str.strip(), errors="coerce", utc=True, format="mixed")
        inside = ds < until
        if since is not None:
            inside &= ds >= since
        return raw[(ds.isna() | inside).to_numpy()].reset_index(drop=True)


@dataclass(frozen=True)
class RawBatch:
    dataset: str
    file: str
    frame: pd.DataFrame
    # A file that could not be read at all: why, and its bytes (kept raw in the lake).
    unreadable: Optional[str] = None
    content: Optional[bytes] = None

    @cached_property
    def batch_id(self) -> str:
        """Content hash: the same rows from the same dataset are the same batch (hashed once:
        millions of rows take a second)."""
        digest = hashlib.sha256(self.dataset.encode())
        if self.content is not None:
            digest.update(b"\x00raw\x00" + self.content)
            return digest.hexdigest()[:32]
        digest.update("\x1f".join(map(str, self.frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(self.frame, index=False).to_numpy().tobytes())
        return digest.hexdigest()[:32]


def row_labels(rows: Sequence[int], limit: int = 10) -> str:
    """'rows 3, 7 and 12 more' for error messages (1-based data rows of the file)."""
    shown = ", ".join(str(int(r) + 1) for r in list(rows)[:limit])
    more = len(rows) - limit
    return f"rows {shown}" + (f" and {more} more" if more > 0 else "")


def parse_timestamps(values: pd.Series, column: str) -> pd.Series:
    """Parse timestamps to UTC. Offsets are honoured; naive values are taken as UTC.

    A mix of naive and offset values is ambiguous and rejects the batch, as do unparseable values.
    Numbers (a Parquet integer column) are Unix epochs in the unit their magnitude says.
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        parsed = from_epoch(values)
        if parsed.isna().any():
            raise BatchRejected(f"column '{column}' is empty in {row_labels(np.flatnonzero(parsed.isna()))}")
        return parsed.astype("datetime64[us, UTC]")
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values):
        # Already timestamps (a Parquet timestamp column): no round trip through text.
        parsed = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
        missing = np.flatnonzero(parsed.isna().to_numpy())
        if len(missing):
            raise BatchRejected(f"column '{column}' is empty in {row_labels(missing)}")
        return parsed.astype("datetime64[us, UTC]")
    text = values.astype("string").str.strip()
    aware = text.str.contains(_TZ_SUFFIX, na=False)
    if aware.any() and not aware.all():
        naive_rows = np.flatnonzero(~aware.to_numpy())
        raise BatchRejected(
            f"column '{column}' mixes timestamps with and without a time-zone offset "
            f"({row_labels(naive_rows)} have none); write all of them in one convention")
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        sample = ", ".join(repr(v) for v in values.iloc[bad[:3]].tolist())
        raise BatchRejected(f"column '{column}' has unparseable timestamps in {row_labels(bad)} "
                            f"(e.g. {sample}); use ISO 8601 such as 2008-06-30 23:00")
    return parsed.astype("datetime64[us, UTC]")


def parse_numbers(values: pd.Series) -> pd.Series:
    """Numbers as float64; thousands separators are accepted, anything else becomes NaN."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    text = values.astype("string").str.strip().str.replace(",", "", regex=False)
    return pd.to_numeric(text.replace("", pd.NA), errors="coerce").astype("float64")


def invalid_number(values: pd.Series, parsed: pd.Series) -> pd.Series:
    """True where a value was present but is not a number (empty cells are gaps, not invalid)."""
    if pd.api.types.is_numeric_dtype(values):
        return pd.Series(False, index=values.index)
    present = values.astype("string").str.strip().fillna("") != ""
    return (present & parsed.isna()).astype(bool)
