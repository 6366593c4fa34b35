"""SynthActions generation throughput, 16 frames at 64x64, one worker against several.

Usage: python bench/synth.py [--clips N] [--workers W]. Measures generate_dataset end to end
(pool start, render, H.264 encode, write), so the ratio shows what the extra processes really buy.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time

from alt_core.synthetic.dataset import generate_dataset
from alt_core.synthetic.synth import all_classes
from bench.machine import cpu_model

FRAMES, SIZE = 16, 64


def _run(clips: int, workers: int) -> dict:
    """About `clips` clips spread over as many classes as possible, into a throwaway directory."""
    classes = all_classes()
    per_class = math.ceil(clips / len(classes))
    subset = classes[: math.ceil(clips / per_class)]
    with tempfile.TemporaryDirectory(prefix="synth_bench_") as out:
        return generate_dataset(out, seed=0, classes=subset, videos_per_class=per_class, frames=FRAMES,
                                      size=SIZE, workers=workers, fewshot=())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=176, help="clips per measurement (default 176)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes to compare with 1")
    args = parser.parse_args()

    print(f"machine: {platform.platform()} | {cpu_model()} | cpu_count={os.cpu_count()} "
          f"| loadavg(1m) before={os.getloadavg()[0]:.2f} | python {platform.python_version()}")
    print(f"clips of {FRAMES} frames at {SIZE}x{SIZE}, H.264 mp4")
    cpu_start = time.process_time()
    one = _run(args.clips, 1)
    cpu_ms = 1000 * (time.process_time() - cpu_start) / one["videos"]  # inline run: all work is ours
    many = _run(args.clips, args.workers)
    print(f"{'workers':>8} {'clips':>6} {'seconds':>8} {'clips/s':>8}")
    for r in (one, many):
        print(f"{r['workers']:>8} {r['videos']:>6} {r['seconds']:>8.2f} {r['clips_per_s']:>8.1f}")
    print(f"speed-up workers={args.workers} vs 1: {many['clips_per_s'] / one['clips_per_s']:.2f}x "
          f"| loadavg(1m) after={os.getloadavg()[0]:.2f}")
    # Wall-clock rates suffer from other load on the machine; CPU time per clip does much less.
    print(f"cpu time per clip (workers=1): {cpu_ms:.1f} ms -> at most {1000 / cpu_ms * (os.cpu_count() or 1):.0f} "
          f"clips/s on {os.cpu_count()} idle cores")


if __name__ == "__main__":
    main()
