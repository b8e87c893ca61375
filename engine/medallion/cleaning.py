"""Pure per-entity medallion steps, shared by the local (pandas) and Spark backends.

`SilverCleaner` turns one entity's parsed rows from every bronze batch into silver: one row
per grid step from its first to its last received row, the latest received value winning
duplicates, and problems flagged, never dropped. `GoldPreparer` turns silver into gold: what
models train on, short and seasonal gaps *inside* the observed span filled and marked
`is_imputed` (missing values after the last valid one stay missing: they are not history, and
the forecast starts after the last valid value). `edge_rows` names the entities whose rows say
something a person should hear: an id that is too long, no row on the grid, no valid value at
all, or trailing invalid values that move the forecast origin earlier.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from engine.config import QualityConfig
from engine.frequency import Frequency
from engine.medallion.schemas import SILVER_FLAGS

_LINEAR_GAP = 3  # steps; longer gaps are filled from the previous season first
ID_TOO_LONG, NO_VALUE, TRAILING, OFF_GRID = "id_too_long", "no_value", "trailing", "off_grid"


@dataclass(frozen=True)
class SilverCleaner:
    freq: Frequency
    exogenous: tuple[str, ...]
    quality: QualityConfig

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        entity = rows["entity_id"].iloc[0]
        rows = rows.sort_values(["ds", "_ingested_at", "_seq"], kind="stable")
        latest = rows.drop_duplicates("ds", keep="last").set_index("ds")
        repeated = rows[rows.duplicated("ds", keep=False)]
        # Only repeats that disagree are flagged: re-sent identical rows are harmless.
        conflicts = repeated.groupby("ds")["y"].nunique(dropna=False) > 1
        latest["flag_duplicate"] = conflicts.reindex(latest.index, fill_value=False)

        on_grid = self.freq.on_grid(latest.index)
        # From the first to the last *received* row: rows whose value is missing or invalid are
        # kept and flagged (an all-missing entity, trailing 'n/a'), never dropped in silence.
        received = latest.index[on_grid]
        if len(received):
            grid = self.freq.grid(received.min(), received.max())
        else:
            grid = pd.DatetimeIndex([], tz="UTC", name="ds")
        out = latest[on_grid].reindex(grid).assign(flag_off_grid=False)
        if not on_grid.all():
            off_grid = latest[~on_grid].assign(flag_off_grid=True)
            # An entity with no row on the grid is its off-grid rows alone (pandas warns on, and will
            # change the dtypes of, a concatenation with an empty frame).
            out = (pd.concat([out, off_grid]) if len(out) else off_grid).sort_index()

        out["entity_id"] = entity
        # Rows the grid added carry NaN flags: they were not received, so not invalid or duplicated.
        out["flag_invalid"] = out["flag_invalid"].eq(True)
        out["flag_duplicate"] = out["flag_duplicate"].eq(True)
        out["flag_gap"] = out["y"].isna() & ~out["flag_invalid"]
        out["flag_negative"] = (out["y"] < 0).fillna(False)
        out["flag_outlier"] = self._outliers(out["y"].where(~out["flag_off_grid"]))
        too_long = len(entity) > self.quality.max_id_length
        out["flag_bad_id"] = too_long
        out["problem"] = (f"entity_id is {len(entity)} characters long; quality.max_id_length allows "
                          f"{self.quality.max_id_length}" if too_long else None)
        columns = ["entity_id", "y", *self.exogenous, *SILVER_FLAGS, "problem", "_batch_id"]
        return out.reset_index()[["entity_id", "ds", *columns[1:]]]

    def _outliers(self, y: pd.Series) -> pd.Series:
        """Robust z-score against a centred rolling median and MAD."""
        w = self.quality.outlier_window
        med = y.rolling(w, center=True, min_periods=w // 4).median()
        mad = (y - med).abs().rolling(w, center=True, min_periods=w // 4).median()
        scale = 1.4826 * mad.replace(0, np.nan)
        z = (y - med).abs() / scale
        return (z > self.quality.outlier_z).fillna(False).astype(bool)


@dataclass(frozen=True)
class GoldPreparer:
    exogenous: tuple[str, ...]
    season: int
    quality: QualityConfig

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows[~rows["flag_off_grid"].astype(bool) & ~rows["flag_bad_id"].astype(bool)].sort_values("ds")
        y = rows["y"].to_numpy(dtype="float64")
        filled = fill_gaps(y, self.season, self.quality.max_fill_gap)
        # Only gaps between observed values are history: after the last valid value nothing is known.
        observed = np.flatnonzero(~np.isnan(y))
        edge = observed[-1] + 1 if len(observed) else 0
        filled[edge:] = np.nan
        filled[: observed[0] if len(observed) else 0] = np.nan
        out = pd.DataFrame({"entity_id": rows["entity_id"].to_numpy(), "ds": rows["ds"].to_numpy(), "y": filled})
        for col in self.exogenous:
            # Filled over the history only: past the last valid target, a value is a known future
            # input (a weather forecast) only where one was received, never a carried-on last value.
            values = rows[col].to_numpy(dtype="float64").copy()
            values[:edge] = pd.Series(values[:edge]).interpolate(limit_direction="both").to_numpy()
            out[col] = values
        out["is_imputed"] = np.isnan(y) & ~np.isnan(filled)
        return out


def edge_rows(stats: pd.DataFrame, freq: Frequency) -> pd.DataFrame:
    """At most one row per entity of silver: why part (or all) of it will not be trained on, from
    its statistics (`Backend.edge_stats`, one row per entity; entities without a problem may be
    left out of them). The statistics are aggregates, so the engine never sends all of silver
    through a per-entity function to find the few entities worth a word."""
    stats = stats.sort_values("entity_id", ignore_index=True)
    rows, received = stats["rows"].to_numpy("int64"), stats["received"].to_numpy("int64")
    last_valid, last_received, last_invalid = (_utc(stats[c]) for c in ("last_valid", "last_received", "last_invalid"))
    off_grid = rows == 0
    bad_id = ~off_grid & stats["bad_id"].to_numpy(bool)
    no_value = ~off_grid & ~bad_id & (stats["valid"].to_numpy("int64") == 0)
    # Trailing *invalid* values ('n/a'): blank ones are hours not measured yet, which a feed sends
    # all the time; either way the forecast starts after the last valid value.
    trailing = ~off_grid & ~bad_id & ~no_value & np.asarray(last_invalid > last_valid)
    after = np.zeros(len(stats), dtype="int64")
    if trailing.any():      # silver's on-grid rows are one per step: the rows after it are the steps
        after[trailing] = freq.steps(last_valid[trailing], last_received[trailing])
    problem = np.select([off_grid, bad_id, no_value, trailing], [OFF_GRID, ID_TOO_LONG, NO_VALUE, TRAILING], "")
    count = np.select([off_grid, bad_id, no_value, trailing], [received, rows, rows, after], 0)
    keep = problem != ""
    return pd.DataFrame({
        "entity_id": stats["entity_id"].to_numpy(object)[keep], "problem": problem[keep].astype(object),
        "rows": count[keep].astype("int64"),
        "last_valid": pd.Series(last_valid.where(bad_id | trailing)[keep], dtype="datetime64[us, UTC]"),
        "last_received": pd.Series(last_received[keep], dtype="datetime64[us, UTC]")})


def _utc(stamps: pd.Series) -> pd.DatetimeIndex:
    """UTC microsecond stamps (Spark's toPandas gives naive ones, in its UTC session time zone)."""
    stamps = pd.DatetimeIndex(stamps)
    return (stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")).as_unit("us")


def fill_gaps(y: np.ndarray, season: int, max_gap: int) -> np.ndarray:
    """Fill NaN runs up to `max_gap` long: short runs linearly, longer ones from the same
    position one season earlier (or later, at the start), then linearly for what remains.
    Longer runs stay NaN so that the models see them."""
    y = np.asarray(y, dtype="float64").copy()
    missing = np.isnan(y)
    if not missing.any():
        return y
    run_id = np.cumsum(np.r_[True, missing[1:] != missing[:-1]])
    run_len = pd.Series(run_id).map(pd.Series(run_id).value_counts()).to_numpy()
    fillable = missing & (run_len <= max_gap)
    seasonal = fillable & (run_len > _LINEAR_GAP)
    for _ in range(max(1, max_gap // max(season, 1) + 1)):
        for lag in (season, -season):
            todo = seasonal & np.isnan(y)
            if not todo.any():
                break
            src = np.flatnonzero(todo) - lag
            ok = (src >= 0) & (src < len(y))
            idx = np.flatnonzero(todo)[ok]
            y[idx] = y[src[ok]]
    rest = fillable & np.isnan(y)
    if rest.any():
        interp = pd.Series(y).interpolate(limit_area="inside").to_numpy()
        y[rest] = interp[rest]
    return y


def longest_season(season_lengths: Sequence[int]) -> int:
    return max(season_lengths) if season_lengths else 1
