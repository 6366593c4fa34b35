"""The results table: ALT vs meanpool vs temporal on SynthActions with alt-tiny (writes RESULTS.md).

Protocols (all on the same generated data, seeds 0..N-1 for training; test split never used for choices):
- supervised: train on the seen classes' train split, top-1 on their test split;
- zero-shot: the same checkpoints, label set swapped to the novel classes only, top-1 on novel videos;
- few-shot K: train on K videos per seen class, top-1 on the seen test split;
- throughput: one ALT epoch from cached region tokens vs from pixels, clips/s, same model and batch.

Usage: python bench/results.py [--out runs/results] [--seeds 3] [--epochs 10]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import ray
import torch

import pipelines  # noqa: F401  (environment defaults before Ray starts)
from alt_core.backbone import WEIGHTS_DIR
from alt_core.synth import generate_synth_actions
from pipelines.corpus import build_corpus_dataset
from pipelines.decode import decode_manifest
from pipelines.evaluate import evaluate
from pipelines.train import TrainOptions, train

METHODS = ("alt", "meanpool", "temporal")
SHOTS = (2, 4)
ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), no GPU" if not torch.cuda.is_available()
            else torch.cuda.get_device_name(0))


def prepare(out: Path, videos_per_class: int) -> dict:
    data = out / "synth"
    synth = generate_synth_actions(data, seed=0, videos_per_class=videos_per_class, frames=16, size=64)
    corpus = build_corpus_dataset(data / "labels_seen.txt", ["builtin", "labels", str(data / "entities.jsonl")],
                                  "alt-tiny", None, out / "corpus.parquet")
    common = dict(frames=8, clips=2, crops=1, size=64, seed=0, progress=False)
    tokens = decode_manifest(data / "manifest.parquet", out / "tokens", cache_tokens=True, backbone="alt-tiny",
                             tome_r=8, **common)
    pixels = decode_manifest(data / "manifest.parquet", out / "pixels", **common)
    return {"synth": synth, "corpus": corpus, "tokens": tokens, "pixels": pixels, "data": data}


def train_run(out: Path, prep: dict, name: str, data: str, **options) -> dict:
    """One Ray Train run with the table's fixed hyperparameters; reruns resume a finished run."""
    return train(TrainOptions(data=str(out / data), corpus=str(out / "corpus.parquet"), out=str(out / "runs" / name),
                              labels=str(prep["data"] / "labels_seen.txt"), num_queries=8, depth=2, width=128,
                              heads=4, lr=1e-3, batch_size=32, resume=(out / "runs" / name / "ray").exists(),
                              run_name=name, **options))


def run_one(out: Path, prep: dict, adapter: str, seed: int, epochs: int, shots: int | None) -> dict:
    name = f"{adapter}-seed{seed}" + (f"-shots{shots}" if shots else "")
    start = time.time()
    summary = train_run(out, prep, name, "tokens", adapter=adapter, epochs=epochs, seed=seed, shots=shots)
    result = {"name": name, "adapter": adapter, "seed": seed, "shots": shots, "train_seconds": time.time() - start,
              "val_top1": summary["metrics"]["val_top1"],
              "train_clips_per_s": summary["metrics"]["train_clips_per_s"]}
    ckpt = summary["checkpoint"]
    result["test_top1"] = evaluate(ckpt, out / "tokens", splits=("test",))["top1"]
    if shots is None:
        novel = prep["data"] / "labels_novel.txt"
        result["zero_shot_top1"] = evaluate(ckpt, out / "tokens", labels=novel, splits=("novel",))["top1"]
    result["wall_seconds"] = time.time() - start
    print(json.dumps(result), flush=True)
    return result


