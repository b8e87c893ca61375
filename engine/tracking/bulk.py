"""Many finished MLflow runs in one database transaction, through MLflow's plugin points.

MLflow has no public API that creates many runs per request: a run logged the ordinary way is
`create_run`, `log_batch` and `set_terminated`, three transactions with a query each for the
run's state, about 30 ms per child on sqlite. The engine logs one child per entity, so at 10^5
entities that alone took most of an hour. This module writes a chunk of finished runs (their
row, tags, params, metrics and latest metrics) with one bulk INSERT per table in one
transaction, the rows exactly as MLflow's `SqlAlchemyStore` writes them for the ordinary calls,
so `get_run`, `search_runs`, metric history and the UI read them back the same
(tests/engine/tracking/test_bulk.py compares both paths field by field).

Two documented plugin points expose it:
- `mlflow.tracking_store`: the scheme `manymodels+<database>` (e.g. `manymodels+sqlite:///mlflow.db`,
  `manymodels+postgresql://...`) is MLflow's SQLAlchemy store plus `log_finished_runs`; every other
  call is MLflow's own, so the URI works anywhere a tracking URI does (a matching
  `mlflow.model_registry_store` plugin serves the registry on it).
- `mlflow.app`: `mlflow server --app-name manymodels` is MLflow's server plus `POST ROUTE`, the
  same bulk insert over REST into the server's database.

The rows follow MLflow's schema, so the plugin is verified against an MLflow range and its
database schema revisions, and refuses any other (`UnverifiedSchema`) instead of writing rows a
newer MLflow might read wrongly; the engine then logs the ordinary way and says so.
"""
from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional, Sequence

SCHEME = "manymodels+"
APP = "manymodels"
ROUTE = "/api/2.0/manymodels/runs/log-finished"
VERIFIED_MLFLOW = ">=3.17,<3.18"
VERIFIED_SCHEMAS = frozenset({"dc11669786a5"})     # MLflow 3.17's alembic head


class BulkRefused(Exception):
    """The store cannot take bulk runs: the caller logs them the ordinary way."""


class UnverifiedSchema(BulkRefused):
    """MLflow or its database schema is not what the bulk insert was verified with."""


@dataclass(frozen=True)
class ChildRun:
    """A finished run to log: its name, tags, params and (step-0) metrics."""

    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


def database_uri(uri: str) -> str:
    """`manymodels+sqlite:///x.db` -> `sqlite:///x.db` (and a plain database URI unchanged)."""
    return uri[len(SCHEME):] if uri.startswith(SCHEME) else uri


def plugin_uri(uri: str) -> Optional[str]:
    """The plugin's URI for a database tracking URI whose scheme the installed plugin serves;
    None for anything else (a server, files, a database driver it does not list)."""
    bulk = SCHEME + database_uri(uri)
    return bulk if bulk.split(":", 1)[0] in installed_schemes() else None


@functools.lru_cache(maxsize=None)
def installed_schemes() -> frozenset[str]:
    from importlib.metadata import entry_points
    return frozenset(e.name for e in entry_points(group="mlflow.tracking_store") if e.name.startswith(SCHEME))


def check_verified(store) -> None:
    """Raise `UnverifiedSchema` unless MLflow and the store's database are what this was verified with."""
    import mlflow
    from mlflow.store.db.utils import _get_schema_version
    from packaging.specifiers import SpecifierSet
    revision = _get_schema_version(store.engine)
    if mlflow.__version__ not in SpecifierSet(VERIFIED_MLFLOW) or revision not in VERIFIED_SCHEMAS:
        raise UnverifiedSchema(
            f"the bulk run logger was verified with MLflow {VERIFIED_MLFLOW} (database schema "
            f"{', '.join(sorted(VERIFIED_SCHEMAS))}); this is MLflow {mlflow.__version__} with schema {revision}. "
            "Install the pinned MLflow (constraints.txt), or log child runs the ordinary way "
            "(the engine falls back on its own)")


