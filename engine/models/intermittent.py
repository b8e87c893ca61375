"""Intermittent demand (meters and feeders with many zero readings), by statsforecast: Croston,
TSB, ADIDA and IMAPA.

Each forecasts a flat demand rate. Their bands are the empirical quantiles of the fitted window's
own values (demand that is zero most steps has no sensible normal band), kept around the rate
and never below zero for a series that never was.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from engine.models.base import Forecast, ForecastModel, Hyperparameter
from engine.models.nixtla import library

# statsforecast.models classes, by the `variant` hyperparameter.
CROSTON_VARIANTS = {"classic": "CrostonClassic", "sba": "CrostonSBA", "optimized": "CrostonOptimized"}


class IntermittentModel(ForecastModel):
    """A flat rate from a statsforecast intermittent-demand model, quantile bands from the history."""

    implementation = 2
    serves_with = ("statsforecast",)
    cost = (0.001, 0.0002)

    @abstractmethod
    def _library_model(self): ...

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        self.rate_ = float(self._library_model().forecast(y, h=1)["mean"][0])
        self.bands_ = {}
        for level in self.spec.levels:
            low, high = np.quantile(y, [0.5 - level / 200.0, 0.5 + level / 200.0])
            if y.min() >= 0:
                low = max(low, 0.0)
            self.bands_[level] = (min(float(low), self.rate_), max(float(high), self.rate_))
        self.zeros_ = float(np.mean(y == 0))

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        flat = np.full(horizon, self.rate_)
        bands = {lvl: (np.full(horizon, lo), np.full(horizon, hi)) for lvl, (lo, hi) in self.bands_.items()}
        return Forecast(flat, bands)

    def params(self) -> dict[str, Any]:
        return {"rate": round(self.rate_, 6), "zero_share": round(self.zeros_, 4)}

    def _state(self) -> dict[str, Any]:
        return {"rate": self.rate_, "bands": {str(k): list(v) for k, v in self.bands_.items()}, "zeros": self.zeros_}

    def _restore(self, state: dict[str, Any]) -> None:
        self.rate_, self.zeros_ = float(state["rate"]), float(state["zeros"])
        self.bands_ = {int(k): (float(lo), float(hi)) for k, (lo, hi) in state["bands"].items()}


class CrostonModel(IntermittentModel):
    name = "croston"
    summary = ("statsforecast Croston: demand size and interval smoothed apart (`variant` classic, sba "
               "(Syntetos-Boylan, bias-corrected) or optimized); flat rate, quantile bands")
    hyperparameters = {
        "variant": Hyperparameter("sba", "classic (alpha 0.1), sba (classic with the Syntetos-Boylan bias "
                                  "correction) or optimized (alpha fitted)", choices=tuple(CROSTON_VARIANTS)),
    }

    def _library_model(self):
        return getattr(library("models"), CROSTON_VARIANTS[self.hyper["variant"]])()


class TSBModel(IntermittentModel):
    name = "tsb"
    summary = ("statsforecast TSB (Teunter-Syntetos-Babai): demand size and probability smoothed, so the rate "
               "decays when demand stops; flat rate, quantile bands")
    hyperparameters: ClassVar[dict[str, Hyperparameter]] = {
        "alpha_d": Hyperparameter(0.1, "smoothing of the demand size", low=0.01, high=0.9),
        "alpha_p": Hyperparameter(0.1, "smoothing of the demand probability", low=0.01, high=0.9),
    }

    def _library_model(self):
        return library("models").TSB(alpha_d=self.hyper["alpha_d"], alpha_p=self.hyper["alpha_p"])


class ADIDAModel(IntermittentModel):
    name = "adida"
    summary = ("statsforecast ADIDA: demand aggregated over the mean inter-demand interval, smoothed, "
               "disaggregated; flat rate, quantile bands")

    def _library_model(self):
        return library("models").ADIDA()


class IMAPAModel(IntermittentModel):
    name = "imapa"
    summary = ("statsforecast IMAPA: ADIDA over every aggregation level up to the mean inter-demand interval, "
               "averaged; flat rate, quantile bands")

    def _library_model(self):
        return library("models").IMAPA()
