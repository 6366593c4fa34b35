"""Does a dataset need regions? A free classifier (a 2-layer transformer, any weights, no entities) on a dataset's
cached tokens: the frame (CLS) tokens alone against frame + region tokens (with their centroids), trained on the
train split, scored on val and test. A gap says the class is in the regions and not in the frame embedding.
For SynthObjects it also probes alt-tiny zero-shot on single frames (middle frame of generated clips): do the
mask-pooled patch tokens of each object name its kind, and is the frame embedding's nearest object kind the key
object?

Usage: python -m bench.regions --tokens DIR --out results/regions_NAME.json [--epochs 30] [--seed 0]
(DIR: `alt decode --cache-tokens` shards of a generated dataset, e.g. bench/results.py's work directory).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow.dataset as pads
import torch
from torch import nn

from alt_core.clips import existing_shards, read_format, tokens_from_columns
from alt_core.tome import FrameTokens
from bench.machine import report, torch_machine


class TokenClassifier(nn.Module):
    """Tokens -> class: a linear embedding, the token's frame and (for regions) position, 2 transformer layers,
    mean pool, a linear head."""

    def __init__(self, dim: int, classes: int, frames: int, width: int = 128, regions: bool = True):
        super().__init__()
        self.regions = regions
        self.inp = nn.Linear(dim, width)
        self.time = nn.Parameter(torch.randn(frames, width) * 0.02)
        self.kind = nn.Parameter(torch.randn(2, width) * 0.02)  # frame token, region token
        self.position = nn.Linear(2, width)
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.1, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, classes))

    def forward(self, tokens: FrameTokens) -> torch.Tensor:
        t = tokens.frame.shape[1]
        x = self.inp(tokens.frame) + self.time[:t] + self.kind[0]  # (B, T, w)
        if self.regions:
            r = self.inp(tokens.regions) + self.time[:t, None] + self.kind[1] + self.position(tokens.positions)
            x = torch.cat([x, r.flatten(1, 2)], dim=1)  # (B, T + T*R, w)
        return self.head(self.encoder(x).mean(1))


def load_split(directory: Path, split: str, labels: list[str] | None = None) -> tuple[FrameTokens, torch.Tensor,
                                                                                      list[str], list[str]]:
    fmt = read_format(directory)
    table = pads.dataset([str(p) for p in existing_shards(directory)], format="parquet").to_table(
        columns=["video_id", "label", *fmt.payload], filter=pads.field("split") == split)
    columns = table.to_pydict()
    labels = labels or sorted(set(columns["label"]))
    targets = torch.tensor([labels.index(label) for label in columns["label"]])
    return tokens_from_columns(columns, fmt), targets, columns["video_id"], labels


def subset(tokens: FrameTokens, index: torch.Tensor) -> FrameTokens:
    return FrameTokens(tokens.frame[index], tokens.regions[index], tokens.sizes[index], tokens.positions[index])


@torch.no_grad()
def video_top1(model: nn.Module, tokens: FrameTokens, targets: torch.Tensor, ids: list[str]) -> float:
    """Top-1 with the logits of each video's views averaged."""
    model.eval()
    logits = torch.cat([model(subset(tokens, torch.arange(s, min(s + 256, len(ids))))) for s in
                        range(0, len(ids), 256)])
    by_video: dict[str, list[int]] = {}
    for i, vid in enumerate(ids):
        by_video.setdefault(vid, []).append(i)
    hits = [int(logits[rows].mean(0).argmax() == targets[rows[0]]) for rows in by_video.values()]
    return sum(hits) / len(hits)


