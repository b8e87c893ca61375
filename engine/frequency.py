"""Series frequencies: the grid that silver, gold, backtests, forecasts and the routing model share.

Sub-daily, daily and weekly steps have a fixed length; months, quarters and years do not, so
steps are counted on the calendar (`ds + k steps` is the k-th month after `ds`, not k*30 days).
Timestamps are UTC throughout; for daily and longer steps a stamp names a calendar date, and
`normalize` puts local midnights (which move by an hour across DST) and month-, quarter- or
year-end stamps where the configured frequency expects them.

`frequency(name)` is the one way to get a `Frequency`; config spellings are case-insensitive
(`h`, `15min`, `w-mon`, `ms`, `qe`, ...) and each maps to one pandas alias (`MS`, `QE-DEC`, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Optional

import numpy as np
import pandas as pd

_DAY = pd.Timedelta(days=1)
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Frequency:
    """One supported frequency: its pandas alias, what a person calls it, and its defaults."""

    alias: str                    # pandas offset alias ("h", "15min", "W-SUN", "MS", "QE-DEC", "YS-JAN")
    label: str                    # "hourly", "monthly (month start)"
    months: int = 0               # calendar steps: months per step (1, 3, 12); 0 for fixed steps
    at_end: bool = False          # calendar steps stamped at the period's last day (ME, QE, YE)
    # Defaults when a config does not give the key (see engine.config). Season lengths are the
    # natural cycles of energy series at this step: a day and a week, a week, a year.
    seasons: tuple[int, ...] = ()
    horizon: int = 1
    max_history: int = 0
    long_history: int = 0
    outlier_window: int = 0
    max_fill_gap: int = 0
    # Candidates and selection. Monthly and longer series are short (a few backtest windows), where
    # the mean of the two best candidates beats picking one (benchmarks/m1_accuracy.py, M1).
    models: tuple[str, ...] = ("seasonal_naive", "ets", "theta")
    select: str = "best"
    ensemble_size: int = 3

    @cached_property
    def offset(self) -> pd.DateOffset:
        return pd.tseries.frequencies.to_offset(self.alias)

    @property
    def fixed(self) -> Optional[pd.Timedelta]:
        """The step's length when it has one (up to weekly), else None."""
        if self.months:
            return None
        return pd.Timedelta(days=7) if self.alias.startswith("W-") else pd.Timedelta(self.offset)

    @property
    def sub_daily(self) -> bool:
        return self.fixed is not None and self.fixed < _DAY

    @property
    def step_days(self) -> float:
        """One step in days (a month's mean length for calendar steps): for models that need a scale."""
        return self.months * 365.2425 / 12 if self.months else self.fixed / _DAY

    @property
    def cycles(self) -> tuple[int, ...]:
        """Season lengths (in steps) that span a natural cycle: a day, a week, a year."""
        if self.months:
            return (12 // self.months,) if self.months < 12 else ()
        days = (1.0, 7.0, 364.0, 365.0, 365.25, 366.0)
        step = self.step_days
        return tuple(sorted({round(d / step) for d in days if d >= step * 2
                             and abs(round(d / step) * step - d) < 1e-9}))

    @property
    def year_steps(self) -> int:
        """Steps in a year: 52 weeks at weekly and shorter steps (a stamp a year back falls on the
        same weekday and hour), 12 months otherwise."""
        return 12 // self.months if self.months else round(364 * _DAY / self.fixed)

    def add(self, ds, steps: int):
        """`ds` (a timestamp or a column of them) moved `steps` grid steps (negative: back)."""
        return ds + steps * self.offset

    def after(self, origin: pd.Timestamp, periods: int) -> pd.DatetimeIndex:
        """The `periods` grid stamps after `origin`."""
        return pd.date_range(origin + self.offset, periods=periods, freq=self.offset)

    def grid(self, first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
        return pd.date_range(first, last, freq=self.offset, name="ds")

    @cached_property
    def _step_ns(self) -> int:
        """A fixed step's length in nanoseconds (0 for calendar steps)."""
        return 0 if self.months else self.fixed.value

    def on_grid(self, ds) -> np.ndarray:
        """Which stamps lie on this frequency's grid (UTC stamps, or nanoseconds since 1970)."""
        ns = _utc_nanoseconds(ds)
        if ns is not None and self._step_ns:
            # Fixed steps: arithmetic on the epoch (a Thursday), what floor() does, without pandas.
            ok = (ns % min(self._step_ns, DAY_NS) == 0) & (ns != NAT)
            if self._step_ns > DAY_NS:
                ok &= (ns // DAY_NS + 3) % 7 == self.offset.weekday
            return ok
        ds = pd.DatetimeIndex(ds)
        if not self.months and self.fixed < _DAY:
            return np.asarray(ds == ds.floor(self.alias))
        ok = np.asarray(ds == ds.floor("D"))
        if not self.months:
            if self.fixed == _DAY:
                return ok
            return ok & (np.asarray(ds.dayofweek) == self.offset.weekday)
        day_ok = np.asarray(ds.is_month_end if self.at_end else ds.day == 1)
        # Calendar quarters and years only: QE ends them in Mar/Jun/Sep/Dec, QS starts them in Jan/Apr/Jul/Oct.
        first_month = self.months if self.at_end else 1
        return ok & day_ok & ((np.asarray(ds.month) - first_month) % self.months == 0)

    def steps(self, origin: "pd.Timestamp | pd.DatetimeIndex", ds) -> np.ndarray:
        """Whole grid steps from `origin` (one, or one per stamp) to each stamp (for stamps on the grid).
        Both may also be given as nanoseconds since 1970 (UTC)."""
        if self.months:
            origin, ds = as_utc(origin), pd.DatetimeIndex(as_utc(ds))
            months = (np.asarray(ds.year) - origin.year) * 12 + (np.asarray(ds.month) - origin.month)
            return months // self.months
        start, ns = _utc_nanoseconds(origin), _utc_nanoseconds(ds)
        if start is None or ns is None:      # stamps in another time zone: pandas aligns them
            return np.asarray((pd.DatetimeIndex(ds) - origin).asi8, dtype="int64") // self._step_ns
        return (ns - start) // self._step_ns

    def normalize(self, ds: pd.Series) -> pd.Series:
        """UTC stamps put on the grid where they name the same period a different way.

        Daily and longer: local midnights sent with their offset (which moves by an hour at DST)
        become the date they name. Months, quarters and years: a stamp on the period's first day
        or its last day is the same period, stamped where this frequency expects it. Anything
        else is left alone (it is off the grid, and silver flags it)."""
        if self.sub_daily or ds.empty:
            return ds
        ds = ds.copy()
        time_of_day = ds - ds.dt.floor("D")
        hours = time_of_day.dropna().unique()
        near = time_of_day.where(time_of_day <= pd.Timedelta(hours=12), time_of_day - _DAY)
        if 0 < len(hours) <= 2 and near.abs().max() <= pd.Timedelta(hours=14) and near.max() - near.min() <= \
                pd.Timedelta(hours=1) and (near != pd.Timedelta(0)).any():
            ds = (ds - near).dt.floor("D")
        if not self.months:
            return ds
        midnight = ds == ds.dt.floor("D")
        period = ds.dt.tz_localize(None).dt.to_period({1: "M", 3: "Q-DEC", 12: "Y-DEC"}[self.months])
        starts = period.dt.start_time.dt.tz_localize("UTC")
        ends = period.dt.end_time.dt.floor("D").dt.tz_localize("UTC")
        bounded = midnight & ((ds == starts) | (ds == ends))
        return ds.where(~bounded, ends if self.at_end else starts)

    def mismatch(self, ds: pd.Series, entity: Optional[pd.Series] = None) -> Optional[str]:
        """Why these stamps (already normalized) do not fit this frequency, or None.

        They fit when most lie on the grid and consecutive stamps of an entity are mostly one step
        apart (gaps are allowed: silver fills and flags them)."""
        # Integer codes and int64 stamps in numpy: a target batch can be millions of rows.
        stamps = pd.DatetimeIndex(ds)
        codes = np.zeros(len(stamps), dtype="int64") if entity is None else pd.factorize(entity)[0]
        present = ~np.asarray(stamps.isna())
        if not present.all():
            stamps, codes = stamps[present], codes[present]
        if len(stamps) < 2:
            return None
        if self._fits(stamps, codes):
            return None
        ds, entity = pd.Series(stamps), pd.Series(codes)
        looks = describe_spacing(ds, entity)
        fitting = [f for f in _BY_ALIAS.values() if f is not self and f._fits(stamps, codes)]
        hint = (f"set series.freq: {config_name(fitting[0])}" if fitting
                else f"resample the data to one value per {self.label} step, or set series.freq to match it")
        return f"the timestamps {looks}, which does not fit series.freq {config_name(self)!r} ({self.label}); {hint}"

    def _fits(self, stamps: pd.DatetimeIndex, codes: np.ndarray) -> bool:
        normalized = pd.DatetimeIndex(self.normalize(pd.Series(stamps, copy=False)))
        if self.on_grid(normalized).mean() < 0.5:
            return False
        # Each entity's distinct stamps in order: consecutive ones are mostly one step apart.
        order = np.lexsort((normalized.asi8, codes))
        codes, normalized = codes[order], normalized[order]
        ns = normalized.asi8
        first = np.r_[True, (codes[1:] != codes[:-1]) | (ns[1:] != ns[:-1])]
        codes, normalized = codes[first], normalized[first]
        same = codes[1:] == codes[:-1]
        if not same.any():
            return True
        apart = (self.steps(normalized[0], normalized[1:]) - self.steps(normalized[0], normalized[:-1]))[same]
        return bool(np.median(apart) == 1)


DAY_NS = _DAY.value
NAT = np.iinfo("int64").min      # NaT as nanoseconds since 1970


def _utc_nanoseconds(stamps) -> Optional[np.ndarray]:
    """Nanoseconds since 1970 of UTC or naive stamps (a timestamp, index, column or int64 array
    of them); None for stamps in another time zone, whose calendar pandas must work out."""
    if isinstance(stamps, (int, np.integer)):
        return int(stamps)
    if isinstance(stamps, pd.Timestamp):
        return stamps.value if stamps.tz is None or str(stamps.tz) == "UTC" else None
    if isinstance(stamps, np.ndarray) and stamps.dtype.kind in "iM":
        return stamps.view("int64") if stamps.dtype.kind == "M" else stamps.astype("int64", copy=False)
    index = pd.DatetimeIndex(stamps)
    if index.tz is not None and str(index.tz) != "UTC":
        return None
    return index.as_unit("ns").asi8


def as_utc(stamps):
    """Nanoseconds since 1970 (one, or an array of them) as UTC timestamps; timestamps as they are."""
    if isinstance(stamps, (int, np.integer)):
        return pd.Timestamp(int(stamps), tz="UTC")
    if isinstance(stamps, np.ndarray) and stamps.dtype.kind == "i":
        return pd.DatetimeIndex(stamps.view("datetime64[ns]")).tz_localize("UTC")
    return stamps


def describe_spacing(ds: pd.Series, entity: pd.Series) -> str:
    """'are 1 hour apart (e.g. 2024-01-01 00:00, 2024-01-01 01:00)': what a person would see."""
    frame = pd.DataFrame({"entity": entity.to_numpy(), "ds": pd.DatetimeIndex(ds)}).drop_duplicates()
    frame = frame.sort_values(["entity", "ds"])
    same = frame["entity"].to_numpy()[1:] == frame["entity"].to_numpy()[:-1]
    gaps = pd.Series(np.diff(frame["ds"].to_numpy()))[same]
    example = ", ".join(t.strftime("%Y-%m-%d %H:%M") for t in pd.DatetimeIndex(frame["ds"])[:2])
    if gaps.empty:
        return f"have one stamp per entity (e.g. {example})"
    typical = pd.Timedelta(gaps.median())
    return f"are typically {_duration(typical)} apart (e.g. {example})"


def _duration(gap: pd.Timedelta) -> str:
    """'1 hour', '3 months': the largest unit the gap is at least about one of (months of 28-31 days)."""
    for unit, size in (("year", 365.2425 * _DAY), ("month", 30.436875 * _DAY), ("week", 7 * _DAY), ("day", _DAY),
                       ("hour", pd.Timedelta(hours=1)), ("minute", pd.Timedelta(minutes=1))):
        if gap >= 0.9 * size:
            count = round(gap / size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return str(gap)


def _fixed(alias: str, label: str, per_day: float, horizon: int) -> Frequency:
    day, week = round(per_day), round(7 * per_day)
    return Frequency(alias, label, seasons=(day, week), horizon=horizon, max_history=12 * week,
                     long_history=round(3 * 365 * per_day), outlier_window=week, max_fill_gap=2 * week)


_CALENDAR = dict(models=("ets", "theta", "ces", "arima"), select="combine", ensemble_size=2)
_FREQUENCIES = (
    _fixed("min", "1-minute", 1440, 1440),
    _fixed("5min", "5-minute", 288, 288),
    _fixed("15min", "15-minute", 96, 96),
    _fixed("30min", "30-minute", 48, 96),
    _fixed("h", "hourly", 24, 168),
    Frequency("D", "daily", seasons=(7,), horizon=14, max_history=3 * 365, long_history=6 * 365,
              outlier_window=56, max_fill_gap=14),
    *(Frequency(f"W-{d.upper()}", f"weekly (weeks ending {d.capitalize()})", seasons=(52,), horizon=8,
                max_history=5 * 52, long_history=10 * 52, outlier_window=26, max_fill_gap=4) for d in _WEEKDAYS),
    Frequency("MS", "monthly (month start)", months=1, **_CALENDAR, seasons=(12,), horizon=12, max_history=240,
              long_history=480, outlier_window=24, max_fill_gap=2),
    Frequency("ME", "monthly (month end)", months=1, **_CALENDAR, at_end=True, seasons=(12,), horizon=12,
              max_history=240, long_history=480, outlier_window=24, max_fill_gap=2),
    Frequency("QS-JAN", "quarterly (quarter start)", months=3, **_CALENDAR, seasons=(4,), horizon=8, max_history=120,
              long_history=240, outlier_window=12, max_fill_gap=1),
    Frequency("QE-DEC", "quarterly (quarter end)", months=3, **_CALENDAR, at_end=True, seasons=(4,), horizon=8,
              max_history=120, long_history=240, outlier_window=12, max_fill_gap=1),
    Frequency("YS-JAN", "yearly (year start)", months=12, **_CALENDAR, horizon=5, max_history=100, long_history=200,
              outlier_window=10, max_fill_gap=1),
    Frequency("YE-DEC", "yearly (year end)", months=12, **_CALENDAR, at_end=True, horizon=5, max_history=100,
              long_history=200, outlier_window=10, max_fill_gap=1),
)
_BY_ALIAS = {f.alias: f for f in _FREQUENCIES}
# Config spellings (lower case) -> alias. "w" is pandas' W (weeks ending Sunday).
_SPELLINGS = {
    **{f.alias.lower(): f.alias for f in _FREQUENCIES},
    "1min": "min", "1h": "h", "d": "D", "1d": "D", "w": "W-SUN",
    "ms": "MS", "me": "ME", "qs": "QS-JAN", "qe": "QE-DEC", "ys": "YS-JAN", "ye": "YE-DEC",
}
# What a config writes for each alias (the shortest spelling).
_CONFIG_NAMES = {"D": "d", "W-SUN": "w", "QS-JAN": "qs", "QE-DEC": "qe", "YS-JAN": "ys", "YE-DEC": "ye"}
CONFIG_SPELLINGS = ("5min", "15min", "30min", "h", "d", "w", "w-mon..w-sun", "ms", "me", "qs", "qe", "ys", "ye")


def config_name(freq: Frequency) -> str:
    return _CONFIG_NAMES.get(freq.alias, freq.alias.lower())


@lru_cache(maxsize=None)
def frequency(name: str) -> Frequency:
    """The `Frequency` a config spelling or pandas alias names; ValueError with the choices."""
    alias = _SPELLINGS.get(str(name).strip().lower())
    if alias is None:
        hint = (" ('m' is ambiguous: write ms or me for months, min for minutes)"
                if str(name).strip().lower() == "m" else "")
        raise ValueError(f"must be one of {', '.join(CONFIG_SPELLINGS)}, got {name!r}{hint}")
    return _BY_ALIAS[alias]


def frequency_table() -> str:
    """docs/configuration.md's table of frequencies and the defaults that follow them (tests check it)."""
    lines = ["| `series.freq` | what | season lengths | horizon | `max_history` | `long_history` | "
             "`outlier_window` | `max_fill_gap` |", "|---|---|---|---|---|---|---|---|"]
    seen = set()
    for freq in _FREQUENCIES:
        name = "w, w-mon..w-sun" if freq.alias.startswith("W-") else config_name(freq)
        if name in seen:
            continue
        seen.add(name)
        label = "weekly (w: weeks ending Sunday)" if freq.alias.startswith("W-") else freq.label
        lines.append(f"| `{name}` | {label} | {list(freq.seasons)} | {freq.horizon} | {freq.max_history} | "
                     f"{freq.long_history} | {freq.outlier_window} | {freq.max_fill_gap} |")
    return "\n".join(lines) + "\n"
