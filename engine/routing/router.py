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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from engine.errors import ManymodelsError
from engine.frequency import NAT, as_utc, frequency
from engine.models import Forecast, ForecastModel, load_model
from engine.normalize import entity_id, from_epoch
from engine.routing.bundle import Bundle
from engine.routing.frames import frame_of

REQUIRED = ("entity_id", "ds")


class RequestError(ManymodelsError):
    """The request cannot be answered as sent; the message says what to change."""


def output_columns(levels: tuple[int, ...]) -> list[str]:
    bands = [f"yhat_{side}_{lvl}" for lvl in sorted(levels) for side in ("lower", "upper")]
    return ["entity_id", "ds", "yhat", "yhat_lower", "yhat_upper", *bands, "model", "status", "run_id",
            "forecast_origin", "reconciliation"]


class ModelCache:
    """Restored models, least recently used dropped first; safe across server threads.

    A model fitted without regressors forecasts the same path at every request, so its first
    `max_steps` steps are kept beside it (`path`): a request for it is then an index into arrays."""

    def __init__(self, bundle: Bundle, size: int, freq=None, max_steps: int = 0):
        self.bundle, self.size, self.freq, self.max_steps = bundle, size, freq, max_steps
        self._models: OrderedDict[str, ForecastModel] = OrderedDict()
        self._paths: dict[str, Forecast] = {}
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
                dropped, _ = self._models.popitem(last=False)
                self._paths.pop(dropped, None)
            return model

    def path(self, entity: str, model: ForecastModel) -> Optional[Forecast]:
        """The model's forecast of its first `max_steps` steps, for a model without regressors
        (None for one with them, or when no path is kept)."""
        if model.exogenous_ or not self.max_steps or self.max_steps > _LONGEST_PATH:
            return None
        path = self._paths.get(entity)
        if path is None:
            future = pd.DataFrame({"ds": self.freq.after(self.bundle.index[entity].origin, self.max_steps)})
            path = model.forecast(future)
            with self._lock:
                if entity in self._models:
                    self._paths[entity] = path
        return path

    @property
    def paths_kept(self) -> int:
        return len(self._paths)

    def __len__(self) -> int:
        return len(self._models)


# Paths longer than this many steps are not kept (memory: 8 bytes x 5 series x steps per entity).
_LONGEST_PATH = 4096
_EPOCH_AS_NANOSECONDS = pd.Timestamp("1970-01-02", tz="UTC").value


class _Answer:
    """The response's columns as arrays, filled entity by entity, made a frame once."""

    def __init__(self, rows: int, levels: tuple[int, ...]):
        self.levels, self.widest = levels, max(levels)
        self.yhat = np.empty(rows)
        self.bands = {lvl: (np.empty(rows), np.empty(rows)) for lvl in levels}
        self.model = np.empty(rows, dtype=object)
        self.status = np.empty(rows, dtype=object)
        self.origin = np.empty(rows, dtype="datetime64[ns]")
        self.reconciliation = np.full(rows, None, dtype=object)

    def fill(self, rows: np.ndarray, forecast: Forecast, pick: np.ndarray, champion: str, status: str,
             origin: pd.Timestamp, model: ForecastModel) -> None:
        self.yhat[rows] = forecast.mean[pick]
        for level in self.levels:
            lower, upper = forecast.bounds[level]
            self.bands[level][0][rows], self.bands[level][1][rows] = lower[pick], upper[pick]
        self.model[rows], self.status[rows] = champion, status
        self.origin[rows] = origin.tz_convert(None).to_datetime64()
        if model.reconciled_steps:      # the published horizon of a reconciled hierarchy's entity
            reconciled = rows[pick < model.reconciled_steps]
            self.reconciliation[reconciled] = model.adjustment_["method"]

    def frame(self, columns: list[str], entities: np.ndarray, ds: np.ndarray, run_id: str,
              as_text: bool) -> pd.DataFrame:
        """The answer (`ds`: nanoseconds since 1970); `as_text`: timestamps as ISO 8601 UTC strings
        (what MLflow clients read)."""
        lower, upper = self.bands[self.widest]
        origin = self.origin.view("int64")
        data = {"entity_id": entities, "ds": iso_utc(ds) if as_text else as_utc(ds), "yhat": self.yhat,
                "yhat_lower": lower, "yhat_upper": upper}
        for level in self.levels:
            data[f"yhat_lower_{level}"], data[f"yhat_upper_{level}"] = self.bands[level]
        if as_text and (origin == origin[0]).all():     # one entity, or entities trained together
            origin_text = np.full(len(origin), iso_utc(origin[:1])[0], dtype=object)
        else:
            origin_text = iso_utc(origin) if as_text else as_utc(origin)
        data.update(model=self.model, status=self.status, run_id=np.full(len(ds), run_id, dtype=object),
                    forecast_origin=origin_text, reconciliation=self.reconciliation)
        return frame_of({c: data[c] for c in columns})


