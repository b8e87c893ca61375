"""Complex exponential smoothing by statsforecast's `AutoCES` (Svetunkov & Kourentzes): level and
"information potential" in one complex state, so it needs no choice between trend types;
seasonality (none, simple, partial, full) at the shortest usable season by AICc."""
from __future__ import annotations

from typing import Any

import numpy as np

from engine.models.nixtla import LibraryModel, library


class CESModel(LibraryModel):
    name = "ces"
    summary = ("statsforecast `AutoCES`: complex exponential smoothing, seasonality (none, simple, partial, full) "
               "at the shortest usable season by AICc")
    cost = (0.27, 0.28)
    kept = ("m", "seasontype", "par")

    def _library_fit(self, y: np.ndarray) -> dict:
        seasons = self.spec.usable_seasons(len(y))
        m = min(seasons) if seasons else 1
        return library("ces").auto_ces(y, m=m, model="Z" if m > 1 else "N")

    def _library_forward(self, y: np.ndarray, stored: dict) -> dict:
        return library("ces").forward_ces(stored, y)

    def _library_forecast(self, fitted: dict, horizon: int) -> dict:
        return library("ces").forecast_ces(fitted, horizon, level=list(self.spec.levels))

    def params(self) -> dict[str, Any]:
        return {"seasonality": self.fitted_model_["seasontype"], "season": self.fitted_model_["m"],
                **{k: round(float(v), 6) for k, v in self.fitted_model_["par"].items()}}
