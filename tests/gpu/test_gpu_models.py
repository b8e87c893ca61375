"""GPU work on the CPU (CI has no GPU): the batched additive model, the HorovodRunner-style
runner with two real processes, and both models selected, published and served end to end."""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import asdict

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch  # the gpu extra: `make test` installs it
from mlflow.tracking import MlflowClient

from engine.errors import ConfigError
from engine.lake import DeltaRsLake
from engine.backends import backend_for
from engine.medallion.pipeline import ingest
from engine.models import ModelError, ModelSpec, load_model, make_model
from engine.models.gpu_additive import GpuAdditiveModel, fit_panel
from engine.scoring.batch import scoring_request
from engine.tracking.publish import publish
from engine.training.entity import TrainSpec
from engine.training.global_stage import GLOBAL_MODELS
from engine.training.job import train
from engine.training.tables import FORECASTS, MODELS
from gpu import additive
from gpu.device import pick_device
from gpu.dist import HorovodRunner, run_local
from gpu.global_nn import NetShape, build_net, forward_numpy, panel_samples, train_ranks
from tests.conftest import make_config, tracking_uri


DAILY = ModelSpec(freq="D", season_lengths=(7,))


def daily(n: int, seed: int, start="2021-01-01", breaks=True, yearly=30.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = (200 + 0.05 * t + (0.3 * np.maximum(t - n * 0.6, 0) if breaks else 0) + 15 * np.sin(2 * np.pi * t / 7)
         + yearly * np.sin(2 * np.pi * t / 365.25) + rng.normal(0, 3, n))
    return pd.DataFrame({"ds": pd.date_range(start, periods=n, freq="D", tz="UTC"), "y": y})


def test_gpu_additive_forecasts_as_well_as_prophet_on_trend_and_seasons():
    errors = {"gpu_additive": [], "prophet": []}
    for seed in range(3):
        frame = daily(790, seed)
        history, future = frame.iloc[:-60], frame.iloc[-60:]
        for name in errors:
            forecast = make_model(name, DAILY).fit(history).forecast(future[["ds"]])
            errors[name].append(np.mean(np.abs(forecast.mean - future["y"].to_numpy())))
    # Same model family and priors: within 10% of Prophet's own MAP fit (the benchmark compares backtests).
    assert np.mean(errors["gpu_additive"]) <= 1.1 * np.mean(errors["prophet"])
    model = make_model("gpu_additive", DAILY).fit(daily(790, 0))
    assert model.params()["seasons_days"] == [7.0, 365.25]     # two years: the yearly season is on


def test_the_panel_fit_equals_one_fit_per_entity_with_gaps_and_different_lengths():
    frames = []
    for i, (n, start) in enumerate([(500, "2021-01-01"), (300, "2021-06-01"), (650, "2020-09-01")]):
        frame = daily(n, i, start).assign(entity_id=f"e{i}", temperature=lambda f: np.sin(np.arange(len(f))))
        frames.append(frame.drop(index=frame.index[50:55]))          # a gap
    panel = pd.concat(frames, ignore_index=True)
    spec = ModelSpec(freq="D", season_lengths=(7,), exogenous=("temperature",))
    batch = fit_panel(panel, spec, {"n_changepoints": 10}, device="cpu")
    ahead = pd.DataFrame({"ds": pd.date_range("2022-10-01", periods=14, freq="D", tz="UTC"),
                          "temperature": np.linspace(-1, 1, 14)})
    for i, frame in enumerate(frames):
        one = GpuAdditiveModel(spec, {"n_changepoints": 10}).fit(frame.reset_index(drop=True))
        np.testing.assert_allclose(batch[f"e{i}"].forecast(ahead).mean, one.forecast(ahead).mean, rtol=1e-8)
    # Stored and read back, forecasts are the same; the state is plain arrays.
    restored = load_model(batch["e0"].to_bytes())
    np.testing.assert_allclose(restored.forecast(ahead).mean, batch["e0"].forecast(ahead).mean)


def test_sparse_changepoints_follow_a_trend_break_and_priors_are_checked():
    frame = daily(700, 4, yearly=0.0)      # under two years the yearly season is off: no sinusoid to bend into
    state = GpuAdditiveModel(DAILY).fit(frame).state_
    deltas = np.asarray(state["beta"])[2:2 + 25]
    # The Laplace prior keeps most deltas near zero and puts the weight where the trend bends (t = 420).
    assert (np.abs(deltas) < 0.05 * np.abs(deltas).max()).sum() >= 15
    knots = additive.layout_from_state(state).knots()
    assert abs(knots[np.argmax(np.abs(deltas))] * state["span"] - 420) < 60
    stiff = GpuAdditiveModel(DAILY, {"changepoint_prior_scale": 0.001}).fit(frame).state_
    assert np.abs(np.asarray(stiff["beta"])[2:27]).sum() < np.abs(deltas).sum()
    with pytest.raises(ModelError, match="n_changepoints must be between 0 and 50"):
        make_model("gpu_additive", DAILY, {"n_changepoints": 99})


def test_device_is_chosen_when_asked_and_a_missing_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MANYMODELS_DEVICE", "cpu")
    assert pick_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            pick_device("cuda")


def _samples():
    rng = np.random.default_rng(0)
    n = 24 * 40
    ds = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    frames = []
    for e in range(4):
        t = np.arange(n)
        temp = 10 + 8 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, n)
        y = 100 * (e + 1) + 20 * np.sin(2 * np.pi * t / 24) + 2 * temp + rng.normal(0, 3, n)
        frames.append(pd.DataFrame({"entity_id": f"e{e}", "ds": ds, "y": y, "temperature": temp}))
    shape = NetShape(lookback=48, horizon=24, exogenous=("temperature",), hidden=32)
    x, y, _, _ = panel_samples(pd.concat(frames), shape, step=6, holdout=48)
    return shape, x, y


