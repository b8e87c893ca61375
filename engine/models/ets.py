"""ETS (statsmodels `ETSModel`): additive errors; trend (none or damped additive) and season
(none or additive) chosen by AICc.

Only the shortest usable season is modelled as an ETS seasonal state (a 168-slot weekly
state is slow to optimise and overfits); longer cycles are left to mstl/prophet/arima.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from statsmodels.tsa.exponential_smoothing.ets import ETSModel as _StatsmodelsETS

from engine.models.base import Forecast, ForecastModel, Hyperparameter, ModelError

# (trend, damped): the automatic choice is among none and damped, as in Hyndman's ets() for
# additive errors; a plain additive trend only when asked for (it extrapolates a week badly).
TRENDS = {"auto": ((None, False), ("add", True)), "none": ((None, False),), "damped": (("add", True),),
          "additive": (("add", False),)}


def _ets(y: np.ndarray, trend, damped: bool, season: int):
    """`season` 1 means no seasonal component."""
    return _StatsmodelsETS(pd.Series(y), error="add", trend=trend, damped_trend=damped,
                    seasonal="add" if season > 1 else None, seasonal_periods=season if season > 1 else None)


class ETSModel(ForecastModel):
    name = "ets"
    summary = ("statsmodels `ETSModel`, additive error; trend (none or damped additive) and season (none or "
               "additive at the shortest usable season) chosen by AICc")
    cost = (0.98, 1.39)
    hyperparameters = {
        "trend": Hyperparameter("auto", "trend component (auto: the lower AICc of none and damped)",
                                choices=tuple(TRENDS)),
        "seasonal": Hyperparameter("auto", "additive season of the shortest usable length (auto: by AICc)",
                                   choices=("auto", "none", "additive")),
    }

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        seasons = self.spec.usable_seasons(len(y))
        choices = sorted({1, min(seasons)} if seasons else {1}, reverse=True)
        if self.hyper["seasonal"] != "auto":
            choices = [min(seasons) if seasons and self.hyper["seasonal"] == "additive" else 1]
        best = None
        # AICc compares models fitted to the same observations, seasonal or not (statsmodels'
        # ETS likelihood covers every observation), as in Hyndman's ets().
        for season in choices:
            for trend, damped in TRENDS[self.hyper["trend"]]:
                try:
                    result = _ets(y, trend, damped, season).fit(disp=False)
                except (ValueError, np.linalg.LinAlgError):
                    continue
                if np.isfinite(result.aicc) and (best is None or result.aicc < best[0]):
                    best = (result.aicc, trend, damped, season, result)
        if best is None:
            raise ModelError("ets: no trend/season configuration could be fitted")
        _, self.trend_, self.damped_, self.season_, self.result_ = best
        self.y_ = y

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        n = len(self.y_)
        bounds = {}
        prediction = self.result_.get_prediction(start=n, end=n + horizon - 1)
        for level in self.spec.levels:
            interval = np.asarray(prediction.pred_int(alpha=1 - level / 100.0))
            bounds[level] = (interval[:, 0], interval[:, 1])
        return Forecast(np.asarray(prediction.predicted_mean, dtype="float64"), bounds)

    def params(self) -> dict[str, Any]:
        return {"trend": self.trend_ or "none", "damped": self.damped_, "season": self.season_,
                "aicc": round(float(self.result_.aicc), 3)}

    def _state(self) -> dict[str, Any]:
        return {"trend": self.trend_, "damped": self.damped_, "season": self.season_,
                "params": np.asarray(self.result_.params), "y": self.y_}

    def _restore(self, state: dict[str, Any]) -> None:
        self.trend_, self.damped_, self.season_ = state["trend"], state["damped"], int(state["season"])
        self.y_ = np.asarray(state["y"], dtype="float64")
        self.result_ = _ets(self.y_, self.trend_, self.damped_, self.season_).smooth(
            np.asarray(state["params"], dtype="float64"))
