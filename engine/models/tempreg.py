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
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from engine.models.base import Forecast, ForecastModel, Hyperparameter, ModelError, z_score

TEMPERATURE, HOLIDAY = "temperature", "is_holiday"
_CALENDAR = 180      # intercept, years, 11 months, 167 week hours


class TempRegModel(ForecastModel):
    name = "tempreg"
    summary = ('the utility industry\'s multiple linear regression (Hong\'s "vanilla" model, the GEFCom2012 '
               "benchmark's family): trend, month, weekday x hour, and temperature, temperature^2, temperature^3 "
               "each by hour and by month (plus holiday x hour when `is_holiday` is a regressor), least squares on "
               "`training.long_history` steps (3 years hourly) so every month's temperature response is seen; "
               "normal bands from the residual spread of forecasts made with normal weather")
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
    }

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        if TEMPERATURE not in self.exogenous_:
            raise ModelError(f"{self.name}: needs a '{TEMPERATURE}' exogenous column (source.exogenous)")
        temp = history[TEMPERATURE].to_numpy(dtype="float64")
        self.origin_ = pd.Timestamp(history["ds"].iloc[0]).as_unit("ns").value
        self.temp_center_, self.temp_scale_ = float(temp.mean()), float(temp.std() or 1.0)
        self.holiday_ = HOLIDAY in self.exogenous_
        values, columns = self._entries(history)
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
            ds = pd.DatetimeIndex(pd.to_datetime(history["ds"], utc=True))
            normal = pd.Series(temp).groupby([ds.month, ds.hour]).transform("mean").to_numpy()
            self._put_temperature(values, normal)
            errors = y - self._matrix(values, columns) @ beta
        self.sigma_ = float(np.sqrt(np.mean(errors ** 2)))

    @property
    def _width(self) -> int:
        return _CALENDAR + 36 * self.hyper["degree"] + 24 * self.holiday_

    def _design(self, frame: pd.DataFrame):
        """The regression's design (sparse, rows by `_width` columns), in a stored model's column
        order: 1, years, months 2..12, the week's hours 2..168, then per power of temperature its
        24 by-hour and 12 by-month columns, then the 24 holiday-by-hour columns."""
        return self._matrix(*self._entries(frame))

    def _matrix(self, values: np.ndarray, columns: np.ndarray):
        from scipy.sparse import csr_matrix
        rows, per_row = values.shape
        return csr_matrix((values.ravel().copy(), columns.ravel(), np.arange(0, rows * per_row + 1, per_row)),
                          shape=(rows, self._width))

    def _entries(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Each row's nonzero entries of the design, the same slots in every row: (values, columns).
        A January row's month slot and a week's first hour's slot hold an explicit 0."""
        ds = pd.DatetimeIndex(pd.to_datetime(frame["ds"], utc=True))
        hour, month, weekday = ds.hour.to_numpy(), ds.month.to_numpy(), ds.dayofweek.to_numpy()
        slot = weekday * 24 + hour
        per_row = 4 + 2 * self.hyper["degree"] + self.holiday_
        values, columns = np.zeros((len(ds), per_row)), np.zeros((len(ds), per_row), dtype=np.int64)
        values[:, 0] = 1.0
        values[:, 1], columns[:, 1] = (ds.as_unit("ns").asi8 - self.origin_) / (365.25 * 86400e9), 1
        values[:, 2], columns[:, 2] = month > 1, np.maximum(month, 2)            # columns 2..12: months 2..12
        values[:, 3], columns[:, 3] = slot > 0, 12 + np.maximum(slot, 1)         # columns 13..179: week hours
        for power in range(1, self.hyper["degree"] + 1):
            first = _CALENDAR + 36 * (power - 1)
            columns[:, 2 + 2 * power], columns[:, 3 + 2 * power] = first + hour, first + 23 + month
        self._put_temperature(values, frame[TEMPERATURE].to_numpy(dtype="float64"))
        if self.holiday_:
            values[:, -1], columns[:, -1] = frame[HOLIDAY].to_numpy(dtype="float64"), self._width - 24 + hour
        return values, columns

    def _put_temperature(self, values: np.ndarray, temperature: np.ndarray) -> None:
        """(Re)write the temperature entries (by hour and by month, per power) of `_entries`' values."""
        temp = (temperature - self.temp_center_) / self.temp_scale_
        for power in range(1, self.hyper["degree"] + 1):
            values[:, 2 + 2 * power] = values[:, 3 + 2 * power] = temp ** power

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        mean = self._design(future) @ self.beta_
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
        """The latest error at the new history's end."""
        memory = self.hyper["memory"]
        if memory == 0 or len(y) < memory:
            return {"recent": 0.0}
        return {"recent": _recent(y[-memory:] - self._design(history.iloc[-memory:]) @ self.beta_, memory)}

    def _state(self) -> dict[str, Any]:
        return {"beta": self.beta_, "origin": self.origin_, "temp_center": self.temp_center_,
                "temp_scale": self.temp_scale_, "holiday": self.holiday_, "sigma": self.sigma_,
                "persistence": self.persistence_, "recent": self.recent_}

    def _restore(self, state: dict[str, Any]) -> None:
        self.beta_ = np.asarray(state["beta"], dtype="float64")
        self.origin_, self.sigma_ = int(state["origin"]), float(state["sigma"])
        self.temp_center_, self.temp_scale_ = float(state["temp_center"]), float(state["temp_scale"])
        self.holiday_ = bool(state["holiday"])
        # Models stored before `memory` carry no error persistence: they forecast as they did.
        self.persistence_ = np.asarray(state.get("persistence", []), dtype="float64")
        self.recent_ = float(state.get("recent", 0.0))


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
