"""The nightly ledger: one row per finished stage of a night, appended in its own commit.

A night is resumed from here: a stage counts as done when its row exists and is newer than the
row of the stage before it, and the night's inputs (gold version, last observation, config
fingerprint) are the ones recorded. Each append is one Delta commit, so a crash leaves either
the whole row or none.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pandas as pd
import pyarrow as pa

from engine.lake import DeltaRsLake
from engine.medallion.schemas import TS

NIGHTS = "_manymodels/nights"
STAGES = ("train", "mlflow", "score", "done")
SCHEMA = pa.schema([("run_id", pa.string()), ("as_of", TS), ("stage", pa.string()), ("gold_version", pa.int64()),
                  ("data_end", TS), ("config_hash", pa.string()), ("detail", pa.string()), ("finished_at", TS)])


@dataclass(frozen=True)
class Inputs:
    """What a night's models are a function of: equal inputs give equal models."""

    gold_version: int
    data_end: Optional[pd.Timestamp]
    config_hash: str

    def matching(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The ledger rows recorded for exactly these inputs."""
        same_end = rows["data_end"].isna() if self.data_end is None else rows["data_end"].eq(self.data_end)
        return rows[(rows["gold_version"] == self.gold_version) & same_end & (rows["config_hash"] == self.config_hash)]


class Ledger:
    def __init__(self, lake):
        self.lake = DeltaRsLake(lake)

    def rows(self) -> pd.DataFrame:
        if not self.lake.exists(NIGHTS):
            return SCHEMA.empty_table().to_pandas()
        return self.lake.read(NIGHTS).sort_values("finished_at", kind="stable", ignore_index=True)

    def record(self, run_id: str, as_of: pd.Timestamp, stage: str, inputs: Inputs, **detail) -> None:
        row = pd.DataFrame({"run_id": [run_id], "as_of": [as_of], "stage": [stage],
                            "gold_version": [inputs.gold_version], "data_end": [inputs.data_end],
                            "config_hash": [inputs.config_hash], "detail": [json.dumps(detail, default=str)],
                            "finished_at": [pd.Timestamp.now(tz="UTC")]})
        self.lake.append(NIGHTS, row, SCHEMA)

    def progress(self, run_id: str, inputs: Inputs) -> dict[str, dict]:
        """The stages of `run_id` still valid for `inputs`: {stage: detail}, in stage order, each
        newer than the one before it (a retrained night invalidates what followed)."""
        rows = inputs.matching(self.rows())
        rows = rows[rows["run_id"] == run_id]
        done: dict[str, dict] = {}
        after = None
        for stage in STAGES:
            found = rows[rows["stage"] == stage]
            if after is not None:
                found = found[found["finished_at"] > after]
            if found.empty:
                break
            last = found.iloc[-1]
            done[stage], after = json.loads(last["detail"]), last["finished_at"]
        return done

    def completed_with(self, inputs: Inputs) -> Optional[pd.Series]:
        """The latest finished night (any run id) whose models came from exactly these inputs."""
        rows = inputs.matching(self.rows())
        rows = rows[rows["stage"] == "done"]
        return rows.iloc[-1] if len(rows) else None
