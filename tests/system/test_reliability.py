"""The reliability suite: hostile input and crashes, each probe as a user (or a scheduler) makes it.

Every test here reproduces one defect found by probing the engine (long ids, crashes while
publishing, missing values at the edges, a ledger that trusted itself, an unreadable file,
orphaned workers, a silent or read-only tracking store, ids and epochs read differently) and
checks the tables, MLflow and the processes themselves afterwards. `benchmarks/probes.py`
replays the same probes and prints a table.
"""
from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
import yaml

from benchmarks.probes import (ACCENTED_ID, LONG_ID, hourly_rows, mlflow_state, nightly, nightly_job, read_only_sqlite,
                               survivors, without_dac_override, write_csv)
from engine.config import load_config
from engine.lake import GOLD_SERIES, SILVER_SERIES, DeltaRsLake, bronze_table
from engine.backends import backend_for
from engine.medallion.pipeline import REJECTED, UNREADABLE, ingest
from engine.routing.router import RequestError, Router
from engine.training.job import train
from engine.training.tables import FORECASTS, MODELS
from tests.conftest import make_config

NIGHT_1, NIGHT_2 = "2022-01-20", "2022-01-21"


def csv_config(tmp_path: Path, folder: Path, **extra):
    return make_config(tmp_path / "lake", source={"kind": "csv", "path": str(folder)},
                       series={"freq": "h", "season_lengths": [24]}, horizon=24,
                       backtest={"windows": 1, "step": 24}, models=["seasonal_naive"], **extra)


def lines(into: list[str]):
    return lambda line: into.append(line)


