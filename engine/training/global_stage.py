"""Train the `global_nn` network on every entity before the per-entity stage.

Samples come from each entity's gold history up to its last `horizon + (windows - 1) * step`
observations, which stay out so that the network's backtest in the per-entity stage is out of
sample like every other candidate's. The network trains data-parallel under `HorovodRunner`
(`global_nn.np` processes; checkpointed per epoch under the lake, so a retried run on the same
data resumes), and the result is one row of `_manymodels/global_models` for the run, which publish
logs to MLflow and the per-entity stage reads through `TrainSpec.trained`.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from engine.config import Config
from engine.errors import ManymodelsError
from engine.lake import DeltaRsLake
from engine.storage import LakeStore
from engine.training.entity import TrainSpec
from gpu.dist import HorovodRunner
from gpu.global_nn import NetShape, encode_weights, panel_samples, train_ranks

GLOBAL_MODELS = "_manymodels/global_models"
GLOBAL_NN = "global_nn"
SCHEMA = pa.schema([("run_id", pa.string()), ("model", pa.string()), ("digest", pa.string()),
                    ("created", pa.timestamp("us", tz="UTC")), ("network", pa.string()), ("shape", pa.string()),
                    ("settings", pa.string()), ("losses", pa.string()), ("samples", pa.int64()),
                    ("world_size", pa.int64()), ("device", pa.string()), ("samples_per_second", pa.float64()),
                    ("seconds", pa.float64())])


class GlobalTrainingFailed(ManymodelsError):
    """The global network could not be trained."""


class TooLittleHistory(GlobalTrainingFailed):
    """No entity has a full training window before its backtest windows."""


@dataclass
class GlobalReport:
    digest: str
    samples: int
    world_size: int
    device: str
    losses: list[float]
    samples_per_second: float
    seconds: float


def net_shape(config: Config, spec: TrainSpec, exogenous: tuple[str, ...]) -> NetShape:
    settings = config.global_nn
    return NetShape(lookback=settings.lookback or max(config.series.season_lengths), horizon=spec.horizon,
                    exogenous=exogenous, hidden=settings.hidden, blocks=settings.blocks)


def train_global_nn(config: Config, gold: pd.DataFrame, spec: TrainSpec,
                    run_id: str) -> tuple[dict[str, Any], GlobalReport]:
    """The trained network (what `TrainSpec.trained["global_nn"]` holds) and its report; writes its table row."""
    started = time.perf_counter()
    settings = config.global_nn
    exogenous = tuple(c for c in spec.model.exogenous if c in gold and gold[c].notna().any())
    shape = net_shape(config, spec, exogenous)
    holdout = spec.horizon + (spec.windows - 1) * spec.step
    stride = settings.stride or min(config.series.season_lengths)
    try:
        x, y, center, scale = panel_samples(gold[["entity_id", "ds", "y", *exogenous]], shape, stride, holdout,
                                            settings.samples_per_entity)
    except ValueError as exc:
        raise TooLittleHistory(f"global_nn: {exc}") from None
    train = dict(epochs=settings.epochs, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                 seed=settings.seed, use_gpu=settings.use_gpu,
                 **_checkpoint(config, run_id, train_key(x, y, settings)))
    out = HorovodRunner(np=settings.np, use_gpu=settings.use_gpu).run(
        train_ranks, x=x, y=y, shape=asdict(shape), settings=train)
    if len(set(out["digests"])) != 1:
        raise GlobalTrainingFailed(f"global_nn: the ranks ended with different weights {out['digests']}")
    if not np.isfinite(out["losses"]).all():
        raise GlobalTrainingFailed("global_nn: the training loss became non-finite; lower global_nn.learning_rate")
    net = {"shape": asdict(shape), "weights": encode_weights(out["weights"]), "exog_center": center.tolist(),
           "exog_scale": scale.tolist(), "digest": out["digests"][0], "run_id": run_id}
    report = GlobalReport(out["digests"][0], len(x), out["world_size"], out["device"], out["losses"],
                          out["samples_per_second"], time.perf_counter() - started)
    _record(config, run_id, net, train, report)
    return net, report


def train_key(x: np.ndarray, y: np.ndarray, settings) -> str:
    """Same samples and settings -> same key."""
    h = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()[:16]


def _checkpoint(config: Config, run_id: str, key: str) -> dict:
    """Where the ranks checkpoint, per run and data (a retried run, as the nightly job reruns a
    crashed night's run id, resumes): the lake's folder, on whatever store the lake is."""
    store = LakeStore.of(config.lake)
    folder = f"_manymodels/checkpoints/{GLOBAL_NN}/{run_id}-{key}"
    if store.is_local:
        return {"checkpoint_dir": store.rs_path(folder)}
    return {"checkpoint_store": store.object_store_args(folder)}


def _record(config: Config, run_id: str, net: dict, train: dict, report: GlobalReport) -> None:
    row = {"run_id": run_id, "model": GLOBAL_NN, "digest": report.digest, "created": datetime.now(timezone.utc),
           "network": json.dumps(net), "shape": json.dumps(net["shape"]),
           # where it checkpointed is no setting of the network (and its store options carry secrets)
           "settings": json.dumps({k: v for k, v in train.items() if not k.startswith("checkpoint")}),
           "losses": json.dumps(report.losses), "samples": report.samples, "world_size": report.world_size,
           "device": report.device, "samples_per_second": report.samples_per_second, "seconds": report.seconds}
    DeltaRsLake(config.lake).replace_run(GLOBAL_MODELS, pd.DataFrame([row]), SCHEMA, ["run_id", "model"],
                                         run_id)


def read_global(config: Config, run_id: str) -> Optional[pd.Series]:
    """The run's global network row, if it trained one."""
    lake = DeltaRsLake(config.lake)
    if not lake.exists(GLOBAL_MODELS):
        return None
    rows = lake.read(GLOBAL_MODELS, filters=[("run_id", "=", run_id)])
    return rows.iloc[0] if len(rows) else None
