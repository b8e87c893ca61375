"""`gpu_additive` through the whole training stage, gold read from Delta to forecasts written: the
figure issue 21 asks of a GPU machine (entity fits/s inside `manymodels train`), with the CPU's
in the same run as the baseline.

    python benchmarks/gpu_stage.py                                  # 2,048 entities; CPU, and CUDA if present
    python benchmarks/gpu_stage.py --entities 20000 100000 --devices cpu cuda --repeats 3
    git worktree add /tmp/baseline <commit> && python benchmarks/gpu_stage.py --baseline /tmp/baseline

A synthetic hourly panel (`--weeks` of history, temperature as a regressor) is ingested once per
size into a lake under `--work` (the local backend: delta-rs, no JVM; past `--ingest` entities,
gold is tiled from the ingested ones, see `tile_gold`), then trained with
`gpu_additive` as the only candidate by `engine.training.job.train` on the local backend, its
worker processes `--workers` (default: every core), `--repeats` rounds of one run per device in
turn, each run in a process of its own (MANYMODELS_DEVICE set: the workers' fits follow it) on a
fresh copy of the lake as ingested. The stage's
seconds are TrainReport's `total`: the planning read of gold, every task's backtest folds and
final fits (a task's entities as a panel: engine.training.panel), and the three result tables
written. Prints entities/s and entity fits/s ((windows + 1) fits an entity) per device (median of
the repeats), the ratio to the CPU's, and the largest relative difference between the devices'
forecasts (CUDA's float64 differs from the CPU's in the last digits); appends to
benchmarks/results/gpu_stage.csv. With `--baseline DIR` (a checkout of an earlier commit), that
engine's training stage runs too (on `--baseline-device`, default the CPU), on the same lake, as
one more "device": the ratio is then this checkout's on that device against it.

On a machine without pyspark or MLflow (the device machine) this needs only what
`engine.training` imports: numpy, pandas, pyarrow, torch, deltalake (with arro3-core), ujson,
threadpoolctl and pyyaml; carry the missing ones as wheels (see the device tool's README).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402

NAME = "gpu_stage"
WORK = Path(__file__).resolve().parent / ".work" / NAME


def stage_config(lake: Path, entities: int, weeks: int, windows: int, history: int, workers: int):
    from engine.config import parse_config
    return parse_config({"name": NAME, "backend": "local", "lake": {"root": str(lake)},
                         "mlflow": {"tracking_uri": f"sqlite:///{lake}.mlflow.db"},
                         "source": {"kind": "synthetic", "synthetic": {"entities": entities, "periods": 24 * 7 * weeks},
                                    "exogenous": ["temperature"]},
                         "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": 24,
                         "backtest": {"windows": windows, "step": 24}, "models": ["gpu_additive"],
                         "training": {"max_history": history, "workers": workers}})


def cell(args: argparse.Namespace) -> None:
    """One training stage on this process's MANYMODELS_DEVICE: its seconds as JSON."""
    if args.engine:
        sys.path.insert(0, str(args.engine))       # a baseline's engine, imported instead of this one
    import numpy as np
    from engine.lake import DeltaRsLake
    from engine.training.job import train
    from engine.training.tables import FORECASTS
    import engine
    say(f"    engine from {Path(engine.__file__).parent.parent}")
    config = stage_config(args.cell, args.entities[0], args.weeks, args.windows, args.history, args.workers)
    label = "baseline" if args.engine else os.environ["MANYMODELS_DEVICE"]
    report = train(config, backend="local", run_id=label)
    parts = ", ".join(f"{k} {v:.2f}s" for k, v in report.seconds.items() if k != "total")
    say(f"    {label}: {report.seconds['total']:.2f}s ({parts}), "
        f"{int((report.summary['status'] == 'ok').sum())} of {report.entities} entities ok")
    forecasts = DeltaRsLake(config.lake).read(FORECASTS, filters=[("run_id", "=", report.run_id)])
    forecasts = forecasts.sort_values(["entity_id", "ds"])
    np.save(args.cell.with_suffix(f".{label}.npy"), forecasts["yhat"].to_numpy())
    print(json.dumps({"seconds": report.seconds["total"], "train_seconds": report.seconds["train"],
                      "plan_seconds": report.seconds["plan"], "write_seconds": report.seconds["write"]}))


