"""`gpu_additive` in the model zoo: selectable in `models:`, backtested, stored and served like every
other model (its state is plain arrays; forecasting needs numpy only). The math is `gpu.additive`."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from engine.models.base import Forecast, ForecastModel, Hyperparameter, ModelError, ModelSpec, normal_bounds
from engine.models.regressors import seen_rows
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
    fits_ahead = True
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
        inputs = self._inputs(history, y)
        self.state_ = _AHEAD.pop(inputs.key, None)
        if self.state_ is None:
            # One series is too small for a GPU to pay off: the CPU unless $MANYMODELS_DEVICE says otherwise.
            self.state_ = inputs.fit([inputs], os.environ.get(ENV, "cpu"))[0]

    def _inputs(self, history: pd.DataFrame, y: np.ndarray) -> "_Inputs":
        layout = additive.layout_for(self.spec.step_days, self.spec.season_lengths, self.hyper,
                                     len(self.exogenous_))
        return _Inputs(additive.days(history["ds"]), y, self._regressors(history), layout, self.hyper)

    def _regressors(self, rows: Mapping[str, Any]) -> Optional[np.ndarray]:
        """(T, E) values of the exogenous columns of a frame or of arrays by name (column by
        column: a list-indexed frame copies)."""
        if not self.exogenous_:
            return None
        return np.column_stack([np.asarray(rows[c], dtype="float64") for c in self.exogenous_])

    @classmethod
    def fit_grid(cls, spec: ModelSpec, params: Optional[dict[str, Any]], ds: pd.DatetimeIndex, y: np.ndarray,
                 columns: Mapping[str, np.ndarray], device=None) -> list["GpuAdditiveModel"]:
        """Every row of `y` fitted in one batched call (on CUDA when present), with the inputs and
        code `fit` gives one entity's frame: the same state, bit for bit."""
        first = cls(spec, params)
        exogenous = tuple(c for c in spec.exogenous if c in columns)
        layout = additive.layout_for(spec.step_days, spec.season_lengths, first.hyper, len(exogenous))
        exog = np.stack([columns[c] for c in exogenous], axis=-1) if exogenous else None
        fit = additive.fit_batch(additive.days(ds), y, layout, first.hyper, exog, device=device)
        seen = seen_rows({c: columns[c] for c in exogenous}, len(y))
        models = []
        for i in range(len(y)):
            model = first if i == 0 else cls(spec, params)
            model.exogenous_, model.state_ = exogenous, fit.state(i)
            model._fitted_with(seen[i], y[i])
            models.append(model)
        return models

    @classmethod
    def fit_ahead(cls, spec: ModelSpec, params: Optional[dict[str, Any]], histories: list[pd.DataFrame],
                  device=None) -> int:
        """Fit `histories` now, those with the same time grid in one batched call (on CUDA when
        present): a later `fit` of one of them, on any instance, takes its state instead of
        fitting alone, so training's per-entity code gets a batched fit's speed with the same
        result (`forget_ahead` drops what no fit took). Returns how many were fitted."""
        groups: dict[tuple, list[_Inputs]] = {}
        for history in histories:
            model = cls(spec, params)
            try:
                window, y = model._fit_window(history)
            except ModelError:
                continue            # the per-entity fit says why
            inputs = model._inputs(window.reset_index(drop=True), y)
            if inputs.key not in _AHEAD:
                groups.setdefault(inputs.grid, []).append(inputs)
        fitted = 0
        for batch in groups.values():
            try:
                states = batch[0].fit(batch, device)
            except Exception:  # noqa: BLE001 - e.g. a series with under 2 values: each then fits alone, and
                continue            # the one that cannot fails on its own, as it would without the batch
            _AHEAD.update((inputs.key, state) for inputs, state in zip(batch, states))
            fitted += len(batch)
        return fitted

    @classmethod
    def forget_ahead(cls) -> None:
        _AHEAD.clear()

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        return self._forecast_at(additive.days(future["ds"]), self._regressors(future))

    def forecast_columns(self, ds: pd.DatetimeIndex, columns: Mapping[str, np.ndarray]) -> Forecast:
        self._check_future([c for c in self.exogenous_ if c not in columns or np.isnan(columns[c]).any()])
        return self._finished(self._forecast_at(additive.days(ds), self._regressors(columns)), len(ds))

    @classmethod
    def forecast_grid(cls, models: list[ForecastModel], ds: pd.DatetimeIndex,
                      columns: Mapping[str, np.ndarray]) -> list[Optional[Forecast]]:
        """Every model's `forecast_columns` from one design of the panel (`additive.forecast_panel`)
        when they share a layout and regressors, else one by one."""
        layouts = {(additive.layout_from_state(m.state_), m.exogenous_, m.spec.levels) for m in models}
        if len(layouts) != 1 or any(c not in columns or np.isnan(columns[c]).any() for c in models[0].exogenous_):
            return super().forecast_grid(models, ds, columns)
        t = additive.days(ds)
        exog = np.stack([columns[c] for c in models[0].exogenous_], axis=-1) if models[0].exogenous_ else None
        means = additive.forecast_panel([m.state_ for m in models], t, exog)
        out: list[Optional[Forecast]] = []
        for model, own in zip(models, _with_bounds(models, means)):
            try:
                out.append(model._finished(own, len(ds)))
            except ModelError:
                out.append(None)
        return out

    def _forecast_at(self, t: np.ndarray, exog: Optional[np.ndarray]) -> Forecast:
        return _with_bounds([self], additive.forecast(self.state_, t, exog)[None])[0]

    def params(self) -> dict[str, Any]:
        layout = additive.layout_from_state(self.state_)
        return {"changepoints": layout.changepoints, "seasons_days": [round(p, 4) for p, _ in layout.seasons],
                "regressors": list(self.exogenous_), "sigma": round(self.state_["sigma"], 6)}

    def _state(self) -> dict[str, Any]:
        return self.state_

    def _restore(self, state: dict[str, Any]) -> None:
        self.state_ = {**state, **{k: np.asarray(state[k], dtype="float64") for k in ("beta", "exog_mean",
                                                                                      "exog_scale")}}


