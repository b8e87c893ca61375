"""`manymodels score --stream`: request rows appended to a Delta table are forecast through the
registered model exactly once, across a kill -9 in a micro-batch; bad rows go to the rejects."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
import yaml

from engine.config import StreamingConfig
from engine.errors import ConfigError
from engine.faults import ENV as CRASH_AT
from engine.lake import GOLD_SERIES, DeltaRsLake
from engine.scoring.batch import champion_uri
from engine.scoring.stream import score_stream
from engine.tracking.client import open_client
from tests.conftest import PUBLISHED_SETTINGS

STREAMING = {"requests": "gold/test_requests", "forecasts": "gold/test_streamed",
             "rejects": "gold/test_stream_rejects", "checkpoint": "_checkpoints/test_stream",
             "max_files_per_trigger": 1}


def _requests(config, report) -> list[pd.DataFrame]:
    """Three appends (one micro-batch each): a mix of good and bad rows, then good rows twice."""
    gold = DeltaRsLake(config.lake).read(GOLD_SERIES)
    entities = sorted(gold["entity_id"].unique())
    origin = gold["ds"].max()

    def rows(entity: str, steps: int, start: int = 1) -> pd.DataFrame:
        temperature = gold.loc[gold["entity_id"] == entity, "temperature"].tail(steps).to_numpy()
        ds = pd.date_range(origin + pd.Timedelta(hours=start), periods=steps, freq="h").tz_localize(None)
        return pd.DataFrame({"entity_id": entity, "ds": ds, "temperature": temperature})

    first = pd.concat([rows(entities[0], 24), rows(entities[1], 12)])
    bad = pd.DataFrame({"entity_id": ["nope", entities[2], entities[2], entities[3]],
                        "ds": [origin + pd.Timedelta(hours=h) for h in (1, 0, 1.5, 2)],
                        "temperature": [50.0, 50.0, 50.0, 1e6]})
    bad["ds"] = bad["ds"].dt.tz_localize(None)
    second = pd.concat([rows(entities[2], 6), bad, rows(entities[3], 1)])
    third = rows(entities[3], 4, start=3)
    parts = [second, first, third]
    start = 0
    for part in parts:                      # request ids say which row is which, across batches
        part.insert(0, "request_id", [f"r{i}" for i in range(start, start + len(part))])
        start += len(part)
    return [part.reset_index(drop=True) for part in parts]


@pytest.mark.spark
def test_a_request_table_is_scored_exactly_once_across_a_kill_9_and_bad_rows_are_rejected(published, spark,
                                                                                           tmp_path):
    config, report, _ = published
    config = dataclasses.replace(config, streaming=StreamingConfig(**STREAMING))
    lake = DeltaRsLake(config.lake)
    with pytest.raises(ConfigError, match="no request table at .*test_requests.*streaming.requests"):
        score_stream(config, once=True, spark=spark)
    parts = _requests(config, report)
    for part in parts:
        lake.write(STREAMING["requests"], part, mode="append")

    # The first run dies (SIGKILL) in the first micro-batch, after its forecasts are written and
    # before its rejects are; the checkpoint has not recorded that batch.
    path = tmp_path / "stream.yaml"
    path.write_text(yaml.safe_dump({
        "name": "stream", "lake": {"root": str(config.lake.root)}, "backend": "spark",
        "spark": {"master": "local[2]", "ui": False, "shuffle_partitions": 2},
        "mlflow": {"tracking_uri": config.mlflow.tracking_uri, "experiment": config.mlflow.experiment,
                   "registered_model": config.mlflow.registered_model},
        "series": {"freq": "h", "season_lengths": [24, 168]}, "streaming": STREAMING, **PUBLISHED_SETTINGS}))
    killed = subprocess.run([sys.executable, "-m", "engine", "score", "--stream", "--once", "--config", str(path)],
                            env={**os.environ, CRASH_AT: "stream-forecasts-written:0"}, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert "rows scored" not in killed.stdout
    assert set(lake.read(STREAMING["forecasts"])["batch_id"]) == {0}
    assert not lake.exists(STREAMING["rejects"])

    result = score_stream(config, once=True, spark=spark, echo=lambda line: None)
    # The restart resumes at the killed batch (its forecasts are not written twice), then the next.
    assert [b["batch_id"] for b in result.per_batch] == [0, 1, 2]
    forecasts = lake.read(STREAMING["forecasts"]).sort_values("request_id", key=lambda s: s.str[1:].astype(int))
    rejects = lake.read(STREAMING["rejects"])
    requests = pd.concat(parts, ignore_index=True)
    answered = [r for r in requests["request_id"] if r not in {"r6", "r7", "r8", "r9"}]
    assert forecasts["request_id"].tolist() == answered             # every good request exactly once
    assert len(rejects) == 4 and set(rejects["batch_id"]) == {0}
    reasons = dict(zip(rejects["request"].map(lambda r: yaml.safe_load(r)["request_id"]), rejects["reason"]))
    assert "unknown entity 'nope'" in reasons["r6"]
    assert "is not after the training end" in reasons["r7"]
    assert "is off the series grid" in reasons["r8"]
    assert "column 'temperature' holds 1e+06" in reasons["r9"]

    # The answers are the registered model's own, as MLflow's client gives them.
    open_client(config.mlflow.tracking_uri)
    direct = mlflow.pyfunc.load_model(champion_uri(config)).predict(
        requests.set_index("request_id").loc[answered, ["entity_id", "ds", "temperature"]].reset_index(drop=True))
    assert forecasts["yhat"].tolist() == pytest.approx(direct["yhat"].tolist(), rel=1e-12)
    assert (forecasts["run_id"] == report.run_id).all() and forecasts["status"].notna().all()
    assert str(forecasts["ds"].dt.tz) == "UTC"

    # A stream left running follows the registry alias: the champion promoted between two
    # micro-batches scores the next one (here a new version of the same model, put back after).
    client = open_client(config.mlflow.tracking_uri)
    name = config.mlflow.registered_model
    current = client.get_model_version_by_alias(name, "champion")
    promoted = client.create_model_version(name, current.source, run_id=current.run_id).version
    later = _requests(config, report)[2].assign(request_id=lambda f: "later-" + f["request_id"])
    for half in (later.iloc[:2], later.iloc[2:]):
        lake.write(STREAMING["requests"], half, mode="append")

    def promote_after_the_first(line: str) -> None:
        if line.startswith("batch 3:") and "rows scored" in line:
            client.set_registered_model_alias(name, "champion", promoted)
    try:
        followed = score_stream(config, once=True, spark=spark, echo=promote_after_the_first)
    finally:
        client.set_registered_model_alias(name, "champion", current.version)
        client.delete_model_version(name, promoted)
    assert [(b["batch_id"], b["model_version"]) for b in followed.per_batch] == [(3, current.version),
                                                                                (4, promoted)]
    assert len(lake.read(STREAMING["forecasts"])) == len(answered) + len(later)
