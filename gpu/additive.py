"""A Prophet-like additive model fitted for many entities at once with batched linear algebra.

    y(t) = k + m*tau + sum_j delta_j * max(0, tau - s_j)          piecewise-linear trend
           + sum_seasons sum_n (a_n sin + b_n cos)(2 pi n t / P)    Fourier seasonalities
           + sum_e beta_e * x_e(t)                                  exogenous regressors, holidays

`tau` is each entity's own time scaled to [0, 1] over its observed history, and the changepoints
`s_j` sit evenly in the first `changepoint_range` of it (Prophet's layout). The priors are
Prophet's: Normal(0, seasonality_prior_scale) on the seasonal and regressor coefficients,
Laplace(0, changepoint_prior_scale) on the changepoint deltas. The MAP fit is a penalized
least-squares problem; the Laplace prior is met by iteratively reweighted ridge (each round
replaces |delta| by delta^2 / |delta_previous|), and the noise scale is re-estimated every round.

Every entity of a panel shares one time grid; each has its own mask (gaps, different
lengths), design, penalties and solve, so the whole panel is one batch of small Cholesky
solves over the Gram matrices X'WX, computed once per batch. One entity is a batch of one: the
per-entity model in the zoo (`engine.models.gpu_additive`) and the panel fit share this code.
Forecasting needs only numpy (`design` runs on numpy arrays and torch tensors alike), so
serving a fitted model does not need torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

import numpy as np

YEAR_DAYS = 365.25
ROUNDS = 6                  # reweighting rounds for the Laplace prior on changepoint deltas
L1_FLOOR = 1e-4             # |delta| floor in the reweighting (scaled units)
INACTIVE = 1e10             # penalty that zeroes a column an entity cannot use (season too long, no regressor)
RIDGE = 1e-8                # keeps the trend's normal equations positive definite
CPU_DESIGN_BYTES = 64 << 20     # design matrices per chunk on a CPU (see _design_budget)


@dataclass(frozen=True)
class Layout:
    """The columns every entity of a batch shares: changepoints, seasons, regressors."""

    changepoints: int = 25
    changepoint_range: float = 0.8
    seasons: tuple[tuple[float, int], ...] = ()      # (period in days, Fourier order)
    regressors: int = 0

    @property
    def width(self) -> int:
        return 2 + self.changepoints + 2 * sum(order for _, order in self.seasons) + self.regressors

    def knots(self) -> np.ndarray:
        return np.linspace(0.0, self.changepoint_range, self.changepoints + 1)[1:]

    def season_columns(self) -> list[tuple[int, int]]:
        """(first column, last column + 1) of each season."""
        spans, start = [], 2 + self.changepoints
        for _, order in self.seasons:
            spans.append((start, start + 2 * order))
            start += 2 * order
        return spans


def layout_for(step_days: float, season_lengths: Sequence[int], hyper: dict[str, Any], regressors: int) -> Layout:
    """The zoo's seasons (like its Prophet: order 4 up to a day, 3 above) plus a yearly one."""
    seasons = [(m * step_days, 4 if m * step_days <= 1 else 3) for m in season_lengths if m > 1]
    if hyper["yearly_order"] > 0 and all(abs(p - YEAR_DAYS) > 1 for p, _ in seasons):
        seasons.append((YEAR_DAYS, int(hyper["yearly_order"])))
    return Layout(int(hyper["n_changepoints"]), float(hyper["changepoint_range"]), tuple(seasons), regressors)


def design(xp, t, first, span, layout: Layout, exog=None):
    """Design matrix (B, T, P) for times `t` (T,) in days; `first`, `span` (B,) per entity.

    `xp` is numpy or torch: forecasting runs on numpy, fitting on torch (any device).
    """
    tau = (t[None, :] - first[:, None]) / span[:, None]                      # (B, T)
    knots = layout.knots()
    knots = xp.asarray(knots, dtype=t.dtype) if xp is np else xp.as_tensor(knots, dtype=t.dtype, device=t.device)
    hinge = tau[:, :, None] - knots[None, None, :]
    columns = [tau[:, :, None] * 0 + 1, tau[:, :, None], hinge * (hinge > 0)]
    waves = []
    for period, order in layout.seasons:
        phase = (t % period) * (2 * math.pi / period)
        for n in range(1, order + 1):
            waves += [xp.sin(n * phase), xp.cos(n * phase)]
    if waves:
        columns.append(xp.broadcast_to(xp.stack(waves, -1)[None], (tau.shape[0], tau.shape[1], len(waves))))
    if layout.regressors:
        columns.append(exog)
    return xp.concatenate(columns, -1)


