"""Replay the hostile-user probes against the real CLI and print what happened.

    python benchmarks/probes.py [--only NAME ...] [--keep]

Each probe drives `python -m engine ...` in a fresh folder the way a user or a scheduler would
(odd ids, kill -9 at a named point, a lost commit, a gzip file named .csv, a silent or read-only
tracking store) and then looks at the tables, MLflow and the process table. It prints one row
per probe: probe, expected, observed, and whether they agree; the table is also written to
benchmarks/results/probes.csv. Exit code 1 when any probe disagrees. The reliability suite
(tests/system/test_reliability.py) holds the same behaviour to account with assertions and
shares the helpers below.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import record, say  # noqa: E402

CRASH_ENV = "MANYMODELS_CRASH_AT"
NIGHT = "2022-01-20"
RUN_ID = "night-20220120T0000Z"
LONG_ID = "m" * 500
ACCENTED_ID = "compteur-" + "é" * 36          # 45 characters, 225 once percent-escaped


# --- helpers shared with tests/system/test_reliability.py --------------------------------------

def hourly_rows(entity: str, hours: int = 24 * 10, start: str = "2022-01-01", seed: int = 0) -> pd.DataFrame:
    """One entity's hourly rows as a CSV export has them (text values)."""
    rng = np.random.default_rng(seed)
    ds = pd.date_range(start, periods=hours, freq="h")
    y = 100 + 20 * np.sin(2 * np.pi * np.arange(hours) / 24) + rng.normal(0, 2, hours)
    return pd.DataFrame({"entity_id": entity, "ds": ds.strftime("%Y-%m-%d %H:%M"), "y": y.round(3).astype(str)})


