"""The cluster benchmark's report: a Markdown table and PNG plots from benchmarks/results/cluster.csv.

    python benchmarks/cluster_report.py --matrix-name small [--price 0.05]

Per cell (panel x models x plan x shape): runs, median wall time and its spread (max - min),
entities/s, speedup and efficiency against the 1-core run of the same backend, p50/p95 task time,
straggler ratio, peak memory, MLflow time, failures and cost per 1,000 entity models. Plots:
throughput vs cores, scaling efficiency, cost-aware vs naive plan, time by stage, and the scaling
simulator (`partitions.simulate`, fed with the measured fit-time spread and overheads) on 8 to
1,024 cores and 10k to 1M entities beside the measured points.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS  # noqa: E402
from partitions.simulate import Overheads, simulate  # noqa: E402

CELL = ["panel", "models", "plan", "tasks_per_core", "backend", "shape", "cores"]
DEFAULT_TASKS_PER_CORE = 4      # partitions.tasks_per_core's default (runs recorded before it was a dimension)
STAGES = ["session_seconds", "plan_seconds", "train_seconds", "write_seconds", "mlflow_seconds"]
SIM_CORES = (8, 16, 32, 64, 128, 256, 512, 1024)
SIM_ENTITIES = (10_000, 100_000, 1_000_000)


def load(path: Path, price: float) -> pd.DataFrame:
    """Successful runs, with `cores` the shape's (runs before `engine.spark.spark_cores` recorded
    Spark's parallelism, 2 on a 1-core standalone cluster) and the cost per 1,000 entity models at
    `price` per core-hour."""
    frame = pd.read_csv(path)
    frame = frame[frame["wall_seconds"].notna()].copy()
    frame["plan_cores"] = frame["plan_cores"].fillna(frame["cores"]) if "plan_cores" in frame else frame["cores"]
    frame["cores"] = frame["shape"].str.partition("-")[2].astype(int)
    frame["measure_version"] = frame["measure_version"].fillna(1) if "measure_version" in frame else 1
    tpc = frame["tasks_per_core"] if "tasks_per_core" in frame else pd.Series(np.nan, index=frame.index)
    # The naive plan has no buckets per core: 0 keeps its rows in groupby keys.
    frame["tasks_per_core"] = np.where(frame["plan"] == "entity", 0, tpc.fillna(DEFAULT_TASKS_PER_CORE)).astype(int)
    core_hours = frame["cores"] * (frame["wall_seconds"] + frame["mlflow_seconds"]) / 3600
    frame["cost_per_1000_entities"] = price * core_hours / frame["entities"] * 1000
    return frame


def cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Median and spread per cell, speedup and efficiency against the same backend's 1-core cell."""
    grouped = frame.groupby(CELL, sort=True)
    out = grouped.agg(runs=("wall_seconds", "size"), entities=("entities", "first"),
                      wall=("wall_seconds", "median"), wall_min=("wall_seconds", "min"),
                      wall_max=("wall_seconds", "max"), rate=("entities_per_second", "median"),
                      task_p50=("task_seconds_p50", "median"), task_p95=("task_seconds_p95", "median"),
                      straggler=("straggler_ratio", "median"), makespan=("simulated_makespan", "median"),
                      driver_mb=("driver_peak_mb", "max"), executor_mb=("executor_peak_mb", "max"),
                      mlflow=("mlflow_seconds", "median"), failures=("failures", "max"),
                      leftovers=("leftover_processes", "max"),
                      cost=("cost_per_1000_entities", "median"),
                      **{s: (s, "median") for s in STAGES}).reset_index()
    out["spread"] = out["wall_max"] - out["wall_min"]
    same = ["panel", "models", "plan", "tasks_per_core", "backend"]
    ones = out[out["cores"] == 1].set_index(same)
    key = list(out[same].itertuples(index=False, name=None))
    out["speedup"] = [ones["wall"].get(k, np.nan) / w for k, w in zip(key, out["wall"])]
    # The training stage alone: the part that parallelizes (the job adds session start, planning, writes).
    out["train_speedup"] = [ones["train_seconds"].get(k, np.nan) / t for k, t in zip(key, out["train_seconds"])]
    out["efficiency"] = out["speedup"] / out["cores"]
    return out


