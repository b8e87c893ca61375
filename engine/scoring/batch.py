"""Batch scoring: every (or selected) entity through the registered routing model, MERGEd
into gold.forecasts.

The request for an entity is what training forecast: the `horizon` steps after the entity's
training end, with exogenous values from gold rows there (an ingested weather forecast) or by
persistence, built by the same `prepare` the trainer uses. On Spark the model folder is shipped
with `addArchive` (one zip, unpacked on every executor, so no worker reads the driver's disk) and
each Python worker loads it once (`_cached_model`), then scores its groups.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from engine.backends import backend_for
from engine.config import Config
from engine.errors import ConfigError
from engine.faults import crash_point
from engine.lake import GOLD_SERIES, observed_before
from engine.normalize import entity_id
from engine.routing.bundle import Bundle
from engine.routing.pyfunc import ARTIFACT, TIMESTAMPS
from engine.training.entity import TrainSpec
from engine.training.history import prepare
from engine.training.tables import FORECASTS, KEYS, RunContext

_MODELS: dict[str, object] = {}


@dataclass
class ScoreReport:
    model_uri: str
    run_id: str
    entities: int
    rows: int
    seconds: dict[str, float] = field(default_factory=dict)


def champion_uri(config: Config) -> str:
    return f"models:/{config.mlflow.registered_model}@champion"


def check_model(config: Config, model_uri: str) -> None:
    """Fail with one clear line when `model_uri` resolves to nothing in the registry."""
    from mlflow.exceptions import MlflowException

    from engine.tracking.client import open_client
    if not model_uri.startswith("models:/"):
        return
    client = open_client(config.mlflow.tracking_uri)
    name, _, ref = model_uri[len("models:/"):].partition("@")
    try:
        if ref:
            client.get_model_version_by_alias(name, ref)
        else:
            client.get_registered_model(name.split("/")[0])
    except MlflowException as exc:
        raise ConfigError(f"no model {model_uri} in {config.mlflow.tracking_uri}: {exc.message.splitlines()[0]} "
                          "(train first with `manymodels train`, or pass --model-uri)") from None


def download_model(config: Config, model_uri: str, folder: str) -> str:
    """The model's local folder; a clear error when the URI names nothing."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from engine.tracking.client import open_client
    open_client(config.mlflow.tracking_uri)
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder)
    except MlflowException as exc:
        raise ConfigError(f"cannot load {model_uri} from {config.mlflow.tracking_uri}: {exc.message.splitlines()[0]}"
                          " (train first with `manymodels train`, or pass --model-uri)") from None


def bundle_folder(model_folder: str) -> Path:
    """Where a downloaded routing model keeps its bundle (as recorded in its MLmodel file)."""
    from mlflow.models import Model
    flavor = Model.load(model_folder).flavors.get("python_function", {})
    artifact = flavor.get("artifacts", {}).get(ARTIFACT)
    if artifact is None:
        raise ConfigError(f"{model_folder} is not a manymodels routing model (no '{ARTIFACT}' artifact)")
    return Path(model_folder) / artifact["path"]


def scoring_request(rows: pd.DataFrame, origin: pd.Timestamp, spec: TrainSpec) -> pd.DataFrame:
    """Routing-model rows for one entity: the horizon after `origin`, as training saw it (later
    observations are hidden so the split, the history length and the exogenous fill match)."""
    rows = rows.assign(ds=pd.to_datetime(rows["ds"], utc=True))   # Spark hands naive UTC timestamps
    rows.loc[rows["ds"] > origin, "y"] = np.nan
    _, future, _ = prepare(rows, spec)
    # MLflow's signature check takes naive datetimes only; the router reads them as UTC.
    ds = pd.to_datetime(future["ds"], utc=True).dt.tz_localize(None)
    return future.assign(entity_id=str(rows["entity_id"].iloc[0]), ds=ds)


def score_frame(rows: pd.DataFrame, model_path: str, origins: dict[str, pd.Timestamp], spec: TrainSpec,
                columns: list[str], inputs: list[str]) -> pd.DataFrame:
    """Score the entities in `rows` (gold rows) with the routing model at `model_path`, sending
    only the model's `inputs` (regressors no champion uses are left out)."""
    requests = [scoring_request(group, origins[entity], spec) for entity, group in rows.groupby("entity_id")]
    if not requests:
        return pd.DataFrame(columns=columns)
    request = pd.concat(requests, ignore_index=True)
    answer = _cached_model(model_path).predict(request[[c for c in inputs if c in request]])
    return with_timestamps(answer)[columns]


def with_timestamps(answer: pd.DataFrame) -> pd.DataFrame:
    """The model's answer with `ds` and `forecast_origin` as UTC timestamps again (it answers
    ISO strings, as to every MLflow client)."""
    for column in TIMESTAMPS:
        answer[column] = pd.to_datetime(answer[column], utc=True)
    return answer


def _cached_model(path: str):
    """One load per Python worker process: Spark reuses workers across tasks."""
    model = _MODELS.get(path)
    if model is None:
        import mlflow
        model = _MODELS.setdefault(path, mlflow.pyfunc.load_model(path))
    return model


def score(config: Config, model_uri: Optional[str] = None, entities: Optional[Sequence[str]] = None,
          backend: Optional[str] = None, spark=None, as_of: Optional[pd.Timestamp] = None) -> ScoreReport:
    """Score `entities` (default: all of the model's) from gold rows before `as_of` (default: all)."""
    model_uri = model_uri or champion_uri(config)
    timings, started = {}, time.perf_counter()
    spec = TrainSpec.from_config(config)
    with tempfile.TemporaryDirectory(prefix="manymodels-score-") as tmp:
        local = download_model(config, model_uri, tmp)
        bundle = Bundle(bundle_folder(local))
        wanted = sorted(bundle.index) if not entities else sorted({entity_id(e) for e in entities})
        unknown = [e for e in wanted if e not in bundle]
        if unknown:
            raise ConfigError(f"entity {', '.join(map(repr, unknown[:10]))} not in {model_uri} "
                              f"({bundle.meta.entities} entities, e.g. {bundle.first_entity()!r})")
        origins = {e: bundle.index[e].origin for e in wanted}
        inputs = ["entity_id", "ds", *bundle.meta.exogenous]
        context = RunContext(bundle.meta.run_id, 0, bundle.meta.levels, pd.Timestamp.now(tz="UTC"))
        schema = context.schema(FORECASTS)
        timings["load"] = time.perf_counter() - started
        t0 = time.perf_counter()
        runner = backend_for(config, backend, spark)
        model_path, columns = runner.ship(local), schema.names

        def score_entities(rows: pd.DataFrame) -> pd.DataFrame:
            return score_frame(rows, model_path(), origins, spec, columns, inputs)

        gold = observed_before(runner.read(GOLD_SERIES, entities=wanted), as_of)
        scored = runner.persist(runner.map_groups(gold, "entity_id", score_entities, schema))
        try:
            crash_point("before-write:score")
            rows = runner.lake.upsert(FORECASTS, scored, schema, KEYS[FORECASTS])
        finally:
            runner.release(scored)
        crash_point("after-write:score")
        timings["score_and_merge"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    return ScoreReport(model_uri, bundle.meta.run_id, len(wanted), rows, timings)
