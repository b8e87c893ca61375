"""ETS by statsforecast's `AutoETS`: additive errors; trend (none, additive or damped) and season
(none or additive at the shortest usable season) chosen by AICc, as in Hyndman's ets().

Only the shortest usable season is an ETS seasonal state (a 168-slot weekly state is slow to
optimise and overfits); longer cycles are left to mstl/prophet/arima.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from engine.models.base import Hyperparameter
from engine.models.nixtla import LibraryModel, library

# hyperparameter -> (statsforecast trend letter, damped): "Z" lets AICc choose among N, A, Ad.
TRENDS = {"auto": ("Z", None), "none": ("N", False), "damped": ("A", True), "additive": ("A", False)}
_TREND_NAMES = {("N", "N"): "none", ("A", "N"): "additive", ("A", "D"): "damped"}


class ETSModel(LibraryModel):
    name = "ets"
    summary = ("statsforecast `AutoETS`: trend (none, additive or damped) and season (none or at the shortest "
               "usable season) by AICc; additive error and season, also multiplicative ones for positive series at "
               "daily or longer steps")
    cost = (0.05, 0.25)
    kept = ("m", "components", "par", "n_params")
    hyperparameters = {
        "trend": Hyperparameter("auto", "trend component (auto: the lowest AICc of none, additive and damped)",
                                choices=tuple(TRENDS)),
        "seasonal": Hyperparameter("auto", "additive season of the shortest usable length (auto: by AICc)",
                                   choices=("auto", "none", "additive")),
        "multiplicative": Hyperparameter("auto", "also try multiplicative error and season (auto: for positive "
                                         "series at daily or longer steps; on thousands of sub-daily points it "
                                         "triples the fit)", choices=("auto", "never")),
    }

    def _library_fit(self, y: np.ndarray) -> dict:
        seasons = self.spec.usable_seasons(len(y))
        m = min(seasons) if seasons else 1
        season = "N" if m == 1 or self.hyper["seasonal"] == "none" else "A" if self.hyper["seasonal"] == "additive" \
            else "Z"
        trend, damped = TRENDS[self.hyper["trend"]]
        error = "A"
        if self.hyper["multiplicative"] == "auto" and not self.spec.frequency.sub_daily and y.min() > 0:
            error, season = "Z", "Z" if season == "Z" else season
        return library("ets").ets_f(y, m=m, model=f"{error}{trend}{season}", damped=damped)

    def _library_forward(self, y: np.ndarray, stored: dict) -> dict:
        model = {**stored, "par": np.asarray(stored["par"], dtype="float64"), "fit": None}
        return library("ets").forward_ets(model, y)

    def _library_forecast(self, fitted: dict, horizon: int) -> dict:
        return library("ets").forecast_ets(fitted, horizon, level=list(self.spec.levels))

    def params(self) -> dict[str, Any]:
        error, trend, season, damped = self.fitted_model_["components"][:4]
        return {"model": f"ETS({error},{trend}{'d' if damped == 'D' else ''},{season})",
                "trend": _TREND_NAMES.get((trend, damped), trend),
                "season": self.fitted_model_["m"] if season != "N" else 1,
                "aicc": round(float(self.fitted_model_["aicc"]), 3)}