def ok(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


# --- 1. ids of any length and script ----------------------------------------------------------

def test_long_and_accented_ids_are_stored_without_folders_named_by_them_and_flagged(tmp_path):
    folder = tmp_path / "in"
    write_csv(folder, "day1.csv", [hourly_rows("meter-1"), hourly_rows(ACCENTED_ID, seed=1),
                                   hourly_rows(LONG_ID, seed=2)])
    config = csv_config(tmp_path, folder)
    said: list[str] = []
    report = ingest(config, backend_for(config, "local"), progress=lines(said))

    lake = DeltaRsLake(config.lake)
    assert lake.table(GOLD_SERIES).metadata().partition_columns == []
    gold = lake.read(GOLD_SERIES)
    assert set(gold["entity_id"]) == {"meter-1", ACCENTED_ID}
    silver = lake.read(SILVER_SERIES)
    long_rows = silver[silver["entity_id"] == LONG_ID]
    assert len(long_rows) == 240 and long_rows["flag_bad_id"].all()
    assert long_rows["problem"].iloc[0] == "entity_id is 500 characters long; quality.max_id_length allows 256"
    assert not silver.loc[silver["entity_id"] != LONG_ID, "flag_bad_id"].any()
    assert report.edge_counts()["id_too_long"] == 1
    assert any(line.startswith("id too long: 'mmmm") and "500 characters" in line for line in said)
    # An analyst's own client reads the accented entity straight from the table.
    found = pl.read_delta(lake.path(GOLD_SERIES)).filter(pl.col("entity_id") == ACCENTED_ID)
    assert found.height == 240


def test_a_lake_partitioned_by_entity_is_repaired_by_ingest_rebuild_losing_no_raw_row(tmp_path):
    folder = tmp_path / "in"
    write_csv(folder, "day1.csv", [hourly_rows("meter-1"), hourly_rows("meter-2", seed=1)])
    config = csv_config(tmp_path, folder)
    frames = backend_for(config, "local")
    ingest(config, frames)
    lake = DeltaRsLake(config.lake)
    # The layout older versions wrote: one folder per entity id.
    old = lake.read(GOLD_SERIES)
    lake.write(GOLD_SERIES, old, mode="overwrite", partition_by=["entity_id"], schema_mode="overwrite")
    assert lake.table(GOLD_SERIES).metadata().partition_columns == ["entity_id"]
    write_csv(folder, "day2.csv", [hourly_rows(LONG_ID, seed=2), hourly_rows(ACCENTED_ID, seed=3)])

    out = subprocess.run([sys.executable, "-m", "engine", "ingest", "--config", _yaml(tmp_path, config),
                          "--rebuild"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "panicked" not in out.stderr
    assert lake.table(GOLD_SERIES).metadata().partition_columns == []
    assert set(lake.read(GOLD_SERIES)["entity_id"]) == {"meter-1", "meter-2", ACCENTED_ID}
    assert len(lake.read(bronze_table("csv"))) == 4 * 240


def _yaml(tmp_path: Path, config) -> str:
    import dataclasses
    path = tmp_path / "job.yaml"
    data = dataclasses.asdict(config)
    path.write_text(yaml.safe_dump(data))
    return str(path)


# --- 3. every entity that enters bronze leaves a trace ----------------------------------------

def test_all_missing_entity_is_a_failed_row_and_trailing_invalid_values_are_reported(tmp_path):
    folder = tmp_path / "in"
    empty = hourly_rows("meter-empty").assign(y="")
    trailing = hourly_rows("meter-trailing", seed=1)
    trailing.loc[trailing.index[-24:], "y"] = "n/a"
    write_csv(folder, "day1.csv", [hourly_rows("meter-ok", seed=2), empty, trailing])
    config = csv_config(tmp_path, folder, max_failure_rate=0.5)
    said: list[str] = []
    report = ingest(config, backend_for(config, "local"), progress=lines(said))

    assert report.edge_counts() == {"id_too_long": 0, "off_grid": 0, "no_value": 1, "trailing": 1}
    lake = DeltaRsLake(config.lake)
    silver = lake.read(SILVER_SERIES)
    assert set(silver["entity_id"]) == {"meter-ok", "meter-empty", "meter-trailing"}
    tail = silver[silver["entity_id"] == "meter-trailing"].sort_values("ds").tail(24)
    assert tail["flag_invalid"].all() and tail["y"].isna().all()
    gold = lake.read(GOLD_SERIES)
    tail = gold[gold["entity_id"] == "meter-trailing"].sort_values("ds").tail(24)
    assert tail["y"].isna().all() and not tail["is_imputed"].any()     # not filled from a day earlier
    last_valid = pd.Timestamp("2022-01-09 23:00", tz="UTC")
    assert any(f"'meter-trailing' ends with 24 missing or invalid value(s): its forecast origin is its last valid "
               f"value {last_valid.isoformat()}" in line for line in said)
    assert any("'meter-empty' has 240 row(s), all missing or invalid" in line for line in said)

    result = train(config, backend="local")
    models = lake.read(MODELS).set_index("entity_id")
    assert models.loc["meter-empty", "status"] == "failed"
    assert models.loc["meter-empty", "error"].startswith("EmptySeries")
    assert models.loc["meter-trailing", "forecast_origin"] == last_valid
    assert result.entities == 3


# --- 5. one unreadable file is one rejected batch ---------------------------------------------

def test_an_unreadable_file_is_one_rejected_batch_with_its_bytes_kept_and_csv_gz_is_read(tmp_path):
    folder = tmp_path / "in"
    write_csv(folder, "a.csv", [hourly_rows("meter-1")])
    bad = folder / "b.csv"
    bad.write_bytes(gzip.compress(hourly_rows("meter-2").to_csv(index=False).encode()))
    (folder / "c.csv.gz").write_bytes(gzip.compress(hourly_rows("meter-3").to_csv(index=False).encode()))
    config = csv_config(tmp_path, folder)
    path = _yaml(tmp_path, config)

    out = subprocess.run([sys.executable, "-m", "engine", "ingest", "--config", path], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "b.csv: the file is gzip-compressed but named .csv: rename it to b.csv.gz" in out.stderr
    lake = DeltaRsLake(config.lake)
    assert set(lake.read(GOLD_SERIES)["entity_id"]) == {"meter-1", "meter-3"}
    rejected = lake.read(REJECTED)
    assert len(rejected) == 1 and rejected["file"].iloc[0] == str(bad)
    kept = Path(config.lake.root) / UNREADABLE / rejected["_batch_id"].iloc[0] / "b.csv"
    assert kept.read_bytes() == bad.read_bytes()

    again = subprocess.run([sys.executable, "-m", "engine", "ingest", "--config", path], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 3 and len(lake.read(REJECTED)) == 1     # recorded once


# --- 2, 4, 6, 7: the nightly job under kill -9 and a broken tracking store ---------------------

@pytest.mark.parametrize("crash_at", [pytest.param("before-register", marks=pytest.mark.slow),
                                      pytest.param("after-register", marks=pytest.mark.slow),
                                      "child-run:2", "after-alias"])
def test_kill_9_while_publishing_then_rerun_gives_one_finished_parent_and_one_version(tmp_path, crash_at):
    config = nightly_job(tmp_path)
    killed = nightly(config, "--as-of", NIGHT_1, crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    parents, _, _ = mlflow_state(config, "night-20220120T0000Z")
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"     # never FINISHED half-way

    ok(nightly(config, "--as-of", NIGHT_1))
    parents, versions, client = mlflow_state(config, "night-20220120T0000Z")
    assert len(parents) == 1, [(p.info.run_id, p.info.status) for p in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "night-20220120T0000Z"
    assert len(versions) == 1 and versions[0].run_id == parent.info.run_id
    champion = client.get_model_version_by_alias("night-router", "champion")
    assert champion.version == versions[0].version
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.tags["entity_id"] for c in children) == [f"entity_{i}" for i in range(4)]
    assert all(c.info.status == "FINISHED" for c in children)
    assert parent.data.metrics["mlflow.child_runs"] == 4


def test_the_ledger_is_checked_against_the_tables_and_pull_names_a_missing_night(tmp_path):
    config = nightly_job(tmp_path)
    ok(nightly(config, "--as-of", NIGHT_1))
    killed = nightly(config, "--as-of", NIGHT_2, crash_at="before-write:score")
    assert killed.returncode == -signal.SIGKILL
    lake = DeltaRsLake(load_config(config).lake)
    # The training write of night 2 is lost on the store: its commit file is gone.
    log = Path(lake.path(FORECASTS)) / "_delta_log"
    newest = max(log.glob("*.json"))
    newest.unlink()
    assert set(lake.read(FORECASTS)["run_id"]) == {"night-20220120T0000Z"}

    pulled = subprocess.run([sys.executable, "-m", "engine", "forecasts", "pull", "--config", config, "--format",
                             "csv", "--output", str(tmp_path / "f.csv")], capture_output=True, text=True, timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    assert "warning: the latest night (run night-20220121T0000Z) forecast from origin 2022-01-20T23:00:00+00:00, " \
           "but gold/forecasts holds no row of it" in pulled.stderr

    out = ok(nightly(config, "--as-of", NIGHT_2))
    assert ("ledger: stage train of run night-20220121T0000Z is recorded as done, but gold/forecasts holds 0 row(s) "
            "of run night-20220121T0000Z, the ledger recorded 96: running it again") in out
    assert "resumed:" not in out.splitlines()[-1]
    forecasts = lake.read(FORECASTS)
    assert (forecasts["run_id"] == "night-20220121T0000Z").sum() == 96
    assert not forecasts.duplicated(["entity_id", "ds", "forecast_origin"]).any()
    parents, versions, _ = mlflow_state(config, "night-20220121T0000Z")
    assert len(parents) == 1 and len(versions) == 2        # republishing the same models added nothing


def test_no_worker_outlives_a_job_killed_in_training(tmp_path):
    config = nightly_job(tmp_path, source={"kind": "synthetic", "exogenous": ["temperature"],
                                              "synthetic": {"entities": 12, "periods": 24 * 40, "seed": 4}},
                            models=["seasonal_naive", "theta", "ets"], partitions={"tasks_per_core": 3})
    tag = f"MANYMODELS_PROBE={uuid.uuid4().hex}"
    killed = nightly(config, "--as-of", NIGHT_1, crash_at="training", env=dict([tag.split("=")]))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    left = survivors(tag)
    assert not left, f"{len(left)} process(es) outlived the killed job"


def test_a_tracking_server_nobody_answers_fails_before_training_in_seconds(tmp_path):
    config = nightly_job(tmp_path, mlflow={"tracking_uri": "http://127.0.0.1:1", "timeout": 2})
    started = time.monotonic()
    out = nightly(config, "--as-of", NIGHT_1)
    assert out.returncode == 1, out.stdout + out.stderr
    assert time.monotonic() - started < 60
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the MLflow tracking server http://127.0.0.1:1 does not answer")
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "lake" / "gold").exists()          # nothing was ingested or trained


def test_a_read_only_tracking_store_fails_before_training_and_says_so(tmp_path):
    db = tmp_path / "mlflow.db"
    config = nightly_job(tmp_path, mlflow={"tracking_uri": read_only_sqlite(db)})
    # Root writes whatever the file's mode says; without the capability to override it, it cannot.
    out = nightly(config, "--as-of", NIGHT_1, prefix=without_dac_override())
    assert out.returncode == 2, out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the MLflow store sqlite:///{db} cannot be written")
    assert "readonly" in last and "Traceback" not in out.stderr
    assert not (tmp_path / "lake" / "gold").exists()


def test_the_cli_names_the_root_cause_of_a_chained_failure(tmp_path, monkeypatch, capsys):
    from engine import cli

    def chained(*_, **__):
        try:
            raise OSError("attempt to write a readonly database")
        except OSError as exc:
            raise RuntimeError("(raised as a result of Query-invoked autoflush; consider using ...)") from exc

    config = make_config(tmp_path / "lake")
    monkeypatch.setattr(cli, "load_config", lambda *_: config)
    monkeypatch.setattr(cli, "_run_ingest", chained)
    assert cli.main(["ingest", "--config", "unused.yaml"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ingest failed: OSError: attempt to write a readonly database (full trace in ")


# --- 8. ids and timestamps read the same everywhere -------------------------------------------

def test_a_padded_or_decomposed_id_and_an_epoch_ds_are_read_as_ingest_read_them(tmp_path):
    from engine.routing.bundle import write_bundle

    folder = tmp_path / "in"
    decomposed = "compteur-e\u0301te\u0301"         # é typed as e + a combining accent
    write_csv(folder, "day1.csv", [hourly_rows("  meter-1 "), hourly_rows(decomposed, seed=1)])
    config = csv_config(tmp_path, folder)
    ingest(config, backend_for(config, "local"))
    assert set(DeltaRsLake(config.lake).read(GOLD_SERIES)["entity_id"]) == {"meter-1", "compteur-été"}
    report = train(config, backend="local")
    models = DeltaRsLake(config.lake).read(MODELS, filters=[("run_id", "=", report.run_id)])
    write_bundle(models, tmp_path / "bundle", run_id=report.run_id, freq="h", levels=(80, 95), horizon=24,
                 max_steps=48, shard_size=8)
    router = Router(tmp_path / "bundle")
    origin = models.set_index("entity_id").loc["meter-1", "forecast_origin"]
    first = origin + pd.Timedelta(hours=1)
    by_text = router.predict(pd.DataFrame({"entity_id": [" meter-1  ", decomposed], "ds": [first, first]}))
    assert list(by_text["entity_id"]) == ["meter-1", "compteur-été"]
    by_epoch = router.predict(pd.DataFrame({"entity_id": ["meter-1"], "ds": [int(first.timestamp())]}))
    assert by_epoch["ds"].iloc[0] == first and by_epoch["yhat"].iloc[0] == by_text["yhat"].iloc[0]
    with pytest.raises(RequestError, match="integer epoch read as nanoseconds"):
        router.predict(pd.DataFrame({"entity_id": ["meter-1"], "ds": [pd.Timestamp(int(first.timestamp()))]}))
