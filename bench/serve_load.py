"""Serving speed and reliability against live `alt serve` deployments on 127.0.0.1 (stops by itself).

Model: alt-tiny with an ALT adapter on SynthActions' 72 seen labels (weights do not change speed), or with
--backbone ViT-B-16 that tower at 224 px with random weights; clips: real SynthActions videos (64x64, 16
frames, H.264) uploaded as multipart forms with the default top_k and explanations. In one run:

1. For each mode (single: deploy/serve-single.yaml, one deployment decodes and runs the model; split:
   deploy/serve.yaml, an ingress in front of a model deployment), one model replica pinned:
   a. single requests one at a time: HTTP p50 against decode + forward of the same clip in this process, and
      the per-stage timings of the answers (`timing_ms`), so the difference is accounted for;
   b. 1, 4 and 16 concurrent clients, batched (max_batch_size 8) and unbatched (max_batch_size 1), the two
      alternated twice: req/s, p50, p95 and batch sizes; batched / unbatched per concurrency.
2. In the first mode: 16 clients with 1 and with 2 replicas pinned (no autoscaling): req/s.
3. Reliability, first mode: --requests uploads from 16 clients with autoscaling (at most 2 replicas): errors,
   requests lost, replicas over time (up to 2 under load, back to 1 after).

--gpu (on a machine with one): the model replica gets the GPU, ViT-B-16 at 224 by default, 16 and 64 clients,
split mode, the GPU's busy share sampled with nvidia-smi; writes results/serve_bench_gpu.json instead.

Usage: python bench/serve_load.py [--requests 2000] [--modes single,split] [--gpu]
Goals: single-request HTTP p50 <= 1.3x in-process; CPU: batched / unbatched >= 1.0 at every concurrency (GPU:
>= 2x at 16 clients); 0 errors and 0 lost; autoscaling up and back down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp
import numpy as np
import torch
import yaml

from bench.machine import report, run_main, torch_machine
from pipelines.environment import set_defaults

set_defaults()  # before Ray, MLflow and huggingface_hub are imported

from ray import serve

from alt_core.backbone import load_backbone
from alt_core.checkpoint import load_checkpoint, save_checkpoint
from alt_core.config import ALTConfig
from alt_core.corpus import build_corpus
from alt_core.model import ALTModel
from alt_core.predict import VideoRequest, predict_batch
from alt_core.synthetic.synth import render_clip, sample_clip_spec, split_classes, write_mp4
from alt_core.video import load_views
from pipelines.console import setup_logging
from pipelines.serve import APP_NAME, MODE_CONFIGS, deploy, serve_config

RESULTS = Path(__file__).resolve().parents[1] / "results"
MODEL_DEPLOYMENT = {"split": "ALTModel", "single": "Ingress"}  # the deployment whose replicas run the model
STAGES = ("read", "decode", "queue", "forward", "hop", "total")
BATCHED, UNBATCHED = 8, 1


def make_checkpoint(directory: Path, backbone_name: str) -> tuple[Path, list[bytes]]:
    """An ALT checkpoint over the 72 seen labels, and 32 real clips as mp4 bytes."""
    seen, _ = split_classes()
    backbone = load_backbone(backbone_name)
    corpus = build_corpus(backbone, seen, ["labels"])
    config = ALTConfig(backbone=backbone_name, corpus_hash=corpus.content_hash,
                       **({"tome_r": 8} if backbone_name == "alt-tiny" else {}))
    save_checkpoint(ALTModel(config, backbone, corpus, seen), directory / "checkpoint")
    clips = []
    for i in range(32):
        path = directory / f"clip{i}.mp4"
        write_mp4(path, render_clip(sample_clip_spec(seen[i % len(seen)], seed=i, frames=16, size=64)))
        clips.append(path.read_bytes())
    return directory / "checkpoint", clips


class Deployment:
    """One mode's config in a work directory: replicas pinned or autoscaled, batching set through
    user_config (applied to running replicas in place), the model replica on the GPU with --gpu."""

    def __init__(self, work: Path, mode: str, checkpoint: Path, gpu: bool):
        self.path = work / f"serve-{mode}.yaml"
        self.mode, self.checkpoint = mode, checkpoint
        self.raw = yaml.safe_load(MODE_CONFIGS[mode].read_text())
        self.raw["applications"][0]["args"]["watch_s"] = 0
        if gpu:
            self.model_options["ray_actor_options"]["num_gpus"] = 1
        self.port = 8000 + os.getpid() % 1000

    @property
    def model_options(self) -> dict:
        deployments = self.raw["applications"][0]["deployments"]
        return next(d for d in deployments if d["name"] == MODEL_DEPLOYMENT[self.mode])

    def deploy(self, replicas: int | None = 1, max_batch_size: int = BATCHED) -> str:
        """`replicas` pinned, or None: autoscaling between 1 and 2 with short delays."""
        options = self.model_options
        options.pop("num_replicas", None)
        options.pop("autoscaling_config", None)
        if replicas is None:
            options["autoscaling_config"] = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 8,
                                             "upscale_delay_s": 2, "downscale_delay_s": 10}
        else:
            options["num_replicas"] = replicas
        options["user_config"] = {"max_batch_size": max_batch_size}
        self.path.write_text(yaml.safe_dump(self.raw))
        url = deploy(serve_config(self.path, model=str(self.checkpoint), port=self.port))
        deadline = time.monotonic() + 180
        while running_replicas(self.mode) != (replicas or 1):  # a pinned count is reached before we measure
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.mode}: {replicas or 1} running replicas not reached within 180 s")
            time.sleep(0.5)
        return url


def running_replicas(mode: str) -> int:
    status = serve.status().applications[APP_NAME].deployments[MODEL_DEPLOYMENT[mode]]
    return status.replica_states.get("RUNNING", 0)


class Sampler(threading.Thread):
    """Samples a reading every half second (replica counts, the GPU's utilisation) until stopped."""

    def __init__(self, read, every_s: float = 0.5):
        super().__init__(daemon=True)
        self.read, self.every_s = read, every_s
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.samples.append((time.monotonic() - self.start_time, self.read()))

    def finish(self) -> list[tuple[float, float]]:
        self.stop.set()
        self.join()
        return self.samples


def gpu_busy_percent() -> float:
    out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=10).stdout
    return float(out.split()[0])