def test_two_processes_train_to_identical_weights_and_resume_from_the_checkpoint(tmp_path):
    shape, x, y = _samples()
    settings = dict(epochs=3, batch_size=32, checkpoint_dir=str(tmp_path))
    out = run_local(train_ranks, 2, dict(x=x, y=y, shape=asdict(shape), settings=settings))
    assert out["world_size"] == 2 and len(set(out["digests"])) == 1
    assert out["losses"][-1] < 0.75 * out["losses"][0]
    # A rerun with more epochs resumes after epoch 3 (the earlier losses come from the checkpoint).
    more = HorovodRunner(np=-2, backend="torch").run(train_ranks, x=x, y=y, shape=asdict(shape),
                                                     settings={**settings, "epochs": 4})
    assert more["losses"][:3] == out["losses"] and len(more["losses"]) == 4 and more["steps"] > out["steps"]
    # The numpy forward pass (serving) is the network's.
    net = build_net(shape)
    net.load_state_dict({k: torch.tensor(v) for k, v in more["weights"].items()})
    np.testing.assert_allclose(forward_numpy(more["weights"], shape, x[:16]),
                               net(torch.tensor(x[:16])).detach().numpy(), atol=1e-5)


def test_the_checkpoint_goes_to_an_object_store_lake_and_a_rerun_resumes_from_it(s3_server):
    """Rank 0 writes the checkpoint through obstore with the settings the driver handed it, as a
    worker on another machine would: no shared disk, no environment read in the ranks."""
    from obstore.store import from_url

    from engine.config import LakeConfig, StorageConfig
    from engine.storage import LakeStore
    store = LakeStore.of(LakeConfig(root=s3_server.new_root("ckpt"), storage=StorageConfig(**s3_server.storage())))
    where = store.object_store_args("_manymodels/checkpoints/global_nn/run-1")
    shape, x, y = _samples()
    settings = dict(epochs=2, batch_size=32, checkpoint_store=where)
    out = run_local(train_ranks, 1, dict(x=x, y=y, shape=asdict(shape), settings=settings))
    assert from_url(**where).head("global_nn.pt")["size"] > 0
    more = run_local(train_ranks, 1, dict(x=x, y=y, shape=asdict(shape), settings={**settings, "epochs": 3}))
    assert more["losses"][:2] == out["losses"] and len(more["losses"]) == 3


