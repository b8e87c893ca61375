"""The night-at-scale benchmark: its panel (ids unique over chunks) and a whole small night end to
end through the harness (real Spark, Delta, MLflow; `make test-slow`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.night_scale import write_panel

ROOT = Path(__file__).resolve().parents[2]


def test_the_panel_is_written_in_chunks_with_ids_unique_over_the_panel(tmp_path):
    folder = write_panel(25, 48, 10, tmp_path)
    parts = sorted(folder.glob("part-*.parquet"))
    assert [len(pd.read_parquet(p)["entity_id"].unique()) for p in parts] == [10, 10, 5]
    panel = pd.concat(pd.read_parquet(p) for p in parts)
    assert panel["entity_id"].nunique() == 25 and len(panel) == 25 * 48
    assert sorted(panel["entity_id"].unique())[:2] == ["entity_00", "entity_01"]
    assert not panel.duplicated(["entity_id", "ds"]).any()
    # Chunks are different series, not copies of the first chunk's.
    first, second = (panel[panel["entity_id"] == e]["y"].to_numpy() for e in ("entity_00", "entity_10"))
    assert not (first == second).all()
    mtime = parts[0].stat().st_mtime_ns
    assert write_panel(25, 48, 10, tmp_path) == folder and parts[0].stat().st_mtime_ns == mtime   # written once


@pytest.mark.slow
@pytest.mark.spark
def test_a_small_night_runs_records_a_row_and_draws_the_report(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/night_scale.py", "--entities", "12", "24", "--periods", "504",
                          "--repeats", "1", "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")],
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "results" / "night_scale.csv").set_index("entities")
    assert list(rows.index) == [12, 24] and (rows["failed"] == 0).all()
    assert list(rows["child_runs"]) == [12, 24] and list(rows["forecast_rows"]) == [12 * 24, 24 * 24]
    assert (rows["scored_rows"] == rows["forecast_rows"]).all()
    for stage in ("ingest", "train", "mlflow", "score"):
        assert (rows[f"{stage}_seconds"] > 0).all()
    assert (rows["total_seconds"] > rows[["ingest_seconds", "train_seconds"]].sum(axis=1)).all()
    assert (rows["driver_peak_mb"] > 100).all()
    report = (tmp_path / "results" / "night_scale.md").read_text()
    assert "| 24 | 1 |" in report
    assert (tmp_path / "results" / "plots" / "night_scale.png").stat().st_size > 10_000