async def http_load(url: str, clips: list[bytes], requests: int, concurrency: int) -> dict:
    """`requests` uploads from `concurrency` clients, raw: latencies (s), statuses, batch sizes, requests lost
    and each stage the server timed (ms), with `outside`: the client's latency minus the handler's total (HTTP,
    Serve's proxy and its hop to the replica)."""
    raw = {"requests": requests, "concurrency": concurrency, "latencies": [], "statuses": Counter(),
           "batches": Counter(), "lost": 0, "stages": {stage: [] for stage in (*STAGES, "outside")}}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            form = aiohttp.FormData()
            form.add_field("file", clips[i % len(clips)], filename="clip.mp4", content_type="video/mp4")
            start = time.perf_counter()
            try:
                async with session.post(f"{url}/v1/predict", data=form) as response:
                    body = await response.json()
                    latency = time.perf_counter() - start
                    raw["statuses"][response.status] += 1
            except (TimeoutError, aiohttp.ClientError):
                raw["lost"] += 1
                continue
            raw["latencies"].append(latency)
            if response.status == 200:
                timing = body["timing_ms"]
                raw["batches"][timing["batch_size"]] += 1
                for stage in STAGES:
                    raw["stages"][stage].append(timing[stage])
                raw["stages"]["outside"].append(1000 * latency - timing["total"])

    start = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    raw["seconds"] = time.perf_counter() - start
    return raw


def summarize(runs: list[dict]) -> dict:
    """Runs of the same load, pooled: throughput over their time, percentiles over all their requests."""
    ms = sorted(1000 * x for run in runs for x in run["latencies"])
    ok = sum(run["statuses"].get(200, 0) for run in runs)
    requests, lost = sum(run["requests"] for run in runs), sum(run["lost"] for run in runs)
    seconds = sum(run["seconds"] for run in runs)
    stages = {k: statistics.median(v) for k in runs[0]["stages"] if (v := [x for r in runs for x in r["stages"][k]])}
    return {"requests": requests, "concurrency": runs[0]["concurrency"], "ok": ok, "errors": requests - ok - lost,
            "lost": lost, "seconds": seconds, "throughput": ok / seconds, "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)),
            "batch_sizes": dict(sorted(sum((run["batches"] for run in runs), Counter()).items())),
            "stages_p50_ms": stages}