def markdown(table: pd.DataFrame, price: float) -> str:
    lines = ["| panel | models | plan | shape | runs | wall s (spread) | entities/s | speedup (train stage) | "
             "efficiency | task p50/p95 s | straggler | driver/executor MB | MLflow s | failures | $ per 1k models |",
             "|" + "---|" * 15]
    for r in table.itertuples():
        lines.append(f"| {r.panel} | {r.models} | {plan_label(r.plan, r.tasks_per_core)} | {r.shape} | {r.runs} | "
                     f"{r.wall:.1f} ({r.spread:.1f}) | "
                     f"{r.rate:.1f} | {_num(r.speedup, 2)}x ({_num(r.train_speedup, 2)}x) | {_num(r.efficiency, 2)} | "
                     f"{r.task_p50:.2f}/{r.task_p95:.2f} | {r.straggler:.2f} | {r.driver_mb:.0f}/{r.executor_mb:.0f} | "
                     f"{r.mlflow:.1f} | {int(r.failures)} | {r.cost:.4f} |")
    lines.append("")
    lines.append(f"Cost at ${price:g} per core-hour over training and MLflow wall time. Speedup and efficiency "
                 "(of the job wall time; in brackets the training stage's speedup) against the 1-core cell of the "
                 "same backend; spread = slowest - fastest run.")
    return "\n".join(lines)


def plan_label(plan: str, tasks_per_core: int) -> str:
    return "naive" if plan == "entity" else f"cost, {tasks_per_core}/core"


def plans_markdown(table: pd.DataFrame) -> str:
    table = usual_plans(table)
    pivot = table.pivot_table(index=["panel", "models", "shape"], columns="plan", values=["wall", "makespan"])
    if ("wall", "entity") not in pivot or ("wall", "cost") not in pivot:
        return ""
    lines = ["| panel | models | shape | cost plan wall s | naive wall s | naive / cost | simulated makespan "
             "naive / cost |", "|---|---|---|---|---|---|---|"]
    for (panel, models, shape), row in pivot.iterrows():
        lines.append(f"| {panel} | {models} | {shape} | {row[('wall', 'cost')]:.1f} | {row[('wall', 'entity')]:.1f} | "
                     f"{row[('wall', 'entity')] / row[('wall', 'cost')]:.2f}x | "
                     f"{row[('makespan', 'entity')] / row[('makespan', 'cost')]:.2f}x |")
    return "\n".join(lines)


def usual_plans(table: pd.DataFrame) -> pd.DataFrame:
    """The naive plan and the cost plan at its most common tasks per core (one cost row per cell)."""
    cost = table[table["plan"] == "cost"]["tasks_per_core"]
    usual = int(cost.mode().iloc[0]) if len(cost) else DEFAULT_TASKS_PER_CORE
    return table[(table["plan"] == "entity") | (table["tasks_per_core"] == usual)]


def load_ceilings(out_dir: Path) -> pd.DataFrame:
    """The machine ceiling per model set and core count (benchmarks/ceiling.py), over every panel
    and matrix it was measured on: the fits see at most `history` rows, so it is the model set's
    and the machine's, not the panel's. Rows without min/max are from a shorter, noisier method."""
    path = out_dir / "cluster_ceiling.csv"
    if not path.exists():
        return pd.DataFrame()
    rows = pd.read_csv(path)
    if "ceiling_min" in rows:
        rows = rows[rows["ceiling_min"].notna()]
    if rows.empty or "ceiling_min" not in rows:
        return pd.DataFrame()
    return rows.groupby(["models", "processes"]).agg(
        runs=("ceiling_speedup", "size"), panels=("panel", lambda p: ", ".join(sorted(set(p)))),
        one=("one_seconds", "median"), many=("parallel_seconds", "median"), ceiling=("ceiling_speedup", "median"),
        low=("ceiling_min", "min"), high=("ceiling_max", "max")).reset_index()


