"""Ray Train stage: DDP training of the alignment + adapter from decoded clip shards (`alt train`).

Each epoch: train on this worker's shard, validate (views averaged per video, gathered across
workers), then every worker calls `ray.train.report`; rank 0 attaches a checkpoint in the
alt_core format (plus optimizer state) and logs to MLflow. A restarted worker group resumes
from the last reported checkpoint (`FailureConfig(max_failures)`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.dataset as pads
import ray
import ray.train
import torch
import torch.distributed as dist
from ray.data.expressions import col
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from alt_core.backbone import load_backbone
from alt_core.checkpoint import read_config, restore_state, save_checkpoint
from alt_core.clips import ClipFormat, read_format, shard_paths
from alt_core.corpus import EntityCorpus
from alt_core.manifest import read_labels
from alt_core.model import ALTConfig, ALTModel
from alt_core.train_state import load_optimizer, save_optimizer
from alt_core.training import (
    VideoScores,
    confusion_matrix,
    cosine_lr,
    few_shot_ids,
    iterate_rows,
    score_videos,
    topk_accuracy,
    train_epoch,
)
from pipelines import tracking


@dataclass
class TrainOptions:
    data: str
    corpus: str
    out: str
    labels: str | None = None
    adapter: str = "alt"
    num_queries: int = 8
    depth: int = 2
    width: int = 128
    heads: int = 4
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 32
    workers: int = 1
    gpu: bool = False
    shots: int | None = None
    seed: int = 0
    resume: bool = False
    tracking_uri: str | None = None
    max_failures: int = 2
    backbone: str = "alt-tiny"
    pretrained: str | None = None
    unfreeze_last_blocks: int = 0
    run_name: str | None = None


def split_rows(data: str | Path, split: str) -> list[tuple[str, str]]:
    """(video_id, label) of one split, read from shard metadata columns only."""
    table = pads.dataset([str(p) for p in shard_paths(data)], format="parquet").to_table(
        columns=["video_id", "label"], filter=pads.field("split") == split)
    return list(zip(table["video_id"].to_pylist(), table["label"].to_pylist(), strict=True))


def split_dataset(data: str | Path, splits: list[str], video_ids: set[str] | None = None) -> ray.data.Dataset:
    """A Ray dataset of some splits' rows, optionally limited to some videos (few-shot); lazy."""
    ds = ray.data.read_parquet([str(p.resolve()) for p in shard_paths(data)])
    ds = ds.filter(expr=col("split").is_in(splits))
    if video_ids is not None:
        ds = ds.filter(expr=col("video_id").is_in(sorted(video_ids)))
    return ds


def build_model(opts: TrainOptions, fmt: ClipFormat, labels: list[str], device: torch.device) -> ALTModel:
    corpus = EntityCorpus.load(opts.corpus)
    backbone_name = fmt.backbone.split(":")[0] if fmt.kind == "tokens" and fmt.backbone else opts.backbone
    if not corpus.backbone.startswith(backbone_name + ":"):
        raise ValueError(f"corpus {opts.corpus} was embedded with {corpus.backbone}, but training uses "
                         f"{backbone_name}; rebuild the corpus with --backbone {backbone_name}")
    config = ALTConfig(backbone=backbone_name, pretrained=opts.pretrained, adapter=opts.adapter,
                       num_queries=opts.num_queries, depth=opts.depth, width=opts.width, heads=opts.heads,
                       tome_r=fmt.tome_r, num_frames=fmt.shape[0], unfreeze_last_blocks=opts.unfreeze_last_blocks,
                       corpus_hash=corpus.content_hash)
    backbone = load_backbone(backbone_name, opts.pretrained, device=device)
    return ALTModel(config, backbone, corpus, labels).to(device)


def _gather(scores: VideoScores) -> VideoScores:
    if not (dist.is_available() and dist.is_initialized()):
        return scores
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, scores)
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    return merged


