"""GPU benchmark in one run: batched `gpu_additive` fits and the data-parallel `global_nn` training.

    python benchmarks/gpu_bench.py                       # CUDA when present, the CPU beside it
    python benchmarks/gpu_bench.py --sizes 2000 --cpu-entities 500 --nn-epochs 2   # a quick CPU run

Needs torch, numpy and pandas, not pyspark (so one short call on a GPU box does it all):
1. `gpu_additive`, 2 years of daily data per entity (gaps and different start dates): entity fits
   per second on the device for each panel size, on the CPU for `--cpu-entities`, the largest
   difference between the device's and the CPU's fitted parameters on the same entities, and
   Prophet's own time per fit on the CPU (when prophet is installed) with the ratio.
2. `global_nn`: two CPU ranks (gloo) train a few epochs: the ranks' weights must end identical and
   the loss must fall; then samples/s of one rank on the CPU and, when present, on CUDA.
Appends one row per measurement to benchmarks/results/gpu_bench.csv (or --results DIR).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402
from gpu import additive  # noqa: E402
from gpu.global_nn import NetShape, panel_samples, train_ranks  # noqa: E402

HYPER = {"changepoint_prior_scale": 0.05, "seasonality_prior_scale": 10.0, "n_changepoints": 25,
         "changepoint_range": 0.8, "yearly_order": 10}


def daily_panel(entities: int, days: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(t in days, y (entities, days)): level, trend with a break, weekly and yearly seasons, noise,
    random start dates (up to 60 days late) and 1% missing values."""
    rng = np.random.default_rng(seed)
    t = additive.days(pd.date_range("2024-01-01", periods=days, freq="D"))
    step = np.arange(days, dtype=np.float32)
    y = np.empty((entities, days), dtype=np.float64)
    for lo in range(0, entities, 50_000):        # in slices: bounded temporaries at a million entities
        n = min(50_000, entities - lo)
        p = rng.normal(size=(n, 6)).astype(np.float32)
        block = (100 + 20 * p[:, :1] + 0.05 * p[:, 1:2] * step + 0.1 * np.maximum(step - 400, 0) * p[:, 2:3]
                 + 10 * p[:, 3:4] * np.sin(2 * np.pi * step / 7) + 20 * p[:, 4:5] * np.sin(2 * np.pi * step / 365.25)
                 + 3 * rng.standard_normal((n, days), dtype=np.float32))
        late = rng.integers(0, 60, n)
        block[np.arange(days)[None] < late[:, None]] = np.nan
        block[rng.random((n, days), dtype=np.float32) < 0.01] = np.nan
        y[lo:lo + n] = block
    return t, y


def timed_fit(t, y, layout, device, repeats):
    runs = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        fit = additive.fit_batch(t, y, layout, HYPER, device=device)
        _sync(device)
        runs.append(time.perf_counter() - started)
    return fit, runs


