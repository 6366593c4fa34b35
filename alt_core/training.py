"""Framework-free training pieces: batches from clip shards, one epoch, evaluation, few-shot subsets.

The Ray Train loop (pipelines/train.py) and evaluation (pipelines/evaluate.py) call these, so the
math is the same whether a run is distributed or not.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from alt_core.clips import ClipFormat, frames_from_bytes, tokens_from_bytes
from alt_core.model import ALTModel, ALTOutput, FrameTokens


@dataclass
class ClipBatch:
    """A batch as the model takes it: pixels or cached tokens, plus targets and ids."""

    targets: torch.Tensor  # (B,) class index
    video_ids: list[str]
    pixels: torch.Tensor | None = None  # (B, T, 3, H, W) uint8
    tokens: FrameTokens | None = None

    def to(self, device: torch.device | str) -> ClipBatch:
        tokens = None
        if self.tokens is not None:
            t = self.tokens
            tokens = FrameTokens(t.frame.to(device), t.regions.to(device), t.sizes.to(device))
        pixels = self.pixels.to(device) if self.pixels is not None else None
        return ClipBatch(self.targets.to(device), self.video_ids, pixels, tokens)


def to_clip_batch(columns: dict, fmt: ClipFormat, label_index: dict[str, int]) -> ClipBatch:
    """Columns of a shard batch (lists/arrays of values) -> a ClipBatch; unknown labels raise."""
    missing = sorted({str(label) for label in columns["label"]} - set(label_index))
    if missing:
        raise ValueError(f"labels {missing[:5]} are not in the label set; pass the matching --labels file")
    targets = torch.tensor([label_index[str(label)] for label in columns["label"]])
    ids = [str(v) for v in columns["video_id"]]
    if fmt.kind == "frames":
        return ClipBatch(targets, ids, pixels=frames_from_bytes(list(columns["frames"]), fmt))
    return ClipBatch(targets, ids, tokens=tokens_from_bytes(list(columns["tokens"]), list(columns["sizes"]), fmt))


def forward(model: torch.nn.Module, batch: ClipBatch) -> ALTOutput:
    return model(pixels=batch.pixels) if batch.pixels is not None else model(tokens=batch.tokens)


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Learning rate of a 0-based epoch under cosine decay: a function of the epoch alone, so a resumed run
    continues the schedule without extra state."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def train_epoch(model: torch.nn.Module, core: ALTModel, batches: Iterable[ClipBatch],
                optimizer: torch.optim.Optimizer, device: torch.device, amp: bool = False) -> dict[str, float]:
    """One pass; `model` may be the DDP wrapper of `core`. Returns mean loss, accuracy and clip count."""
    model.train()
    total_loss, correct, count = 0.0, 0, 0
    for batch in batches:
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = forward(model, batch)
            loss = core.loss(out, batch.targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = len(batch.targets)
        total_loss += loss.item() * n
        correct += int((out.logits.argmax(-1) == batch.targets).sum())
        count += n
    return {"loss": total_loss / max(count, 1), "acc": correct / max(count, 1), "clips": count}


@dataclass
class VideoScores:
    """Per-video sums of view logits; merge across workers, then average."""

    sums: dict[str, torch.Tensor]
    views: dict[str, int]
    targets: dict[str, int]

    def merge(self, other: VideoScores) -> VideoScores:
        sums = dict(self.sums)
        views = dict(self.views)
        for vid, row in other.sums.items():
            sums[vid] = sums[vid] + row if vid in sums else row
            views[vid] = views.get(vid, 0) + other.views[vid]
        return VideoScores(sums, views, self.targets | other.targets)

    def add(self, video_id: str, logits: torch.Tensor, target: int) -> None:
        self.sums[video_id] = self.sums[video_id] + logits if video_id in self.sums else logits.clone()
        self.views[video_id] = self.views.get(video_id, 0) + 1
        self.targets[video_id] = target

    def mean_logits(self) -> dict[str, torch.Tensor]:
        return {vid: self.sums[vid] / self.views[vid] for vid in self.sums}


@torch.no_grad()
def score_videos(model: torch.nn.Module, batches: Iterable[ClipBatch], device: torch.device) -> VideoScores:
    """Run every view; accumulate logits per video (test-time views are averaged later)."""
    model.eval()
    scores = VideoScores({}, {}, {})
    for batch in batches:
        logits = forward(model, batch.to(device)).logits.float().cpu()
        for vid, row, target in zip(batch.video_ids, logits, batch.targets.tolist(), strict=True):
            scores.add(vid, row, target)
    return scores


def topk_accuracy(logits: dict[str, torch.Tensor], targets: dict[str, int], ks: tuple[int, ...] = (1, 5)) -> dict:
    if not logits:
        return {f"top{k}": float("nan") for k in ks} | {"videos": 0}
    ids = sorted(logits)
    stacked = torch.stack([logits[i] for i in ids])
    truth = torch.tensor([targets[i] for i in ids])
    out = {}
    for k in ks:
        kk = min(k, stacked.shape[1])
        out[f"top{k}"] = (stacked.topk(kk, dim=-1).indices == truth[:, None]).any(-1).float().mean().item()
    return out | {"videos": len(ids)}


def confusion_matrix(logits: dict[str, torch.Tensor], targets: dict[str, int], num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for vid, row in logits.items():
        matrix[targets[vid], int(row.argmax())] += 1
    return matrix


def few_shot_ids(video_labels: Iterable[tuple[str, str]], shots: int, seed: int) -> set[str]:
    """K videos per class, chosen by a seeded hash so the subset is stable across runs and machines."""
    by_class: dict[str, list[str]] = defaultdict(list)
    for vid, label in sorted(set(video_labels)):
        by_class[label].append(vid)
    chosen = set()
    for vids in by_class.values():
        ranked = sorted(vids, key=lambda v: hashlib.sha1(f"{seed}:{v}".encode()).hexdigest())
        chosen.update(ranked[:shots])
    return chosen


def iterate_rows(batches: Iterator[dict], fmt: ClipFormat, label_index: dict[str, int]) -> Iterator[ClipBatch]:
    for columns in batches:
        yield to_clip_batch(columns, fmt, label_index)


NO_DECAY_NAMES = ("logit_scale", "temporal_pos", "positional_embedding", "class_embedding")


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay only on weight matrices, never on scales, norms,
    biases or position embeddings (decaying those pulls them towards zero for no regularising gain)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            skip = param.ndim < 2 or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES
            (no_decay if skip else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)
