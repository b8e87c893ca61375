"""The Spark backend retries the task of a Python worker that dies (OOM killer, segfault)."""
from __future__ import annotations

import pytest

from engine.backends.local import LocalBackend
from engine.backends.spark import SparkBackend
from engine.training.job import tag_with_plan
from tests.engine.backends.test_local import CONFIG, die_on_first_attempt, planned


@pytest.mark.spark
def test_spark_retries_the_task_of_a_dead_python_worker(spark):
    gold, extents, plan, spec = planned()
    frame = spark.createDataFrame(tag_with_plan(LocalBackend(CONFIG.lake), gold, extents, plan, spec))
    results = SparkBackend(spark, task=die_on_first_attempt).train(frame, plan, spec).toPandas()
    assert sorted(results["entity_id"]) == [f"entity_{i}" for i in range(4)]
    attempts = results.set_index("entity_id")["attempt"]
    assert attempts["entity_0"] >= 1
    assert (results["status"] == "ok").all()