def tile_gold(config, entities: int) -> float:
    """Gold.series grown to `entities` by copies of the ingested panel, each copy's ids prefixed
    `c<k>-` and its load scaled by 1 + k/1000 (distinct series, the same shapes), written in one
    commit as ingest writes gold (sorted by entity and time, in clustered row groups). Ingest's
    pandas pipeline runs at about 20 ms an entity, 30 minutes for 10^5: the stage timed here
    starts from gold, so only gold is grown."""
    import time
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import WriterProperties
    from engine.lake import CLUSTERED_ROW_GROUP, GOLD_SERIES, DeltaRsLake
    started = time.perf_counter()
    lake = DeltaRsLake(config.lake)
    gold = lake.table(GOLD_SERIES).to_pyarrow_table()
    gold = gold.sort_by([("entity_id", "ascending"), ("ds", "ascending")])
    ids = pc.unique(gold["entity_id"])          # in gold's (sorted) order
    copies = -(-entities // len(ids))
    width, kept_ids = len(str(copies)), ids[:entities - len(ids) * (copies - 1)]     # the last copy's
    tiles = []
    for k in range(copies):
        tile = gold if k < copies - 1 else gold.filter(pc.is_in(gold["entity_id"], kept_ids))
        named = pc.binary_join_element_wise(pa.scalar(f"c{k:0{width}d}"), tile["entity_id"], "-")
        y = pc.multiply(tile["y"], 1 + k / 1000)
        tiles.append(tile.set_column(0, "entity_id", named).set_column(tile.schema.get_field_index("y"), "y", y))
    lake.write(GOLD_SERIES, pa.concat_tables(tiles), mode="overwrite", partition_by=[], schema_mode="overwrite",
               writer_properties=WriterProperties(max_row_group_size=CLUSTERED_ROW_GROUP))
    return time.perf_counter() - started


def run_device(device: str, lake: Path, entities: int, args: argparse.Namespace) -> dict:
    """One training stage of `device` in a process of its own, on the lake as ingested (a run's
    tables would make the next one's writes merge into them)."""
    shutil.rmtree(lake, ignore_errors=True)
    shutil.copytree(lake.with_suffix(".ingested"), lake)
    command = [sys.executable, __file__, "--cell", str(lake), "--entities", str(entities), "--weeks", str(args.weeks),
               "--windows", str(args.windows), "--history", str(args.history), "--workers", str(args.workers)]
    if device == "baseline":
        command += ["--engine", str(args.baseline.resolve())]
    env = {**os.environ, "MANYMODELS_DEVICE": args.baseline_device if device == "baseline" else device}
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    for line in lines[:-1]:
        say(line)
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the {device} run failed (exit {done.returncode}); its error is above")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, nargs="+", default=[2048], help="panel sizes")
    parser.add_argument("--weeks", type=int, default=4, help="hourly history per entity, in weeks")
    parser.add_argument("--windows", type=int, default=3, help="backtest windows (each one fit)")
    parser.add_argument("--history", type=int, default=336, help="training.max_history (rows a fit sees)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="local backend's worker processes")
    parser.add_argument("--ingest", type=int, default=4096,
                        help="entities ingested (bronze to gold); a larger panel tiles gold from them")
    parser.add_argument("--devices", nargs="+", help="torch devices to train on (default: cpu, and cuda if present)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per device and size")
    parser.add_argument("--work", type=Path, default=WORK, help="lakes (one per size, rebuilt)")
    parser.add_argument("--results", type=Path, help="results folder (default benchmarks/results)")
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier commit, run after each round's devices")
    parser.add_argument("--baseline-device", default="cpu", help="the torch device the baseline trains on")
    parser.add_argument("--cell", type=Path, help=argparse.SUPPRESS)      # internal: one device's runs
    parser.add_argument("--engine", type=Path, help=argparse.SUPPRESS)    # internal: the baseline's checkout
    args = parser.parse_args()
    if args.cell:
        return cell(args)

    import numpy as np
    import torch
    from engine.backends import backend_for
    from engine.medallion.pipeline import ingest
    devices = args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    if args.baseline:
        devices = [*devices, "baseline"]
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("--devices cuda: torch sees no CUDA device here")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    fits_per_entity = args.windows + 1
    rows = []
    for entities in args.entities:
        lake = args.work / f"lake-{entities}"
        shutil.rmtree(lake, ignore_errors=True)
        config = stage_config(lake, entities, args.weeks, args.windows, args.history, args.workers)
        base = min(entities, args.ingest)
        say(f"{entities:,} entities x {24 * 7 * args.weeks} hours: ingesting {base:,} into {lake} ...")
        ingest(replace(config, source=replace(config.source, synthetic=replace(config.source.synthetic,
                                                                               entities=base))),
               backend_for(config, "local"), progress=lambda line: None)
        if entities > base:
            say(f"  gold tiled to {entities:,} entities: {tile_gold(config, entities):.1f}s")
        shutil.rmtree(lake.with_suffix(".ingested"), ignore_errors=True)
        shutil.copytree(lake, lake.with_suffix(".ingested"))
        runs: dict[str, list[dict]] = {device: [] for device in devices}
        for repeat in range(args.repeats):          # the devices in turn: the machine's drift hits each alike
            say(f"  round {repeat + 1} of {args.repeats}: {', '.join(devices)}, {args.workers} worker(s) each")
            for device in devices:
                runs[device].append(run_device(device, lake, entities, args))
        rates = {}
        for device in devices:
            seconds = med(r["seconds"] for r in runs[device])
            rates[device] = entities / seconds
            rows.append({"entities": entities, "weeks": args.weeks, "windows": args.windows,
                         "max_history": args.history, "workers": args.workers, "device": device, "gpu": gpu,
                         "repeats": args.repeats, "seconds": round(seconds, 3),
                         **{f"{name}_seconds": round(med(r[f"{part}_seconds"] for r in runs[device]), 3)
                            for part, name in (("plan", "plan"), ("train", "tasks"), ("write", "write"))},
                         "entities_per_s": round(rates[device], 1),
                         "entity_fits_per_s": round(rates[device] * fits_per_entity, 1)})
            say(f"  {device}: {seconds:.2f}s (median of {args.repeats}): {rates[device]:,.1f} entities/s, "
                f"{rates[device] * fits_per_entity:,.1f} entity fits/s")
        for device in devices:      # each against the CPU's run; the baseline against its own device's
            against = args.baseline_device if device == "baseline" else "cpu"
            if device == against or against not in rates:
                continue
            base = np.load(lake.with_suffix(f".{against}.npy"))
            other = np.load(lake.with_suffix(f".{device}.npy"))
            gap = (float(np.max(np.abs(other - base) / np.maximum(np.abs(base), 1e-9))) if len(base) == len(other)
                   else np.nan)
            for row in rows[-len(devices):]:
                if row["device"] == device:
                    row.update(ratio_to_cpu=round(rates[device] / rates[against], 2), forecast_rel_gap=gap,
                               against=against)
            if device == "baseline":
                say(f"  this checkout on the {against} / the baseline: {rates[against] / rates[device]:.2f}x; "
                    f"forecasts differ by at most {gap:.2e} (relative)")
            else:
                say(f"  {device} / cpu: {rates[device] / rates['cpu']:.2f}x; forecasts differ by at most "
                    f"{gap:.2e} (relative)")
    path = record(NAME, rows, args.results)
    say(f"results appended to {path}")


if __name__ == "__main__":
    main()
