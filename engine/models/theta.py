"""Theta by statsforecast's `AutoTheta`: the series deseasonalized by the shortest usable season
(classical multiplicative decomposition where a seasonality test says so), then the Theta line
of the chosen variant (standard, optimized, dynamic) with its smoothing parameters optimized."""
from __future__ import annotations

from typing import Any

import numpy as np

from engine.models.base import Hyperparameter
from engine.models.nixtla import LibraryModel, library

# statsforecast's variants: Standard, Optimized, Dynamic Standard, Dynamic Optimized Theta.
VARIANTS = {"auto": None, "standard": "STM", "optimized": "OTM", "dynamic": "DSTM", "dynamic_optimized": "DOTM"}


class ThetaModel(LibraryModel):
    name = "theta"
    summary = ("statsforecast `AutoTheta`: deseasonalized by the shortest usable season, the Theta variant "
               "`variant` (auto: the best in-sample of standard, optimized, dynamic and dynamic optimized)")
    cost = (0.0, 0.33)
    kept = ("m", "modeltype", "par")
    hyperparameters = {
        "variant": Hyperparameter("dynamic_optimized", "which Theta model (Fiorucci et al. 2016; auto tries all "
                                  "four, about four times the cost)", choices=tuple(VARIANTS)),
    }

    def _library_fit(self, y: np.ndarray) -> dict:
        seasons = self.spec.usable_seasons(len(y))
        return library("theta").auto_theta(y, m=min(seasons) if seasons else 1, model=VARIANTS[self.hyper["variant"]])

    def _library_forward(self, y: np.ndarray, stored: dict) -> dict:
        return library("theta").forward_theta(stored, y)

    def _library_forecast(self, fitted: dict, horizon: int) -> dict:
        return library("theta").forecast_theta(fitted, horizon, level=list(self.spec.levels))

    def params(self) -> dict[str, Any]:
        par = self.fitted_model_["par"]
        return {"variant": self.fitted_model_["modeltype"], "season": self.fitted_model_["m"],
                **{k: round(float(v), 6) for k, v in par.items()}}
