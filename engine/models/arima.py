"""ARIMA with automatic order selection, as a dynamic harmonic regression.

Hourly load has 24- and 168-step cycles; seasonal ARIMA with a 168 lag is impractically slow
(statsforecast's AutoARIMA with a 24 season takes about two minutes on 90 days of hourly data),
so (following Hyndman & Athanasopoulos, FPP3 §12.1) the seasons enter as Fourier terms next to
the exogenous regressors, and the errors follow an ARIMA(p, d, q):

* d: KPSS test on the regression residuals (d=1 when they are not level-stationary);
* p, q: the lowest AICc over a grid, each candidate estimated by Hannan-Rissanen (OLS, fast);
* the regression coefficients by least squares, and the chosen order of its residuals by
  statsforecast's `Arima` (conditional sum of squares to start, exact likelihood to finish).

Estimating the two in turn instead of jointly is 3.8-4.3x faster per fit on 90 days of 20
GEFCom2012 zones (the likelihood's numerical gradient no longer spans ~20 Fourier coefficients),
with a median MASE ratio of 0.993 on the held-out week (5.7-6.0x and 1.000 on synthetic load;
`python benchmarks/model_cost.py --skip-costs --before arima_joint`). `arima_joint` is the joint
estimate (models stored as arima implementation 2 load with it).
"""
from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import pandas as pd

from engine.models.base import (Forecast, ForecastModel, Hyperparameter, ModelError, fourier_order, fourier_terms,
                                optional_array)
from engine.models.nixtla import library, plain

_METHOD = "CSS-ML"


