"""The training stage of a config, on this checkout and on a baseline checkout, in one run.

    git worktree add /tmp/baseline <commit>          # e.g. the commit before statsforecast
    python benchmarks/training_stage.py --baseline /tmp/baseline [--config configs/nightly.yaml]
                                        [--backend local] [--workers 2] [--repeats 1]

Each side ingests the config's source into its own lake under benchmarks/.work/training_stage/
(so neither reads the other's tables), then trains every entity with the config's candidates,
`--repeats` times; the figure is the training stage's seconds (TrainReport.seconds["train"]: the
per-entity backtests and fits, not ingest or MLflow). Prints both, the ratio, each side's mean
champion backtest metric (the models must be no worse), and appends to
benchmarks/results/training_stage.csv.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(__file__).resolve().parent / ".work" / "training_stage"

# Run inside each checkout (its own engine on sys.path): ingest once, train `repeats` times.
SIDE = r"""
import json, sys, time
import numpy as np
from engine.config import load_config
from engine.backends import backend_for
from engine.medallion.pipeline import ingest
from engine.training.job import train
from engine.lake import DeltaRsLake
from engine.training.tables import MODELS
config_path, lake, backend, workers, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
config = load_config(config_path, {"lake.root": lake, "backend": backend, "training.workers": workers,
                                   "mlflow.tracking_uri": "sqlite:///" + lake + ".mlflow.db"})
ingest(config, backend_for(config, backend), progress=lambda line: None)
seconds, metric = [], None
for i in range(repeats):
    report = train(config, backend=backend, run_id=f"stage-{i}")
    seconds.append(report.seconds["train"])
    models = DeltaRsLake(config.lake).read(MODELS, filters=[("run_id", "=", f"stage-{i}")])
    ok = models[models["status"] == "ok"]
    metric = float(np.mean([json.loads(m)[c][config.backtest.metric] for m, c in zip(ok["metrics"], ok["champion"])]))
print(json.dumps({"seconds": seconds, "entities": int(report.entities), "metric": metric,
                  "champions": report.summary["champion"].value_counts().to_dict()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a checkout of the engine to compare against")
    parser.add_argument("--config", default="configs/nightly.yaml")
    parser.add_argument("--backend", default="local", choices=["local", "spark", "ray"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    config = str(Path(args.config).resolve())
    sides = {}
    for side, checkout in (("baseline", Path(args.baseline).resolve()), ("this", ROOT)):
        lake = WORK / side / "lake"
        lake.parent.mkdir(parents=True, exist_ok=True)
        say(f"{side}: {checkout} ...")
        out = subprocess.run([sys.executable, "-c", SIDE, config, str(lake), args.backend, str(args.workers),
                              str(args.repeats)], cwd=checkout, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(checkout)})
        if out.returncode:
            raise SystemExit(f"{side} failed:\n{out.stderr[-3000:]}")
        sides[side] = json.loads(out.stdout.strip().splitlines()[-1])
        say(f"  training stage {med(sides[side]['seconds']):.1f} s ({sides[side]['entities']} entities), mean "
            f"champion backtest metric {sides[side]['metric']:.4f}, champions {sides[side]['champions']}")
    ratio = med(sides["baseline"]["seconds"]) / med(sides["this"]["seconds"])
    before, after = med(sides["baseline"]["seconds"]), med(sides["this"]["seconds"])
    say(f"training stage: baseline {before:.1f} s, this {after:.1f} s -> {ratio:.2f}x faster; champion metric "
        f"ratio {sides['this']['metric'] / sides['baseline']['metric']:.3f} (this / baseline)")
    rows = [{"side": side, "config": args.config, "backend": args.backend, "workers": args.workers,
             "repeats": args.repeats, "seconds": round(med(s["seconds"]), 2), "entities": s["entities"],
             "metric": round(s["metric"], 5), "speedup": round(ratio, 3),
             "champions": json.dumps(s["champions"])} for side, s in sides.items()]
    say(f"results: {record('training_stage', rows)}")


if __name__ == "__main__":
    main()
