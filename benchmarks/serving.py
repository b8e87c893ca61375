"""Online scoring latency over loopback: `manymodels serve` vs a trivial MLflow pyfunc.

    python benchmarks/serving.py [--entities 100] [--requests 200] [--clients 8] [--workers 2] [--stock]

A routing model of `--entities` real ETS models (benchmarks/routing_fixture.py) is registered
in a throwaway sqlite store and served by `manymodels serve` (MLflow's scoring server). Over
one kept-alive HTTP connection per client it sends:

* 200 sequential 1-entity, 24-step requests (random entities);
* 200 sequential 100-entity, 24-step requests (2,400 rows each);
* 8 concurrent clients, each sending its share of 1-entity requests, in `--rounds` rounds of new
  connections (pooled): a kept-alive connection stays with one server worker, so one round's
  latency depends on how the 8 connections happened to split between the workers (measured
  here: 0.9x to 1.8x for the same code), and the rounds average that draw out.

Every model is used once before timing (the steady state of a server; a first use costs
one restore). The baseline, in the same run and on the same payloads, is a trivial pyfunc
that returns its input, served by `mlflow models serve` with as many workers. Goals (p50 against
the baseline): 1.5x for 1 entity and for the concurrent clients, 3x for 100 entities.
Appends rows to benchmarks/results/serving.csv.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import free_port, record, say  # noqa: E402


# p50 against the trivial pyfunc, per case in the order they run (issue 23): 1 entity, 100 entities, concurrent.
GOALS = (1.5, 3.0, 1.5)


def start(command: list[str], port: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
                               start_new_session=True)
    import requests
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                return process
        except requests.RequestException:
            pass
        if process.poll() is not None:
            raise SystemExit(f"server exited early: {' '.join(command)}")
        time.sleep(0.5)
    stop(process)
    raise SystemExit("server did not answer /ping in 180 s")


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def payload(entities: list[str], origins: dict, steps: int = 24) -> bytes:
    records = [{"entity_id": e, "ds": str(origins[e] + np.timedelta64(h, "h"))}
               for e in entities for h in range(1, steps + 1)]
    return json.dumps({"dataframe_records": records}).encode()


def timed(port: int, bodies: list[bytes]) -> list[float]:
    """Latency of each request over one kept-alive connection. The client sends each request in
    one write with TCP_NODELAY, as latency-minded HTTP clients do: a request split into header and
    body writes waits ~40 ms on loopback for the server's delayed ACK (Nagle's algorithm)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    for body in bodies:
        started = time.perf_counter()
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        content = response.read()
        out.append(time.perf_counter() - started)
        if response.status != 200:
            raise SystemExit(f"request failed ({response.status}): {content[:500]!r}")
    connection.close()
    return out


