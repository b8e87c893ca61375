"""GEFCom2012: how a selection rule would have done on the same week of earlier years.

    python benchmarks/gefcom_years.py [--years 2006 2007] [--variants recent seasonal]

The competition week (2008-07-01..07) is the test set: a change to how the nightly picks its
models must not be judged on it. This replays the default nightly (`configs/nightly.yaml`) with
`manymodels nightly --as-of YYYY-06-30T06:00Z` on the same week of earlier years, each on its own
lake and MLflow store, once per variant of the backtest:

- `recent`:   the config as shipped before `backtest.years` (the last three weeks only, ranked by MASE);
- `seasonal`: plus the weeks the forecast covers in each of the two earlier years (`backtest.years: 2`);
- `weeks6`:   the last six weeks;
- `combine`:  the last three weeks, each zone's forecast the mean of its best candidates;
- `seasonal_combine`: both;
- `weather`:  the last three weeks, with the temperature regression and seasonal naive only;
- `rmse`:     the last three weeks, candidates ranked by RMSE (the competition's loss) instead of MASE:
              the default since it won here;
- `rmse_combine`, `rmse_seasonal`, `rmse_weather`: `combine`, `seasonal` and `weather` ranked by RMSE;
- `rmse_daily`: ranked by RMSE over seven week-long windows a day apart (the last two weeks);
- `rmse_daily_normal`: `rmse_daily` with future weather as normal weather alone (`training.weather:
              normal`), as the engine filled it before the last day's departure was persisted.
- `rmse_daily_lags`: `rmse_daily` with tempreg's recency effect (`model_params: {tempreg: {lag_days: 1}}`).

and scores each night's published (reconciled) 168 hours against the load history with the
competition's weights (a zone-hour 1, a system-hour 20, as 8 and 160 per day). The variant that
wins here is a choice made without the competition week; `benchmarks/gefcom_wrmse.py` then scores
the shipped default on it once. Every variant but `rmse` ranks by MASE, as the default did when
they were measured. Appends rows to benchmarks/results/gefcom_years.csv.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import record, say  # noqa: E402
from benchmarks.gefcom_wrmse import competition_file, hourly, wrmse  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "gefcom_years"
# The config sections each variant sets over the config's (a mapping's keys over the section's).
MASE = {"years": 0, "metric": "mase"}     # the backtest the default ranked by before `rmse`
VARIANTS = {"recent": {"backtest": MASE}, "seasonal": {"backtest": {**MASE, "years": 2}},
            "weeks6": {"backtest": {**MASE, "windows": 6}},
            "combine": {"backtest": {**MASE, "select": "combine"}},
            "seasonal_combine": {"backtest": {**MASE, "years": 2, "select": "combine"}},
            "weather": {"backtest": MASE, "models": ["seasonal_naive", "tempreg"]},
            "rmse": {"backtest": {**MASE, "metric": "rmse"}},
            "rmse_combine": {"backtest": {**MASE, "metric": "rmse", "select": "combine"}},
            "rmse_seasonal": {"backtest": {**MASE, "metric": "rmse", "years": 2}},
            "rmse_weather": {"backtest": {**MASE, "metric": "rmse"}, "models": ["seasonal_naive", "tempreg"]},
            "rmse_daily": {"backtest": {**MASE, "metric": "rmse", "windows": 7, "step": 24}},
            "rmse_daily_normal": {"backtest": {**MASE, "metric": "rmse", "windows": 7, "step": 24},
                                  "training": {"weather": "normal"}},
            "rmse_daily_lags": {"backtest": {**MASE, "metric": "rmse", "windows": 7, "step": 24},
                                "model_params": {"tempreg": {"lag_days": 1}}}}
SYSTEM_WEIGHT = 20          # 160 per system-day against 8 per zone-day


def truth() -> pd.DataFrame:
    """Hourly load of zones 1-20 and their sum (zone 21) from the competition's history."""
    zones = hourly(competition_file("Load_history.csv"))[["entity_id", "ds", "load"]]
    zones["load"] = pd.to_numeric(zones["load"].astype(str).str.replace(",", ""), errors="coerce")
    wide = zones.pivot_table(index="ds", columns="entity_id", values="load", dropna=False)
    system = wide.sum(axis=1).where(wide.notna().all(axis=1))
    return pd.concat([zones, pd.DataFrame({"entity_id": "zone_21", "ds": system.index, "load": system.to_numpy()})],
                     ignore_index=True)


