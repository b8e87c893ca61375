"""Equal-weight combination of the best candidates by backtest (the trainer picks them).

The mean and each interval bound are averaged across members: simple, robust combinations
are hard to beat in forecast competitions (M4), and averaging bounds keeps bands sensible.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from engine.models.base import Forecast, ForecastModel, Hyperparameter, ModelError, ModelSpec
from engine.models.regressors import merged


class EnsembleModel(ForecastModel):
    name = "ensemble"
    summary = "equal-weight mean (and mean bands) of the `training.ensemble_size` best candidates by backtest"
    # Its members are already counted as candidates; combining them costs next to nothing.
    cost = (0.0, 0.0)
    combines_candidates = True
    uses_exogenous = True
    # The trainer combines the best `size` candidates (training.ensemble_size unless set here).
    hyperparameters = {"size": Hyperparameter(3, "how many of the best candidates are averaged", low=2, high=8,
                                              integer=True)}

    def __init__(self, spec: ModelSpec, members: Sequence[str] = (),
                 factory: Callable[[str, ModelSpec], ForecastModel] | None = None,
                 params: Optional[Mapping[str, Any]] = None):
        super().__init__(spec, params)
        self.member_names = tuple(members)
        self._factory = factory

    @classmethod
    def of_fitted(cls, spec: ModelSpec, members: Sequence[ForecastModel],
                  params: Optional[Mapping[str, Any]] = None) -> "EnsembleModel":
        """The combination of models already fitted on the same history (nothing is refitted)."""
        model = cls(spec, [m.name for m in members], params=params)
        model.members_ = list(members)
        model.exogenous_ = tuple(sorted({c for m in members for c in m.exogenous_}))
        model.seen_ = merged(m.seen_ for m in members)
        model.floor_ = next((m.floor_ for m in members if m.floor_ is not None), None)
        model.fitted_ = True
        return model

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        if len(self.member_names) < 2 or self._factory is None:
            raise ModelError("ensemble: needs at least two member models chosen by backtest")
        self.members_ = [self._factory(name, self.spec).fit(history) for name in self.member_names]
        self.exogenous_ = tuple(sorted({c for m in self.members_ for c in m.exogenous_}))

    @staticmethod
    def combine(forecasts: Sequence[Forecast]) -> Forecast:
        mean = np.mean([f.mean for f in forecasts], axis=0)
        levels = set.intersection(*(set(f.bounds) for f in forecasts))
        bounds = {lvl: (np.mean([f.bounds[lvl][0] for f in forecasts], axis=0),
                        np.mean([f.bounds[lvl][1] for f in forecasts], axis=0)) for lvl in levels}
        return Forecast(mean, bounds)

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        return self.combine([m.forecast(future) for m in self.members_])

    def params(self) -> dict[str, Any]:
        return {"members": list(self.member_names), **{m.name: m.logged_params() for m in self.members_}}

    def _state(self) -> dict[str, Any]:
        return {"members": [{"model": m.name, "implementation": m.implementation, "exogenous": list(m.exogenous_),
                             "hyper": m.hyper, "floor": m.floor_, "state": m._state()} for m in self.members_]}

    def _restore(self, state: dict[str, Any]) -> None:
        from engine.models.registry import stored_class
        self.members_ = [stored_class(m["model"], m.get("implementation", 1)).restore(
            self.spec, m["exogenous"], m["state"], m.get("hyper"), floor=m.get("floor")) for m in state["members"]]
        self.member_names = tuple(m["model"] for m in state["members"])