class ArimaModel(ForecastModel):
    name = "arima"
    # 3: regression then ARIMA errors; 2 estimated both jointly (ArimaJoint); 1 by statsmodels SARIMAX
    # (engine.models.statsmodels_zoo)
    implementation = 3
    serves_with = ("statsforecast",)
    summary = ("dynamic harmonic regression: Fourier terms for each usable season plus the exogenous regressors, "
               "ARIMA(p,d,q) errors; d by KPSS, p<=`max_p` and q<=`max_q` by AICc over Hannan-Rissanen fits, then "
               "least squares for the regression, then one statsforecast `Arima` fit of its residuals (seasonal "
               "ARIMA with a 168 lag is impractically slow)")
    cost = (0.05, 0.12)
    uses_exogenous = True
    # Between backtest refits it keeps its order and Fourier terms (the search: most of a fit) and
    # re-estimates its coefficients, both steps fast: with them fixed too, a stationary model's mean
    # stays the earlier window's (backtest MASE +10% on GEFCom2012), where ETS's level state follows.
    refreshable = True
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

    def _history_state(self, history: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
        exog = history[list(self.exogenous_)].to_numpy(dtype="float64") if self.exogenous_ else None
        return {"y": y, "exog": exog, "reestimate": True}

    def _restore(self, state: dict[str, Any]) -> None:
        self.order_ = tuple(state["order"])
        self.seasons_, self.terms_ = tuple(state["seasons"]), tuple(state["terms"])
        self.y_, self.exog_history_ = np.asarray(state["y"], dtype="float64"), optional_array(state["exog"])
        design = self._design(np.arange(len(self.y_)), self.exog_history_)
        if state.get("reestimate"):     # refreshed: the order kept, the coefficients estimated afresh
            self._estimate(design if design.shape[1] else None)
        else:
            self._reestimate(design if design.shape[1] else None, state)

    # How the chosen order is estimated: the regression by least squares, the ARIMA on its residuals.
    def _estimate(self, design: Optional[np.ndarray]) -> None:
        self.beta_, residuals = regression(self.y_, design, differenced=self.order_[1] == 1)
        self.fitted_model_ = _arima(residuals, self.order_, include_mean=False)

    def _predict(self, design: Optional[np.ndarray], horizon: int) -> Forecast:
        errors = _arima_forecast(self.fitted_model_, horizon, self.spec.levels, None)
        return errors.shifted(with_intercept(design, horizon) @ self.beta_)

    def _aicc(self) -> float:
        return float(self.fitted_model_["aicc"])

    def _estimates(self) -> dict[str, Any]:
        return {"beta": self.beta_, "coef": plain(self.fitted_model_["coef"]),
                "sigma2": float(self.fitted_model_["sigma2"]), "aicc": self._aicc()}

    def _reestimate(self, design: Optional[np.ndarray], state: dict[str, Any]) -> None:
        self.beta_ = np.asarray(state["beta"], dtype="float64")
        residuals = self.y_ - with_intercept(design, len(self.y_)) @ self.beta_
        self.fitted_model_ = _fixed_arima(residuals, self.order_, state, include_mean=False)


class ArimaJoint(ArimaModel):
    """The same harmonic regression and order search, the regression coefficients estimated jointly
    with the ARIMA by statsforecast's `Arima` (the arima implementation 2 of manymodels 0.x)."""

    name = "arima_joint"
    implementation = 2
    refreshable = False     # its estimate is the expensive part: refitted at every window
    reads = ("arima", 2)
    summary = ("`arima` with the regression coefficients estimated jointly with the ARIMA errors by one "
               "statsforecast `Arima` fit (4-6x the cost of `arima`'s two steps)")
    cost = (0.2, 0.46)

    def _estimate(self, design: Optional[np.ndarray]) -> None:
        self.fitted_model_ = _arima(self.y_, self.order_, include_mean=self.order_[1] == 0, xreg=design)

    def _predict(self, design: Optional[np.ndarray], horizon: int) -> Forecast:
        return _arima_forecast(self.fitted_model_, horizon, self.spec.levels, design)

    def _estimates(self) -> dict[str, Any]:
        return {"coef": plain(self.fitted_model_["coef"]), "sigma2": float(self.fitted_model_["sigma2"]),
                "aicc": self._aicc()}

    def _reestimate(self, design: Optional[np.ndarray], state: dict[str, Any]) -> None:
        self.fitted_model_ = _fixed_arima(self.y_, self.order_, state, include_mean="intercept" in state["coef"],
                                          xreg=design)


def _arima(y: np.ndarray, order: tuple[int, int, int], include_mean: bool, xreg: Optional[np.ndarray] = None) -> dict:
    try:
        fitted = library("arima").Arima(y, order=order, include_mean=include_mean, method=_METHOD, xreg=xreg)
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise ModelError(f"arima: order {order} could not be estimated ({exc})") from None
    if not np.isfinite(list(fitted["coef"].values())).all():
        raise ModelError(f"arima: maximum likelihood for order {order} did not converge")
    return fitted


def _fixed_arima(y: np.ndarray, order: tuple[int, int, int], state: dict[str, Any], include_mean: bool,
                 xreg: Optional[np.ndarray] = None) -> dict:
    """Every coefficient fixed: the filter re-runs over the window without optimizing."""
    fitted = library("arima").Arima(y, order=order, include_mean=include_mean, method=_METHOD,
                                    fixed=np.asarray(list(state["coef"].values()), dtype="float64"), xreg=xreg)
    # With nothing left to estimate the refit's AICc counts no parameters: keep the fitted one.
    fitted.update(sigma2=float(state["sigma2"]), aicc=float(state["aicc"]))
    return fitted


def _arima_forecast(fitted: dict, horizon: int, levels: tuple[int, ...], xreg: Optional[np.ndarray]) -> Forecast:
    out = library("arima").forecast_arima(fitted, horizon, level=list(levels), xreg=xreg)
    bounds = {lvl: (out["lower"][f"{lvl}%"].to_numpy(dtype="float64"),
                    out["upper"][f"{lvl}%"].to_numpy(dtype="float64")) for lvl in levels}
    return Forecast(np.asarray(out["mean"], dtype="float64"), bounds)


def with_intercept(design: Optional[np.ndarray], rows: int) -> np.ndarray:
    return np.ones((rows, 1)) if design is None else np.column_stack([np.ones(rows), design])


def regression(y: np.ndarray, design: Optional[np.ndarray], differenced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of `y` on an intercept and `design`: (coefficients, residuals). `differenced`:
    for integrated errors (d=1), the coefficients of the differences, as the likelihood of a
    regression with ARIMA(p,1,q) errors has them: in levels a slow regressor such as temperature
    would take up the errors' wandering (a spurious regression); the intercept is then the mean
    level, which the integrated errors make irrelevant."""
    regressors = with_intercept(design, len(y))
    if not differenced or design is None:
        coef, *_ = np.linalg.lstsq(regressors, y, rcond=None)
    else:
        slopes, *_ = np.linalg.lstsq(np.diff(design, axis=0), np.diff(y), rcond=None)
        coef = np.r_[np.mean(y - design @ slopes), slopes]
    return coef, y - regressors @ coef


def select_order(y: np.ndarray, design: np.ndarray, max_p: int, max_q: int) -> tuple[int, int, int]:
    """(p, d, q) of the regression errors: d by KPSS, p and q by AICc over Hannan-Rissanen fits."""
    from statsmodels.tsa.arima.estimators.hannan_rissanen import hannan_rissanen
    from statsmodels.tools.sm_exceptions import InterpolationWarning
    from statsmodels.tsa.stattools import kpss
    _, resid = regression(y, design if design.shape[1] else None)
    d = 0
    if np.std(resid) > 0:
        with warnings.catch_warnings():
            # Past the table's range KPSS says so and returns the table's end: on the same side of 0.05.
            warnings.simplefilter("ignore", InterpolationWarning)
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
