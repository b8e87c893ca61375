"""The routing model as an MLflow pyfunc: one registered model that serves every entity.

The bundle (engine.routing.bundle) is the model's only artifact; `load_context` opens its
index, shards and models load on first use into a bounded per-process cache. Request problems
become `MlflowException(INVALID_PARAMETER_VALUE)`, which MLflow's scoring server answers with
HTTP 400 and the message as JSON.

The model is self-contained: the engine's `engine` and `gpu` packages travel with it as
`code_paths` and its requirements are the distributions its champions need, so MLflow's own
environments (`--env-manager virtualenv`, `build-docker`) serve it without manymodels installed.
Its signature is what every MLflow client can send and read: `ds` and the regressors are
declared `Any` (MLflow's own datetime and double casts refuse UTC offsets and integers; the router
parses and checks them itself), regressors in the config's order (the order positional columns
are taken in), and timestamps come back as ISO 8601 strings (spark_udf cannot return timestamps
in its default struct result).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import BAD_REQUEST, INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType

from engine.routing.bundle import Bundle, BundleMeta
from engine.routing.router import RequestError, Router, output_columns

ARTIFACT = "bundle"
MAX_ROWS_ENV = "MANYMODELS_MAX_ROWS"     # engine.routing.server sets it for `manymodels serve`


class RoutingModel(mlflow.pyfunc.PythonModel):
    router: Optional[Router] = None

    def load_context(self, context) -> None:
        cache_size = int((context.model_config or {}).get("cache_size", 1024))
        # `manymodels serve --max-rows` bounds a request; in process (batch scoring) nothing does.
        self.router = Router(context.artifacts[ARTIFACT], cache_size, int(os.environ.get(MAX_ROWS_ENV, 0)) or None)
        _read_csv_with_any_columns()
        _write_frames_in_one_pass()

    def predict(self, context, model_input: pd.DataFrame, params: Optional[dict[str, Any]] = None) -> pd.DataFrame:
        try:
            return self.router.predict(model_input, timestamps_as_text=True)
        except RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


def _read_csv_with_any_columns() -> None:
    """Let MLflow's scoring server parse `text/csv` for a signature with `Any` columns.

    Its CSV reader asks every input column for a pandas dtype and fails outright on `Any`
    (MLflow 3.17); JSON requests are unaffected. The replacement reads `Any` columns as text
    (the router parses them) and the others as MLflow does; other schemas go to MLflow's own."""
    from mlflow.pyfunc import scoring_server

    original = scoring_server.parse_csv_input
    if getattr(original, "reads_any_columns", False):
        return

    def parse_csv_input(csv_input, schema: Optional[Schema] = None):
        if schema is None or not any(isinstance(c.type, AnyType) for c in schema.inputs):
            return original(csv_input, schema)
        dtypes = {c.name: object if isinstance(c.type, AnyType) else c.type.to_pandas() for c in schema.inputs}
        try:
            return pd.read_csv(csv_input, dtype=dtypes)
        except Exception as exc:  # noqa: BLE001 - answered as MLflow answers an unreadable body: a 400
            scoring_server._handle_serving_error(
                error_message=f"Failed to parse input as CSV with a header row ({exc})", error_code=BAD_REQUEST)

    parse_csv_input.reads_any_columns = True
    scoring_server.parse_csv_input = parse_csv_input


def _write_frames_in_one_pass() -> None:
    """Let MLflow's scoring server write a DataFrame answer as the same JSON, faster.

    It writes `{"predictions": frame.to_dict(orient="records")}` with `json.dump`, which runs
    Python's pure-Python encoder (only one-shot `json.dumps` uses the C one) after a per-cell
    conversion in pandas: 90 ms of a 2,400-row answer's 110 (MLflow 3.17). The replacement
    (`records_json`) writes the same bytes column by column. Answers other than float/text frames,
    and answers with metadata, go to MLflow's own writer."""
    from mlflow.pyfunc import scoring_server

    original = scoring_server.predictions_to_json
    if getattr(original, "one_pass", False):
        return

    def predictions_to_json(raw_predictions, output, metadata=None):
        records = records_json(raw_predictions) if isinstance(raw_predictions, pd.DataFrame) and not metadata else None
        if records is None:
            return original(raw_predictions, output, metadata)
        output.write(f'{{"predictions": {records}}}')

    predictions_to_json.one_pass, predictions_to_json.__wrapped__ = True, original
    scoring_server.predictions_to_json = predictions_to_json


