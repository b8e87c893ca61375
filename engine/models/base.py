"""What every per-entity forecaster is: fit one history, forecast with intervals, serialize.

A model sees one entity's history as a frame with ``ds``, ``y`` (no gaps, no NaN: the
trainer guarantees that) and the exogenous columns it was given. Its forecast is a
`Forecast`: the mean path and one (lower, upper) band per interval level.

Serialized models are zlib-compressed JSON in a versioned envelope, so a stored model can
be read without unpickling anything; models keep what they need to rebuild their fitted
state exactly (parameters, the fitted window) rather than library objects.
"""
from __future__ import annotations

import json
import warnings
import zlib
from statistics import NormalDist
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Mapping, Optional

import numpy as np
import pandas as pd

from engine import jsontext
from engine.errors import ManymodelsError
from engine.frequency import Frequency, frequency
from engine.models.regressors import Seen, from_state, seen_in, to_state

FORMAT = "manymodels-model"
FORMAT_VERSION = 2     # 2: the envelope names the implementation that fitted the state


class ModelError(ManymodelsError):
    """A model cannot fit or forecast the data it was given."""


@dataclass(frozen=True)
class ModelSpec:
    """What a model needs to know about the panel; built once from the config."""

    freq: str = "h"
    season_lengths: tuple[int, ...] = (24, 168)
    levels: tuple[int, ...] = (80, 95)
    exogenous: tuple[str, ...] = ()
    seed: int = 0
    max_history: int = 0       # most recent steps a model fits (0: all); long-history models see all
    # True: no forecast or bound below 0; None: so when the fitted history was never negative.
    nonnegative: Optional[bool] = None

    @property
    def frequency(self) -> Frequency:
        return frequency(self.freq)

    @property
    def step_days(self) -> float:
        """One grid step in days (a month's mean length for monthly data)."""
        return self.frequency.step_days

    def usable_seasons(self, n: int, cycles: int = 2) -> tuple[int, ...]:
        """Season lengths with at least `cycles` full cycles in `n` observations."""
        return tuple(s for s in self.season_lengths if s > 1 and n >= cycles * s)

    def to_dict(self) -> dict:
        return dict(_spec_dict(self))       # a copy: the cached one is every model's

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@lru_cache(maxsize=64)
def _spec_dict(spec: ModelSpec) -> dict:
    """`asdict` once per spec: every stored model of a run carries the same one (20 us each)."""
    return asdict(spec)


@dataclass
class Forecast:
    mean: np.ndarray
    bounds: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def clipped(self, floor: float) -> "Forecast":
        """No value below `floor`. Clipping is monotone, so bounds stay ordered and nested, and
        for a series that never goes below `floor` it changes no interval's coverage."""
        return Forecast(np.maximum(self.mean, floor),
                        {lvl: (np.maximum(lo, floor), np.maximum(hi, floor)) for lvl, (lo, hi) in self.bounds.items()})

    def with_widths(self, half: dict[int, np.ndarray]) -> "Forecast":
        """Each level's band as the mean plus or minus `half[level]` over its first steps (later
        steps keep the model's own band)."""
        bounds = dict(self.bounds)
        for level, width in half.items():
            lower, upper = (b.copy() for b in self.bounds[level])
            steps = min(len(width), len(self.mean))
            lower[:steps], upper[:steps] = self.mean[:steps] - width[:steps], self.mean[:steps] + width[:steps]
            bounds[level] = (lower, upper)
        return Forecast(self.mean, bounds)

    def shifted(self, delta: np.ndarray) -> "Forecast":
        """The mean and every bound moved by `delta` over their first steps (the rest as they are):
        a reconciled forecast keeps each entity's own interval widths around the coherent mean."""
        steps = min(len(delta), len(self.mean))
        pad = np.zeros(len(self.mean))
        pad[:steps] = delta[:steps]
        return Forecast(self.mean + pad, {lvl: (lo + pad, hi + pad) for lvl, (lo, hi) in self.bounds.items()})

    def at(self, steps: np.ndarray) -> "Forecast":
        """The forecast at `steps` (an index or a mask)."""
        return Forecast(self.mean[steps], {lvl: (lo[steps], hi[steps]) for lvl, (lo, hi) in self.bounds.items()})

    def columns(self) -> dict[str, np.ndarray]:
        """`yhat` and each level's bounds by column name (`yhat_lower_80`, ...)."""
        out = {"yhat": self.mean}
        for level, (lower, upper) in sorted(self.bounds.items()):
            out[f"yhat_lower_{level}"], out[f"yhat_upper_{level}"] = lower, upper
        return out

    def to_frame(self, ds: pd.DatetimeIndex | pd.Series) -> pd.DataFrame:
        return pd.DataFrame({"ds": np.asarray(ds), **self.columns()})


