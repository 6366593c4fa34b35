"""Clips with motion captions for alt-tiny pretraining, the temporal head that reads them, and the motion probe.

The clips come from the SynthActions renderer, restricted to the seen shape x motion pairs of
`split_classes`: the motion words are learned, the held-out compositions are never shown, so zero-shot
on the novel classes stays a test of composition. The temporal head exists only for pretraining (and for
the motion probe that checks it); ALT reads the per-frame tower.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from alt_core.backbone import Backbone
from alt_core.config import CLASS_TEMPLATES
from alt_core.synthetic.scenes import BACKGROUNDS
from alt_core.synthetic.synth import (
    MOTIONS,
    PAIR_MOTIONS,
    ClipSpec,
    parse_class,
    render_clip,
    sample_clip_spec,
    split_classes,
)
from alt_core.tome import RegionEncoder
from alt_core.video import train_indices

MOTION_PROBE_SEED = 20_011  # pretraining clips use other seeds


@functools.cache
def pretraining_pairs() -> tuple[str, ...]:
    """The shape x motion classes pretraining may show: the seen classes only."""
    return tuple(split_classes()[0])


def motion_words(motion: str, partner: str | None) -> str:
    """"chasing another shape" becomes "chasing a blue square" when the caption names the partner."""
    if partner is None or motion not in PAIR_MOTIONS:
        return motion
    verb = motion.removesuffix(" another shape")
    return f"{verb} {'an' if partner[0] in 'aeiou' else 'a'} {partner}"


@dataclass(frozen=True)
class ClipCaption:
    """What a caption says about a clip; None means "not mentioned"."""

    motion: str
    shape: str | None
    color: str | None = None
    background: str | None = None
    partner: str | None = None  # "blue square" for PAIR_MOTIONS
    bare: bool = False  # the class name as it is, "circle orbiting", as ALT prompts it

    def describes(self, spec: ClipSpec) -> bool:
        partner = f"{spec.partner_color} {spec.partner_shape}" if spec.partner_shape else None
        return (self.motion == spec.motion
                and self.shape in (None, spec.shape) and self.color in (None, spec.color)
                and self.background in (None, spec.background) and self.partner in (None, partner))

    def text(self) -> str:
        if self.bare:
            return f"{self.shape} {self.motion}"
        words = [w for w in (self.color, self.shape or "shape") if w]
        phrase = ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
        phrase = f"{phrase} {motion_words(self.motion, self.partner)}"
        return f"{phrase} on {BACKGROUNDS[self.background]}" if self.background else phrase


def sample_clip_caption(rng: np.random.Generator, spec: ClipSpec) -> ClipCaption:
    """A true caption of varying detail; a quarter are the bare class name the classifier prompts with."""
    if rng.random() < 0.25:
        return ClipCaption(spec.motion, spec.shape, bare=True)
    shape = spec.shape if rng.random() > 0.1 else None
    color = spec.color if rng.random() < 0.5 else None
    background = spec.background if rng.random() < 0.3 else None
    partner = None
    if spec.partner_shape is not None and rng.random() < 0.5:
        partner = f"{spec.partner_color} {spec.partner_shape}"
    return ClipCaption(spec.motion, shape, color, background, partner)


@dataclass
class ClipBatch:
    videos: np.ndarray  # (B, T, H, W, 3) uint8
    specs: list[ClipSpec]


def render_clip_batch(rng: np.random.Generator, batch: int, frames: int, size: int,
                      classes: tuple[str, ...] | None = None) -> ClipBatch:
    """`batch` clips of random classes (default: the pretraining pairs), `frames` sampled of 16 rendered."""
    classes = classes or pretraining_pairs()
    labels = rng.choice(len(classes), size=batch)
    specs = [sample_clip_spec(classes[int(i)], int(rng.integers(1 << 62)), frames=16, size=size) for i in labels]
    videos = np.stack([render_clip(spec)[train_indices(16, frames, rng)] for spec in specs])
    return ClipBatch(videos, specs)


class TemporalHead(nn.Module):
    """Frame embeddings (B, T, D) -> one clip embedding (B, D): a frame-difference stream and the frames
    themselves, position-embedded, through one transformer layer, mean-pooled and projected."""

    def __init__(self, dim: int, frames: int, heads: int = 4):
        super().__init__()
        self.frames = frames
        self.positions = nn.Parameter(torch.zeros(frames, dim))
        self.delta = nn.Linear(dim, dim)
        self.layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        delta = torch.diff(frames, dim=1, prepend=frames[:, :1])  # (B, T, D)
        x = frames + self.delta(delta) + self.positions[: frames.shape[1]]  # (B, T, D)
        x = self.layer(x).mean(1)  # (B, D)
        return F.normalize(self.proj(x), dim=-1)


def encode_clips(backbone: Backbone, encoder: RegionEncoder, head: TemporalHead, videos: np.ndarray) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> clip embeddings (B, D) through the per-frame tower and the temporal head."""
    device = backbone.pixel_mean.device
    b, t = videos.shape[:2]
    pixels = torch.from_numpy(videos.reshape(b * t, *videos.shape[2:])).permute(0, 3, 1, 2).to(device)
    frames = encoder(backbone.normalize_pixels(pixels)).frame.view(b, t, -1)  # (B, T, D)
    return head(frames)


