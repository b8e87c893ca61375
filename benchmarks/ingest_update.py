"""Ingest of new rows for a few entities: silver/gold rebuilt for those entities only, against a
whole rebuild of the same lake, on Spark local[2] (issue 21: incremental silver/gold).

    python benchmarks/ingest_update.py [--entities 10000] [--changed 100] [--repeats 3]
    python benchmarks/ingest_update.py --changed 10000      # a second night: every entity's next day

The night_scale panel of `--entities` hourly entities x 4 weeks (benchmarks/night_scale.py writes
it once) is ingested once into a base lake under benchmarks/.work/ingest_update/. Each repeat then
copies that lake twice and adds one file: the next day of `--changed` entities (a late meter
feed, a re-sent feeder file). One copy ingests it as `manymodels ingest` does now (bronze, then
silver and gold for the changed entities only: one replaceWhere commit per table); the other
ingests it with `rebuild` (bronze, then silver and gold rebuilt whole, as every new batch did
before). Both run alternately in one Spark session; the gold tables they leave must be equal (the
script checks). Prints the medians and the ratio; appends rows to
benchmarks/results/ingest_update.csv.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402
from benchmarks.night_scale import WORK as NIGHT_WORK, night_config, write_panel  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work" / "ingest_update"


def config_for(entities: int, periods: int, source: Path, lake: Path) -> Path:
    """The night_scale config of this size, reading `source` into `lake`."""
    config = night_config(entities, periods, ["seasonal_naive"], 2, NIGHT_WORK)
    config["source"]["path"], config["lake"]["root"] = str(source), str(lake)
    path = lake.parent / f"{lake.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def late_day(panel: Path, changed: int, seed: int) -> pd.DataFrame:
    """The day after the panel's end for `changed` of its entities (picked by `seed`)."""
    frame = pd.read_parquet(next(panel.glob("part-*.parquet")), columns=["entity_id", "ds"])
    ids = np.random.default_rng(seed).choice(frame["entity_id"].unique(), size=changed, replace=False)
    ds = pd.date_range(frame["ds"].max() + pd.Timedelta(hours=1), periods=24, freq="h")
    rows = pd.DataFrame({"entity_id": np.repeat(np.sort(ids), 24), "ds": np.tile(ds, changed)})
    rng = np.random.default_rng(seed + 1)
    return rows.assign(y=rng.uniform(100, 300, len(rows)).round(3), temperature=rng.uniform(20, 40, len(rows)).round(1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--periods", type=int, default=24 * 28)
    parser.add_argument("--changed", type=int, default=100, help="entities with a new day")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from engine.backends import backend_for
    from engine.config import load_config
    from engine.lake import GOLD_SERIES, DeltaRsLake
    from engine.medallion.pipeline import ingest

    panel = write_panel(args.entities, args.periods, min(args.entities, 100_000), NIGHT_WORK)
    work = WORK / f"{args.entities}x{args.periods}"
    base = work / "base"
    if not (work / "_complete").exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        say(f"base lake: ingesting the {args.entities}-entity panel once")
        config = load_config(config_for(args.entities, args.periods, panel, base))
        ingest(config, backend_for(config), progress=lambda _: None)
        (work / "_complete").touch()

    rows = []
    for repeat in range(args.repeats):
        source = work / "source"
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir()
        for part in panel.glob("part-*.parquet"):
            (source / part.name).symlink_to(part.resolve())
        late_day(panel, args.changed, seed=repeat).to_parquet(source / "late-day.parquet", index=False)
        golds = {}
        for mode in ("update", "rebuild") if repeat % 2 == 0 else ("rebuild", "update"):
            lake = work / mode
            shutil.rmtree(lake, ignore_errors=True)
            shutil.copytree(base, lake)
            config = load_config(config_for(args.entities, args.periods, source, lake))
            backend = backend_for(config)       # one Spark session for all: the builder's getOrCreate
            started = time.perf_counter()
            report = ingest(config, backend, progress=lambda _: None, rebuild=mode == "rebuild")
            seconds = time.perf_counter() - started
            # Over half of the entities (a nightly feed of every meter's day) rebuilds whole either way.
            expected = args.changed if mode == "update" and 2 * args.changed <= args.entities else 0
            if report.updated_entities != expected:
                raise SystemExit(f"{mode}: updated {report.updated_entities} entities, expected {expected}")
            golds[mode] = DeltaRsLake(config.lake).read(GOLD_SERIES).sort_values(["entity_id", "ds"],
                                                                                ignore_index=True)
            row = {"entities": args.entities, "changed": args.changed, "repeat": repeat, "mode": mode,
                   "seconds": round(seconds, 2), **{k: round(v, 2) for k, v in report.seconds.items()},
                   "gold_rows": report.gold["rows"]}
            rows.append(row)
            say(f"repeat {repeat} {mode:8s} {seconds:7.1f} s  "
                + "  ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
        pd.testing.assert_frame_equal(golds["update"], golds["rebuild"])
    frame = pd.DataFrame(rows)
    update, rebuild = (med(frame.loc[frame["mode"] == m, "seconds"]) for m in ("update", "rebuild"))
    say(f"{args.changed} of {args.entities} entities with a new day: update {update:.1f} s, whole rebuild "
        f"{rebuild:.1f} s (medians of {args.repeats}): {rebuild / update:.2f}x; gold tables equal")
    record("ingest_update", rows)


if __name__ == "__main__":
    main()
