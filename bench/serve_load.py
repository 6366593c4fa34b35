"""Serving under load: a bounded run against a live `alt serve` deployment on 127.0.0.1 (stops by itself).

Model: alt-tiny with an ALT adapter on SynthActions' 72 seen labels (weights do not change speed); clips: real
SynthActions videos (64x64, 16 frames, H.264) sent as uploads. In one run:

1. 16 concurrent clients send --requests requests (multipart uploads, default top_k, explanations on):
   errors, requests lost, throughput, p50/p95/p99 latency, the batch-size histogram, and the model
   deployment's replica count over time (autoscaling 1 -> 2, then back to 1 after the load).
2. The same clients with `max_batch_size=1` (applied to the running replicas through user_config):
   end-to-end HTTP throughput, batched vs unbatched.
3. The model deployment alone through its handle, 16 concurrent callers with decoded clips: batched vs
   unbatched throughput.
4. Single requests one at a time: HTTP p50 against decoding + forward of the same clip in this process.

Usage: python bench/serve_load.py [--requests 2000] [--concurrency 16]
Goals: 0 errors, 0 lost; model deployment batched >= 2x unbatched; single-request HTTP p50 <= 1.3x in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp
import numpy as np
import torch
import yaml

from bench.machine import report, torch_machine
from pipelines.environment import set_defaults

set_defaults()  # before Ray, MLflow and huggingface_hub are imported

from ray import serve

from alt_core.backbone import load_backbone
from alt_core.checkpoint import load_checkpoint, save_checkpoint
from alt_core.config import ALTConfig
from alt_core.corpus import build_corpus
from alt_core.model import ALTModel
from alt_core.synthetic.synth import render_clip, sample_clip_spec, split_classes, write_mp4
from alt_core.video import load_views
from pipelines.console import setup_logging
from pipelines.serve import APP_NAME, DEFAULT_CONFIG, deploy, serve_config

RESULTS = Path(__file__).resolve().parents[1] / "results"


def make_checkpoint(directory: Path) -> tuple[Path, list[bytes]]:
    """An ALT checkpoint on alt-tiny over the 72 seen labels, and 32 real clips as mp4 bytes."""
    seen, _ = split_classes()
    backbone = load_backbone("alt-tiny")
    corpus = build_corpus(backbone, seen, ["labels"])
    config = ALTConfig(tome_r=8, corpus_hash=corpus.content_hash)
    save_checkpoint(ALTModel(config, backbone, corpus, seen), directory / "checkpoint")
    clips = []
    for i in range(32):
        path = directory / f"clip{i}.mp4"
        write_mp4(path, render_clip(sample_clip_spec(seen[i % len(seen)], seed=i, frames=16, size=64)))
        clips.append(path.read_bytes())
    return directory / "checkpoint", clips


def replica_count() -> int:
    status = serve.status().applications[APP_NAME].deployments["ALTModel"]
    return status.replica_states.get("RUNNING", 0)


class ReplicaSampler(threading.Thread):
    """Samples the model deployment's running replicas every half second."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.samples.append((time.monotonic() - self.start_time, replica_count()))


async def http_load(url: str, clips: list[bytes], requests: int, concurrency: int) -> dict:
    """`requests` uploads from `concurrency` clients; latencies, statuses and batch sizes."""
    latencies, statuses, batches, lost = [], Counter(), Counter(), 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal lost
        while not queue.empty():
            i = queue.get_nowait()
            form = aiohttp.FormData()
            form.add_field("file", clips[i % len(clips)], filename="clip.mp4", content_type="video/mp4")
            start = time.perf_counter()
            try:
                async with session.post(f"{url}/v1/predict", data=form) as response:
                    body = await response.json()
                    statuses[response.status] += 1
                    if response.status == 200:
                        batches[body["timing_ms"]["batch_size"]] += 1
            except (TimeoutError, aiohttp.ClientError):
                lost += 1
                continue
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    ms = sorted(1000 * x for x in latencies)
    errors = sum(count for status, count in statuses.items() if status != 200)
    return {"requests": requests, "ok": statuses.get(200, 0), "errors": errors,
            "lost": lost, "seconds": seconds, "throughput": statuses.get(200, 0) / seconds,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "batch_sizes": dict(sorted(batches.items()))}


def set_batching(config, max_batch_size: int) -> None:
    """Apply a batch size to the running replicas through the deployment's user_config (reconfigure)."""
    app = config.applications[0]
    model = next(d for d in app.deployments if d.name == "ALTModel")
    current = model.user_config if isinstance(model.user_config, dict) else {}  # unset in the file: a sentinel
    model.user_config = {**current, "max_batch_size": max_batch_size}
    deploy(config)  # the running replicas are reconfigured in place


async def handle_load(views: list[torch.Tensor], calls: int, concurrency: int) -> float:
    """Calls/s of the model deployment alone, `concurrency` callers at a time."""
    handle = serve.get_deployment_handle("ALTModel", app_name=APP_NAME)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with semaphore:
            await handle.predict.remote({"views": views[i % len(views)], "labels": None, "top_k": 5, "explain": True})

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    return calls / (time.perf_counter() - start)


