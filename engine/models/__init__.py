"""The per-entity model zoo: every model fits one history and forecasts with intervals.

Models register themselves by being a `ForecastModel` subclass in a module of this package
(engine.models.registry).
"""
from __future__ import annotations

from engine.models.base import Forecast, ForecastModel, Hyperparameter, ModelError, ModelSpec
from engine.models.ensemble import EnsembleModel
from engine.models.registry import (FALLBACK_MODEL, MODEL_CLASSES, MODEL_NAMES, load_model, make_model, model_class,
                                    model_costs)

__all__ = ["MODEL_CLASSES", "MODEL_NAMES", "FALLBACK_MODEL", "EnsembleModel", "Forecast", "ForecastModel",
           "Hyperparameter", "ModelError", "ModelSpec", "make_model", "model_class", "model_costs", "load_model"]