def concurrent(port: int, bodies: list[bytes], clients: int) -> tuple[list[float], float]:
    shares = [bodies[i::clients] for i in range(clients)]
    results: list[list[float]] = [[] for _ in range(clients)]
    threads = [threading.Thread(target=lambda i=i: results[i].extend(timed(port, shares[i]))) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return [x for r in results for x in r], len(bodies) / wall


def stats(latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8, help="rounds of concurrent clients, each on new "
                        "connections (see above)")
    parser.add_argument("--workers", type=int, default=2, help="server processes, for both servers (MLflow's "
                        "scoring server would stall ~40 ms per kept-alive response with more than one: see "
                        "engine/routing/nodelay.py)")
    parser.add_argument("--stock", action="store_true", help="also time the trivial pyfunc under `mlflow models "
                        "serve` (with more than one worker: its kept-alive stall)")
    args = parser.parse_args()

    import mlflow
    import yaml

    from benchmarks.routing_fixture import build_bundle, entity_id, fitted_ets
    from engine.routing.bundle import Bundle
    from engine.routing.pyfunc import log_routing_model
    from engine.tracking.client import experiment_id, prepared_uri

    base = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    uri = prepared_uri(f"sqlite:///{base / 'mlflow.db'}")
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = experiment_id(client, "serving-bench")
    build_bundle(base / "bundle", args.entities, fitted_ets(min(20, args.entities)))
    origins = {e: entry.origin.tz_localize(None).to_datetime64().astype("datetime64[s]")
               for e, entry in Bundle(base / "bundle").index.items()}
    with mlflow.start_run(experiment_id=experiment):
        log_routing_model(base / "bundle", cache_size=100_000, registered_model_name="bench-router")
        client.set_registered_model_alias("bench-router", "champion", "1")
        echo = mlflow.pyfunc.log_model(name="echo", python_model=str(ROOT / "benchmarks" / "echo_model.py"),
                                       pip_requirements=[])
    config = base / "serve.yaml"
    config.write_text(yaml.safe_dump({"name": "bench", "mlflow": {"tracking_uri": uri,
                                                                  "registered_model": "bench-router"}}))
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri,
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))

    rng = random.Random(0)
    ids = [entity_id(i) for i in range(args.entities)]
    one = [payload([rng.choice(ids)], origins) for _ in range(args.requests)]
    hundred = [payload(rng.sample(ids, min(100, len(ids))), origins) for _ in range(args.requests)]
    many = [payload([rng.choice(ids)], origins) for _ in range(args.requests * 2)]
    warm = [payload(ids[i:i + 50], origins) for i in range(0, len(ids), 50)]

    rows = []
    # The baseline runs in the same server stack as manymodels (uvicorn, no-delay connections,
    # the guards, MLflow's scoring app), so the ratio is the routing model's own cost.
    from engine.routing.server import MODEL_ENV, serve_command
    workers = ["--workers", str(args.workers)]
    servers = {
        "manymodels": (lambda port: [sys.executable, "-m", "engine", "serve", "--config", str(config),
                                     "--port", str(port), *workers], {}),
        "trivial pyfunc": (lambda port: serve_command("127.0.0.1", port, args.workers), {MODEL_ENV: echo.model_uri}),
    }
    if args.stock:
        servers["trivial pyfunc, mlflow models serve"] = (
            lambda port: [sys.executable, "-m", "mlflow", "models", "serve", "-m", echo.model_uri,
                          "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), *workers], {})
    try:
        for name, (command, extra) in servers.items():
            port = free_port()
            process = start(command(port), port, {**env, **extra})
            try:
                for _ in range(args.workers * 3):   # every worker process sees every model once
                    timed(port, warm)
                cases = {"1 entity x 24 steps, sequential": timed(port, one),
                         "100 entities x 24 steps, sequential": timed(port, hundred)}
                latencies, wall = [], 0.0
                for _ in range(args.rounds):
                    values, rate = concurrent(port, many, args.clients)
                    latencies, wall = latencies + values, wall + len(values) / rate
                rate = len(latencies) / wall
                cases[f"1 entity x 24 steps, {args.clients} concurrent clients"] = latencies
                for case, values in cases.items():
                    figures = stats(values)
                    throughput = rate if "concurrent" in case else len(values) / sum(values)
                    rows.append({"server": name, "case": case, "requests": len(values), "workers": args.workers,
                                 "entities_in_model": args.entities, **{k: round(v, 2) for k, v in figures.items()},
                                 "requests_per_s": round(throughput, 1)})
                    say(f"{name:14s} {case:42s} p50 {figures['p50_ms']:7.1f} ms  p95 {figures['p95_ms']:7.1f} ms  "
                        f"p99 {figures['p99_ms']:7.1f} ms  {throughput:7.1f} req/s")
            finally:
                stop(process)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ours = {r["case"]: r for r in rows if r["server"] == "manymodels"}
    theirs = {r["case"]: r for r in rows if r["server"] == "trivial pyfunc"}
    say("")
    for case, goal in zip(ours, GOALS):
        ratio = ours[case]["p50_ms"] / theirs[case]["p50_ms"]
        verdict = "met" if ratio <= goal else "NOT met"
        say(f"{case:42s} p50 manymodels {ours[case]['p50_ms']:6.1f} ms / trivial pyfunc "
            f"{theirs[case]['p50_ms']:6.1f} ms = {ratio:4.2f}x (goal <= {goal}x: {verdict})")
    say(f"results appended to {record('serving', rows)}")


if __name__ == "__main__":
    main()
