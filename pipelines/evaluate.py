"""Evaluation stage (`alt eval`): top-1/top-5 with multi-view averaging, as a Ray Data job.

Protocols: `supervised` (the checkpoint's own label set), `zero-shot` (a label set given with
--labels that the model never trained on; no retraining, only the class matrix changes) and
`few-shot-K` (a checkpoint trained with --shots K). The report names its protocol, data hash,
views and seed.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path

import pyarrow.dataset as pads
import torch
from ray.data import ActorPoolStrategy

from alt_core.checkpoint import load_checkpoint, read_config
from alt_core.clips import ClipFormat, read_format, shard_paths
from alt_core.manifest import read_labels
from alt_core.training import VideoScores, forward, to_clip_batch, topk_accuracy
from pipelines.train import split_dataset


class Scorer:
    """Actor: loads the checkpoint once, returns per-view logits."""

    def __init__(self, checkpoint: str, labels: list[str] | None, fmt: dict):
        self.model = load_checkpoint(checkpoint)
        if labels:
            self.model.set_labels(labels)
        self.fmt = ClipFormat(**fmt)
        self.index = {label: i for i, label in enumerate(self.model.labels)}

    def __call__(self, batch: dict) -> dict:
        clip = to_clip_batch(batch, self.fmt, self.index)
        with torch.no_grad():
            logits = forward(self.model, clip).logits.float().numpy()
        return {"video_id": batch["video_id"], "target": clip.targets.numpy(), "logits": logits}


def data_hash(data: str | Path, splits: list[str]) -> str:
    """Identity of the evaluated rows: video ids, labels and views (stable across machines)."""
    table = pads.dataset([str(p) for p in shard_paths(data)], format="parquet").to_table(
        columns=["video_id", "label", "view", "split"], filter=pads.field("split").isin(splits))
    rows = sorted(zip(*(table[c].to_pylist() for c in ("video_id", "label", "view")), strict=True))
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def evaluate(checkpoint: str | Path, data: str | Path, labels: str | Path | None = None,
             splits: tuple[str, ...] = ("test",), batch_size: int = 32, workers: int = 1,
             out: str | Path | None = None) -> dict:
    """Score every view of the chosen splits, average views per video, report top-1/top-5."""
    raw = read_config(checkpoint)
    trained_labels = (Path(checkpoint) / "labels.txt").read_text().splitlines()
    label_set = read_labels(labels) if labels else None
    fmt = read_format(data)
    extra = raw.get("extra", {})
    if label_set and not set(label_set) & set(trained_labels):
        protocol = "zero-shot"
    elif label_set:
        protocol = "open-set (labels overlap training)"
    elif extra.get("shots"):
        protocol = f"few-shot-{extra['shots']}"
    else:
        protocol = "supervised"
    start = time.time()
    scorer_args = {"checkpoint": str(checkpoint), "labels": label_set, "fmt": fmt.__dict__}
    scored = split_dataset(data, list(splits)).map_batches(
        Scorer, fn_constructor_kwargs=scorer_args, compute=ActorPoolStrategy(size=workers), batch_size=batch_size)
    scores = VideoScores({}, {}, {})
    for row in scored.iter_rows():
        scores.add(row["video_id"], torch.tensor(row["logits"]), int(row["target"]))
    metrics = topk_accuracy(scores.mean_logits(), scores.targets)
    if metrics["videos"] == 0:
        raise ValueError(f"{data} has no rows in splits {list(splits)}; check --split")
    views = sorted(set(scores.views.values()))
    report = {
        "protocol": protocol, "splits": list(splits), "checkpoint": str(checkpoint), "data": str(data),
        "data_hash": data_hash(data, list(splits)), "labels": len(label_set or trained_labels),
        "views_per_video": views[0] if len(views) == 1 else views, "frames": fmt.shape[0],
        "seed": extra.get("seed"), "adapter": raw["model"]["adapter"], **metrics,
        "seconds": round(time.time() - start, 1), "machine": f"{platform.machine()} {platform.system()}",
    }
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    return report
