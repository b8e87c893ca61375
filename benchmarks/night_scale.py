"""A whole night at growing panel sizes (issue 21): `manymodels nightly` on synthetic panels of 1,000,
10,000 and 100,000 hourly entities on Spark local[2], seconds per stage and the driver's peak memory.

    python benchmarks/night_scale.py                                  # 1,000 and 10,000 entities, 2 runs each
    python benchmarks/night_scale.py --entities 1000 10000 100000 --repeats 1     # about 2 hours here

Each size gets its own panel (`--periods` hourly rows per entity, 4 weeks by default, written as
parquet files of `--chunk` entities: one bronze batch each) under benchmarks/.work/night/. Every run
starts from an empty lake and MLflow store, so it is a first night: ingest (bronze, silver, gold),
train (seasonal_naive + theta by default, one backtest window), MLflow (parent, bulk child runs, the
routing model registered and gated) and score (the champion routing model on Spark). Each run is
its own process (the CLI's stages, as `manymodels nightly` runs them); its process tree is sampled
every 0.2 s for the driver's peak memory (the Python driver and its Spark JVM, which in local mode
also runs the executors' JVM side) and the Python workers' (executors).

Rows go to benchmarks/results/night_scale.csv; the report (median per size) to night_scale.md with
each stage's seconds, its milliseconds per entity and how it grew against the smallest size, and a
log-log plot of seconds per stage against entities beside a line of slope 1 (linear growth).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, record, say  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work" / "night"
RESULT = "NIGHT-RESULT "
NAME = "night_scale"
STAGES = ["ingest", "train", "mlflow", "score"]
TRAIN_PARTS = ["plan", "train", "write"]     # the training stage's own timings (train = the fitting job)


def panel_folder(entities: int, periods: int, work: Path) -> Path:
    return work / f"panel-{entities}x{periods}"


def write_panel(entities: int, periods: int, chunk: int, work: Path, seed: int = 0) -> Path:
    """The seeded synthetic panel as parquet files of `chunk` entities (written once per size)."""
    from engine.config import SyntheticConfig
    from engine.sources.synthetic import synthetic_panel

    folder = panel_folder(entities, periods, work)
    done = folder / "_complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    width = len(str(entities - 1))
    for part, first in enumerate(range(0, entities, chunk)):
        n = min(chunk, entities - first)
        frame = synthetic_panel(SyntheticConfig(entities=n, periods=periods, start="2023-01-01", seed=seed + part))
        # Ids unique over the whole panel (each chunk numbers its own from 0).
        number = frame["entity_id"].str.rpartition("_")[2].astype(int) + first
        frame["entity_id"] = "entity_" + number.astype(str).str.zfill(width)
        frame.to_parquet(folder / f"part-{part:04d}.parquet", index=False)
    done.touch()
    return folder


def night_config(entities: int, periods: int, models: list[str], cores: int, work: Path) -> dict:
    run = work / f"run-{entities}x{periods}"
    return {"name": f"night-{entities}", "lake": {"root": str(run / "lake")},
            "mlflow": {"tracking_uri": f"sqlite:///{run / 'mlflow.db'}", "experiment": "night-scale",
                       "registered_model": f"night-{entities}-router"},
            "spark": {"master": f"local[{cores}]", "ui": False, "shuffle_partitions": 2 * cores},
            "source": {"kind": "parquet", "path": str(panel_folder(entities, periods, work)),
                       "exogenous": ["temperature"]},
            "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": 24,
            "backtest": {"windows": 1, "step": 24, "metric": "mase"}, "models": models, "backend": "spark",
            "training": {"workers": cores, "max_history": 336, "tuned_params": "none"},
            "nightly": {"reuse_models": False}}


def run_cell(config_path: Path) -> dict:
    """One night in this process, as `manymodels nightly` runs it; the figures as a dict."""
    from types import SimpleNamespace

    from benchmarks.cluster_cell import MemorySampler
    from engine.cli import ConsoleStages, _quiet_mlflow
    from engine.config import load_config
    from engine.nightly.job import run_night

    class Recorded(ConsoleStages):
        """The CLI's stages, keeping each stage's report for its own timings and telling the
        memory sampler which stage runs."""

        def __init__(self, config, args):
            super().__init__(config, args)
            self.reports: dict = {}

        def ingest(self, as_of):
            sampler.stage = "ingest"
            return super().ingest(as_of)

        def train(self, run_id, gold_version, as_of):
            sampler.stage = "train"
            self.reports["train"] = super().train(run_id, gold_version, as_of)
            return self.reports["train"]

        def publish(self, run_id, train_seconds):
            sampler.stage = "mlflow"
            self.reports["mlflow"] = super().publish(run_id, train_seconds)
            return self.reports["mlflow"]

        def score(self, as_of):
            sampler.stage = "score"
            return super().score(as_of)

    _quiet_mlflow()
    config = load_config(str(config_path), {})
    sampler = MemorySampler([])
    sampler.start()
    args = SimpleNamespace(backend=None, no_progress=True, rebuild=False, model_uri=None, entity=None)
    stages = Recorded(config, args)
    night = run_night(config, stages, retrain=True)
    sampler.stop()
    trained, published = stages.reports["train"], stages.reports["mlflow"]
    out = {"entities": trained.entities, "failed": len(trained.failures),
           "forecast_rows": int(night.outcome.get("forecast_rows", 0)),
           "scored_rows": int(night.outcome.get("scored_rows", 0)),
           "child_runs": published.children, "driver_peak_mb": sampler.peak_driver / 2 ** 20,
           "executor_peak_mb": sampler.peak_executors / 2 ** 20, "total_seconds": night.seconds["total"]}
    out.update({f"{stage}_seconds": night.seconds.get(stage, float("nan")) for stage in STAGES})
    out.update({f"train_{part}_seconds": trained.seconds.get(part, float("nan")) for part in TRAIN_PARTS})
    out["mlflow_children_seconds"] = published.seconds.get("children", float("nan"))
    out.update({f"driver_peak_{stage}_mb": sampler.stage_peaks.get(stage, 0) / 2 ** 20 for stage in STAGES})
    return out


def run_night_process(config_path: Path, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--cell", str(config_path)], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).resolve().parents[1])
    (config_path.parent / "night.log").write_text(proc.stdout + proc.stderr)     # what the CLI printed
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
    raise SystemExit(f"the night at {config_path.parent.name} failed (exit {proc.returncode}):\n{tail}")


def report(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Median per size of the runs of the latest commit that measured it: a Markdown table and the
    log-log plot."""
    columns = [f"{s}_seconds" for s in STAGES] + [f"train_{p}_seconds" for p in TRAIN_PARTS] + \
        ["mlflow_children_seconds", "total_seconds", "driver_peak_mb", "executor_peak_mb"]
    frame = frame[frame["commit"] == frame.groupby("entities")["commit"].transform("last")]
    table = frame.groupby("entities")[columns].median()
    runs = frame.groupby("entities").size()
    commits = frame.groupby("entities")["commit"].last()
    smallest = table.index.min()
    lines = [f"# A night at scale ({NAME}.py)", "",
             f"Median of the runs per size; ms/entity: seconds / entities x 1000; growth: seconds over the "
             f"{smallest:,}-entity night's (growth linear in entities would equal the ratio of entities).", "",
             "| entities | commit, runs | " + " | ".join(f"{s} s (ms/entity, growth)" for s in STAGES)
             + " | of train: plan / fit job / write s | MLflow child runs s | total s | driver / executor peak MB |",
             "|---|---|" + "---|" * len(STAGES) + "---|---|---|---|"]
    for n, row in table.iterrows():
        cells = [f"{row[f'{s}_seconds']:.1f} ({1000 * row[f'{s}_seconds'] / n:.2f}, "
                 f"{row[f'{s}_seconds'] / table.loc[smallest, f'{s}_seconds']:.1f}x)" for s in STAGES]
        lines.append(f"| {n:,} | {commits[n]}, {runs[n]} | " + " | ".join(cells)
                     + f" | {row['train_plan_seconds']:.1f} / {row['train_train_seconds']:.1f} / "
                       f"{row['train_write_seconds']:.1f} | {row['mlflow_children_seconds']:.1f} | "
                       f"{row['total_seconds']:.1f} | {row['driver_peak_mb']:.0f} / {row['executor_peak_mb']:.0f} |")
    if len(table) > 1:
        # The driver's line as the cluster benchmark draws it (planning, result writes, MLflow over
        # panel size), here from whole nights: its slope is the serial cost per entity.
        serial = table["train_plan_seconds"] + table["train_write_seconds"] + table["mlflow_seconds"]
        slope, fixed = np.polyfit(table.index.to_numpy(dtype=float), serial.to_numpy(), 1)
        lines += ["", f"Driver line (training's planning and result writes plus the MLflow stage, against entities): "
                  f"{fixed:.1f} s per night plus {1000 * slope:.2f} ms per entity."]
    md = out_dir / f"{NAME}.md"
    png = out_dir / "plots" / f"{NAME}.png"
    lines += ["", f"![{NAME}](plots/{png.name})", ""]
    md.write_text("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for stage in STAGES + ["total"]:
        ax.plot(table.index, table[f"{stage}_seconds"], marker="o", label=stage,
                linewidth=2.5 if stage == "total" else 1.5)
    n = table.index.to_numpy(dtype=float)
    ax.plot(n, table["total_seconds"].iloc[0] * n / n[0], color="gray", linestyle=":", label="linear in entities")
    ax.set(xscale="log", yscale="log", xlabel="entities", ylabel="seconds (median)",
           title="Nightly job on Spark local[2]: seconds per stage")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    say("\n".join(lines[:-2]))
    return [md, png]


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, nargs="+", default=[1000, 10000], help="panel sizes")
    parser.add_argument("--periods", type=int, default=24 * 28, help="hourly rows per entity (default 4 weeks)")
    parser.add_argument("--models", nargs="+", default=["seasonal_naive", "theta"], help="candidate models")
    parser.add_argument("--cores", type=int, default=2, help="Spark local[N]")
    parser.add_argument("--repeats", type=int, default=2, help="runs per size (each from an empty lake)")
    parser.add_argument("--chunk", type=int, default=10_000, help="entities per parquet file (bronze batch)")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds one night may take")
    parser.add_argument("--work", type=Path, default=WORK, help="panels, lakes and MLflow stores")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--report-only", action="store_true", help="only redraw the report from the results table")
    parser.add_argument("--cell", type=Path, help=argparse.SUPPRESS)     # internal: run one night here
    args = parser.parse_args(argv)
    if args.cell:
        print(RESULT + json.dumps(run_cell(args.cell)), flush=True)
        return
    if not args.report_only:
        for entities in args.entities:
            say(f"panel of {entities:,} entities x {args.periods} hours ...")
            write_panel(entities, args.periods, args.chunk, args.work)
            config = night_config(entities, args.periods, args.models, args.cores, args.work)
            for repeat in range(args.repeats):
                run = Path(config["lake"]["root"]).parent
                shutil.rmtree(run, ignore_errors=True)          # a first night every time
                run.mkdir(parents=True)
                path = run / "config.yaml"
                path.write_text(yaml.safe_dump(config, sort_keys=False))
                started = time.perf_counter()
                result = run_night_process(path, args.timeout)
                say(f"  #{repeat}: {result['total_seconds']:.1f}s ("
                    + ", ".join(f"{s} {result[f'{s}_seconds']:.1f}s" for s in STAGES)
                    + f"), driver peak {result['driver_peak_mb']:.0f} MB ("
                    + ", ".join(f"{s} {result[f'driver_peak_{s}_mb']:.0f}" for s in STAGES)
                    + f"), {result['failed']} failed")
                record(NAME, [{"entities": entities, "periods": args.periods, "models": "+".join(args.models),
                               "cores": args.cores, "repeat": repeat,
                               "process_seconds": time.perf_counter() - started, **result}], args.results)
    frame = pd.read_csv(args.results / f"{NAME}.csv")
    for path in report(frame, args.results):
        say(f"wrote {path}")


if __name__ == "__main__":
    main()
