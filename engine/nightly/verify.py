"""Before a rerun trusts the ledger: are the outputs a recorded stage claims still there?

A ledger row says a stage finished; the tables and the tracking store are what readers use. A
commit lost on the store, a table restored from a backup, a run deleted in the MLflow UI: each
makes the ledger's word wrong. Each check returns why a stage's outputs are not what its row
claims (None: they are), and the night reruns that stage and every one after it.
"""
from __future__ import annotations

from typing import Callable, Optional

from engine.config import Config
from engine.lake import DeltaRsLake
from engine.training.tables import BACKTESTS, FORECASTS, MODELS


def run_rows(lake: DeltaRsLake, table: str, run_id: str) -> int:
    """Rows of `run_id` in `table` now (0 when the table is gone)."""
    if not lake.exists(table):
        return 0
    return len(lake.read(table, columns=["run_id"], filters=[("run_id", "=", run_id)]))


def check_train(config: Config, run_id: str, detail: dict) -> Optional[str]:
    lake = DeltaRsLake(config.lake)
    written = detail.get("written") or {FORECASTS: detail.get("forecast_rows", 0)}
    for table in (MODELS, BACKTESTS, FORECASTS):
        if table not in written:
            continue
        found = run_rows(lake, table, run_id)
        if found != int(written[table]):
            return f"{table} holds {found} row(s) of run {run_id}, the ledger recorded {written[table]}"
    return None


def check_mlflow(config: Config, run_id: str, detail: dict) -> Optional[str]:
    from mlflow.exceptions import MlflowException

    from engine.tracking.client import open_client

    client = open_client(config.mlflow.tracking_uri)
    parent, version = detail.get("parent_run_id"), detail.get("version")
    try:
        status = client.get_run(parent).info.status
        if status != "FINISHED":
            return f"MLflow parent run {parent} is {status}, not FINISHED"
        if version is not None:
            client.get_model_version(config.mlflow.registered_model, str(version))
    except MlflowException as exc:
        return f"MLflow lacks what the ledger recorded ({str(exc).splitlines()[0]})"
    return None


def check_score(config: Config, run_id: str, detail: dict) -> Optional[str]:
    scored = detail.get("scored_run_id") or run_id
    rows = run_rows(DeltaRsLake(config.lake), FORECASTS, scored)
    if int(detail.get("scored_rows") or 0) and not rows:
        return f"{FORECASTS} holds no row of run {scored}, the ledger recorded {detail['scored_rows']} scored"
    return None


CHECKS: dict[str, Callable[[Config, str, dict], Optional[str]]] = {
    "train": check_train, "mlflow": check_mlflow, "score": check_score}


def verified(config: Config, run_id: str, done: dict[str, dict], say: Callable[[str], None]) -> dict[str, dict]:
    """`done` up to the first stage whose outputs are not what the ledger says (said aloud)."""
    kept: dict[str, dict] = {}
    for stage, detail in done.items():
        check = CHECKS.get(stage)
        reason = check(config, run_id, detail) if check else None
        if reason:
            say(f"ledger: stage {stage} of run {run_id} is recorded as done, but {reason}: running it again")
            return kept
        kept[stage] = detail
    return kept
