"""Decode-stage throughput: a plain in-process loop against the Ray Data stage with 1 and 2 workers.

Usage: python bench/decode.py [--videos N] [--seed S] [--shard-size K]. All three runs decode the same
SynthActions videos with the same sampling, resize and shard writing (the plain loop calls the
stage's own ShardDecoder in this process, one torch thread), each into a fresh directory. Ray is started once before
timing; the Ray runs include starting their actor pool, which is part of what the stage costs.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_model

from alt_core.manifest import read_manifest
from alt_core.synth import all_classes, generate_synth_actions
from pipelines.decode import DecodeSpec, ShardDecoder, clip_format, decode_manifest, shard_file

VIDEO_FRAMES, VIDEO_SIZE = 32, 128
FRAMES, SIZE = 8, 112


def plain_loop(manifest: Path, out: Path, shard_size: int) -> dict:
    """The same work as the stage, shard by shard in this process, without Ray.

    One torch thread, as in a one-CPU Ray actor (Ray sets OMP_NUM_THREADS=1 there); on a busy 2-core
    machine two threads made the small resizes several times slower.
    """
    torch.set_num_threads(1)
    start = time.perf_counter()
    spec = DecodeSpec(frames=FRAMES, size=SIZE)
    decoder = ShardDecoder(str(out), spec, clip_format(spec))
    out.mkdir(parents=True)
    rows = read_manifest(manifest)
    counts = [decoder.decode_shard(i, rows[k:k + shard_size]) for i, k in enumerate(range(0, len(rows), shard_size))]
    assert all(shard_file(out, i).is_file() for i in range(len(counts)))
    return {"videos_ok": sum(c["videos"] for c in counts), "rows": sum(c["rows"] for c in counts),
            "worker_seconds": sum(c["seconds"] for c in counts), "seconds": time.perf_counter() - start}


def ray_stage(manifest: Path, out: Path, shard_size: int, workers: int) -> dict:
    start = time.perf_counter()
    summary = decode_manifest(manifest, out, frames=FRAMES, size=SIZE, shard_size=shard_size, num_workers=workers,
                              progress=False)
    return {**summary, "seconds": time.perf_counter() - start}


def main() -> None:
    import ray  # after pipelines/__init__ set Ray's environment (it is read at import)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=48, help="videos to decode (default 48)")
    parser.add_argument("--seed", type=int, default=0, help="SynthActions seed")
    parser.add_argument("--shard-size", type=int, default=6, help="videos per shard (default 6)")
    args = parser.parse_args()

    classes = all_classes()
    per_class = max(3, math.ceil(args.videos / len(classes)))
    subset = classes[: math.ceil(args.videos / per_class)]
    with tempfile.TemporaryDirectory(prefix="decode_bench_") as tmp:
        root = Path(tmp)
        data = generate_synth_actions(root / "data", seed=args.seed, classes=subset, videos_per_class=per_class,
                                      frames=VIDEO_FRAMES, size=VIDEO_SIZE, workers=2, fewshot=())
        manifest = root / "data" / "manifest.csv"
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray.data.range(2).map_batches(lambda b: b).materialize()  # Ray Data's first-use cost, not the stage's

        print(f"machine: {platform.platform()} | {cpu_model()} | cpu_count={os.cpu_count()} "
              f"| loadavg(1m) before={os.getloadavg()[0]:.2f} | python {platform.python_version()} "
              f"| ray {ray.__version__}")
        print(f"data: SynthActions seed={args.seed}, {data['videos']} videos ({len(subset)} classes x {per_class}) "
              f"of {VIDEO_FRAMES} frames at {VIDEO_SIZE}x{VIDEO_SIZE} H.264; sampling {FRAMES} frames -> "
              f"{SIZE}x{SIZE}, 1 view per video; shards of {args.shard_size}")
        results = {"(a) plain loop, 1 process": plain_loop(manifest, root / "a", args.shard_size),
                   "(b) Ray Data, 1 worker": ray_stage(manifest, root / "b", args.shard_size, 1),
                   "(c) Ray Data, 2 workers": ray_stage(manifest, root / "c", args.shard_size, 2)}
        ray.shutdown()

    rates = {}
    for name, r in results.items():
        assert r["videos_ok"] == data["videos"], (name, r)
        rates[name] = r["videos_ok"] / r["seconds"]
        print(f"{name:<28} {r['videos_ok']} videos, {r['rows'] * FRAMES} frames in {r['seconds']:6.2f} s: "
              f"{rates[name]:6.1f} videos/s, {r['rows'] * FRAMES / r['seconds']:7.1f} frames/s "
              f"(time inside decode_shard, summed over workers: {r['worker_seconds']:.2f} s)")
    plain, one, two = rates.values()
    print(f"ratios: (b)/(a) = {one / plain:.2f}, (c)/(a) = {two / plain:.2f} "
          f"| loadavg(1m) after={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