@dataclass
class PanelFit:
    """Fitted parameters of a batch, one row per entity (numpy, float64)."""

    layout: Layout
    beta: np.ndarray            # (B, P) in scaled units
    y_scale: np.ndarray         # (B,)
    first: np.ndarray           # (B,) days
    span: np.ndarray            # (B,) days
    exog_mean: np.ndarray       # (B, E)
    exog_scale: np.ndarray      # (B, E)
    sigma: np.ndarray           # (B,) residual scale, data units
    observed: np.ndarray        # (B,) observations fitted

    def state(self, i: int) -> dict[str, Any]:
        """Entity i's parameters: everything its forecast needs."""
        return {"layout": {"changepoints": self.layout.changepoints,
                           "changepoint_range": self.layout.changepoint_range,
                           "seasons": [list(s) for s in self.layout.seasons], "regressors": self.layout.regressors},
                "beta": self.beta[i], "y_scale": float(self.y_scale[i]), "first": float(self.first[i]),
                "span": float(self.span[i]), "exog_mean": self.exog_mean[i], "exog_scale": self.exog_scale[i],
                "sigma": float(self.sigma[i]), "observed": int(self.observed[i])}


def layout_from_state(state: dict[str, Any]) -> Layout:
    raw = state["layout"]
    return Layout(int(raw["changepoints"]), float(raw["changepoint_range"]),
                  tuple((float(p), int(o)) for p, o in raw["seasons"]), int(raw["regressors"]))


