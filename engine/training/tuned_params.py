"""The tuned-parameter table `_manymodels/tuning`: one row per model per `manymodels tune` run (written by
engine.tuning.job, read here by training, so training never imports tuning).

`manymodels train` (and the nightly job) read the parameters of the run `training.tuned_params`
names: `latest` (the newest run of this config's name), `none`, or a tuning run id (the MLflow
run id of the tuning parent run). Each run is appended in one Delta commit.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import pandas as pd
import pyarrow as pa

from engine.errors import ConfigError, ManymodelsError
from engine.lake import DeltaRsLake
from engine.models import MODEL_CLASSES
from engine.medallion.schemas import TS

TUNING = "_manymodels/tuning"
SCHEMA = pa.schema([("tuning_run_id", pa.string()), ("config_name", pa.string()), ("model", pa.string()),
                  ("params", pa.string()), ("metric", pa.string()), ("default_loss", pa.float64()),
                  ("best_loss", pa.float64()), ("trials", pa.int64()), ("failed_trials", pa.int64()),
                  ("entities", pa.string()), ("gold_version", pa.int64()), ("finished_at", TS)])


@dataclass(frozen=True)
class TunedParams:
    run_id: str
    params: dict[str, dict[str, Any]]      # model -> hyperparameters
    finished_at: pd.Timestamp


def record(lake, rows: pd.DataFrame) -> None:
    """Append one tuning run's rows (columns of SCHEMA) in one commit."""
    DeltaRsLake(lake).append(TUNING, rows, SCHEMA)


def runs(lake, config_name: Optional[str] = None) -> pd.DataFrame:
    lake = DeltaRsLake(lake)
    if not lake.exists(TUNING):
        return SCHEMA.empty_table().to_pandas()
    rows = lake.read(TUNING)
    if config_name is not None:
        rows = rows[rows["config_name"] == config_name]
    return rows.sort_values("finished_at", kind="stable", ignore_index=True)


def tuned_params(config) -> Optional[TunedParams]:
    """The parameters `training.tuned_params` selects for `config`, None when there are none."""
    which = config.training.tuned_params.strip()
    if which == "none":
        return None
    rows = runs(config.lake, config.name)
    if which != "latest":
        chosen = rows[rows["tuning_run_id"] == which]
        if chosen.empty:
            known = ", ".join(rows["tuning_run_id"].unique()[-5:]) or "none yet"
            raise ConfigError(f"config key 'training.tuned_params' names tuning run {which!r}, which is not in "
                              f"{TUNING} for config '{config.name}' (recent runs: {known}); use latest or none")
    elif rows.empty:
        return None
    else:
        chosen = rows[rows["tuning_run_id"] == rows["tuning_run_id"].iloc[-1]]
    params = {r.model: json.loads(r.params) for r in chosen.itertuples() if r.model in config.models}
    for model, values in params.items():
        try:
            MODEL_CLASSES[model].resolve_params(values)
        except ManymodelsError as exc:
            raise ConfigError(f"tuning run {chosen['tuning_run_id'].iloc[0]} holds parameters this version cannot "
                              f"use ({exc}); run `manymodels tune` again or set training.tuned_params: none") from None
    return TunedParams(str(chosen["tuning_run_id"].iloc[0]), params, chosen["finished_at"].max())
