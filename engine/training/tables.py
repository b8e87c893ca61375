"""gold.backtests, gold.models and gold.forecasts: schemas, rows from results, keyed writes.

Each table is written with one MERGE that also deletes rows of the same run that the new
results no longer have: rerunning a run id replaces its rows, other runs' rows stay.
Backtests and models are keyed on ``run_id`` plus their row key (every run is kept);
forecasts on ``(entity_id, ds, forecast_origin)``, so each origin's forecast exists exactly
once: a later run forecasting the same origin supersedes it, earlier origins stay as history.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from engine import jsontext
from engine.medallion.schemas import TS
from engine.training.entity import forecast_frames

BACKTESTS, MODELS, FORECASTS = "gold/backtests", "gold/models", "gold/forecasts"
KEYS = {BACKTESTS: ("run_id", "entity_id", "candidate", "window"), MODELS: ("run_id", "entity_id"),
        FORECASTS: ("entity_id", "ds", "forecast_origin")}
METRIC_COLUMNS = ("mae", "rmse", "smape", "mase", "pinball")


@dataclass(frozen=True)
class RunContext:
    run_id: str
    gold_version: int
    levels: tuple[int, ...]
    trained_at: datetime

    def schema(self, table: str) -> pa.Schema:
        coverage = [(f"coverage_{lvl}", pa.float64()) for lvl in self.levels]
        bands = [(f"yhat_{side}_{lvl}", pa.float64()) for lvl in self.levels for side in ("lower", "upper")]
        if table == BACKTESTS:
            return pa.schema([("run_id", pa.string()), ("gold_version", pa.int64()), ("entity_id", pa.string()),
                            ("candidate", pa.string()), ("window", pa.int64()), ("origin", TS),
                            *((m, pa.float64()) for m in METRIC_COLUMNS), *coverage, ("error", pa.string())])
        if table == MODELS:
            return pa.schema([("run_id", pa.string()), ("gold_version", pa.int64()), ("entity_id", pa.string()),
                            ("status", pa.string()), ("champion", pa.string()), ("reason", pa.string()),
                            ("error", pa.string()), ("n_obs", pa.int64()), ("windows", pa.int64()),
                            ("fit_seconds", pa.float64()), ("attempt", pa.int64()), ("params", pa.string()),
                            ("metrics", pa.string()), ("notes", pa.string()), ("forecast_origin", TS),
                            ("trained_at", TS), ("model", pa.binary()), ("scores", pa.string())])
        if table == FORECASTS:
            return pa.schema([("entity_id", pa.string()), ("ds", TS), ("yhat", pa.float64()),
                            ("yhat_lower", pa.float64()), ("yhat_upper", pa.float64()), *bands,
                            ("model", pa.string()), ("status", pa.string()), ("run_id", pa.string()),
                            ("forecast_origin", TS), ("reconciliation", pa.string())])
        raise ValueError(f"Unknown training table: {table!r}")

    def rows(self, table: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
        build = {BACKTESTS: self._backtest_rows, MODELS: self._model_rows, FORECASTS: self._forecast_rows}[table]
        schema = self.schema(table)

        def convert(results: pd.DataFrame) -> pd.DataFrame:
            frame = build(results)
            return (frame.reindex(columns=schema.names) if len(frame)
                    else schema.empty_table().to_pandas())
        return convert

    def _backtest_rows(self, results: pd.DataFrame) -> pd.DataFrame:
        read = jsontext.stacked(results["backtests"].tolist(), records=True, strings=("candidate", "origin", "error"))
        if read is not None:
            frame, lengths = read
            frame.insert(0, "entity_id", results["entity_id"].array.take(np.repeat(np.arange(len(results)), lengths)))
        else:
            rows = [{"entity_id": r.entity_id, **b} for r in results.itertuples() for b in jsontext.loads(r.backtests)]
            frame = pd.DataFrame(rows)
        if frame.empty:
            return pd.DataFrame()
        frame["origin"] = pd.to_datetime(frame["origin"], utc=True)
        frame = frame.replace([np.inf, -np.inf], np.nan)
        return frame.assign(run_id=self.run_id, gold_version=self.gold_version)

    def _model_rows(self, results: pd.DataFrame) -> pd.DataFrame:
        return results.assign(run_id=self.run_id, gold_version=self.gold_version,
                              trained_at=pd.Timestamp(self.trained_at))

    def _forecast_rows(self, results: pd.DataFrame) -> pd.DataFrame:
        """Every result's forecast rows (`forecast_frame`'s), for all results at once, tagged."""
        kept = results[[isinstance(f, str) for f in results["forecast"]]]
        if kept.empty:
            return pd.DataFrame()
        frame, lengths = forecast_frames(kept["forecast"].tolist())
        at = np.repeat(np.arange(len(kept)), lengths)
        for column, source in (("entity_id", "entity_id"), ("model", "champion"), ("status", "status"),
                               ("forecast_origin", "forecast_origin")):
            frame[column] = kept[source].array.take(at)
        widest = max(self.levels)
        return frame.assign(yhat_lower=frame[f"yhat_lower_{widest}"], yhat_upper=frame[f"yhat_upper_{widest}"],
                            reconciliation=frame.get("reconciliation"), run_id=self.run_id)
