"""Execution backends: where frames live and where per-entity work runs.

Every job (ingest, train, tune, score) talks to one `Backend` (engine.backends.base) and holds
no backend branches: `local` (pandas, delta-rs, a process pool; no JVM), `spark` (Spark frames,
delta-spark, `applyInPandas`, SparkTrials) and `ray` (pandas frames, `ray.data` for training).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from engine.backends.base import Backend
    from engine.config import Config

# name -> "module:class"; imported on first use, so the local backend never imports pyspark or ray.
BACKENDS = {"local": "engine.backends.local:LocalBackend", "spark": "engine.backends.spark:SparkBackend",
            "ray": "engine.backends.ray:RayBackend"}
BACKEND_NAMES = tuple(BACKENDS)


def backend_for(config: "Config", name: Optional[str] = None, spark=None) -> "Backend":
    """The backend `name` (default: the config's) on the config's lake; `spark`: a session to reuse."""
    name = name or config.backend
    try:
        module, cls = BACKENDS[name].split(":")
    except KeyError:
        raise ValueError(f"Unknown backend: {name!r}; known: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), cls).from_config(config, spark)
