"""Where runs go: the configured tracking URI, ready to take many writers."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Optional

from mlflow.tracking import MlflowClient


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
