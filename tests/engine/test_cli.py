"""The `manymodels` command as a user runs it: a real subprocess, real Delta tables."""
from __future__ import annotations

import subprocess
import sys

import pandas as pd
import yaml

from tests.conftest import messy_rows


def manymodels(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def write_config(tmp_path, **source) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({
        "name": "cli", "lake": {"root": str(tmp_path / "lake")}, "backend": "local",
        "source": {"kind": "csv", "path": str(tmp_path / "in"), "exogenous": ["temp"],
                   "columns": {"entity": "meter", "time": "time", "target": "kw"}, **source},
        "series": {"freq": "h", "season_lengths": [24]}}))
    return str(path)


def test_help_on_every_command():
    top = manymodels("--help")
    assert top.returncode == 0 and "ingest" in top.stdout and "nightly" in top.stdout
    for command in ("ingest", "train", "nightly", "score", "serve", "tune"):
        out = manymodels(command, "--help")
        assert out.returncode == 0 and "--config" in out.stdout


def test_ingest_prints_rows_per_layer_and_the_gold_version(tmp_path):
    (tmp_path / "in").mkdir()
    pd.DataFrame(messy_rows()).to_csv(tmp_path / "in" / "a.csv", index=False)
    out = manymodels("ingest", "--config", write_config(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "bronze: 1 batch(es), 1 new, 98 row(s) inserted" in out.stdout
    assert "silver: 97 row(s), 2 entities" in out.stdout and "gold version 0" in out.stdout
    rerun = manymodels("ingest", "--config", write_config(tmp_path))
    assert rerun.returncode == 0 and "gold stays at version 0" in rerun.stdout


def test_rejected_file_exits_non_zero_with_the_reason_and_no_traceback(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.csv").write_text("meter,time,temp\nA,2024-01-01,1\n")
    out = manymodels("ingest", "--config", write_config(tmp_path))
    assert out.returncode == 3
    assert "missing column(s) 'kw'" in out.stderr and "Traceback" not in out.stderr


def test_config_mistake_is_one_line_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nhorizon: -1\n")
    out = manymodels("nightly", "--config", str(path))
    assert out.returncode == 2
    assert out.stderr.strip() == "error: config key 'horizon' must be >= 1 (steps of series.freq), got -1"


def test_tune_names_a_model_it_cannot_search_in_one_line(tmp_path):
    out = manymodels("tune", "--config", write_config(tmp_path), "--model", "arima")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "config key 'tuning.models' lists ['arima'], which are not candidates in models" in out.stderr
    bad = manymodels("tune", "--config", write_config(tmp_path), "--max-evals", "0")
    assert bad.returncode == 2 and "'tuning.max_evals' must be >= 1" in bad.stderr
