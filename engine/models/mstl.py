"""MSTL: several seasonal cycles (e.g. 24 and 168 for hourly load) removed by statsforecast's
`mstl` decomposition, the seasonally adjusted series forecast by a non-seasonal ETS (as
statsforecast's MSTL model does with its default trend forecaster), each seasonal component
carried forward by repeating its last cycle."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from engine.models.base import Forecast, ForecastModel, ModelError, ModelSpec
from engine.models.ets import ETSModel
from engine.models.nixtla import library


class MSTLModel(ForecastModel):
    name = "mstl"
    implementation = 2      # statsforecast's decomposition and ETS; 1 was statsmodels' (statsmodels_zoo)
    serves_with = ("statsforecast",)
    summary = ("statsforecast `mstl` decomposition with every usable season (24 and 168 for hourly load), the "
               "adjusted series by non-seasonal ETS (`AutoETS`), seasonal components repeated")
    cost = (0.0, 0.35)
    needs_season = True
    trend_class: ClassVar[type[ForecastModel]] = ETSModel     # fits the seasonally adjusted series

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        # STL needs more than two cycles of a period.
        self.periods_ = tuple(m for m in self.spec.usable_seasons(len(y)) if m < len(y) // 2)
        if not self.periods_:
            raise ModelError(f"mstl: needs more than two full cycles of a season in "
                             f"{list(self.spec.season_lengths)}, the history has {len(y)} steps")
        self.periods_ = tuple(sorted(self.periods_))
        seasonal = self._seasonal(y)
        # Each component's last cycle, repeated forward.
        self.cycles_ = [seasonal[-m:, i] for i, m in enumerate(self.periods_)]
        adjusted = y - seasonal.sum(axis=1)
        self.trend_model_ = self.trend_class(self._trend_spec()).fit(pd.DataFrame({"y": adjusted}))

    def _trend_spec(self) -> ModelSpec:
        # The adjusted series can go below 0 where the whole cannot: the whole is clipped, not it.
        return replace(self.spec, season_lengths=(), nonnegative=False)

    def _seasonal(self, y: np.ndarray) -> np.ndarray:
        """One column per period of `self.periods_`: its seasonal component."""
        parts = library("mstl").mstl(y, period=list(self.periods_))
        # One period: a "seasonal" column; several: "seasonal24", "seasonal168", ...
        columns = [f"seasonal{m}" for m in self.periods_] if len(self.periods_) > 1 else ["seasonal"]
        return parts[columns].to_numpy(dtype="float64")

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        base = self.trend_model_.forecast(future)
        steps = np.arange(horizon)
        season = sum(cycle[steps % m] for cycle, m in zip(self.cycles_, self.periods_))
        return Forecast(base.mean + season, {lvl: (lo + season, hi + season) for lvl, (lo, hi) in base.bounds.items()})

    def params(self) -> dict[str, Any]:
        return {"periods": list(self.periods_), "trend": self.trend_model_.params()}

    def _state(self) -> dict[str, Any]:
        # The seasonal cycles are stored, not recomputed: restoring must be fast for online scoring.
        return {"periods": list(self.periods_), "cycles": [c.tolist() for c in self.cycles_],
                "trend_model": self.trend_model_._state()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.periods_ = tuple(state["periods"])
        self.cycles_ = [np.asarray(c, dtype="float64") for c in state["cycles"]]
        self.trend_model_ = self.trend_class.restore(self._trend_spec(), [], state["trend_model"])
