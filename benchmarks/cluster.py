"""Cluster-size benchmark: the real training job over a matrix of cluster shapes, panels, model
sets and partition plans, repeated, with a report, plots and a scaling simulator.

    python benchmarks/cluster.py --matrix configs/bench/small.yaml      # run the matrix, then report
    python benchmarks/cluster.py --matrix configs/bench/small.yaml --report-only

Shapes: `local-N` (Spark local[N]), `standalone-N` (a Spark standalone master and N one-core
workers on 127.0.0.1, started and stopped by this harness), `ray-N` (a local Ray with N CPUs).
Panels: `synthetic` (N entities), `skewed` (a share of the entities with `factor` x the history)
and `gefcom2012`; each is ingested once into its own lake under benchmarks/.work/cluster/.
Every cell (shape x panel x models x plan) runs `repeats` times, each run in a fresh process
(`benchmarks/cluster_cell.py`: session start, training, MLflow publish); every process a run or
a cluster started must be gone afterwards, and any left is recorded and killed. One row per run
is appended to benchmarks/results/cluster.csv (shape, cores, entities, wall time, entities/s,
p50/p95 task time, straggler ratio, driver and executor peak memory, MLflow time, failures,
machine metadata, cost per 1,000 entity models at the matrix's price per core-hour); then the
report (`benchmarks/cluster_report.py`) writes the Markdown table and the plots.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cluster_cell import RESULT  # noqa: E402
from benchmarks.common import RESULTS, record, say  # noqa: E402
from benchmarks.standalone import StandaloneCluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(__file__).resolve().parent / ".work" / "cluster"
SHAPE_KINDS = ("local", "standalone", "ray")
PANEL_KINDS = ("synthetic", "skewed", "gefcom2012")
CELL_TIMEOUT = 3600


class MatrixError(ValueError):
    """The matrix file is wrong; the message says what to change."""


@dataclass(frozen=True)
class Panel:
    name: str
    kind: str
    entities: int = 200
    periods: int = 24 * 28           # hourly rows per (light) entity
    heavy_share: float = 0.05
    factor: int = 10
    seed: int = 0


@dataclass(frozen=True)
class Matrix:
    name: str
    shapes: list[str]
    panels: list[Panel]
    models: list[list[str]]
    plans: list[str] = field(default_factory=lambda: ["cost"])
    tasks_per_core: list[int] = field(default_factory=lambda: [4])   # the cost plan's buckets per core
    repeats: int = 3
    price_per_core_hour: float = 0.0
    mlflow: bool = True
    horizon: int = 24
    windows: int = 1
    history: int = 336               # training.max_history: recent hourly steps each model fits

    @staticmethod
    def load(path: str | Path) -> "Matrix":
        path = Path(path)
        if not path.is_file():
            raise MatrixError(f"matrix file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        unknown = set(data) - set(Matrix.__dataclass_fields__)
        if unknown:
            raise MatrixError(f"{path}: unknown key(s) {sorted(unknown)}; "
                              f"allowed: {sorted(Matrix.__dataclass_fields__)}")
        try:
            panels = [Panel(**p) for p in data.pop("panels", [])]
            matrix = Matrix(name=data.pop("name", path.stem), panels=panels, **data)
        except TypeError as exc:
            raise MatrixError(f"{path}: {exc}") from None
        for shape in matrix.shapes:
            kind, _, n = shape.partition("-")
            if kind not in SHAPE_KINDS or not n.isdigit() or int(n) < 1:
                raise MatrixError(f"{path}: shape {shape!r} must be local-N, standalone-N or ray-N (N >= 1)")
        for panel in matrix.panels:
            if panel.kind not in PANEL_KINDS:
                raise MatrixError(f"{path}: panel {panel.name!r} has kind {panel.kind!r}; use one of {PANEL_KINDS}")
        bad = [p for p in matrix.plans if p not in ("cost", "entity")]
        if bad or not matrix.shapes or not matrix.panels or not matrix.models or matrix.repeats < 1 \
                or not matrix.tasks_per_core or min(matrix.tasks_per_core) < 1:
            raise MatrixError(f"{path}: needs shapes, panels, models, plans in (cost, entity), "
                              "tasks_per_core >= 1 and repeats >= 1")
        return matrix


def shape_cores(shape: str) -> int:
    return int(shape.partition("-")[2])


def job_config(matrix: Matrix, panel: Panel, shape: str, models: list[str], plan: str, run_dir: Path,
               master: Optional[str], work: Path = WORK, tasks_per_core: int = 4) -> dict[str, Any]:
    """The training config of one run (plain data, parsed in the cell process)."""
    kind, cores = shape.partition("-")[0], shape_cores(shape)
    lake = work / matrix.name / panel.name / "lake"
    data = {"name": f"bench-{matrix.name}-{panel.name}", "lake": {"root": str(lake)},
            "mlflow": {"tracking_uri": f"sqlite:///{run_dir / 'mlflow.db'}", "experiment": "bench",
                       "registered_model": "bench-router", "log_workers": cores},
            "spark": {"master": master or f"local[{cores}]", "ui": False, "shuffle_partitions": max(2, 2 * cores)},
            "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": matrix.horizon,
            "backtest": {"windows": matrix.windows, "step": matrix.horizon, "metric": "mase"},
            "models": models, "backend": "ray" if kind == "ray" else "spark",
            "training": {"workers": cores, "max_history": matrix.history, "tuned_params": "none"},
            "partitions": {"strategy": plan, "tasks_per_core": tasks_per_core}, "nightly": {"reuse_models": False}}
    data["source"] = {"kind": "gefcom2012", "exogenous": ["temperature", "is_holiday"]} \
        if panel.kind == "gefcom2012" else {"kind": "parquet", "path": str(panel_file(matrix, panel, work)),
                                             "exogenous": ["temperature"]}
    return data


def panel_file(matrix: Matrix, panel: Panel, work: Path = WORK) -> Path:
    return work / matrix.name / panel.name / "panel.parquet"


def prepare_panel(matrix: Matrix, panel: Panel, work: Path = WORK) -> None:
    """Write the panel (synthetic or skewed) and ingest it once into the panel's lake."""
    from engine.config import parse_config
    from engine.lake import GOLD_SERIES, DeltaRsLake
    from engine.backends import backend_for
    from engine.medallion.pipeline import ingest
    from engine.sources.synthetic import synthetic_panel

    config = parse_config(job_config(matrix, panel, "local-1", matrix.models[0], "cost", work, None, work))
    if DeltaRsLake(config.lake).exists(GOLD_SERIES):
        return
    if panel.kind != "gefcom2012":
        from engine.config import SyntheticConfig
        long = panel.periods * (panel.factor if panel.kind == "skewed" else 1)
        frame = synthetic_panel(SyntheticConfig(entities=panel.entities, periods=long, seed=panel.seed))
        if panel.kind == "skewed":
            from benchmarks.skew import keep_heavy
            frame = keep_heavy(frame, panel.heavy_share, panel.periods, panel.seed)
        panel_file(matrix, panel, work).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(panel_file(matrix, panel, work), index=False)
    say(f"  ingesting panel {panel.name} ...")
    ingest(config, backend_for(config, "local"))


