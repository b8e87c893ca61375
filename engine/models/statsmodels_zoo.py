"""The statsmodels implementations of ets, arima, theta and mstl (manymodels 0.x before statsforecast).

They stay so that models stored by earlier versions (model envelope implementation 1) load and
serve what they served, and as candidates (`ets_statsmodels`, ...) for anyone who wants the old
fits; benchmarks/model_cost.py times them next to the statsforecast ones.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from engine.models.arima import ArimaModel
from engine.models.mstl import MSTLModel
from engine.models.base import (Forecast, ForecastModel, Hyperparameter, ModelError)


# (trend, damped): the automatic choice is among none and damped, as in Hyndman's ets() for
# additive errors; a plain additive trend only when asked for (it extrapolates a week badly).
TRENDS = {"auto": ((None, False), ("add", True)), "none": ((None, False),), "damped": (("add", True),),
          "additive": (("add", False),)}


def _ets(y: np.ndarray, trend, damped: bool, season: int):
    """`season` 1 means no seasonal component."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel as _StatsmodelsETS
    return _StatsmodelsETS(pd.Series(y), error="add", trend=trend, damped_trend=damped,
                    seasonal="add" if season > 1 else None, seasonal_periods=season if season > 1 else None)


class StatsmodelsETS(ForecastModel):
    name = "ets_statsmodels"
    reads = ("ets", 1)
    serves_with = ("statsmodels",)
    summary = ("statsmodels `ETSModel`, additive error; trend (none or damped additive) and season (none or "
               "additive at the shortest usable season) chosen by AICc")
    cost = (0.98, 1.39)
    hyperparameters = {
        "trend": Hyperparameter("auto", "trend component (auto: the lower AICc of none and damped)",
                                choices=tuple(TRENDS)),
        "seasonal": Hyperparameter("auto", "additive season of the shortest usable length (auto: by AICc)",
                                   choices=("auto", "none", "additive")),
    }

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        seasons = self.spec.usable_seasons(len(y))
        choices = sorted({1, min(seasons)} if seasons else {1}, reverse=True)
        if self.hyper["seasonal"] != "auto":
            choices = [min(seasons) if seasons and self.hyper["seasonal"] == "additive" else 1]
        best = None
        # AICc compares models fitted to the same observations, seasonal or not (statsmodels'
        # ETS likelihood covers every observation), as in Hyndman's ets().
        for season in choices:
            for trend, damped in TRENDS[self.hyper["trend"]]:
                try:
                    result = _ets(y, trend, damped, season).fit(disp=False)
                except (ValueError, np.linalg.LinAlgError):
                    continue
                if np.isfinite(result.aicc) and (best is None or result.aicc < best[0]):
                    best = (result.aicc, trend, damped, season, result)
        if best is None:
            raise ModelError("ets: no trend/season configuration could be fitted")
        _, self.trend_, self.damped_, self.season_, self.result_ = best
        self.y_ = y

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        n = len(self.y_)
        bounds = {}
        prediction = self.result_.get_prediction(start=n, end=n + horizon - 1)
        for level in self.spec.levels:
            interval = np.asarray(prediction.pred_int(alpha=1 - level / 100.0))
            bounds[level] = (interval[:, 0], interval[:, 1])
        return Forecast(np.asarray(prediction.predicted_mean, dtype="float64"), bounds)

    def params(self) -> dict[str, Any]:
        return {"trend": self.trend_ or "none", "damped": self.damped_, "season": self.season_,
                "aicc": round(float(self.result_.aicc), 3)}

    def _state(self) -> dict[str, Any]:
        return {"trend": self.trend_, "damped": self.damped_, "season": self.season_,
                "params": np.asarray(self.result_.params), "y": self.y_}

    def _restore(self, state: dict[str, Any]) -> None:
        self.trend_, self.damped_, self.season_ = state["trend"], state["damped"], int(state["season"])
        self.y_ = np.asarray(state["y"], dtype="float64")
        self.result_ = _ets(self.y_, self.trend_, self.damped_, self.season_).smooth(
            np.asarray(state["params"], dtype="float64"))


