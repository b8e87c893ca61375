"""The per-entity model zoo: every model fits one history and forecasts with intervals."""
from __future__ import annotations

from engine.models.arima import ArimaModel
from typing import Any, Mapping, Optional

from engine.models.base import Forecast, ForecastModel, Hyperparameter, ModelError, ModelSpec, read_envelope
from engine.models.ensemble import EnsembleModel
from engine.models.ets import ETSModel
from engine.models.global_nn import GlobalNNModel
from engine.models.gpu_additive import GpuAdditiveModel
from engine.models.mstl import MSTLModel
from engine.models.naive import SeasonalNaiveModel
from engine.models.prophet import ProphetModel
from engine.models.tempreg import TempRegModel
from engine.models.theta import ThetaModel

MODEL_CLASSES: dict[str, type[ForecastModel]] = {cls.name: cls for cls in (
    SeasonalNaiveModel, ETSModel, ThetaModel, ArimaModel, MSTLModel, ProphetModel, TempRegModel, GpuAdditiveModel,
    GlobalNNModel, EnsembleModel)}
FALLBACK = SeasonalNaiveModel.name


def make_model(name: str, spec: ModelSpec, params: Optional[Mapping[str, Any]] = None,
               trained: Optional[Mapping[str, Mapping[str, Any]]] = None) -> ForecastModel:
    """A fresh, unfitted model by name, with hyperparameters `params` (declared defaults for the rest).
    `trained`: networks trained on the whole panel before the per-entity fits, by model name."""
    try:
        cls = MODEL_CLASSES[name]
    except KeyError:
        raise ModelError(f"Unknown model: {name!r}; known: {', '.join(MODEL_CLASSES)}") from None
    if cls is EnsembleModel:
        raise ModelError("the ensemble is built from backtested members: use EnsembleModel(spec, members, make_model)")
    if cls is GlobalNNModel:
        return cls(spec, params, (trained or {}).get(name))
    return cls(spec, params)


def load_model(blob: bytes) -> ForecastModel:
    """A fitted model back from `ForecastModel.to_bytes()`."""
    envelope = read_envelope(blob)
    cls = MODEL_CLASSES.get(envelope["model"])
    if cls is None:
        raise ModelError(f"serialized model {envelope['model']!r} is not known to this manymodels version")
    return cls.restore(ModelSpec.from_dict(envelope["spec"]), envelope["exogenous"], envelope["state"],
                       envelope.get("hyper"))   # models written before hyperparameters existed: defaults


__all__ = ["MODEL_CLASSES", "FALLBACK", "Forecast", "ForecastModel", "Hyperparameter", "ModelError", "ModelSpec",
           "make_model", "load_model"]
