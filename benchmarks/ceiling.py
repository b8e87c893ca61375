"""The machine's own ceiling for parallel training: how much faster N cores fit entities than one
when nothing but the pure per-entity function runs (no Spark, no Ray, no driver, no shuffle).

N spawned processes each train the same entities at the same time; the ceiling is their combined
entities per second over one process's. On a machine whose cores share caches, memory bandwidth
or a host's hyperthreads, it is below N, and no backend can beat it: it is the yardstick for the
training stage's speedup in the cluster report.

    python benchmarks/ceiling.py --matrix configs/bench/scaling.yaml [--entities 120] [--repeats 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from statistics import median

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import record, say  # noqa: E402


def _fit_all(rows: pd.DataFrame, spec, start) -> float:
    """Seconds to train every entity in `rows`, timed from when all processes are released."""
    from engine.training.tasks import train_bucket
    start.wait()
    t0 = time.perf_counter()
    train_bucket(rows, spec)
    return time.perf_counter() - t0


def ceiling(rows: pd.DataFrame, spec, processes: int, repeats: int = 5) -> dict:
    """Median seconds of one process and of `processes` at once on the same rows; the speedup
    (median, min and max over the repeats)."""
    context = get_context("spawn")
    timings = {1: [], processes: []}
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        manager = context.Manager()
        # Every process imports the models and fits one entity before anything is timed.
        first = rows[rows["entity_id"] == rows["entity_id"].iloc[0]]
        warm = manager.Barrier(processes)
        for future in [pool.submit(_fit_all, first, spec, warm) for _ in range(processes)]:
            future.result()
        for _ in range(repeats):
            for n in (1, processes):
                start = manager.Barrier(n)          # all n fit at once: none starts while another imports
                futures = [pool.submit(_fit_all, rows, spec, start) for _ in range(n)]
                timings[n].append(max(f.result() for f in futures))
        manager.shutdown()
    # Each repeat's one-process and all-at-once runs are back to back, so their ratio sees the
    # same machine (a shared host drifts by more than the effect); the median of those ratios.
    ratios = [processes * one / many for one, many in zip(timings[1], timings[processes])]
    return {"processes": processes, "entities": int(rows["entity_id"].nunique()), "repeats": repeats,
            "one_seconds": median(timings[1]), "parallel_seconds": median(timings[processes]),
            "ceiling_speedup": median(ratios), "ceiling_min": min(ratios), "ceiling_max": max(ratios)}


def matrix_ceilings(matrix, entities: int = 120, repeats: int = 5, results=None, work=None) -> list[dict]:
    """The ceiling at the matrix's largest core count, per panel and model set (first `entities`)."""
    from benchmarks.cluster import WORK, job_config, prepare_panel, shape_cores
    from engine.config import parse_config
    from engine.lake import GOLD_SERIES, DeltaRsLake
    from engine.training.entity import TrainSpec

    work = work or WORK
    cores = max(shape_cores(s) for s in matrix.shapes)
    rows_out = []
    if cores < 2:
        return rows_out
    for panel in matrix.panels:
        prepare_panel(matrix, panel, work)
        for models in matrix.models:
            config = parse_config(job_config(matrix, panel, "local-1", models, "cost", work, None, work))
            gold = DeltaRsLake(config.lake).read(GOLD_SERIES)
            keep = sorted(gold["entity_id"].unique())[:entities]
            rows = gold[gold["entity_id"].isin(keep)]
            result = ceiling(rows, TrainSpec.from_config(config), cores, repeats)
            row = {"matrix": matrix.name, "panel": panel.name, "models": "+".join(models), **result}
            say(f"  ceiling {panel.name} {row['models']}: 1 process {result['one_seconds']:.1f}s, {cores} at once "
                f"{result['parallel_seconds']:.1f}s -> {result['ceiling_speedup']:.2f}x of {cores}")
            record("cluster_ceiling", [row], results)
            rows_out.append(row)
    return rows_out


def main(argv=None) -> int:
    from benchmarks.cluster import load_or_report
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix", required=True, help="matrix YAML (see configs/bench/)")
    parser.add_argument("--entities", type=int, default=120, help="entities each process trains (default 120)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    matrix = load_or_report(args.matrix)
    if matrix is None:
        return 2
    if not matrix_ceilings(matrix, args.entities, args.repeats):
        say("the matrix has no shape with 2 or more cores: nothing to compare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
