"""ARIMA with automatic order selection, as a dynamic harmonic regression.

Hourly load has 24- and 168-step cycles; seasonal ARIMA with a 168 lag is impractically slow
(statsforecast's AutoARIMA with a 24 season takes about two minutes on 90 days of hourly data),
so (following Hyndman & Athanasopoulos, FPP3 §12.1) the seasons enter as Fourier terms next to
the exogenous regressors, and the errors follow an ARIMA(p, d, q):

* d: KPSS test on the regression residuals (d=1 when they are not level-stationary);
* p, q: the lowest AICc over a grid, each candidate estimated by Hannan-Rissanen (OLS, fast);
* the chosen order is then estimated once by statsforecast's `Arima` (conditional sum of
  squares to start, exact likelihood to finish), the regression coefficients with it.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from engine.models.base import (Forecast, ForecastModel, Hyperparameter, ModelError, fourier_order, fourier_terms,
                                optional_array)
from engine.models.nixtla import library, plain

_METHOD = "CSS-ML"


class ArimaModel(ForecastModel):
    name = "arima"
    implementation = 2      # statsforecast; 1 was statsmodels SARIMAX (engine.models.statsmodels_zoo)
    serves_with = ("statsforecast",)
    summary = ("dynamic harmonic regression: Fourier terms for each usable season plus the exogenous regressors, "
               "ARIMA(p,d,q) errors; d by KPSS, p<=`max_p` and q<=`max_q` by AICc over Hannan-Rissanen fits, then "
               "one statsforecast `Arima` fit (seasonal ARIMA with a 168 lag is impractically slow)")
    cost = (0.2, 0.46)
    uses_exogenous = True
    # Not `refreshable`: with its coefficients fixed a stationary model's mean stays that of the earlier
    # window (backtest MASE +10% on GEFCom2012), where ETS's level state follows the new data.
    hyperparameters = {
        "max_p": Hyperparameter(3, "largest AR order the AICc search tries", low=0, high=6, integer=True),
        "max_q": Hyperparameter(2, "largest MA order the AICc search tries", low=0, high=4, integer=True),
        "fourier_terms": Hyperparameter(5, "most sin/cos pairs per season", low=1, high=12, integer=True),
    }

    def _fit(self, history: pd.DataFrame, y: np.ndarray) -> None:
        self.seasons_ = self.spec.usable_seasons(len(y))
        self.terms_ = tuple(fourier_order(m, self.hyper["fourier_terms"]) for m in self.seasons_)
        self.y_ = y
        self.exog_history_ = history[list(self.exogenous_)].to_numpy(dtype="float64") if self.exogenous_ else None
        design = self._design(np.arange(len(y)), self.exog_history_)
        self.order_ = select_order(y, design, self.hyper["max_p"], self.hyper["max_q"])
        self._estimate(design if design.shape[1] else None)

    def _design(self, steps: np.ndarray, exog: np.ndarray | None) -> np.ndarray:
        parts = [fourier_terms(steps, self.seasons_, self.terms_)]
        if exog is not None:
            parts.append(exog)
        return np.column_stack(parts)

    def _forecast(self, future: pd.DataFrame, horizon: int) -> Forecast:
        n = len(self.y_)
        exog = future[list(self.exogenous_)].to_numpy(dtype="float64") if self.exogenous_ else None
        design = self._design(np.arange(n, n + horizon), exog)
        return self._predict(design if design.shape[1] else None, horizon)

    def params(self) -> dict[str, Any]:
        return {"order": list(self.order_), "fourier": dict(zip(map(str, self.seasons_), self.terms_)),
                "exogenous": list(self.exogenous_), "aicc": round(self._aicc(), 3)}

    def _state(self) -> dict[str, Any]:
        return {"order": list(self.order_), "seasons": list(self.seasons_), "terms": list(self.terms_),
                "y": self.y_, "exog": self.exog_history_, **self._estimates()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.order_ = tuple(state["order"])
        self.seasons_, self.terms_ = tuple(state["seasons"]), tuple(state["terms"])
        self.y_, self.exog_history_ = np.asarray(state["y"], dtype="float64"), optional_array(state["exog"])
        design = self._design(np.arange(len(self.y_)), self.exog_history_)
        self._reestimate(design if design.shape[1] else None, state)

    # How the chosen order is estimated (engine.models.statsmodels_zoo keeps the SARIMAX version).
    def _estimate(self, design: Optional[np.ndarray]) -> None:
        try:
            self.fitted_model_ = library("arima").Arima(self.y_, order=self.order_, include_mean=self.order_[1] == 0,
                                                        method=_METHOD, xreg=design)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise ModelError(f"arima: order {self.order_} could not be estimated ({exc})") from None
        if not np.isfinite(list(self.fitted_model_["coef"].values())).all():
            raise ModelError(f"arima: maximum likelihood for order {self.order_} did not converge")

    def _predict(self, design: Optional[np.ndarray], horizon: int) -> Forecast:
        out = library("arima").forecast_arima(self.fitted_model_, horizon, level=list(self.spec.levels), xreg=design)
        bounds = {lvl: (out["lower"][f"{lvl}%"].to_numpy(dtype="float64"),
                        out["upper"][f"{lvl}%"].to_numpy(dtype="float64")) for lvl in self.spec.levels}
        return Forecast(np.asarray(out["mean"], dtype="float64"), bounds)

    def _aicc(self) -> float:
        return float(self.fitted_model_["aicc"])

    def _estimates(self) -> dict[str, Any]:
        return {"coef": plain(self.fitted_model_["coef"]), "sigma2": float(self.fitted_model_["sigma2"]),
                "aicc": self._aicc()}

    def _reestimate(self, design: Optional[np.ndarray], state: dict[str, Any]) -> None:
        # Every coefficient fixed: the filter re-runs over the window without optimizing.
        self.fitted_model_ = library("arima").Arima(
            self.y_, order=self.order_, include_mean="intercept" in state["coef"], method=_METHOD,
            fixed=np.asarray(list(state["coef"].values()), dtype="float64"), xreg=design)
        # With nothing left to estimate the refit's AICc counts no parameters: keep the fitted one.
        self.fitted_model_.update(sigma2=float(state["sigma2"]), aicc=float(state["aicc"]))


def select_order(y: np.ndarray, design: np.ndarray, max_p: int, max_q: int) -> tuple[int, int, int]:
    """(p, d, q) of the regression errors: d by KPSS, p and q by AICc over Hannan-Rissanen fits."""
    from statsmodels.tsa.arima.estimators.hannan_rissanen import hannan_rissanen
    from statsmodels.tsa.stattools import kpss
    regressors = np.column_stack([np.ones(len(y)), np.arange(len(y)) / len(y), design])
    coef, *_ = np.linalg.lstsq(regressors[:, [0, *range(2, regressors.shape[1])]], y, rcond=None)
    resid = y - regressors[:, [0, *range(2, regressors.shape[1])]] @ coef
    d = 0
    if np.std(resid) > 0:
        _, pvalue, *_ = kpss(resid, regression="c", nlags="auto")
        d = 1 if pvalue < 0.05 else 0
    series = np.diff(resid) if d else resid
    n = len(series)
    best = (np.inf, (1, d, 0))
    for p in range(max_p + 1):
        for q in range(max_q + 1):
            try:
                params, _ = hannan_rissanen(series, ar_order=p, ma_order=q, demean=True)
            except (ValueError, np.linalg.LinAlgError):
                continue
            k = p + q + 1
            if not (params.sigma2 and params.sigma2 > 0) or n - k - 1 <= 0:
                continue
            aicc = n * np.log(params.sigma2) + 2 * k + 2 * k * (k + 1) / (n - k - 1)
            if aicc < best[0]:
                best = (aicc, (p, d, q))
    return best[1]
