from pathlib import Path

import pytest

from engine.config import load_config, parse_config
from engine.errors import ConfigError
from engine.frequency import config_name

ROOT = Path(__file__).resolve().parents[2]


def test_embedded_default_parses_into_frozen_dataclasses():
    config = load_config(ROOT / "configs" / "nightly.yaml")
    assert config.source.kind == "gefcom2012"
    assert config.series.season_lengths == [24, 168]
    assert config.horizon == 168 and config.backend == "spark"
    with pytest.raises(AttributeError):
        config.horizon = 1  # frozen


def test_cluster_example_parses():
    assert load_config(ROOT / "configs" / "cluster.example.yaml").spark.master.startswith("spark://")


@pytest.mark.parametrize("data, key, hint", [
    ({"name": "x", "horizn": 3}, "horizn", "allowed: name"),
    ({"name": "x", "backtest": {"windows": 2, "stepp": 3}}, "backtest.stepp", "allowed: windows, step, metric"),
    ({"name": "x", "backtest": {"select": "vote"}}, "backtest.select", "must be one of best, combine, got 'vote'"),
    ({"name": "x", "horizon": 0}, "'horizon'", ">= 1"),
    ({"name": "x", "horizon": "168"}, "'horizon'", "must be an integer"),
    ({"name": "x", "horizon": True}, "'horizon'", "must be an integer"),
    ({"name": "x", "models": ["ets", "lstm"]}, "'models'", "unknown model(s) ['lstm']; allowed: "),
    ({"name": "x", "backend": "dask"}, "'backend'", "local, spark, ray"),
    ({"name": "x", "backtest": {"metric": "mape"}}, "'backtest.metric'", "mae, rmse, smape, mase"),
    ({"name": "x", "series": {"season_lengths": [24, "week"]}}, "series.season_lengths[1]", "integer"),
    ({"name": "x", "series": {"freq": "hourly"}}, "'series.freq'", "one of"),
    ({"name": "x", "source": {"kind": "csv"}}, "'source.path'", "required"),
    ({"name": "x", "source": {"kind": "excel"}}, "'source.kind'", "gefcom2012, csv"),
    ({"name": "x", "spark": "local"}, "'spark'", "must be a mapping"),
    ({"horizon": 3}, "name", "missing"),
    ({"name": "x", "max_failure_rate": 2}, "'max_failure_rate'", "between 0 and 1"),
    ({"name": "x", "training": {"levels": [80, 100]}}, "'training.levels'", "between 0 and 100"),
    ({"name": "x", "partitions": {"strategy": "random"}}, "'partitions.strategy'", "cost, entity"),
    # Models that cannot work at the data's frequency fail before any work starts.
    ({"name": "x", "series": {"freq": "d", "season_lengths": [24, 168]}}, "'series.season_lengths'",
     "[24, 168], which spans no day, week or year at series.freq 'd' (daily); use 7, 364, 365, 366"),
    ({"name": "x", "models": ["ets", "ensemble"]}, "'models'", "at least two others"),
    ({"name": "x", "series": {"season_lengths": []}, "models": ["mstl"]}, "'models'", "mstl, which needs"),
])
def test_bad_values_name_the_key_and_the_allowed_values(data, key, hint):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert key in str(err.value) and hint in str(err.value)


def test_season_lengths_that_fit_their_frequency_are_accepted():
    for freq, seasons in (("h", [24, 168, 8766]), ("15min", [96, 672]), ("d", [7, 365]), ("w", [52]),
                          ("ms", [12]), ("qe", [4]), ("ys", [])):
        series = parse_config({"name": "x", "series": {"freq": freq, "season_lengths": seasons}}).series
        assert config_name(series.frequency) == freq and series.season_lengths == seasons


def test_season_longer_than_the_data_is_rejected():
    config = parse_config({"name": "x", "series": {"season_lengths": [24, 8760]}})
    config.check_against_data({"a": 9000})  # fits the longest series
    with pytest.raises(ConfigError, match=r"series.season_lengths.*\[8760\].*longest series \(500 steps\)"):
        config.check_against_data({"a": 500, "b": 300})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_tempreg_needs_temperature_and_reads_the_long_history():
    from engine.config import parse_config
    base = {"name": "t", "source": {"kind": "synthetic", "exogenous": ["temperature"]}}
    config = parse_config({**base, "models": ["theta", "tempreg"], "training": {"long_history": 9000}})
    assert config.history_steps == 9000 and parse_config({**base, "models": ["theta"]}).history_steps == 2016
    with pytest.raises(ConfigError, match="lists tempreg, which regresses load on temperature"):
        parse_config({**base, "source": {"kind": "synthetic"}, "models": ["tempreg"]})
    with pytest.raises(ConfigError, match="training.long_history' must be >= training.max_history"):
        parse_config({**base, "training": {"max_history": 500, "long_history": 100}})


def test_an_unknown_model_lists_every_known_one():
    from engine.models import MODEL_NAMES
    with pytest.raises(ConfigError) as err:
        parse_config({"name": "x", "models": ["ets", "lstm"]})
    assert str(err.value).endswith("allowed: " + ", ".join(MODEL_NAMES))
