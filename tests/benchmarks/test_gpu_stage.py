"""The whole-stage GPU benchmark through its harness on a tiny panel: a lake ingested once, the
training stage run per device and for a baseline checkout (this one: the same forecasts), a row
recorded for each."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]


def test_the_stage_runs_per_device_and_against_a_baseline_with_the_same_forecasts(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/gpu_stage.py", "--entities", "12", "--weeks", "3",
                          "--windows", "1", "--workers", "1", "--repeats", "1", "--devices", "cpu",
                          "--baseline", str(ROOT), "--work", str(tmp_path / "work"),
                          "--results", str(tmp_path / "results")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "results" / "gpu_stage.csv").set_index("device")
    assert sorted(rows.index) == ["baseline", "cpu"] and (rows["entities"] == 12).all()
    assert (rows["seconds"] > rows["tasks_seconds"]).all() and (rows["tasks_seconds"] > 0).all()
    # One backtest window and the final fit: two fits an entity.
    assert ((rows["entity_fits_per_s"] - rows["entities_per_s"] * 2).abs() < 0.2).all()
    assert rows.loc["baseline", "forecast_rel_gap"] == 0.0        # one engine: the same forecasts
    assert "12 of 12 entities ok" in out.stdout
