"""The Ray backend: pandas frames and Delta through delta-rs like the local backend, training
tasks on `ray.data` (a local Ray instance, or the cluster in RAY_ADDRESS)."""
from __future__ import annotations

import logging
import os
from typing import Optional

import pandas as pd

from engine.backends.local import PandasBackend
from engine.errors import ManymodelsError
from engine.training.tasks import Progress, train_bucket
from partitions.plan import PartitionPlan


class RayBackend(PandasBackend):
    """``ray.data`` ``groupby("bucket").map_groups`` over the planned buckets."""

    name = "ray"

    def train(self, planned: pd.DataFrame, plan: PartitionPlan, spec,
              progress: Optional[Progress] = None) -> pd.DataFrame:
        try:
            import ray
        except ImportError:
            raise ManymodelsError("backend 'ray' needs Ray: pip install -e '.[ray]' "
                                  "(or pick backend local or spark)") from None
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)
        if not ray.is_initialized():
            ray.init(num_cpus=None if os.environ.get("RAY_ADDRESS") else self.workers, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress is not None
        # The sort-based shuffle: Ray 2.60's default (SHUFFLE_V2, hash aggregator actors) spends about
        # 7 s starting actors on every groupby, longer than a small night's fits.
        context.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
        buckets = [rows for _, rows in planned.groupby("bucket", sort=True)]
        dataset = ray.data.from_pandas(buckets)
        # One shuffle partition per bucket, not Ray's default of 200 mostly empty ones.
        results = (dataset.groupby("bucket", num_partitions=max(1, len(buckets)))
                   .map_groups(lambda rows: train_bucket(rows.drop(columns="bucket"), spec), batch_format="pandas")
                   .to_pandas())
        if progress:
            progress(len(results))
        return results
