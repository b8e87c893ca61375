"""One readable figure of pulled forecasts: a panel per entity with recent history, the
forecast, a fan of its bands (the configured levels, at most four) and, where known, the
actuals after the origin."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from engine.analyst.pull import Pulled, PullError

MAX_PANELS = 24
# A fan shows a few nested bands; past that they blur into one. Of many levels (GEFCom2014's
# 0.01..0.99 quantiles are 49), the ones nearest these are drawn, and the widest.
MAX_BANDS, FAN = 4, (50, 80, 95)


def fan_levels(levels: tuple[int, ...]) -> list[int]:
    """The levels to shade, widest first."""
    if len(levels) <= MAX_BANDS:
        return sorted(set(levels), reverse=True)
    nearest = {min(levels, key=lambda lvl: (abs(lvl - target), lvl)) for target in FAN}
    return sorted(nearest | {max(levels)}, reverse=True)


def plot_forecasts(pulled: Pulled, output: str | Path, levels: tuple[int, ...]):
    """Write a PNG to `output`; returns the matplotlib figure (one axes per entity)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    entities = list(dict.fromkeys(pulled.forecasts["entity_id"]))
    if len(entities) > MAX_PANELS:
        raise PullError(f"{len(entities)} entities are too many for one readable figure (at most {MAX_PANELS}); "
                        "pick some with --entity, or use --format csv/parquet")
    cols = min(3, len(entities))
    rows = math.ceil(len(entities) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.4 * rows), squeeze=False)
    fan = fan_levels(levels)
    shades = dict(zip(fan, (0.14, 0.22, 0.32, 0.45)[MAX_BANDS - len(fan):]))
    for ax, entity in zip(axes.flat, entities):
        fc = pulled.forecasts[pulled.forecasts["entity_id"] == entity]
        past = pulled.history[pulled.history["entity_id"] == entity]
        ax.plot(past["ds"], past["y"], color="#444444", linewidth=0.9, label="history")
        for level, alpha in shades.items():
            low, high = f"yhat_lower_{level}", f"yhat_upper_{level}"
            if low in fc:
                ax.fill_between(fc["ds"], fc[low], fc[high], color="#1f77b4", alpha=alpha, linewidth=0,
                                label=f"{level}% interval")
        ax.plot(fc["ds"], fc["yhat"], color="#1f77b4", linewidth=1.4, label="forecast")
        if fc["y"].notna().any():
            ax.plot(fc["ds"], fc["y"], color="#d62728", linewidth=0.9, label="actual")
        ax.axvline(fc["forecast_origin"].iloc[0], color="#888888", linestyle=":", linewidth=1)
        ax.set_title(f"{entity}  ({fc['model'].iloc[0]}, origin {_short(fc['forecast_origin'].iloc[0])})",
                     fontsize=10)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(entities):]:
        fig.delaxes(ax)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95 if rows > 1 else 0.9))
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return fig


def _short(stamp) -> str:
    return pd.Timestamp(stamp).strftime("%Y-%m-%d %H:%M")
