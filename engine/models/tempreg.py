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
            design = self._design(history.assign(**{TEMPERATURE: normal}))
        residuals = y - design @ beta
        self.sigma_ = float(np.sqrt(np.mean(residuals ** 2)))

    def _design(self, frame: pd.DataFrame) -> np.ndarray:
        ds = pd.DatetimeIndex(pd.to_datetime(frame["ds"], utc=True))
        hour, month, weekday = ds.hour.to_numpy(), ds.month.to_numpy(), ds.dayofweek.to_numpy()
        temp = (frame[TEMPERATURE].to_numpy(dtype="float64") - self.temp_center_) / self.temp_scale_
        years = (ds.as_unit("ns").asi8 - self.origin_) / (365.25 * 86400e9)
        hours, months = np.eye(24)[hour], np.eye(12)[month - 1]
        columns = [np.ones(len(ds))[:, None], years[:, None], months[:, 1:], np.eye(168)[weekday * 24 + hour][:, 1:]]
        for power in range(1, self.hyper["degree"] + 1):
            columns += [hours * temp[:, None] ** power, months * temp[:, None] ** power]
        if self.holiday_:
            columns.append(hours * frame[HOLIDAY].to_numpy(dtype="float64")[:, None])
        return np.hstack(columns)

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        mean = self._design(future) @ self.beta_
        bounds = {}
        for level in self.spec.levels:
            half = z_score(level) * self.sigma_
            bounds[level] = (mean - half, mean + half)
        return Forecast(mean, bounds)

    def params(self) -> dict[str, Any]:
        return {"coefficients": len(self.beta_), "holiday": self.holiday_, "sigma": round(self.sigma_, 6)}

    def _state(self) -> dict[str, Any]:
        return {"beta": self.beta_, "origin": self.origin_, "temp_center": self.temp_center_,
                "temp_scale": self.temp_scale_, "holiday": self.holiday_, "sigma": self.sigma_}

    def _restore(self, state: dict[str, Any]) -> None:
        self.beta_ = np.asarray(state["beta"], dtype="float64")
        self.origin_, self.sigma_ = int(state["origin"]), float(state["sigma"])
        self.temp_center_, self.temp_scale_ = float(state["temp_center"]), float(state["temp_scale"])
        self.holiday_ = bool(state["holiday"])
