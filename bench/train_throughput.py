"""Training throughput from cached region tokens vs from pixels: same model, same batches, one process.

It times the training step alone (forward, backward, AdamW) on SynthActions batches already in memory,
so Ray scheduling and shard reading (which `bench/results.py` measures end to end) don't blur the ratio.
The FLOP counter gives the ceiling: a step from pixels runs the frozen tower forward plus the trainable
part's forward and backward (~3x its forward); a step from tokens runs only the latter, so
ratio <= (backbone + 3 x trainable) / (3 x trainable). A tiny tower has a low ceiling; a real one a high one.

On a GPU (`--device cuda`) the step runs under bf16 autocast, as `alt train` runs it there.

Usage: python bench/train_throughput.py [--backbone alt-tiny] [--size 64] [--tome-r 8] [--batch 32] [--steps 8]
       [--device cpu|cuda] [--out results/throughput_gpu.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from alt_core.backbone import load_backbone
from alt_core.config import ALTConfig
from alt_core.corpus import build_corpus
from alt_core.flops import count_flops
from alt_core.model import ALTModel
from alt_core.synthetic.synth import render_clip, sample_clip_spec, split_classes
from alt_core.tome import FrameTokens
from bench.machine import torch_machine


def synth_pixels(labels: list[str], batch: int, frames: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of real SynthActions clips rendered at `size`: uint8 (B, T, 3, S, S) and class targets."""
    clips, targets = [], []
    for i in range(batch):
        label = labels[i % len(labels)]
        clips.append(torch.from_numpy(render_clip(sample_clip_spec(label, seed=i, frames=frames, size=size))))
        targets.append(i % len(labels))
    return torch.stack(clips).permute(0, 1, 4, 2, 3).contiguous(), torch.tensor(targets)


def steps_per_second(model: ALTModel, inputs: dict, targets: torch.Tensor, steps: int) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    device = targets.device

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model.loss(model(**inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocator and kernel selection
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock measures it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(backbone_name: str = "alt-tiny", size: int | None = None, tome_r: int = 8, frames: int = 8,
            batch: int = 32, steps: int = 8, width: int = 128, seed: int = 0, device: str = "cpu") -> dict:
    """clips/s of ALT training steps from pixels and from the same clips' cached tokens."""
    torch.manual_seed(seed)
    backbone = load_backbone(backbone_name)  # open_clip names: random init; weights don't change speed
    labels, _ = split_classes()
    config = ALTConfig(backbone=backbone_name, tome_r=tome_r, num_frames=frames, width=width, heads=4)
    model = ALTModel(config, backbone, build_corpus(backbone, labels, ("builtin", "labels")), labels).to(device)
    size = size or backbone.image_size
    pixels, targets = synth_pixels(labels, batch, frames, size)
    pixels, targets = pixels.to(device), targets.to(device)
    with torch.no_grad():
        cached = model.encode_frames(pixels)
    tokens = FrameTokens(cached.frame.half().float(), cached.regions.half().float(), cached.sizes,
                         cached.positions.half().float())  # as stored
    rate = {"pixels": batch * steps_per_second(model, {"pixels": pixels}, targets, steps),
            "tokens": batch * steps_per_second(model, {"tokens": tokens}, targets, steps)}
    flops = {row.part: row.flops_per_view for row in
             count_flops(config, frames, num_classes=len(labels), num_entities=len(model.entities)).rows}
    frozen = flops["backbone"] + flops["tome"]
    trainable = 3 * (flops["alignment"] + flops["adapter"] + flops["classifier"])
    return {"backbone": backbone_name, "image_size": size, "tome_r": tome_r, "regions": cached.regions.shape[2],
            "frames": frames, "batch": batch, "steps": steps, "adapter_width": width,
            "pixels_clips_per_s": rate["pixels"], "tokens_clips_per_s": rate["tokens"],
            "ratio": rate["tokens"] / rate["pixels"], "flop_ceiling": (frozen + trainable) / trainable,
            "machine": torch_machine(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="alt-tiny")
    parser.add_argument("--size", type=int, default=None, help="image size (default: the backbone's)")
    parser.add_argument("--tome-r", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast, as `alt train` on a GPU)")
    parser.add_argument("--out", default=None, help="also append the result to this JSON list (e.g. "
                                                   "results/throughput_gpu.json, which RESULTS.md renders)")
    args = parser.parse_args()
    result = measure(args.backbone, args.size, args.tome_r, args.frames, args.batch, args.steps, device=args.device)
    print(json.dumps(result, indent=1))
    if args.out:
        out = Path(args.out)
        rows = json.loads(out.read_text()) if out.exists() else []
        out.write_text(json.dumps(rows + [result], indent=1) + "\n")


if __name__ == "__main__":
    main()
