"""The medallion (sources -> bronze -> silver -> gold) and the frame backend it runs on."""
from __future__ import annotations

from engine.config import Config


def frames_for(config: Config, backend: str | None = None):
    """`SparkFrames` for the spark backend, JVM-free `LocalFrames` (delta-rs) otherwise."""
    from engine.lake import DeltaRsLake, SparkLake
    from engine.medallion.backends import LocalFrames, SparkFrames

    if (backend or config.backend) == "spark":
        from engine.spark import get_spark
        return SparkFrames(SparkLake(get_spark(config.spark, config.lake), config.lake))
    return LocalFrames(DeltaRsLake(config.lake))