def insert_finished_runs(store, experiment_id: str, runs: Sequence[ChildRun],
                         time_ms: Optional[int] = None) -> list[str]:
    """Log `runs` as FINISHED runs of `experiment_id` in one transaction of the SQLAlchemy `store`;
    returns their run ids in order. Every run starts and ends at `time_ms` (now), with its metrics
    at step 0 of that time: what `create_run` + `log_batch` + `set_terminated` record."""
    from mlflow.entities import LifecycleStage, RunStatus, SourceType
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
    from mlflow.utils.uri import append_to_uri_path

    now = int(time.time() * 1000) if time_ms is None else int(time_ms)
    experiment = store.get_experiment(str(experiment_id))
    if experiment.lifecycle_stage != LifecycleStage.ACTIVE:
        raise MlflowException(f"The experiment {experiment_id} must be in the 'active' state.",
                              INVALID_PARAMETER_VALUE)
    check = _Checks(now)
    finished, unknown = RunStatus.to_string(RunStatus.FINISHED), SourceType.to_string(SourceType.UNKNOWN)
    rows, tags, params, metrics = [], [], [], []
    for index, run in enumerate(runs):
        run_id = uuid.uuid4().hex
        named = run.tags.get(MLFLOW_RUN_NAME)
        if named is not None and named != run.name:
            raise MlflowException(f"runs[{index}]: the name {run.name!r} and the tag {MLFLOW_RUN_NAME}="
                                  f"{named!r} differ", INVALID_PARAMETER_VALUE)
        rows.append((run_id, run.name, unknown, "", "", run.tags.get(MLFLOW_USER, "unknown"), finished, now, now,
                     None, "", LifecycleStage.ACTIVE,
                     append_to_uri_path(experiment.artifact_location, run_id, "artifacts"),
                     int(experiment.experiment_id)))
        path = f"runs[{index}]"
        tags += [(run_id, k, v) for k, v in check.tags({**run.tags, MLFLOW_RUN_NAME: run.name}, path)]
        params += [(run_id, k, v) for k, v in check.params(run.params, path)]
        for key, value in check.metrics(run.metrics, path):
            is_nan, stored = store.sanitize_metric_value(float(value))
            metrics.append((run_id, key, stored, now, 0, is_nan))
    with store.ManagedSessionMaker(read_only=False) as session:
        connection = session.connection()
        for model, columns, values in (
                (SqlRun, RUN_COLUMNS, rows), (SqlTag, KEY_VALUE, tags), (SqlParam, KEY_VALUE, params),
                (SqlMetric, METRIC_COLUMNS, metrics), (SqlLatestMetric, METRIC_COLUMNS, metrics)):
            if values:
                _insert(connection, model.__table__, columns, values)
    return [row[0] for row in rows]


RUN_COLUMNS = ("run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status",
               "start_time", "end_time", "deleted_time", "source_version", "lifecycle_stage", "artifact_uri",
               "experiment_id")
KEY_VALUE = ("run_uuid", "key", "value")
METRIC_COLUMNS = ("run_uuid", "key", "value", "timestamp", "step", "is_nan")


# The driver's own placeholder for a positional parameter, by DB-API paramstyle.
_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def _insert(connection, table, columns: tuple[str, ...], values: list[tuple]) -> None:
    mark = _MARKS.get(connection.dialect.paramstyle)
    if mark is None:     # a driver with named or numbered parameters: SQLAlchemy's batched insert
        from sqlalchemy import insert
        connection.execute(insert(table), [dict(zip(columns, row)) for row in values])
        return
    # The driver's executemany straight (sqlite3's loop, psycopg's pipeline): SQLAlchemy's
    # per-row parameter processing cost more than the insert itself.
    marks = ", ".join([mark] * len(columns))
    connection.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})", values)


class _Checks:
    """MLflow's validation of keys and values, each distinct key checked in full once: the same
    keys repeat in every child, and checking them run by run cost as much as the insert."""

    def __init__(self, now: int):
        self.now, self.seen = now, set()

    def tags(self, values: dict, path: str):
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH, _validate_tag
        return self._texts(values, f"{path}.tags", "tag", _validate_tag, MAX_TAG_VAL_LENGTH)

    def params(self, values: dict, path: str):
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, _validate_param
        return self._texts(values, f"{path}.params", "param", _validate_param, MAX_PARAM_VAL_LENGTH)

    def _texts(self, values, path, kind, validate, limit):
        for i, (key, value) in enumerate(values.items()):
            if (kind, key) not in self.seen or value is None or len(value) > limit:
                entry = validate(key, value, path=f"{path}[{i}]")    # raises, or truncates a long value
                self.seen.add((kind, key))
                key, value = entry.key, entry.value
            yield key, value

    def metrics(self, values: dict, path: str):
        from mlflow.utils.validation import _is_numeric, _validate_metric
        for i, (key, value) in enumerate(values.items()):
            if ("metric", key) not in self.seen or not _is_numeric(value):
                _validate_metric(key, value, self.now, 0, path=f"{path}.metrics[{i}]")
                self.seen.add(("metric", key))
            yield key, value


def tracking_store(store_uri: str, artifact_uri: Optional[str] = None):
    """The `mlflow.tracking_store` plugin: MLflow's SQLAlchemy store plus `log_finished_runs`."""
    import os
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.tracking._tracking_service.utils import _SERVER_ARTIFACT_ROOT_ENV_VAR
    # The artifact root MLflow's own builder gives a database URI (the server's, inside a server).
    return _store_class()(database_uri(store_uri), artifact_uri or os.environ.get(
        _SERVER_ARTIFACT_ROOT_ENV_VAR, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH))


