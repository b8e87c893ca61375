"""Temperature regression: the utility industry's multiple linear regression of load on
calendar and temperature (Hong's "vanilla" model, the GEFCom2012 benchmark's family).

    y ~ trend + month + weekday x hour + (hour + month) x (T, T^2, T^3) [+ holiday x hour]

fitted by least squares on a long history (`training.long_history`: years, so that every
month's temperature response is seen). It needs a `temperature` exogenous column; the future's
temperature comes from the caller (a weather forecast in gold) or, by default, from the
same hours of the same dates in earlier years (see `engine.training.entity.prepare`).
Intervals are normal. By default their spread is that of the residuals with each hour's
temperature replaced by its month-and-hour mean, as a forecast made with normal weather will
see it: the in-sample residuals, fitted on the temperatures that occurred, leave out the error
of not knowing the weather (their bands covered about half of what 80% should in GEFCom2012's
backtests). `bands: known_weather` keeps the in-sample spread, for ingested weather forecasts.
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
    }

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        if TEMPERATURE not in self.exogenous_:
            raise ModelError(f"{self.name}: needs a '{TEMPERATURE}' exogenous column (source.exogenous)")
        temp = history[TEMPERATURE].to_numpy(dtype="float64")
        self.origin_ = pd.Timestamp(history["ds"].iloc[0]).as_unit("ns").value
        self.temp_center_, self.temp_scale_ = float(temp.mean()), float(temp.std() or 1.0)
        self.holiday_ = HOLIDAY in self.exogenous_
        design = self._design(history)
        # Normal equations: a few hundred columns over years of hours, ~7x faster than QR on the design;
        # the minimum-norm solve absorbs the collinear (month/hour x temperature) columns.
        beta, *_ = np.linalg.lstsq(design.T @ design, design.T @ y, rcond=1e-10)
        self.beta_ = beta
        if self.hyper["bands"] == "normal_weather":
            ds = pd.DatetimeIndex(pd.to_datetime(history["ds"], utc=True))
            normal = pd.Series(temp).groupby([ds.month, ds.hour]).transform("mean").to_numpy()
            self._put_temperature(design, ds.hour.to_numpy(), ds.month.to_numpy(), normal)
        residuals = y - design @ beta
        self.sigma_ = float(np.sqrt(np.mean(residuals ** 2)))

    def _design(self, frame: pd.DataFrame) -> np.ndarray:
        """The regression's columns, in a stored model's order: 1, years, months 2..12, the week's
        hours 2..168, then per power of temperature its 24 by-hour and 12 by-month columns, then the
        24 holiday-by-hour columns. Filled in place: one-hot blocks as `np.hstack` of dense pieces
        cost more than the fit's normal equations on years of hours."""
        ds = pd.DatetimeIndex(pd.to_datetime(frame["ds"], utc=True))
        hour, month, weekday = ds.hour.to_numpy(), ds.month.to_numpy(), ds.dayofweek.to_numpy()
        rows = np.arange(len(ds))
        design = np.zeros((len(ds), _CALENDAR + 36 * self.hyper["degree"] + 24 * self.holiday_))
        design[:, 0] = 1.0
        design[:, 1] = (ds.as_unit("ns").asi8 - self.origin_) / (365.25 * 86400e9)
        later = month > 1
        design[rows[later], month[later]] = 1.0                       # columns 2..12: months 2..12
        slot = weekday * 24 + hour
        design[rows[slot > 0], 12 + slot[slot > 0]] = 1.0              # columns 13..179: week hours 1..167
        self._put_temperature(design, hour, month, frame[TEMPERATURE].to_numpy(dtype="float64"))
        if self.holiday_:
            design[rows, design.shape[1] - 24 + hour] = frame[HOLIDAY].to_numpy(dtype="float64")
        return design

    def _put_temperature(self, design: np.ndarray, hour: np.ndarray, month: np.ndarray,
                         temperature: np.ndarray) -> None:
        """(Re)write the temperature columns of `design` (same rows: same hours and months)."""
        rows = np.arange(len(hour))
        temp = (temperature - self.temp_center_) / self.temp_scale_
        for power in range(1, self.hyper["degree"] + 1):
            column, value = _CALENDAR + 36 * (power - 1), temp ** power
            design[rows, column + hour] = value
            design[rows, column + 23 + month] = value

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        mean = self._design(future) @ self.beta_
        bounds = {}
        for level in self.spec.levels:
            half = z_score(level) * self.sigma_
            bounds[level] = (mean - half, mean + half)
        return Forecast(mean, bounds)

    def params(self) -> dict[str, Any]:
        return {"coefficients": len(self.beta_), "holiday": self.holiday_, "sigma": round(self.sigma_, 6)}

    def _history_state(self, history: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
        return {}

    def _state(self) -> dict[str, Any]:
        return {"beta": self.beta_, "origin": self.origin_, "temp_center": self.temp_center_,
                "temp_scale": self.temp_scale_, "holiday": self.holiday_, "sigma": self.sigma_}

    def _restore(self, state: dict[str, Any]) -> None:
        self.beta_ = np.asarray(state["beta"], dtype="float64")
        self.origin_, self.sigma_ = int(state["origin"]), float(state["sigma"])
        self.temp_center_, self.temp_scale_ = float(state["temp_center"]), float(state["temp_scale"])
        self.holiday_ = bool(state["holiday"])