def ceiling_markdown(table: pd.DataFrame, ceilings: pd.DataFrame) -> str:
    lines = ["| models | cores | machine ceiling | measured on | cell | training-stage speedup | share of the "
             "ceiling |", "|---|---|---|---|---|---|---|"]
    for c in ceilings.itertuples():
        measured = table[(table["models"] == c.models) & (table["cores"] == c.processes)
                         & (table["plan"] == "cost") & table["train_speedup"].notna()]
        for r in measured.itertuples():
            lines.append(f"| {c.models} | {c.processes} | {c.ceiling:.2f}x ({c.low:.2f}-{c.high:.2f}) | {c.panels} "
                         f"({c.runs} run{'s' if c.runs > 1 else ''}) | {r.panel} {r.shape} | {r.train_speedup:.2f}x | "
                         f"{r.train_speedup / c.ceiling:.0%} |")
    if len(lines) == 2:
        return ""
    lines += ["", "The ceiling: the pure per-entity function in that many processes at once, each on the same "
              "entities, against one process right before (no Spark, no Ray, no driver; `benchmarks/ceiling.py`); "
              "median (min-max) of the repeats' ratios. No backend can beat it on this machine at that moment; "
              "a measured speedup above it shows how far the machine drifts between runs."]
    return "\n".join(lines)


def _num(value: float, digits: int) -> str:
    return "-" if not np.isfinite(value) else f"{value:.{digits}f}"


def overheads(frame: pd.DataFrame, every_run: pd.DataFrame,
              version: Optional[int] = None) -> tuple[Overheads, float, float, str, float]:
    """The simulator's overheads and fit-time spread (lognormal p50, sigma), from recorded runs.

    Training stage: its wall time minus the makespan of the tasks' fit seconds is a fixed part
    per stage (shuffle, Python workers importing the engine) plus a part per task that each core
    pays for its share of the tasks: a line through runs with different tasks per core (the
    `tasks_per_core` dimension, and the naive plan's partitions). Driver: session, planning,
    result writes and MLflow run serially, a fixed part plus a part per entity: a line through the
    panel sizes. The lines use Spark local mode's runs (all matrices), the closest to one Spark
    cluster, of the newest `measure_version` when those spread enough; without any spread,
    everything is charged per task / per entity (an upper bound). The last value is MLflow's
    part of the driver's seconds per entity (its own line), for the simulation without child runs.
    `version`: the measure version whose runs count as the newest (default: the newest recorded)."""
    local = every_run[every_run["backend"] == "local"]
    local = local if len(local) else frame
    newest = local[local["measure_version"] == (local["measure_version"].max() if version is None else version)]
    notes = []

    def line(x, y, what: str, unit: str) -> tuple[float, float]:
        """(slope, intercept) of y over x from the newest runs if x varies there, else all."""
        for runs, which in ((newest, "newest"), (local, "all")):
            if x(runs).nunique() > 1:
                slope, intercept = np.polyfit(x(runs), y(runs), 1)
                notes.append(f"{what} from a line through {x(runs).nunique()} {unit} ({len(runs)} {which} runs)")
                return max(float(slope), 0.0), max(float(intercept), 0.0)
        notes.append(f"one {unit[:-1]} only, so {what} all charged to the slope: an upper bound")
        return float((y(local) / x(local)).median()), 0.0

    task_seconds, stage_seconds = line(
        lambda r: r["tasks"] / r["cores"], lambda r: (r["train_seconds"] - r["simulated_makespan"]).clip(lower=0),
        "stage and task parts", "task counts per core")
    per_entity, fixed = line(
        lambda r: r["entities"],
        lambda r: r["session_seconds"] + r["plan_seconds"] + r["write_seconds"] + r["mlflow_seconds"],
        "driver parts", "panel sizes")
    mlflow_per_entity, _ = line(lambda r: r["entities"], lambda r: r["mlflow_seconds"], "MLflow's part", "panel sizes")
    p50, p95 = float(frame["fit_seconds_p50"].median()), float(frame["fit_seconds_p95"].median())
    sigma = max(np.log(max(p95, p50 * 1.0001) / p50) / 1.645, 1e-3)
    return (Overheads(task_seconds, per_entity, fixed, stage_seconds), p50, sigma,
            "; ".join(notes[:2]) + ", Spark local", min(mlflow_per_entity, per_entity))


