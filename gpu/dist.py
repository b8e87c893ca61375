"""Data-parallel training in the style of Databricks' HorovodRunner, over horovod or torch.distributed.

    from gpu.dist import HorovodRunner
    weights = HorovodRunner(np=-2).run(train, data=..., steps=100)   # 2 processes on the driver

`np < 0` runs |np| processes on this machine (the driver); `np > 0` runs np processes on the
Spark cluster, through pyspark's TorchDistributor (or `horovod.spark.run` when horovod is
installed). `run` returns rank 0's return value, like HorovodRunner. Inside `main`, the helpers
below (`init`, `rank`, `size`, `wrap`, `allreduce_mean`, `gather`) work on either library, so
one training function runs under both.

Without pyspark (a GPU box with torch alone) `np < 0` uses `run_local`: torch multiprocessing
with a TCP rendezvous on 127.0.0.1.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import sys
import traceback
from typing import Any, Callable

BACKEND_ENV = "MANYMODELS_DIST"       # "torch" or "horovod": which library the ranks use


def _horovod():
    try:
        import horovod.torch as hvd
        return hvd
    except ImportError:
        return None


class HorovodRunner:
    """`HorovodRunner(np=N).run(main, **kwargs)`; `backend`: "auto" (horovod if importable), "horovod", "torch"."""

    def __init__(self, np: int, use_gpu: bool = False, backend: str = "auto"):
        if not isinstance(np, int) or np == 0:
            raise ValueError("np must be a non-zero integer: np < 0 runs |np| processes on the driver, "
                             "np > 0 that many on the cluster")
        if backend not in ("auto", "horovod", "torch"):
            raise ValueError(f"backend must be auto, horovod or torch, got {backend!r}")
        if backend == "horovod" and _horovod() is None:
            raise ValueError("backend 'horovod' asked for, but horovod is not installed; use backend='torch'")
        self.np, self.use_gpu = np, use_gpu
        self.backend = "horovod" if backend == "horovod" or (backend == "auto" and _horovod()) else "torch"

    def run(self, main: Callable[..., Any], **kwargs) -> Any:
        """Run `main(**kwargs)` on every rank; rank 0's return value."""
        if self.backend == "horovod":
            import horovod
            if self.np < 0:
                return horovod.run(_entry, args=("horovod", main, kwargs), np=-self.np)[0]
            import horovod.spark
            return horovod.spark.run(_entry, args=("horovod", main, kwargs), num_proc=self.np)[0]
        try:
            from pyspark.ml.torch.distributor import TorchDistributor
            from pyspark.sql import SparkSession
            have_spark = SparkSession.getActiveSession() is not None
        except ImportError:
            have_spark = False
        if not have_spark:
            if self.np > 0:
                raise RuntimeError("np > 0 runs on a Spark cluster: start a SparkSession first "
                                   "(or use np < 0 to run on this machine)")
            return run_local(main, -self.np, kwargs, self.use_gpu)
        distributor = TorchDistributor(num_processes=abs(self.np), local_mode=self.np < 0, use_gpu=self.use_gpu)
        return distributor.run(_entry, "torch", main, kwargs)


def _entry(backend: str, main: Callable[..., Any], kwargs: dict) -> Any:
    os.environ[BACKEND_ENV] = backend
    try:
        return main(**kwargs)
    finally:
        shutdown()


def run_local(main: Callable[..., Any], nproc: int, kwargs: dict, use_gpu: bool = False) -> Any:
    """`main(**kwargs)` in `nproc` spawned processes on this machine; rank 0's result."""
    for attempt in range(_RENDEZVOUS_TRIES):
        outcomes = _run_ranks(main, nproc, kwargs, use_gpu)
        failed = {rank: value for rank, (ok, value) in outcomes.items() if not ok}
        if not failed:
            return outcomes[0][1]
        rank, error = sorted(failed.items())[0]
        # The free port is found before rank 0 binds it, so another process can take it in between:
        # the rendezvous fails before any training has run, and a new port is safe to try.
        if not _PORT_TAKEN.search(error) or attempt == _RENDEZVOUS_TRIES - 1:
            raise RuntimeError(f"rank {rank} of {nproc} failed:\n{error}")


