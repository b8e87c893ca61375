"""ETS by statsforecast's `AutoETS` machinery (`ets_f`): trend (none or damped, and additive too at
daily and longer steps) and season (none or at the shortest usable season) chosen by AICc, as in
Hyndman's ets(); additive errors, and multiplicative ones too for positive series at daily or
longer steps.

Only the shortest usable season is an ETS seasonal state (a 168-slot weekly state is slow to
optimise and overfits); longer cycles are left to mstl/prophet/arima.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from engine.models.base import Hyperparameter, ModelError
from engine.models.nixtla import LibraryModel, library

# hyperparameter -> the (statsforecast trend letter, damped) fits compared by AICc. On sub-daily
# data the automatic choice is among none and damped: a plain additive trend extrapolated a week of
# hourly steps ahead cost 35% MASE (benchmarks/model_cost.py). At daily and longer steps it is
# AutoETS's own choice among all three.
TRENDS = {"auto": (("N", False), ("A", True)), "none": (("N", False),), "damped": (("A", True),),
          "additive": (("A", False),)}
_TREND_NAMES = {("N", "N"): "none", ("A", "N"): "additive", ("A", "D"): "damped"}


class ETSModel(LibraryModel):
    name = "ets"
    summary = ("statsforecast `AutoETS`: trend (none or damped; also additive at daily and longer steps) and "
               "season (none or at the shortest usable season) by AICc; additive error and season, also "
               "multiplicative ones for positive series at daily or longer steps")
    cost = (0.01, 0.27)
    kept = ("m", "components", "par", "n_params")
    hyperparameters = {
        "trend": Hyperparameter("auto", "trend component (auto: by AICc among none and damped below daily "
                                "steps, also additive at daily and longer)",
                                choices=tuple(TRENDS)),
        "seasonal": Hyperparameter("auto", "season of the shortest usable length (auto: by AICc at daily and "
                                   "longer steps, always below)",
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
        if season == "Z" and self.spec.frequency.sub_daily:
            # statsforecast's optimizer often leaves a 24-slot season short of its optimum, so AICc
            # then prefers no season on load that plainly has one (MASE 1.42 vs 1.06): sub-daily
            # energy data always has its daily cycle, so the season is kept there.
            season = "A"
        error = "A"
        if self.hyper["multiplicative"] == "auto" and not self.spec.frequency.sub_daily and y.min() > 0:
            error = "Z"
        options = TRENDS[self.hyper["trend"]]
        if self.hyper["trend"] == "auto" and not self.spec.frequency.sub_daily:
            options = (("Z", None),)    # AutoETS's own choice among none, additive and damped
        best = None
        for trend, damped in options:
            try:
                fitted = library("ets").ets_f(y, m=m, model=f"{error}{trend}{season}", damped=damped)
            except ValueError:
                continue
            if best is None or fitted["aicc"] < best["aicc"]:
                best = fitted
        if best is None:
            raise ModelError(f"ets: no trend/season configuration could be fitted to {len(y)} observations")
        return best

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
