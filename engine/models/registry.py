"""The model registry: every `ForecastModel` subclass defined in a module of `engine/models`, by name.

Adding a model is one new module here (a class with a `name` and its declarations, see
`ForecastModel`) plus its tests: config validation, `make_model`, the partition planner's cost
estimates and docs/models.md all read the declarations from this registry.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping, Optional, Sequence

from engine.models.base import ForecastModel, ModelError, ModelSpec, read_envelope

_NOT_MODELS = {"__main__", "base", "nixtla", "registry", "regressors", "space"}


def _discover() -> dict[str, type[ForecastModel]]:
    import engine.models as package
    found: dict[str, type[ForecastModel]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in _NOT_MODELS:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, ForecastModel) and value.__module__ == module.__name__
                    and "name" in vars(value)):
                if value.name in found:
                    raise ModelError(f"model name {value.name!r} is declared twice: {found[value.name]} and {value}")
                found[value.name] = value
    # Cheapest first, combinations last: the order of error messages and of docs/models.md.
    return dict(sorted(found.items(), key=lambda item: (item[1].combines_candidates, typical_cost(item[1]), item[0])))


def typical_cost(cls: type[ForecastModel], rows: int = 1000) -> float:
    """Declared seconds of one fit and forecast on `rows` history rows."""
    fixed, per_krow = cls.cost
    return fixed + per_krow * rows / 1000.0


MODEL_CLASSES: dict[str, type[ForecastModel]] = _discover()
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_CLASSES)
FALLBACK_MODEL = "seasonal_naive"


def model_class(name: str) -> type[ForecastModel]:
    try:
        return MODEL_CLASSES[name]
    except KeyError:
        raise ModelError(f"Unknown model: {name!r}; known: {', '.join(MODEL_CLASSES)}") from None


def make_model(name: str, spec: ModelSpec, params: Optional[Mapping[str, Any]] = None,
               trained: Optional[Mapping[str, Mapping[str, Any]]] = None) -> ForecastModel:
    """A fresh, unfitted model by name, with hyperparameters `params` (declared defaults for the rest).
    `trained`: networks trained on the whole panel before the per-entity fits, by model name."""
    cls = model_class(name)
    if cls.combines_candidates:
        raise ModelError(f"{name} is built from backtested members: use {cls.__name__}(spec, members, make_model)")
    if cls.needs_trained_network:
        return cls(spec, params, (trained or {}).get(name))
    return cls(spec, params)


# Classes kept for models stored by an earlier implementation: (name, implementation) -> class.
READERS: dict[tuple[str, int], type[ForecastModel]] = {cls.reads: cls for cls in MODEL_CLASSES.values() if cls.reads}


def stored_class(name: str, implementation: int) -> type[ForecastModel]:
    """The class that reads a model stored as `name` by `implementation` of it."""
    cls = MODEL_CLASSES.get(name)
    if cls is None:
        raise ModelError(f"serialized model {name!r} is not known to this manymodels version")
    if cls.implementation == implementation:
        return cls
    reader = READERS.get((name, implementation))
    if reader is None:
        raise ModelError(f"serialized {name} model was fitted by implementation {implementation}, which this "
                         f"manymodels cannot read (it fits implementation {cls.implementation}); retrain "
                         "(manymodels train) to refit it")
    return reader


def load_model(blob: bytes) -> ForecastModel:
    """A fitted model back from `ForecastModel.to_bytes()`, also one stored by an earlier
    implementation of its model (envelopes before `implementation` existed are implementation 1)."""
    envelope = read_envelope(blob)
    cls = stored_class(envelope["model"], envelope.get("implementation", 1))
    return cls.restore(ModelSpec.from_dict(envelope["spec"]), envelope["exogenous"], envelope["state"],
                       envelope.get("hyper"),   # models written before hyperparameters existed: defaults
                       envelope.get("seen"),    # and before regressor ranges: none to check
                       envelope.get("floor"),   # and before nonnegative series: not clipped, as fitted
                       envelope.get("adjustment"),    # and before hierarchies: not reconciled
                       envelope.get("intervals"))     # and before conformal bands: the model's own


def serving_requirements(envelope: Mapping[str, Any]) -> set[str]:
    """The distributions the model stored in `envelope` needs to forecast (an ensemble's: its members')."""
    cls = stored_class(envelope["model"], envelope.get("implementation", 1))
    if cls.combines_candidates:
        return set().union(*(serving_requirements(m) for m in envelope["state"]["members"]))
    return set(cls.serves_with)


def model_costs(names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """The declared cost of each model in `names`, for partitions.plan (which knows no models)."""
    return {name: model_class(name).cost for name in names}


def model_table() -> str:
    """docs/models.md's table, from the declarations (tests check the file matches)."""
    lines = ["| model | what it is | needs | tunable | cost (s per fit, 1,000 rows) |", "|---|---|---|---|---|"]
    for name, cls in MODEL_CLASSES.items():
        needs = [*(f"`{c}` in source.exogenous" for c in cls.needs_exogenous),
                 *(["a season length > 1"] if cls.needs_season else []),
                 *(["torch (gpu extra)"] if cls.needs_torch else []),
                 *(["a network trained on the panel"] if cls.needs_trained_network else []),
                 *(["two other candidates"] if cls.combines_candidates else []),
                 *(["sub-daily series.freq"] if cls.needs_sub_daily else []),
                 *(["years of history (training.long_history)"] if cls.long_history else [])]
        lines.append(f"| `{name}` | {cls.summary} | {'; '.join(needs) or '-'} | "
                     f"{', '.join(cls.hyperparameters) or '-'} | {typical_cost(cls):.3g} |")
    return "\n".join(lines) + "\n"


TABLE_START = "<!-- model table: python -m engine.models --write docs/models.md -->"
TABLE_END = "<!-- end of model table -->"


def with_model_table(text: str) -> str:
    """`text` (docs/models.md) with the table between its markers replaced by `model_table()`."""
    head, found, rest = text.partition(TABLE_START)
    _, found_end, tail = rest.partition(TABLE_END)
    if not (found and found_end):
        raise ValueError(f"no {TABLE_START} ... {TABLE_END} markers to put the model table between")
    return f"{head}{TABLE_START}\n{model_table()}{TABLE_END}{tail}"
