"""The same nightly job with the lake on the local disk and on an S3 server, side by side.

    python benchmarks/object_store.py [--entities 1000] [--repeats 3] [--backend local|spark] [--models ...]

Each repeat runs the whole night (ingest -> train -> MLflow -> score, `manymodels nightly`) on a
synthetic panel twice, into a fresh lake each time: once in a local folder, once in a fresh bucket
of moto's S3 server on 127.0.0.1 (started here by scripts/object-store.sh); the order alternates
between repeats so drift on a shared machine hits both. It prints the median seconds per stage
and the ratio object store / local, and appends one row per run to
benchmarks/results/object_store.csv. Goal: the whole job within 1.3x of local.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import free_port, med, record, say  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "object-store.sh"
STAGES = ("ingest", "train", "mlflow", "score", "total")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}


def job_config(folder: Path, lake: dict, args) -> Path:
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump({
        "name": "bench-store", "lake": lake, "backend": args.backend,
        "spark": {"master": "local[2]", "ui": False, "shuffle_partitions": 2},
        "mlflow": {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": "bench-store",
                   "registered_model": "bench-store-router"},
        "source": {"kind": "synthetic", "exogenous": ["temperature"],
                   "synthetic": {"entities": args.entities, "periods": 24 * args.days, "seed": 11}},
        "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": 24,
        "backtest": {"windows": 1, "step": 24}, "models": args.models}))
    return path


def run_night(config: Path) -> dict[str, float]:
    """Seconds per stage from the nightly's summary line."""
    done = subprocess.run([sys.executable, "-m", "engine", "nightly", "--config", str(config), "--no-progress"],
                          capture_output=True, text=True, env={**os.environ, **CREDENTIALS})
    if done.returncode != 0:
        raise SystemExit(f"the nightly failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    summary = done.stdout.strip().splitlines()[-1]
    timings = re.search(r"time (.*)$", summary).group(1)
    return {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)s", timings)}


def new_bucket(endpoint: str) -> str:
    import boto3
    name = f"bench-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench-secret").create_bucket(Bucket=name)
    return f"s3://{name}/lake"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--entities", type=int, default=1000, help="entities in the synthetic panel (default 1000)")
    parser.add_argument("--days", type=int, default=28, help="days of hourly history per entity (default 28)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per store (default 3)")
    parser.add_argument("--backend", choices=["local", "spark"], default="local")
    parser.add_argument("--models", nargs="+", default=["seasonal_naive", "theta"])
    parser.add_argument("--port", type=int, default=0, help="port for the S3 server (default: a free one)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="manymodels-bench-store-"))
    port = args.port or free_port()
    endpoint = subprocess.run([str(SCRIPT), "start-s3", str(work / "s3"), str(port)], check=True,
                              capture_output=True, text=True).stdout.strip()
    storage = {"endpoint": endpoint, "path_style": True, "allow_http": True}
    runs: dict[str, list[dict]] = {"local": [], "s3": []}
    try:
        for repeat in range(args.repeats):
            order = ("local", "s3") if repeat % 2 == 0 else ("s3", "local")
            for store in order:
                folder = work / f"{store}-{repeat}"
                folder.mkdir()
                lake = {"root": str(folder / "lake")} if store == "local" else \
                    {"root": new_bucket(endpoint), "storage": storage}
                seconds = run_night(job_config(folder, lake, args))
                runs[store].append(seconds)
                say(f"repeat {repeat + 1}/{args.repeats} {store:5s}: " +
                    ", ".join(f"{k} {seconds.get(k, 0):.1f}s" for k in STAGES))
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        subprocess.run([str(SCRIPT), "stop", str(work / "s3")], check=False)
        shutil.rmtree(work, ignore_errors=True)

    say(f"\nnightly on {args.entities} entities ({args.backend} backend, {', '.join(args.models)}), "
        f"median of {args.repeats}:")
    say(f"{'stage':8s} {'local s':>9s} {'S3 s':>9s} {'S3/local':>9s}")
    rows = []
    for stage in STAGES:
        local, s3 = med(r.get(stage, 0.0) for r in runs["local"]), med(r.get(stage, 0.0) for r in runs["s3"])
        ratio = s3 / local if local > 0 else float("nan")
        say(f"{stage:8s} {local:9.1f} {s3:9.1f} {ratio:9.2f}")
        rows.append({"stage": stage, "entities": args.entities, "backend": args.backend,
                     "models": " ".join(args.models), "repeats": args.repeats, "local_s": round(local, 2),
                     "s3_s": round(s3, 2), "ratio": round(ratio, 3),
                     "local_runs": " ".join(f"{r.get(stage, 0):.1f}" for r in runs["local"]),
                     "s3_runs": " ".join(f"{r.get(stage, 0):.1f}" for r in runs["s3"])})
    path = record("object_store", rows)
    total = rows[-1]["ratio"]
    say(f"\nwhole job: object store / local = {total:.2f}x (goal <= 1.3x); results appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
