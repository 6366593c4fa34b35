"""Decode-stage throughput on Kinetics-style videos: a plain loop against `alt decode` with 1 and 2 workers.

Users decode videos of about 10 s at 25 fps, 320x240, H.264 with one long GOP, 8 frames sampled per
clip. This script renders SynthActions clips at that size and length, adds sensor-like pixel noise (default
sigma 4, giving ~0.75 MB per 10 s clip, the order of web video at this size; flat synthetic frames compress
to 0.15 MB and decode faster than real footage would), and caches them under --cache, so reruns skip
generation. Then it decodes the same manifest
three ways in one run, each into a fresh directory:

(a) a plain single-process loop over the stage's own `ShardDecoder` (decord, one thread, no Ray);
(b) `decode_manifest` (Ray Data actor pool) with 1 worker;
(c) the same with 2 workers.

Ray is started before timing; (b) and (c) include starting their actor pool, which users pay too. It
prints videos/s, the decode time per video (inside `decode_shard`), the stage's fixed cost (wall time
minus the decode time divided by the workers), the ratio (c)/(a), and from these the number of videos at
which (c) would reach 1.5x the loop.

Usage: python bench/decode.py [--videos 300] [--noise 4] [--seed 0] [--cache runs/bench/decode_videos]
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.machine import cpu_model, report, run_main
from pipelines.environment import set_defaults

set_defaults()  # before Ray, MLflow and huggingface_hub are imported

from alt_core.config import DecodeSpec
from alt_core.manifest import read_manifest
from alt_core.synthetic.synth import all_classes, clip_seed, render_clip, sample_clip_spec, write_mp4
from pipelines.decode import ShardDecoder, clip_format, decode_manifest, default_shard_size

SECONDS, FPS, WIDTH, HEIGHT = 10, 25, 320, 240  # Kinetics-style: ~10 s, 25 fps, 320x240
SPEC = DecodeSpec(frames=8, clips=1, train_clips=1, size=64)  # 8 frames per clip, at alt-tiny's input size


def _render(job: tuple[str, int, float, str]) -> None:
    """One video: a SynthActions clip rendered 320 wide, cropped to 240 rows, 250 frames at 25 fps, with
    Gaussian pixel noise (x264's default keyframe interval of 250 makes the whole clip one GOP)."""
    label, seed, noise, path = job
    spec = sample_clip_spec(label, seed, frames=SECONDS * FPS, size=WIDTH)
    top = (WIDTH - HEIGHT) // 2
    frames = render_clip(spec)[:, top:top + HEIGHT].astype(np.float32)
    frames += np.random.default_rng(seed).normal(0.0, noise, frames.shape).astype(np.float32)
    write_mp4(path, np.clip(frames, 0, 255).astype(np.uint8), fps=FPS)


def kinetics_style_videos(cache: Path, videos: int, noise: float, seed: int) -> Path:
    """A manifest of `videos` rendered videos (classes round-robin, split test: evenly spread clips)."""
    manifest = cache / f"manifest_{videos}_noise{noise:g}_{seed}.csv"
    if manifest.is_file():
        return manifest
    classes = all_classes()
    jobs = [(classes[i % len(classes)], clip_seed(seed, classes[i % len(classes)], i), noise,
             str(cache / f"v{seed}_noise{noise:g}_{i:05d}.mp4")) for i in range(videos)]
    cache.mkdir(parents=True, exist_ok=True)
    todo = [job for job in jobs if not Path(job[-1]).is_file()]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(os.cpu_count()) as pool:
        pool.map(_render, todo, chunksize=4)
    report(f"rendered {len(todo)} videos in {time.perf_counter() - start:.0f} s into {cache}")
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows([(Path(path).name, label, "test") for label, _, _, path in jobs])
    return manifest


def plain_loop(manifest: Path, out: Path, shard_size: int) -> dict:
    """The stage's work, shard by shard in this process, without Ray; one torch thread, as in a one-CPU
    Ray actor (Ray sets OMP_NUM_THREADS=1 there)."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    decoder = ShardDecoder(str(out), SPEC, clip_format(SPEC))
    out.mkdir(parents=True)
    rows = read_manifest(manifest)
    counts = [decoder.decode_shard(i, rows[k:k + shard_size]) for i, k in enumerate(range(0, len(rows), shard_size))]
    return {"videos_ok": sum(c["videos"] for c in counts), "worker_seconds": sum(c["seconds"] for c in counts),
            "seconds": time.perf_counter() - start, "workers": 1}


def ray_stage(manifest: Path, out: Path, shard_size: int, workers: int) -> dict:
    start = time.perf_counter()
    summary = decode_manifest(manifest, out, SPEC, shard_size=shard_size, workers=workers)
    return {**summary, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=300, help="videos to decode (default 300)")
    parser.add_argument("--noise", type=float, default=4.0, help="pixel noise sigma (0: flat synthetic frames)")
    parser.add_argument("--seed", type=int, default=0, help="SynthActions seed")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench/decode_videos"),
                        help="where the rendered videos are kept between runs")
    args = parser.parse_args()

    from pipelines.console import ensure_ray, setup_logging

    setup_logging()
    manifest = kinetics_style_videos(args.cache, args.videos, args.noise, args.seed)
    megabytes = sum(Path(r.path).stat().st_size for r in read_manifest(manifest)) / 2**20
    shard_size = default_shard_size(args.videos, 2)  # the stage's default for 2 workers, for all three runs
    import ray

    ensure_ray(num_cpus=os.cpu_count())
    ray.data.range(2).map_batches(lambda b: b).materialize()  # Ray Data's first-use cost, not the stage's
    report(f"machine: {platform.platform()} | {cpu_model()} | cpu_count={os.cpu_count()} "
          f"| loadavg(1m) before={os.getloadavg()[0]:.2f} | python {platform.python_version()} | ray {ray.__version__}")
    report(f"data: {args.videos} SynthActions videos (seed {args.seed}), {SECONDS} s at {FPS} fps, {WIDTH}x{HEIGHT}, "
          f"noise sigma {args.noise:g}, H.264 one GOP, {megabytes / args.videos:.2f} MB each; "
          f"sampling {SPEC.frames} frames -> {SPEC.size}x{SPEC.size}, 1 view per video; shards of {shard_size}")
    work = Path(tempfile.mkdtemp(prefix="decode_bench_"))
    try:
        results = {"(a) plain loop, 1 process": plain_loop(manifest, work / "a", shard_size),
                   "(b) alt decode --workers 1": ray_stage(manifest, work / "b", shard_size, 1),
                   "(c) alt decode --workers 2": ray_stage(manifest, work / "c", shard_size, 2)}
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    rates, costs, rows = {}, {}, {}
    for name, r in results.items():
        assert r["videos_ok"] == args.videos, (name, r)
        rates[name] = r["videos_ok"] / r["seconds"]
        per_video = r["worker_seconds"] / r["videos_ok"]
        fixed = r["seconds"] - r["worker_seconds"] / r["workers"]
        costs[name] = (per_video, fixed)
        rows[name] = {"seconds": round(r["seconds"], 2), "videos_per_s": round(rates[name], 2),
                      "decode_ms_per_video": round(1000 * per_video, 1), "fixed_cost_s": round(fixed, 2),
                      "workers": r["workers"]}
        report(f"{name:<28} {r['seconds']:6.1f} s: {rates[name]:6.1f} videos/s | decode {1000 * per_video:5.1f} ms "
              f"per video | fixed cost {fixed:5.1f} s")
    plain, _, two = rates.values()
    (loop_cost, _), _, (two_cost, two_fixed) = costs.values()
    report(f"ratio (2 workers / plain loop): {two / plain:.2f}  | loadavg(1m) after={os.getloadavg()[0]:.2f}")
    results_file = Path(__file__).resolve().parents[1] / "results" / "decode_bench.json"
    results_file.write_text(json.dumps({
        "machine": f"{platform.platform()} | {cpu_model()} | {os.cpu_count()} CPUs",
        "data": {"videos": args.videos, "seed": args.seed, "seconds": SECONDS, "fps": FPS, "width": WIDTH,
                 "height": HEIGHT, "noise": args.noise, "mb_per_video": round(megabytes / args.videos, 3),
                 "frames_sampled": SPEC.frames, "size": SPEC.size, "shard_size": shard_size},
        "runs": rows, "ratio_two_workers_to_loop": round(two / plain, 3),
        "steady_state_ratio": round(loop_cost / (two_cost / 2), 3)}, indent=1) + "\n")
    report(f"written: {results_file}")
    if two_cost / 2 < loop_cost / 1.5:  # (c) reaches 1.5x once its fixed cost is amortised
        break_even = two_fixed / (loop_cost / 1.5 - two_cost / 2)
        report(f"at these costs (c) reaches 1.5x the loop from {break_even:.0f} videos; its steady-state rate is "
              f"{loop_cost / (two_cost / 2):.2f}x the loop's")


if __name__ == "__main__":
    run_main(main)
