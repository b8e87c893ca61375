"""Job configuration: YAML parsed once, at the edge, into frozen dataclasses.

Every error names the offending key (dotted path) and what is allowed, so a user can fix
the file without reading code. Workers receive these objects; they never read files.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from engine.backends import BACKEND_NAMES
from engine.errors import ConfigError, ManymodelsError
from engine.frequency import Frequency, config_name, frequency
from engine.hierarchy import RECONCILERS, HierarchyError, Tree
from engine.models.base import ModelSpec
from engine.models.registry import MODEL_CLASSES, MODEL_NAMES
from engine.models.space import model_space, tunable
from engine.normalize import entity_id

PARTITION_STRATEGIES = ("cost", "entity")
BACKENDS = BACKEND_NAMES     # engine.backends: the registry
METRICS = ("mae", "rmse", "smape", "mase", "pinball")
SELECTIONS = ("best", "combine")
SOURCE_KINDS = ("gefcom2012", "csv", "parquet", "synthetic")
INTERVALS = ("model", "conformal", "auto")
# Future weather where nothing gives it: normal weather plus the persisting part of the last day's
# departure from it (engine.training.history.persisted_departure), or normal weather alone.
WEATHER = ("persisted", "normal")
LOAD_SOURCES = ("gefcom2012",)      # electric load: never below zero, whatever a model extrapolates


@dataclass(frozen=True)
class StorageConfig:
    """How to reach an object-store lake (engine.storage maps it for delta-rs, Spark and plain objects).

    Credentials are never written here: `credentials` names the environment variables to read
    them from (unset: the cloud's default credential chain)."""

    endpoint: Optional[str] = None        # a non-default endpoint: an S3-compatible server, Azurite, a private link
    region: Optional[str] = None          # S3 region (default us-east-1)
    account: Optional[str] = None         # Azure storage account (az:// roots; abfss:// roots name it in the host)
    path_style: bool = False              # S3 path-style requests (most S3-compatible servers)
    allow_http: bool = False              # plain http, for a local test server only
    emulator: bool = False                # the Azure Storage emulator (Azurite)
    credentials: dict[str, str] = field(default_factory=dict)   # credential -> environment variable name
    timeout: float = 30.0                 # seconds per request before it counts as failed
    retries: int = 2                      # retries of a failed request (bounded: an outage fails fast)
    options: dict[str, str] = field(default_factory=dict)       # extra delta-rs storage options (no secrets)
    spark_conf: dict[str, str] = field(default_factory=dict)    # extra spark.hadoop.* settings (no secrets)

    def __post_init__(self) -> None:
        _check(self.timeout > 0, "lake.storage.timeout", "must be > 0 seconds")
        _check(self.retries >= 0, "lake.storage.retries", "must be >= 0")
        if self.endpoint is not None:
            _check(bool(re.fullmatch(r"https?://[^/\s]+(/\S*)?", self.endpoint)), "lake.storage.endpoint",
                   f"must be an http(s)://host[:port][/path] URL, got {self.endpoint!r}")
        from engine.storage import CREDENTIALS
        unknown = sorted(set(self.credentials) - set(CREDENTIALS))
        _check(not unknown, "lake.storage.credentials",
               f"has unknown credential(s) {unknown}; allowed: {', '.join(CREDENTIALS)} (each names an environment "
               "variable to read, never the secret itself)")
        bad = sorted(k for k, v in self.credentials.items() if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v))
        _check(not bad, "lake.storage.credentials",
               f"must map each credential to an environment variable name (letters, digits, '_'); {bad} do not: "
               "put the secret in the environment, not in the config")


