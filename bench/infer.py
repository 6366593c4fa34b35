"""Batch-inference throughput on Kinetics-style videos: `alt infer --workers 2` against a plain loop.

The videos are bench/decode.py's (SynthActions rendered at 320x240, 10 s at 25 fps, H.264 with one GOP, pixel
noise; cached under --cache). The model is an ALT checkpoint on the shipped alt-tiny (adapter untrained: speed
does not depend on its weights). Both runs label the same videos with the same model and views:

(a) a plain loop in one process calling the prediction function (`alt_core.predict.predict_video`, what
    `alt predict` runs) on each video, with torch's default threads;
(b) `alt infer --workers 2` (pipelines.infer.infer): decode tasks and two model replicas on Ray Data, writing
    Parquet shards; Ray is started before timing, the replicas' start-up is timed (users pay it).

It prints videos/s of each and the ratio (b)/(a). From the times the shard files of (b) appear it also prints
the fixed cost (until the first shard is written: Ray Data's start, the replicas loading the model, the first
decodes) and the steady-state rate after it, so the ratio at another archive size can be read off, and writes
results/infer_bench.json.

Usage: python bench/infer.py [--videos 300] [--noise 4] [--seed 0] [--clips 1] [--cache runs/bench/decode_videos]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from bench.machine import cpu_model, report, run_main, torch_machine
from pipelines.environment import set_defaults

set_defaults()  # before Ray, MLflow and huggingface_hub are imported

from alt_core.backbone import load_backbone
from alt_core.checkpoint import save_checkpoint
from alt_core.config import ALTConfig
from alt_core.corpus import build_corpus
from alt_core.manifest import read_manifest
from alt_core.model import ALTModel
from alt_core.predict import predict_video
from alt_core.registry import load_model
from alt_core.synthetic.synth import split_classes
from bench.decode import FPS, HEIGHT, SECONDS, WIDTH, kinetics_style_videos
from pipelines.infer import infer
from pipelines.jobs import InferJob

WORKERS = 2


def checkpoint(directory: Path) -> Path:
    """An ALT model on alt-tiny over the SynthActions seen classes, saved as `alt train` saves one."""
    labels = split_classes()[0]
    backbone = load_backbone("alt-tiny")
    return save_checkpoint(ALTModel(ALTConfig(), backbone, build_corpus(backbone, labels, ("builtin", "labels")),
                                    labels), directory)


def plain_loop(manifest: Path, model_dir: Path, clips: int) -> dict:
    model, _ = load_model(model_dir)
    start = time.perf_counter()
    labels = [predict_video(model, row.path, clips=clips).labels[0] for row in read_manifest(manifest)]
    return {"videos": len(labels), "seconds": time.perf_counter() - start, "threads": torch_machine()}


def ray_infer(manifest: Path, model_dir: Path, out: Path, clips: int) -> dict:
    start, wall = time.perf_counter(), time.time()
    summary = infer(InferJob(out=str(out), model=str(model_dir), manifest=str(manifest), clips=clips,
                             workers=WORKERS))
    seconds = time.perf_counter() - start
    written = sorted((p.stat().st_mtime - wall, pq.read_metadata(str(p)).num_rows)
                     for p in out.glob("predictions-*.parquet"))  # (seconds after the start, videos) per shard
    first, first_videos = written[0]
    steady = (summary["predictions"] - first_videos) / max(seconds - first, 1e-9)
    return {"videos": summary["predictions"], "seconds": seconds, "shards": summary["shards"],
            "first_shard_s": first, "steady_videos_per_s": steady}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--noise", type=float, default=4.0, help="pixel noise sigma (0: flat synthetic frames)")
    parser.add_argument("--seed", type=int, default=0, help="SynthActions seed")
    parser.add_argument("--clips", type=int, default=1, help="temporal clips per video")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench/decode_videos"),
                        help="where the rendered videos are kept between runs (shared with bench/decode.py)")
    args = parser.parse_args()

    import ray

    from pipelines.console import ensure_ray, setup_logging

    setup_logging()
    manifest = kinetics_style_videos(args.cache, args.videos, args.noise, args.seed)
    work = Path(tempfile.mkdtemp(prefix="infer_bench_"))
    try:
        model_dir = checkpoint(work / "checkpoint")
        ensure_ray(num_cpus=os.cpu_count())
        ray.data.range(2).map_batches(lambda b: b).materialize()  # Ray Data's first-use cost, not the stage's
        machine = f"{platform.platform()} | {cpu_model()} | {os.cpu_count()} CPUs"
        report(f"machine: {machine} | loadavg(1m) before={os.getloadavg()[0]:.2f} | ray {ray.__version__}")
        report(f"data: {args.videos} Kinetics-style videos ({SECONDS} s at {FPS} fps, {WIDTH}x{HEIGHT}, H.264 one "
               f"GOP, noise {args.noise:g}), {args.clips} clip(s) of 8 frames at 64 px; model: ALT on alt-tiny")
        loop = plain_loop(manifest, model_dir, args.clips)
        batch = ray_infer(manifest, model_dir, work / "out", args.clips)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    rows = {}
    for name, run in (("(a) plain loop, predict_video", loop), (f"(b) alt infer --workers {WORKERS}", batch)):
        assert run["videos"] == args.videos, (name, run)
        rows[name] = {"seconds": round(run["seconds"], 2), "videos_per_s": round(run["videos"] / run["seconds"], 2)}
        report(f"{name:<32} {run['seconds']:6.1f} s: {rows[name]['videos_per_s']:6.2f} videos/s")
    ratio = loop["seconds"] / batch["seconds"]
    loop_rate = loop["videos"] / loop["seconds"]
    steady_ratio = batch["steady_videos_per_s"] / loop_rate
    report(f"(b): first shard written after {batch['first_shard_s']:.1f} s (fixed cost), then "
           f"{batch['steady_videos_per_s']:.2f} videos/s = {steady_ratio:.2f}x the loop")
    if steady_ratio > 1.5:  # the archive size from which (b) is 1.5x the loop: N / loop = 1.5 (first + N / steady)
        break_even = 1.5 * batch["first_shard_s"] / (1 / loop_rate - 1.5 / batch["steady_videos_per_s"])
        report(f"at these costs (b) reaches 1.5x the loop from about {break_even:.0f} videos")
    report(f"ratio ({WORKERS} workers / plain loop): {ratio:.2f}  | loadavg(1m) after={os.getloadavg()[0]:.2f}")
    results_file = Path(__file__).resolve().parents[1] / "results" / "infer_bench.json"
    results_file.write_text(json.dumps({
        "machine": machine, "plain_loop_torch": loop["threads"],
        "data": {"videos": args.videos, "seed": args.seed, "noise": args.noise, "clips": args.clips,
                 "seconds": SECONDS, "fps": FPS, "width": WIDTH, "height": HEIGHT},
        "runs": rows, "ratio_workers_to_loop": round(ratio, 3), "workers": WORKERS,
        "first_shard_s": round(batch["first_shard_s"], 2), "steady_ratio": round(steady_ratio, 3),
        "steady_videos_per_s": round(batch["steady_videos_per_s"], 2)}, indent=1) + "\n")
    report(f"written: {results_file}")


if __name__ == "__main__":
    run_main(main)