def single_requests(url: str, clip: bytes, checkpoint: Path, count: int = 40) -> dict:
    """One request at a time over HTTP, against decode + forward of the same clip in this process."""
    import requests

    http = []
    for _ in range(count):
        start = time.perf_counter()
        response = requests.post(f"{url}/v1/predict", files={"file": ("clip.mp4", clip, "video/mp4")}, timeout=60)
        assert response.status_code == 200, response.text
        http.append(time.perf_counter() - start)
    torch.set_num_threads(1)  # as in a one-CPU replica
    model = load_checkpoint(checkpoint)
    local = []
    for _ in range(count):
        start = time.perf_counter()
        views = load_views(clip, model.config.num_frames, model.backbone.image_size)
        with torch.inference_mode():
            video, alignment = model.embed(pixels=views)
            model.logits(video).mean(0).softmax(-1).topk(5)
        local.append(time.perf_counter() - start)
    return {"http_p50_ms": 1000 * statistics.median(http), "in_process_p50_ms": 1000 * statistics.median(local)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    setup_logging()
    work = Path(tempfile.mkdtemp(prefix="serve_bench_"))
    checkpoint, clips = make_checkpoint(work)
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    model_deployment = next(d for d in raw["applications"][0]["deployments"] if d["name"] == "ALTModel")
    model_deployment["autoscaling_config"].update(max_replicas=2, upscale_delay_s=2, downscale_delay_s=10)
    (work / "serve.yaml").write_text(yaml.safe_dump(raw))
    config = serve_config(work / "serve.yaml", model=str(checkpoint), port=8000 + os.getpid() % 1000)
    url = deploy(config)
    try:
        sampler = ReplicaSampler()
        sampler.start()
        batched = asyncio.run(http_load(url, clips, args.requests, args.concurrency))
        load_end = time.monotonic() - sampler.start_time
        down_at, deadline = None, time.monotonic() + 120
        while down_at is None and time.monotonic() < deadline:  # observed here: the sampler may not see it
            if replica_count() <= 1:
                down_at = time.monotonic() - sampler.start_time
            time.sleep(0.5)
        sampler.stop.set()
        sampler.join()
        scaled = sampler.samples
        up_at = next((t for t, n in scaled if n >= 2), None)

        model = load_checkpoint(checkpoint)
        views = [load_views(c, model.config.num_frames, model.backbone.image_size) for c in clips]
        handle_batched = asyncio.run(handle_load(views, 400, args.concurrency))
        set_batching(config, 1)
        unbatched = asyncio.run(http_load(url, clips, args.requests // 4, args.concurrency))
        handle_unbatched = asyncio.run(handle_load(views, 400, args.concurrency))
        set_batching(config, 8)
        single = single_requests(url, clips[0], checkpoint)
    finally:
        serve.shutdown()
    summary = {"machine": torch_machine(), "requests": args.requests, "concurrency": args.concurrency,
               "batched": batched, "unbatched": unbatched, "max_replicas_seen": max(n for _, n in scaled),
               "scaled_up_after_s": up_at, "scaled_down_after_load_s": None if down_at is None else down_at - load_end,
               "handle_batched_per_s": handle_batched, "handle_unbatched_per_s": handle_unbatched, **single}
    (RESULTS / "serve_bench.json").write_text(json.dumps(summary, indent=1) + "\n")
    report(f"machine: {summary['machine']} | model: alt-tiny ALT adapter, 72 labels | clips: SynthActions 64x64, "
           f"16 frames | {args.concurrency} concurrent clients on 127.0.0.1")
    for name in ("batched", "unbatched"):
        r = summary[name]
        report(f"HTTP {name:<9} {r['requests']} requests: {r['ok']} ok, {r['errors']} errors, {r['lost']} lost, "
               f"{r['throughput']:.1f} req/s, p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
               f"p99 {r['p99_ms']:.0f} ms, batch sizes {r['batch_sizes']}")
    report(f"HTTP batched / unbatched throughput: {batched['throughput'] / unbatched['throughput']:.2f}x")
    report(f"model deployment alone: {handle_batched:.1f} vs {handle_unbatched:.1f} clips/s, "
           f"{handle_batched / handle_unbatched:.2f}x batched / unbatched")
    report(f"autoscaling: up to {summary['max_replicas_seen']} replicas, 2 reached {up_at} s after the load began, "
           f"back to 1 {summary['scaled_down_after_load_s']} s after it ended (downscale_delay_s 10)")
    report(f"single request: HTTP p50 {single['http_p50_ms']:.1f} ms vs in-process decode + forward "
           f"{single['in_process_p50_ms']:.1f} ms = {single['http_p50_ms'] / single['in_process_p50_ms']:.2f}x")


if __name__ == "__main__":
    main()
