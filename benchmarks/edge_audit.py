"""Ingest's edge audit on Spark: per-entity aggregates of silver against a per-entity pandas pass.

    python benchmarks/night_scale.py --entities 10000 --repeats 1     # once: the panel and its lake
    python benchmarks/edge_audit.py [--entities 10000] [--repeats 3]

After silver is written, ingest names the entities gold will not train on as received (ids too
long, no row on the grid, no valid value, trailing invalid values). It used to send every silver
row through a pandas function per entity (`applyInPandas`, the baseline below, kept here as it
was); it now aggregates per entity in Spark and brings only the entities with a problem to the
driver (`Backend.edge_stats` + `cleaning.edge_rows`). Both run on the same silver table of a
night_scale lake, alternately, in one Spark session; the script prints each one's median seconds
and the ratio, and appends rows to benchmarks/results/edge_audit.csv.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402
from benchmarks.night_scale import WORK, night_config  # noqa: E402


def per_entity_audit(rows: pd.DataFrame) -> pd.DataFrame:
    """The baseline: the per-entity function ingest ran before (cleaning.EdgeAudit), as it was."""
    from engine.medallion.cleaning import ID_TOO_LONG, NO_VALUE, TRAILING
    from engine.medallion.schemas import edge_schema
    rows = rows[~rows["flag_off_grid"].astype(bool)]
    entity, ds = rows["entity_id"].iloc[0], rows["ds"]
    valid = ds[rows["y"].notna().to_numpy()]
    last_received = ds.max()
    if rows["flag_bad_id"].astype(bool).any():
        problem, count, last_valid = ID_TOO_LONG, len(rows), valid.max() if len(valid) else pd.NaT
    elif not len(valid):
        problem, count, last_valid = NO_VALUE, len(rows), pd.NaT
    elif valid.max() < last_received and rows.loc[(ds > valid.max()).to_numpy(), "flag_invalid"].any():
        problem, last_valid = TRAILING, valid.max()
        count = int((ds > last_valid).sum())
    else:
        return edge_schema().empty_table().to_pandas()
    return pd.DataFrame({"entity_id": [entity], "problem": [problem], "rows": [count],
                         "last_valid": pd.Series([last_valid], dtype="datetime64[us, UTC]"),
                         "last_received": pd.Series([last_received], dtype="datetime64[us, UTC]")})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=10_000, help="the night_scale panel whose lake to read")
    parser.add_argument("--periods", type=int, default=24 * 28)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from engine.backends import backend_for
    from engine.config import load_config
    from engine.lake import SILVER_SERIES
    from engine.medallion.cleaning import edge_rows
    from engine.medallion.schemas import edge_schema

    data = night_config(args.entities, args.periods, ["seasonal_naive"], 2, WORK)
    if not Path(data["lake"]["root"], "silver").exists():
        raise SystemExit(f"no lake at {data['lake']['root']}: run benchmarks/night_scale.py --entities "
                         f"{args.entities} --repeats 1 first")
    path = WORK / f"edge-audit-{args.entities}.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(str(path), {})
    backend = backend_for(config)
    silver = backend.read(SILVER_SERIES)
    runs = {"per-entity pass (before)": lambda: backend.to_pandas(
                backend.apply_by(silver, "entity_id", per_entity_audit, edge_schema())),
            "aggregates (now)": lambda: edge_rows(backend.edge_stats(silver), config.series.frequency)}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    found = {}
    for repeat in range(args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            found[name] = len(run())
            seconds[name].append(time.perf_counter() - started)
            say(f"run {repeat + 1}: {name}: {seconds[name][-1]:.1f} s, {found[name]} entities named")
    before, now = (med(seconds[name]) for name in runs)
    say(f"{args.entities:,} entities, {args.entities * args.periods:,} silver rows: per-entity pass {before:.1f} s, "
        f"aggregates {now:.1f} s (medians of {args.repeats}): {before / now:.1f}x")
    record("edge_audit", [{"entities": args.entities, "rows": args.entities * args.periods, "repeats": args.repeats,
                           "per_entity_s": round(before, 2), "aggregates_s": round(now, 2),
                           "ratio": round(before / now, 2), "named": found["aggregates (now)"]}])


if __name__ == "__main__":
    main()
