"""A Spark standalone cluster on 127.0.0.1 for benchmarks: a master and N one-core workers,
started with pyspark's own `spark-class` and stopped with every process they spawned.

    with StandaloneCluster(workers=2) as cluster:
        ... spark.master = cluster.url ...

Each daemon runs in its own process group, so stopping kills executors too; `stop()` waits
until the group is gone (no leftovers). Ports are picked free at start.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

from benchmarks.common import free_port

START_TIMEOUT = 90.0


def spark_home() -> Path:
    import pyspark
    return Path(pyspark.__file__).parent


class StandaloneCluster:
    def __init__(self, workers: int = 2, cores: int = 1, memory: str = "2g", log_dir: Optional[str] = None):
        self.workers, self.cores, self.memory = workers, cores, memory
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="manymodels-standalone-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port, self.ui_port = free_port(), free_port()
        self.processes: list[subprocess.Popen] = []
        self.groups: list[int] = []      # process group ids of the daemons (pid of each daemon)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _daemon(self, name: str, *args: str) -> subprocess.Popen:
        env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
               "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
               "SPARK_WORKER_DIR": str(self.log_dir / "work")}
        log = open(self.log_dir / f"{name}.log", "w")
        process = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args], stdout=log,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.processes.append(process)
        self.groups.append(process.pid)
        return process

    def start(self) -> "StandaloneCluster":
        self._daemon("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                     "--port", str(self.port), "--webui-port", str(self.ui_port))
        self._wait(lambda state: True, "the master")
        for i in range(self.workers):
            self._daemon(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                         "--cores", str(self.cores), "--memory", self.memory, "--webui-port", str(free_port()))
        self._wait(lambda state: sum(w["state"] == "ALIVE" for w in state.get("workers", [])) >= self.workers,
                   f"{self.workers} worker(s)")
        return self

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as response:
            return json.loads(response.read())

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            dead = [p for p in self.processes if p.poll() is not None]
            if dead:
                self.stop()
                raise RuntimeError(f"a Spark daemon exited while starting {what}; see logs in {self.log_dir}")
            try:
                if ready(self.state()):
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{what} did not come up within {START_TIMEOUT:.0f}s; see logs in {self.log_dir}")

    def stop(self) -> None:
        """SIGTERM each daemon's process group (executors included), SIGKILL what is left after 10 s."""
        for process in reversed(self.processes):
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        self.processes.clear()

    def leftovers(self) -> list[str]:
        """Live processes still in the daemons' process groups ("pid command"). Zombies are left
        out: a container whose init does not reap them keeps them, but they run nothing."""
        out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True).stdout
        live = []
        for line in out.splitlines():
            pid, pgid, stat, *command = line.split(None, 3)
            if int(pgid) in self.groups and not stat.startswith("Z"):
                live.append(f"{pid} {' '.join(command)[:120]}")
        return live

    def __enter__(self) -> "StandaloneCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
