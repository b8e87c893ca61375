"""`global_nn` in the model zoo: the network trained once on every entity (`gpu.global_nn`,
`engine.training.global_stage`), applied to one entity's recent history.

"Fitting" for one entity binds the trained network to the entity's last `lookback` values and
measures its residual spread per horizon step on the entity's own recent windows (the interval
width). The state carries the network's weights, so the routing model serves it with numpy.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from engine.models.base import Forecast, ForecastModel, ModelError, ModelSpec, normal_bounds
from gpu.global_nn import NetShape, decode_weights, forward_numpy, samples

SPREAD_WINDOWS = 8      # recent in-sample windows that measure the residual spread


class GlobalNNModel(ForecastModel):
    name = "global_nn"
    summary = ("one N-BEATS-style network with exogenous inputs trained on every entity before the per-entity "
               "stage, applied to the entity's last `global_nn.lookback` steps; bands from its residual spread per "
               "horizon step on the entity's recent windows")
    # Only applies the trained network; training it is the global stage's cost.
    cost = (0.002, 0.0)
    needs_torch = True
    needs_trained_network = True
    uses_exogenous = True

    def __init__(self, spec: ModelSpec, params: Optional[Mapping[str, Any]] = None,
                 trained: Optional[Mapping[str, Any]] = None):
        super().__init__(spec, params)
        self.trained = dict(trained) if trained else None

    def _net(self) -> tuple[NetShape, dict[str, np.ndarray], np.ndarray, np.ndarray]:
        net = self.trained
        shape = NetShape(**{**net["shape"], "exogenous": tuple(net["shape"]["exogenous"])})
        return (shape, _weights(net["digest"], net["weights"]), np.asarray(net["exog_center"], dtype="float64"),
                np.asarray(net["exog_scale"], dtype="float64"))

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        if not self.trained:
            raise ModelError("global_nn: no trained network; `manymodels train` trains it on every entity "
                             "before the per-entity models when global_nn is listed in models")
        if "unavailable" in self.trained:
            raise ModelError(f"global_nn: not trained for this run: {self.trained['unavailable']}")
        shape, weights, center, scale = self._net()
        lacking = [c for c in shape.exogenous if c not in self.exogenous_]
        if lacking:
            raise ModelError(f"global_nn: the network reads {lacking}, which this entity's history lacks")
        if len(y) < shape.lookback:
            raise ModelError(f"global_nn: needs {shape.lookback} steps of history, got {len(y)}")
        self.exogenous_ = shape.exogenous
        self.last_ = y[-shape.lookback:].copy()
        origins = np.arange(len(y) - shape.horizon, shape.lookback - 1, -shape.horizon)[:SPREAD_WINDOWS]
        if len(origins):
            exog = history[list(shape.exogenous)].to_numpy(dtype="float64")
            ds_ns = pd.DatetimeIndex(pd.to_datetime(history["ds"], utc=True)).as_unit("ns").asi8
            x, target, mean, spread = samples(y, ds_ns, exog, origins, shape, center, scale)
            error = (forward_numpy(weights, shape, x) - target) * spread[:, None]
            self.sigma_ = np.sqrt(np.mean(error.astype("float64") ** 2, axis=0))
        else:
            self.sigma_ = np.full(shape.horizon, float(np.std(y)))

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        shape, weights, center, scale = self._net()
        if horizon > shape.horizon:
            raise ModelError(f"global_nn: the network forecasts {shape.horizon} steps, {horizon} were asked for")
        L = shape.lookback
        y = np.concatenate([self.last_, np.zeros(shape.horizon)])
        exog = np.zeros((L + shape.horizon, len(shape.exogenous)))
        if shape.exogenous:
            ahead = future[list(shape.exogenous)].to_numpy(dtype="float64")
            exog[L:L + horizon] = ahead
            exog[L + horizon:] = ahead[-1]          # a shorter request: the network still reads a full horizon
        ds_ns = np.zeros(L + shape.horizon, dtype="int64")
        ds_ns[L] = pd.Timestamp(pd.to_datetime(future["ds"].iloc[0], utc=True)).as_unit("ns").value
        x, _, mean, spread = samples(y, ds_ns, exog, np.array([L]), shape, center, scale, with_target=False)
        path = forward_numpy(weights, shape, x)[0, :horizon].astype("float64") * spread[0] + mean[0]
        return Forecast(path, normal_bounds(path, self.sigma_[:horizon], self.spec.levels))

    def params(self) -> dict[str, Any]:
        return {"network": self.trained["digest"], "lookback": len(self.last_),
                "trained_by": self.trained.get("run_id")}

    def _state(self) -> dict[str, Any]:
        return {"net": self.trained, "last": self.last_, "sigma": self.sigma_}

    def _restore(self, state: dict[str, Any]) -> None:
        self.trained = state["net"]
        self.last_ = np.asarray(state["last"], dtype="float64")
        self.sigma_ = np.asarray(state["sigma"], dtype="float64")


_DECODED: dict[str, dict[str, np.ndarray]] = {}


def _weights(digest: str, encoded: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Decoded weights, once per network per process (every entity of a run shares one network)."""
    if digest not in _DECODED:
        if len(_DECODED) >= 8:
            _DECODED.clear()
        _DECODED[digest] = decode_weights(encoded)
    return _DECODED[digest]
