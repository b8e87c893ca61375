"""Hyperparameter tuning: search spaces, the per-entity search, `manymodels tune` and its table."""