def run_cell(cell: dict, timeout: float = CELL_TIMEOUT) -> tuple[Optional[dict], list[str], str]:
    """Run one cell in a new process session; (result or None, leftover processes, error text)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "cluster_cell.py"), json.dumps(cell)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\ncell timed out after {timeout:.0f}s"
    leftovers = session_leftovers(proc.pid)
    if leftovers:
        os.killpg(proc.pid, signal.SIGKILL)
    result = next((json.loads(line[len(RESULT):]) for line in out.splitlines() if line.startswith(RESULT)), None)
    return result, leftovers, "" if result else (err or out)[-3000:]


def session_leftovers(session: int) -> list[str]:
    """Live processes still in the cell's session (zombies excluded: they run nothing)."""
    found = []
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if os.getsid(proc.pid) == session and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:100]}")
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def run_matrix(matrix: Matrix, repeats: Optional[int] = None, work: Path = WORK,
               results: Optional[Path] = None) -> list[dict]:
    rows = []
    for panel in matrix.panels:
        prepare_panel(matrix, panel, work)
    # The naive plan has no buckets to size: it runs once, not once per tasks_per_core.
    cells = [(shape, panel, models, plan, tpc) for shape, panel, models, plan, tpc in itertools.product(
        matrix.shapes, matrix.panels, matrix.models, matrix.plans, matrix.tasks_per_core)
        if plan == "cost" or tpc == matrix.tasks_per_core[0]]
    say(f"matrix {matrix.name}: {len(cells)} cells x {repeats or matrix.repeats} repeats")
    for shape in matrix.shapes:
        kind, cores = shape.partition("-")[0], shape_cores(shape)
        cluster = StandaloneCluster(workers=cores, cores=1, log_dir=str(work / "standalone")).start() \
            if kind == "standalone" else None
        try:
            for (_, panel, models, plan, tpc), repeat in itertools.product(
                    [c for c in cells if c[0] == shape], range(repeats or matrix.repeats)):
                run_dir = work / matrix.name / "runs" / f"{shape}-{panel.name}-{'+'.join(models)}-{plan}-{tpc}-{repeat}"
                run_dir.mkdir(parents=True, exist_ok=True)
                cell = {"config": job_config(matrix, panel, shape, models, plan, run_dir,
                                             cluster.url if cluster else None, work, tpc),
                        "mlflow": matrix.mlflow,
                        "worker_pids": [p.pid for p in cluster.processes[1:]] if cluster else []}
                started = time.perf_counter()
                result, leftovers, error = run_cell(cell)
                row = {"matrix": matrix.name, "shape": shape, "backend": kind, "panel": panel.name,
                       "panel_kind": panel.kind, "models": "+".join(models), "plan": plan, "tasks_per_core": tpc,
                       "repeat": repeat,
                       "process_seconds": time.perf_counter() - started, "leftover_processes": len(leftovers),
                       "error": error.strip().splitlines()[-1][:300] if error else "", **(result or {}),
                       # the shape's cores; the plan's as the engine saw them (runs before engine.spark.spark_cores
                       # saw Spark's parallelism: 2 on a 1-core standalone cluster)
                       "cores": cores, "plan_cores": (result or {}).get("cores")}
                if result:
                    core_hours = row["cores"] * (row["wall_seconds"] + row["mlflow_seconds"]) / 3600
                    row["cost_per_1000_entities"] = (matrix.price_per_core_hour * core_hours
                                                     / max(row["entities"], 1) * 1000)
                    say(f"  {shape:13s} {panel.name:14s} {row['models']:22s} {plan:6s} x{tpc:<3d} #{repeat}: "
                        f"{row['wall_seconds']:7.1f}s, {row['entities_per_second']:6.1f} entities/s, "
                        f"straggler {row['straggler_ratio']:.2f}, mlflow {row['mlflow_seconds']:.1f}s"
                        + (f", {len(leftovers)} LEFTOVER process(es) killed" if leftovers else ""))
                else:
                    say(f"  {shape} {panel.name} {plan} #{repeat}: FAILED: {row['error']}")
                record("cluster", [row], results)
                rows.append(row)
        finally:
            if cluster:
                cluster.stop()
                if cluster.leftovers():
                    say(f"  standalone cluster left {len(cluster.leftovers())} process(es): {cluster.leftovers()}")
    return rows