@dataclass(frozen=True)
class LakeConfig:
    root: str = "./lakehouse"
    storage: StorageConfig = field(default_factory=StorageConfig)

    def __post_init__(self) -> None:
        from engine.storage import LakeStore
        LakeStore.parse_root(self.root, self.storage)     # an unsupported scheme fails here, before any work


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "manymodels"
    ui: bool = True
    shuffle_partitions: int = 8
    log_level: str = "ERROR"
    task_max_failures: int = 4
    conf: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.shuffle_partitions >= 1, "spark.shuffle_partitions", "must be >= 1")
        _check(self.task_max_failures >= 1, "spark.task_max_failures", "must be >= 1 (1: no retries)")
        levels = ("ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF")
        _check(self.log_level.upper() in levels, "spark.log_level", f"must be one of {', '.join(levels)}")


@dataclass(frozen=True)
class MlflowConfig:
    """Tracking (parent run + a child run per entity) and the registry gate."""

    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "manymodels-nightly"
    registered_model: str = "manymodels-router"
    child_runs: bool = True
    log_workers: int = 0
    promotion_tolerance: float = 0.02
    # Seconds the pre-flight check waits for a tracking server before the job gives up.
    timeout: float = 10.0

    def __post_init__(self) -> None:
        _check(bool(self.tracking_uri.strip()), "mlflow.tracking_uri", "must not be empty")
        _check(self.timeout > 0, "mlflow.timeout", "must be > 0 (seconds)")
        _check(bool(self.experiment.strip()), "mlflow.experiment", "must not be empty")
        _check(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.registered_model)), "mlflow.registered_model",
               f"must be letters, digits, '.', '_' or '-' (it becomes part of models:/ URIs), "
               f"got {self.registered_model!r}")
        _check(self.log_workers >= 0, "mlflow.log_workers", "must be >= 0 (0: one per CPU core)")
        _check(self.promotion_tolerance >= 0, "mlflow.promotion_tolerance",
               "must be >= 0 (a fraction: 0.02 lets a challenger be up to 2% worse than the champion)")


@dataclass(frozen=True)
class RoutingConfig:
    """The routing model that serves every entity's champion (engine.routing)."""

    shard_size: int = 256
    cache_size: int = 1024
    max_steps: int = 0

    def __post_init__(self) -> None:
        _check(self.shard_size >= 1, "routing.shard_size", "must be >= 1 (entities per shard file)")
        _check(self.cache_size >= 1, "routing.cache_size", "must be >= 1 (models kept in memory per process)")
        _check(self.max_steps >= 0, "routing.max_steps", "must be >= 0 (0: four times the horizon)")


@dataclass(frozen=True)
class StreamingConfig:
    """`manymodels score --stream` (engine.scoring.stream): Delta tables under `lake.root`."""

    requests: str = "gold/score_requests"
    forecasts: str = "gold/streamed_forecasts"
    rejects: str = "gold/streamed_rejects"
    checkpoint: str = "_checkpoints/score_stream"
    trigger_seconds: float = 10.0
    max_files_per_trigger: int = 0

    def __post_init__(self) -> None:
        paths = {"requests": self.requests, "forecasts": self.forecasts, "rejects": self.rejects,
                 "checkpoint": self.checkpoint}
        for key, path in paths.items():
            _check(bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_./-]*", path)) and ".." not in path.split("/"),
                   f"streaming.{key}", f"must be a table path under lake.root such as 'gold/score_requests', "
                   f"got {path!r}")
        _check(len(set(paths.values())) == len(paths), "streaming", "requests, forecasts, rejects and checkpoint "
               "must be four different paths")
        _check(self.trigger_seconds > 0, "streaming.trigger_seconds", "must be > 0 (seconds between micro-batches)")
        _check(self.max_files_per_trigger >= 0, "streaming.max_files_per_trigger",
               "must be >= 0 (0: Delta's default of 1000 new files per micro-batch)")


@dataclass(frozen=True)
class NightlyConfig:
    """The nightly job's policies (engine.nightly)."""

    reuse_models: bool = True
    lock_timeout: float = 0.0
    lease_ttl: float = 120.0

    def __post_init__(self) -> None:
        _check(self.lock_timeout >= 0, "nightly.lock_timeout",
               "must be >= 0 seconds (0: exit at once when another job holds the lake)")
        _check(self.lease_ttl >= 1, "nightly.lease_ttl",
               "must be >= 1 second (how long a killed job's lease on the lake outlives it)")


