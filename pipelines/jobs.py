"""What `alt train`, `alt tune` and `alt infer` run: `TrainJob`, `SearchOptions` and `InferJob`, settings
dataclasses like those of `alt_core/config.py` (each field with its default and help), from which the CLI derives
its options. Light to import: the `alt` command imports this module whatever the verb. `pipelines/inputs.py`
checks a job's inputs."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Literal

from alt_core.config import DEFAULT_TOP_K, ALTConfig, Settings, TrainConfig, setting
from alt_core.errors import ConfigError

RUN_NAME = "train"  # Ray Train persists a job under OUT/ray/train
SCHEDULERS = ("asha", "fifo")


def default_tracking_uri(out_dir: str | Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


@dataclass
class TrainJob(Settings):
    """One training run: its inputs and outputs, how it is distributed, and what it trains."""

    data: str = setting(MISSING, "clip shards from `alt decode` (train and val splits)")
    corpus: str = setting(MISSING, "corpus .parquet from `alt corpus build`")
    out: str = setting(MISSING, "output directory: the run's (`alt train`) or the search's (`alt tune`)")
    model: ALTConfig = field(default_factory=ALTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    labels: str | None = setting(None, "label set file (default: the labels of the train split)")
    workers: int = setting(1, "DDP workers")
    gpu: bool = setting(False, "one GPU per worker")
    resume: bool = setting(False, "continue the run in OUT")
    tracking_uri: str | None = setting(None, "MLflow tracking URI (default: sqlite under OUT)")
    max_failures: int = setting(2, "worker-group restarts before giving up")
    run_name: str | None = setting(None, "MLflow run name (default: adapter and seed)", cli=False)

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_failures < 0:
            raise ConfigError(f"workers must be >= 1 and max_failures >= 0, got {self.workers} and "
                              f"{self.max_failures}")
        # Ray Train workers run in directories of their own: a path relative to where `alt` ran means nothing there
        for name in ("data", "corpus", "out", "labels"):
            value = getattr(self, name)
            if isinstance(value, str | Path) and "://" not in str(value):
                setattr(self, name, str(Path(value).expanduser().absolute()))

    def mlflow_uri(self) -> str:
        """The tracking URI given, or the sqlite store under OUT."""
        return self.tracking_uri or default_tracking_uri(self.out)

    def params(self) -> dict:
        """Flat parameters for MLflow."""
        flat = {k: v for k, v in asdict(self).items() if k not in ("model", "train")}
        return flat | self.model.to_dict() | self.train.to_dict()


@dataclass
class SearchOptions(Settings):
    """How a search runs: its space, scheduler, trials and resources."""

    space: str = setting(MISSING, "search space file, e.g. tune_spaces/tiny.yaml")
    trials: int | None = setting(None, "samples to draw (default: the space file's num_samples); grid entries "
                                       "multiply it")
    concurrent: int = setting(2, "trials at a time (capped to what the cluster fits)")
    scheduler: Literal["asha", "fifo"] = setting("asha", "asha (stop weak trials early) | fifo (every trial to "
                                                         "max_t)")
    workers_per_trial: int = setting(1, "DDP workers of each trial")
    gpu: bool = setting(False, "one GPU per trial worker")
    resume: bool = setting(False, "continue the search in OUT")

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler {self.scheduler!r}; choose {' or '.join(SCHEDULERS)}")
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {self.trials}")
        if self.concurrent < 1 or self.workers_per_trial < 1:
            raise ConfigError("--concurrent and --workers-per-trial must be >= 1")


@dataclass
class InferJob(Settings):
    """Batch inference over an archive (`alt infer`): which videos, which model, what to write."""

    out: str = setting(MISSING, "output directory of prediction shards (rerun the same command to resume)")
    model: str = setting(MISSING, "checkpoint directory, or a registry URI such as models:/alt@champion (resolved "
                                  "once, at start)")
    manifest: str | None = setting(None, "CSV/Parquet (path,label[,split]) or mmaction2 list of the videos")
    videos: str | None = setting(None, "a directory: every video file under it (instead of --manifest)")
    labels: str | None = setting(None, "label set file to score (open vocabulary; default: the model's labels)")
    top_k: int = setting(DEFAULT_TOP_K, "labels per video")
    clips: int = setting(1, "temporal clips per video, logits averaged")
    explain: bool = setting(True, "write each video's aligned entities")
    workers: int = setting(1, "model replicas (actors); decoding runs as CPU tasks beside them")
    gpu: bool = setting(False, "one GPU per model replica (bf16 autocast, alignment in fp32)")
    batch_size: int = setting(8, "videos per forward pass")
    shard_size: int | None = setting(None, "videos per output shard (default: ~4 shards per replica, at most 64)")
    labels_file: str | None = setting(None, "class names of an mmaction2 list manifest")
    tracking_uri: str | None = setting(None, "MLflow tracking URI of the registry (default: $MLFLOW_TRACKING_URI)")
    progress_every: int = setting(10, "print a progress line every N shards")

    def __post_init__(self) -> None:
        if (self.manifest is None) == (self.videos is None):
            raise ConfigError("pass exactly one of --manifest (a manifest file) or --videos (a directory of videos)")
        for name in ("top_k", "clips", "workers", "batch_size", "progress_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.shard_size is not None and self.shard_size < 1:
            raise ConfigError(f"--shard-size must be >= 1, got {self.shard_size}")
        # actors run in directories of their own: paths relative to where `alt` ran mean nothing there
        for name in ("out", "manifest", "videos", "labels", "labels_file", "model"):
            value = getattr(self, name)
            if value is not None and "://" not in value and not value.startswith("models:/"):
                setattr(self, name, str(Path(value).expanduser().absolute()))
