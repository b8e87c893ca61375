"""`gpu_additive` in the model zoo: selectable in `models:`, backtested, stored and served like every
other model (its state is plain arrays; forecasting needs numpy only). The math is `gpu.additive`."""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import pandas as pd

from engine.models.base import Forecast, ForecastModel, Hyperparameter, ModelSpec, normal_bounds
from gpu import additive
from gpu.device import ENV


class GpuAdditiveModel(ForecastModel):
    """Prophet's additive model (trend with sparse changepoints, Fourier seasons, regressors),
    fitted by batched penalized least squares (`gpu.additive`). One entity per fit here; the
    whole panel in one batch through `fit_panel`."""

    name = "gpu_additive"
    summary = ("Prophet's additive model (piecewise-linear trend with a Laplace prior on 25 changepoint deltas, "
               "Fourier seasons per season length plus a yearly one from two years of history, the exogenous "
               "columns and holidays as regressors), fitted by batched penalized least squares in torch "
               "(docs/gpu.md); normal bands from the residual scale")
    # benchmarks/gpu_bench.py (one at a time, CPU).
    cost = (0.004, 0.005)
    needs_torch = True
    uses_exogenous = True
    hyperparameters = {
        "changepoint_prior_scale": Hyperparameter(0.05, "trend flexibility: scale of the Laplace prior on "
                                                  "changepoint deltas", low=0.001, high=0.5, log=True),
        "seasonality_prior_scale": Hyperparameter(10.0, "scale of the normal prior on season and regressor "
                                                  "coefficients", low=0.01, high=10.0, log=True),
        "n_changepoints": Hyperparameter(25, "potential trend changepoints", low=0, high=50, integer=True),
        "changepoint_range": Hyperparameter(0.8, "share of the history that holds changepoints", low=0.5,
                                            high=0.95),
        "yearly_order": Hyperparameter(10, "Fourier order of the yearly season (used from two years of "
                                       "history; 0: none)", low=0, high=20, integer=True),
    }

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        layout = additive.layout_for(self.spec.step_days, self.spec.season_lengths, self.hyper,
                                     len(self.exogenous_))
        exog = history[list(self.exogenous_)].to_numpy(dtype="float64")[None] if self.exogenous_ else None
        # One series is too small for a GPU to pay off: the CPU unless $MANYMODELS_DEVICE says otherwise.
        fit = additive.fit_batch(additive.days(history["ds"]), y[None], layout, self.hyper, exog,
                                 device=os.environ.get(ENV, "cpu"))
        self.state_ = fit.state(0)

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        exog = future[list(self.exogenous_)].to_numpy(dtype="float64") if self.exogenous_ else None
        mean = additive.forecast(self.state_, additive.days(future["ds"]), exog)
        return Forecast(mean, normal_bounds(mean, np.full(horizon, self.state_["sigma"]), self.spec.levels))

    def params(self) -> dict[str, Any]:
        layout = additive.layout_from_state(self.state_)
        return {"changepoints": layout.changepoints, "seasons_days": [round(p, 4) for p, _ in layout.seasons],
                "regressors": list(self.exogenous_), "sigma": round(self.state_["sigma"], 6)}

    def _state(self) -> dict[str, Any]:
        return self.state_

    def _restore(self, state: dict[str, Any]) -> None:
        self.state_ = {**state, **{k: np.asarray(state[k], dtype="float64") for k in ("beta", "exog_mean",
                                                                                      "exog_scale")}}


def fit_panel(panel: pd.DataFrame, spec: ModelSpec, params: Optional[dict[str, Any]] = None,
              device=None) -> dict[str, GpuAdditiveModel]:
    """Fit `gpu_additive` for every entity of a long frame (entity_id, ds, y, exogenous...) in one batch.

    Entities share the union of their timestamps as the grid; each is fitted on its own
    observed rows, so the result per entity is the per-entity fit's (same code, batch of one).
    Regressors are the spec's exogenous columns present in the frame.
    """
    hyper = GpuAdditiveModel.resolve_params(params)
    exogenous = tuple(c for c in spec.exogenous if c in panel)
    grid = pd.DatetimeIndex(pd.to_datetime(panel["ds"], utc=True).unique()).sort_values()
    entities = pd.Index(panel["entity_id"].unique())
    ds = pd.to_datetime(panel["ds"], utc=True)
    rows, cols = entities.get_indexer(panel["entity_id"]), grid.get_indexer(ds)
    y = np.full((len(entities), len(grid)), np.nan)
    y[rows, cols] = panel["y"].to_numpy(dtype="float64")
    exog = None
    if exogenous:
        exog = np.full((len(entities), len(grid), len(exogenous)), np.nan)
        exog[rows, cols] = panel[list(exogenous)].to_numpy(dtype="float64")
    layout = additive.layout_for(spec.step_days, spec.season_lengths, hyper, len(exogenous))
    fit = additive.fit_batch(additive.days(grid), y, layout, hyper, exog, device=device)
    models = {}
    for i, entity in enumerate(entities):
        model = GpuAdditiveModel(spec, hyper)
        model.exogenous_, model.state_, model.fitted_ = exogenous, fit.state(i), True
        models[str(entity)] = model
    return models