def _sync(device) -> None:
    import torch
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bench_additive(args, rows: list[dict], cuda: bool) -> None:
    layout = additive.layout_for(1.0, (7,), HYPER, 0)
    t, y = daily_panel(max([*args.sizes, args.cpu_entities]), args.days)
    say(f"gpu_additive: {args.days} days per entity, {layout.width} columns per design")
    cpu_fit, runs = timed_fit(t, y[:args.cpu_entities], layout, "cpu", args.repeats)
    cpu_rate = args.cpu_entities / med(runs)
    rows.append({"part": "additive", "device": "cpu", "entities": args.cpu_entities, "days": args.days,
                 "seconds_median": med(runs), "seconds_spread": max(runs) - min(runs),
                 "entities_per_second": cpu_rate})
    say(f"  cpu   {args.cpu_entities:>9,} entities: {cpu_rate:>12,.0f} fits/s  (median of {args.repeats})")
    if cuda:
        import torch
        name = torch.cuda.get_device_name(0)
        additive.fit_batch(t, y[:1000], layout, HYPER, device="cuda")          # warm-up: kernels, cuBLAS
        for size in args.sizes:
            fit, runs = timed_fit(t, y[:size], layout, "cuda", args.repeats)
            rate = size / med(runs)
            rows.append({"part": "additive", "device": name, "entities": size, "days": args.days,
                         "seconds_median": med(runs), "seconds_spread": max(runs) - min(runs),
                         "entities_per_second": rate, "vs_cpu": rate / cpu_rate})
            say(f"  cuda  {size:>9,} entities: {rate:>12,.0f} fits/s  ({med(runs):.3f} s; {rate / cpu_rate:,.0f}x "
                f"the CPU batch)")
        check = additive.fit_batch(t, y[:args.cpu_entities], layout, HYPER, device="cuda")
        beta_diff = float(np.abs(check.beta - cpu_fit.beta).max())
        sigma_diff = float(np.abs(check.sigma / cpu_fit.sigma - 1).max())
        rows.append({"part": "additive-check", "device": name, "entities": args.cpu_entities,
                     "max_beta_diff": beta_diff, "max_sigma_rel_diff": sigma_diff})
        say(f"  cuda vs cpu on the same {args.cpu_entities:,} entities: max |beta diff| {beta_diff:.2e} "
            f"(scaled units), max sigma difference {sigma_diff:.2e}")
        if beta_diff > 1e-6 or sigma_diff > 1e-6:
            say("  MISMATCH: the CUDA fit differs from the CPU fit by more than 1e-6")
    one = _one_at_a_time("gpu_additive", t, y, args.prophet_fits)
    rows.append({"part": "additive-one-at-a-time", "device": "cpu", "entities": args.prophet_fits,
                 "days": args.days, "entities_per_second": one})
    say(f"  gpu_additive one entity at a time (the zoo model, cpu): {one:,.1f} fits/s")
    import importlib.util
    if importlib.util.find_spec("prophet") is None:
        say("  prophet is not installed here: its time per fit is measured on the CPU machine")
        return
    prophet_rate = _one_at_a_time("prophet", t, y, args.prophet_fits)
    best = max(r["entities_per_second"] for r in rows if r["part"] == "additive")
    rows.append({"part": "prophet", "device": "cpu", "entities": args.prophet_fits, "days": args.days,
                 "entities_per_second": prophet_rate, "best_vs_prophet": best / prophet_rate,
                 "one_at_a_time_vs_prophet": one / prophet_rate})
    say(f"  prophet (cpu, one fit at a time): {prophet_rate:.2f} fits/s; gpu_additive one at a time is "
        f"{one / prophet_rate:,.0f}x that, the best batched rate above {best / prophet_rate:,.0f}x")


def _one_at_a_time(name: str, t, y, fits: int) -> float:
    """Fits per second of the zoo model `name`, one entity per fit (median of `fits`)."""
    from engine.models import ModelSpec, make_model
    spec = ModelSpec(freq="D", season_lengths=(7,))
    ds = pd.to_datetime(t * 86400e9, utc=True)
    make_model(name, spec).fit(pd.DataFrame({"ds": ds, "y": y[0]}).dropna())       # imports, first-call set-up
    runs = []
    for i in range(fits):
        frame = pd.DataFrame({"ds": ds, "y": y[i]}).dropna()
        started = time.perf_counter()
        make_model(name, spec).fit(frame)
        runs.append(time.perf_counter() - started)
    return 1.0 / med(runs)


