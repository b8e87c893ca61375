"""The routing model through MLflow's own clients, as a deployment team uses it: `pyfunc.load_model`,
`mlflow.models.predict`, `spark_udf` (default result type, named and positional columns), and a
real `mlflow models serve` process taking every REST format. A module-scoped model with two
regressors in the config's order (temperature, then the 0/1 flag is_holiday)."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks.common import free_port
from engine.models import make_model
from engine.routing.bundle import write_bundle
from engine.routing.pyfunc import save_routing_model
from tests.conftest import HOURLY_SPEC, hourly, http_server

SPEC = dataclasses.replace(HOURLY_SPEC, exogenous=("temperature", "is_holiday"))
STEPS = 6


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An MLflow model folder: arima with both regressors for 'a' and 'b', seasonal naive for 'c'."""
    rows, histories = [], {}
    for i, entity in enumerate("abc"):
        history = hourly(24 * 14, seed=i).assign(is_holiday=lambda f: (f["ds"].dt.dayofweek == 6).astype(float))
        model = make_model("seasonal_naive" if entity == "c" else "arima", SPEC).fit(history)
        histories[entity] = (history, model)
        rows.append({"entity_id": entity, "champion": model.name, "status": "ok",
                     "forecast_origin": history["ds"].iloc[-1], "model": model.to_bytes()})
    folder = tmp_path_factory.mktemp("served")
    write_bundle(pd.DataFrame(rows), folder / "bundle", run_id="run1", freq="h", levels=(80, 95), horizon=24,
                 max_steps=0, shard_size=2, exogenous_order=SPEC.exogenous)
    save_routing_model(folder / "bundle", folder / "model", cache_size=16)
    return folder / "model", histories


def gold_rows(histories, entities="abc") -> pd.DataFrame:
    """Future rows in gold's column order (entity_id, ds, temperature, is_holiday), naive UTC ds."""
    parts = []
    for entity in entities:
        origin = histories[entity][0]["ds"].iloc[-1]
        ds = [(origin + pd.Timedelta(hours=k)).tz_localize(None) for k in range(1, STEPS + 1)]
        parts.append(pd.DataFrame({"entity_id": entity, "ds": ds, "temperature": np.linspace(55.0, 65.0, STEPS),
                                   "is_holiday": [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]}))
    return pd.concat(parts, ignore_index=True)


def expected(histories, request: pd.DataFrame) -> pd.DataFrame:
    """What each entity's model forecasts for the request rows (the numbers every client must return)."""
    out = []
    for entity, rows in request.groupby("entity_id", sort=False):
        future = pd.DataFrame({"ds": pd.to_datetime(rows["ds"], utc=True).to_numpy(),
                               "temperature": rows["temperature"].to_numpy(dtype=float),
                               "is_holiday": rows["is_holiday"].to_numpy(dtype=float)})
        out.append(pd.DataFrame({"entity_id": entity, "yhat": histories[entity][1].forecast(future).mean}))
    return pd.concat(out, ignore_index=True)


def test_the_model_carries_its_code_and_only_the_libraries_its_champions_need(served):
    path, _ = served
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    assert sorted(p.name for p in (path / "code").iterdir()) == ["engine", "gpu"]
    assert not list((path / "code").rglob("__pycache__"))
    requirements = [line.split("==")[0] for line in (path / "requirements.txt").read_text().split()]
    assert requirements[:5] == ["mlflow-skinny", "numpy", "pandas", "pyarrow", "ujson"]
    assert "statsforecast" in requirements
    assert not {"mlflow", "prophet", "torch", "pyspark", "deltalake"} & set(requirements)
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [c["name"] for c in inputs] == ["entity_id", "ds", "temperature", "is_holiday"]   # the config's order
    assert {c["name"]: c["type"] for c in json.loads(mlmodel["signature"]["outputs"])}["ds"] == "string"


