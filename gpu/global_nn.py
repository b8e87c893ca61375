"""One deep model for every entity: an N-BEATS-style MLP (with exogenous inputs, as in N-BEATSx)
trained data-parallel on windows of all series.

A sample is one forecast origin of one entity: the `lookback` values before it, scaled by
their own mean and spread (so one network serves a feeder and a whole zone), the horizon's
exogenous values (scaled by panel-wide constants) and the origin's calendar position. The
network is a stack of blocks; each reads the residual of the lookback plus that context and
emits a backcast (subtracted from the residual) and a forecast (added to the output).

Training (`train_ranks`) runs on every rank under `gpu.dist.HorovodRunner`: each rank takes
its shard of the samples, gradients are averaged across ranks (DDP or horovod), rank 0
checkpoints after every epoch and a rerun resumes from the checkpoint. The trained weights
are plain float32 arrays: the per-entity model (`GlobalNNModel`) forecasts with numpy alone.
"""
from __future__ import annotations

import base64
import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd

CALENDAR = 4        # sin/cos of the origin's position in the day and in the week


@dataclass(frozen=True)
class NetShape:
    lookback: int
    horizon: int
    exogenous: tuple[str, ...] = ()
    hidden: int = 64
    blocks: int = 2

    @property
    def context(self) -> int:
        return self.horizon * len(self.exogenous) + CALENDAR

    @property
    def inputs(self) -> int:
        return self.lookback + self.context