_RENDEZVOUS_TRIES = 3
_PORT_TAKEN = re.compile(r"EADDRINUSE|[Aa]ddress already in use")


def _run_ranks(main: Callable[..., Any], nproc: int, kwargs: dict, use_gpu: bool) -> dict:
    """{rank: (ok, return value or traceback)}, stopping at the first rank that fails."""
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(nproc),
           BACKEND_ENV: "torch", "MANYMODELS_DIST_GPU": "1" if use_gpu else "0",
           "MANYMODELS_DIST_PARENT": str(os.getpid())}
    procs = [ctx.Process(target=_local_rank, args=(rank, env, main, kwargs, results)) for rank in range(nproc)]
    for proc in procs:
        proc.start()
    outcomes = {}
    try:
        for _ in procs:
            rank, ok, value = results.get()
            outcomes[rank] = (ok, value)
            if not ok:
                break
    finally:
        for proc in procs:
            proc.join(timeout=60 if all(ok for ok, _ in outcomes.values()) else 5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return outcomes


def _local_rank(rank: int, env: dict, main, kwargs, results) -> None:
    _die_with_parent(int(env["MANYMODELS_DIST_PARENT"]))
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
    try:
        value = main(**kwargs)
        results.put((rank, True, value))
    except BaseException:  # noqa: BLE001 - the parent reports the rank's traceback
        results.put((rank, False, traceback.format_exc()))
    finally:
        shutdown()


def _die_with_parent(parent_pid: int) -> None:
    """A rank dies with the process that spawned it, kill -9 included (Linux: PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- inside a rank ---------------------------------------------------------------------------

def _using_horovod() -> bool:
    return os.environ.get(BACKEND_ENV) == "horovod"


def init(use_gpu: bool = False):
    """Join the job (idempotent); the torch device this rank computes on."""
    import torch
    use_gpu = use_gpu or os.environ.get("MANYMODELS_DIST_GPU") == "1"
    if _using_horovod():
        hvd = _horovod()
        hvd.init()
        local = hvd.local_rank()
    else:
        import torch.distributed as dist
        local = int(os.environ.get("LOCAL_RANK", 0))
        if not dist.is_initialized() and "WORLD_SIZE" in os.environ:      # else: one process, no group
            backend = "nccl" if use_gpu and torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
    if use_gpu and torch.cuda.is_available():
        torch.cuda.set_device(local % torch.cuda.device_count())
        return torch.device("cuda", local % torch.cuda.device_count())
    return torch.device("cpu")


def rank() -> int:
    if _using_horovod():
        return _horovod().rank()
    import torch.distributed as dist
    return dist.get_rank() if dist.is_initialized() else 0


def size() -> int:
    if _using_horovod():
        return _horovod().size()
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_initialized() else 1


def wrap(model, optimizer, device):
    """Model and optimizer that average gradients across ranks, starting from rank 0's weights."""
    if _using_horovod():
        hvd = _horovod()
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        return model, hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    import torch.distributed as dist
    if not dist.is_initialized():
        return model, optimizer
    from torch.nn.parallel import DistributedDataParallel
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids), optimizer


def allreduce_mean(value: float) -> float:
    import torch
    if _using_horovod():
        return float(_horovod().allreduce(torch.tensor(value, dtype=torch.float64), op=_horovod().Average))
    import torch.distributed as dist
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def gather(obj: Any) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if _using_horovod():
        return _horovod().allgather_object(obj)
    import torch.distributed as dist
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if _using_horovod():
        _horovod().join()
        return
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if _using_horovod():
        return
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_initialized():
        dist.destroy_process_group()
