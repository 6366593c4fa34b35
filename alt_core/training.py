"""Framework-free training pieces: the optimizer, the learning-rate schedule, one epoch, scoring
(docs/method.md, "What trains").

The Ray Train loop (pipelines/train.py), tuning and evaluation call these, so the math is the same
whether a run is distributed or not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from alt_core.clips import ClipBatch
from alt_core.model import ALTModel, ALTOutput

# The score of a model: validation top-1, by which training keeps its best epoch, searches rank trials and the
# registry tags versions (never test data)
METRIC = "val_top1"


def forward(model: torch.nn.Module, batch: ClipBatch) -> ALTOutput:
    return model(pixels=batch.pixels) if batch.pixels is not None else model(tokens=batch.tokens)


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Learning rate of a 0-based epoch under cosine decay: a function of the epoch alone, so a resumed run
    continues the schedule without extra state."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def train_epoch(model: torch.nn.Module, core: ALTModel, batches: Iterable[ClipBatch],
                optimizer: torch.optim.Optimizer, device: torch.device, amp: bool = False) -> dict[str, float]:
    """One pass; `model` may be the DDP wrapper of `core`. Returns mean loss, accuracy, clip and step counts."""
    model.train()
    total_loss, correct, count, steps = 0.0, 0, 0, 0
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
        steps += 1
    return {"loss": total_loss / max(count, 1), "acc": correct / max(count, 1), "clips": count, "steps": steps}


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


NO_DECAY_NAMES = ("logit_scale", "temporal_pos", "region_time", "positional_embedding", "class_embedding")


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay only on weight matrices, never on scales, norms,
    biases or position embeddings (decaying those pulls them towards zero for no regularising gain)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            skip = param.ndim < 2 or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES
            (no_decay if skip else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)
