"""CSV and Parquet sources: one file is one batch; columns are mapped by `source.columns`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd

from engine.config import SourceConfig
from engine.errors import IngestError
from engine.normalize import entity_ids
from engine.sources.base import (TARGET, BatchRejected, Dataset, LongWindow, RawBatch, bronze_column, invalid_number,
                                 parse_numbers, parse_timestamps, row_labels)


@dataclass(frozen=True)
class LongParser:
    """Maps a file's own column names onto the long format (picklable for Spark workers)."""

    entity: str
    time: str
    target: str
    exogenous: tuple[str, ...]

    def __call__(self, raw: pd.DataFrame) -> pd.DataFrame:
        if raw.empty:
            raise BatchRejected("the file has no data rows")
        wanted = {"source.columns.entity": self.entity, "source.columns.time": self.time,
                  "source.columns.target": self.target}
        wanted.update({f"source.exogenous[{i}]": c for i, c in enumerate(self.exogenous)})
        missing = [f"'{col}' (mapped by {key})" for key, col in wanted.items() if bronze_column(col) not in raw.columns]
        if missing:
            raise BatchRejected(f"missing column(s) {', '.join(missing)}; the file has {list(raw.columns)}")
        raw = raw.rename(columns={bronze_column(c): c for c in wanted.values()})
        entity = entity_ids(raw[self.entity])
        no_entity = entity.isna() | (entity == "")
        if no_entity.any():
            raise BatchRejected(f"column '{self.entity}' is empty in {row_labels(no_entity.to_numpy().nonzero()[0])}")
        y = parse_numbers(raw[self.target])
        out = pd.DataFrame({
            "entity_id": entity.astype(object),
            "ds": parse_timestamps(raw[self.time], self.time),
            "y": y,
            "flag_invalid": invalid_number(raw[self.target], y),
        })
        for col in self.exogenous:
            out[col] = parse_numbers(raw[col])
        return out


def files_datasets(conf: SourceConfig) -> list[Dataset]:
    cols = conf.columns
    exog = tuple(conf.exogenous)
    return [Dataset(conf.kind, TARGET, LongParser(cols.entity, cols.time, cols.target, exog), provides=exog,
                    window=LongWindow(cols.time))]


def read_files(conf: SourceConfig) -> Iterator[RawBatch]:
    """Every matching file under `source.path` (or the one file), in name order, each read when
    the caller gets to it (one file in memory at a time). A file that cannot be read is one
    unreadable batch (with its reason and bytes), not a failed ingest."""
    return (_read_one(f, conf.kind) for f in _files(conf))


def _files(conf: SourceConfig) -> list[Path]:
    root = Path(conf.path)
    suffixes = (".csv", ".csv.gz") if conf.kind == "csv" else (".parquet",)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(suffixes))
        if not files:
            raise IngestError(f"source.path {root} holds no {' or '.join(suffixes)} files")
    elif root.is_file():
        files = [root]
    else:
        raise IngestError(f"source.path {root} does not exist; point it at a {suffixes[0]} file or a folder of them")
    return files


_GZIP_MAGIC = b"\x1f\x8b"


def _read_one(path: Path, kind: str) -> RawBatch:
    try:
        return RawBatch(kind, str(path), _frame(path, kind))
    except _Unreadable as exc:
        return RawBatch(kind, str(path), pd.DataFrame(), unreadable=str(exc), content=path.read_bytes())


class _Unreadable(Exception):
    pass


def _frame(path: Path, kind: str) -> pd.DataFrame:
    if kind == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
            raise _Unreadable(f"not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    compressed = path.name.endswith(".gz")
    with path.open("rb") as handle:
        if not compressed and handle.read(2) == _GZIP_MAGIC:
            raise _Unreadable("the file is gzip-compressed but named .csv: rename it to "
                              f"{path.name}.gz (compressed CSV is read as such)")
    try:
        # Strings exactly as written: bronze keeps what was received, parsing happens after.
        return pd.read_csv(path, dtype=str, keep_default_na=False, compression="gzip" if compressed else None)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise _Unreadable(f"not a readable {'gzip-compressed ' if compressed else ''}CSV file: "
                          f"{str(exc).splitlines()[0]}") from None