def _fails_on_rank_one():
    from gpu import dist
    dist.init()
    if dist.rank() == 1:
        raise ValueError("rank one broke")
    return "never"


def test_a_failing_rank_is_reported_and_np_is_checked():
    with pytest.raises(RuntimeError, match="(?s)rank 1 of 2 failed.*ValueError: rank one broke"):
        run_local(_fails_on_rank_one, 2, {})
    with pytest.raises(ValueError, match="non-zero"):
        HorovodRunner(np=0)
    with pytest.raises(ValueError, match="horovod is not installed"):
        HorovodRunner(np=-1, backend="horovod")


def _world_size():
    from gpu import dist
    dist.init()
    return dist.size()


def test_a_rendezvous_port_taken_in_between_is_retried_on_a_new_port(monkeypatch):
    """The launcher finds a free port before rank 0 binds it; a process that takes it in between
    costs one retry, not a failed job."""
    import socket

    from gpu import dist
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        picked = []
        real = dist._free_port
        monkeypatch.setattr(dist, "_free_port", lambda: picked.append(taken.getsockname()[1] if not picked
                                                                      else real()) or picked[-1])
        assert run_local(_world_size, 1, {}) == 1      # rank 0 binds the port, whatever the world size
        assert len(picked) == 2                        # the taken port, then a new one


SETTINGS = dict(horizon=24, backtest={"windows": 2, "step": 24, "metric": "mase"},
                models=["seasonal_naive", "gpu_additive", "global_nn"], training={"max_history": 24 * 28},
                source={"kind": "synthetic", "exogenous": ["temperature"],
                        "synthetic": {"entities": 4, "periods": 24 * 42, "seed": 3}},
                global_nn={"np": -2, "lookback": 48, "hidden": 32, "epochs": 4, "batch_size": 32, "stride": 6})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    config = make_config(root / "lake", mlflow={"tracking_uri": tracking_uri(root / "mlflow.db"),
                                                "experiment": "gpu", "registered_model": "gpu-router"}, **SETTINGS)
    ingest(config, backend_for(config, "local"))
    report = train(config, backend="local")
    return config, report


def test_both_models_are_candidates_backtested_for_every_entity(trained):
    config, report = trained
    assert report.global_nn.world_size == 2 and report.global_nn.losses[-1] < report.global_nn.losses[0]
    models = DeltaRsLake(config.lake).read(MODELS)
    for row in models.itertuples():
        metrics = json.loads(row.metrics)
        assert {"gpu_additive", "global_nn"} <= set(metrics), row.entity_id
        assert np.isfinite(metrics["global_nn"]["mase"]) and np.isfinite(metrics["gpu_additive"]["mase"])
    network = DeltaRsLake(config.lake).read(GLOBAL_MODELS)
    assert list(network["run_id"]) == [report.run_id] and network["digest"].iloc[0] == report.global_nn.digest


def test_training_samples_leave_out_the_backtest_windows():
    shape, _, _ = _samples()
    rng = np.random.default_rng(1)
    n = 24 * 20
    frame = pd.DataFrame({"entity_id": "e", "ds": pd.date_range("2024-01-01", periods=n + 24, freq="h", tz="UTC"),
                          "y": np.r_[rng.normal(100, 5, n - 72), np.full(72, 1e9), np.full(24, np.nan)],
                          "temperature": rng.normal(10, 2, n + 24)})     # 24 future rows: weather, no load
    x, y, _, _ = panel_samples(frame, shape, step=1, holdout=72)
    assert len(x) == (n - 72) - 48 - 24 + 1 and np.abs(y).max() < 100 and np.abs(x[:, :48]).max() < 100
    leaky, _, _, _ = panel_samples(frame, shape, step=1, holdout=0)
    assert len(leaky) == len(x) + 72


