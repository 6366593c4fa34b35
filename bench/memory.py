"""Bounded memory: peak RSS of the driver and of one worker, for the decode, corpus and batch-inference stages, at
two input sizes.

The stages stream: the driver plans shards (decode, infer) or entity batches (corpus) and collects small results,
and each actor holds one shard or batch at a time. So peak memory should not grow with the manifest. This script
runs each stage on N and 4N inputs (default 500 and 2,000 SynthActions videos; 500 and 2,000 corpus entities on
top of the builtin ones; infer labels the same videos as decode with an ALT checkpoint on alt-tiny), every run in a
fresh driver process with its own Ray, and reports:

- the driver's peak RSS (`ru_maxrss` of the driver process, which includes loading torch and Ray);
- the largest peak RSS of a worker (the stage's actor processes, sampled every 0.1 s with psutil);
- the ratio large / small of each: the goal is within 10% (ratio <= 1.10).

Usage: python bench/memory.py [--videos 500] [--factor 4] [--workers 2] [--stages decode,corpus,infer]
       [--cache runs/bench/memory_videos]
Writes results/memory.json (the stages run replace their rows; the others are kept).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.machine import cpu_model, report
from pipelines.environment import set_defaults

set_defaults()  # before Ray, MLflow and huggingface_hub are imported
REPO = Path(__file__).resolve().parents[1]

ACTOR_MARKERS = {"decode": "ShardDecoder", "corpus": "EmbedActor", "infer": "ShardPredictor"}


def sample_workers(marker: str, peaks: dict, stop: threading.Event) -> None:
    """Track the peak RSS of every process on this machine whose title names the stage's actor class."""
    while not stop.is_set():
        for process in psutil.process_iter(["pid", "cmdline"]):
            try:
                if marker in " ".join(process.info["cmdline"] or ()):
                    rss = process.memory_info().rss
                    peaks[process.info["pid"]] = max(peaks.get(process.info["pid"], 0), rss)
            except psutil.Error:
                continue
        stop.wait(0.1)