def calendar(origin_ns: np.ndarray) -> np.ndarray:
    day = (origin_ns % 86_400_000_000_000) / 86_400e9
    week = ((origin_ns // 86_400_000_000_000 + 3) % 7 + day) / 7.0      # 1970-01-01 was a Thursday
    return np.stack([np.sin(2 * np.pi * day), np.cos(2 * np.pi * day),
                     np.sin(2 * np.pi * week), np.cos(2 * np.pi * week)], -1)


def samples(y: np.ndarray, ds_ns: np.ndarray, exog: np.ndarray, origins: np.ndarray, shape: NetShape,
            exog_center: np.ndarray, exog_scale: np.ndarray, with_target: bool = True):
    """Inputs (N, inputs), targets (N, horizon) in window scale, and each window's (mean, scale).

    `y` (n,), `ds_ns` (n,) int64, `exog` (n, E); `origins` index the first forecast step. For
    forecasting, `exog` and `ds_ns` extend past the history by the horizon and `with_target` is off.
    """
    L, H = shape.lookback, shape.horizon
    idx = origins[:, None] + np.arange(-L, 0)[None]
    window = y[idx]
    mean = window.mean(1, keepdims=True)
    scale = window.std(1, keepdims=True)
    scale = np.where(scale > 1e-8 * np.maximum(np.abs(mean), 1), scale, np.maximum(np.abs(mean), 1.0))
    parts = [(window - mean) / scale]
    if shape.exogenous:
        ahead = exog[origins[:, None] + np.arange(H)[None]]                        # (N, H, E)
        parts.append(((ahead - exog_center) / exog_scale).reshape(len(origins), -1))
    parts.append(calendar(ds_ns[origins]))
    x = np.concatenate(parts, 1).astype(np.float32)
    target = None
    if with_target:
        target = ((y[origins[:, None] + np.arange(H)[None]] - mean) / scale).astype(np.float32)
    return x, target, mean[:, 0], scale[:, 0]


def build_net(shape: NetShape):
    import torch
    from torch import nn

    class NBeatsX(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.Linear(shape.inputs, shape.hidden), nn.ReLU(),
                              nn.Linear(shape.hidden, shape.hidden), nn.ReLU(),
                              nn.Linear(shape.hidden, shape.lookback + shape.horizon))
                for _ in range(shape.blocks))

        def forward(self, x):
            residual, context = x[:, :shape.lookback], x[:, shape.lookback:]
            out = torch.zeros((x.shape[0], shape.horizon), dtype=x.dtype, device=x.device)
            for block in self.blocks:
                step = block(torch.cat([residual, context], 1))
                residual = residual - step[:, :shape.lookback]
                out = out + step[:, shape.lookback:]
            return out

    return NBeatsX()


def forward_numpy(weights: dict[str, np.ndarray], shape: NetShape, x: np.ndarray) -> np.ndarray:
    """The network's forward pass in numpy (serving needs no torch)."""
    residual, context = x[:, :shape.lookback], x[:, shape.lookback:]
    out = np.zeros((x.shape[0], shape.horizon), dtype=np.float32)
    for b in range(shape.blocks):
        h = np.concatenate([residual, context], 1)
        for layer in (0, 2):
            h = np.maximum(h @ weights[f"blocks.{b}.{layer}.weight"].T + weights[f"blocks.{b}.{layer}.bias"], 0)
        step = h @ weights[f"blocks.{b}.4.weight"].T + weights[f"blocks.{b}.4.bias"]
        residual = residual - step[:, :shape.lookback]
        out = out + step[:, shape.lookback:]
    return out


def encode_weights(weights: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: {"shape": list(v.shape), "f32": base64.b64encode(np.ascontiguousarray(v, np.float32).tobytes())
                .decode("ascii")} for k, v in weights.items()}


def decode_weights(encoded: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.frombuffer(base64.b64decode(v["f32"]), dtype=np.float32).reshape(v["shape"])
            for k, v in encoded.items()}


def digest(weights: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(weights):
        h.update(key.encode())
        h.update(np.ascontiguousarray(weights[key], np.float32).tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    seed: int = 0
    max_steps: int = 0                  # stop after this many optimizer steps in all (0: no limit)
    checkpoint_dir: Optional[str] = None
    # `obstore.store.from_url` arguments for a checkpoint folder on object storage (then
    # `checkpoint_dir` is unused): rank 0 writes there from whichever machine it runs on.
    checkpoint_store: Optional[dict] = None
    use_gpu: bool = False


class _Checkpoint:
    """The training state after each epoch, in a local folder or an object-store folder."""

    NAME = "global_nn.pt"

    def __init__(self, folder: Optional[str], store: Optional[dict]):
        self.folder, self.store = folder, store

    @classmethod
    def of(cls, settings: "TrainSettings") -> Optional["_Checkpoint"]:
        if not settings.checkpoint_dir and not settings.checkpoint_store:
            return None
        return cls(settings.checkpoint_dir, settings.checkpoint_store)

    def load(self, device):
        import io

        import torch
        if self.store:
            from obstore.store import from_url
            try:
                data = bytes(from_url(**self.store).get(self.NAME).bytes())
            except FileNotFoundError:
                return None
            return torch.load(io.BytesIO(data), map_location=device, weights_only=False)
        path = os.path.join(self.folder, self.NAME)
        return torch.load(path, map_location=device, weights_only=False) if os.path.exists(path) else None

    def save(self, state: dict) -> None:
        import io

        import torch
        if self.store:
            from obstore.store import from_url
            buffer = io.BytesIO()
            torch.save(state, buffer)
            from_url(**self.store).put(self.NAME, buffer.getvalue())     # one PUT: atomic on object stores
            return
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, self.NAME)
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)


def train_ranks(x: np.ndarray, y: np.ndarray, shape: dict, settings: dict) -> dict[str, Any]:
    """The per-rank training function (module level, so it pickles to every rank).

    Returns, on every rank: the weights, the loss per epoch, samples/s and each rank's weight
    digest (equal digests: the ranks ended with identical weights).
    """
    import torch
    from gpu import dist

    shape, settings = NetShape(**{**shape, "exogenous": tuple(shape["exogenous"])}), TrainSettings(**settings)
    device = dist.init(settings.use_gpu)
    rank, world = dist.rank(), dist.size()
    torch.manual_seed(settings.seed)
    net = build_net(shape).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    start_epoch, losses = 0, []
    checkpoint = _Checkpoint.of(settings)
    saved = checkpoint.load(device) if checkpoint else None
    if saved is not None:
        if saved["shape"] == asdict(shape) and saved["samples"] == len(x):
            net.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            start_epoch, losses = saved["epoch"], saved["losses"]
    model, optimizer = dist.wrap(net, optimizer, device)

    # Every rank takes the same number of batches (a collective step each), from its own shard.
    per_rank = len(x) // world
    shard = np.random.default_rng(settings.seed).permutation(len(x))[rank * per_rank:(rank + 1) * per_rank]
    xs = torch.as_tensor(x[shard], device=device)
    ys = torch.as_tensor(y[shard], device=device)
    batch = max(1, min(settings.batch_size, per_rank))
    steps_per_epoch = per_rank // batch
    seen, started = 0, None
    steps_done = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, settings.epochs):
        if started is None and (epoch > start_epoch or settings.epochs - start_epoch == 1):
            # Throughput from the second epoch on: the first pays for kernel compilation and warm-up.
            _sync(device)
            seen, started = 0, time.perf_counter()
        order = torch.randperm(per_rank, generator=torch.Generator().manual_seed(settings.seed + epoch)).to(device)
        total = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            pick = order[i * batch:(i + 1) * batch]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(xs[pick]), ys[pick])
            loss.backward()
            optimizer.step()
            total += loss.detach()
            seen += len(pick)
            steps_done += 1
            if settings.max_steps and steps_done >= settings.max_steps:
                break
        losses.append(dist.allreduce_mean(float(total) / max(1, i + 1)))
        if checkpoint and rank == 0:
            checkpoint.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                             "losses": losses, "shape": asdict(shape), "samples": len(x)})
        if settings.max_steps and steps_done >= settings.max_steps:
            break
    _sync(device)
    elapsed = time.perf_counter() - started if started is not None else math.nan
    weights = {k: v.detach().float().cpu().numpy() for k, v in net.state_dict().items()}
    rates = dist.gather(seen / elapsed if elapsed > 0 else math.nan)
    return {"weights": weights, "losses": losses, "samples_per_second": float(np.nansum(rates)),
            "digests": dist.gather(digest(weights)), "world_size": world, "device": str(device),
            "steps": steps_done}


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def panel_samples(panel: pd.DataFrame, shape: NetShape, step: int, holdout: int = 0,
                  max_per_entity: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training samples from a long frame (entity_id, ds, y, exogenous...): origins every `step`
    steps, the latest `max_per_entity` of each entity (0: all), none of whose targets fall in the
    last `holdout` steps before the entity's last observation (kept out for honest backtests).
    Also the panel-wide centre and scale of each exogenous column."""
    exog_cols = list(shape.exogenous)
    center = panel[exog_cols].mean().to_numpy(dtype="float64") if exog_cols else np.zeros(0)
    scale = panel[exog_cols].std().replace(0, 1).fillna(1).to_numpy(dtype="float64") if exog_cols else np.ones(0)
    xs, ys = [], []
    for _, rows in panel.groupby("entity_id", sort=True):
        rows = rows.sort_values("ds")
        seen = np.flatnonzero(rows["y"].notna().to_numpy())
        if not len(seen):
            continue
        rows = rows.iloc[:seen[-1] + 1 - holdout]
        y = rows["y"].to_numpy(dtype="float64")
        exog = rows[exog_cols].to_numpy(dtype="float64") if exog_cols else np.zeros((len(y), 0))
        origins = np.arange(len(y) - shape.horizon, shape.lookback - 1, -step)[::-1]
        if max_per_entity:
            origins = origins[-max_per_entity:]
        ok = np.array([np.isfinite(y[o - shape.lookback:o + shape.horizon]).all()
                       and np.isfinite(exog[o:o + shape.horizon]).all() for o in origins], dtype=bool)
        if not ok.any():
            continue
        ds_ns = pd.DatetimeIndex(pd.to_datetime(rows["ds"], utc=True)).as_unit("ns").asi8
        x, target, _, _ = samples(y, ds_ns, exog, origins[ok], shape, center, scale)
        xs.append(x)
        ys.append(target)
    if not xs:
        raise ValueError(f"no entity has {shape.lookback + shape.horizon} consecutive observed steps before its "
                         f"last {holdout} (held out for backtests): too little history for global_nn")
    return np.concatenate(xs), np.concatenate(ys), center, scale
