"""The nightly job as the scheduler runs it: real subprocesses, Spark, Delta, MLflow, SIGKILL.

Each test drives `python -m engine nightly` on a small synthetic panel and then checks the
tables themselves: every (entity, ds, forecast origin) exactly once, the ledger, the registry.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from engine.config import load_config
from engine.faults import ENV as CRASH_ENV
from engine.nightly.ledger import NIGHTS
from engine.nightly.lease import LakeLease, holder_of
from engine.tracking.client import prepared_uri
from engine.training.tables import FORECASTS
from tests.conftest import (NIGHT_1, NIGHT_2, assert_exactly_once, lake_of, nightly, nightly_config, summary_line,
                            table_versions)


@pytest.mark.slow      # three Spark nightlies (~5 min); kill -9 and reruns stay in the default suite on local
def test_nightly_on_spark_survives_kill_9_in_training_and_reruns_idempotently(tmp_path):
    config = nightly_config(tmp_path, backend="spark")
    killed = nightly(config, "--as-of", NIGHT_1, crash_at="training")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    lake = lake_of(config)
    assert lake.exists("gold/series") and not lake.exists(FORECASTS) and not lake.exists(NIGHTS)

    summary = summary_line(nightly(config, "--as-of", NIGHT_1))
    assert summary.startswith("nightly summary: night 2022-01-20T00:00:00+00:00 run night-20220120T0000Z")
    assert "3 entities (ok 3)" in summary and "72 forecast rows published (origin 2022-01-19T23:00:00+00:00)" in summary
    assert "registry: night-router version 1 promoted to champion: first version" in summary
    for stage in ("ingest", "train", "mlflow", "score", "total"):
        assert f"{stage} " in summary.split("time ")[1]
    assert_exactly_once(lake)
    forecasts = lake.read(FORECASTS)
    assert set(forecasts["run_id"]) == {"night-20220120T0000Z"} and len(forecasts) == 3 * 24
    assert forecasts["ds"].min() == pd.Timestamp(NIGHT_1, tz="UTC")
    client = MlflowClient(prepared_uri(load_config(config).mlflow.tracking_uri))
    parent = client.get_run(summary.split("MLflow parent run ")[1].split(";")[0])
    assert parent.info.status == "FINISHED" and parent.data.tags["manymodels.run_id"] == "night-20220120T0000Z"

    # The same night again: nothing retrained, no table touched.
    before = table_versions(lake)
    again = nightly(config, "--as-of", NIGHT_1)
    assert "is already complete for these inputs" in again.stdout
    assert summary_line(again).endswith("resumed: every stage already done; time ingest "
                                        + summary_line(again).split("time ingest ")[1])
    assert table_versions(lake) == before
    assert len(client.search_model_versions("name='night-router'")) == 1


# Two crash points by default (nothing written / everything written); the two in between are slow.
@pytest.mark.parametrize("crash_at", ["before-write:gold/forecasts",
                                      pytest.param("after-write:gold/forecasts", marks=pytest.mark.slow),
                                      pytest.param("before-write:score", marks=pytest.mark.slow), "after-write:score"])
def test_kill_9_around_the_forecast_write_then_rerun_gives_every_forecast_once(tmp_path, crash_at):
    config = nightly_config(tmp_path)
    killed = nightly(config, "--as-of", NIGHT_1, crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    lake = lake_of(config)
    wrote = lake.exists(FORECASTS)
    assert wrote == (crash_at != "before-write:gold/forecasts")

    summary = summary_line(nightly(config, "--as-of", NIGHT_1))
    if crash_at.endswith(":score"):
        assert "resumed: train, mlflow already done" in summary   # training was not redone
    assert_exactly_once(lake)
    forecasts = lake.read(FORECASTS)
    assert len(forecasts) == 3 * 24 and set(forecasts["run_id"]) == {"night-20220120T0000Z"}
    stages = lake.read(NIGHTS)
    assert stages.groupby("stage").size().to_dict() == {"done": 1, "mlflow": 1, "score": 1, "train": 1}


def test_two_replayed_nights_append_slices_and_keep_earlier_origins(tmp_path):
    config = nightly_config(tmp_path)
    first = summary_line(nightly(config, "--as-of", NIGHT_1))
    second = summary_line(nightly(config, "--as-of", NIGHT_2))
    assert "data to 2022-01-19T23:00:00+00:00" in first and "data to 2022-01-20T23:00:00+00:00" in second
    lake = lake_of(config)
    bronze = lake.read("bronze/synthetic")
    per_night = bronze.groupby("_file").size()
    assert sorted(per_night.to_list()) == [3 * 24, 3 * 19 * 24]   # night 2 appended only its new day
    assert not bronze.duplicated(["entity_id", "ds"]).any()
    assert_exactly_once(lake)
    origins = lake.read(FORECASTS).groupby("forecast_origin")["run_id"].unique()
    assert {str(o): list(r) for o, r in origins.items()} == {
        "2022-01-19 23:00:00+00:00": ["night-20220120T0000Z"], "2022-01-20 23:00:00+00:00": ["night-20220121T0000Z"]}

    # The earlier origin stays queryable for analysts.
    out = subprocess.run([sys.executable, "-m", "engine", "forecasts", "pull", "--config", config, "--origin",
                          "2022-01-19T23:00", "--format", "csv", "--output", str(tmp_path / "night1.csv")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    pulled = pd.read_csv(tmp_path / "night1.csv")
    assert len(pulled) == 72 and pulled["y"].notna().all()   # night 2 brought the actuals of night 1's forecast


def test_a_night_with_nothing_new_reuses_the_last_models(tmp_path):
    config = nightly_config(tmp_path)
    past_the_data = ["2022-02-01", "2022-02-02"]           # the panel ends on 2022-01-24
    first = summary_line(nightly(config, "--as-of", past_the_data[0]))
    lake = lake_of(config)
    before = table_versions(lake)
    second = summary_line(nightly(config, "--as-of", past_the_data[1]))
    assert "nothing changed since run night-20220201T0000Z: its models and forecasts stand" in second
    assert table_versions(lake) == before
    assert first.split("; ")[2:5] == second.split("; ")[3:6]   # same entities, champions, failures

    retrained = nightly(config, "--as-of", past_the_data[1], "--retrain")
    assert "nothing changed" not in summary_line(retrained) and "version 2" in summary_line(retrained)
    assert_exactly_once(lake)


def test_a_second_nightly_on_the_same_lake_exits_with_a_clear_message(tmp_path):
    config = nightly_config(tmp_path)
    with LakeLease(load_config(config).lake, "the test's own job"):
        busy = nightly(config, "--as-of", NIGHT_1)
    assert busy.returncode == 75 and busy.stdout.count("\n") <= 1
    assert busy.stderr.startswith("busy: another job (the test's own job, pid ")
    assert "this run made no change" in busy.stderr and "Traceback" not in busy.stderr
    assert not lake_of(config).exists(FORECASTS)


def test_two_nightly_processes_at_once_one_waits_and_finds_the_night_done(tmp_path):
    config = nightly_config(tmp_path, nightly={"lock_timeout": 240})
    env = dict(os.environ, **{CRASH_ENV: ""})
    command = [sys.executable, "-m", "engine", "nightly", "--config", config, "--no-progress", "--as-of", NIGHT_1]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while holder_of(load_config(config).lake) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert "version 1 promoted" in out.splitlines()[-1]
    assert second.returncode == 0, second.stdout + second.stderr
    assert "is already complete for these inputs" in second.stdout
    assert_exactly_once(lake_of(config))


def test_a_kill_between_bronze_and_gold_is_finished_by_the_rerun(tmp_path):
    config = nightly_config(tmp_path)
    summary_line(nightly(config, "--as-of", NIGHT_1))
    killed = nightly(config, "--as-of", NIGHT_2, crash_at="after-write:bronze")
    assert killed.returncode == -signal.SIGKILL
    lake = lake_of(config)
    assert lake.read("gold/series")["ds"].max() == pd.Timestamp("2022-01-19 23:00", tz="UTC")   # gold not rebuilt
    summary = summary_line(nightly(config, "--as-of", NIGHT_2))
    assert "data to 2022-01-20T23:00:00+00:00" in summary
    assert lake.read("gold/series")["ds"].max() == pd.Timestamp("2022-01-20 23:00", tz="UTC")


def test_bad_as_of_is_one_line(tmp_path):
    out = nightly(nightly_config(tmp_path), "--as-of", "yesterday-ish")
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: --as-of 'yesterday-ish' is not a timestamp "
                                  "(e.g. 2008-07-01 or 2008-07-01T06:00)")
