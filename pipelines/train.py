"""Ray Train stage: DDP training of the alignment + adapter from decoded clip shards (`alt train`).

Each epoch: train on this worker's shard, validate (views averaged per video, gathered across
workers), then every worker calls `ray.train.report`; rank 0 attaches a checkpoint in the
alt_core format (plus optimizer state and the validation confusion matrix) and logs to MLflow. A
restarted worker group resumes from the latest checkpoint (`FailureConfig(max_failures)`); the run's
result is the checkpoint of the best validation epoch (never the test split), registered in MLflow.
The tune stage builds its trials with `build_trainer`, so a trial is exactly this training.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from alt_core.backbone import load_backbone
from alt_core.checkpoint import FILES, read_config, restore_state, save_checkpoint
from alt_core.clips import ClipDataError, ClipFormat, clip_batches
from alt_core.config import TrainConfig
from alt_core.corpus import EntityCorpus
from alt_core.model import ALTModel
from alt_core.train_state import load_optimizer, save_optimizer
from alt_core.training import (
    METRIC,
    VideoScores,
    build_optimizer,
    confusion_matrix,
    cosine_lr,
    score_videos,
    topk_accuracy,
    train_epoch,
)
from pipelines import tracking
from pipelines.console import ensure_ray
from pipelines.datasets import clip_dataset
from pipelines.inputs import TrainingInputs, check_inputs
from pipelines.jobs import RUN_NAME, TrainJob

logger = logging.getLogger(__name__)
CONFUSION_FILE = "val_confusion.json"
PROGRESS_FILE = "progress.jsonl"


def _gather(scores: VideoScores) -> VideoScores:
    if not (dist.is_available() and dist.is_initialized()):
        return scores
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, scores)
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    return merged


def _provenance(job: TrainJob, epoch: int, val_top1: float) -> dict:
    """What a checkpoint records about how it was made (evaluation reports read it)."""
    return {"epoch": epoch, METRIC: val_top1, "seed": job.train.seed, "shots": job.train.shots,
            "shots_file": job.train.shots_file, "steps": job.train.steps, "data": job.data,
            "corpus": job.corpus, "epochs": job.train.epochs, "lr": job.train.lr}


def epoch_batches(shard, schedule: TrainConfig, epoch: int) -> Iterator[dict]:
    """One epoch of shuffled train batches: one pass over the shard, or, with `steps`, exactly
    steps/epochs batches (the last epoch takes the remainder), passing over the shard as often as needed."""
    size = schedule.batch_size
    if schedule.steps is None:
        yield from shard.iter_batches(batch_size=size, batch_format="numpy", local_shuffle_buffer_size=4 * size,
                                      local_shuffle_seed=schedule.seed * 1000 + epoch)
        return
    share, extra = divmod(schedule.steps, schedule.epochs)
    wanted = share + (extra if epoch == schedule.epochs - 1 else 0)
    for repeat in itertools.count():
        before = wanted
        for batch in shard.iter_batches(batch_size=size, batch_format="numpy", local_shuffle_buffer_size=4 * size,
                                        local_shuffle_seed=(schedule.seed * 1000 + epoch) * 1000 + repeat):
            yield batch
            wanted -= 1
            if wanted == 0:
                return
        if wanted == before:
            raise ClipDataError("the train shard of this worker is empty")


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    job: TrainJob = config["job"]
    labels, fmt = config["labels"], ClipFormat(**config["format"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    out = Path(job.out)
    pid_dir = out / "workers"
    pid_dir.mkdir(parents=True, exist_ok=True)
    (pid_dir / f"rank{rank}.pid").write_text(str(os.getpid()))  # lets operators (and tests) find workers
    torch.manual_seed(job.train.seed)
    device = ray.train.torch.get_device()
    settings = job.model  # completed from the data and checked in the driver (`check_inputs`)
    core = ALTModel(settings, load_backbone(settings.backbone, settings.pretrained, device=device),
                    EntityCorpus.load(job.corpus), labels).to(device)
    optimizer = build_optimizer(core, job.train.lr, job.train.weight_decay)
    meta = {"epoch": 0, "history": [], "run_id": None}
    checkpoint = ray.train.get_checkpoint()  # set after a worker-group restart or on `--resume`
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            restore_state(core, ckpt_dir)
            meta = load_optimizer(ckpt_dir, optimizer)
    model = ray.train.torch.prepare_model(core) if ctx.get_world_size() > 1 else core
    if rank == 0:
        meta["run_id"] = tracking.start_run(config["tracking_uri"], out / "mlartifacts",
                                            job.run_name or f"{settings.adapter}-seed{job.train.seed}",
                                            job.params() | {"labels": len(labels)}, meta["run_id"],
                                            tags=config.get("tags"))
        tracking.log_epoch({"resumed_from_epoch": meta["epoch"]}, meta["epoch"])
    label_index = {label: i for i, label in enumerate(labels)}
    amp = device.type == "cuda"
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    batch_size, epochs = job.train.batch_size, job.train.epochs
    for epoch in range(meta["epoch"], epochs):
        lr = cosine_lr(job.train.lr, epoch, epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        batches = epoch_batches(train_shard, job.train, epoch)
        stats = train_epoch(model, core, clip_batches(batches, fmt, label_index), optimizer, device, amp)
        seconds = time.perf_counter() - start
        val_batches = val_shard.iter_batches(batch_size=batch_size, batch_format="numpy")
        scores = _gather(score_videos(model, clip_batches(val_batches, fmt, label_index), device))
        val = topk_accuracy(scores.mean_logits(), scores.targets)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": stats["loss"], "train_acc": stats["acc"],
               "train_steps": stats["steps"],
               METRIC: val["top1"], "val_top5": val["top5"],
               "train_clips_per_s": stats["clips"] * ctx.get_world_size() / seconds}
        meta = {"epoch": epoch + 1, "history": meta["history"] + [row], "run_id": meta["run_id"]}
        if rank == 0:
            tracking.log_epoch(row, epoch + 1)
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(core, tmp, provenance=_provenance(job, epoch + 1, val["top1"]))
                save_optimizer(tmp, optimizer, meta)
                matrix = confusion_matrix(scores.mean_logits(), scores.targets, len(labels))
                (Path(tmp) / CONFUSION_FILE).write_text(json.dumps(matrix.tolist()))
                ray.train.report(row, checkpoint=Checkpoint.from_directory(tmp))
            with (out / PROGRESS_FILE).open("a") as f:
                f.write(json.dumps(row) + "\n")
        else:
            ray.train.report(row)
    if rank == 0:
        tracking.end_run()


def build_trainer(job: TrainJob, datasets: dict, labels: list[str], fmt: ClipFormat,
                  callbacks: list | None = None, tags: dict | None = None) -> TorchTrainer:
    """The Ray Train trainer of a job, persisting under OUT/ray/train; `alt train` fits one, each `alt tune`
    trial fits one."""
    return TorchTrainer(
        train_loop,
        train_loop_config={"job": job, "labels": labels, "format": asdict(fmt), "tags": tags,
                           "tracking_uri": job.mlflow_uri()},
        scaling_config=ScalingConfig(num_workers=job.workers, use_gpu=job.gpu),
        run_config=RunConfig(name=RUN_NAME, storage_path=str(Path(job.out) / "ray"), callbacks=callbacks,
                             failure_config=FailureConfig(max_failures=job.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=METRIC,
                                                                checkpoint_score_order="max")),
        datasets=datasets,
    )


def training_datasets(job: TrainJob, inputs: TrainingInputs) -> dict:
    """Materialized train/val datasets: on small machines a lazy stage must not compete with train workers for
    CPUs."""
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # same seed, same batches
    return {"train": clip_dataset(job.data, ["train"], inputs.train_ids).materialize(),
            "val": clip_dataset(job.data, ["val"], inputs.val_ids).materialize()}


def _follow_progress(path: Path, epochs: int, stop: threading.Event) -> None:
    """Log rank 0's per-epoch rows as they land (the workers' own output goes to Ray's log files)."""
    shown = 0
    while True:
        stopping = stop.wait(1.0)
        lines = path.read_text().splitlines() if path.is_file() else []
        for line in lines[shown:]:
            row = json.loads(line)
            logger.info(f"train: epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.3f}  "
                        f"train acc {row['train_acc']:.3f}  val top-1 {row[METRIC]:.3f}  "
                        f"({row['train_clips_per_s']:.0f} clips/s)")
        shown = len(lines)
        if stopping:
            return


