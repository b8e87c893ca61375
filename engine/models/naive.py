"""Seasonal naive: repeat the last season. Also the fallback for short or constant series."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from engine.models.base import Forecast, ForecastModel, normal_bounds


class SeasonalNaiveModel(ForecastModel):
    name = "seasonal_naive"
    summary = ("repeat the last cycle of the longest season that fits; normal bands widening with each cycle "
               "ahead. Also the fallback")
    cost = (0.0014, 0.0001)

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        # The longest configured season with one full cycle; plain naive (m=1) below that.
        self.season_ = max(self.spec.usable_seasons(len(y), cycles=1), default=1)
        self.last_ = y[-self.season_:]
        errors = y[self.season_:] - y[:-self.season_] if len(y) > self.season_ else np.diff(y)
        self.sigma_ = float(np.sqrt(np.mean(errors ** 2))) if len(errors) else 0.0

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        steps = np.arange(horizon)
        mean = self.last_[steps % self.season_]
        # Forecast error of a seasonal random walk grows with the number of whole seasons ahead.
        sd = self.sigma_ * np.sqrt(steps // self.season_ + 1)
        return Forecast(mean, normal_bounds(mean, sd, self.spec.levels))

    def params(self) -> dict[str, Any]:
        return {"season": self.season_}

    def _state(self) -> dict[str, Any]:
        return {"season": self.season_, "last": self.last_, "sigma": self.sigma_}

    def _restore(self, state: dict[str, Any]) -> None:
        self.season_, self.sigma_ = int(state["season"]), float(state["sigma"])
        self.last_ = np.asarray(state["last"], dtype="float64")