def simulated(frame: pd.DataFrame, every_run: pd.DataFrame, cores: Sequence[int] = SIM_CORES,
              entities: Sequence[int] = SIM_ENTITIES) -> pd.DataFrame:
    """The grid, as measured (`driver` = "measured") and without MLflow's per-entity child runs
    on the driver ("no child runs", what `mlflow.child_runs: false` leaves)."""
    costs, p50, sigma, split, mlflow = overheads(frame, every_run)
    lean = replace(costs, driver_per_entity=costs.driver_per_entity - mlflow)
    measured = np.random.default_rng(0).lognormal(np.log(p50), sigma, 20_000)
    rows = []
    for n in entities:
        for c in cores:
            for skew in (False, True):
                for strategy in ("cost", "naive"):
                    for driver, used in (("measured", costs), ("no child runs", lean)):
                        rows.append({**simulate(measured, n, c, skew=skew, strategy=strategy, overheads=used,
                                                partitions=2 * c), "driver": driver})
    out = pd.DataFrame(rows)
    out.attrs.update(task_seconds=costs.task_seconds, stage_seconds=costs.stage_seconds,
                     driver_per_entity=costs.driver_per_entity, job_seconds=costs.job_seconds,
                     mlflow_per_entity=mlflow, fit_p50=p50, fit_sigma=sigma, split=split)
    return out


BEFORE_AFTER_CORES = (64, 256, 1024)
BEFORE_AFTER_ENTITIES = 1_000_000


def driver_before_after(frame: pd.DataFrame, every_run: pd.DataFrame, cores: Sequence[int] = BEFORE_AFTER_CORES,
                        entities: int = BEFORE_AFTER_ENTITIES) -> pd.DataFrame:
    """The simulator with the driver's line of each measure version that has one (runs of Spark
    local over several panel sizes), everything else as measured now: the same fit seconds, stage
    and task parts, cost plan, no skew. So the rows differ only in the driver's serial work: what
    the engine's changes between versions did to a big job's efficiency."""
    current, p50, sigma, _, _ = overheads(frame, every_run)
    measured = np.random.default_rng(0).lognormal(np.log(p50), sigma, 20_000)
    local = every_run[every_run["backend"] == "local"]
    rows = []
    for version in sorted(local["measure_version"].unique()):
        if local.loc[local["measure_version"] == version, "entities"].nunique() < 2:
            continue                                   # no driver line of its own
        costs = overheads(frame, every_run, version=int(version))[0]
        used = replace(current, driver_per_entity=costs.driver_per_entity, job_seconds=costs.job_seconds)
        for c in cores:
            result = simulate(measured, entities, c, skew=False, strategy="cost", overheads=used)
            rows.append({"measure_version": int(version), "driver_ms_per_entity": 1000 * costs.driver_per_entity,
                         "driver_job_seconds": costs.job_seconds, **result})
    return pd.DataFrame(rows)