def train(job: TrainJob, inputs: TrainingInputs | None = None) -> dict:
    """Train with Ray Train; returns a summary with the best epoch's checkpoint directory and MLflow run.
    `inputs`: the job's checked inputs when the caller checked them already (`check_inputs`)."""
    out = Path(job.out).resolve()
    job = replace(job, out=str(out))
    inputs = inputs or check_inputs(job)  # every user error, before Ray starts a worker
    job = replace(job, model=inputs.model)
    labels, fmt, train_videos = inputs.labels, inputs.fmt, inputs.train_videos
    ensure_ray()
    datasets = training_datasets(job, inputs)
    out.mkdir(parents=True, exist_ok=True)
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    logger.info(f"train: {job.model.adapter} on {train_videos} videos x {len(labels)} classes, "
                f"{job.train.epochs} epochs, {job.workers} worker(s); run directory {out}")
    stop = threading.Event()
    follower = threading.Thread(target=_follow_progress, args=(out / PROGRESS_FILE, job.train.epochs, stop),
                                daemon=True)
    follower.start()
    start = time.time()
    try:
        result = build_trainer(job, datasets, labels, fmt).fit()
    finally:
        stop.set()
        follower.join()
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    summary = finish(job, result, labels, out / "checkpoint")
    summary.update(seconds=round(time.time() - start, 1), train_videos=train_videos, labels=len(labels))
    (out / "train.json").write_text(json.dumps(summary, indent=1, default=str))
    logger.info(f"train: best val top-1 {summary['best'][METRIC]:.3f} at epoch {summary['best']['epoch']}; "
                f"checkpoint {summary['checkpoint']} (MLflow model version {summary['model_version']})")
    return summary


