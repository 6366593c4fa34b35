"""Evaluation stage (`alt eval`): top-1/top-5 with multi-view averaging, as a Ray Data job.

Protocols: `supervised` (the checkpoint's own label set), `zero-shot` (a label set given with
--labels that the model never trained on; no retraining, only the class matrix changes) and
`few-shot-K` (a checkpoint trained with --shots K). The report names its protocol, data hash,
views and seed.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path

import torch
from ray.data import ActorPoolStrategy

from alt_core.clips import ClipDataError, ClipFormat, data_hash, read_format, split_rows, to_clip_batch
from alt_core.manifest import read_labels
from alt_core.registry import check_model, load_model
from alt_core.training import VideoScores, forward, topk_accuracy
from pipelines.console import ensure_ray
from pipelines.datasets import clip_dataset
from pipelines.inputs import check_labels

logger = logging.getLogger(__name__)


class Scorer:
    """Actor: loads the model (a directory, or a pinned registry version fetched where the actor runs) once,
    returns per-view logits."""

    def __init__(self, model: str, tracking_uri: str | None, labels: list[str] | None, fmt: dict):
        self.model, _ = load_model(model, tracking_uri)
        if labels:
            self.model.set_labels(labels)
        self.fmt = ClipFormat(**fmt)
        self.index = {label: i for i, label in enumerate(self.model.labels)}

    def __call__(self, batch: dict) -> dict:
        clip = to_clip_batch(batch, self.fmt, self.index)
        with torch.no_grad():
            logits = forward(self.model, clip).logits.float().numpy()
        return {"video_id": batch["video_id"], "target": clip.targets.numpy(), "logits": logits}


def protocol_of(trained: list[str], label_set: list[str] | None, provenance: dict) -> str:
    if label_set and not set(label_set) & set(trained):
        return "zero-shot"
    if label_set:
        return "open-set (labels overlap training)"
    if provenance.get("shots"):
        return f"few-shot-{provenance['shots']}"
    if provenance.get("shots_file"):
        return f"few-shot ({Path(provenance['shots_file']).name})"
    return "supervised"


def evaluate(checkpoint: str | Path, data: str | Path, labels: str | Path | None = None,
             splits: tuple[str, ...] = ("test",), batch_size: int = 32, workers: int = 1,
             out: str | Path | None = None, tracking_uri: str | None = None) -> dict:
    """Score every view of the chosen splits, average views per video, report top-1/top-5.

    checkpoint: a checkpoint directory or a registry URI such as models:/alt@champion (with tracking_uri).
    """
    source, (config, raw, trained, _) = check_model(checkpoint, tracking_uri)  # pinned, checked before any actor
    provenance = raw.get("provenance", {})
    label_set = read_labels(labels) if labels else None
    fmt = read_format(data)
    if not any(split_rows(data, split) for split in splits):
        raise ClipDataError(f"{data} has no rows in splits {list(splits)}; check --split")
    check_labels(data, splits, label_set or trained, str(labels) if labels else f"the labels of {source.title()}")
    backbone = raw.get("backbone_id")
    if fmt.kind == "tokens" and backbone and fmt.backbone != backbone:
        raise ClipDataError(f"the tokens in {data} were cached with backbone {fmt.backbone}, but the model reads "
                            f"{backbone}'s; decode the videos again with --cache-tokens and its backbone")
    protocol = protocol_of(trained, label_set, provenance)
    start = time.time()
    ensure_ray()
    scorer_args = {"model": source.pinned, "tracking_uri": tracking_uri, "labels": label_set,
                   "fmt": fmt.__dict__}
    scored = clip_dataset(data, splits).map_batches(
        Scorer, fn_constructor_kwargs=scorer_args, compute=ActorPoolStrategy(size=workers), batch_size=batch_size)
    scores = VideoScores({}, {}, {})
    for row in scored.iter_rows():
        scores.add(row["video_id"], torch.tensor(row["logits"]), int(row["target"]))
    metrics = topk_accuracy(scores.mean_logits(), scores.targets)
    views = sorted(set(scores.views.values()))
    report = {
        "protocol": protocol, "splits": list(splits), "checkpoint": str(checkpoint), "model": source.card(),
        "data": str(data),
        "data_hash": data_hash(data, splits), "labels": len(label_set or trained),
        "views_per_video": views[0] if len(views) == 1 else views, "frames": fmt.shape[0],
        "seed": provenance.get("seed"), "adapter": config.adapter, **metrics,
        "seconds": round(time.time() - start, 1), "machine": f"{platform.machine()} {platform.system()}",
    }
    logger.info(f"eval: {protocol} on {'+'.join(splits)}: top-1 {report['top1']:.3f}, top-5 {report['top5']:.3f} "
                f"({report['videos']} videos, {report['labels']} classes, {report['views_per_video']} view(s))")
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    return report
