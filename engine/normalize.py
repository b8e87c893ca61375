"""How entity ids and epoch timestamps are read, the same at ingest, training and serving.

An id is what a person typed: surrounding whitespace is dropped and Unicode is put in NFC form,
so ``"zone_1 "`` and ``"zone_1"``, or an accented name typed with a combining accent and with a
precomposed one, are one entity everywhere (silver, gold, MLflow, the routing model).

A number used as a timestamp is a Unix epoch. Its unit is told apart by magnitude, which is
unambiguous for every date from 1973 to 5138: below 1e11 seconds, below 1e14 milliseconds,
below 1e17 microseconds, else nanoseconds (what pandas alone would assume for any integer).
"""
from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd

_UNITS = ((1e11, "s"), (1e14, "ms"), (1e17, "us"))


def entity_ids(values: pd.Series) -> pd.Series:
    """Ids as normalized strings (missing values stay missing). Each distinct value is cleaned
    once: a batch has millions of rows but only as many ids as entities."""
    codes, uniques = pd.factorize(values)
    cleaned = pd.Series(uniques, dtype=object).astype("string").str.strip()
    cleaned = cleaned.map(lambda v: unicodedata.normalize("NFC", v), na_action="ignore")
    table = np.append(cleaned.to_numpy(dtype=object, na_value=pd.NA), pd.NA)     # code -1 (missing) -> NA
    return pd.Series(table[codes], index=values.index, dtype=object)


def entity_id(value: object) -> str:
    return unicodedata.normalize("NFC", str(value).strip())


def epoch_unit(values: np.ndarray) -> str:
    """The epoch unit of these numbers, by the magnitude of the largest."""
    top = float(np.nanmax(np.abs(values))) if len(values) and not np.isnan(values).all() else 0.0
    return next((unit for limit, unit in _UNITS if top < limit), "ns")


def from_epoch(values: pd.Series) -> pd.Series:
    """UTC timestamps from epoch numbers in the unit their magnitude says."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    unit = epoch_unit(numbers.to_numpy())
    return pd.to_datetime(numbers, unit=unit, utc=True)
