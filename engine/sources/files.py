"""CSV and Parquet sources: one file is one batch; columns are mapped by `source.columns`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.config import SourceConfig
from engine.errors import IngestError
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
        entity = raw[self.entity].astype("string").str.strip()
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


def read_files(conf: SourceConfig) -> list[RawBatch]:
    """Every matching file under `source.path` (or the one file), in name order."""
    root = Path(conf.path)
    suffix = ".csv" if conf.kind == "csv" else ".parquet"
    if root.is_dir():
        files = sorted(p for p in root.rglob(f"*{suffix}") if p.is_file())
        if not files:
            raise IngestError(f"source.path {root} holds no {suffix} files")
    elif root.is_file():
        files = [root]
    else:
        raise IngestError(f"source.path {root} does not exist; point it at a {suffix} file or a folder of them")
    return [RawBatch(conf.kind, str(f), _read_one(f, conf.kind)) for f in files]


def _read_one(path: Path, kind: str) -> pd.DataFrame:
    if kind == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise IngestError(f"{path} is not a readable Parquet file: {exc}") from None
    try:
        # Strings exactly as written: bronze keeps what was received, parsing happens after.
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise IngestError(f"{path} is not a readable CSV file: {exc}") from None