def registry_store(store_uri: str, *_, **__):
    """The `mlflow.model_registry_store` plugin: MLflow's own registry store on the same database."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
    return SqlAlchemyStore(database_uri(store_uri))


@functools.lru_cache(maxsize=None)
def _store_class():
    # Built on first use: MLflow loads plugin modules while it imports, before its stores exist.
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    class BulkStore(SqlAlchemyStore):
        def log_finished_runs(self, experiment_id: str, runs: Sequence[ChildRun],
                              time_ms: Optional[int] = None) -> list[str]:
            check_verified(self)
            return insert_finished_runs(self, experiment_id, runs, time_ms)

    return BulkStore


# --- over REST: the server app plugin and its client -----------------------------------------

def create_app():
    """The `mlflow.app` plugin: MLflow's server with `POST ROUTE` added (the FastAPI app under uvicorn)."""
    from flask import Response, request
    from mlflow.environment_variables import _MLFLOW_SGI_NAME
    from mlflow.exceptions import MlflowException
    from mlflow.server import app
    from mlflow.server.handlers import _get_tracking_store, catch_mlflow_exception

    @catch_mlflow_exception
    def log_finished() -> Response:
        import json
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict) or "experiment_id" not in body or not isinstance(body.get("runs"), list):
            raise MlflowException("expected JSON {experiment_id, runs: [{name, tags, params, metrics}], time_ms}",
                                  error_code="INVALID_PARAMETER_VALUE")
        store = _get_tracking_store()
        try:
            if not hasattr(store, "ManagedSessionMaker"):
                raise BulkRefused(f"{ROUTE} needs a database backend store, this server has {type(store).__name__}")
            check_verified(store)
        except BulkRefused as exc:       # 501: the client falls back to ordinary requests
            raise MlflowException(str(exc), error_code="NOT_IMPLEMENTED") from None
        runs = [_run_of(r) for r in body["runs"]]
        ids = insert_finished_runs(store, str(body["experiment_id"]), runs, body.get("time_ms"))
        return Response(json.dumps({"run_ids": ids}), mimetype="application/json")

    if ROUTE not in {rule.rule for rule in app.url_map.iter_rules()}:
        app.add_url_rule(ROUTE, "manymodels_log_finished", log_finished, methods=["POST"])
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app
        return create_fastapi_app(app)
    return app


def _run_of(data: Any) -> ChildRun:
    from mlflow.exceptions import MlflowException
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise MlflowException("each run needs a name, tags, params and metrics", error_code="INVALID_PARAMETER_VALUE")
    mappings = [data.get(k) or {} for k in ("tags", "params", "metrics")]
    if not all(isinstance(m, dict) for m in mappings):
        raise MlflowException(f"run {data['name']!r}: tags, params and metrics must be objects",
                              error_code="INVALID_PARAMETER_VALUE")
    tags, params, metrics = mappings
    return ChildRun(data["name"], {str(k): str(v) for k, v in tags.items()},
                    {str(k): str(v) for k, v in params.items()}, dict(metrics))


def post_finished_runs(uri: str, experiment_id: str, runs: Sequence[ChildRun], time_ms: Optional[int] = None,
                       timeout: float = 120) -> list[str]:
    """`insert_finished_runs` on the tracking server at `uri` (its app plugin), with the MLflow
    client's own credentials (MLFLOW_TRACKING_TOKEN/USERNAME/PASSWORD, ~/.mlflow/credentials)."""
    import json
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request
    # JSON has no inf/NaN: json.dumps writes Infinity/NaN tokens, which the server's reader takes.
    body = {"experiment_id": str(experiment_id), "time_ms": time_ms,
            "runs": [{"name": r.name, "tags": r.tags, "params": r.params, "metrics": r.metrics}
                     for r in runs]}
    response = http_request(get_default_host_creds(uri), ROUTE, "POST", data=json.dumps(body),
                            extra_headers={"Content-Type": "application/json"}, timeout=timeout)
    if response.status_code == 404:
        raise BulkRefused(f"{uri} has no {ROUTE} (start the server with `mlflow server --app-name {APP}`)")
    if response.status_code == 501:
        raise BulkRefused(f"{uri}: {response.json().get('message')}")
    if response.status_code != 200:
        try:
            error = response.json()
        except ValueError:
            error = {"message": response.text[:500]}
        raise MlflowException(f"{ROUTE}: HTTP {response.status_code}: {error.get('message', error)}")
    return list(response.json()["run_ids"])