def _provenance(opts: TrainOptions, epoch: int, val_top1: float) -> dict:
    """What a checkpoint records about how it was made (evaluation reports read it)."""
    return {"epoch": epoch, "val_top1": val_top1, "seed": opts.seed, "shots": opts.shots, "data": opts.data,
            "corpus": opts.corpus, "epochs": opts.epochs, "lr": opts.lr}


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    opts = TrainOptions(**config["options"])
    labels, fmt = config["labels"], ClipFormat(**config["format"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    pid_dir = Path(opts.out) / "workers"
    pid_dir.mkdir(parents=True, exist_ok=True)
    (pid_dir / f"rank{rank}.pid").write_text(str(os.getpid()))  # lets operators (and tests) find workers
    torch.manual_seed(opts.seed)
    device = ray.train.torch.get_device()
    core = build_model(opts, fmt, labels, device)
    params = [p for p in core.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    meta = {"epoch": 0, "history": [], "run_id": None}
    checkpoint = ray.train.get_checkpoint()  # set after a worker-group restart
    if checkpoint is None and config["resume_from"]:
        checkpoint = Checkpoint.from_directory(config["resume_from"])  # `alt train --resume`
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            restore_state(core, ckpt_dir)
            meta = load_optimizer(ckpt_dir, optimizer)
    model = ray.train.torch.prepare_model(core) if ctx.get_world_size() > 1 else core
    tracking_uri = opts.tracking_uri or tracking.default_tracking_uri(opts.out)
    if rank == 0:
        meta["run_id"] = tracking.start_run(tracking_uri, Path(opts.out) / "mlartifacts",
                                            opts.run_name or f"{opts.adapter}-seed{opts.seed}",
                                            asdict(opts) | {"labels": len(labels)}, meta["run_id"])
        tracking.log_epoch({"resumed_from_epoch": meta["epoch"]}, meta["epoch"])
    label_index = {label: i for i, label in enumerate(labels)}
    amp = device.type == "cuda"
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    scores = VideoScores({}, {}, {})
    for epoch in range(meta["epoch"], opts.epochs):
        lr = cosine_lr(opts.lr, epoch, opts.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        batches = train_shard.iter_batches(batch_size=opts.batch_size, batch_format="numpy",
                                           local_shuffle_buffer_size=4 * opts.batch_size,
                                           local_shuffle_seed=opts.seed * 1000 + epoch)
        stats = train_epoch(model, core, iterate_rows(batches, fmt, label_index), optimizer, device, amp)
        seconds = time.perf_counter() - start
        val_batches = val_shard.iter_batches(batch_size=opts.batch_size, batch_format="numpy")
        scores = _gather(score_videos(model, iterate_rows(val_batches, fmt, label_index), device))
        val = topk_accuracy(scores.mean_logits(), scores.targets)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": stats["loss"], "train_acc": stats["acc"],
               "val_top1": val["top1"], "val_top5": val["top5"],
               "train_clips_per_s": stats["clips"] * ctx.get_world_size() / seconds}
        meta = {"epoch": epoch + 1, "history": meta["history"] + [row], "run_id": meta["run_id"]}
        if rank == 0:
            tracking.log_epoch(row, epoch + 1)
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(core, tmp, extra=_provenance(opts, epoch + 1, val["top1"]))
                save_optimizer(tmp, optimizer, meta)
                ray.train.report(row, checkpoint=Checkpoint.from_directory(tmp))
        else:
            ray.train.report(row)
    if rank == 0:
        matrix = confusion_matrix(scores.mean_logits(), scores.targets, len(labels))
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(core, tmp, extra=_provenance(opts, meta["epoch"], meta["history"][-1]["val_top1"]))
            version = tracking.finish_run(tmp, meta["history"], matrix, labels)
        (Path(opts.out) / "mlflow_run.json").write_text(json.dumps(
            {"run_id": meta["run_id"], "model_version": version, "tracking_uri": tracking_uri}))


def _latest_checkpoint(storage: Path, name: str) -> str | None:
    found = sorted((storage / name).glob("checkpoint_*"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def train(opts: TrainOptions) -> dict:
    """Train with Ray Train; returns a summary with the final checkpoint directory and MLflow run."""
    out = Path(opts.out).resolve()
    opts.out = str(out)
    fmt = read_format(opts.data)
    train_rows = split_rows(opts.data, "train")
    if not train_rows:
        raise ValueError(f"{opts.data} has no rows with split 'train'; decode a manifest with a train split")
    labels = read_labels(opts.labels) if opts.labels else sorted({label for _, label in train_rows})
    ids = few_shot_ids(train_rows, opts.shots, opts.seed) if opts.shots else None
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # same seed, same batches
    # materialized: on small machines a lazy stage must not compete with train workers for CPUs
    datasets = {"train": split_dataset(opts.data, ["train"], ids).materialize(),
                "val": split_dataset(opts.data, ["val"]).materialize()}
    storage = out / "ray"
    name = "train"
    if (storage / name).exists() and not opts.resume:
        raise FileExistsError(f"{storage / name} exists: pass --resume to continue that run or choose another --out")
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"options": asdict(opts), "labels": labels, "format": asdict(fmt),
                           "resume_from": _latest_checkpoint(storage, name) if opts.resume else None},
        scaling_config=ScalingConfig(num_workers=opts.workers, use_gpu=opts.gpu),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=opts.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets=datasets,
    )
    start = time.time()
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    final = out / "checkpoint"
    if final.exists():
        shutil.rmtree(final)
    with result.checkpoint.as_directory() as ckpt_dir:
        shutil.copytree(ckpt_dir, final)
    read_config(final)  # the copied checkpoint must load without Ray
    summary = {"checkpoint": str(final), "metrics": result.metrics, "seconds": round(time.time() - start, 1),
               "train_videos": len(ids) if ids else len({v for v, _ in train_rows}), "labels": len(labels),
               **json.loads((out / "mlflow_run.json").read_text())}
    (out / "train.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
