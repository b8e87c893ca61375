"""Routing model load time and resident memory vs entities in the model and entities used.

    python benchmarks/routing_load.py [--sizes 100 1000 10000] [--repeats 3]

For each size a routing model of real serialized ETS models is saved (benchmarks/
routing_fixture.py); then, in a fresh Python process per repeat, it is loaded with
`mlflow.pyfunc.load_model` (timed; imports are done before the clock starts) and used for
10, 100 and 1,000 entities (24-step forecasts), reading resident memory (VmRSS) after each
step. Target: load < 2 s at 10,000 entities; memory grows with entities used, not held.
Appends rows to benchmarks/results/routing_load.csv.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import med, record, say  # noqa: E402

PROBE = r"""
import json, sys, time
import numpy as np, pandas as pd
import mlflow, mlflow.pyfunc
from engine.routing import served  # noqa: F401  (import cost outside the clock)

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

path, entities = sys.argv[1], int(sys.argv[2])
out = {"rss_before_mb": rss_mb()}
t = time.perf_counter(); model = mlflow.pyfunc.load_model(path); out["load_s"] = time.perf_counter() - t
out["rss_loaded_mb"] = rss_mb()
router = model.unwrap_python_model().router
used = 0
for target in (10, 100, 1000):
    target = min(target, entities)
    ids = [f"feeder-{i:06d}" for i in range(used, target)]
    for start in range(0, len(ids), 100):
        chunk = ids[start:start + 100]
        rows = [(e, router.bundle.index[e].origin.tz_localize(None) + pd.Timedelta(hours=h))
                for e in chunk for h in range(1, 25)]
        model.predict(pd.DataFrame(rows, columns=["entity_id", "ds"]))
    used = target
    out[f"rss_used_{target}_mb"] = rss_mb()
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--distinct", type=int, default=20, help="distinct fitted models to spread over entities")
    args = parser.parse_args()
    from benchmarks.routing_fixture import build_bundle, fitted_ets
    from engine.routing.pyfunc import save_routing_model

    models = fitted_ets(args.distinct)
    base = Path(tempfile.mkdtemp(prefix="routing-load-"))
    rows, summary = [], []
    try:
        for size in args.sizes:
            bundle, model_path = base / f"bundle-{size}", base / f"model-{size}"
            meta = build_bundle(bundle, size, models)
            save_routing_model(bundle, model_path, cache_size=100_000)
            mb = sum(f.stat().st_size for f in (model_path / "artifacts").rglob("*") if f.is_file()) / 2**20
            runs = []
            for repeat in range(args.repeats):
                probe = subprocess.run([sys.executable, "-c", PROBE, str(model_path), str(size)], capture_output=True,
                                       text=True, cwd=ROOT, check=True)
                result = json.loads(probe.stdout.strip().splitlines()[-1])
                runs.append(result)
                rows.append({"entities": size, "shards": meta.shards, "artifact_mb": round(mb, 1), "repeat": repeat,
                             **{k: round(v, 3) for k, v in result.items()}})
            figures = {k: med(r[k] for r in runs) for k in runs[0]}
            summary.append((size, meta.shards, mb, figures))
            say(f"{size:6d} entities ({meta.shards} shards, {mb:6.1f} MB): load {figures['load_s']:.3f}s, "
                f"RSS +{figures['rss_loaded_mb'] - figures['rss_before_mb']:.1f} MB after load, "
                + ", ".join(f"+{figures[k] - figures['rss_before_mb']:.1f} MB after {k.split('_')[2]} used"
                            for k in figures if k.startswith("rss_used")))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    largest = summary[-1]
    say(f"\nmedian of {args.repeats}: {largest[0]} entities load in {largest[3]['load_s']:.3f}s "
        f"(target < 2 s: {'met' if largest[3]['load_s'] < 2 else 'NOT met'})")
    say(f"results appended to {record('routing_load', rows)}")


if __name__ == "__main__":
    main()
