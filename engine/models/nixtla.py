"""What the models fitted by Nixtla's statsforecast share.

statsforecast (C++ since 2.0: nothing to JIT-compile per worker) returns each fit as a dict of
arrays and scalars. A stored model keeps only the fitted *parameters* and the fitted window, and a
restored one re-runs the library's own `forward` step with those parameters fixed: that
recomputes the states exactly, without optimizing, so the routing model serves the forecasts
training produced (tests/engine/models check they are identical) and the envelope stays small.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from engine.models.base import Forecast, ForecastModel, ModelError


_IMPORTING = threading.Lock()
# What statsforecast's functions import inside their bodies (grep `^\s+from statsforecast`).
_CALL_TIME_IMPORTS = ("simulation", "distributions")


def library(module: str) -> types.ModuleType:
    """`statsforecast.<module>`, imported on first use and without the package's `__init__`.

    That `__init__` imports `StatsForecast` and its distributed backends (fugue, and pyspark
    when installed): 1.5 s in every worker and serving process, for nothing the zoo calls. So the
    model functions load under a bare package object, which is then dropped: a later
    `import statsforecast` (a benchmark's `StatsForecast`) runs the real `__init__` as usual.
    The modules its forecast functions import when first called (the interval samplers) load
    with it, or that first forecast would run the real `__init__` after all.
    Imported lazily too, so reading a config or `forecasts pull` imports no statsforecast at all."""
    name = f"statsforecast.{module}"
    if name in sys.modules:
        return sys.modules[name]
    with _IMPORTING:
        if "statsforecast" in sys.modules:
            return importlib.import_module(name)
        found = importlib.util.find_spec("statsforecast")
        if found is None:
            raise ModuleNotFoundError(f"{name} is needed by this model, and statsforecast is not installed: "
                                      "pip install -e . (the project's pinned statsforecast)", name="statsforecast")
        bare = types.ModuleType("statsforecast")
        bare.__path__, bare.__spec__ = list(found.submodule_search_locations), found
        sys.modules["statsforecast"] = bare
        try:
            for called in _CALL_TIME_IMPORTS:
                importlib.import_module(f"statsforecast.{called}")
            return importlib.import_module(name)
        finally:
            del sys.modules["statsforecast"]


def library_forecast(out: dict, levels: tuple[int, ...]) -> Forecast:
    """statsforecast's {"mean", "lo-80", "hi-80", ...} as a Forecast."""
    mean = np.asarray(out["mean"], dtype="float64")
    return Forecast(mean, {lvl: (np.asarray(out[f"lo-{lvl}"], dtype="float64"),
                                 np.asarray(out[f"hi-{lvl}"], dtype="float64")) for lvl in levels})


def plain(value: Any) -> Any:
    """A fitted-parameter value as JSON-able data (numpy scalars and arrays to Python)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


class LibraryModel(ForecastModel):
    """A model fitted by a statsforecast function: subclasses say how to fit, how to re-run the fit
    with stored parameters, and how to forecast; `kept` names the fit's keys a stored model needs."""

    implementation = 2        # statsforecast; 1 was statsmodels (engine.models.statsmodels_zoo)
    serves_with = ("statsforecast",)
    refreshable = True
    kept: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def _library_fit(self, y: np.ndarray) -> dict: ...

    @abstractmethod
    def _library_forward(self, y: np.ndarray, stored: dict) -> dict: ...

    @abstractmethod
    def _library_forecast(self, fitted: dict, horizon: int) -> dict: ...

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        self.y_ = y
        try:
            self.fitted_model_ = self._library_fit(y)
        except (ValueError, ZeroDivisionError, np.linalg.LinAlgError, FloatingPointError) as exc:
            raise ModelError(f"{self.name}: statsforecast could not fit {len(y)} observations ({exc})") from None

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        return library_forecast(self._library_forecast(self.fitted_model_, horizon), self.spec.levels)

    def _state(self) -> dict[str, Any]:
        return {"fit": plain({k: self.fitted_model_[k] for k in self.kept}), "y": self.y_}

    def _history_state(self, history: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
        return {"y": y}

    def _restore(self, state: dict[str, Any]) -> None:
        self.y_ = np.asarray(state["y"], dtype="float64")
        self.fitted_model_ = self._library_forward(self.y_, state["fit"])