def fit_batch(t: np.ndarray, y: np.ndarray, layout: Layout, hyper: dict[str, Any], exog: Optional[np.ndarray] = None,
              device=None, max_bytes: Optional[int] = None) -> PanelFit:
    """Fit every row of `y` (B, T; NaN where unobserved) on the shared grid `t` (T,) in days.

    `exog` (B, T, E) are the regressors (NaN where unknown: an entity without any value for a
    regressor does not use it). Runs on `device` (default: CUDA when available) in float64, in
    chunks of entities sized to `max_bytes` of design matrix.
    """
    import torch
    from gpu.device import pick_device

    device = pick_device(device)
    if max_bytes is None:
        max_bytes = _design_budget(device)
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0       # each span ends one step after its last value
    per_entity = len(t) * layout.width * 8 * 4          # design, weighted design, temporaries
    chunk = max(1, int(max_bytes // per_entity))
    parts = [_fit_chunk(torch, t, y[i:i + chunk], layout, hyper, None if exog is None else exog[i:i + chunk], device,
                        step) for i in range(0, len(y), chunk)]
    return PanelFit(layout, *(np.concatenate([getattr(p, f) for p in parts]) for f in
                              ("beta", "y_scale", "first", "span", "exog_mean", "exog_scale", "sigma", "observed")))


def _design_budget(device) -> int:
    import torch
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    # On a CPU the batch pays while its designs stay in cache: about 100 entities of two weeks
    # hourly (benchmarks/gpu_train.py); bigger batches were slower per fit there.
    return CPU_DESIGN_BYTES


def _fit_chunk(torch, t_np, y_np, layout: Layout, hyper, exog_np, device, step: float) -> PanelFit:
    f64 = dict(dtype=torch.float64, device=device)
    t = torch.as_tensor(t_np, **f64)
    y = torch.as_tensor(y_np, **f64)
    mask = torch.isfinite(y)
    observed = mask.sum(1)
    if bool((observed < 2).any()):
        raise ValueError("every entity needs at least 2 observed values")
    big = torch.tensor(float("inf"), **f64)
    first = torch.where(mask, t[None], big).amin(1)
    last = torch.where(mask, t[None], -big).amax(1)
    span = last - first + step
    # Prophet's scaling: y / max|y|, so that its priors mean the same for every entity.
    y_scale = torch.where(mask, y.abs(), torch.zeros_like(y)).amax(1).clamp_min(1e-12)
    ys = torch.where(mask, y / y_scale[:, None], torch.zeros_like(y))
    w = mask.to(torch.float64)

    n_exog = layout.regressors
    if n_exog:
        x = torch.as_tensor(exog_np, **f64)
        known = torch.isfinite(x) & mask[:, :, None]
        count = known.sum(1).clamp_min(1)
        x0 = torch.where(known, x, torch.zeros_like(x))
        mean = x0.sum(1) / count
        sd = torch.sqrt((torch.where(known, x - mean[:, None], torch.zeros_like(x)) ** 2).sum(1) / count)
        scale = torch.where(sd > 0, sd, torch.ones_like(sd))
        xs = torch.where(known, (x - mean[:, None]) / scale[:, None], torch.zeros_like(x))
        usable = (known.sum(1) == observed[:, None]) & (sd > 0)      # known wherever y is, and not constant
    else:
        mean = scale = torch.zeros((len(y), 0), **f64)
        xs, usable = None, torch.zeros((len(y), 0), dtype=torch.bool, device=device)

    if bool(mask.all()):
        gram, rhs = _normal_equations_observed(torch, t, first, span, layout, xs, ys)
    else:
        X = design(torch, t, first, span, layout, xs)                       # (B, T, P)
        Xt = (X * w[:, :, None]).transpose(1, 2)                            # (B, P, T), masked
        gram = torch.bmm(Xt, X)
        rhs = torch.bmm(Xt, ys[:, :, None])[:, :, 0]
        del Xt
    yy = (ys ** 2).sum(1)            # ys is 0 where unobserved

    # Per-entity prior precisions (before the noise variance): which columns are active and how tight.
    K = layout.changepoints
    season_prec = 1.0 / hyper["seasonality_prior_scale"] ** 2
    prior = torch.zeros((len(y), layout.width), **f64)
    for (period, _), (a, b) in zip(layout.seasons, layout.season_columns()):
        need = 2 * (365 if period == YEAR_DAYS else period)      # two cycles (Prophet: two years for yearly)
        prior[:, a:b] = torch.where(span >= need - 1e-9, season_prec, INACTIVE)[:, None]
    if n_exog:
        prior[:, -n_exog:] = torch.where(usable, season_prec, torch.tensor(INACTIVE, **f64))
    prior[:, :2] = RIDGE
    cps = hyper["changepoint_prior_scale"]
    eye = torch.eye(layout.width, **f64)

    def solve(penalty):
        a = gram + penalty[:, :, None] * eye
        chol, info = torch.linalg.cholesky_ex(a)
        failed = info > 0
        if bool(failed.any()):        # rank-deficient design (e.g. a regressor collinear with a season)
            # Only those entities get the jitter: an entity's fit does not depend on its batch.
            jitter = eye * (1e-6 * a.diagonal(dim1=1, dim2=2).mean(1))[:, None, None]
            chol = torch.linalg.cholesky(torch.where(failed[:, None, None], a + jitter, a))
        return torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]

    n = observed.to(torch.float64)
    # Round 0: Gaussian prior on the deltas with the Laplace's variance (2 cps^2), unit noise.
    sigma2 = torch.full((len(y),), 1.0, **f64)
    delta_prec = torch.full((len(y), K), 1.0 / (2 * cps ** 2), **f64)
    for _ in range(ROUNDS):
        penalty = prior * sigma2[:, None]
        penalty[:, 2:2 + K] = delta_prec * sigma2[:, None]
        beta = solve(penalty)
        # RSS from the normal equations' pieces: no pass over the (B, T, P) design per round.
        rss = yy - 2 * (beta * rhs).sum(1) + torch.einsum("bp,bpq,bq->b", beta, gram, beta)
        sigma2 = (rss / n).clamp_min(1e-12)
        # In units of the squared error (the log posterior times 2 sigma^2), the Laplace prior costs
        # 2 sigma^2 |delta| / cps ~ sigma^2 delta^2 / (cps |delta_prev|): a reweighted ridge.
        delta_prec = 1.0 / (cps * beta[:, 2:2 + K].abs().clamp_min(L1_FLOOR))
    sigma = torch.sqrt(sigma2) * y_scale
    as_np = lambda v: v.detach().to("cpu").numpy()   # noqa: E731
    return PanelFit(layout, as_np(beta), as_np(y_scale), as_np(first), as_np(span), as_np(mean), as_np(scale),
                    as_np(sigma), as_np(observed))


def _normal_equations_observed(torch, t, first, span, layout: Layout, xs, ys):
    """X'X and X'y when every entity is observed at every time of the grid (a training window):
    then all share their time scale and every column but the regressors, whose block of X'X is
    computed once for the batch instead of per entity (most of a fit's arithmetic). Each
    entity's products are the same small GEMMs whatever its batch, so its fit is bit for bit
    the one it gets alone."""
    shared = design(torch, t, first[:1], span[:1], replace(layout, regressors=0))[0]     # (T, Q)
    st = shared.T.contiguous()                                                          # (Q, T)
    batch, n_exog = len(ys), layout.regressors
    # y and the regressors side by side, at least two columns: torch computes a one-column
    # product alone (B = 1) by another kernel than in a batch, which rounds differently.
    own = torch.cat([ys[:, :, None], *([xs] if n_exog else []), torch.zeros_like(ys[:, :, None])], 2)
    cross = torch.bmm(st.expand(batch, -1, -1), own)                                    # (B, Q, 2 + E)
    inner = torch.bmm(own.transpose(1, 2), own)                                         # (B, 2 + E, 2 + E)
    gram = (st @ shared).expand(batch, -1, -1)
    rhs = cross[:, :, 0]
    if n_exog:
        sx, xx = cross[:, :, 1:1 + n_exog], inner[:, 1:1 + n_exog, 1:1 + n_exog]
        gram = torch.cat([torch.cat([gram, sx], 2), torch.cat([sx.transpose(1, 2), xx], 2)], 1)
        rhs = torch.cat([rhs, inner[:, 1:1 + n_exog, 0]], 1)
    return gram.contiguous(), rhs


def forecast(state: dict[str, Any], t: np.ndarray, exog: Optional[np.ndarray] = None) -> np.ndarray:
    """One entity's mean forecast at times `t` (days); `exog` (T, E) its regressors there."""
    return forecast_panel([state], t, None if exog is None else np.asarray(exog)[None])[0]


def forecast_panel(states: list[dict[str, Any]], t: np.ndarray, exog: Optional[np.ndarray] = None) -> np.ndarray:
    """The mean forecasts of entities with one layout at the same times `t` (days): (B, T); `exog`
    (B, T, E) their regressors there. The design is built once for all of them, then each row gets
    its own matrix-vector product, so a row is what the entity alone gets (`forecast`, the one-row
    case), bit for bit."""
    layout = layout_from_state(states[0])
    xs = None
    if layout.regressors:
        mean = np.stack([np.asarray(s["exog_mean"], dtype="float64") for s in states])[:, None, :]
        scale = np.stack([np.asarray(s["exog_scale"], dtype="float64") for s in states])[:, None, :]
        xs = (np.asarray(exog, dtype="float64") - mean) / scale
    X = design(np, np.asarray(t, dtype="float64"), np.array([s["first"] for s in states], dtype="float64"),
               np.array([s["span"] for s in states], dtype="float64"), layout, xs)
    return np.stack([X[i] @ np.asarray(s["beta"], dtype="float64") * s["y_scale"] for i, s in enumerate(states)])


def days(ds) -> np.ndarray:
    """Timestamps as days since the epoch (float64), the time axis of the design; naive ones are UTC."""
    import pandas as pd
    if isinstance(ds, pd.DatetimeIndex):
        index = ds                              # a forecast's hot path: nothing to convert
    elif pd.api.types.is_datetime64_any_dtype(ds):
        index = pd.DatetimeIndex(ds)            # already instants: no parsing (a fit's hot path)
    else:
        index = pd.DatetimeIndex(pd.to_datetime(ds, utc=True))
    return index.as_unit("ns").asi8 / 86400e9