# How json.dumps spells the floats that have no JSON number.
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def records_json(frame: pd.DataFrame) -> Optional[str]:
    """`json.dumps(frame.to_dict(orient="records"))`, byte for byte, for a frame whose columns each
    hold floats or text (None for any other frame). Each column is encoded once with the encoder's own
    pieces (`float.__repr__`, its C string escaper) and the rows are joined with a template instead
    of encoding each row's keys again."""
    import json.encoder

    escape = json.encoder.encode_basestring_ascii
    encoded = []
    for values in frame.to_numpy(dtype=object).T.tolist():      # pandas' boxing: Python floats and str
        if all(type(v) is float for v in values):
            text = list(map(float.__repr__, values))
            if "nan" in text or "inf" in text or "-inf" in text:
                text = [_NON_FINITE.get(t, t) for t in text]
        elif all(v is None or type(v) is str for v in values):
            text = ["null" if v is None else escape(v) for v in values]
        else:
            return None
        encoded.append(text)
    if not encoded:
        return None
    row = "{" + ", ".join(escape(str(c)).replace("%", "%%") + ": %s" for c in frame.columns) + "}"
    return "[" + ", ".join(row % values for values in zip(*encoded)) + "]"


TIMESTAMPS = ("ds", "forecast_origin")
_TEXT = {"entity_id", "model", "status", "run_id", "reconciliation", *TIMESTAMPS}


def signature(meta: BundleMeta) -> ModelSignature:
    inputs = [ColSpec("string", "entity_id"), ColSpec(AnyType(), "ds"),
              *(ColSpec(AnyType(), c, required=False) for c in meta.exogenous)]
    outputs = [ColSpec("string" if c in _TEXT else "double", c) for c in output_columns(meta.levels)]
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
    with tempfile.TemporaryDirectory(prefix="manymodels-code-") as code:
        return mlflow.pyfunc.log_model(name=name, registered_model_name=registered_model_name,
                                       **_model_arguments(folder, cache_size, code))


def save_routing_model(folder: str | Path, path: str | Path, cache_size: int) -> None:
    """The same model written to a local folder (no tracking server involved)."""
    with tempfile.TemporaryDirectory(prefix="manymodels-code-") as code:
        mlflow.pyfunc.save_model(str(path), **_model_arguments(folder, cache_size, code))


def _model_arguments(folder: str | Path, cache_size: int, code: str) -> dict[str, Any]:
    bundle = Bundle(folder)
    return dict(python_model=str(Path(__file__).with_name("served.py")), artifacts={ARTIFACT: str(folder)},
                code_paths=_code_paths(Path(code)), model_config={"cache_size": cache_size},
                signature=signature(bundle.meta), input_example=input_example(folder),
                pip_requirements=requirements(bundle.meta))


# What any routing model imports, and what the champions' libraries need at the verified versions
# (statsforecast's own dependency pins are loose; these are the ones its forecasts were tested with).
_BASE = ("mlflow-skinny", "numpy", "pandas", "pyarrow", "ujson")
_WITH = {"statsforecast": ("statsforecast", "coreforecast", "scipy", "statsmodels"),
         "statsmodels": ("statsmodels", "scipy"), "prophet": ("prophet", "cmdstanpy", "holidays")}


def requirements(meta: BundleMeta) -> list[str]:
    """The model's pip requirements: the serving core and its champions' libraries, pinned to the
    versions this process has (the ones training used)."""
    from importlib.metadata import version
    wanted = dict.fromkeys(_BASE)
    for library in meta.serves_with:
        wanted.update(dict.fromkeys(_WITH.get(library, (library,))))
    return [f"{dist}=={version(dist)}" for dist in wanted]


def _code_paths(staging: Path) -> list[str]:
    """Copies of the `engine` and `gpu` packages (sources only) under `staging`, for `code_paths`:
    MLflow puts them on `sys.path` wherever the model loads."""
    import engine
    import gpu
    paths = []
    for package in (engine, gpu):
        source = Path(package.__file__).parent
        shutil.copytree(source, staging / source.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        paths.append(str(staging / source.name))
    return paths