@dataclass(frozen=True)
class ColumnsConfig:
    entity: str = "entity_id"
    time: str = "ds"
    target: str = "y"


@dataclass(frozen=True)
class SyntheticConfig:
    entities: int = 20
    start: str = "2022-01-01"
    periods: int = 24 * 365
    seed: int = 0
    freq: Optional[str] = None      # the grid it is sampled on (default: series.freq)

    def __post_init__(self) -> None:
        _check(self.entities >= 1, "source.synthetic.entities", "must be >= 1")
        _check(self.periods >= 2, "source.synthetic.periods", "must be >= 2")
        if self.freq is not None:
            try:
                object.__setattr__(self, "freq", frequency(self.freq).alias)
            except ValueError as exc:
                raise ConfigError(f"config key 'source.synthetic.freq' {exc}") from None


@dataclass(frozen=True)
class SourceConfig:
    kind: str = "gefcom2012"
    path: Optional[str] = None
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    exogenous: list[str] = field(default_factory=list)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        _check(self.kind in SOURCE_KINDS, "source.kind", f"must be one of {', '.join(SOURCE_KINDS)}, got {self.kind!r}")
        if self.kind in ("csv", "parquet"):
            _check(bool(self.path), "source.path", f"is required for source.kind {self.kind!r} (a file or folder)")
        reserved = {"entity_id", "ds", "y"}
        clash = sorted(reserved.intersection(self.exogenous))
        _check(not clash, "source.exogenous", f"must not list the long-format columns {clash}")


@dataclass(frozen=True)
class SeriesConfig:
    """The grid of every series (engine.frequency). Keys left out follow `freq` (Config resolves them)."""

    freq: str = "h"
    season_lengths: Optional[list[int]] = None      # default: the frequency's natural cycles (24, 168 hourly)
    # true: no forecast, bound or quantile below 0; false: none clipped; left out: true for load
    # sources (LOAD_SOURCES), else per entity, when its history was never negative (a note says so).
    nonnegative: Optional[bool] = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "freq", frequency(self.freq).alias)     # one spelling everywhere after this
        except ValueError as exc:
            raise ConfigError(f"config key 'series.freq' {exc}") from None
        if self.season_lengths is not None:
            _check(all(s >= 1 for s in self.season_lengths), "series.season_lengths", "must all be >= 1")

    @property
    def frequency(self) -> Frequency:
        return frequency(self.freq)


@dataclass(frozen=True)
class HierarchyConfig:
    """Entities that add up (engine.hierarchy): each parent is the sum of its children. Forecasts of
    the entities in it are reconciled after training by the best of `methods` on the backtests."""

    parents: dict[str, list[str]] = field(default_factory=dict)
    methods: list[str] = field(default_factory=lambda: list(RECONCILERS))
    # How far a parent's history may be from its children's sum (a fraction of its load) before its
    # tree is left unreconciled: forcing load that does not add up to add up would be silently wrong.
    tolerance: float = 0.01

    def __post_init__(self) -> None:
        parents = {entity_id(p): [entity_id(c) for c in kids] for p, kids in self.parents.items()}
        object.__setattr__(self, "parents", parents)     # ids as ingest stores them
        try:
            Tree(parents)
        except HierarchyError as exc:
            raise ConfigError(f"config key 'hierarchy.parents' {exc}") from None
        unknown = [m for m in self.methods if m not in RECONCILERS]
        _check(bool(self.methods) and not unknown, "hierarchy.methods",
               f"must list some of {', '.join(RECONCILERS)}" + (f"; unknown: {unknown}" if unknown else ""))
        _check(0 <= self.tolerance < 1, "hierarchy.tolerance",
               f"must be a fraction of the parent's load between 0 and 1 (0.01: 1%), not {self.tolerance!r}")

    @property
    def tree(self) -> Tree:
        return Tree(self.parents)


