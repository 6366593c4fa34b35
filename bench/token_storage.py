"""Cached-token storage from the clip-shard format, for real backbones: bytes per view and per dataset.

`alt decode --cache-tokens` stores per view float16 tokens (T, 1 + R, D) and float16 region sizes (T, R)
(alt_core/clips.py), R = patches - sum of ToMe's merge schedule. This script computes R from
`alt_core.tome.merge_schedule` and D and the patch grid from open_clip's model configs (no weights), and prints
bytes per view and the storage of Kinetics-400 (~240k training videos) and Kinetics-700 (~545k) at 8 frames and
1 or 3 views per video, before Parquet's compression (float16 noise compresses little). Writes
results/token_storage.json.

Usage: python bench/token_storage.py [--frames 8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import open_clip

from alt_core.tome import merge_schedule
from bench.machine import report

BACKBONES = {"ViT-B-16": 8, "ViT-L-14": 6}  # the recommended ToMe r: about 100 regions a frame (docs/scaling.md)
DATASETS = {"Kinetics-400": 240_000, "Kinetics-700": 545_000}  # training videos
FP16 = 2


def view_bytes(name: str, r: int, frames: int) -> dict:
    vision = open_clip.get_model_config(name)["vision_cfg"]
    embed = open_clip.get_model_config(name)["embed_dim"]
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    regions = patches - sum(merge_schedule(patches, vision["layers"], r))
    tokens = frames * (1 + regions) * embed * FP16  # (T, 1 + R, D) float16
    sizes = frames * regions * FP16  # (T, R) float16
    return {"backbone": name, "r": r, "patches": patches, "regions": regions, "embed_dim": embed,
            "bytes_per_view": tokens + sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    rows = []
    for name, recommended in BACKBONES.items():
        for r in sorted({0, recommended}):
            row = view_bytes(name, r, args.frames)
            row["storage_tb"] = {f"{ds} x {views} view(s)": round(videos * views * row["bytes_per_view"] / 1e12, 2)
                                 for ds, videos in DATASETS.items() for views in (1, 3)}
            rows.append(row)
            report(f"{name} r={r:<2} R={row['regions']:>3} D={row['embed_dim']}: "
                   f"{row['bytes_per_view'] / 2**20:6.2f} MiB per view of {args.frames} frames; "
                   + "; ".join(f"{k} {v} TB" for k, v in row["storage_tb"].items()))
    out = Path(__file__).resolve().parents[1] / "results" / "token_storage.json"
    out.write_text(json.dumps({"frames": args.frames, "format": "float16 (T, 1 + R, D) + float16 (T, R)",
                               "datasets": DATASETS, "rows": rows}, indent=1) + "\n")
    report(f"written: {out}")


if __name__ == "__main__":
    main()