def test_global_and_additive_models_are_published_and_served_by_the_routing_model(trained):
    config, report = trained
    lake = DeltaRsLake(config.lake)
    spec = TrainSpec.from_config(config)
    result = publish(config, report.run_id, train_seconds=report.seconds, backend="local")
    client = MlflowClient(config.mlflow.tracking_uri)
    children = client.search_runs([result.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    network = [r for r in children if r.data.tags.get("manymodels.kind") == "global_model"]
    assert len(network) == 1 and network[0].data.tags["manymodels.network"] == report.global_nn.digest
    losses = client.get_metric_history(network[0].info.run_id, "loss")
    assert [m.step for m in losses] == [0, 1, 2, 3]

    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    router = mlflow.pyfunc.load_model(result.model_uri)
    gold = lake.read("gold/series")
    trained_forecasts = lake.read(FORECASTS, filters=[("run_id", "=", report.run_id)])
    origins = trained_forecasts.groupby("entity_id")["forecast_origin"].first()
    requests = pd.concat([scoring_request(rows, origins[e], spec) for e, rows in gold.groupby("entity_id")])
    served = router.predict(requests).sort_values(["entity_id", "ds"], ignore_index=True)
    expected = trained_forecasts.sort_values(["entity_id", "ds"], ignore_index=True)
    np.testing.assert_allclose(served["yhat"], expected["yhat"], rtol=1e-6)

    # Both GPU models, as stored for an entity, forecast from the blob alone (what serving loads).
    entity = gold[gold["entity_id"] == gold["entity_id"].min()]
    history = entity.dropna(subset=["y"])[["ds", "y", "temperature"]].reset_index(drop=True)
    ahead = pd.DataFrame({"ds": pd.date_range(history["ds"].iloc[-1], periods=25, freq="h")[1:],
                          "temperature": np.linspace(5, 15, 24)})
    for name in ("gpu_additive", "global_nn"):
        model = make_model(name, spec.model, None, {"global_nn": _network(config)}).fit(history)
        again = load_model(model.to_bytes())
        np.testing.assert_allclose(again.forecast(ahead).mean, model.forecast(ahead).mean, rtol=1e-6)


def _network(config):
    return json.loads(DeltaRsLake(config.lake).read(GLOBAL_MODELS)["network"].iloc[0])


def test_global_nn_settings_are_checked(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="global_nn.np"):
        make_config(tmp_path, global_nn={"np": 0})
    without = make_config(tmp_path, models=["seasonal_naive", "theta"])
    assert make_config(tmp_path, models=["seasonal_naive", "theta"], global_nn={"epochs": 3}).fingerprint() \
        == without.fingerprint()          # settings of a model that is not a candidate shape nothing
    with pytest.raises(ModelError, match="no trained network"):
        make_model("global_nn", DAILY).fit(daily(100, 0))
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"gpu_additive, which need torch to train: install the gpu extra"):
        make_config(tmp_path, models=["seasonal_naive", "gpu_additive"])


def test_spark_trains_the_same_network_through_torch_distributor(trained, spark, tmp_path):
    config, report = trained
    # On a copy of the lake: training again replaces the forecasts the other tests read.
    shutil.copytree(config.lake.root, tmp_path / "lake")
    config = dataclasses.replace(config, lake=dataclasses.replace(config.lake, root=str(tmp_path / "lake")))
    on_spark = train(config, backend="spark", spark=spark)
    assert on_spark.global_nn.digest == report.global_nn.digest          # same samples, seed and 2 ranks
    assert on_spark.global_nn.losses == report.global_nn.losses
    assert dict(on_spark.champions) == dict(report.champions)


def test_too_little_history_for_the_network_fails_only_that_candidate(tmp_path):
    settings = {**SETTINGS, "models": ["seasonal_naive", "theta", "global_nn"],
                "global_nn": {**SETTINGS["global_nn"], "lookback": 24 * 40}}
    config = make_config(tmp_path / "lake", **settings)
    ingest(config, backend_for(config, "local"))
    report = train(config, backend="local")
    assert report.global_nn is None and "too little history for global_nn" in report.global_nn_error
    assert report.statuses["ok"] == 4 and set(report.champions) <= {"seasonal_naive", "theta"}
    backtests = DeltaRsLake(config.lake).read("gold/backtests")
    errors = backtests[backtests["candidate"] == "global_nn"]["error"]
    assert len(errors) == 4 * 2 and errors.str.contains("not trained for this run").all()
