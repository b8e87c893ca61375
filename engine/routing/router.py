"""Route forecast requests to each entity's champion: validate, load lazily, forecast.

A request is a frame of rows ``entity_id, ds`` (future timestamps on the series grid) plus
the exogenous columns the entity's model was fitted with. Each entity is forecast once, from
its training end up to its latest requested ``ds``; the requested rows are returned in request
order with the columns of gold.forecasts. Exogenous values are needed only on the requested
rows: the models' forecast at a step depends on that step's regressors alone, so steps that
were not asked for are filled from the nearest requested one.

Every problem with a request raises `RequestError` naming the entity or column at fault;
the pyfunc turns it into an HTTP 400.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from engine.errors import ManymodelsError
from engine.frequency import frequency
from engine.models import ForecastModel, load_model
from engine.normalize import entity_ids, from_epoch
from engine.routing.bundle import Bundle

REQUIRED = ("entity_id", "ds")


class RequestError(ManymodelsError):
    """The request cannot be answered as sent; the message says what to change."""


def output_columns(levels: tuple[int, ...]) -> list[str]:
    bands = [f"yhat_{side}_{lvl}" for lvl in sorted(levels) for side in ("lower", "upper")]
    return ["entity_id", "ds", "yhat", "yhat_lower", "yhat_upper", *bands, "model", "status", "run_id",
            "forecast_origin"]


class ModelCache:
    """Restored models, least recently used dropped first; safe across server threads."""

    def __init__(self, bundle: Bundle, size: int):
        self.bundle, self.size = bundle, size
        self._models: OrderedDict[str, ForecastModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, entity: str) -> ForecastModel:
        with self._lock:
            model = self._models.get(entity)
            if model is not None:
                self._models.move_to_end(entity)
                return model
            model = load_model(self.bundle.model_bytes(entity))
            self._models[entity] = model
            if len(self._models) > self.size:
                self._models.popitem(last=False)
            return model

    def __len__(self) -> int:
        return len(self._models)


_EPOCH_AS_NANOSECONDS = pd.Timestamp("1970-01-02", tz="UTC")


class Router:
    def __init__(self, folder: str | Path, cache_size: int = 1024, max_rows: Optional[int] = None):
        self.bundle = Bundle(folder)
        self.max_rows = max_rows
        self.meta = self.bundle.meta
        self.freq = frequency(self.meta.freq)
        self.cache = ModelCache(self.bundle, cache_size)
        self.columns = output_columns(self.meta.levels)

    def predict(self, request: pd.DataFrame) -> pd.DataFrame:
        request = self._validated(request)
        entities = request["entity_id"]
        if (entities.to_numpy() == entities.iat[0]).all():    # the common online case: one entity
            return self._forecast_entity(entities.iat[0], request).reset_index(drop=True)
        parts = [self._forecast_entity(entity, rows) for entity, rows in request.groupby("entity_id", sort=False)]
        return pd.concat(parts).sort_index().reset_index(drop=True)

    def _validated(self, request: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(request, pd.DataFrame):
            raise RequestError(f"send a table of rows with columns {', '.join(REQUIRED)} "
                               f"(got {type(request).__name__})")
        missing = [c for c in REQUIRED if c not in request.columns]
        if missing:
            raise RequestError(f"request lacks column(s) {missing}; every row needs entity_id and ds")
        if request.empty:
            raise RequestError("request has no rows")
        if self.max_rows and len(request) > self.max_rows:
            raise RequestError(f"request has {len(request):,} rows; this endpoint answers at most {self.max_rows:,} "
                               "per request (manymodels serve --max-rows): split it")
        request = request.reset_index(drop=True).copy()
        if request["entity_id"].isna().any():
            raise RequestError(f"column 'entity_id' is empty in row(s) {_rows(request['entity_id'].isna())}")
        request["entity_id"] = entity_ids(request["entity_id"]).astype(object)   # as ingest stored them
        request["ds"] = _timestamps(request["ds"])
        unknown = sorted(set(request["entity_id"]) - set(self.bundle.index))
        if unknown:
            raise RequestError(f"unknown entity {_listing(unknown)}: the routing model (run {self.meta.run_id}) "
                               f"has {self.meta.entities} entities, e.g. {self.bundle.first_entity()!r}")
        for column in self.meta.exogenous:
            if column in request.columns:
                request[column] = _numbers(request[column], column)
        return request

    def _forecast_entity(self, entity: str, rows: pd.DataFrame) -> pd.DataFrame:
        entry = self.bundle.index[entity]
        steps = self.freq.steps(entry.origin, rows["ds"])
        on_grid = self.freq.on_grid(rows["ds"])
        if (steps < 1).any():
            first = rows["ds"][steps < 1].min()
            raise RequestError(f"entity {entity!r}: ds {first.isoformat()} is not after the training end "
                               f"{entry.origin.isoformat()}; ask for timestamps after it")
        if not on_grid.all():
            odd = rows["ds"][~on_grid].iloc[0]
            raise RequestError(f"entity {entity!r}: ds {odd.isoformat()} is off the series grid ({self.freq.label}: "
                               f"{', '.join(t.isoformat() for t in self.freq.after(entry.origin, 2))}, ...)")
        horizon = int(steps.max())
        if horizon > self.meta.max_steps:
            raise RequestError(f"entity {entity!r}: ds {rows['ds'].max().isoformat()} is {horizon} steps after the "
                               f"training end; this model answers up to {self.meta.max_steps} steps "
                               "(routing.max_steps)")
        model = self.cache.get(entity)
        future = pd.DataFrame({"ds": self.freq.after(entry.origin, horizon)})
        for column in entry.exogenous:
            if column not in rows.columns or rows[column].isna().any():
                raise RequestError(f"entity {entity!r}: column {column!r} is required (the {entry.champion} model "
                                   "was fitted with it) and must have a value on every row")
            sent = rows[column].to_numpy()
            self._check_seen(entity, entry.champion, model, column, sent, rows.index)
            values = pd.Series(np.nan, index=range(horizon))
            values[steps - 1] = sent
            future[column] = values.ffill().bfill().to_numpy()
        forecast = model.forecast(future)
        pick, widest = steps - 1, max(self.meta.levels)
        data = {"entity_id": entity, "ds": rows["ds"], "yhat": forecast.mean[pick],
                "yhat_lower": forecast.bounds[widest][0][pick], "yhat_upper": forecast.bounds[widest][1][pick]}
        for level in self.meta.levels:
            data[f"yhat_lower_{level}"], data[f"yhat_upper_{level}"] = (b[pick] for b in forecast.bounds[level])
        data.update(model=entry.champion, status=entry.status, run_id=self.meta.run_id, forecast_origin=entry.origin)
        return pd.DataFrame(data, index=rows.index, columns=self.columns)


    def _check_seen(self, entity: str, champion: str, model: ForecastModel, column: str, sent: np.ndarray,
                    rows: pd.Index) -> None:
        """Refuse regressor values unlike any the model was fitted on (engine.models.regressors)."""
        seen = model.seen_.get(column)
        if seen is None:
            return
        unlike = seen.unlike(sent)
        if unlike.any():
            first = int(np.flatnonzero(unlike)[0])
            raise RequestError(
                f"entity {entity!r}: column {column!r} holds {sent[first]:g} in row {rows[first]}, unlike the "
                f"{champion} model's training data ({seen.describe()}); columns sent without names are taken in "
                f"the order entity_id, ds, {', '.join(self.meta.exogenous)}")


def _timestamps(values: pd.Series) -> pd.Series:
    """UTC timestamps from datetimes, ISO strings or epoch numbers; naive values are taken as UTC."""
    try:
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            parsed = from_epoch(values)
        else:
            parsed = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise RequestError(f"column 'ds' must hold timestamps such as '2008-07-01T00:00:00Z' ({exc})") from None
    if parsed.isna().any():
        raise RequestError(f"column 'ds' is empty in row(s) {_rows(parsed.isna())}")
    if (parsed < _EPOCH_AS_NANOSECONDS).any():
        # MLflow's schema cast reads an integer as nanoseconds since 1970 before this code sees it.
        raise RequestError(f"column 'ds' holds {parsed.min().isoformat()}, which is an integer epoch read as "
                           "nanoseconds; send ISO 8601 strings such as '2008-07-01T00:00:00Z'")
    return parsed.dt.as_unit("ns")


def _numbers(values: pd.Series, column: str) -> pd.Series:
    converted = pd.to_numeric(values, errors="coerce")
    bad = converted.isna() & values.notna()
    if bad.any():
        raise RequestError(f"column {column!r} must be numeric; row {int(np.flatnonzero(bad)[0])} holds "
                           f"{values[bad].iloc[0]!r}")
    return converted.astype("float64")


def _rows(mask: pd.Series) -> str:
    rows = np.flatnonzero(mask.to_numpy())
    return ", ".join(map(str, rows[:5])) + (" ..." if len(rows) > 5 else "")


def _listing(values: list[str]) -> str:
    shown = ", ".join(repr(v) for v in values[:5])
    return shown + (f" and {len(values) - 5} more" if len(values) > 5 else "")
