"""Spark session factory: Delta Lake enabled, quiet, Arrow on. Nothing runs at import."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from engine.config import LakeConfig, SparkConfig
from engine.storage import LakeStore, StorageError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Settings every session needs; `spark.conf` in the config may override any of them.
_BASE_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    # Timestamps are stored as UTC instants; a UTC session keeps Spark and delta-rs readers in agreement.
    "spark.sql.session.timeZone": "UTC",
    # Keep table features that delta-rs reads and writes too (see DESIGN.md section 2).
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    "spark.databricks.delta.schema.autoMerge.enabled": "true",
    "spark.driver.extraJavaOptions": "-Dlog4j2.level=error",
}


def get_spark(conf: SparkConfig, lake: Optional[LakeConfig] = None) -> "SparkSession":
    """Return the active session, or start one for `conf.master` with Delta Lake enabled and,
    for a lake on object storage, the store's Hadoop connector and settings.

    delta-spark's JARs (and the connector: hadoop-aws or hadoop-azure at pyspark's Hadoop
    version) are resolved from Maven Central on the first start and cached in the Ivy cache
    (~/.ivy2.5.2) afterwards; a local lake adds none.
    """
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    store = LakeStore.of(lake) if lake is not None else None
    active = SparkSession.getActiveSession()
    if active is not None:
        if store is not None and not store.is_local:
            _reach_from(active, store)
        return active
    # Python workers must run the driver's interpreter (the project's virtualenv), not whatever
    # `python3` is on PATH; a cluster sets its own via PYSPARK_PYTHON or spark.pyspark.python.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(_with_retries(conf.master, conf.task_max_failures)).appName(conf.app_name)
    settings = {**_BASE_CONF,
                # A crashed or killed Python worker (OOM) fails its task; Spark reruns it.
                "spark.task.maxFailures": str(conf.task_max_failures),
                "spark.ui.enabled": str(conf.ui).lower(),
                "spark.sql.shuffle.partitions": str(conf.shuffle_partitions),
                # Delta's log replay defaults to 50 tasks, which dominates small local jobs.
                "spark.databricks.delta.snapshotPartitions": str(conf.shuffle_partitions),
                "spark.ui.showConsoleProgress": "false",
                **(store.spark_conf() if store is not None else {}),
                **conf.conf}
    for key, value in settings.items():
        builder = builder.config(key, value)
    packages = store.spark_packages() if store is not None else []
    with first_resolution(_ivy_home(settings), packages):
        spark = configure_spark_with_delta_pip(builder, extra_packages=packages).getOrCreate()
    spark.sparkContext.setLogLevel(conf.log_level.upper())
    _no_jars_on_python_path(spark)
    return spark


def _ivy_home(settings: dict) -> Path:
    """Where spark-submit's Ivy keeps its cache: `spark.jars.ivy`, else Spark 4's default."""
    return Path(settings.get("spark.jars.ivy") or Path.home() / ".ivy2.5.2").expanduser()


@contextlib.contextmanager
def first_resolution(ivy_home: Path, packages: list[str]) -> Iterator[None]:
    """Serialize the first JVM start of a package set on this machine.

    Ivy's cache is not safe for two JVMs resolving into it at once: on a fresh machine two
    sessions started together (two test workers, two jobs) truncate each other's downloads
    ("Downloaded file size (0) doesn't match expected Content Length") and one fails to start.
    The first start holds a lock file in the Ivy home and leaves a marker once its JARs are in
    the cache; later starts see the marker and take no lock."""
    from importlib.metadata import version
    key = hashlib.sha1(" ".join([version("delta-spark"), *sorted(packages)]).encode()).hexdigest()[:16]
    marker = ivy_home / f".manymodels-resolved-{key}"
    if marker.exists():
        yield
        return
    import fcntl
    ivy_home.mkdir(parents=True, exist_ok=True)
    with open(ivy_home / ".manymodels-resolve.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
            marker.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _no_jars_on_python_path(spark: "SparkSession") -> None:
    """Spark puts every `spark.jars.packages` JAR on the Python path of the driver and of each
    Python worker (SPARK-5864: for Python code shipped in JARs; none of ours is). The first
    `importlib.metadata` lookup then reads each JAR's index, and the AWS SDK bundle that
    hadoop-aws brings has hundreds of thousands of entries: tqdm's and MLflow's lookups at import
    cost each new Python worker 30-40 s on an S3 lake. Python code comes from the environment."""
    from pyspark import SparkFiles
    context = spark.sparkContext
    context._python_includes = [p for p in context._python_includes or [] if not p.lower().endswith(".jar")]
    root = os.path.realpath(SparkFiles.getRootDirectory())
    sys.path[:] = [p for p in sys.path
                   if not (p.lower().endswith(".jar") and os.path.realpath(p).startswith(root))]


_FILESYSTEMS = {"s3": "org.apache.hadoop.fs.s3a.S3AFileSystem",
                "azure": "org.apache.hadoop.fs.azurebfs.SecureAzureBlobFileSystem",
                "gcs": "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem"}


def _reach_from(spark: "SparkSession", store: LakeStore) -> None:
    """Give a session started elsewhere (a notebook, spark-submit) this lake's Hadoop settings;
    its connector JAR cannot be added after start, so a session without it is told how to start."""
    store.spark_packages()          # the emulator check
    jvm = spark.sparkContext._jvm
    try:
        jvm.java.lang.Class.forName(_FILESYSTEMS[store.kind], True,
                                    jvm.Thread.currentThread().getContextClassLoader())
    except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        raise StorageError(f"the running Spark session cannot open {store.describe()}: it was started without "
                           f"{', '.join(store.spark_packages())}; start it with spark.jars.packages set to that "
                           "(or let manymodels start the session)") from None
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in store.spark_conf().items():
        if key.startswith("spark.hadoop."):
            hadoop.set(key[len("spark.hadoop."):], value)


def _with_retries(master: str, max_failures: int) -> str:
    """Local mode ignores spark.task.maxFailures; its master URL carries the count instead."""
    match = re.fullmatch(r"local\[(\*|\d+)\]", master.strip())
    return f"local[{match.group(1)},{max_failures}]" if match else master


def spark_cores(spark: "SparkSession", wait_seconds: float = 30.0) -> int:
    """Task slots of the session: local[N]'s N, or the executors' cores on a cluster.

    `defaultParallelism` is at least 2 on a cluster (Spark's floor for shuffles), so a one-core
    worker would be planned as two. Executors register a moment after the session starts, so a
    cluster is asked again for up to `wait_seconds` before falling back to that parallelism."""
    context = spark.sparkContext
    if context.master.startswith("local"):
        return int(context.defaultParallelism)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            jvm = context._jsc.sc()       # private[spark] in Scala, public to py4j
            slots = int(jvm.maxNumConcurrentTasks(jvm.resourceProfileManager().defaultResourceProfile()))
        except Exception:  # noqa: BLE001 - an API change must not stop training: fall back
            slots = 0
        if slots > 0 or time.monotonic() > deadline:
            return slots or int(context.defaultParallelism)
        time.sleep(0.5)