@torch.no_grad()
def motion_probe(backbone: Backbone, head: TemporalHead, num_clips: int = 352,
                 seed: int = MOTION_PROBE_SEED) -> dict[str, float]:
    """Zero-shot motion top-1 on fresh clips of every shape x motion class (novel pairs included):
    the clip embedding against "a shape {motion}" for the 11 motions."""
    backbone.eval()
    head.eval()
    encoder = RegionEncoder(backbone.clip.visual, r=0).eval()
    rng = np.random.default_rng(seed)
    seen, novel = split_classes()
    classes = tuple(seen + novel)
    text = backbone.embed_text([ClipCaption(m, None).text() for m in MOTIONS], CLASS_TEMPLATES)  # (11, D)
    hits = {"seen": [], "novel": []}
    for start in range(0, num_clips, 32):
        batch = render_clip_batch(rng, min(32, num_clips - start), head.frames, backbone.image_size, classes)
        pred = (encode_clips(backbone, encoder, head, batch.videos) @ text.T).argmax(-1).tolist()
        for spec, p in zip(batch.specs, pred, strict=True):
            hits["novel" if spec.label in novel else "seen"].append(MOTIONS[p] == spec.motion)
    every = hits["seen"] + hits["novel"]
    return {"motion_top1": round(float(np.mean(every)), 4),
            "motion_top1_seen_pairs": round(float(np.mean(hits["seen"])), 4),
            "motion_top1_novel_pairs": round(float(np.mean(hits["novel"])), 4),
            "motion_clips": len(every), "motion_seed": seed}


@torch.no_grad()
def class_separation(backbone: Backbone, labels: list[str] | None = None) -> dict[str, float]:
    """Mean cosine of the prompted class embeddings: same-shape pairs (they differ only in their motion
    words) and different-shape pairs. Default labels: the seen SynthActions classes."""
    labels = labels or split_classes()[0]
    emb = backbone.embed_text(labels, CLASS_TEMPLATES)
    cos = (emb @ emb.T).cpu()
    shapes = [parse_class(label)[0] for label in labels]
    pairs = [(i, j) for i in range(len(labels)) for j in range(i)]
    same = [float(cos[i, j]) for i, j in pairs if shapes[i] == shapes[j]]
    other = [float(cos[i, j]) for i, j in pairs if shapes[i] != shapes[j]]
    return {"same_shape_class_cosine": round(float(np.mean(same)), 4),
            "different_shape_class_cosine": round(float(np.mean(other)), 4)}



def motion_head_path(weights: str | Path) -> Path:
    """The pretraining head's file beside a weights file: alt-tiny.safetensors -> alt-tiny.motion-head.safetensors."""
    weights = Path(weights)
    return weights.with_name(weights.name.removesuffix(".safetensors") + ".motion-head.safetensors")


def save_motion_head(head: TemporalHead, weights: str | Path) -> Path:
    path = motion_head_path(weights)
    save_file({k: v.detach().half().contiguous().cpu() for k, v in head.state_dict().items()}, str(path))
    return path


def load_motion_head(weights: str | Path) -> TemporalHead | None:
    """The head saved beside `weights`, or None when that backbone was pretrained without clips."""
    path = motion_head_path(weights)
    if not path.is_file():
        return None
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    frames, dim = state["positions"].shape
    head = TemporalHead(dim, frames)
    head.load_state_dict(state)
    return head.eval()
