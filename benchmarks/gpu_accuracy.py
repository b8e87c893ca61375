"""Accuracy of the GPU models against Prophet's own fit, on the same entities and backtest windows.

    python benchmarks/gpu_accuracy.py [--dataset gefcom2012 synthetic] [--epochs 20]

For each dataset (GEFCom2012 as in configs/nightly.yaml; a seeded synthetic panel of 24 hourly
series), on its own lake under benchmarks/.work/gpu_accuracy/: one training run with candidates
prophet, gpu_additive and global_nn (the engine's rolling-origin backtest, the same folds for
every candidate), then from gold.models each candidate's mean backtest MASE over the entities
where all three have one, gpu_additive's ratio to Prophet, and which candidate won each entity.
Appends to benchmarks/results/gpu_accuracy.csv.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import record, say  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work" / "gpu_accuracy"
CANDIDATES = ["prophet", "gpu_additive", "global_nn"]
SYNTHETIC = {"kind": "synthetic", "exogenous": ["temperature"],
             "synthetic": {"entities": 24, "start": "2023-01-01", "periods": 24 * 90, "seed": 42}}


def dataset_config(name: str, epochs: int):
    from engine.config import load_config
    folder = WORK / name
    overrides = {"lake.root": str(folder / "lake"), "mlflow.tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
                 "backend": "local", "training.workers": 2, "models": CANDIDATES,
                 "global_nn.np": -2, "global_nn.epochs": epochs}
    if name == "synthetic":
        overrides.update({"name": "synthetic-gpu-accuracy", "source": SYNTHETIC})
    return load_config("configs/nightly.yaml", overrides)


def accuracy(name: str, epochs: int) -> dict:
    from engine.lake import GOLD_SERIES, DeltaRsLake
    from engine.backends import backend_for
    from engine.medallion.pipeline import ingest
    from engine.training.job import train
    from engine.training.tables import MODELS

    config = dataset_config(name, epochs)
    lake = DeltaRsLake(config.lake)
    if not lake.exists(GOLD_SERIES):
        ingest(config, backend_for(config, "local"), progress=lambda msg: say(f"    {msg}"))
    started = time.perf_counter()
    report = train(config, backend="local")
    seconds = time.perf_counter() - started
    models = lake.read(MODELS, filters=[("run_id", "=", report.run_id)])
    scores = {c: [] for c in CANDIDATES}
    for row in models.itertuples():
        metrics = json.loads(row.metrics or "{}")
        values = [metrics.get(c, {}).get("mase") for c in CANDIDATES]
        if all(v is not None and np.isfinite(v) for v in values):
            for c, v in zip(CANDIDATES, values):
                scores[c].append(v)
    mean = {c: float(np.mean(v)) for c, v in scores.items()}
    net = report.global_nn
    row = {"dataset": name, "entities": len(models), "compared": len(scores["prophet"]),
           **{f"mase_{c}": mean[c] for c in CANDIDATES},
           "gpu_additive_vs_prophet": mean["gpu_additive"] / mean["prophet"] - 1,
           "global_nn_vs_prophet": mean["global_nn"] / mean["prophet"] - 1,
           "champions": json.dumps(dict(report.champions)), "train_seconds": seconds,
           "global_nn_seconds": net.seconds, "global_nn_samples": net.samples,
           "global_nn_loss_first": net.losses[0], "global_nn_loss_last": net.losses[-1]}
    say(f"  {name}: {row['compared']} entities, backtest MASE prophet {mean['prophet']:.3f}, "
        f"gpu_additive {mean['gpu_additive']:.3f} ({row['gpu_additive_vs_prophet']:+.1%}), "
        f"global_nn {mean['global_nn']:.3f} ({row['global_nn_vs_prophet']:+.1%}); champions {row['champions']}; "
        f"{seconds:.0f} s")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", nargs="+", default=["gefcom2012", "synthetic"],
                        choices=["gefcom2012", "synthetic"])
    parser.add_argument("--epochs", type=int, default=20, help="global_nn epochs (default 20)")
    args = parser.parse_args()
    rows = []
    for name in args.dataset:
        say(f"{name}:")
        rows.append(accuracy(name, args.epochs))
    say(f"results appended to {record('gpu_accuracy', rows)}")


if __name__ == "__main__":
    main()