def night_config(base: dict, variant: str, year: int) -> Path:
    folder = WORK / f"{variant}-{year}"
    # A fresh lake and MLflow store: on an earlier run's, the registry's gate would compare the
    # new champion with that run's and could keep the old one, whose forecasts are then scored.
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = dict(base, lake={"root": str(folder / "lake")}, backend="local",
                  mlflow={**base["mlflow"], "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"})
    for section, value in VARIANTS[variant].items():
        config[section] = {**base.get(section, {}), **value} if isinstance(value, dict) else value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def published(config_path: Path) -> pd.DataFrame:
    from deltalake import DeltaTable
    root = yaml.safe_load(config_path.read_text())["lake"]["root"]
    return DeltaTable(f"{root}/gold/forecasts").to_pandas(columns=["entity_id", "ds", "yhat", "model"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "nightly.yaml")
    parser.add_argument("--years", type=int, nargs="+", default=[2006, 2007], help="the week of each year's July 1")
    parser.add_argument("--variants", nargs="+", default=["recent", "seasonal"], choices=list(VARIANTS),
                        help="the first is the baseline of the ratios")
    args = parser.parse_args(argv)
    base = yaml.safe_load(args.config.read_text())
    actual = truth()
    rows = []
    for year in args.years:
        as_of = pd.Timestamp(f"{year}-06-30 06:00", tz="UTC")
        for variant in args.variants:
            path = night_config(base, variant, year)
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "engine", "nightly", "--config", str(path), "--as-of",
                                   as_of.isoformat(), "--no-progress", "--retrain"], cwd=ROOT, capture_output=True,
                                  text=True)
            if done.returncode != 0:
                raise SystemExit(f"{variant} {year}: the nightly failed ({done.returncode}):\n{done.stderr[-3000:]}")
            forecast = published(path).merge(actual, on=["entity_id", "ds"])
            forecast = forecast[forecast["ds"] >= as_of].dropna(subset=["load"])
            error = forecast["yhat"].to_numpy() - forecast["load"].to_numpy()
            weight = np.where(forecast["entity_id"] == "zone_21", SYSTEM_WEIGHT, 1)
            system = forecast[forecast["entity_id"] == "zone_21"]
            champions = forecast.drop_duplicates("entity_id")["model"].value_counts().to_dict()
            row = {"year": year, "variant": variant, "hours": len(forecast), "wrmse": round(wrmse(error, weight), 1),
                   "zones_rmse": round(float(np.sqrt(np.mean(error[weight == 1] ** 2))), 1),
                   "system_rmse": round(float(np.sqrt(np.mean((system["yhat"] - system["load"]) ** 2))), 1),
                   "champions": " ".join(f"{k}:{v}" for k, v in sorted(champions.items())),
                   "seconds": round(time.perf_counter() - started, 1)}
            say(f"{year} {variant:9s} WRMSE {row['wrmse']:>10,.1f}  zones {row['zones_rmse']:>9,.1f}  "
                f"system {row['system_rmse']:>10,.1f}  champions {row['champions']}  ({row['seconds']:.0f} s)")
            rows.append(row)
    frame = pd.DataFrame(rows)
    if len(args.variants) > 1:
        table = frame.pivot(index="year", columns="variant", values="wrmse")[args.variants]
        for variant in args.variants[1:]:
            table[f"{variant}/{args.variants[0]}"] = (table[variant] / table[args.variants[0]]).round(4)
        say(table.to_string())
    say(f"rows appended to {record('gefcom_years', rows)}")


if __name__ == "__main__":
    main()