def hourly_panel(entities: int, days: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * 24
    ds = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    step = np.arange(n)
    frames = []
    for e in range(entities):
        temp = 12 + 10 * np.sin(2 * np.pi * (step / 24 - 0.3)) + 5 * np.sin(2 * np.pi * step / 8760) \
            + rng.normal(0, 1.5, n)
        y = (rng.uniform(50, 500) * (1 + 0.2 * np.sin(2 * np.pi * step / 24) + 0.1 * np.sin(2 * np.pi * step / 168))
             + rng.uniform(0.5, 3) * np.maximum(temp - 18, 0) ** 1.5 + rng.normal(0, 4, n))
        frames.append(pd.DataFrame({"entity_id": f"e{e:04d}", "ds": ds, "y": y, "temperature": temp}))
    return pd.concat(frames, ignore_index=True)


def bench_global_nn(args, rows: list[dict], cuda: bool) -> None:
    from gpu.dist import run_local
    shape = NetShape(lookback=168, horizon=24, exogenous=("temperature",))
    x, y, _, _ = panel_samples(hourly_panel(args.nn_entities, 120), shape, step=6)
    say(f"global_nn: {len(x):,} samples of {shape.inputs} inputs -> {shape.horizon} outputs")
    settings = dict(epochs=args.nn_epochs, batch_size=256, seed=0)
    if not args.skip_ddp:
        started = time.perf_counter()
        two = run_local(train_ranks, 2, dict(x=x, y=y, shape=asdict(shape), settings=settings))
        wall = time.perf_counter() - started
        same = len(set(two["digests"])) == 1
        fell = two["losses"][-1] < two["losses"][0]
        rows.append({"part": "global_nn-ddp", "device": "cpu x2 (gloo)", "samples": len(x), "epochs": args.nn_epochs,
                     "samples_per_second": two["samples_per_second"], "seconds": wall, "identical_weights": same,
                     "loss_first": two["losses"][0], "loss_last": two["losses"][-1]})
        say(f"  2 CPU ranks: loss {two['losses'][0]:.4f} -> {two['losses'][-1]:.4f}, weights identical on every "
            f"rank: {same} ({two['digests'][0]}), {two['samples_per_second']:,.0f} samples/s")
        if not (same and fell):
            say("  FAILED: the ranks' weights differ or the loss did not fall")
    big = dict(settings, batch_size=args.nn_batch)
    devices = [("cpu", False)] + ([("cuda", True)] if cuda else [])
    for _, gpu in devices:
        one = run_local(train_ranks, 1, dict(x=x, y=y, shape=asdict(shape), settings=dict(big, use_gpu=gpu)),
                        use_gpu=gpu)
        rows.append({"part": "global_nn", "device": one["device"], "samples": len(x), "epochs": args.nn_epochs,
                     "batch_size": args.nn_batch, "samples_per_second": one["samples_per_second"],
                     "loss_last": one["losses"][-1]})
        say(f"  1 rank on {one['device']}: {one['samples_per_second']:,.0f} samples/s (batch {args.nn_batch}, "
            "after a warm-up epoch)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="panel sizes fitted on the GPU (default: 10k 100k 1M)")
    parser.add_argument("--cpu-entities", type=int, default=2000, help="entities fitted on the CPU (default 2000)")
    parser.add_argument("--days", type=int, default=730, help="daily observations per entity (default 730)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per size (default 3)")
    parser.add_argument("--prophet-fits", type=int, default=5,
                        help="one-at-a-time fits timed, Prophet (if installed) and gpu_additive (default 5)")
    parser.add_argument("--nn-entities", type=int, default=256, help="hourly series for global_nn (default 256)")
    parser.add_argument("--nn-epochs", type=int, default=4,
                        help="global_nn epochs (default 4; samples/s from the second on)")
    parser.add_argument("--nn-batch", type=int, default=4096, help="batch size of the one-rank runs (default 4096)")
    parser.add_argument("--skip-ddp", action="store_true", help="leave out the two-rank CPU check (gloo)")
    parser.add_argument("--skip-additive", action="store_true", help="only the global_nn part")
    parser.add_argument("--skip-nn", action="store_true", help="only the gpu_additive part")
    args = parser.parse_args(argv)
    import torch
    cuda = torch.cuda.is_available()
    device = "CUDA: " + torch.cuda.get_device_name(0) if cuda else "no CUDA device: CPU only"
    say(f"torch {torch.__version__}; {device}")
    rows: list[dict] = []
    if not args.skip_additive:
        bench_additive(args, rows, cuda)
    if not args.skip_nn:
        bench_global_nn(args, rows, cuda)
    path = record("gpu_bench", [{"torch": torch.__version__, **row} for row in rows])
    say(f"results appended to {path}")


if __name__ == "__main__":
    main()
