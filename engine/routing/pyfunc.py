"""The routing model as an MLflow pyfunc: one registered model that serves every entity.

The bundle (engine.routing.bundle) is the model's only artifact; `load_context` opens its
index, shards and models load on first use into a bounded per-process cache. Request problems
become `MlflowException(INVALID_PARAMETER_VALUE)`, which MLflow's scoring server answers with
HTTP 400 and the message as JSON.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema

from engine.routing.bundle import Bundle, BundleMeta
from engine.routing.router import RequestError, Router, output_columns

ARTIFACT = "bundle"


class RoutingModel(mlflow.pyfunc.PythonModel):
    router: Optional[Router] = None

    def load_context(self, context) -> None:
        cache_size = int((context.model_config or {}).get("cache_size", 1024))
        self.router = Router(context.artifacts[ARTIFACT], cache_size)

    def predict(self, context, model_input: pd.DataFrame, params: Optional[dict[str, Any]] = None) -> pd.DataFrame:
        try:
            return self.router.predict(model_input)
        except RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


def signature(meta: BundleMeta) -> ModelSignature:
    inputs = [ColSpec("string", "entity_id"), ColSpec("datetime", "ds"),
              *(ColSpec("double", c, required=False) for c in meta.exogenous)]
    text = {"entity_id", "model", "status", "run_id"}
    outputs = [ColSpec("string" if c in text else "datetime" if c in ("ds", "forecast_origin") else "double", c)
               for c in output_columns(meta.levels)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example(folder: str | Path, steps: int = 3) -> pd.DataFrame:
    """A few future rows of the first entity, with its exogenous columns (held at zero)."""
    bundle = Bundle(folder)
    entity = bundle.first_entity()
    entry = bundle.index[entity]
    step = pd.tseries.frequencies.to_offset(bundle.meta.freq)
    ds = [(entry.origin + step * (i + 1)).tz_localize(None) for i in range(steps)]
    example = pd.DataFrame({"entity_id": [entity] * steps, "ds": ds})
    for column in bundle.meta.exogenous:
        example[column] = 0.0
    return example


def log_routing_model(folder: str | Path, cache_size: int, registered_model_name: Optional[str] = None,
                      name: str = "router"):
    """Log the bundle as a pyfunc model in the active run (and register it); returns ModelInfo."""
    return mlflow.pyfunc.log_model(name=name, registered_model_name=registered_model_name,
                                   **_model_arguments(folder, cache_size))


def save_routing_model(folder: str | Path, path: str | Path, cache_size: int) -> None:
    """The same model written to a local folder (no tracking server involved)."""
    mlflow.pyfunc.save_model(str(path), **_model_arguments(folder, cache_size))


def _model_arguments(folder: str | Path, cache_size: int) -> dict[str, Any]:
    bundle = Bundle(folder)
    return dict(python_model=str(Path(__file__).with_name("served.py")), artifacts={ARTIFACT: str(folder)},
                model_config={"cache_size": cache_size}, signature=signature(bundle.meta),
                input_example=input_example(folder), pip_requirements=_requirements())


def _requirements() -> list[str]:
    """The serving dependencies at the versions this model was built with (manymodels itself
    must be installed where the model is served: the pyfunc class lives in it)."""
    from importlib.metadata import version
    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "pandas", "numpy", "pyarrow", "scipy", "statsmodels",
                                                  "statsforecast", "prophet")]
