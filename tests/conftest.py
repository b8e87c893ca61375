"""Shared fixtures: a session-scoped local Spark with Delta Lake, and config builders."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import Config, parse_config


def make_config(lake: Path, **overrides) -> Config:
    """A small valid config on `lake`; keyword overrides replace top-level keys."""
    data = {"name": "test", "lake": {"root": str(lake)},
            "mlflow": {"tracking_uri": f"sqlite:///{Path(lake).parent / 'mlflow.db'}", "experiment": "test"},
            "spark": {"master": "local[2]", "ui": False, "shuffle_partitions": 2},
            "source": {"kind": "synthetic", "exogenous": ["temperature"],
                       "synthetic": {"entities": 4, "periods": 24 * 28, "seed": 7}},
            "series": {"freq": "h", "season_lengths": [24, 168]},
            "backend": "local"}
    data.update(overrides)
    return parse_config(data)


@pytest.fixture(scope="session")
def spark():
    from engine.config import SparkConfig
    from engine.spark import get_spark

    session = get_spark(SparkConfig(master="local[2]", ui=False, shuffle_partitions=2))
    yield session
    session.stop()
