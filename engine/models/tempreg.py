"""Temperature regression: the utility industry's multiple linear regression of load on
calendar and temperature (Hong's "vanilla" model, the GEFCom2012 benchmark's family).

    y ~ trend + month + weekday x hour + (hour + month) x (T, T^2, T^3) [+ holiday x hour]

fitted by least squares on a long history (`training.long_history`: years, so that every
month's temperature response is seen). It needs a `temperature` exogenous column; the future's
temperature comes from the caller (a weather forecast in gold) or, by default, from the
same hours of the same dates in earlier years plus what persists of the last day's departure
from them (`training.weather`; see `engine.training.history.prepare_scored`).
Intervals are normal. By default their spread is that of the residuals with each hour's
temperature replaced by its month-and-hour mean, as a forecast made with normal weather will
see it: the in-sample residuals, fitted on the temperatures that occurred, leave out the error
of not knowing the weather (their bands covered about half of what 80% should in GEFCom2012's
backtests). `bands: known_weather` keeps the in-sample spread, for ingested weather forecasts.

What temperature does not explain persists: a load above the fit today is likely above it
tomorrow, less so. With `memory` (steps; off by default) each forecast step adds the mean in-sample
error of the history's last `memory` steps times how much of such an error was still there that
many steps later in the history (a least-squares slope per step ahead, up to two of the longest
seasons; none after): regression with autocorrelated errors, in the direct form a fixed horizon
allows. Like a hierarchy's adjustment it belongs to the steps after the training end, whatever
temperatures a request sends. `memory: 24` lowered tempreg's weighted RMSE on 35 summer weeks of
GEFCom2012 by 2.1%, 0.5% and 0.9% (2005-2007, benchmarks/gefcom_memory.py), but raised the
default nightly's on the competition week from 99,712 to 106,586: a small mean gain with a wide
spread per week, so it stays opt-in.

Buildings store heat: load answers the hours and days before as well as this hour's temperature.
`lag_hours` and `lag_days` (off by default) add the recency effect of Wang, Liu & Hong (2016):
the temperatures 1..lag_hours hours before and the mean temperatures of the 1..lag_days days
before, each a polynomial by hour. The first forecast steps read their lags from the history's
last hours, which the fitted model keeps. Off by default because the forecast week's lags are
mostly the weather scenario's: with the persisted-departure scenario (`training.weather`) on 35
summer weeks of GEFCom2012, `lag_days: 1` scored 0.994, 1.018 and 1.004 of tempreg without lags
(2005-2007), and 12 hours with 2 days 0.989, 1.043 and 1.016 (benchmarks/gefcom_memory.py
--lags). Given the temperatures that came (`--known-weather`), `lag_days: 1` scored 0.892, 0.905
and 0.903: it is for gold with weather forecasts, where the lags are real temperatures.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from engine.models.base import Forecast, ForecastModel, Hyperparameter, ModelError, z_score

TEMPERATURE, HOLIDAY = "temperature", "is_holiday"
_CALENDAR = 180      # intercept, years, 11 months, 167 week hours


def _first_lagged_entry(degree: int) -> int:
    """A row's first lagged-temperature entry in `_entries`: after the 4 calendar entries and the
    by-hour and by-month entry of each power."""
    return 4 + 2 * degree


class TempRegModel(ForecastModel):
    name = "tempreg"
    summary = ('the utility industry\'s multiple linear regression (Hong\'s "vanilla" model, the GEFCom2012 '
               "benchmark's family): trend, month, weekday x hour, and temperature, temperature^2, temperature^3 "
               "each by hour and by month (plus holiday x hour when `is_holiday` is a regressor), least squares on "
               "`training.long_history` steps (3 years hourly) so every month's temperature response is seen; "
               "normal bands from the residual spread of forecasts made with normal weather; opt-in: error memory "
               "and the recency effect (lagged hourly and daily mean temperatures)")
    # Not measured by benchmarks/model_cost.py yet: the planner's default estimate.
    needs_exogenous = ("temperature",)
    needs_why = "regresses load on temperature"
    needs_sub_daily = True      # weekday x hour and temperature-by-hour terms
    cost = (0.5, 1.0)
    uses_exogenous = True
    long_history = True
    # Between backtest refits its coefficients (years of hours) are kept: its forecast of later hours
    # needs only their calendar and temperature, nothing of the rows added since.
    refreshable = True
    hyperparameters = {
        "degree": Hyperparameter(3, "highest power of temperature, by hour and by month", low=1, high=4,
                                 integer=True),
        "bands": Hyperparameter("normal_weather", "interval spread: of forecasts made with each hour's normal "
                                "(month-and-hour mean) temperature, or of the fit on the temperatures that occurred "
                                "(known_weather: for ingested weather forecasts)",
                                choices=("normal_weather", "known_weather")),
        "memory": Hyperparameter(0, "steps of the latest in-sample error carried into the forecast, by how it "
                                 "persisted in the history (0: none)", low=0, high=168, integer=True),
        "lag_hours": Hyperparameter(0, "recency effect: the temperatures 1..lag_hours hours before, each a "
                                    "polynomial by hour", low=0, high=24, integer=True),
        "lag_days": Hyperparameter(0, "recency effect: the mean temperatures of the 1..lag_days days before, each "
                                   "a polynomial by hour", low=0, high=7, integer=True),
    }

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        if TEMPERATURE not in self.exogenous_:
            raise ModelError(f"{self.name}: needs a '{TEMPERATURE}' exogenous column (source.exogenous)")
        temp = history[TEMPERATURE].to_numpy(dtype="float64")
        self.origin_ = pd.Timestamp(history["ds"].iloc[0]).as_unit("ns").value
        self.temp_center_, self.temp_scale_ = float(temp.mean()), float(temp.std() or 1.0)
        self.holiday_ = HOLIDAY in self.exogenous_
        ds = pd.DatetimeIndex(pd.to_datetime(history["ds"], utc=True))
        self.tail_ = self._tail(history)
        values, columns = self._entries(history, self._known(ds, temp))
        design = self._matrix(values, columns)
        # Normal equations: a few hundred columns over years of hours; each row has only a dozen
        # entries, so the sparse Gram matrix costs next to nothing (dense, 0.3 s a fit). The
        # minimum-norm solve absorbs the collinear (month/hour x temperature) columns.
        gram = (design.T @ design).toarray()
        beta, *_ = np.linalg.lstsq(gram, design.T @ y, rcond=1e-10)
        self.beta_ = beta
        errors = y - design @ beta
        self.persistence_ = _persistence(errors, self.hyper["memory"], 2 * max(self.spec.season_lengths, default=1))
        self.recent_ = _recent(errors, self.hyper["memory"])
        if self.hyper["bands"] == "normal_weather":
            normal = pd.Series(temp).groupby([ds.month, ds.hour]).transform("mean").to_numpy()
            self._put_temperature(values, normal, self._lagged(ds, normal, self._known(ds, normal)))
            errors = y - self._matrix(values, columns) @ beta
        self.sigma_ = float(np.sqrt(np.mean(errors ** 2)))

    @property
    def _lags(self) -> int:
        return self.hyper["lag_hours"] + self.hyper["lag_days"]

    @property
    def _width(self) -> int:
        return _CALENDAR + (36 + 24 * self._lags) * self.hyper["degree"] + 24 * self.holiday_

    def _design(self, frame: pd.DataFrame, known: Optional[pd.Series]):
        """The regression's design (sparse, rows by `_width` columns), in a stored model's column
        order: 1, years, months 2..12, the week's hours 2..168, then per power of temperature its
        24 by-hour and 12 by-month columns, then per lagged temperature and power its 24 by-hour
        columns, then the 24 holiday-by-hour columns. `known`: the temperatures the lags read."""
        return self._matrix(*self._entries(frame, known))

    def _matrix(self, values: np.ndarray, columns: np.ndarray):
        from scipy.sparse import csr_matrix
        rows, per_row = values.shape
        return csr_matrix((values.ravel().copy(), columns.ravel(), np.arange(0, rows * per_row + 1, per_row)),
                          shape=(rows, self._width))

    def _entries(self, frame: pd.DataFrame, known: Optional[pd.Series]) -> tuple[np.ndarray, np.ndarray]:
        """Each row's nonzero entries of the design, the same slots in every row: (values, columns).
        A January row's month slot and a week's first hour's slot hold an explicit 0."""
        ds = pd.DatetimeIndex(pd.to_datetime(frame["ds"], utc=True))
        hour, month, weekday = ds.hour.to_numpy(), ds.month.to_numpy(), ds.dayofweek.to_numpy()
        slot = weekday * 24 + hour
        degree = self.hyper["degree"]
        per_row = 4 + (2 + self._lags) * degree + self.holiday_
        values, columns = np.zeros((len(ds), per_row)), np.zeros((len(ds), per_row), dtype=np.int64)
        values[:, 0] = 1.0
        values[:, 1], columns[:, 1] = (ds.as_unit("ns").asi8 - self.origin_) / (365.25 * 86400e9), 1
        values[:, 2], columns[:, 2] = month > 1, np.maximum(month, 2)            # columns 2..12: months 2..12
        values[:, 3], columns[:, 3] = slot > 0, 12 + np.maximum(slot, 1)         # columns 13..179: week hours
        for power in range(1, self.hyper["degree"] + 1):
            first = _CALENDAR + 36 * (power - 1)
            columns[:, 2 + 2 * power], columns[:, 3 + 2 * power] = first + hour, first + 23 + month
        for lagged in range(self._lags * degree):     # lag k's power p: k * degree + p - 1
            columns[:, _first_lagged_entry(degree) + lagged] = _CALENDAR + 36 * degree + 24 * lagged + hour
        temp = frame[TEMPERATURE].to_numpy(dtype="float64")
        self._put_temperature(values, temp, self._lagged(ds, temp, known))
        if self.holiday_:
            values[:, -1], columns[:, -1] = frame[HOLIDAY].to_numpy(dtype="float64"), self._width - 24 + hour
        return values, columns

    def _put_temperature(self, values: np.ndarray, temperature: np.ndarray, lagged: np.ndarray) -> None:
        """(Re)write the temperature entries (by hour and by month, per power; then each lagged
        temperature's by hour, per power) of `_entries`' values."""
        degree = self.hyper["degree"]
        temp = (temperature - self.temp_center_) / self.temp_scale_
        lagged = (lagged - self.temp_center_) / self.temp_scale_
        for power in range(1, degree + 1):
            values[:, 2 + 2 * power] = values[:, 3 + 2 * power] = temp ** power
            for lag in range(self._lags):
                values[:, _first_lagged_entry(degree) + lag * degree + power - 1] = lagged[:, lag] ** power

    def _lagged(self, ds: pd.DatetimeIndex, own: np.ndarray, known: Optional[pd.Series]) -> np.ndarray:
        """The recency effect's regressors (Wang, Liu & Hong 2016), rows by lags: the temperature
        1..lag_hours hours before each stamp, then the mean temperature of each of the lag_days
        days before it (the 24 hours before, the 24 before those, ...), read from `known`
        (temperature by stamp, sorted; None without lags). Where `known` does not reach back, the row's `own`
        temperature stands in: the fit's first day, or a request that does not continue the
        history."""
        out = np.empty((len(ds), self._lags))
        if not self._lags:
            return out
        for lag in range(self.hyper["lag_hours"]):
            out[:, lag] = known.reindex(ds - pd.Timedelta(hours=lag + 1)).to_numpy()
        if self.hyper["lag_days"]:
            daily = known.rolling("24h").mean()         # the 24 hours up to each stamp
            for day in range(self.hyper["lag_days"]):
                out[:, self.hyper["lag_hours"] + day] = daily.reindex(ds - pd.Timedelta(hours=24 * day + 1)).to_numpy()
        missing = np.isnan(out)
        out[missing] = np.broadcast_to(own[:, None], out.shape)[missing]
        return out

    def _known(self, ds: pd.DatetimeIndex, temp: np.ndarray, before: Optional[pd.Series] = None):
        """Temperature by stamp, sorted, for the lags to read (None without lags): `before` (a
        history's tail), then the rows', which win a tie."""
        if not self._lags:
            return None
        known = pd.Series(temp, index=ds)
        if before is not None and len(before):
            known = pd.concat([before, known])
        if not known.index.is_unique:
            known = known[~known.index.duplicated(keep="last")]
        return known if known.index.is_monotonic_increasing else known.sort_index()

    def _tail(self, history: pd.DataFrame) -> pd.Series:
        """The history's last temperatures that the lags of the steps after it read."""
        if not self._lags or history.empty:
            return pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype="float64")
        ds = pd.DatetimeIndex(pd.to_datetime(history["ds"], utc=True))
        reach = pd.Timedelta(hours=max(self.hyper["lag_hours"], 24 * self.hyper["lag_days"]))
        keep = ds > ds[-1] - reach
        return pd.Series(history[TEMPERATURE].to_numpy(dtype="float64")[keep], index=ds[keep])

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        ds = pd.DatetimeIndex(pd.to_datetime(future["ds"], utc=True))
        temp = future[TEMPERATURE].to_numpy(dtype="float64")
        # The lags of the first steps read the history's last hours; a request's own rows win.
        known = self._known(ds, temp, self.tail_)
        mean = self._design(future, known) @ self.beta_
        carried = min(horizon, len(self.persistence_))     # `future` starts after the training end
        mean[:carried] += self.persistence_[:carried] * self.recent_
        bounds = {}
        for level in self.spec.levels:
            half = z_score(level) * self.sigma_
            bounds[level] = (mean - half, mean + half)
        return Forecast(mean, bounds)

    def params(self) -> dict[str, Any]:
        return {"coefficients": len(self.beta_), "holiday": self.holiday_, "sigma": round(self.sigma_, 6)}

    def _history_state(self, history: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
        """The latest error and temperatures at the new history's end."""
        tail = self._tail(history)
        state = {"tail_ds": tail.index.asi8, "tail_temp": tail.to_numpy(), "recent": 0.0}
        memory = self.hyper["memory"]
        if memory and len(y) >= memory:
            ds = pd.DatetimeIndex(pd.to_datetime(history["ds"], utc=True))
            known = self._known(ds, history[TEMPERATURE].to_numpy(dtype="float64"))
            design = self._design(history.iloc[-memory:], known)
            state["recent"] = _recent(y[-memory:] - design @ self.beta_, memory)
        return state

    def _state(self) -> dict[str, Any]:
        return {"beta": self.beta_, "origin": self.origin_, "temp_center": self.temp_center_,
                "temp_scale": self.temp_scale_, "holiday": self.holiday_, "sigma": self.sigma_,
                "persistence": self.persistence_, "recent": self.recent_,
                "tail_ds": self.tail_.index.asi8, "tail_temp": self.tail_.to_numpy()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.beta_ = np.asarray(state["beta"], dtype="float64")
        self.origin_, self.sigma_ = int(state["origin"]), float(state["sigma"])
        self.temp_center_, self.temp_scale_ = float(state["temp_center"]), float(state["temp_scale"])
        self.holiday_ = bool(state["holiday"])
        # Models stored before `memory` carry no error persistence: they forecast as they did.
        self.persistence_ = np.asarray(state.get("persistence", []), dtype="float64")
        self.recent_ = float(state.get("recent", 0.0))
        if "tail_ds" not in state:      # stored before the recency effect: no lags
            self.hyper = {**self.hyper, "lag_hours": 0, "lag_days": 0}
        stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(state.get("tail_ds", []), dtype="int64"), utc=True))
        self.tail_ = pd.Series(np.asarray(state.get("tail_temp", []), dtype="float64"), index=stamps)


def _recent(errors: np.ndarray, memory: int) -> float:
    """The mean of the last `memory` errors (0 without memory)."""
    if memory == 0 or len(errors) < memory:
        return 0.0
    return float(errors[-memory:].mean())


def _persistence(errors: np.ndarray, memory: int, steps: int) -> np.ndarray:
    """Per step ahead (1..`steps`), the least-squares slope of the error that many steps later on
    the mean of the `memory` errors before: how much of a recent error persists (empty without
    memory or with too short a history)."""
    if memory == 0 or len(errors) < memory + 2 * steps:
        return np.zeros(0)
    window = np.convolve(errors, np.ones(memory) / memory, mode="valid")      # mean of errors[t-memory+1..t]
    slopes = np.zeros(steps)
    for ahead in range(1, steps + 1):
        x, later = window[:-ahead], errors[memory - 1 + ahead:]
        x, later = x - x.mean(), later - later.mean()
        spread = x @ x
        slopes[ahead - 1] = (x @ later) / spread if spread > 0 else 0.0
    return slopes
