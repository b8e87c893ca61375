"""Entities that add up (feeders -> substations -> zones -> system), and forecasts made to add up.

A hierarchy is declared as parents and their children (`hierarchy.parents`: zone 21 = zones
1..20). `Tree` checks it and gives each connected tree's summing matrix S (aggregate nodes
first, top down, then the bottom nodes: the order hierarchicalforecast expects). `reconcile`
takes one tree's base forecasts (each entity's champion, trained on its own) and the champions'
backtest forecasts, scores every reconciliation method of Nixtla's hierarchicalforecast on those
backtests for the tree as a whole, and returns the best method's coherent forecast: the children
of every parent sum to it exactly. Pure numpy in, numpy out: no Spark, MLflow or files.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from engine.errors import ConfigError

# The methods, in the order ties go: bottom-up, top-down by forecast proportions, MinT with OLS
# weights and with the shrunk covariance of the backtest errors, and ERM (regularized towards
# bottom-up, fitted on the backtest errors).
RECONCILERS = ("bottom_up", "top_down", "ols", "mint_shrink", "erm")
# Methods that solve with node x node matrices (MinT, ERM) are left out of larger trees: their
# memory grows with the square of the nodes (20,000 feeders: gigabytes). Bottom-up and top-down scale.
DENSE = ("ols", "mint_shrink", "erm")
MAX_DENSE_NODES = 2000


class Unfit(ValueError):
    """A method's reconciliation the engine will not publish (not finite, below zero for load)."""


class HierarchyError(ConfigError):
    """The declared hierarchy cannot be: a cycle, a child under two parents, an unknown entity."""


class Tree:
    """`parents`: each parent entity and the entities that sum to it."""

    def __init__(self, parents: Mapping[str, Sequence[str]]):
        self.children = {str(p): [str(c) for c in kids] for p, kids in parents.items()}
        self.parent_of: dict[str, str] = {}
        for parent, kids in self.children.items():
            if not kids:
                raise HierarchyError(f"{parent!r} lists no children")
            for child in kids:
                if child == parent:
                    raise HierarchyError(f"{parent!r} lists itself as its own child")
                if child in self.parent_of:
                    raise HierarchyError(f"{child!r} is listed under two parents, {self.parent_of[child]!r} and "
                                         f"{parent!r}; each entity adds up into one parent")
                self.parent_of[child] = parent
        for node in self.parent_of:
            path = [node]
            while path[-1] in self.parent_of:
                up = self.parent_of[path[-1]]
                if up in path:
                    cycle = path[path.index(up):] + [up]
                    raise HierarchyError(f"has a cycle: {' -> '.join(cycle)} (child -> parent); "
                                         "a parent cannot be under its own child")
                path.append(up)
        self.nodes = sorted(set(self.children) | set(self.parent_of))

    def __bool__(self) -> bool:
        return bool(self.children)

    def roots(self) -> list[str]:
        return sorted(p for p in self.children if p not in self.parent_of)

    def summing(self, root: str) -> "Summing":
        """The tree under `root`: node order, S, and the nodes of each depth (hierarchicalforecast's tags)."""
        levels, frontier = [], [root]
        while frontier:
            levels.append(frontier)
            frontier = [c for node in frontier for c in self.children.get(node, [])]
        nodes = [n for level in levels for n in level]
        bottom = [n for n in nodes if n not in self.children]
        order = [n for n in nodes if n in self.children] + bottom
        column = {b: j for j, b in enumerate(bottom)}
        S = np.zeros((len(order), len(bottom)))
        for i, node in enumerate(order):
            for leaf in self.leaves(node):
                S[i, column[leaf]] = 1.0
        index = {n: i for i, n in enumerate(order)}
        tags = {f"depth_{d}": np.array([index[n] for n in level]) for d, level in enumerate(levels)}
        return Summing(order, S, tags)

    def leaves(self, node: str) -> list[str]:
        kids = self.children.get(node)
        return [node] if not kids else [leaf for kid in kids for leaf in self.leaves(kid)]


@dataclass(frozen=True)
class Summing:
    nodes: list[str]            # aggregates top down, then the bottom nodes
    S: np.ndarray               # (nodes, bottom): which bottom nodes each node sums
    tags: dict[str, np.ndarray]     # node indices per depth


@dataclass(frozen=True)
class Backtest:
    """The nodes' champion forecasts and actuals on one backtest window, rows in `Summing.nodes` order."""

    forecast: np.ndarray        # (nodes, steps)
    actual: np.ndarray          # (nodes, steps)


@dataclass
class Reconciled:
    method: str
    mean: np.ndarray                                    # (nodes, horizon), coherent
    scores: dict[str, float] = field(default_factory=dict)    # backtest error relative to the base forecasts
    failures: dict[str, str] = field(default_factory=dict)    # methods that could not reconcile, and why
    note: Optional[str] = None
    held_out: list[np.ndarray] = field(default_factory=list)   # the method's mean of each backtest window, as scored