async def bare_requests(url: str, count: int = 40) -> float:
    """p50 (ms) of GET /healthz one at a time: HTTP and Serve's proxy with no work, the floor of any request."""
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            start = time.perf_counter()
            async with session.get(f"{url}/healthz") as response:
                await response.read()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def load(url: str, clips: list[bytes], requests: int, concurrency: int) -> dict:
    return summarize([asyncio.run(http_load(url, clips, requests, concurrency))])


def in_process(clip: bytes, checkpoint: Path, device: str, count: int = 40) -> float:
    """p50 (ms) of decoding the clip and predicting it (forward, top-5, entities) in this process, with the
    thread count of a one-CPU replica."""
    torch.set_num_threads(1)  # and for the rest of this process, which only sends requests
    model = load_checkpoint(checkpoint).to(device)
    times = []
    for _ in range(count + 3):  # the first calls warm the allocator
        start = time.perf_counter()
        views = load_views(clip, model.config.num_frames, model.backbone.image_size)
        predict_batch(model, [VideoRequest(views, "clip.mp4")])  # forward, top-5 and entities, as served
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[3:])


def measure_mode(deployment: Deployment, clips: list[bytes], concurrencies: list[int], per_client: int,
                 gpu_sampling: bool, rounds: int = 2) -> dict:
    """One mode, one replica: single requests, then each concurrency batched and unbatched, alternated
    `rounds` times so that drift on a shared machine reaches both alike."""
    url = deployment.deploy(replicas=1, max_batch_size=BATCHED)
    load(url, clips, 40, 4)  # warm both paths
    result = {"single": load(url, clips, 40, 1), "bare_p50_ms": asyncio.run(bare_requests(url)), "batched": {},
              "unbatched": {}}
    for clients in concurrencies:
        runs = {"batched": [], "unbatched": []}
        busy = {"batched": [], "unbatched": []}
        for _ in range(rounds):
            for name, size in (("batched", BATCHED), ("unbatched", UNBATCHED)):
                deployment.deploy(replicas=1, max_batch_size=size)
                sampler = Sampler(gpu_busy_percent, 0.2) if gpu_sampling else None
                if sampler:
                    sampler.start()
                runs[name].append(asyncio.run(http_load(url, clips, max(40, per_client * clients), clients)))
                if sampler:
                    busy[name] += [v for _, v in sampler.finish()]
        for name in runs:
            result[name][str(clients)] = summarize(runs[name]) | (
                {"gpu_busy_percent": statistics.mean(busy[name])} if busy[name] else {})
    return result


