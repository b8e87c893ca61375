"""Prophet with one seasonality per configured season length, the configured exogenous
columns as extra regressors (holidays arrive as the `is_holiday` regressor), and interval
bands at every configured level from one set of seeded predictive samples."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from engine.models.base import Forecast, ForecastModel, Hyperparameter

UNCERTAINTY_SAMPLES = 300


def _quiet() -> None:
    for name in ("cmdstanpy", "prophet"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        # cmdstanpy installs its own INFO handler unless the logger already has one.
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
    # prophet.plot logs an error when plotly is missing; we never use its interactive plots.
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)


class ProphetModel(ForecastModel):
    name = "prophet"
    summary = ("one seasonality per season length, the exogenous columns as regressors (GEFCom2012's holidays "
               "arrive as `is_holiday`), bands from seeded predictive samples")
    cost = (0.022, 0.27)
    uses_exogenous = True
    serves_with = ("prophet",)
    # Prophet's own defaults and the ranges its documentation recommends tuning over.
    hyperparameters = {
        "changepoint_prior_scale": Hyperparameter(0.05, "trend flexibility (larger: more changepoints used)",
                                                  low=0.001, high=0.5, log=True),
        "seasonality_prior_scale": Hyperparameter(10.0, "seasonality flexibility (smaller: damped seasons)",
                                                  low=0.01, high=10.0, log=True),
        "seasonality_mode": Hyperparameter("additive", "seasons and regressors add to or scale the trend",
                                           choices=("additive", "multiplicative")),
    }

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        _quiet()
        from prophet import Prophet
        step_days = self.spec.step_days
        span_days = len(y) * step_days
        model = Prophet(daily_seasonality=False, weekly_seasonality=False,
                        yearly_seasonality=span_days >= 2 * 365, uncertainty_samples=UNCERTAINTY_SAMPLES,
                        **self.hyper)
        for m in self.spec.usable_seasons(len(y)):
            period = m * step_days
            model.add_seasonality(name=f"season_{m}", period=period, fourier_order=4 if period <= 1 else 3)
        for column in self.exogenous_:
            model.add_regressor(column)
        frame = history[["ds", "y", *self.exogenous_]].assign(ds=lambda f: f["ds"].dt.tz_localize(None))
        self.model_ = model.fit(frame)

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        frame = future[["ds", *self.exogenous_]].assign(ds=lambda f: pd.to_datetime(f["ds"]).dt.tz_localize(None))
        # The point forecast needs no sampling; the bands come from one seeded draw below.
        self.model_.uncertainty_samples = 0
        try:
            mean = self.model_.predict(frame)["yhat"].to_numpy(dtype="float64")
        finally:
            self.model_.uncertainty_samples = UNCERTAINTY_SAMPLES
        # Seeded so that every backend draws the same samples for the same entity.
        state = np.random.get_state()
        np.random.seed(self.spec.seed)
        try:
            samples = self.model_.predictive_samples(frame)["yhat"]
        finally:
            np.random.set_state(state)
        bounds = {}
        for level in self.spec.levels:
            tail = (100 - level) / 200.0
            bounds[level] = (np.quantile(samples, tail, axis=1), np.quantile(samples, 1 - tail, axis=1))
        return Forecast(mean, bounds)

    def params(self) -> dict[str, Any]:
        return {"seasonalities": sorted(self.model_.seasonalities), "regressors": list(self.exogenous_),
                "changepoints": len(self.model_.changepoints)}

    def _state(self) -> dict[str, Any]:
        from prophet.serialize import model_to_json
        return {"prophet_json": model_to_json(self.model_)}

    def _restore(self, state: dict[str, Any]) -> None:
        _quiet()
        from prophet.serialize import model_from_json
        self.model_ = model_from_json(state["prophet_json"])
