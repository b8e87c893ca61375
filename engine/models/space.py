"""Search spaces: one distribution per model hyperparameter, written in YAML, checked against
what each model declares (`ForecastModel.hyperparameters`).

    tuning:
      space:
        prophet:
          changepoint_prior_scale: {loguniform: [0.001, 0.5]}
          seasonality_mode: {choice: [additive, multiplicative]}
        arima: {max_p: {int: [1, 5]}}

A model listed with parameters searches exactly those (the rest stay at their configured
values); a model that is tuned but not listed searches every parameter over its declared range.
Plain data only here: the hyperopt expressions are built where the search runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from engine.models import MODEL_CLASSES, Hyperparameter

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: `kind` is one of DISTRIBUTIONS."""

    name: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    choices: tuple = ()

    def expression(self, label: str):
        """The hyperopt expression (hyperopt is imported only where a search runs)."""
        from hyperopt import hp
        from hyperopt.pyll import scope
        if self.kind == "choice":
            return hp.choice(label, list(self.choices))
        if self.kind == "loguniform":
            return hp.loguniform(label, math.log(self.low), math.log(self.high))
        if self.kind == "int":   # every integer in [low, high] equally likely, ordered for TPE
            return scope.int(hp.quniform(label, self.low - 0.499, self.high + 0.499, 1))
        return hp.uniform(label, self.low, self.high)

    def encode(self, value: Any) -> Any:
        """`value` as hyperopt stores it in a trial (choices by index), for points_to_evaluate."""
        return self.choices.index(value) if self.kind == "choice" else value

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice[{', '.join(map(str, self.choices))}]"
        return f"{self.kind}[{self.low:g}, {self.high:g}]"


def declared(hyper: Hyperparameter, name: str) -> Dimension:
    """The full declared range of a hyperparameter as a dimension."""
    if hyper.choices:
        return Dimension(name, "choice", choices=tuple(hyper.choices))
    kind = "int" if hyper.integer else "loguniform" if hyper.log else "uniform"
    return Dimension(name, kind, float(hyper.low), float(hyper.high))


def parse_dimension(hyper: Hyperparameter, name: str, value: Any) -> Dimension:
    """A dimension from its YAML form, e.g. ``{loguniform: [0.001, 0.5]}``; ValueError if invalid."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ValueError(f"must be one distribution such as {{uniform: [low, high]}}, "
                         f"{{loguniform: [low, high]}}, {{int: [low, high]}} or {{choice: [a, b]}}; got {value!r}")
    (kind, args), = value.items()
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"has unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
    if not isinstance(args, list) or not args:
        raise ValueError(f"{kind} needs a list, e.g. {kind}: [a, b]")
    if kind == "choice":
        if not hyper.choices:
            raise ValueError(f"is numeric ({hyper.describe()}): use uniform, loguniform or int")
        return Dimension(name, "choice", choices=tuple(hyper.check(v) for v in args))
    if hyper.choices:
        raise ValueError(f"is categorical ({hyper.describe()}): use choice")
    if len(args) != 2:
        raise ValueError(f"{kind} needs [low, high], got {args!r}")
    low, high = (hyper.check(v) for v in args)
    if kind == "int" and not hyper.integer:
        raise ValueError("is not an integer setting: use uniform or loguniform")
    if kind != "int" and hyper.integer:
        raise ValueError("is an integer setting: use int")
    if not low < high:
        raise ValueError(f"needs low < high, got {args!r}")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"loguniform needs low > 0, got {low}")
    return Dimension(name, kind, float(low), float(high))


def model_space(model: str, given: Optional[Mapping[str, Any]]) -> tuple[Dimension, ...]:
    """The dimensions searched for `model`: those `given` (YAML), else every declared one.
    Raises ValueError naming the parameter when something is wrong."""
    cls = MODEL_CLASSES[model]
    if not cls.hyperparameters:
        raise ValueError(f"model {model} has no hyperparameters to tune")
    if not given:
        return tuple(declared(h, n) for n, h in cls.hyperparameters.items())
    dims = []
    for name, value in given.items():
        if name not in cls.hyperparameters:
            raise ValueError(f"{name}: {model} has no such hyperparameter; it has: {', '.join(cls.hyperparameters)}")
        try:
            dims.append(parse_dimension(cls.hyperparameters[name], name, value))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return tuple(dims)


def hyperopt_space(dims: tuple[Dimension, ...]) -> dict:
    return {d.name: d.expression(d.name) for d in dims}


def point_params(dims: tuple[Dimension, ...], point: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's sampled values as model parameters (plain Python numbers and strings)."""
    out = {}
    for d in dims:
        value = point[d.name]
        out[d.name] = int(value) if d.kind == "int" else value if d.kind == "choice" else float(value)
    return out


def tunable(models, ensemble: bool = False) -> list[str]:
    """The models with hyperparameters; the ensemble only when asked for (each of its trials
    backtests every candidate, and it is no candidate of the per-entity search)."""
    return [m for m in models if (ensemble or m != "ensemble") and MODEL_CLASSES[m].hyperparameters]