def write_csv(folder: Path, name: str, frames: list[pd.DataFrame]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pd.concat(frames).to_csv(path, index=False)
    return path


def csv_job(folder: Path, source: Path, **extra) -> str:
    """A job config on CSV files under `source` (hourly, daily season, one cheap model)."""
    data = {"name": "probe", "lake": {"root": str(folder / "lake")}, "backend": "local",
            "mlflow": {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": "probe"},
            "source": {"kind": "csv", "path": str(source)}, "series": {"freq": "h", "season_lengths": [24]},
            "horizon": 24, "backtest": {"windows": 1, "step": 24}, "models": ["seasonal_naive"], **extra}
    path = folder / "csv-job.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return str(path)


def nightly_job(folder: Path, **extra) -> str:
    """A nightly job config on a small synthetic panel (4 entities, 24 days, two models)."""
    data = {"name": "night", "lake": {"root": str(folder / "lake")}, "backend": "local",
            "mlflow": {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": "reliability",
                       "registered_model": "night-router"},
            "source": {"kind": "synthetic", "exogenous": ["temperature"],
                       "synthetic": {"entities": 4, "periods": 24 * 24, "seed": 4}},
            "series": {"freq": "h", "season_lengths": [24]}, "horizon": 24,
            "backtest": {"windows": 1, "step": 24}, "models": ["seasonal_naive", "theta"],
            "training": {"workers": 2}, **extra}
    path = folder / "nightly.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def cli(*args: str, crash_at: str = "", env: dict | None = None, prefix: tuple[str, ...] = (),
        timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m engine ARGS` as a scheduler runs it (own session, output captured)."""
    env = dict(os.environ, **{CRASH_ENV: crash_at}, **(env or {}))
    return subprocess.run([*prefix, sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, start_new_session=True)


def nightly(config: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return cli("nightly", "--config", config, "--no-progress", *args, **kwargs)


def without_dac_override() -> tuple[str, ...]:
    """A command prefix under which root obeys file modes (setpriv drops CAP_DAC_OVERRIDE)."""
    if os.geteuid() != 0:
        return ()
    return ("setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search")


def read_only_sqlite(path: Path) -> str:
    sqlite3.connect(path).execute("create table t (x)").connection.close()
    path.chmod(0o444)
    return f"sqlite:///{path}"


def processes_with(tag: str) -> list[int]:
    """Pids of live processes whose environment holds `tag` (Linux /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if tag.encode() in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def survivors(tag: str, wait: float = 5.0) -> list[int]:
    """Processes carrying `tag` still alive after `wait` seconds (then killed, so none leak)."""
    deadline = time.monotonic() + wait
    while processes_with(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = processes_with(tag)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def mlflow_state(config: str, run_id: str):
    """(parent runs of `run_id`, versions of the registered model, client)."""
    from mlflow.tracking import MlflowClient

    from engine.config import load_config
    conf = load_config(config)
    client = MlflowClient(conf.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(conf.mlflow.experiment).experiment_id
    parents = client.search_runs([experiment], f"tags.`manymodels.run_id` = '{run_id}' and "
                                 "tags.`manymodels.kind` = 'parent'")
    return parents, client.search_model_versions(f"name = '{conf.mlflow.registered_model}'"), client


def lake(config: str):
    from engine.config import load_config
    from engine.lake import DeltaRsLake
    return DeltaRsLake(load_config(config).lake)


# --- the probes: each returns what it observed and whether that is what is expected -------------

def probe_long_ids(folder: Path) -> tuple[str, bool]:
    source = folder / "in"
    write_csv(source, "a.csv", [hourly_rows("meter-1"), hourly_rows(ACCENTED_ID, 1), hourly_rows(LONG_ID, seed=2)])
    out = cli("ingest", "--config", csv_job(folder, source))
    if out.returncode != 0:
        return f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1]}", False
    gold = lake(str(folder / "csv-job.yaml")).read("gold/series")
    silver = lake(str(folder / "csv-job.yaml")).read("silver/series")
    flagged = bool(silver.loc[silver["entity_id"] == LONG_ID, "flag_bad_id"].all())
    entities = set(gold["entity_id"])
    return (f"exit 0; gold {len(entities)} entities (accented one in: {ACCENTED_ID in entities}); 500-char id "
            f"flagged in silver: {flagged}", flagged and entities == {"meter-1", ACCENTED_ID})


def probe_repair(folder: Path) -> tuple[str, bool]:
    source = folder / "in"
    write_csv(source, "a.csv", [hourly_rows("meter-1")])
    config = csv_job(folder, source)
    cli("ingest", "--config", config)
    table = lake(config)
    table.write("gold/series", table.read("gold/series"), mode="overwrite", partition_by=["entity_id"],
                schema_mode="overwrite")
    write_csv(source, "b.csv", [hourly_rows(LONG_ID, seed=2)])
    out = cli("ingest", "--config", config, "--rebuild")
    partitions = table.table("gold/series").metadata().partition_columns
    raw = len(table.read("bronze/csv"))
    return (f"exit {out.returncode}; gold partitions {partitions}; bronze {raw} of 480 raw rows",
            out.returncode == 0 and partitions == [] and raw == 480)


def probe_publish_crash(point: str) -> Callable[[Path], tuple[str, bool]]:
    def probe(folder: Path) -> tuple[str, bool]:
        config = nightly_job(folder)
        killed = nightly(config, "--as-of", NIGHT, crash_at=point)
        rerun = nightly(config, "--as-of", NIGHT)
        parents, versions, client = mlflow_state(config, RUN_ID)
        statuses = sorted(p.info.status for p in parents)
        children = (client.search_runs([parents[0].info.experiment_id],
                                       f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'") if parents else [])
        return (f"kill {killed.returncode}, rerun exit {rerun.returncode}; parents {statuses}, versions "
                f"{len(versions)}, children {len(children)}",
                killed.returncode == -signal.SIGKILL and rerun.returncode == 0 and statuses == ["FINISHED"]
                and len(versions) == 1 and len(children) == 4)
    return probe


def probe_edges(folder: Path) -> tuple[str, bool]:
    source = folder / "in"
    trailing = hourly_rows("meter-trailing", seed=1)
    trailing.loc[trailing.index[-24:], "y"] = "n/a"
    write_csv(source, "a.csv", [hourly_rows("meter-ok"), hourly_rows("meter-empty").assign(y=""), trailing])
    config = csv_job(folder, source, max_failure_rate=0.5)
    ingested = cli("ingest", "--config", config)
    out = cli("train", "--config", config, "--no-progress", "--no-mlflow")
    models = lake(config).read("gold/models").set_index("entity_id") if out.returncode == 0 else None
    reported = "ends with 24 missing or invalid value(s)" in ingested.stdout
    if models is None:
        return f"train exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}", False
    empty = f"{models.loc['meter-empty', 'status']} ({str(models.loc['meter-empty', 'error']).split(':')[0]})"
    return (f"all-missing entity {empty}; trailing reported: {reported}, origin "
            f"{models.loc['meter-trailing', 'forecast_origin']:%m-%d %H:%M}",
            empty == "failed (EmptySeries)" and reported
            and models.loc["meter-trailing", "forecast_origin"] == pd.Timestamp("2022-01-09 23:00", tz="UTC"))


def probe_lost_commit(folder: Path) -> tuple[str, bool]:
    config = nightly_job(folder)
    nightly(config, "--as-of", NIGHT, crash_at="before-write:score")
    log = Path(lake(config).path("gold/forecasts")) / "_delta_log"
    max(log.glob("*.json")).unlink()
    out = nightly(config, "--as-of", NIGHT)
    rows = int((lake(config).read("gold/forecasts")["run_id"] == RUN_ID).sum()) if out.returncode == 0 else 0
    said = "is recorded as done, but" in out.stdout
    return f"rerun exit {out.returncode}; said why: {said}; forecast rows {rows}", said and rows == 96


def probe_unreadable(folder: Path) -> tuple[str, bool]:
    source = folder / "in"
    write_csv(source, "a.csv", [hourly_rows("meter-1")])
    (source / "b.csv").write_bytes(gzip.compress(hourly_rows("meter-2").to_csv(index=False).encode()))
    (source / "c.csv.gz").write_bytes(gzip.compress(hourly_rows("meter-3").to_csv(index=False).encode()))
    config = csv_job(folder, source)
    out = cli("ingest", "--config", config)
    entities = sorted(lake(config).read("gold/series")["entity_id"].unique()) if out.returncode in (0, 3) else []
    return (f"exit {out.returncode}; gold {entities}",
            out.returncode == 3 and entities == ["meter-1", "meter-3"])


def probe_orphans(folder: Path) -> tuple[str, bool]:
    config = nightly_job(folder, source={"kind": "synthetic", "exogenous": ["temperature"],
                                         "synthetic": {"entities": 12, "periods": 24 * 40, "seed": 4}},
                         models=["seasonal_naive", "theta", "ets"], partitions={"tasks_per_core": 3})
    tag = f"MANYMODELS_PROBE={uuid.uuid4().hex}"
    killed = nightly(config, "--as-of", NIGHT, crash_at="training", env=dict([tag.split("=")]))
    left = survivors(tag)
    return f"kill {killed.returncode}; {len(left)} process(es) left after 5 s", not left


def probe_read_only_store(folder: Path) -> tuple[str, bool]:
    config = nightly_job(folder, mlflow={"tracking_uri": read_only_sqlite(folder / "ro.db")})
    out = nightly(config, "--as-of", NIGHT, prefix=without_dac_override())
    last = (out.stderr.strip().splitlines() or [""])[-1].replace(str(folder), "<probe folder>")
    trained = (folder / "lake" / "gold" / "models").exists()
    return (f"exit {out.returncode}, trained: {trained}; {last[:90]}",
            out.returncode == 2 and "cannot be written" in last and not trained)


def probe_silent_server(folder: Path) -> tuple[str, bool]:
    config = nightly_job(folder, mlflow={"tracking_uri": "http://127.0.0.1:1", "timeout": 2})
    started = time.monotonic()
    out = nightly(config, "--as-of", NIGHT)
    seconds = time.monotonic() - started
    return (f"exit {out.returncode} after {seconds:.1f} s",
            out.returncode == 1 and seconds < 60 and "does not answer" in out.stderr)


def probe_ids_at_serving(folder: Path) -> tuple[str, bool]:
    from engine.routing.bundle import write_bundle
    from engine.routing.router import Router
    source = folder / "in"
    write_csv(source, "a.csv", [hourly_rows(" meter-1 ")])
    config = csv_job(folder, source)
    cli("ingest", "--config", config)
    cli("train", "--config", config, "--no-progress", "--no-mlflow")
    models = lake(config).read("gold/models")
    write_bundle(models, folder / "bundle", run_id=models["run_id"].iloc[0], freq="h", levels=(80, 95), horizon=24,
                 max_steps=48, shard_size=8)
    first = models["forecast_origin"].iloc[0] + pd.Timedelta(hours=1)
    router = Router(folder / "bundle")
    padded = router.predict(pd.DataFrame({"entity_id": ["meter-1  "], "ds": [first]}))
    epoch = router.predict(pd.DataFrame({"entity_id": ["meter-1"], "ds": [int(first.timestamp())]}))
    return (f"padded id served as {padded['entity_id'].iloc[0]!r}; epoch ds read as {epoch['ds'].iloc[0]}",
            padded["entity_id"].iloc[0] == "meter-1" and epoch["ds"].iloc[0] == first)


def probe_parent_name(folder: Path) -> tuple[str, bool]:
    config = nightly_job(folder)
    nightly(config, "--as-of", NIGHT)
    parents, _, _ = mlflow_state(config, RUN_ID)
    names = [p.info.run_name for p in parents]
    return f"parent run name(s) {names}", names == [RUN_ID]


PROBES: dict[str, tuple[str, Callable[[Path], tuple[str, bool]]]] = {
    "long-ids": ("500-char id flagged in silver, 45 accented chars in gold, exit 0", probe_long_ids),
    "repair": ("`ingest --rebuild` unpartitions an old gold, no raw row lost", probe_repair),
    **{f"kill-9 {p}": ("one FINISHED parent, one version, 4 children", probe_publish_crash(p))
       for p in ("before-register", "after-register", "child-run:2", "after-alias")},
    "edges": ("all-missing entity failed (EmptySeries); trailing n/a reported, origin at last valid", probe_edges),
    "lost commit": ("rerun says why and retrains: 96 forecast rows", probe_lost_commit),
    "unreadable": ("exit 3; the other files (and .csv.gz) in gold", probe_unreadable),
    "orphans": ("no process left after kill -9 in training", probe_orphans),
    "read-only store": ("exit 2 before training, naming the cause", probe_read_only_store),
    "silent server": ("exit 1 in seconds, before training", probe_silent_server),
    "ids at serving": ("padded id served; epoch seconds read as seconds", probe_ids_at_serving),
    "parent name": ("parent run named by the night's run id", probe_parent_name),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(PROBES), metavar="NAME", help="run only these probes")
    parser.add_argument("--keep", action="store_true", help="keep each probe's folder (printed) for inspection")
    args = parser.parse_args()
    rows = []
    for name in args.only or PROBES:
        expected, probe = PROBES[name]
        folder = Path(tempfile.mkdtemp(prefix=f"probe-{name.replace(' ', '-').replace(':', '-')}-"))
        started = time.perf_counter()
        try:
            observed, agreed = probe(folder)
        except Exception as exc:  # noqa: BLE001 - a probe that breaks is a finding, not the end of the run
            observed, agreed = f"probe raised {type(exc).__name__}: {exc}", False
        rows.append({"probe": name, "expected": expected, "observed": observed, "ok": agreed,
                     "seconds": round(time.perf_counter() - started, 1)})
        say(f"{'ok ' if agreed else 'BAD'} {name:28s} {observed}" + (f"  [{folder}]" if args.keep else ""))
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    say("")
    width = max(len(r["expected"]) for r in rows)
    say(f"{'probe':28s} {'expected':{width}s} observed")
    for row in rows:
        say(f"{row['probe']:28s} {row['expected']:{width}s} {row['observed']}")
    record("probes", rows)
    bad = [r["probe"] for r in rows if not r["ok"]]
    say(f"{len(rows) - len(bad)} of {len(rows)} probes as expected" + (f"; not: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
