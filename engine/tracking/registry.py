"""The registry gate: a new routing model version is the `challenger`; it becomes the `champion`
only when its aggregate backtest metric is not worse than the champion's by more than the
configured tolerance (the first version is promoted). Every metric here is lower-is-better.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

CHAMPION, CHALLENGER = "champion", "challenger"
METRIC_TAG = "manymodels.aggregate.{metric}"
BACKTEST_TAG = "manymodels.backtest"     # the windows a version's figure was measured on


@dataclass(frozen=True)
class GateDecision:
    version: str
    promoted: bool
    metric: str
    challenger_value: float
    champion_version: Optional[str]
    champion_value: Optional[float]
    tolerance: float
    reason: str

    def describe(self) -> str:
        verdict = "promoted to champion" if self.promoted else "kept as challenger"
        return f"version {self.version} {verdict}: {self.reason}"


def gate(client: MlflowClient, name: str, version: str, metric: str, value: float, tolerance: float,
         backtest: str = "") -> GateDecision:
    """Tag `version` with its figure, alias it `challenger`, and promote it if it passes. `backtest`
    names the windows the figure was measured on: a champion measured on other windows (another
    `backtest` config) has no figure to compare with, so the new version is promoted."""
    client.set_model_version_tag(name, version, METRIC_TAG.format(metric=metric), repr(value))
    client.set_model_version_tag(name, version, "manymodels.metric", metric)
    client.set_model_version_tag(name, version, BACKTEST_TAG, backtest)
    client.set_registered_model_alias(name, CHALLENGER, version)
    current = _champion(client, name)
    if current is not None and str(current.version) == str(version):
        # A crashed attempt moved the alias and died before recording why: it stays.
        decision = GateDecision(version, True, metric, value, None, None, tolerance, "already champion")
    elif current is None:
        decision = GateDecision(version, True, metric, value, None, None, tolerance, "first version")
    elif isinstance(current, _UnfinishedChampion):
        decision = GateDecision(version, True, metric, value, str(current.version), None, tolerance,
                                f"champion version {current.version} comes from a run that never finished")
    else:
        figure = current.tags.get(METRIC_TAG.format(metric=metric))
        measured_on = current.tags.get(BACKTEST_TAG, "")
        if figure is None:
            decision = GateDecision(version, True, metric, value, str(current.version), None, tolerance,
                                    f"champion version {current.version} has no {metric} figure to compare with")
        elif measured_on != backtest:
            decision = GateDecision(version, True, metric, value, str(current.version), None, tolerance,
                                    f"champion version {current.version} was measured on other backtest windows "
                                    f"({measured_on or 'not recorded'}; now {backtest or 'not recorded'}): "
                                    "no like-for-like figure to compare with")
        else:
            best = float(figure)
            limit = best * (1 + tolerance) if best >= 0 else best * (1 - tolerance)
            passed = value <= limit
            decision = GateDecision(
                version, passed, metric, value, str(current.version), best, tolerance,
                f"{metric} {value:.4f} vs champion v{current.version} {best:.4f} "
                f"({'within' if passed else 'beyond'} the {tolerance:.1%} tolerance)")
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "manymodels.gate", "promoted" if decision.promoted else "rejected")
    return decision


def _champion(client: MlflowClient, name: str):
    """The champion version, if its run finished: a version whose run never finished (a crashed
    attempt) is no yardstick, so the gate compares only with finished runs."""
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    if version.run_id:
        try:
            if client.get_run(version.run_id).info.status != "FINISHED":
                return _UnfinishedChampion(version)
        except MlflowException:
            return _UnfinishedChampion(version)
    return version


@dataclass(frozen=True)
class _UnfinishedChampion:
    """A champion whose run did not finish."""

    version_info: object

    @property
    def version(self) -> str:
        return self.version_info.version
