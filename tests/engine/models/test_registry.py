"""The model registry: every model module is found, its declarations drive config validation and
make_model, and docs/models.md's table is what the declarations say."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import engine.models as package
from engine.errors import ConfigError
from engine.models import MODEL_CLASSES, ForecastModel, ModelError, make_model, model_costs
from engine.models.naive import SeasonalNaiveModel
from engine.models.registry import with_model_table
from tests.conftest import small_config

DOCS = Path(__file__).resolve().parents[3] / "docs" / "models.md"


def test_every_model_module_defines_a_registered_model():
    defined = set()
    for info in pkgutil.iter_modules(package.__path__):
        if info.name == "__main__":      # the table printer, not a model
            continue
        module = importlib.import_module(f"engine.models.{info.name}")
        defined |= {v for v in vars(module).values() if isinstance(v, type) and issubclass(v, ForecastModel)
                    and v.__module__ == module.__name__ and "name" in vars(v)}
    assert defined == set(MODEL_CLASSES.values())
    assert all(cls.summary and len(cls.cost) == 2 for cls in MODEL_CLASSES.values())
    assert list(MODEL_CLASSES)[-1] == "ensemble"       # combinations after the candidates they combine


def test_the_docs_table_is_generated_from_the_declarations():
    text = DOCS.read_text()
    assert with_model_table(text) == text, "docs/models.md is stale: run python -m engine.models --write docs/models.md"
    for name in MODEL_CLASSES:
        assert f"| `{name}` |" in text


def test_a_new_model_is_checked_by_what_it_declares(monkeypatch):
    class NeedsWind(SeasonalNaiveModel):
        name = "needs_wind"
        summary = "a test model that cannot fit without wind speed"
        needs_exogenous = ("wind_speed",)
        needs_why = "regresses load on wind"
        cost = (1.0, 2.0)

    monkeypatch.setitem(MODEL_CLASSES, "needs_wind", NeedsWind)
    with pytest.raises(ConfigError, match="lists needs_wind, which regresses load on wind: add wind_speed"):
        small_config(models=["seasonal_naive", "needs_wind"])
    config = small_config(models=["seasonal_naive", "needs_wind"], source={"kind": "synthetic",
                                                                           "exogenous": ["temperature", "wind_speed"]})
    assert list(config.models) == ["seasonal_naive", "needs_wind"]
    assert isinstance(make_model("needs_wind", config.model_spec()), NeedsWind)
    assert model_costs(["needs_wind"]) == {"needs_wind": (1.0, 2.0)}


def test_declared_frequencies_and_combinations_are_enforced(monkeypatch):
    class HourOfDay(SeasonalNaiveModel):
        name = "hour_of_day"
        summary = "a test model for sub-daily data"
        needs_sub_daily = True

    monkeypatch.setitem(MODEL_CLASSES, "hour_of_day", HourOfDay)
    small_config(models=["hour_of_day"])
    with pytest.raises(ConfigError, match=r"lists hour_of_day, which needs sub-daily data .* series.freq is 'd'"):
        small_config(models=["hour_of_day"], series={"freq": "d", "season_lengths": [7]})
    with pytest.raises(ModelError, match="ensemble is built from backtested members"):
        make_model("ensemble", small_config().model_spec())