def _with_bounds(models: list[GpuAdditiveModel], means: np.ndarray) -> list[Forecast]:
    """Row i of `means` (E, steps) with model i's normal bands, every row's at once: the arithmetic
    is elementwise, so a row's bands are what it gets alone (`_forecast_at`, the one-row case)."""
    sigma = np.array([m.state_["sigma"] for m in models], dtype="float64")
    bounds = normal_bounds(means, np.repeat(sigma[:, None], means.shape[1], axis=1), models[0].spec.levels)
    return [Forecast(means[i], {level: (low[i], high[i]) for level, (low, high) in bounds.items()})
            for i in range(len(models))]


# States fitted ahead in batches (`GpuAdditiveModel.fit_ahead`), by a digest of their exact inputs.
_AHEAD: dict[bytes, dict[str, Any]] = {}


@dataclass(frozen=True)
class _Inputs:
    """What one fit reads: its times (days), values, regressors (T, E), columns and priors."""

    t: np.ndarray
    y: np.ndarray
    exog: Optional[np.ndarray]
    layout: additive.Layout
    hyper: dict[str, Any]

    @property
    def grid(self) -> tuple:
        """Fits with equal grids, columns and priors share one batched call."""
        return (self.t.tobytes(), self.layout, tuple(sorted(self.hyper.items())))

    @cached_property
    def key(self) -> bytes:
        digest = hashlib.blake2b(digest_size=20)
        for part in (self.t, self.y, self.exog if self.exog is not None else np.empty(0)):
            digest.update(np.ascontiguousarray(part).tobytes())
        digest.update(repr((self.layout, sorted(self.hyper.items()))).encode())
        return digest.digest()

    def fit(self, batch: list["_Inputs"], device) -> list[dict[str, Any]]:
        """The states of `batch` (fits on this one's grid), in one call."""
        exog = np.stack([b.exog for b in batch]) if self.layout.regressors else None
        fit = additive.fit_batch(self.t, np.stack([b.y for b in batch]), self.layout, self.hyper, exog,
                                 device=device)
        return [fit.state(i) for i in range(len(batch))]


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