def before_after_markdown(table: pd.DataFrame) -> str:
    if table["measure_version"].nunique() < 2:
        return ""
    wide = table.pivot_table(index=["measure_version", "driver_ms_per_entity", "driver_job_seconds"],
                             columns="cores", values="efficiency").reset_index()
    cores = [c for c in wide.columns if isinstance(c, (int, np.integer))]
    lines = ["| measure version | driver ms / entity | driver s / job | "
             + " | ".join(f"efficiency, {c:,} cores" for c in cores) + " |",
             "|---|---|---|" + "---|" * len(cores)]
    for r in wide.itertuples(index=False):
        lines.append(f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | " + " | ".join(f"{v:.1%}" for v in r[3:]) + " |")
    return "\n".join(lines)


def plots(frame: pd.DataFrame, table: pd.DataFrame, sim: pd.DataFrame, out_dir: Path, name: str) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    usual = usual_plans(table)
    cost = usual[usual["plan"] == "cost"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (panel, models, backend), group in cost.groupby(["panel", "models", "backend"]):
        group = group.sort_values("cores")
        label = f"{backend} {panel}" + ("" if cost["models"].nunique() == 1 else f" {models}")
        axes[0].plot(group["cores"], group["rate"], marker="o", label=label)
        axes[1].plot(group["cores"], group["efficiency"], marker="o", label=label)
    axes[0].set(xlabel="cores", ylabel="entities / s (median)", title="Throughput vs cores")
    axes[1].set(xlabel="cores", ylabel="speedup / cores", title="Scaling efficiency vs the 1-core run",
                ylim=(0, 1.2))
    for ax in axes:
        ax.set_xticks(sorted(table["cores"].unique()))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    paths.append(_save(fig, out_dir / f"cluster_{name}_scaling.png"))

    if table["plan"].nunique() > 1:
        pivot = usual.pivot_table(index=["panel", "shape"], columns="plan", values="wall")
        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(pivot)), 4))
        x = np.arange(len(pivot))
        ax.bar(x - 0.2, pivot.get("cost", np.nan), 0.4, label="cost-aware plan")
        ax.bar(x + 0.2, pivot.get("entity", np.nan), 0.4, label="naive groupBy(entity_id)")
        ax.set_xticks(x, [f"{p}\n{s}" for p, s in pivot.index], fontsize=7)
        ax.set(ylabel="wall seconds (median)", title="Cost-aware vs naive plan")
        ax.legend()
        paths.append(_save(fig, out_dir / f"cluster_{name}_plans.png"))

    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(table)), 4))
    bottom = np.zeros(len(table))
    for stage in STAGES:
        ax.bar(np.arange(len(table)), table[stage], bottom=bottom, label=stage.replace("_seconds", ""))
        bottom += table[stage].to_numpy()
    ax.set_xticks(np.arange(len(table)), [f"{r.panel}\n{r.shape}\n{plan_label(r.plan, r.tasks_per_core)}"
                                          for r in table.itertuples()], fontsize=6)
    ax.set(ylabel="seconds (median)", title="Time by stage")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out_dir / f"cluster_{name}_stages.png"))

    if frame["tasks_per_core"].nunique() > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        per_core = frame["tasks"] / frame["cores"]
        for shape, idx in frame.groupby("shape").groups.items():
            ax.scatter(per_core[idx], (frame["train_seconds"] - frame["simulated_makespan"])[idx],
                       label=f"{shape} runs")
        x = np.linspace(0, per_core.max() * 1.05, 50)
        ax.plot(x, sim.attrs["stage_seconds"] + sim.attrs["task_seconds"] * x, color="black",
                label=f"fit: {sim.attrs['stage_seconds']:.1f} s + {sim.attrs['task_seconds']:.2f} s x tasks/core")
        ax.set(xlabel="tasks per core", ylabel="training stage - fit makespan (s)",
               title="Training stage overhead", xlim=(0, None), ylim=(0, None))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(_save(fig, out_dir / f"cluster_{name}_overheads.png"))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, skew in zip(axes, (False, True)):
        shown = sim[(sim["skew"] == skew) & ((sim["driver"] == "measured") | (sim["strategy"] == "cost"))]
        for (n, strategy, driver), group in shown.groupby(["entities", "strategy", "driver"]):
            lean = driver != "measured"
            ax.plot(group["cores"], group["efficiency"], marker=".",
                    linestyle=":" if lean else "-" if strategy == "cost" else "--",
                    label=f"{n:,} entities, {'cost plan' if strategy == 'cost' else 'naive'}"
                          + (", no MLflow child runs" if lean else ""))
        measured = cost[cost["panel"].map(lambda p, skew=skew: ("skew" in p) == skew)]
        for backend, group in measured.groupby("backend"):
            ax.scatter(group["cores"], group["efficiency"], marker="x", s=60, zorder=5,
                       label=f"measured {backend}")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="cores", title=f"Simulated efficiency, {'with' if skew else 'without'} skew", ylim=(0, 1.1))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("efficiency (ideal / job time)")
    axes[1].legend(fontsize=6)
    paths.append(_save(fig, out_dir / f"cluster_{name}_simulated.png"))
    return paths


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def write_report(name: str, price: float = 0.0, sim_cores: Sequence[int] = SIM_CORES,
                 sim_entities: Sequence[int] = SIM_ENTITIES, out_dir: Optional[Path] = None) -> list[Path]:
    out_dir = out_dir or RESULTS
    every_run = load(out_dir / "cluster.csv", price)
    frame = every_run[every_run["matrix"] == name]
    if frame.empty:
        raise SystemExit(f"no successful runs of matrix {name!r} in {out_dir / 'cluster.csv'}: "
                         "run benchmarks/cluster.py first")
    table = cells(frame)
    sim = simulated(frame, every_run, sim_cores, sim_entities)
    sim_path = out_dir / f"cluster_{name}_simulated.csv"
    sim.to_csv(sim_path, index=False)
    paths = plots(frame, table, sim, out_dir / "plots", name)
    a = sim.attrs
    flat = sim[(sim["strategy"] == "cost") & ~sim["skew"]]
    flattening = "; ".join(f"{driver}: " + ", ".join(f"{n:,} entities {_knee(g)}" for n, g in d.groupby("entities"))
                           for driver, d in flat.groupby("driver", sort=True))
    text = [f"# Cluster benchmark: {name}", "", markdown(table, price), ""]
    ceilings = load_ceilings(out_dir)
    ceiling = ceiling_markdown(table, ceilings) if len(ceilings) else ""
    if ceiling:
        text += ["## The machine's own ceiling", "", ceiling, ""]
    plans = plans_markdown(table)
    if plans:
        text += ["## Cost-aware vs naive plan", "", plans, ""]
    text += ["## Scaling simulator", "",
             f"Inputs measured above: fit seconds per entity lognormal with median {a['fit_p50']:.3f} s and sigma "
             f"{a['fit_sigma']:.2f}; a training stage costs {a['stage_seconds']:.1f} s plus {a['task_seconds']:.2f} s "
             f"per task; the driver's serial work (session, planning, result writes, MLflow child runs) "
             f"{a['job_seconds']:.1f} s per job plus {a['driver_per_entity'] * 1000:.1f} ms per entity, of which "
             f"MLflow's child runs {a['mlflow_per_entity'] * 1000:.1f} ms "
             f"({a['split']}). Efficiency of the cost plan without skew falls below 50% at, as measured and "
             f"without MLflow child runs on the driver: "
             f"{flattening}. Full grid: `{sim_path.name}`.", ""]
    before_after = driver_before_after(frame, every_run)
    if len(before_after) and before_after["measure_version"].nunique() > 1:
        ba_path = out_dir / f"cluster_{name}_driver_before_after.csv"
        before_after.to_csv(ba_path, index=False)
        text += ["## The driver's serial work, before and after", "",
                 f"{BEFORE_AFTER_ENTITIES:,} entities, the cost plan without skew, today's fit seconds and stage "
                 "parts; only the driver's line (session, planning, result writes, MLflow, a fixed part per job "
                 "plus a part per entity) differs, each from its own measure version's runs over panel sizes "
                 "(`benchmarks/cluster_cell.py` says what each version changed).", "",
                 before_after_markdown(before_after), ""]
        print(before_after_markdown(before_after))
    text += [f"![{p.stem}](plots/{p.name})" for p in paths]
    md = out_dir / f"cluster_{name}.md"
    md.write_text("\n".join(text) + "\n")
    return [md, sim_path, *paths]


def _knee(group: pd.DataFrame) -> str:
    below = group[group["efficiency"] < 0.5].sort_values("cores")
    return f"{int(below['cores'].iloc[0])} cores" if len(below) else f"none up to {int(group['cores'].max())} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix-name", required=True)
    parser.add_argument("--price", type=float, default=0.0, help="price per core-hour (for the table's note)")
    args = parser.parse_args()
    for path in write_report(args.matrix_name, args.price):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