def run_stage(stage: str, inputs: Path, workers: int, result: mp.Queue) -> None:
    """One stage in this (fresh) process: its own Ray, the stage, then this process's and its workers' peaks."""
    from pipelines.console import setup_logging

    setup_logging(False)
    peaks: dict[int, int] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_workers, args=(ACTOR_MARKERS[stage], peaks, stop), daemon=True)
    sampler.start()
    out = Path(tempfile.mkdtemp(prefix=f"alt-memory-{stage}-"))
    start = time.perf_counter()
    try:
        if stage == "decode":
            from alt_core.config import DecodeSpec
            from pipelines.decode import decode_manifest

            summary = decode_manifest(inputs, out / "clips", DecodeSpec(size=64), workers=workers)
            count = summary["inputs"]
        elif stage == "infer":
            from bench.infer import checkpoint
            from pipelines.infer import infer
            from pipelines.jobs import InferJob

            model = checkpoint(out / "checkpoint")
            count = infer(InferJob(out=str(out / "predictions"), model=str(model), manifest=str(inputs),
                                   workers=workers))["inputs"]
        else:
            from pipelines.corpus import build_corpus_dataset

            summary = build_corpus_dataset(None, ["builtin", str(inputs)], "alt-tiny", None, out / "corpus.parquet",
                                           num_actors=workers)
            count = summary["entities"]
    finally:
        stop.set()
        sampler.join()
        shutil.rmtree(out, ignore_errors=True)
    result.put({"stage": stage, "inputs": count, "seconds": round(time.perf_counter() - start, 1),
                "driver_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "worker_peak_mb": round(max(peaks.values(), default=0) / 2**20, 1), "workers_seen": len(peaks)})


def measure(stage: str, inputs: Path, workers: int) -> dict:
    queue: mp.Queue = mp.get_context("spawn").Queue()
    process = mp.get_context("spawn").Process(target=run_stage, args=(stage, inputs, workers, queue))
    process.start()
    while True:
        try:
            row = queue.get(timeout=5)
            break
        except Exception:
            if not process.is_alive():
                raise SystemExit(f"the {stage} run on {inputs} failed (traceback above)") from None
    process.join()
    report(f"  {stage:<6} {row['inputs']:>6} inputs: driver peak {row['driver_peak_mb']:8.1f} MB, worker peak "
           f"{row['worker_peak_mb']:8.1f} MB ({row['workers_seen']} workers), {row['seconds']} s")
    return row


def videos(cache: Path, count: int, seed: int) -> Path:
    """A manifest of the first `count` videos of one cached SynthActions set (generated once, at the largest size)."""
    from alt_core.synthetic.dataset import generate_dataset
    from alt_core.synthetic.synth import all_classes

    classes = all_classes()
    per_class = -(-count // len(classes))
    if not (cache / "manifest.csv").is_file() or len((cache / "manifest.csv").read_text().splitlines()) - 1 < count:
        shutil.rmtree(cache, ignore_errors=True)
        generate_dataset(cache, seed=seed, classes=classes, videos_per_class=per_class, frames=16, size=64,
                               fewshot=())
    lines = (cache / "manifest.csv").read_text().splitlines()
    subset = cache / f"manifest_{count}.csv"
    subset.write_text("\n".join(lines[:1 + count]) + "\n")
    return subset


def entities(directory: Path, count: int) -> Path:
    path = directory / f"entities_{count}.jsonl"
    path.write_text("".join(json.dumps({"unit": f"object {i}", "description": f"a small object number {i}"}) + "\n"
                            for i in range(count)))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=500, help="the small size (videos, and corpus entities)")
    parser.add_argument("--factor", type=int, default=4, help="the large size is this many times the small")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", type=lambda text: [t for t in text.split(",") if t], default=list(ACTOR_MARKERS),
                        help="comma list of " + ", ".join(ACTOR_MARKERS))
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "bench" / "memory_videos")
    args = parser.parse_args()
    sizes = (args.videos, args.videos * args.factor)
    if not args.stages or set(args.stages) - set(ACTOR_MARKERS):
        parser.error(f"--stages takes a comma list of {', '.join(ACTOR_MARKERS)}")
    report(f"bounded memory: decode and infer (SynthActions 64x64, 16 frames, 8 sampled; infer: ALT on alt-tiny) "
           "and corpus (alt-tiny text tower), "
           f"{sizes[0]} vs {sizes[1]} inputs, {args.workers} workers; machine: {cpu_model()}, "
           f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    results_file = REPO / "results" / "memory.json"
    machine = f"{cpu_model()}, {psutil.cpu_count()} CPUs"
    previous = json.loads(results_file.read_text()) if results_file.is_file() else {"stages": []}
    rows = [{"machine": previous.get("machine"), **row}  # rows written before rows named their machine
            for row in previous["stages"] if row["stage"] not in args.stages]
    for stage in args.stages:
        # the large set first: the small one is its first rows
        inputs = [entities(args.cache, n) if stage == "corpus" else videos(args.cache, n, args.seed)
                  for n in sizes[::-1]][::-1]
        small, large = (measure(stage, path, args.workers) for path in inputs)
        ratio = {k: round(large[k] / small[k], 3) for k in ("driver_peak_mb", "worker_peak_mb")}
        report(f"  {stage}: ratio {sizes[1]} / {sizes[0]} inputs: driver {ratio['driver_peak_mb']:.3f}, "
               f"worker {ratio['worker_peak_mb']:.3f} (goal <= 1.10)")
        rows.append({"machine": machine, "stage": stage, "small": small, "large": large, "ratio": ratio})
    (REPO / "results").mkdir(exist_ok=True)
    payload = {"workers": args.workers, "sizes": sizes, "stages": rows}  # each stage names the machine it ran on
    results_file.write_text(json.dumps(payload, indent=1) + "\n")
    report(f"written: {results_file}")


if __name__ == "__main__":
    main()
