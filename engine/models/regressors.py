"""The regressor values a model was fitted on, so that serving refuses values unlike any it saw.

A fitted model records, per exogenous column, the range of its history. At serving time a flag
(every fitted value 0 or 1, such as `is_holiday`) must stay 0 or 1; a measurement (temperature)
may leave its range by up to one scale of it (the largest of its span and its bounds' sizes),
which admits any season's weather but not a value in the wrong unit, nor one column's values
sent in another's place (MLflow maps unnamed columns by the signature's order).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Seen:
    """The values one regressor took in a model's history."""

    low: float
    high: float
    flag: bool          # only 0 and 1

    def to_list(self) -> list:
        return [self.low, self.high, self.flag]

    @classmethod
    def from_list(cls, values: list) -> "Seen":
        low, high, flag = values
        return cls(float(low), float(high), bool(flag))

    def unlike(self, values: np.ndarray) -> np.ndarray:
        """Which of `values` are unlike the fitted ones (a boolean mask)."""
        if self.flag:
            return (values != 0) & (values != 1)
        margin = max(self.high - self.low, abs(self.low), abs(self.high))
        return (values < self.low - margin) | (values > self.high + margin)

    def describe(self) -> str:
        if self.flag:
            return "only 0 and 1 (a flag)"
        return f"values from {self.low:g} to {self.high:g}"


def seen_in(history: pd.DataFrame, columns: Iterable[str]) -> dict[str, Seen]:
    """What each of `columns` took in `history` (columns without a value are left out)."""
    return seen_of({column: history[column].to_numpy(dtype="float64") for column in columns})


def seen_of(columns: Mapping[str, np.ndarray]) -> dict[str, Seen]:
    """`seen_in` of columns given as arrays (`seen_rows`' one-row case)."""
    return seen_rows({column: np.asarray(values, dtype="float64")[None] for column, values in columns.items()}, 1)[0]


def seen_rows(columns: Mapping[str, np.ndarray], rows: int) -> list[dict[str, Seen]]:
    """`seen_of` of each of `rows` rows of (rows, T) arrays by column, in one pass (a panel's fits)."""
    out: list[dict[str, Seen]] = [{} for _ in range(rows)]
    for column, values in columns.items():
        if not values.shape[1]:
            continue
        finite = np.isfinite(values)
        low = np.where(finite, values, np.inf).min(axis=1)
        high = np.where(finite, values, -np.inf).max(axis=1)
        flag = ((values == 0.0) | (values == 1.0) | ~finite).all(axis=1)      # only 0s and 1s where finite
        for i in np.flatnonzero(finite.any(axis=1)):
            out[i][column] = Seen(float(low[i]), float(high[i]), bool(flag[i]))
    return out


def merged(parts: Iterable[Mapping[str, Seen]]) -> dict[str, Seen]:
    """The values any of `parts` saw (an ensemble's members)."""
    out: dict[str, Seen] = {}
    for part in parts:
        for column, seen in part.items():
            known = out.get(column)
            out[column] = seen if known is None else Seen(min(known.low, seen.low), max(known.high, seen.high),
                                                          known.flag and seen.flag)
    return out


def to_state(seen: Mapping[str, Seen]) -> dict[str, list]:
    return {column: s.to_list() for column, s in seen.items()}


def from_state(state: Optional[Mapping[str, list]]) -> dict[str, Seen]:
    """Models stored before ranges were recorded have none: nothing is checked for them."""
    return {column: Seen.from_list(values) for column, values in (state or {}).items()}