@dataclass(frozen=True)
class QualityConfig:
    """How silver flags suspicious values and how gold fills gaps."""

    outlier_z: float = 6.0
    outlier_window: Optional[int] = None     # steps (default: a week of sub-daily data, two years monthly)
    max_fill_gap: Optional[int] = None       # steps (default: two weeks of sub-daily data, two months monthly)
    # Longer ids are flagged in silver (flag_bad_id) and left out of gold: ids become MLflow run
    # names and tags, and a person has to be able to read them.
    max_id_length: int = 256

    def __post_init__(self) -> None:
        _check(self.outlier_z > 0, "quality.outlier_z", "must be > 0")
        _check(1 <= self.max_id_length <= 5000, "quality.max_id_length", "must be between 1 and 5000 (MLflow's "
               "tag limit)")
        if self.outlier_window is not None:
            _check(self.outlier_window >= 3, "quality.outlier_window", "must be >= 3")
        if self.max_fill_gap is not None:
            _check(self.max_fill_gap >= 0, "quality.max_fill_gap", "must be >= 0")


@dataclass(frozen=True)
class BacktestConfig:
    windows: int = 3
    step: Optional[int] = None     # steps between origins (default: the horizon)
    metric: str = "mase"
    # best: the candidate with the best backtest is the champion; combine: the equal-weight mean of
    # the training.ensemble_size best is (default: combine at monthly and longer steps, best below).
    select: Optional[str] = None
    # Fit each candidate afresh at every window (true), at the first only (false), or at every k-th (k);
    # the windows between carry the last fit over to their longer history without its search
    # (statsforecast's cross_validation `refit`: parameters fixed; arima re-estimates its
    # coefficients for the order it found), for the models that can.
    # Default: false below daily steps (a window adds a week to months of history; fits cost most
    # there), true at daily and longer steps.
    refit: Any = None
    # Also judge candidates on the weeks the forecast covers in each of the last `years` years (the
    # same time of year: load follows the seasons, and a July forecast picked on June weeks alone
    # favours what did well in June). Those windows need that much history and fit afresh.
    years: int = 0

    @property
    def refit_every(self) -> int:
        """Windows between fits: 1 refits every window, 0 fits only the first."""
        return 0 if self.refit is False else int(self.refit)

    def __post_init__(self) -> None:
        _check(self.windows >= 1, "backtest.windows", "must be >= 1")
        _check(self.years >= 0, "backtest.years", f"must be >= 0 (years back), got {self.years}")
        _check(self.refit is None or isinstance(self.refit, bool) or (isinstance(self.refit, int) and self.refit >= 1),
               "backtest.refit",
               f"must be true, false or a number of windows >= 1, got {self.refit!r}")
        _check(self.select in (None, *SELECTIONS), "backtest.select",
               f"must be one of {', '.join(SELECTIONS)}, got {self.select!r}")
        _check(self.step is None or self.step >= 1, "backtest.step", "must be >= 1")
        _check(self.metric in METRICS, "backtest.metric", f"must be one of {', '.join(METRICS)}, got {self.metric!r}")