def reliability(deployment: Deployment, clips: list[bytes], requests: int, concurrency: int) -> dict:
    """Autoscaling between 1 and 2 replicas under `requests` uploads, then back down after the load."""
    url = deployment.deploy(replicas=None)
    sampler = Sampler(lambda: running_replicas(deployment.mode))
    sampler.start()
    row = load(url, clips, requests, concurrency)
    load_end = time.monotonic() - sampler.start_time
    down_at, deadline = None, time.monotonic() + 120
    while down_at is None and time.monotonic() < deadline:  # observed here: the sampler may not see it
        if running_replicas(deployment.mode) <= 1:
            down_at = time.monotonic() - sampler.start_time
        time.sleep(0.5)
    samples = sampler.finish()
    up_at = next((t for t, n in samples if n >= 2), None)
    return row | {"max_replicas_seen": max(n for _, n in samples), "scaled_up_after_s": up_at,
                  "scaled_down_after_load_s": None if down_at is None else down_at - load_end}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="uploads of the reliability run")
    parser.add_argument("--modes", type=lambda text: [m for m in text.split(",") if m], default=None,
                        help="comma list of single, split (default: both on CPU, split with --gpu); the first "
                             "also runs the replica and reliability runs")
    parser.add_argument("--concurrency", type=lambda text: [int(c) for c in text.split(",") if c], default=None,
                        help="comma list of client counts (default 1,4,16; with --gpu 16,64)")
    parser.add_argument("--per-client", type=int, default=15, help="requests per client in each concurrency run")
    parser.add_argument("--backbone", default=None, help="default alt-tiny; with --gpu ViT-B-16 (random weights)")
    parser.add_argument("--gpu", action="store_true", help="the model replica on the GPU")
    args = parser.parse_args()
    modes = args.modes or (["split"] if args.gpu else ["single", "split"])
    concurrencies = args.concurrency or ([16, 64] if args.gpu else [1, 4, 16])
    backbone = args.backbone or ("ViT-B-16" if args.gpu else "alt-tiny")
    device = "cuda" if args.gpu else "cpu"
    setup_logging()
    work = Path(tempfile.mkdtemp(prefix="serve_bench_"))
    checkpoint, clips = make_checkpoint(work, backbone)
    local = in_process(clips[0], checkpoint, device)  # first, on a quiet machine
    summary = {"machine": torch_machine(device),
               "backbone": backbone, "clips": "SynthActions, 64x64, 16 frames, H.264", "in_process_p50_ms": local,
               "modes": {}}
    try:
        for mode in modes:
            deployment = Deployment(work, mode, checkpoint, args.gpu)
            summary["modes"][mode] = measure_mode(deployment, clips, concurrencies, args.per_client, args.gpu)
            if mode == modes[0] and not args.gpu:
                clients = max(concurrencies)
                url = deployment.deploy(replicas=2)
                summary["two_replicas"] = load(url, clips, args.per_client * clients, clients)
                summary["reliability"] = reliability(deployment, clips, args.requests, clients)
                summary["reliability"]["mode"] = mode
            serve.shutdown()
    finally:
        serve.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    out = RESULTS / ("serve_bench_gpu.json" if args.gpu else "serve_bench.json")
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print_summary(summary)


def print_summary(summary: dict) -> None:
    report(f"machine: {summary['machine']} | model: {summary['backbone']} ALT adapter, 72 labels | clips: "
           f"{summary['clips']} | on 127.0.0.1")
    local = summary["in_process_p50_ms"]
    for mode, result in summary["modes"].items():
        single = result["single"]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in single["stages_p50_ms"].items())
        report(f"{mode}: single request HTTP p50 {single['p50_ms']:.1f} ms vs in-process decode + forward "
               f"{local:.1f} ms = {single['p50_ms'] / local:.2f}x; stages p50 (ms): {stages}; a bare GET "
               f"/healthz {result['bare_p50_ms']:.1f} ms")
        for clients, batched in result["batched"].items():
            unbatched = result["unbatched"][clients]
            busy = (f", GPU busy {batched['gpu_busy_percent']:.0f}% vs {unbatched['gpu_busy_percent']:.0f}%"
                    if "gpu_busy_percent" in batched else "")
            report(f"{mode}: {clients:>2} clients: batched {batched['throughput']:.1f} req/s (p50 "
                   f"{batched['p50_ms']:.0f}, p95 {batched['p95_ms']:.0f} ms, batch sizes {batched['batch_sizes']})"
                   f" vs unbatched {unbatched['throughput']:.1f} req/s (p50 {unbatched['p50_ms']:.0f}, p95 "
                   f"{unbatched['p95_ms']:.0f} ms) = {batched['throughput'] / unbatched['throughput']:.2f}x{busy}")
    if "reliability" in summary:
        mode, two, run = summary["reliability"]["mode"], summary["two_replicas"], summary["reliability"]
        one = summary["modes"][mode]["batched"][str(two["concurrency"])]
        report(f"{mode}: {two['concurrency']} clients, replicas pinned: 1 -> {one['throughput']:.1f} req/s, 2 -> "
               f"{two['throughput']:.1f} req/s = {two['throughput'] / one['throughput']:.2f}x")
        report(f"{mode}: reliability {run['requests']} requests: {run['ok']} ok, {run['errors']} errors, "
               f"{run['lost']} lost, {run['throughput']:.1f} req/s, p50 {run['p50_ms']:.0f} ms, p99 "
               f"{run['p99_ms']:.0f} ms; autoscaling up to {run['max_replicas_seen']} replicas "
               f"({run['scaled_up_after_s']} s into the load), back to 1 {run['scaled_down_after_load_s']} s after "
               "it (downscale_delay_s 10)")


if __name__ == "__main__":
    run_main(main)
