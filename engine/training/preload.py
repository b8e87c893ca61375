"""What the local backend's forkserver imports before it forks a worker: the training code and
the statsforecast functions the zoo calls. Workers then start warm; a spawned worker imported
all of it again (about 3 s of CPU) on every `train`. Without statsforecast (a GPU box that
trains gpu_additive alone) there is nothing of it to preload; a model that needs it says so."""
from __future__ import annotations

import importlib.util

import engine.training.tasks  # noqa: F401
from engine.models.nixtla import library

if importlib.util.find_spec("statsforecast") is not None:
    for _module in ("theta", "ets", "arima", "ces", "mstl", "models"):
        library(_module)
