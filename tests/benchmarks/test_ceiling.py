"""The machine ceiling: the pure per-entity function in N processes at once against one, on a
real ingested panel, recorded for the cluster report."""
from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.ceiling import matrix_ceilings
from benchmarks.cluster import Matrix, Panel
from benchmarks.cluster_report import ceiling_markdown, load_ceilings


def test_two_processes_at_once_against_one_give_the_ceiling_row_and_its_report(tmp_path):
    matrix = Matrix(name="tiny", shapes=["local-1", "local-2"], models=[["seasonal_naive", "theta"]],
                    panels=[Panel(name="p", kind="synthetic", entities=3, periods=24 * 21)])
    rows = matrix_ceilings(matrix, entities=2, repeats=1, results=tmp_path, work=tmp_path / "work")
    assert len(rows) == 1
    row = rows[0]
    assert (row["processes"], row["entities"], row["panel"], row["models"]) == (2, 2, "p", "seasonal_naive+theta")
    assert row["one_seconds"] > 0 and row["parallel_seconds"] > 0
    assert row["ceiling_speedup"] == pytest.approx(2 * row["one_seconds"] / row["parallel_seconds"])
    assert row["ceiling_min"] == row["ceiling_max"] == row["ceiling_speedup"]          # one repeat
    ceilings = load_ceilings(tmp_path)
    assert ceilings["ceiling"].iloc[0] == pytest.approx(row["ceiling_speedup"])
    table = pd.DataFrame([{"panel": "q", "models": "seasonal_naive+theta", "cores": 2, "plan": "cost",
                           "train_speedup": row["ceiling_speedup"] / 2, "shape": "local-2"},
                          {"panel": "q", "models": "theta", "cores": 2, "plan": "cost",
                           "train_speedup": 1.5, "shape": "local-2"}])
    report = ceiling_markdown(table, ceilings)          # the model set's ceiling, whatever the panel
    assert "| p (1 run) | q local-2 |" in report and "| 50% |" in report and "| theta |" not in report


def test_a_matrix_without_two_cores_has_no_ceiling_to_measure(tmp_path):
    matrix = Matrix(name="one", shapes=["local-1"], models=[["theta"]], panels=[Panel(name="p", kind="synthetic")])
    assert matrix_ceilings(matrix, results=tmp_path, work=tmp_path / "work") == []
