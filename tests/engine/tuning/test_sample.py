"""The stratified sample `manymodels tune` searches on."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.errors import ConfigError
from engine.tuning.sample import stratified_sample


def test_stratified_sample_is_seeded_and_covers_every_stratum():
    rng = np.random.default_rng(3)
    stats = pd.DataFrame({"entity_id": [f"m{i:03d}" for i in range(90)],
                          "observed": np.repeat([200, 2000, 20000], 30), "cv": rng.uniform(0, 1, 90)})
    stats.loc[0, "observed"] = 10                             # too short for one backtest window
    sample = stratified_sample(stats, 9, seed=1, min_length=100)
    assert sample == stratified_sample(stats, 9, seed=1, min_length=100) and len(sample) == 9
    assert sample != stratified_sample(stats, 9, seed=2, min_length=100)
    lengths = stats.set_index("entity_id").loc[sample, "observed"]
    assert lengths.value_counts().to_dict() == {200: 3, 2000: 3, 20000: 3} and "m000" not in sample
    assert stratified_sample(stats.head(5), 9, seed=1, min_length=100) == ["m001", "m002", "m003", "m004"]
    with pytest.raises(ConfigError, match="no entity has the 10000 observations"):
        stratified_sample(stats.head(5), 9, seed=1, min_length=10000)