def finish(job: TrainJob, result, labels: list[str], final: Path) -> dict:
    """Keep the best validation epoch's checkpoint in `final`, attach it and the curves to the MLflow run and
    register it as a new version of the model; returns the run's summary."""
    with result.checkpoint.as_directory() as latest_dir:
        meta = json.loads((Path(latest_dir) / "state.json").read_text())["meta"]
    best = result.get_best_checkpoint(METRIC, "max") or result.checkpoint
    version, provenance = publish_checkpoint(job, best, final, meta["run_id"], meta["history"], labels)
    return {"checkpoint": str(final), "best": {"epoch": provenance["epoch"], METRIC: provenance[METRIC]},
            "metrics": result.metrics, "history": meta["history"], "run_id": meta["run_id"],
            "model_version": version, "tracking_uri": job.mlflow_uri()}


def publish_checkpoint(job: TrainJob, checkpoint: Checkpoint, final: Path, run_id: str, history: list[dict],
                       labels: list[str], tags: dict | None = None) -> tuple[int, dict]:
    """Copy a reported checkpoint's model files to `final` (it must load without Ray), log it with the curves
    and its validation confusion matrix to the run, and register it; returns (model version, provenance)."""
    if final.exists():
        shutil.rmtree(final)
    final.mkdir(parents=True)
    with checkpoint.as_directory() as directory:
        for name in FILES:
            shutil.copy(Path(directory) / name, final / name)
        matrix = json.loads((Path(directory) / CONFUSION_FILE).read_text())
    provenance = read_config(final)["provenance"]
    version = tracking.publish_run(job.mlflow_uri(), run_id, final, history, matrix, labels,
                                   best_epoch=provenance["epoch"], tags=tags)
    return version, provenance