def fit(train: tuple, evals: dict[str, tuple], regions: bool, epochs: int, seed: int) -> dict:
    tokens, targets, ids, labels = train
    torch.manual_seed(seed)
    model = TokenClassifier(tokens.frame.shape[-1], len(labels), tokens.frame.shape[1], regions=regions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    steps = epochs * ((len(ids) + 63) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-4, total_steps=steps, pct_start=0.1)
    start = time.time()
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(ids)).split(64):
            loss = nn.functional.cross_entropy(model(subset(tokens, batch)), targets[batch], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    row = {"inputs": "frame + region tokens" if regions else "frame (CLS) tokens",
           "train_top1": video_top1(model, tokens, targets, ids), "seconds": round(time.time() - start, 1)}
    return row | {f"{name}_top1": video_top1(model, *split[:3]) for name, split in evals.items()}


@torch.no_grad()
def object_probe(clips: int = 120, seed: int = 5) -> dict:
    """alt-tiny on SynthObjects frames, zero-shot: region -> object kind (7 kinds: the 6 objects and the actor),
    and the frame embedding's nearest of the 6 object kinds against the clip's key object."""
    from alt_core.backbone import load_backbone
    from alt_core.synthetic import objects
    from alt_core.synthetic.scenes import shape_mask
    from alt_core.synthetic.synth import clip_seed
    from alt_core.tome import RegionEncoder

    backbone = load_backbone("alt-tiny")
    encoder = RegionEncoder(backbone.clip.visual, 0).eval()
    kinds = [*objects.OBJECT_KINDS, objects.ACTOR]
    text = backbone.embed_text([f"a {color} {shape}" for color, shape in kinds])  # (7, D)
    grid, patch = encoder.grid[0], backbone.image_size // encoder.grid[0]
    seen = objects.split_classes()[0]
    region_hits, key_hits, frame_hits = [], [], []
    for i in range(clips):
        label = seen[i % len(seen)]
        spec = objects.sample_clip_spec(label, clip_seed(seed, label, i))
        tracks, frame = objects.clip_tracks(spec), spec.frames // 2
        pixels = torch.from_numpy(objects.render_clip(spec)[frame:frame + 1]).permute(0, 3, 1, 2)
        out = encoder(backbone.normalize_pixels(pixels))
        for role, role_tracks in tracks.items():
            for track in role_tracks:
                obj = track.at(frame)
                cover = torch.from_numpy(shape_mask(obj, spec.size).reshape(grid, patch, grid, patch)
                                         .mean(axis=(1, 3)).reshape(-1)).float()  # (P,) share of each patch
                weight = (cover > 0.25).float() if (cover > 0.25).any() else (cover > 0).float()
                pooled = (out.regions[0] * weight[:, None]).sum(0)
                hit = int((pooled @ text.T).argmax()) == kinds.index((obj.color, obj.shape))
                region_hits.append(hit)
                if role == "key":
                    key_hits.append(hit)
        frame_hits.append(int((out.frame[0] @ text[:6].T).argmax()) == kinds.index(spec.key_object()))
    return {"frames": clips, "region_kind_top1": sum(region_hits) / len(region_hits),
            "key_region_kind_top1": sum(key_hits) / len(key_hits),
            "frame_nearest_kind_is_key": sum(frame_hits) / len(frame_hits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=Path, required=True, help="cached-token shards of a generated dataset")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train = load_split(args.tokens, "train")
    evals = {split: load_split(args.tokens, split, train[3]) for split in ("val", "test")}
    rows = [fit(train, evals, regions, args.epochs, args.seed) for regions in (False, True)]
    meta = json.loads((args.tokens.parent / "synth" / "synth.json").read_text())
    probe = object_probe() if meta.get("variant") == "objects" else None
    result = {"data": f"{meta.get('variant', 'actions')} data seed {meta['seed']}, {len(train[3])} seen classes, "
                      f"{len(set(train[2]))} train videos, frozen tokens from {read_format(args.tokens).backbone}",
              "epochs": args.epochs, "seed": args.seed, "machine": torch_machine("cpu"), "rows": rows,
              "object_probe": probe}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for row in rows:
        report(f"{row['inputs']:<24} train {row['train_top1']:.3f}  val {row['val_top1']:.3f}  "
               f"test {row['test_top1']:.3f}  ({row['seconds']:.0f} s)")
    if probe:
        report(f"object probe ({probe['frames']} frames): region -> kind {probe['region_kind_top1']:.3f} (key objects "
               f"{probe['key_region_kind_top1']:.3f}); frame embedding's nearest kind is the key object "
               f"{probe['frame_nearest_kind_is_key']:.3f}")


if __name__ == "__main__":
    main()