def test_load_model_takes_any_utc_offset_and_integers_and_answers_iso_strings(served):
    path, histories = served
    model = mlflow.pyfunc.load_model(str(path))
    request = gold_rows(histories)
    want = expected(histories, request)
    out = model.predict(request)
    np.testing.assert_allclose(out["yhat"], want["yhat"], rtol=1e-9)
    assert out["ds"].iloc[0] == (request["ds"].iloc[0]).strftime("%Y-%m-%dT%H:%M:%SZ")
    shifted = request.assign(ds=(pd.to_datetime(request["ds"]).dt.tz_localize("UTC").dt.tz_convert("Etc/GMT-2")
                                 .map(lambda t: t.isoformat())))                       # ...T02:00:00+02:00
    integers = request.assign(is_holiday=request["is_holiday"].astype(int),
                              temperature=request["temperature"].round().astype(int))
    for variant in (shifted, request.assign(ds=request["ds"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")), integers):
        answer = model.predict(variant)
        assert list(answer["ds"]) == list(out["ds"])
    np.testing.assert_allclose(model.predict(integers)["yhat"],
                               expected(histories, integers)["yhat"], rtol=1e-9)


@pytest.mark.parametrize("column, value, message", [
    ("is_holiday", 74.5, "column 'is_holiday' holds 74.5 in row 2, unlike the arima model's training data "
                         "(only 0 and 1 (a flag))"),
    ("temperature", 650.0, "column 'temperature' holds 650 in row 2"),
])
def test_values_unlike_the_training_data_are_refused_naming_column_and_entity(served, column, value, message):
    path, histories = served
    request = gold_rows(histories, "a")
    request.loc[2, column] = value
    with pytest.raises(mlflow.exceptions.MlflowException) as info:
        mlflow.pyfunc.load_model(str(path)).predict(request)
    assert f"entity 'a': {message}" in str(info.value)
    assert "order entity_id, ds, temperature, is_holiday" in str(info.value)


def test_mlflow_models_predict(served, tmp_path):
    path, histories = served
    request = gold_rows(histories)
    output = tmp_path / "out.json"
    mlflow.models.predict(model_uri=str(path), input_data=request, env_manager="local", output_path=str(output))
    answer = pd.DataFrame(json.loads(output.read_text())["predictions"])
    np.testing.assert_allclose(answer["yhat"], expected(histories, request)["yhat"], rtol=1e-9)


def test_spark_udf_with_its_default_result_type_by_name_and_by_position(served, spark):
    from pyspark.sql import functions as F

    path, histories = served
    request = gold_rows(histories)
    frame = spark.createDataFrame(request.assign(ds=request["ds"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")))
    udf = mlflow.pyfunc.spark_udf(spark, str(path))
    want = expected(histories, request)["yhat"].to_numpy()
    # Named: one struct argument (its field names, in any order); positional: the signature's order.
    by_name = frame.withColumn("f", udf(F.struct("is_holiday", "ds", "entity_id", "temperature"))).select(
        "entity_id", "ds", "f.yhat", F.col("f.ds").alias("answered_ds")).toPandas()
    assert (by_name["answered_ds"] == by_name["ds"]).all()
    by_position = frame.withColumn("f", udf(*frame.columns)).select("entity_id", "ds", "f.yhat").toPandas()
    for answer in (by_name, by_position):
        order = answer.sort_values(["entity_id", "ds"]).index
        np.testing.assert_allclose(answer.loc[order, "yhat"], want, rtol=1e-9)
    swapped = frame.withColumn("f", udf("entity_id", "ds", "is_holiday", "temperature")).select("f.yhat")
    with pytest.raises(Exception, match=r"column 'is_holiday' holds (5[5-9]|6[0-5]) in row"):
        swapped.collect()


def post(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@contextmanager
def mlflow_serving(model: Path, *options: str, timeout: float = 120, env=None, cwd=None):
    """`mlflow models serve` on a free port until the block ends; yields the port."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model), "-p", str(port), "-h", "127.0.0.1",
               *options]
    with http_server(command, port, timeout, env, cwd):
        yield port


def bodies(request: pd.DataFrame) -> dict[str, tuple[bytes, str]]:
    """The same request in every format MLflow's scoring server documents."""
    records = json.loads(request.to_json(orient="records"))
    split = json.loads(request.to_json(orient="split", index=False))
    columns = {c: request[c].tolist() for c in request}
    as_json = {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": columns},
    }
    out = {name: (json.dumps(body).encode(), "application/json") for name, body in as_json.items()}
    buffer = io.StringIO()
    request.to_csv(buffer, index=False)
    out["csv"] = (buffer.getvalue().encode(), "text/csv")
    return out


def test_every_rest_format_through_mlflow_models_serve(served):
    path, histories = served
    request = gold_rows(histories).assign(
        ds=lambda f: f["ds"].dt.strftime("%Y-%m-%dT%H:%M:%S") + np.where(f.index % 2, "Z", "+00:00"),
        is_holiday=lambda f: f["is_holiday"].astype(int))
    want = expected(histories, request)["yhat"].to_numpy()
    with mlflow_serving(path, "--env-manager", "local") as port:
        for name, (body, content_type) in bodies(request).items():
            status, answer = post(port, body, content_type)
            assert status == 200, (name, answer)
            np.testing.assert_allclose(pd.DataFrame(answer["predictions"])["yhat"], want, rtol=1e-9, err_msg=name)
        bad = request.assign(temperature=lambda f: f["temperature"] * 10)
        status, answer = post(port, bodies(bad)["dataframe_split"][0])
        assert status == 400 and "entity 'a': column 'temperature' holds 550" in answer["message"]


def test_manymodels_serve_checks_each_request_once_and_answers_as_mlflow_does(served):
    """`manymodels serve` parses requests as sent and hands tables straight to the router
    (engine.routing.server.CheckedOnce): every REST format, good and bad, gets the same status and
    bytes as MLflow's full path, except that a missing column is named by the router's message
    instead of the signature's."""
    from mlflow.pyfunc import scoring_server

    from engine.routing.server import CheckedOnce
    path, histories = served
    model = mlflow.pyfunc.load_model(str(path))
    once = CheckedOnce(model)
    assert once.router is not None     # tables go to the router, parsed with every column Any
    assert {type(c.type).__name__ for c in once.metadata.get_input_schema().inputs} == {"AnyType"}
    request = gold_rows(histories).assign(ds=lambda f: f["ds"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    cases = {**bodies(request), **{f"bad {name}": body for name, body in bodies(
        request.assign(temperature=lambda f: f["temperature"] * 10)).items()},
        "unknown entity": bodies(request.assign(entity_id="ghost"))["dataframe_records"],
        "no ds": bodies(request.drop(columns="ds"))["dataframe_split"]}
    for name, (body, content_type) in cases.items():
        answers = []
        for served_model in (model, once):
            try:
                # What the scoring app does with each (scoring_server.init reads the schema once).
                schema = served_model.metadata.get_input_schema()
                answer = scoring_server.invocations(body, content_type, served_model, schema)
                answers.append((answer.status, answer.response))
            except mlflow.exceptions.MlflowException as exc:
                answers.append((exc.get_http_status_code(), exc.message))
        if name == "no ds":
            assert answers[0][0] == answers[1][0] == 400 and "lacks column(s) ['ds']" in answers[1][1]
        elif name == "bad inputs":
            # MLflow's message echoes the data it was given, parsed differently: the verdicts must match.
            assert answers[0][0] == answers[1][0] == 400, name
            assert answers[0][1].rsplit("Error: ", 1)[1] == answers[1][1].rsplit("Error: ", 1)[1], name
        else:
            assert answers[0] == answers[1], name
        assert (answers[0][0] == 200) == (name in bodies(request)), (name, answers[0])


def test_the_model_serves_from_the_environment_mlflow_builds_from_its_own_requirements(served, tmp_path):
    """`--env-manager virtualenv`: a fresh venv with only requirements.txt (no manymodels, no
    Spark), the engine from the model's code_paths; the same numbers as in process."""
    path, histories = served
    request = gold_rows(histories).assign(ds=lambda f: f["ds"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    in_process = mlflow.pyfunc.load_model(str(path)).predict(request)
    env = dict(os.environ, MLFLOW_ENV_ROOT=str(tmp_path / "envs"))
    # Started outside the checkout: the engine can only come from the model's own code_paths.
    with mlflow_serving(path, "--env-manager", "virtualenv", timeout=900, env=env, cwd=tmp_path) as port:
        status, answer = post(port, bodies(request)["dataframe_split"][0])
    assert status == 200, answer
    pd.testing.assert_frame_equal(pd.DataFrame(answer["predictions"]), in_process, check_exact=False, rtol=1e-12)
    (python,) = (tmp_path / "envs").glob("*/bin/python")
    probe = subprocess.run([str(python), "-c", "import engine"], capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode != 0 and "No module named 'engine'" in probe.stderr
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True,
                               text=True, check=True).stdout.lower()
    assert "mlflow-skinny==" in installed and not {"pyspark", "torch", "prophet", "manymodels"} & {
        line.split("==")[0] for line in installed.split()}
