"""The engine's one way into MLflow: the configured tracking URI made ready for many writers,
the client opened on it, batch logging within MLflow's request limits, and the fail-fast check
of the store before a job starts. Every other module logs through these."""
from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from engine.errors import TrackingError, TrackingUnavailable, first_line, root_cause


def prepared_uri(uri: str) -> str:
    """The tracking URI, with a sqlite file's folder created and the file in WAL mode.

    WAL is a property of the database file (it persists): writers append to a log instead of
    rewriting pages under an exclusive lock, so parallel child-run loggers interleave and
    readers (the UI) never block them.
    """
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
        connection.close()
    return uri


def open_client(uri: str, *, fluent: bool = True) -> MlflowClient:
    """A client on the prepared `uri`; with `fluent`, also the URI of MLflow's fluent API
    (`mlflow.start_run`, `log_model`) in this process. Threads that log pass fluent=False."""
    uri = prepared_uri(uri)
    if fluent:
        import mlflow
        mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def log_batch(client: MlflowClient, run_id: str, metrics=(), params=(), tags=()) -> int:
    """`client.log_batch` in as few requests as MLflow's limits allow (100 params and 100 tags,
    1,000 metrics and 1,000 entities per request); returns the requests made."""
    metrics, params, tags = list(metrics), list(params), list(tags)
    requests = 0
    while metrics or params or tags or not requests:
        take_p = params[:MAX_PARAMS_TAGS_PER_BATCH]
        take_t = tags[:min(MAX_PARAMS_TAGS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(take_p))]
        take_m = metrics[:min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(take_p) - len(take_t))]
        client.log_batch(run_id, metrics=take_m, params=take_p, tags=take_t)
        metrics, params, tags = metrics[len(take_m):], params[len(take_p):], tags[len(take_t):]
        requests += 1
    return requests


def artifact_location(uri: str) -> Optional[str]:
    """Artifacts of a sqlite store go beside the database file (not into the working folder);
    a tracking server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return None


def experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri))


@contextmanager
def bounded_requests(timeout: float, retries: int = 0):
    """MLflow's HTTP client with a short timeout and no retries while the block runs (it reads
    these variables at each request; its defaults retry for minutes)."""
    names = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(max(1, timeout))),
             "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries)}
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def _has_credentials() -> bool:
    return any(os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD", "TOKEN"))


def check_tracking(uri: str, experiment: str, timeout: float = 10.0) -> None:
    """Fail in seconds, before any training, when the tracking store cannot take the night's
    runs: a server that does not answer, a sqlite file or folder that cannot be written."""
    if uri.startswith("sqlite:///"):
        _check_sqlite(Path(uri[len("sqlite:///"):]))
        return
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        from mlflow.exceptions import MlflowException
        try:
            with bounded_requests(timeout):
                experiment_id(MlflowClient(uri), experiment)      # reads, and creates it if missing: a write
        except MlflowException as exc:
            cause = first_line(root_cause(exc)) or type(exc).__name__
            if any(word in cause for word in ("Connection", "connect", "timed out", "Max retries", "refused")):
                raise TrackingUnavailable(f"the MLflow tracking server {uri} does not answer ({cause}); start it or "
                                          "fix mlflow.tracking_uri, then rerun") from None
            if exc.get_http_status_code() in (401, 403):
                raise TrackingError(
                    f"the MLflow tracking server {uri} refused the credentials "
                    f"{'it was sent' if _has_credentials() else '(none were set)'}: set MLFLOW_TRACKING_USERNAME and "
                    "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) for a user who may edit experiment "
                    f"{experiment!r}") from None
            raise TrackingError(f"the MLflow tracking server {uri} refused the experiment {experiment!r}: "
                                f"{cause}") from None
        return
    if parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme == "file" else uri)
        _check_writable(folder if folder.exists() else folder.parent, uri)


def _check_sqlite(path: Path) -> None:
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not path.exists():
        _check_writable(folder, f"sqlite:///{path}")
        return
    try:
        with sqlite3.connect(path, timeout=30) as connection:
            # A write that is rolled back: a read-only file opens and even locks, but refuses this.
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("CREATE TABLE main._manymodels_write_probe (x)")
            connection.execute("ROLLBACK")
        connection.close()
    except sqlite3.OperationalError as exc:
        raise TrackingError(f"the MLflow store sqlite:///{path} cannot be written ({exc}); check the file's and "
                            "its folder's permissions, or point mlflow.tracking_uri elsewhere") from None
    _check_writable(path.parent, f"sqlite:///{path}")    # sqlite's journal and WAL files live beside it


def _check_writable(folder: Path, uri: str) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingError(f"the MLflow store {uri} cannot be written: folder {folder} is not writable; check "
                            "its permissions, or point mlflow.tracking_uri elsewhere")