def only(matrix: Matrix, field_name: str, wanted: Optional[list[str]], name) -> Matrix:
    """The matrix cut to the `wanted` names of one of its lists (all of it when None)."""
    if not wanted:
        return matrix
    items = getattr(matrix, field_name)
    unknown = sorted(set(wanted) - {name(i) for i in items})
    if unknown:
        raise MatrixError(f"--{field_name} {unknown} are not in the matrix's {field_name} {[name(i) for i in items]}")
    return replace(matrix, **{field_name: [i for i in items if name(i) in wanted]})


def load_or_report(path: str, shapes: Optional[list[str]] = None,
                   panels: Optional[list[str]] = None) -> Optional[Matrix]:
    """The matrix file cut to `shapes` and `panels`, or None after printing what is wrong."""
    try:
        matrix = only(Matrix.load(path), "shapes", shapes, lambda s: s)
        return only(matrix, "panels", panels, lambda p: p.name)
    except MatrixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix", required=True, help="matrix YAML (see configs/bench/)")
    parser.add_argument("--repeats", type=int, help="override the matrix's repeats")
    parser.add_argument("--shapes", nargs="+", help="run only these of the matrix's shapes (e.g. ray-1 ray-2)")
    parser.add_argument("--panels", nargs="+", help="run only these of the matrix's panels (by name)")
    parser.add_argument("--report-only", action="store_true", help="only redraw the report from the results table")
    parser.add_argument("--no-ceiling", action="store_true",
                        help="skip measuring the machine's ceiling (benchmarks/ceiling.py) after the runs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--work", type=Path, default=WORK,
                        help="lakes and run folders (default benchmarks/.work/cluster)")
    parser.add_argument("--sim-cores", type=int, nargs="+", help="simulated core counts (default 8 ... 1024)")
    parser.add_argument("--sim-entities", type=int, nargs="+", help="simulated panel sizes (default 10k 100k 1M)")
    args = parser.parse_args(argv)
    matrix = load_or_report(args.matrix, shapes=args.shapes, panels=args.panels)
    if matrix is None:
        return 2
    if not args.report_only:
        run_matrix(matrix, args.repeats, args.work, args.results)
        if not args.no_ceiling:
            from benchmarks.ceiling import matrix_ceilings
            matrix_ceilings(matrix, results=args.results, work=args.work)
    from benchmarks.cluster_report import SIM_CORES, SIM_ENTITIES, write_report
    for path in write_report(matrix.name, matrix.price_per_core_hour, args.sim_cores or SIM_CORES,
                             args.sim_entities or SIM_ENTITIES, args.results):
        say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