@dataclass(frozen=True)
class TrainingConfig:
    """Per-entity training: how much history to fit, interval levels, ensemble and fault policy."""

    max_history: Optional[int] = None      # steps (default: 12 weeks of sub-daily data, 20 years monthly)
    long_history: Optional[int] = None     # steps a long-memory model fits (default: 3 years sub-daily)
    levels: list[int] = field(default_factory=lambda: [80, 95])
    # model: each model's own bands; conformal: from the champion's backtest errors per step;
    # auto: conformal for the entities whose champion's own bands score worse on held-out windows
    intervals: str = "model"
    weather: str = "persisted"
    ensemble_size: Optional[int] = None      # default: 3 (2 at monthly and longer steps, where they are combined)
    seed: int = 0
    workers: int = 0
    fail_fast: bool = False
    tuned_params: str = "latest"

    def __post_init__(self) -> None:
        if self.max_history is not None:
            _check(self.max_history >= 2, "training.max_history", "must be >= 2 steps")
        if self.max_history is not None and self.long_history is not None:
            _check(self.long_history >= self.max_history, "training.long_history",
                   f"must be >= training.max_history ({self.max_history}): it is the history of long-memory models")
        _check(bool(self.levels) and all(0 < lvl < 100 for lvl in self.levels), "training.levels",
               "must list interval levels in percent, each between 0 and 100 (e.g. [80, 95])")
        _check(len(set(self.levels)) == len(self.levels), "training.levels", "lists a level twice")
        _check(self.intervals in INTERVALS, "training.intervals",
               f"must be one of {', '.join(INTERVALS)}, got {self.intervals!r}")
        _check(self.weather in WEATHER, "training.weather",
               f"must be one of {', '.join(WEATHER)}, got {self.weather!r}")
        _check(self.ensemble_size is None or self.ensemble_size >= 2, "training.ensemble_size", "must be >= 2")
        _check(self.workers >= 0, "training.workers", "must be >= 0 (0: one per CPU core)")
        _check(bool(self.tuned_params.strip()), "training.tuned_params",
               "must be latest (the last `manymodels tune` run), none, or a tuning run id")


@dataclass(frozen=True)
class SearchBudget:
    """How long a hyperopt search may run and when it gives up."""

    max_evals: int = 20
    timeout: float = 3600.0       # seconds for the whole search (0: no limit)
    trial_timeout: float = 600.0  # seconds per trial (0: no limit)
    early_stop: int = 10          # stop after this many trials without a better loss (0: never)

    def check(self, key: str) -> None:
        _check(self.max_evals >= 1, f"{key}.max_evals", "must be >= 1")
        _check(self.timeout >= 0, f"{key}.timeout", "must be >= 0 seconds (0: no limit)")
        _check(self.trial_timeout >= 0, f"{key}.trial_timeout", "must be >= 0 seconds (0: no limit)")
        _check(self.early_stop >= 0, f"{key}.early_stop", "must be >= 0 trials (0: never stop early)")


@dataclass(frozen=True)
class EntitySearchConfig(SearchBudget):
    """A small hyperopt search per entity inside training (off while `models` is empty)."""

    models: list[str] = field(default_factory=list)
    max_evals: int = 8
    timeout: float = 120.0
    trial_timeout: float = 60.0
    early_stop: int = 4

    def __post_init__(self) -> None:
        self.check("tuning.per_entity")


@dataclass(frozen=True)
class TuningConfig(SearchBudget):
    """`manymodels tune`: a cluster-wide hyperopt search per model on a sample of entities."""

    models: list[str] = field(default_factory=list)
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    sample: int = 12
    seed: int = 0
    parallelism: int = 0
    per_entity: EntitySearchConfig = field(default_factory=EntitySearchConfig)

    def __post_init__(self) -> None:
        self.check("tuning")
        _check(self.sample >= 1, "tuning.sample", "must be >= 1 entity")
        _check(self.parallelism >= 0, "tuning.parallelism", "must be >= 0 (0: Spark's default parallelism)")