def iso_utc(nanoseconds: np.ndarray) -> np.ndarray:
    """'2008-07-01T00:00:00Z' for each UTC instant (what strftime writes, at numpy's speed)."""
    seconds = np.asarray(nanoseconds, dtype="int64").view("datetime64[ns]").astype("datetime64[s]")
    return np.datetime_as_string(seconds, unit="s", timezone="UTC").astype(object)


@dataclass(frozen=True)
class _Request:
    """A validated request as arrays: normalized ids (and each distinct one's code), UTC stamps as
    nanoseconds since 1970, regressors sent (as floats)."""

    entities: np.ndarray
    codes: np.ndarray
    names: np.ndarray
    ds: np.ndarray
    exogenous: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.entities)


class Router:
    def __init__(self, folder: str | Path, cache_size: int = 1024, max_rows: Optional[int] = None):
        self.bundle = Bundle(folder)
        self.max_rows = max_rows
        self.meta = self.bundle.meta
        self.freq = frequency(self.meta.freq)
        self.cache = ModelCache(self.bundle, cache_size, self.freq, self.meta.max_steps)
        self.columns = output_columns(self.meta.levels)

    def predict(self, request: pd.DataFrame, timestamps_as_text: bool = False) -> pd.DataFrame:
        """The forecast rows for `request`, in its order (`timestamps_as_text`: `ds` and
        `forecast_origin` as ISO 8601 UTC strings)."""
        request = self._validated(request)
        codes, names = request.codes, request.names
        # Grid steps and grid checks for every row at once (each row from its entity's origin).
        origins = np.array([self.bundle.index[name].origin.value for name in names], dtype="int64")
        steps = self.freq.steps(origins[codes], request.ds)
        on_grid = self.freq.on_grid(request.ds)
        answer = _Answer(len(request), self.meta.levels)
        if len(names) == 1:                         # the common online case: one entity
            groups = [np.arange(len(request))]
        else:
            order = np.argsort(codes, kind="stable")
            groups = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
        for entity, rows in zip(names, groups):
            self._forecast_entity(entity, rows, steps[rows], on_grid[rows], request, answer)
        return answer.frame(self.columns, request.entities, request.ds, self.meta.run_id, timestamps_as_text)

    def _validated(self, request: pd.DataFrame) -> _Request:
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
        entities, codes, names = _normalized_ids(request["entity_id"])     # as ingest stored them
        if (codes < 0).any():
            raise RequestError(f"column 'entity_id' is empty in row(s) {_rows(codes < 0)}")
        unknown = sorted(set(names) - self.bundle.index.keys())
        if unknown:
            raise RequestError(f"unknown entity {_listing(unknown)}: the routing model (run {self.meta.run_id}) "
                               f"has {self.meta.entities} entities, e.g. {self.bundle.first_entity()!r}")
        exogenous = {c: _numbers(request[c], c) for c in self.meta.exogenous if c in request.columns}
        return _Request(entities, codes, names, _timestamps(request["ds"]), exogenous)

    def _forecast_entity(self, entity: str, rows: np.ndarray, steps: np.ndarray, on_grid: np.ndarray,
                         request: _Request, answer: _Answer) -> None:
        """Forecast `entity` at the request's `rows` (`steps`: grid steps after the entity's
        training end; `on_grid`: whether each stamp is on the grid) into `answer`."""
        entry = self.bundle.index[entity]
        if (steps < 1).any():
            first = as_utc(request.ds[rows][steps < 1].min())
            raise RequestError(f"entity {entity!r}: ds {first.isoformat()} is not after the training end "
                               f"{entry.origin.isoformat()}; ask for timestamps after it")
        if not on_grid.all():
            odd = as_utc(request.ds[rows][~on_grid][0])
            raise RequestError(f"entity {entity!r}: ds {odd.isoformat()} is off the series grid ({self.freq.label}: "
                               f"{', '.join(t.isoformat() for t in self.freq.after(entry.origin, 2))}, ...)")
        horizon = int(steps.max())
        if horizon > self.meta.max_steps:
            last = as_utc(request.ds[rows].max())
            raise RequestError(f"entity {entity!r}: ds {last.isoformat()} is {horizon} steps after the training "
                               f"end; this model answers up to {self.meta.max_steps} steps (routing.max_steps)")
        model = self.cache.get(entity)
        forecast = self.cache.path(entity, model)
        if forecast is None:
            forecast = model.forecast(self._future(entity, entry, model, rows, steps, horizon, request))
        answer.fill(rows, forecast, steps - 1, entry.champion, entry.status, entry.origin, model)

    def _future(self, entity: str, entry, model: ForecastModel, rows: np.ndarray, steps: np.ndarray, horizon: int,
                request: _Request) -> pd.DataFrame:
        """The model's future rows up to `horizon`, with the regressors the request sent (steps it
        did not ask for take the nearest requested value)."""
        future = pd.DataFrame({"ds": self.freq.after(entry.origin, horizon)})
        for column in entry.exogenous:
            sent = request.exogenous[column][rows] if column in request.exogenous else None
            if sent is None or np.isnan(sent).any():
                raise RequestError(f"entity {entity!r}: column {column!r} is required (the {entry.champion} model "
                                   "was fitted with it) and must have a value on every row")
            self._check_seen(entity, entry.champion, model, column, sent, rows)
            values = pd.Series(np.nan, index=range(horizon))
            values[steps - 1] = sent
            future[column] = values.ffill().bfill().to_numpy()
        return future

    def _check_seen(self, entity: str, champion: str, model: ForecastModel, column: str, sent: np.ndarray,
                    rows: np.ndarray) -> None:
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


