"""Source registry: `source.kind` -> the datasets it produces and how to read its raw batches."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from engine.config import SourceConfig
from engine.sources.base import CALENDAR, EXOGENOUS, TARGET, BatchRejected, Dataset, RawBatch


@dataclass(frozen=True)
class Source:
    conf: SourceConfig

    @property
    def datasets(self) -> list[Dataset]:
        kind = self.conf.kind
        if kind == "gefcom2012":
            from engine.sources.gefcom2012 import gefcom2012_datasets
            return gefcom2012_datasets()
        if kind == "synthetic":
            from engine.sources.synthetic import synthetic_datasets
            return synthetic_datasets()
        from engine.sources.files import files_datasets
        return files_datasets(self.conf)

    def dataset(self, name: str) -> Dataset:
        return next(d for d in self.datasets if d.name == name)

    def read(self) -> Iterator[RawBatch]:
        """The raw batches; files are read one at a time as the caller iterates (a folder of
        large files never sits in memory at once). A missing path fails here, before any."""
        kind = self.conf.kind
        if kind == "gefcom2012":
            from engine.sources.gefcom2012 import read_gefcom2012
            return iter(read_gefcom2012())
        if kind == "synthetic":
            from engine.sources.synthetic import read_synthetic
            return iter(read_synthetic(self.conf.synthetic))
        from engine.sources.files import read_files
        return read_files(self.conf)


__all__ = ["Source", "Dataset", "RawBatch", "BatchRejected", "TARGET", "EXOGENOUS", "CALENDAR"]
