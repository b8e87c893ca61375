"""Theta method (statsmodels `ThetaModel`), deseasonalized by the shortest usable season."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from statsmodels.tsa.forecasting.theta import ThetaModel as _Theta

from engine.models.base import Forecast, ForecastModel, Hyperparameter


class ThetaModel(ForecastModel):
    name = "theta"
    summary = "statsmodels `ThetaModel`, deseasonalized by the shortest usable season"
    cost = (0.055, 0.073)
    hyperparameters = {
        "theta": Hyperparameter(2.0, "weight of the curvature (theta) line; 1 is simple exponential smoothing "
                                "with drift 0, 2 the classic Theta method", low=1.0, high=4.0),
    }

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        seasons = self.spec.usable_seasons(len(y))
        self.season_ = min(seasons) if seasons else 1
        self.y_ = y
        self._refit()

    def _refit(self) -> None:
        # Fitting is closed-form given the data, so a restored model refits to the same state.
        self.result_ = _Theta(pd.Series(self.y_), period=self.season_,
                              deseasonalize=self.season_ > 1, method="auto").fit()

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        mean = np.asarray(self.result_.forecast(horizon, theta=self.hyper["theta"]), dtype="float64")
        bounds = {}
        for level in self.spec.levels:
            frame = self.result_.prediction_intervals(horizon, theta=self.hyper["theta"], alpha=1 - level / 100.0)
            bounds[level] = (frame["lower"].to_numpy(), frame["upper"].to_numpy())
        return Forecast(mean, bounds)

    def params(self) -> dict[str, Any]:
        return {"season": self.season_, **{k: round(float(v), 6) for k, v in self.result_.params.items()}}

    def _state(self) -> dict[str, Any]:
        return {"season": self.season_, "y": self.y_}

    def _restore(self, state: dict[str, Any]) -> None:
        self.season_, self.y_ = int(state["season"]), np.asarray(state["y"], dtype="float64")
        self._refit()
