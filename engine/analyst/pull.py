"""Forecasts for analysts: the published forecast of an origin, with the actuals, from Delta
through delta-rs (no Spark, no JVM).

`pull(config, ...)` returns one row per entity and forecast step: the `gold/forecasts`
columns plus ``y`` (the actual where it is known). By default each entity's latest forecast
origin is taken (and of that origin, the most recently trained run); `origin` picks another.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pandas as pd

from engine.config import Config
from engine.errors import ManymodelsError
from engine.lake import GOLD_SERIES, DeltaRsLake
from engine.normalize import entity_id
from engine.training.tables import FORECASTS, MODELS


class PullError(ManymodelsError):
    """Nothing matches what was asked for; the message says what exists."""


@dataclass
class Pulled:
    forecasts: pd.DataFrame      # gold/forecasts columns + y, sorted by entity and ds
    history: pd.DataFrame        # entity_id, ds, y before each entity's forecast origin (for plots)
    warnings: list[str] = field(default_factory=list)   # what a reader should know about these rows


def utc_timestamp(value: Optional[str], flag: str, error: type[ManymodelsError] = ManymodelsError
                  ) -> Optional[pd.Timestamp]:
    """A command-line timestamp as UTC (naive values are UTC); `error` names `flag` when it is not one."""
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise error(f"{flag} {value!r} is not a timestamp (e.g. 2008-07-01 or 2008-07-01T06:00)") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def pull(config: Config, entities: Optional[Sequence[str]] = None, start: Optional[str] = None,
         end: Optional[str] = None, origin: Optional[str] = None, history_steps: int = 0) -> Pulled:
    lake = DeltaRsLake(config.lake)
    if not lake.exists(FORECASTS):
        raise PullError(f"no forecasts under {config.lake.root}: run `manymodels nightly --config ...` first")
    start_at, end_at, origin_at = (utc_timestamp(value, flag, PullError) for value, flag in
                                   ((start, "--start"), (end, "--end"), (origin, "--origin")))
    entities = [entity_id(e) for e in entities] if entities else None   # as ingest stored them
    filters = [("entity_id", "in", list(entities))] if entities else None
    forecasts = lake.read(FORECASTS, filters=filters)
    if entities:
        missing = sorted(set(entities) - set(forecasts["entity_id"]))
        if missing:
            known = sorted(lake.read(FORECASTS, columns=["entity_id"])["entity_id"].unique())
            raise PullError(f"no forecasts for entity {', '.join(map(repr, missing[:10]))}; "
                            f"{len(known)} entities have forecasts, e.g. {', '.join(known[:5])}")
    if origin_at is not None:
        forecasts = forecasts[forecasts["forecast_origin"] == origin_at]
        if forecasts.empty:
            origins = sorted(lake.read(FORECASTS, columns=["forecast_origin"])["forecast_origin"].unique())
            raise PullError(f"no forecast has origin {origin_at.isoformat()}; origins: "
                            + ", ".join(pd.Timestamp(o).isoformat() for o in origins[-10:]))
    forecasts = _latest_run(forecasts, lake)
    if start_at is not None:
        forecasts = forecasts[forecasts["ds"] >= start_at]
    if end_at is not None:
        forecasts = forecasts[forecasts["ds"] <= end_at]
    if forecasts.empty:
        raise PullError("no forecast rows between "
                        f"{start_at.isoformat() if start_at is not None else 'the first'} and "
                        f"{end_at.isoformat() if end_at is not None else 'the last'} forecast step; "
                        "widen --start/--end or leave them out")
    wanted = sorted(forecasts["entity_id"].unique())
    series = lake.read(GOLD_SERIES, columns=["entity_id", "ds", "y"], filters=[("entity_id", "in", wanted)])
    forecasts = forecasts.merge(series, on=["entity_id", "ds"], how="left")
    origins = forecasts.groupby("entity_id")["forecast_origin"].first()
    before = series[series["ds"] <= series["entity_id"].map(origins)]
    history = before.groupby("entity_id", group_keys=False).tail(history_steps) if history_steps else before.iloc[:0]
    return Pulled(forecasts.sort_values(["entity_id", "ds"], ignore_index=True),
                  history.sort_values(["entity_id", "ds"], ignore_index=True),
                  [] if origin_at is not None else _missing_nights(config, forecasts))


def _missing_nights(config: Config, forecasts: pd.DataFrame) -> list[str]:
    """A night the ledger records as trained whose forecasts are not in the table (a lost
    commit): the rows shown are then older than the latest night, and the reader must know."""
    from engine.nightly.ledger import Ledger
    trained = Ledger(config.lake).rows()
    trained = trained[trained["stage"] == "train"]
    if trained.empty:
        return []
    last = trained.iloc[-1]
    origin = json.loads(last["detail"]).get("origin")
    if origin is None or pd.Timestamp(origin) <= forecasts["forecast_origin"].max():
        return []
    return [f"the latest night (run {last['run_id']}) forecast from origin {pd.Timestamp(origin).isoformat()}, but "
            f"gold/forecasts holds no row of it: these rows are from origin "
            f"{forecasts['forecast_origin'].max().isoformat()}. Rerun `manymodels nightly` for that night to repair"]


def _latest_run(forecasts: pd.DataFrame, lake: DeltaRsLake) -> pd.DataFrame:
    """Per entity: the latest forecast origin, and of its runs the most recently trained."""
    if forecasts.empty:
        return forecasts
    trained = lake.read(MODELS, columns=["run_id", "trained_at"]).groupby("run_id")["trained_at"].max() \
        if lake.exists(MODELS) else pd.Series(dtype="datetime64[ns, UTC]")
    runs = forecasts[["entity_id", "forecast_origin", "run_id"]].drop_duplicates()
    runs = runs.assign(trained_at=runs["run_id"].map(trained))
    best = runs.sort_values(["forecast_origin", "trained_at"], na_position="first").groupby("entity_id").tail(1)
    return forecasts.merge(best[["entity_id", "run_id"]], on=["entity_id", "run_id"])
