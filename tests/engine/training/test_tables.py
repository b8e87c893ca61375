import numpy as np
import pandas as pd
import pyarrow as pa

from engine.training.entity import forecast_frame, forecast_json
from engine.training.tables import FORECASTS, RunContext


def _results() -> pd.DataFrame:
    """Result rows as tasks return them: two forecasts (one reconciled, with other origins and
    lengths), a failed entity without one."""
    rng = np.random.default_rng(3)
    rows = []
    for entity, origin, steps, reconciled in (("a", "2024-03-30 23:00", 24, False), ("b", "2024-03-31 05:00", 6, True),
                                              ("c", None, 0, False)):
        forecast = None
        if steps:
            ds = pd.date_range(pd.Timestamp(origin, tz="UTC") + pd.Timedelta("1h"), periods=steps, freq="h")
            mean = rng.normal(100, 5, steps)
            columns = {"yhat": mean, **{f"yhat_{side}_{level}": mean + sign * level / 10
                                        for level in (80, 95) for side, sign in (("lower", -1), ("upper", 1))}}
            if reconciled:
                columns["reconciliation"] = np.array(["mint_shrink"] * steps)
            forecast = forecast_json(columns, ds)
        rows.append({"entity_id": entity, "status": "ok" if steps else "failed", "champion": "ets" if steps else None,
                     "forecast_origin": pd.Timestamp(origin, tz="UTC") if origin else pd.NaT, "forecast": forecast})
    return pd.DataFrame(rows)


def test_forecast_rows_are_each_results_forecast_frame_with_its_fields():
    context = RunContext("run-1", 4, (80, 95), pd.Timestamp("2024-04-01", tz="UTC"))
    results = _results()
    schema = context.schema(FORECASTS)
    built = context.rows(FORECASTS)(results)
    # By hand, one result at a time: its stored forecast read back and tagged with its fields.
    parts = []
    for _, result in results.iterrows():
        frame = forecast_frame(result)
        if frame is not None:
            parts.append(frame.assign(entity_id=result["entity_id"], model=result["champion"],
                                      status=result["status"], forecast_origin=result["forecast_origin"],
                                      yhat_lower=frame["yhat_lower_95"], yhat_upper=frame["yhat_upper_95"],
                                      reconciliation=frame.get("reconciliation"), run_id="run-1"))
    expected = pd.concat(parts, ignore_index=True).reindex(columns=schema.names)
    written = pa.Table.from_pandas(built, schema=schema, preserve_index=False)
    assert written.equals(pa.Table.from_pandas(expected, schema=schema, preserve_index=False))
    assert len(built) == 30 and built["reconciliation"].tolist() == [None] * 24 + ["mint_shrink"] * 6
    assert built.groupby("entity_id")["forecast_origin"].first().tolist() == results["forecast_origin"][:2].tolist()