class StatsmodelsArima(ArimaModel):
    """The same harmonic regression and order search; the chosen order estimated by SARIMAX."""

    refreshable = False     # reads models stored before statsforecast; refitted at every window

    name = "arima_statsmodels"
    implementation = 1
    reads = ("arima", 1)
    serves_with = ("statsmodels",)
    summary = ("dynamic harmonic regression: Fourier terms for each usable season plus the exogenous regressors, "
               "ARIMA(p,d,q) errors; d by KPSS, p<=`max_p` and q<=`max_q` by AICc over Hannan-Rissanen fits, then "
               "one exact-likelihood SARIMAX fit (seasonal ARIMA with a 168 lag is impractically slow)")
    cost = (0.88, 2.33)

    def _model(self, design: Optional[np.ndarray]):
        from statsmodels.tsa.statespace.sarimax import SARIMAX
        return SARIMAX(self.y_, exog=design, order=self.order_, trend="c" if self.order_[1] == 0 else "n")

    def _estimate(self, design: Optional[np.ndarray]) -> None:
        self.result_ = self._model(design).fit(disp=False, maxiter=100)
        if not np.isfinite(self.result_.params).all():
            raise ModelError(f"arima: maximum likelihood for order {self.order_} did not converge")

    def _predict(self, design: Optional[np.ndarray], horizon: int) -> Forecast:
        prediction = self.result_.get_forecast(horizon, exog=design)
        bounds = {}
        for level in self.spec.levels:
            interval = np.asarray(prediction.conf_int(alpha=1 - level / 100.0))
            bounds[level] = (interval[:, 0], interval[:, 1])
        return Forecast(np.asarray(prediction.predicted_mean, dtype="float64"), bounds)

    def _aicc(self) -> float:
        return float(self.result_.aicc)

    def _estimates(self) -> dict[str, Any]:
        return {"params": np.asarray(self.result_.params)}

    def _reestimate(self, design: Optional[np.ndarray], state: dict[str, Any]) -> None:
        self.result_ = self._model(design).smooth(np.asarray(state["params"], dtype="float64"))


class StatsmodelsTheta(ForecastModel):
    name = "theta_statsmodels"
    reads = ("theta", 1)
    serves_with = ("statsmodels",)
    summary = "statsmodels `ThetaModel`, deseasonalized by the shortest usable season"
    cost = (0.055, 0.073)
    hyperparameters = {
        "theta": Hyperparameter(2.0, "weight of the curvature (theta) line; 1 is simple exponential smoothing "
                                "with drift 0, 2 the classic Theta method", low=1.0, high=4.0),
    }

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        seasons = self.spec.usable_seasons(len(y))
        self.season_ = min(seasons) if seasons else 1
        self.y_ = y
        self._refit()

    def _refit(self) -> None:
        # Fitting is closed-form given the data, so a restored model refits to the same state.
        from statsmodels.tsa.forecasting.theta import ThetaModel as _Theta
        self.result_ = _Theta(pd.Series(self.y_), period=self.season_,
                              deseasonalize=self.season_ > 1, method="auto").fit()

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        mean = np.asarray(self.result_.forecast(horizon, theta=self.hyper["theta"]), dtype="float64")
        bounds = {}
        for level in self.spec.levels:
            frame = self.result_.prediction_intervals(horizon, theta=self.hyper["theta"], alpha=1 - level / 100.0)
            bounds[level] = (frame["lower"].to_numpy(), frame["upper"].to_numpy())
        return Forecast(mean, bounds)

    def params(self) -> dict[str, Any]:
        return {"season": self.season_, **{k: round(float(v), 6) for k, v in self.result_.params.items()}}

    def _state(self) -> dict[str, Any]:
        return {"season": self.season_, "y": self.y_}

    def _restore(self, state: dict[str, Any]) -> None:
        self.season_, self.y_ = int(state["season"]), np.asarray(state["y"], dtype="float64")
        self._refit()


class StatsmodelsMSTL(MSTLModel):
    """The same model with statsmodels' decomposition and ETS."""

    name = "mstl_statsmodels"
    implementation = 1
    reads = ("mstl", 1)
    serves_with = ("statsmodels",)
    summary = ("statsmodels `MSTL` with every usable season (24 and 168 for hourly load), the adjusted series by "
               "non-seasonal ETS, seasonal components repeated")
    trend_class = StatsmodelsETS

    def _seasonal(self, y: np.ndarray) -> np.ndarray:
        from statsmodels.tsa.seasonal import MSTL
        result = MSTL(y, periods=self.periods_).fit()
        return np.asarray(result.seasonal, dtype="float64").reshape(len(y), -1)
