"""A seeded, stratified sample of entities to score tuning trials on.

Entities differ most in how much history they have and how noisy they are, and tuned
parameters should suit the whole panel, not its most common kind. So the eligible entities
(long enough for one backtest window) are split into up to 3 x 3 strata by history length
and coefficient of variation, and the sample is allocated across strata in proportion to
their size (largest remainder, at least one per stratum while the size allows), drawn with
a seeded generator: the same panel and seed give the same sample on any machine.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from engine.errors import ConfigError

BINS = 3


def entity_stats(extents: pd.DataFrame) -> pd.DataFrame:
    """entity_id, observed, cv from a backend's `extents` of gold (entities with a value)."""
    stats = extents[extents["observed"] > 0].copy()
    stats["cv"] = stats["std"].fillna(0.0) / stats["mean"].abs().where(stats["mean"].abs() > 0, 1.0)
    return stats[["entity_id", "observed", "cv"]]


def stratified_sample(stats: pd.DataFrame, size: int, seed: int, min_length: int) -> list[str]:
    """`size` entity ids (all eligible ones when fewer), sorted."""
    eligible = stats[stats["observed"] >= min_length].sort_values("entity_id", ignore_index=True)
    if eligible.empty:
        raise ConfigError(f"no entity has the {min_length} observations one backtest window needs, so none can "
                          "score a tuning trial: ingest more history or shorten horizon/backtest")
    if len(eligible) <= size:
        return eligible["entity_id"].tolist()
    strata = _bins(eligible["observed"]) * BINS + _bins(eligible["cv"])
    groups = {k: g["entity_id"].tolist() for k, g in eligible.groupby(strata, sort=True)}
    quota = _allocate({k: len(v) for k, v in groups.items()}, size)
    rng = np.random.default_rng(seed)
    chosen = [e for k, members in groups.items() for e in rng.choice(members, quota[k], replace=False)]
    return sorted(map(str, chosen))


def _bins(values: pd.Series) -> np.ndarray:
    """Quantile bins 0..BINS-1; equal values share a bin (their average rank places it)."""
    ranks = values.rank(method="average").to_numpy()
    return np.minimum(((ranks - 0.5) * BINS / len(values)).astype(int), BINS - 1)


def _allocate(sizes: dict, total: int) -> dict:
    """Proportional quotas summing to `total`: one per stratum first while `total` allows,
    then the rest by largest remainder."""
    n = sum(sizes.values())
    quota = {k: 0 for k in sizes}
    if total >= len(sizes):
        quota = {k: 1 for k in sizes}
    left = total - sum(quota.values())
    share = {k: left * (v - quota[k]) / max(n - sum(quota.values()), 1) for k, v in sizes.items()}
    for k in sizes:
        quota[k] += min(int(share[k]), sizes[k] - quota[k])
    order = sorted(sizes, key=lambda k: (-(share[k] - int(share[k])), k))
    while sum(quota.values()) < total:
        for k in order:
            if sum(quota.values()) < total and quota[k] < sizes[k]:
                quota[k] += 1
    return quota