def class_separation(labels_file: Path) -> dict:
    """How far apart the frozen text tower puts the seen class names: mean cosine of same-shape pairs
    (which differ only in their motion words) and of different-shape pairs."""
    from alt_core.backbone import load_backbone
    from alt_core.manifest import read_labels
    from alt_core.model import CLASS_TEMPLATES

    labels = read_labels(labels_file)
    emb = load_backbone("alt-tiny").embed_text(labels, CLASS_TEMPLATES)
    cos = emb @ emb.T
    shapes = [label.split()[0] for label in labels]
    same = [float(cos[i, j]) for i in range(len(labels)) for j in range(i) if shapes[i] == shapes[j]]
    other = [float(cos[i, j]) for i in range(len(labels)) for j in range(i) if shapes[i] != shapes[j]]
    return {"same_shape": statistics.mean(same), "different_shape": statistics.mean(other),
            "motions_per_shape": len(labels) / len(set(shapes))}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def render(results: list[dict], prep: dict, seeds: list[int], epochs: int, speed: dict) -> str:
    weights = WEIGHTS_DIR / "alt-tiny.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.exists() else "missing"
    synth = prep["synth"]
    lines = [
        "# Results", "",
        "Generated by `python bench/results.py`; every figure below comes from that run "
        "(raw rows: `runs/results/results.json`).", "",
        f"- **Data**: SynthActions, data seed 0: {synth['seen_classes']} seen classes "
        f"(splits {synth['splits']}), {synth['novel_classes']} novel classes (held-out shape x motion compositions).",
        f"- **Backbone**: `alt-tiny` (frozen; weights sha256 {digest}), ToMe r=8 (64 patches -> 48 regions), "
        f"8 frames per view; region tokens cached by `alt decode --cache-tokens`.",
        f"- **Corpus**: builtin + label phrases + `entities.jsonl`, {prep['corpus']['entities']} entities "
        f"(hash {prep['corpus']['content_hash']}).",
        f"- **Training**: {epochs} epochs, AdamW lr 1e-3, batch 32, label smoothing 0.1, adapter width 128, "
        f"depth 2, 8 queries; training seeds {seeds}; no choice was made on the test split.",
        "- **Protocols**: test views = 2 temporal clips x 1 crop, logits averaged. Zero-shot: the supervised "
        "checkpoints with the label set swapped to the novel classes only (novel-only protocol). "
        "Few-shot K: K train videos per seen class.",
        f"- **Machine**: {machine()}.", "",
        "| method | supervised top-1 | zero-shot top-1 (novel) | 2-shot top-1 | 4-shot top-1 | wall s / run |",
        "|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        rows = [r for r in results if r["adapter"] == method]
        sup = [r for r in rows if r["shots"] is None]
        cells = [mean_std([r["test_top1"] for r in sup]), mean_std([r["zero_shot_top1"] for r in sup])]
        cells += [mean_std([r["test_top1"] for r in rows if r["shots"] == k]) for k in SHOTS]
        wall = statistics.mean(r["wall_seconds"] for r in rows)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {wall:.0f} |")
    sep = class_separation(prep["data"] / "labels_seen.txt")
    lines += ["", "## Why supervised accuracy is low here", "",
              f"The frozen `alt-tiny` text tower was pretrained on still images: it knows colours, shapes, "
              f"positions, sizes and scenes, but no motion words. The mean cosine between the class embeddings "
              f"of two seen classes with the same shape (which differ only by motion) is "
              f"**{sep['same_shape']:.3f}**, against {sep['different_shape']:.3f} for different shapes. A "
              f"cosine classifier over near-identical class vectors can name the shape but hardly the motion: "
              f"with {sep['motions_per_shape']:.0f} seen motions per shape, perfect shape recognition and a "
              f"motion guess give {1 / sep['motions_per_shape']:.3f} top-1. The fix belongs in the embedded "
              "default (motion-grounded pretraining of alt-tiny, or class names built only from words it "
              "learned), not in the adapter."]
    ratio = speed["tokens"] / speed["pixels"]
    lines += ["", "## Training throughput (ALT, 1 worker, batch 32, same model)", "",
              "| input | train clips/s |", "|---|---|",
              f"| cached region tokens | {speed['tokens']:.1f} |", f"| pixels (frozen backbone run every step) | "
              f"{speed['pixels']:.1f} |", "", f"Cached tokens are **{ratio:.1f}x** faster than pixels.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "results"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--videos-per-class", type=int, default=10)
    parser.add_argument("--render-only", action="store_true", help="rebuild RESULTS.md from OUT/results.json")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ray.init(include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    prep = prepare(out, args.videos_per_class)  # idempotent: same files, corpus and shards are reused
    seeds = list(range(args.seeds))
    if args.render_only:
        raw = json.loads((out / "results.json").read_text())
        results, speed = raw["runs"], raw["throughput"]
    else:
        results = [run_one(out, prep, m, s, args.epochs, k) for m in METHODS for s in seeds for k in (None, *SHOTS)]
        # two epochs each; the reported rate is the second epoch's (the first includes warm-up)
        speed = {data: train_run(out, prep, f"speed-{data}", data, epochs=2)["metrics"]["train_clips_per_s"]
                 for data in ("tokens", "pixels")}
        (out / "results.json").write_text(json.dumps({"runs": results, "throughput": speed}, indent=1))
    table = render(results, prep, seeds, args.epochs, speed)
    (ROOT / "RESULTS.md").write_text(table)
    print(table)
    ray.shutdown()


if __name__ == "__main__":
    main()