def _normalized_ids(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids as ingest stored them (engine.normalize.entity_id), each distinct value normalized once,
    with each row's code into the distinct normalized ids (-1 and None where the id is missing)."""
    codes, uniques = pd.factorize(values.to_numpy())
    normalized = [entity_id(v) for v in uniques]
    if len(set(normalized)) < len(normalized):       # spellings of one id ("7" and 7): one code each
        codes_of, names = pd.factorize(np.array(normalized, dtype=object))
        codes, normalized = np.where(codes < 0, -1, codes_of[codes]), list(names)
    names = np.array(normalized + [None], dtype=object)
    return names[codes], codes, names[:-1]      # code -1 (a missing id) picks the trailing None


def _timestamps(values: pd.Series) -> np.ndarray:
    """UTC timestamps (as nanoseconds since 1970) from datetimes, ISO strings or epoch numbers;
    naive values are taken as UTC."""
    parsed = _iso_seconds(values.to_numpy()) if values.dtype == object else None
    if parsed is None:
        try:
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                stamps = from_epoch(values)
            else:
                stamps = pd.to_datetime(values, utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise RequestError(f"column 'ds' must hold timestamps such as '2008-07-01T00:00:00Z' ({exc})") from None
        parsed = pd.DatetimeIndex(stamps).as_unit("ns").asi8
    missing = parsed == NAT
    if missing.any():
        raise RequestError(f"column 'ds' is empty in row(s) {_rows(missing)}")
    if (parsed < _EPOCH_AS_NANOSECONDS).any():
        # MLflow's schema cast reads an integer as nanoseconds since 1970 before this code sees it.
        raise RequestError(f"column 'ds' holds {as_utc(parsed.min()).isoformat()}, which is an integer epoch read as "
                           "nanoseconds; send ISO 8601 strings such as '2008-07-01T00:00:00Z'")
    return parsed


# Where 'YYYY-MM-DDTHH:MM:SS' has digits, and the separators it has elsewhere ('T' or ' ' at 10).
_DIGITS = np.array([i for i in range(19) if i not in (4, 7, 10, 13, 16)])
_SEPARATORS = {4: "-", 7: "-", 10: "T ", 13: ":", 16: ":"}


def _iso_seconds(values: np.ndarray) -> Optional[np.ndarray]:
    """Nanoseconds since 1970 for text stamps that are all 'YYYY-MM-DDTHH:MM:SS' (or with a space
    for the 'T'), naive or ending in 'Z': what MLflow clients send, parsed at numpy's speed. None
    for anything else (pandas parses that, with its error messages)."""
    text = values.astype(str)
    if text.dtype.itemsize // 4 not in (19, 20):
        return None
    chars = text.view(np.uint32).reshape(len(text), -1)
    digits = chars[:, _DIGITS]
    if not ((digits >= ord("0")) & (digits <= ord("9"))).all():
        return None
    for at, allowed in _SEPARATORS.items():
        if not _one_of(chars[:, at], allowed):
            return None
    if chars.shape[1] == 20 and not _one_of(chars[:, 19], "Z\0"):
        return None
    try:
        return text.astype("U19").astype("datetime64[ns]").view("int64")
    except ValueError:          # e.g. hour 25: pandas says so
        return None


def _one_of(codes: np.ndarray, characters: str) -> bool:
    """Whether every code point is one of `characters`."""
    ok = codes == ord(characters[0])
    for character in characters[1:]:
        ok |= codes == ord(character)
    return bool(ok.all())


def _numbers(values: pd.Series, column: str) -> np.ndarray:
    converted = pd.to_numeric(values, errors="coerce")
    bad = converted.isna() & values.notna()
    if bad.any():
        raise RequestError(f"column {column!r} must be numeric; row {int(np.flatnonzero(bad)[0])} holds "
                           f"{values[bad].iloc[0]!r}")
    return converted.to_numpy(dtype="float64")


def _rows(mask) -> str:
    rows = np.flatnonzero(np.asarray(mask))
    return ", ".join(map(str, rows[:5])) + (" ..." if len(rows) > 5 else "")


def _listing(values: list[str]) -> str:
    shown = ", ".join(repr(v) for v in values[:5])
    return shown + (f" and {len(values) - 5} more" if len(values) > 5 else "")