@dataclass(frozen=True)
class GlobalNNConfig:
    """The `global_nn` candidate: one network trained on every entity before the per-entity models."""

    np: int = -1                 # HorovodRunner np: < 0 processes on the driver, > 0 processes on the cluster
    use_gpu: bool = False
    lookback: int = 0            # steps the network reads (0: the longest season length)
    hidden: int = 64
    blocks: int = 2
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 0.001
    samples_per_entity: int = 64     # most recent training origins per entity
    stride: int = 0              # steps between training origins (0: the shortest season length)
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.np != 0, "global_nn.np", "must not be 0: < 0 runs |np| processes on the driver, "
               "> 0 runs np processes on the Spark cluster")
        _check(self.lookback >= 0, "global_nn.lookback", "must be >= 0 steps (0: the longest season length)")
        _check(4 <= self.hidden <= 4096, "global_nn.hidden", "must be between 4 and 4096 units")
        _check(1 <= self.blocks <= 16, "global_nn.blocks", "must be between 1 and 16")
        _check(self.epochs >= 1, "global_nn.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "global_nn.batch_size", "must be >= 1")
        _check(0 < self.learning_rate < 1, "global_nn.learning_rate", "must be between 0 and 1")
        _check(self.samples_per_entity >= 1, "global_nn.samples_per_entity", "must be >= 1")
        _check(self.stride >= 0, "global_nn.stride", "must be >= 0 steps (0: the shortest season length)")


@dataclass(frozen=True)
class PartitionsConfig:
    """How entities are grouped into tasks (see partitions/)."""

    strategy: str = "cost"
    tasks_per_core: int = 4

    def __post_init__(self) -> None:
        _check(self.strategy in PARTITION_STRATEGIES, "partitions.strategy",
               f"must be one of {', '.join(PARTITION_STRATEGIES)}, got {self.strategy!r}")
        _check(self.tasks_per_core >= 1, "partitions.tasks_per_core", "must be >= 1")


@dataclass(frozen=True)
class Config:
    name: str
    lake: LakeConfig = field(default_factory=LakeConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    series: SeriesConfig = field(default_factory=SeriesConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    horizon: Optional[int] = None      # steps of series.freq (default: a week hourly, a year monthly)
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    models: Optional[list[str]] = None      # default: the frequency's (engine.frequency.Frequency.models)
    backend: str = "spark"
    max_failure_rate: float = 0.05
    training: TrainingConfig = field(default_factory=TrainingConfig)
    partitions: PartitionsConfig = field(default_factory=PartitionsConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    nightly: NightlyConfig = field(default_factory=NightlyConfig)
    model_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    global_nn: GlobalNNConfig = field(default_factory=GlobalNNConfig)
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)

    def __post_init__(self) -> None:
        _check(bool(self.name.strip()), "name", "must not be empty")
        _check(self.horizon is None or self.horizon >= 1, "horizon",
               f"must be >= 1 (steps of series.freq), got {self.horizon}")
        self._follow_frequency()
        _check(bool(self.models), "models", f"must list at least one of {', '.join(MODEL_NAMES)}")
        unknown = [m for m in self.models if m not in MODEL_CLASSES]
        _check(not unknown, "models", f"has unknown model(s) {unknown}; allowed: {', '.join(MODEL_NAMES)}")
        _check(len(set(self.models)) == len(self.models), "models", "lists a model twice")
        _check(self.backend in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        _check(0.0 <= self.max_failure_rate <= 1.0, "max_failure_rate", "must be between 0 and 1")
        self._check_models_for_freq()
        self._check_hyperparameters()
        self._check_torch()

    def _follow_frequency(self) -> None:
        """Keys the config left out take the frequency's defaults (engine.frequency), so a config
        naming only the source, series.freq and horizon is sensible at every frequency."""
        freq = self.series.frequency

        def given(section, **defaults):
            missing = {k: v for k, v in defaults.items() if getattr(section, k) is None}
            return dataclasses.replace(section, **missing) if missing else section

        set_ = object.__setattr__     # frozen: resolved once, here, before anything reads them
        synthetic = self.source.synthetic
        if synthetic.freq is None:
            set_(self, "source", dataclasses.replace(self.source, synthetic=dataclasses.replace(
                synthetic, freq=self.series.freq)))
        set_(self, "series", given(self.series, season_lengths=list(freq.seasons)))
        if self.horizon is None:
            set_(self, "horizon", freq.horizon)
        set_(self, "backtest", given(self.backtest, step=self.horizon, select=freq.select, refit=not freq.sub_daily))
        if self.models is None:
            set_(self, "models", list(freq.models))
        set_(self, "quality", given(self.quality, outlier_window=freq.outlier_window,
                                    max_fill_gap=freq.max_fill_gap))
        max_history = self.training.max_history or freq.max_history
        set_(self, "training", given(self.training, max_history=max_history,
                                     long_history=max(freq.long_history, max_history),
                                     ensemble_size=freq.ensemble_size))

    def _check_torch(self) -> None:
        import importlib.util
        needing = [m for m in self.models if MODEL_CLASSES[m].needs_torch]
        _check(not needing or importlib.util.find_spec("torch") is not None, "models",
               f"lists {', '.join(needing)}, which need torch to train: install the gpu extra "
               "(pip install -e '.[gpu]', or make setup-gpu)")

    def _check_models_for_freq(self) -> None:
        """Fail before any work when a candidate cannot work with the series and columns configured
        (each model declares what it needs: engine.models.base.ForecastModel)."""
        freq = self.series.frequency
        odd = [s for s in self.series.season_lengths if s > 1 and s not in freq.cycles]
        fitting = (f"use {', '.join(map(str, freq.cycles))} (a day, a week or a year in steps)" if freq.cycles
                   else f"{freq.label} data has no season: set it to [] or leave it out")
        _check(not odd, "series.season_lengths",
               f"has {odd}, which spans no day, week or year at series.freq {config_name(freq)!r} "
               f"({freq.label}); {fitting}")
        for name in self.models:
            cls = MODEL_CLASSES[name]
            others = [m for m in self.models if not MODEL_CLASSES[m].combines_candidates]
            _check(not cls.combines_candidates or len(others) >= 2, "models",
                   f"lists {name}, which combines the best other candidates: list at least two others")
            _check(not cls.needs_sub_daily or freq.sub_daily, "models",
                   f"lists {name}, which needs sub-daily data (it models the hour of the day): series.freq is "
                   f"{config_name(freq)!r} ({freq.label})")
            missing = [c for c in cls.needs_exogenous if c not in self.source.exogenous]
            _check(not missing, "models", f"lists {name}, which {cls.needs_why or 'needs ' + ', '.join(missing)}: "
                   f"add {', '.join(missing)} to source.exogenous")
            _check(not cls.needs_season or any(s > 1 for s in self.series.season_lengths), "models",
                   f"lists {name}, which needs at least one series.season_lengths entry > 1")
            _check(not cls.needs_trained_network or not self.backtest.years, "backtest.years",
                   f"must be 0 with {name} among the models: its network is trained once on the whole panel up to "
                   "the recent backtest windows, so it has seen the earlier years' windows")

    def _check_hyperparameters(self) -> None:
        """model_params and tuning.space against what each model declares."""
        for model, params in self.model_params.items():
            _check(model in MODEL_CLASSES, "model_params",
                   f"has unknown model {model!r}; allowed: {', '.join(MODEL_NAMES)}")
            try:
                MODEL_CLASSES[model].resolve_params(params)
            except ManymodelsError as exc:
                raise ConfigError(f"config key 'model_params.{model}' is invalid: {exc}") from None
        for key, models, ensemble in (("tuning.models", self.tuning.models, True),
                                      ("tuning.per_entity.models", self.tuning.per_entity.models, False)):
            unknown = [m for m in models if m not in self.models]
            _check(not unknown, key, f"lists {unknown}, which are not candidates in models ({', '.join(self.models)})")
            fixed = [m for m in models if m not in tunable([m], ensemble)]
            _check(not fixed, key, f"lists {fixed}, which cannot be searched here (searchable: "
                   f"{', '.join(tunable(MODEL_CLASSES, ensemble))})")
        for model, given in self.tuning.space.items():
            _check(model in MODEL_CLASSES, "tuning.space",
                   f"has unknown model {model!r}; allowed: {', '.join(MODEL_NAMES)}")
            try:
                model_space(model, given)
            except ValueError as exc:
                raise ConfigError(f"config key 'tuning.space.{model}' is invalid: {exc}") from None

    @property
    def tuned_models(self) -> list[str]:
        """Models `manymodels tune` searches: tuning.models, else every tunable candidate."""
        return list(self.tuning.models) or tunable(self.models)

    def model_spec(self):
        """What every per-entity model needs to know (engine.models.ModelSpec)."""
        return ModelSpec(freq=self.series.freq, season_lengths=tuple(self.series.season_lengths),
                         levels=tuple(sorted(self.training.levels)), exogenous=tuple(self.source.exogenous),
                         seed=self.training.seed, max_history=self.training.max_history,
                         nonnegative=self.nonnegative)

    @property
    def nonnegative(self) -> Optional[bool]:
        """series.nonnegative, or true for a load source; None: inferred per entity."""
        if self.series.nonnegative is not None:
            return self.series.nonnegative
        return True if self.source.kind in LOAD_SOURCES else None

    @property
    def history_steps(self) -> int:
        """Steps of history each entity's training reads: years when a long-history model is a candidate."""
        if any(MODEL_CLASSES[m].long_history for m in self.models):
            return self.training.long_history
        return self.training.max_history

    def fingerprint(self) -> str:
        """Hash of everything that shapes the models: where and how a job runs (spark,
        backend, partitions, mlflow, nightly) is left out, since backends give the same models."""
        import hashlib
        import json
        shaping = {k: v for k, v in dataclasses.asdict(self).items()
                   if k not in ("spark", "backend", "partitions", "mlflow", "nightly", "lake", "tuning", "global_nn")}
        if "global_nn" in self.models:
            shaping["global_nn"] = {k: v for k, v in dataclasses.asdict(self.global_nn).items()
                                    if k not in ("np", "use_gpu")}     # where it trains does not shape it
        if self.tuning.per_entity.models:    # the search inside training shapes the models
            shaping["tuning"] = {"space": self.tuning.space, "per_entity": dataclasses.asdict(self.tuning.per_entity)}
        return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def layers_fingerprint(self) -> str:
        """Hash of what shapes silver and gold from the same bronze: the source's columns and
        regressors, the series' frequency and seasons, the quality rules (a change rebuilds them)."""
        import hashlib
        import json
        shaping = {"source": {"kind": self.source.kind, "columns": dataclasses.asdict(self.source.columns),
                              "exogenous": list(self.source.exogenous)},
                   "series": {"freq": self.series.freq, "season_lengths": self.series.season_lengths},
                   "quality": dataclasses.asdict(self.quality)}
        return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def check_against_data(self, series_lengths: Mapping[str, int]) -> None:
        """Reject settings the ingested data cannot support (called once gold is known)."""
        if not series_lengths:
            raise ConfigError("the source produced no series: check source.kind/source.path and the input rows")
        longest = max(series_lengths.values())
        too_long = [s for s in self.series.season_lengths if s > longest]
        _check(not too_long, "series.season_lengths",
               f"has season length(s) {too_long} longer than the longest series ({longest} steps); "
               "use shorter seasons or ingest more history")
        unknown = [n for n in self.hierarchy.tree.nodes if n not in series_lengths]
        _check(not unknown, "hierarchy.parents",
               f"names {len(unknown)} entit{'y' if len(unknown) == 1 else 'ies'} not in gold.series: "
               f"{', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''}")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' {message}")


def load_config(path: str | Path, overrides: Optional[Mapping[str, Any]] = None) -> Config:
    """Read a YAML config file; `overrides` are merged on top (dotted keys allowed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return parse_config(data)


def parse_config(data: Mapping[str, Any]) -> Config:
    """Build a `Config` from plain data (already-parsed YAML)."""
    return _build(Config, data, "")


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _build(cls: type, data: Any, prefix: str):
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{where}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)} in {where}; "
                          f"allowed: {', '.join(fields)}")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing config key(s) {', '.join(prefix + k for k in missing)}")
    values = {name: _coerce(hints[name], data[name], prefix + name) for name in data}
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, key + ".")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {_describe(value)}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}' must be a mapping, got {_describe(value)}")
        if args[1] is str:   # e.g. spark.conf: Spark takes every value as a string
            return {str(k): str(v) for k, v in value.items()}
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:   # checked by the section that owns it (e.g. against a model's hyperparameters)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {_describe(value)}")
        return value
    raise TypeError(f"config field {key} has an unsupported type {hint!r}")  # a bug in this module


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"
