"""Declared hyperparameters: they change the model and travel with it, and bad values, search spaces
and model_params are clear errors checked with the config."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from engine.errors import ConfigError
from engine.models import ModelError, ModelSpec, load_model, make_model
from tests.conftest import small_config, trending

SPEC = ModelSpec(freq="h", season_lengths=(24, 168), levels=(80, 95))


def test_hyperparameters_change_the_model_and_travel_with_it():
    history = trending().iloc[:-24]
    future = trending().iloc[-24:].drop(columns="y")
    low = make_model("theta_statsmodels", SPEC, {"theta": 1.0}).fit(history)
    high = make_model("theta_statsmodels", SPEC, {"theta": 3.0}).fit(history)
    assert not np.allclose(low.forecast(future).mean, high.forecast(future).mean)
    restored = load_model(high.to_bytes())
    assert restored.hyper == {"theta": 3.0}
    np.testing.assert_allclose(restored.forecast(future).mean, high.forecast(future).mean)
    assert make_model("ets", SPEC).hyper == {"trend": "auto", "seasonal": "auto", "multiplicative": "auto"}

    # A model stored before hyperparameters existed loads with the defaults.
    envelope = json.loads(zlib.decompress(low.to_bytes()))
    del envelope["hyper"]
    assert load_model(zlib.compress(json.dumps(envelope).encode())).hyper == {"theta": 2.0}

@pytest.mark.parametrize("params, message", [
    ({"theta": 9.0}, "theta must be between 1 and 4, got 9.0"),
    ({"thetaa": 2.0}, "unknown hyperparameter(s) ['thetaa']; it has: theta"),
    ({"theta": "big"}, "must be a number, got 'big'"),
])
def test_bad_hyperparameters_are_clear_errors(params, message):
    with pytest.raises(ModelError) as err:
        make_model("theta_statsmodels", SPEC, params)
    assert message in str(err.value)

@pytest.mark.parametrize("section, message", [
    ({"model_params": {"prophet": {"changepoint_prior_scale": 2.0}}},
     "'model_params.prophet' is invalid: prophet: hyperparameter changepoint_prior_scale must be between"),
    ({"model_params": {"lstm": {}}}, "'model_params' has unknown model 'lstm'"),
    ({"tuning": {"space": {"arima": {"max_p": {"uniform": [0, 3]}}}}},
     "'tuning.space.arima' is invalid: max_p: is an integer setting: use int"),
    ({"tuning": {"space": {"ets": {"trend": {"choice": ["linear"]}}}}},
     "'tuning.space.ets' is invalid: trend: must be one of auto, none, damped, additive, got 'linear'"),
    ({"tuning": {"space": {"prophet": {"changepoint_prior_scale": {"loguniform": [0, 0.5]}}}}},
     "must be between 0.001 and 0.5, got 0"),
    ({"tuning": {"space": {"theta": {"alpha": {"uniform": [0, 1]}}}}}, "alpha: theta has no such hyperparameter"),
    ({"tuning": {"space": {"theta": {"variant": {"normal": [0, 1]}}}}}, "unknown distribution 'normal'"),
    ({"tuning": {"models": ["arima"]}}, "'tuning.models' lists ['arima'], which are not candidates"),
    ({"tuning": {"per_entity": {"models": ["seasonal_naive"]}}}, "which cannot be searched here"),
    ({"tuning": {"max_evals": 0}}, "'tuning.max_evals' must be >= 1"),
])
def test_search_space_and_model_params_are_validated_with_the_config(section, message):
    with pytest.raises(ConfigError) as err:
        small_config(models=["seasonal_naive", "theta", "ets", "prophet"], **section)
    assert message in str(err.value)