def z_score(level: float) -> float:
    """The standard normal quantile bounding a central `level`% interval (1.96 for 95)."""
    return NormalDist().inv_cdf(0.5 + level / 200.0)


def normal_bounds(mean: np.ndarray, sd: np.ndarray,
                  levels: tuple[int, ...]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    bounds = {}
    for level in levels:
        z = z_score(level)
        bounds[level] = (mean - z * sd, mean + z * sd)
    return bounds


@dataclass(frozen=True)
class Hyperparameter:
    """One tunable setting of a model: its default and the range a search may try.

    Numeric settings have inclusive bounds (`low`, `high`; `log` searches them on a log scale),
    categorical ones list their `choices`. The model zoo declares these once; the config's
    `model_params`, `tuning.space` and the tuned-parameter table are all checked against them.
    """

    default: Any
    help: str
    low: Optional[float] = None
    high: Optional[float] = None
    choices: tuple = ()
    integer: bool = False
    log: bool = False

    def check(self, value: Any) -> Any:
        """`value` as this setting's type, or a ValueError that says what is allowed."""
        if self.choices:
            if value not in self.choices:
                raise ValueError(f"must be one of {', '.join(map(str, self.choices))}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"must be a {'whole ' if self.integer else ''}number, got {value!r}")
        if self.integer and float(value) != int(value):
            raise ValueError(f"must be a whole number, got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"must be between {self.low:g} and {self.high:g}, got {value!r}")
        return int(value) if self.integer else float(value)

    def describe(self) -> str:
        if self.choices:
            allowed = " | ".join(map(str, self.choices))
        else:
            allowed = f"{'integer ' if self.integer else ''}{self.low:g}..{self.high:g}{' (log)' if self.log else ''}"
        return f"{allowed}, default {self.default!r}: {self.help}"


class ForecastModel(ABC):
    """Base class: public `fit`/`forecast` check inputs, subclasses implement `_fit`/`_forecast`."""

    # What a model declares about itself. The registry (engine.models.registry) reads these for
    # config validation, `make_model`, the partition planner's cost model and docs/models.md.
    name: ClassVar[str]
    summary: ClassVar[str] = ""                     # one line for the model table
    uses_exogenous: ClassVar[bool] = False
    long_history: ClassVar[bool] = False    # fits years (training.long_history), not max_history
    hyperparameters: ClassVar[dict[str, Hyperparameter]] = {}
    needs_sub_daily: ClassVar[bool] = False         # series.freq below a day (an hour-of-day pattern)
    needs_exogenous: ClassVar[tuple[str, ...]] = ()  # source.exogenous columns it cannot fit without
    needs_why: ClassVar[str] = ""                   # why, in a config error ("regresses load on temperature")
    needs_season: ClassVar[bool] = False            # at least one series.season_lengths entry > 1
    needs_torch: ClassVar[bool] = False             # trains with torch (the gpu extra)
    needs_trained_network: ClassVar[bool] = False   # applies a network trained on the whole panel first
    combines_candidates: ClassVar[bool] = False     # built from the other candidates' backtests
    refreshable: ClassVar[bool] = False     # `refreshed` carries its fit to a later window without the fit's search
    fits_ahead: ClassVar[bool] = False      # `fit_ahead` fits many histories in one batch (engine.training.ahead)
    # (fixed seconds, seconds per 1,000 history rows) of one fit and forecast on one core, from
    # benchmarks/model_cost.py on hourly data; the partition planner's estimate before a run.
    cost: ClassVar[tuple[float, float]] = (0.5, 1.0)
    # Which fitting code wrote a stored model's state (bumped when the state changes meaning), and
    # for a class kept for old models, the (name, implementation) whose stored models it reads.
    implementation: ClassVar[int] = 1
    reads: ClassVar[Optional[tuple[str, int]]] = None
    # The distributions a restored model needs to forecast: the routing model's requirements
    # list these for the champions it serves, so its environment installs nothing else.
    serves_with: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: ModelSpec, params: Optional[Mapping[str, Any]] = None):
        self.spec = spec
        self.hyper = self.resolve_params(params)
        self.exogenous_: tuple[str, ...] = ()
        self.seen_: dict[str, Seen] = {}        # the regressor values of the fitted history
        self.floor_: Optional[float] = None     # forecasts and bounds are clipped here (nonnegative series)
        # {"method", "delta"}: what hierarchical reconciliation added to each of the first steps
        self.adjustment_: Optional[dict[str, Any]] = None
        # {level: half-widths of the first steps}: conformal bands around the mean (training.intervals)
        self.intervals_: Optional[dict[str, list[float]]] = None
        self.fitted_ = False

    @classmethod
    def resolve_params(cls, params: Optional[Mapping[str, Any]]) -> dict[str, Any]:
        """Every declared hyperparameter: the given value (checked) or its default."""
        given = dict(params or {})
        unknown = sorted(set(given) - set(cls.hyperparameters))
        if unknown:
            known = ", ".join(cls.hyperparameters) or "none"
            raise ModelError(f"{cls.name}: unknown hyperparameter(s) {unknown}; it has: {known}")
        resolved = {}
        for key, declared in cls.hyperparameters.items():
            try:
                resolved[key] = declared.check(given.get(key, declared.default))
            except ValueError as exc:
                raise ModelError(f"{cls.name}: hyperparameter {key} {exc}") from None
        return resolved

    def fit(self, history: pd.DataFrame) -> "ForecastModel":
        history, y = self._fit_window(history)
        with warnings.catch_warnings():
            # Convergence chatter from statsmodels/prophet: the backtest judges the fit instead.
            # (Model modules import statsmodels at the top: importing it in here would let the
            # "always" filters statsmodels installs at import jump ahead of this one.)
            warnings.simplefilter("ignore")
            self._fit(history.reset_index(drop=True), y)
        self._fitted_on(history, y)
        return self

    @classmethod
    def fit_ahead(cls, spec: ModelSpec, params: Optional[Mapping[str, Any]], histories: list[pd.DataFrame],
                  device=None) -> int:
        """For `fits_ahead` models: fit `histories` in batches now, so that a later `fit` of one of
        them gets the same state without fitting alone (how many were fitted)."""
        raise NotImplementedError(f"{cls.name} does not fit ahead")

    @classmethod
    def fit_grid(cls, spec: ModelSpec, params: Optional[Mapping[str, Any]], ds: pd.DatetimeIndex, y: np.ndarray,
                 columns: Mapping[str, np.ndarray], device=None) -> list["ForecastModel"]:
        """For `fits_ahead` models: one model per row of `y` (E, T), all on the stamps `ds`, with
        regressors `columns` (name -> (E, T), no NaN), in batched calls: each is what `fit` makes of
        that row's frame (engine.training.panel)."""
        raise NotImplementedError(f"{cls.name} does not fit a panel")

    @classmethod
    def forget_ahead(cls) -> None:
        """Drop the states fitted ahead that no `fit` took."""
        return None     # nothing is fitted ahead unless a model overrides `fit_ahead`

    def refreshed(self, history: pd.DataFrame) -> "ForecastModel":
        """This fit carried over to `history` (the same series, further on) without its search:
        what backtests between refits use (`backtest.refit`, statsforecast's cross_validation
        `refit`), for `refreshable` models. State-space models re-run their states with their
        parameters fixed (statsforecast's `forward`), tempreg keeps its coefficients, arima keeps
        its order and re-estimates its coefficients (see each model's `refreshable`)."""
        if not self.refreshable or not self.fitted_:
            raise ModelError(f"{self.name}: only a fitted model whose parameters can be re-applied is refreshed")
        history, y = self._window(history)
        if any(c not in history or history[c].isna().any() for c in self.exogenous_):
            raise ModelError(f"{self.name}: the new history lacks exogenous column(s) it was fitted with")
        state = {**self._state(), **self._history_state(history.reset_index(drop=True), y)}
        model = type(self).restore(self.spec, list(self.exogenous_), state, self.hyper)
        model._fitted_on(history, y)
        return model

    def _history_state(self, history: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
        """The entries of `_state()` that hold the fitted window (for `refreshed`)."""
        raise NotImplementedError(f"{self.name} cannot be refreshed")

    def _fit_window(self, history: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """The rows and values `fit` fits, with `exogenous_` set to the regressors known on all of them."""
        history, y = self._window(history)
        if self.uses_exogenous:
            self.exogenous_ = tuple(c for c in self.spec.exogenous
                                    if c in history and history[c].notna().all())
        return history, y

    def _window(self, history: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """The rows this model fits (the recent `max_history` unless it is a long-history model)."""
        if not self.long_history and 0 < self.spec.max_history < len(history):
            history = history.iloc[-self.spec.max_history:]
        y = history["y"].to_numpy(dtype="float64")
        if len(y) == 0 or not np.isfinite(y).all():
            raise ModelError(f"{self.name}: history must be non-empty and free of NaN/inf")
        return history, y

    def _fitted_on(self, history: pd.DataFrame, y: np.ndarray) -> None:
        self._fitted_with(seen_in(history, self.exogenous_), y)

    def _fitted_with(self, seen: dict[str, Seen], y: np.ndarray) -> None:
        """Fitted on values `y` whose regressors took `seen`: the floor the forecasts keep."""
        self.seen_ = seen
        nonnegative = self.spec.nonnegative
        self.floor_ = 0.0 if nonnegative or (nonnegative is None and y.min() >= 0) else None
        self.fitted_ = True

    @property
    def floor_inferred(self) -> bool:
        """The 0 floor came from the history (never negative), not from the config."""
        return self.floor_ is not None and self.spec.nonnegative is None

    def forecast(self, future: pd.DataFrame) -> Forecast:
        """Forecast the rows of `future` (its ``ds`` continue the history on the grid)."""
        self._check_future([c for c in self.exogenous_ if c not in future or future[c].hasnans])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fc = self._forecast(future if _default_index(future) else future.reset_index(drop=True), len(future))
        return self._finished(fc, len(future))

    def forecast_columns(self, ds: pd.DatetimeIndex, columns: Mapping[str, np.ndarray]) -> Forecast:
        """`forecast` of the rows with stamps `ds` and regressor values `columns`, given as arrays
        (a panel of entities on one grid, engine.training.panel). Models that can forecast from
        arrays without a frame override it with the same arithmetic."""
        return self.forecast(pd.DataFrame({"ds": ds, **columns}))

    @classmethod
    def forecast_grid(cls, models: list["ForecastModel"], ds: pd.DatetimeIndex,
                      columns: Mapping[str, np.ndarray]) -> list[Optional[Forecast]]:
        """`forecast_columns` of each of `models` (fitted on one grid) at the stamps `ds`, row i of
        each of `columns` (name -> (E, steps)) being model i's regressors; None where a model
        cannot forecast (it meets the same error alone). Models that forecast a panel in one
        call override it with the same arithmetic."""
        out: list[Optional[Forecast]] = []
        for i, model in enumerate(models):
            try:
                out.append(model.forecast_columns(ds, {c: v[i] for c, v in columns.items()}))
            except Exception:  # noqa: BLE001 - the caller leaves the entity to the path that records it
                out.append(None)
        return out

    def _check_future(self, missing: list[str]) -> None:
        if not self.fitted_:
            raise ModelError(f"{self.name}: forecast() called before fit()")
        if missing:
            raise ModelError(f"{self.name}: future rows lack values for exogenous column(s) {missing}, "
                             "which this model was fitted with; supply them for every forecast step")

    def _finished(self, fc: Forecast, steps: int) -> Forecast:
        """The model's own forecast of `steps` rows, checked, with the bands, floor and
        reconciliation this fitted model carries."""
        if len(fc.mean) != steps or not np.isfinite(fc.mean).all():
            raise ModelError(f"{self.name}: produced a non-finite forecast")
        if self.intervals_:
            fc = fc.with_widths({int(lvl): np.asarray(w, dtype="float64") for lvl, w in self.intervals_.items()})
        if self.floor_ is not None:
            fc = fc.clipped(self.floor_)
        if self.adjustment_:
            fc = fc.shifted(np.asarray(self.adjustment_["delta"], dtype="float64"))
            if self.floor_ is not None:
                fc = fc.clipped(self.floor_)
        return fc

    @property
    def reconciled_steps(self) -> int:
        """How many steps from the training end carry the hierarchy's reconciled forecast."""
        return len(self.adjustment_["delta"]) if self.adjustment_ else 0

    @abstractmethod
    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None: ...

    @abstractmethod
    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast: ...

    def params(self) -> dict[str, Any]:
        """Chosen configuration, for logging (small, JSON-able)."""
        return {}

    def logged_params(self) -> dict[str, Any]:
        """What a child run logs: the fitted configuration and the hyperparameters it used."""
        return {**self.params(), **({"hyperparameters": self.hyper} if self.hyper else {})}

    @abstractmethod
    def _state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _restore(self, state: dict[str, Any]) -> None: ...

    def to_bytes(self) -> bytes:
        if not self.fitted_:
            raise ModelError(f"{self.name}: only fitted models can be serialized")
        envelope = {"format": FORMAT, "version": FORMAT_VERSION, "model": self.name,
                    "implementation": self.implementation, "spec": self.spec.to_dict(),
                    "hyper": self.hyper, "exogenous": list(self.exogenous_), "seen": to_state(self.seen_),
                    "floor": self.floor_, "adjustment": self.adjustment_, "intervals": self.intervals_,
                    "state": self._state()}
        return write_envelope(envelope)

    @classmethod
    def restore(cls, spec: ModelSpec, exogenous: list[str], state: dict[str, Any],
                hyper: Optional[Mapping[str, Any]] = None, seen: Optional[dict[str, list]] = None,
                floor: Optional[float] = None, adjustment: Optional[dict[str, Any]] = None,
                intervals: Optional[dict[str, list[float]]] = None) -> "ForecastModel":
        model = cls(spec, hyper)
        model.exogenous_ = tuple(exogenous)
        model.seen_ = from_state(seen)
        model.floor_, model.adjustment_, model.intervals_ = floor, adjustment, intervals
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model._restore(state)
        model.fitted_ = True
        return model


def read_envelope(blob: bytes) -> dict[str, Any]:
    try:
        envelope = jsontext.loads(zlib.decompress(blob).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"not a serialized manymodels model ({exc})") from None
    if envelope.get("format") != FORMAT:
        raise ModelError("not a serialized manymodels model (unknown format marker)")
    if envelope.get("version", 0) > FORMAT_VERSION:
        raise ModelError(f"model was written by a newer manymodels (format version {envelope['version']}); "
                         "upgrade manymodels to read it")
    return envelope


def write_envelope(envelope: dict[str, Any]) -> bytes:
    """The stored form of a model envelope (`read_envelope` reads it back)."""
    return zlib.compress(jsontext.dumps(envelope, default=_json_default).encode("utf-8"), 6)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def fourier_terms(steps: np.ndarray, seasons: tuple[int, ...], terms: tuple[int, ...]) -> np.ndarray:
    """sin/cos pairs per season; `steps` count grid steps from the start of the fitted window."""
    cols = [f(2 * np.pi * k * steps / m) for m, big_k in zip(seasons, terms)
            for k in range(1, big_k + 1) for f in (np.sin, np.cos)]
    return np.column_stack(cols) if cols else np.empty((len(steps), 0))


def fourier_order(season: int, cap: int) -> int:
    return max(1, min(cap, season // 2 - (1 if season % 2 == 0 else 0)))


def optional_array(values: Optional[list]) -> Optional[np.ndarray]:
    return None if values is None else np.asarray(values, dtype="float64")


def _default_index(frame: pd.DataFrame) -> bool:
    """The frame's rows are labelled 0..n-1 (what `_forecast` reads positionally)."""
    index = frame.index
    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