def reconcile(summing: Summing, base: np.ndarray, backtests: Sequence[Backtest], methods: Sequence[str],
              nonnegative: bool) -> Reconciled:
    """The best of `methods` by backtest, applied to the base forecasts `base` (nodes x horizon).

    Each method reconciles every backtest window (fitted, where it needs errors, on the other
    windows' errors) and is scored by each node's RMSE relative to that node's base forecast,
    averaged over nodes and windows: below 1 is better than forecasting each entity alone. With
    `nonnegative`, a method that leaves any value below zero is out (MinT solves for nonnegative
    bottom values instead)."""
    scores, failures, held_out = {}, {}, {}
    for method in methods:
        if method in DENSE and len(summing.nodes) > MAX_DENSE_NODES:
            failures[method] = (f"the tree has {len(summing.nodes):,} entities; "
                                f"{method} is used up to {MAX_DENSE_NODES:,}")
            continue
        if not backtests:
            failures[method] = "no backtest window to score it on"
            continue
        if _needs_errors(method) and len(backtests) < 2:
            failures[method] = "needs at least two backtest windows"
            continue
        try:
            ratios, means = [], []
            for w, window in enumerate(backtests):
                others = [b for i, b in enumerate(backtests) if i != w]
                means.append(_apply(method, summing, window.forecast, others, nonnegative))
                ratios.append(_relative_rmse(means[-1], window.forecast, window.actual))
            scores[method], held_out[method] = float(np.mean(ratios)), means
        except Unfit as exc:
            failures[method] = str(exc)
        except Exception as exc:  # noqa: BLE001 - one method failing leaves the others
            failures[method] = f"{type(exc).__name__}: {exc}"
    chosen = min(scores, key=lambda m: (scores[m], methods.index(m))) if scores else "bottom_up"
    note = None if scores else "no backtest window common to every entity of the tree: bottom_up, unscored"
    return Reconciled(chosen, _apply(chosen, summing, base, backtests, nonnegative), scores, failures, note,
                      held_out.get(chosen, []))


def incoherence(summing: Summing, backtests: Sequence[Backtest]) -> dict[str, float]:
    """How far each aggregate node's actuals in the backtest windows are from the sum of the bottom
    nodes under it: the mean absolute gap over the node's mean absolute value (hours any node lacks
    left out). Load that adds up gives 0; a parent that also meters losses or loads its children do
    not gives their share. Empty without a window to measure on."""
    aggregates = len(summing.nodes) - summing.S.shape[1]
    if not backtests or not aggregates:
        return {}
    actual = np.hstack([b.actual for b in backtests])
    actual = actual[:, np.isfinite(actual).all(axis=0)]
    if not actual.shape[1]:
        return {}
    gap = np.abs(actual[:aggregates] - summing.S[:aggregates] @ actual[aggregates:]).mean(axis=1)
    scale = np.abs(actual[:aggregates]).mean(axis=1)
    ratio = np.divide(gap, scale, out=np.where(gap > 0, np.inf, 0.0), where=scale > 0)
    return dict(zip(summing.nodes[:aggregates], ratio.tolist()))


def _needs_errors(method: str) -> bool:
    return method in ("mint_shrink", "erm")


def _apply(method: str, summing: Summing, y_hat: np.ndarray, fitted_on: Sequence[Backtest],
           nonnegative: bool) -> np.ndarray:
    from hierarchicalforecast.methods import ERM, BottomUp, MinTrace, TopDown
    reconcilers: dict[str, Callable[[], object]] = {
        "bottom_up": BottomUp, "top_down": lambda: TopDown(method="forecast_proportions"),
        "ols": lambda: MinTrace(method="ols", nonnegative=nonnegative),
        "mint_shrink": lambda: MinTrace(method="mint_shrink", nonnegative=nonnegative),
        "erm": lambda: ERM(method="reg_bu")}
    kwargs = {}
    if _needs_errors(method):
        kwargs = {"y_insample": np.hstack([b.actual for b in fitted_on]),
                  "y_hat_insample": np.hstack([b.forecast for b in fitted_on])}
    base = np.maximum(y_hat, 0.0) if nonnegative else y_hat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # "Replacing negative forecasts with zero" and solver chatter
        mean = reconcilers[method]().fit_predict(S=summing.S, y_hat=base, tags=summing.tags, **kwargs)["mean"]
    mean = np.asarray(mean, dtype="float64")
    if not np.isfinite(mean).all():
        raise Unfit("gave non-finite values")
    if nonnegative and (mean < -1e-6 * max(1.0, float(np.abs(mean).max()))).any():
        raise Unfit("gave values below zero for a nonnegative hierarchy")
    # Exactly coherent, rounding included: every node rebuilt from the bottom nodes.
    bottom = mean[-summing.S.shape[1]:]
    return summing.S @ (np.maximum(bottom, 0.0) if nonnegative else bottom)


def _relative_rmse(mean: np.ndarray, base: np.ndarray, actual: np.ndarray) -> float:
    rmse = np.sqrt(np.mean((mean - actual) ** 2, axis=1))
    base_rmse = np.sqrt(np.mean((base - actual) ** 2, axis=1))
    return float(np.mean(np.divide(rmse, base_rmse, out=np.ones_like(rmse), where=base_rmse > 0)))
