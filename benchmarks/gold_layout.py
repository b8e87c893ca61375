"""How gold.series should be laid out at meter scale: write and read cost of three layouts.

    python benchmarks/gold_layout.py [--entities 100000] [--steps 48] [--repeats 3]

The same gold rows (entities x steps hourly values, one 24-character id per entity) are written
with delta-rs three ways, each into a fresh table:

- ``entity``:    partitioned by ``entity_id`` (the old layout: one folder per entity, and a
                 folder name built from the id, which a long or non-ASCII id overflows)
- ``bucket``:    partitioned by a 64-way hash bucket of the id (folder names hold no id, but
                 every reader must add the bucket to its filter to skip folders)
- ``clustered``: no partition column, rows sorted by ``entity_id, ds`` in row groups of 64k
                 rows, so Delta's per-file and Parquet's per-row-group min/max statistics skip
                 by id (what delta-spark's Z-order/liquid clustering aim at)

For each it prints the median over repeats of: write seconds, files, full read, one entity,
and 1,000 random entities (the reads the engine does: training, scoring, `forecasts pull`), and
the ratio to the ``clustered`` layout. Each measurement runs in its own process, so a layout
that runs out of memory is reported as such. Results go to benchmarks/results/gold_layout.csv.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402
from engine.lake import CLUSTERED_ROW_GROUP, DeltaRsLake  # noqa: E402

BUCKETS = 64
LAYOUTS = ("entity", "bucket", "clustered")


def panel(entities: int, steps: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.array([f"meter-{i:08d}-{rng.integers(1e9):010d}"[:24] for i in range(entities)], dtype=object)
    ds = pd.date_range("2026-01-01", periods=steps, freq="h", tz="UTC").as_unit("us")
    return pd.DataFrame({"entity_id": np.repeat(ids, steps), "ds": np.tile(ds, entities),
                         "y": rng.normal(100, 10, entities * steps),
                         "temperature": rng.normal(15, 5, entities * steps),
                         "is_imputed": np.zeros(entities * steps, dtype=bool)})


def bucket_of(ids: pd.Series) -> pd.Series:
    return ids.map(lambda e: zlib.crc32(e.encode()) % BUCKETS).astype("int32")


def write(layout: str, frame: pd.DataFrame, root: Path) -> tuple[float, int]:
    lake = DeltaRsLake(root)
    started = time.perf_counter()
    if layout == "entity":
        lake.write("gold", pa.Table.from_pandas(frame, preserve_index=False), mode="overwrite",
                   partition_by=["entity_id"])
    elif layout == "bucket":
        lake.write("gold", pa.Table.from_pandas(frame.assign(bucket=bucket_of(frame["entity_id"])),
                                                preserve_index=False), mode="overwrite", partition_by=["bucket"])
    else:
        lake.overwrite("gold", frame, pa.Schema.from_pandas(frame, preserve_index=False), clustered_by="entity_id")
    seconds = time.perf_counter() - started
    return seconds, len(lake.table("gold").file_uris())


def read(layout: str, root: Path, wanted: list[str]) -> float:
    lake = DeltaRsLake(root)
    filters = [("entity_id", "in", wanted)]
    if layout == "bucket":
        filters.append(("bucket", "in", sorted(set(bucket_of(pd.Series(wanted))))))
    started = time.perf_counter()
    rows = lake.read("gold", filters=filters)
    assert rows["entity_id"].nunique() == len(wanted)
    return time.perf_counter() - started


def measure(layout: str, entities: int, steps: int, seed: int) -> dict:
    """One write and its reads, in this process."""
    frame = panel(entities, steps)
    ids = frame["entity_id"].unique()
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix=f"gold-{layout}-") as tmp:
        seconds, files = write(layout, frame, Path(tmp))
        del frame
        full = read(layout, Path(tmp), list(ids))
        one = med(read(layout, Path(tmp), [str(rng.choice(ids))]) for _ in range(3))
        many = read(layout, Path(tmp), [str(e) for e in rng.choice(ids, 1000, replace=False)])
    return {"write_s": seconds, "files": files, "read_all_s": full, "read_one_s": one, "read_1000_s": many}


def in_child(layout: str, args, repeat: int) -> dict:
    """`measure` in a fresh process: a layout that runs out of memory is reported, not fatal."""
    out = subprocess.run([sys.executable, __file__, "--child", layout, "--entities", str(args.entities),
                          "--steps", str(args.steps), "--seed", str(repeat)], capture_output=True, text=True)
    if out.returncode != 0:
        why = "killed (out of memory)" if out.returncode in (-9, 137) else out.stderr.strip().splitlines()[-1]
        return {"error": why}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--child", choices=LAYOUTS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.entities, args.steps, args.seed)))
        return
    say(f"gold layout: {args.entities:,} entities x {args.steps} steps = {args.entities * args.steps:,} rows, "
        f"{args.repeats} repeat(s), row groups of {CLUSTERED_ROW_GROUP:,} rows (clustered)")
    figures: dict[str, dict[str, list[float]]] = {}
    failed: dict[str, str] = {}
    rows = []
    for repeat in range(args.repeats):
        for layout in args.layouts:
            if layout in failed:
                continue
            got = in_child(layout, args, repeat)
            rows.append({"layout": layout, "entities": args.entities, "steps": args.steps, "repeat": repeat, **got})
            if "error" in got:
                failed[layout] = got["error"]
                say(f"  repeat {repeat + 1} {layout:9s} failed: {got['error']}")
                continue
            for key, value in got.items():
                figures.setdefault(layout, {}).setdefault(key, []).append(value)
            say(f"  repeat {repeat + 1} {layout:9s} " + ", ".join(f"{k} {v:.3g}" for k, v in got.items()))
    record("gold_layout", rows)
    say("median over repeats (ratio to the clustered layout, the one gold uses):")
    base = figures.get("clustered")
    for layout in args.layouts:
        if layout in failed:
            say(f"  {layout:9s} failed: {failed[layout]}")
            continue
        parts = []
        for key, series in figures[layout].items():
            m = med(series)
            ratio = f" ({m / med(base[key]):.2f}x)" if base and med(base[key]) else ""
            parts.append(f"{key} {m:.3g}{ratio}")
        say(f"  {layout:9s} " + ", ".join(parts))


if __name__ == "__main__":
    main()
