"""Ray Data stage: batch inference over a video archive (`alt infer`; output format in docs/infer.md).

The inputs (a manifest, or every video file under a directory) are cut, in their order, into shards of
`shard_size` videos. A streaming Ray Data pipeline decodes each shard's sampled frames in CPU tasks (at the
model's input size, exactly as `alt predict` decodes them) and hands them to a pool of model actors (one GPU
each with `gpu`), which predict through the one prediction function (`alt_core.predict.predict_batch`) and
write `predictions-{i:05d}.parquet` after the shard's `quarantine-{i:05d}.parquet`. The prediction file is
written last and atomically, so its presence means the shard is done: rerunning the same command skips it.

The model is resolved once, in the driver: an alias is pinned to its version, every actor loads that version,
and OUT records it with the label set's hash, so a rerun with another model or label set is refused rather
than mixed into the same output. Every input ends in exactly one place: inputs = predictions + quarantined,
checked at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch
from ray.data import ActorPoolStrategy

from alt_core.clips import QUARANTINE_FILE
from alt_core.errors import ALTError, ConfigError
from alt_core.manifest import read_labels, read_manifest, video_id
from alt_core.video import load_views
from pipelines.console import ensure_ray
from pipelines.decode import (
    QUARANTINE_SCHEMA,
    default_shard_size,
    merge_quarantine,
    previous_params,
    quarantine_file,
    write_table,
)
from pipelines.jobs import InferJob

logger = logging.getLogger(__name__)
# The decode tasks import this module to run `decode_shard`: the model's modules (open_clip and the rest, seconds
# of imports per worker process) are imported where the model is needed, not here.

SUMMARY_FILE = "infer.json"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
# CPUs a decode task reserves, and a model replica on CPU (one torch thread each). Replicas that reserved whole CPUs
# would starve decoding on a small machine (a silent hang); a replica's share differs from a decode task's so that
# Ray Data keeps them apart (equal resources fuse the two stages) and decoding overlaps the model's work.
DECODE_CPUS, CPU_REPLICA_CPUS = 0.5, 0.25
ENTITY_TYPE = pa.struct([("unit", pa.string()), ("description", pa.string()), ("contribution", pa.float64()),
                         ("score", pa.float64()),
                         ("frames", pa.list_(pa.int32()))])
PREDICTION_SCHEMA = pa.schema([
    ("path", pa.string()), ("video_id", pa.string()), ("label", pa.string()),  # label: the manifest's, if any
    ("labels", pa.list_(pa.string())), ("scores", pa.list_(pa.float64())),  # top-k, best first
    ("entities", pa.list_(ENTITY_TYPE)),  # null with --no-explain
    ("model_name", pa.string()), ("model_version", pa.int64()), ("model_alias", pa.string()),
    ("model_run_id", pa.string()), ("labels_hash", pa.string()),
    ("decode_ms", pa.float64()), ("predict_ms", pa.float64()), ("shard", pa.int32()),
])


@dataclass(frozen=True)
class InputVideo:
    path: str
    label: str | None  # the manifest's label (ground truth); None for a directory of videos


def prediction_file(out: Path, index: int) -> Path:
    return out / f"predictions-{index:05d}.parquet"


def list_inputs(job: InferJob) -> list[InputVideo]:
    """The videos to label, in order: a manifest's rows, or the video files under a directory (sorted)."""
    if job.manifest is not None:
        return [InputVideo(row.path, row.label) for row in read_manifest(job.manifest, job.labels_file)]
    directory = Path(job.videos)
    if not directory.is_dir():
        raise ConfigError(f"--videos {directory} is not a directory; pass a directory of video files or --manifest")
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not paths:
        raise ConfigError(f"--videos {directory} holds no video files ({', '.join(VIDEO_SUFFIXES)}); pass another "
                          "directory or a --manifest")
    return [InputVideo(str(p), None) for p in paths]


def labels_hash(labels: list[str]) -> str:
    """Identity of a label set, in order (scores are reported against it)."""
    return hashlib.sha256("\n".join(labels).encode()).hexdigest()[:16]


def decode_shard(batch: dict[str, np.ndarray], frames: int, size: int, clips: int) -> dict[str, list]:
    """Ray Data task: the test-time views of one shard's videos (one row per shard) -> the stacked views of the
    videos that decoded, and the error of each that did not."""
    index, paths = int(batch["shard"][0]), json.loads(batch["paths"][0])
    start = time.perf_counter()
    views, decoded, errors, seconds = [], [], {}, []
    for i, path in enumerate(paths):
        began = time.perf_counter()
        try:
            views.append(load_views(path, frames, size, clips).numpy())  # (V, T, 3, S, S) uint8
            decoded.append(i)
            seconds.append(time.perf_counter() - began)
        except Exception as err:  # any failure of one video quarantines it, not the shard
            errors[i] = f"{type(err).__name__}: {err}"
    stacked = np.stack(views) if views else np.zeros((0, clips, frames, 3, size, size), np.uint8)
    return {"shard": [index], "paths": [batch["paths"][0]], "truth": [batch["truth"][0]],
            "views": [stacked.tobytes()], "shape": [json.dumps(stacked.shape)], "decoded": [json.dumps(decoded)],
            "decode_seconds": [json.dumps(seconds)], "errors": [json.dumps(errors)],
            "shard_decode_seconds": [time.perf_counter() - start]}


class ShardPredictor:
    """Ray actor: holds the pinned model and writes one shard's predictions per call."""

    def __init__(self, out: str, model: str, card: dict, tracking_uri: str | None, labels: list[str], top_k: int,
                 explain: bool, batch_size: int, gpu: bool):
        from alt_core.registry import load_model

        self.out, self.card, self.top_k, self.explain, self.batch_size = Path(out), card, top_k, explain, batch_size
        device = torch.device("cuda" if gpu else "cpu")
        self.model, _ = load_model(model, tracking_uri, device)  # `model` is pinned: the version the driver chose
        if labels != self.model.labels:
            self.model.set_labels(labels)  # once, not per video
        self.model.eval()
        self.labels_hash = labels_hash(labels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from alt_core.predict import VideoRequest, predict_batch

        index = int(batch["shard"][0])
        paths, truth = json.loads(batch["paths"][0]), json.loads(batch["truth"][0])
        decoded, seconds = json.loads(batch["decoded"][0]), json.loads(batch["decode_seconds"][0])
        errors = {int(i): e for i, e in json.loads(batch["errors"][0]).items()}
        shape = tuple(json.loads(batch["shape"][0]))
        views = torch.from_numpy(np.frombuffer(batch["views"][0], dtype=np.uint8).reshape(shape).copy())
        start = time.perf_counter()
        rows, quarantine = [], [{"path": paths[i], "stage": "decode", "error": e} for i, e in sorted(errors.items())]
        for first in range(0, len(decoded), self.batch_size):
            chunk = decoded[first:first + self.batch_size]
            began = time.perf_counter()
            try:
                predictions = predict_batch(self.model, [VideoRequest(views[first + k], paths[i], top_k=self.top_k,
                                                                      explain=self.explain)
                                                         for k, i in enumerate(chunk)])
            except Exception as err:  # a batch the model cannot take quarantines its videos, not the shard
                quarantine += [{"path": paths[i], "stage": "predict", "error": f"{type(err).__name__}: {err}"}
                               for i in chunk]
                continue
            per_video_ms = 1000 * (time.perf_counter() - began) / len(chunk)
            for k, (i, prediction) in enumerate(zip(chunk, predictions, strict=True)):
                rows.append(self.row(index, paths[i], truth[i], prediction, 1000 * seconds[first + k], per_video_ms))
        # quarantine first, predictions last: an existing prediction file implies its quarantine file exists
        write_table(quarantine_file(self.out, index), pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA))
        write_table(prediction_file(self.out, index), pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA))
        return {"shard": [index], "videos": [len(rows)], "quarantined": [len(quarantine)],
                "decode_seconds": [float(batch["shard_decode_seconds"][0])],
                "predict_seconds": [time.perf_counter() - start]}

    def row(self, shard: int, path: str, truth: str | None, prediction, decode_ms: float, predict_ms: float) -> dict:
        card = self.card
        entities = prediction.to_dict()["entities"] if self.explain else None
        return {"path": path, "video_id": video_id(path), "label": truth, "labels": prediction.labels,
                "scores": prediction.scores, "entities": entities, "model_name": card["name"],
                "model_version": card["version"], "model_alias": card["alias"], "model_run_id": card["run_id"],
                "labels_hash": self.labels_hash, "decode_ms": decode_ms, "predict_ms": predict_ms, "shard": shard}


# what OUT records about how its predictions were made, with the words a refusal uses for each
PARAM_NAMES = {"model": "model", "model_run_id": "model run", "labels_hash": "label set", "top_k": "top-k",
               "clips": "clips", "explain": "explanations", "frames": "frames", "size": "input size",
               "inputs_hash": "input videos", "shard_size": "shard size", "schema": "prediction schema"}
SCHEMA_VERSION = 2  # 2: entities carry their contribution to the top label's logit, in that order


def _check_resume(out: Path, params: dict) -> None:
    """Refuse to mix predictions of different models, label sets or inputs in one directory."""
    previous = previous_params(out, SUMMARY_FILE)
    if previous is None or previous == params:
        return
    changed = [f"{PARAM_NAMES.get(k, k)} {previous.get(k)} -> {params.get(k)}" for k in PARAM_NAMES
               if previous.get(k) != params.get(k)]
    hint = (f" (to finish that run pass --model {previous['model']})"
            if previous.get("model") != params.get("model") and previous.get("model", "").startswith("models:/")
            else "")
    raise ALTError(f"{out} holds predictions made with other settings ({'; '.join(changed)}): use a new --out, or "
                   f"delete it to start over{hint}")


def infer(job: InferJob) -> dict:
    """Label every input video with the model; resumable; returns the summary (also OUT/infer.json)."""
    from alt_core.backbone import input_size
    from alt_core.registry import check_model

    start = time.perf_counter()
    inputs = list_inputs(job)
    source, contents = check_model(job.model, job.tracking_uri)  # resolved once: an alias is pinned here
    labels = read_labels(job.labels) if job.labels else contents.labels
    frames, size = contents.config.num_frames, input_size(contents.config.backbone)  # the replicas load the model
    ensure_ray()
    out = Path(job.out)
    # a rerun keeps the shard size that wrote the existing shards, whatever the cluster's size is now
    shard_size = (job.shard_size or (previous_params(out, SUMMARY_FILE) or {}).get("shard_size")
                  or default_shard_size(len(inputs), job.workers))
    params = {"model": source.pinned, "model_run_id": source.run_id, "labels_hash": labels_hash(labels),
              "top_k": job.top_k, "clips": job.clips, "explain": job.explain, "frames": frames, "size": size,
              "inputs_hash": hashlib.sha256(json.dumps([asdict(v) for v in inputs]).encode()).hexdigest()[:16],
              "shard_size": shard_size, "schema": SCHEMA_VERSION}
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, params)
    (out / SUMMARY_FILE).write_text(json.dumps({"status": "running", "params": params}, indent=1) + "\n")
    shards = [inputs[i:i + shard_size] for i in range(0, len(inputs), shard_size)]
    todo = [i for i in range(len(shards)) if not prediction_file(out, i).is_file()]
    workers = min(job.workers, max(len(todo), 1))
    logger.info(f"infer: {len(inputs)} videos in {len(shards)} shards ({len(shards) - len(todo)} already done), "
                f"{workers} model replica(s) of {source.title()} on {'GPU' if job.gpu else 'CPU'}, into {out}")
    run_start, done, videos, quarantined = time.perf_counter(), 0, 0, 0
    busy = {"decode_seconds": 0.0, "predict_seconds": 0.0}  # summed over tasks and replicas: where the time went
    if todo:
        items = [{"shard": i, "paths": json.dumps([v.path for v in shards[i]]),
                  "truth": json.dumps([v.label for v in shards[i]])} for i in todo]
        ds = ray.data.from_items(items).map_batches(
            decode_shard, batch_size=1, num_cpus=DECODE_CPUS, fn_kwargs={"frames": frames, "size": size,
                                                                       "clips": job.clips})
        ds = ds.map_batches(
            ShardPredictor, batch_size=1, compute=ActorPoolStrategy(size=workers),
            num_cpus=1 if job.gpu else CPU_REPLICA_CPUS, num_gpus=1 if job.gpu else 0,
            fn_constructor_kwargs={"out": str(out), "model": source.pinned, "card": source.card(),
                                   "tracking_uri": job.tracking_uri,
                                   "labels": labels, "top_k": job.top_k, "explain": job.explain,
                                   "batch_size": job.batch_size, "gpu": job.gpu})
        for result in ds.iter_rows():
            done, videos, quarantined = done + 1, videos + result["videos"], quarantined + result["quarantined"]
            busy = {k: busy[k] + result[k] for k in busy}
            if done % job.progress_every == 0 or done == len(todo):
                elapsed = time.perf_counter() - run_start
                rate = (videos + quarantined) / elapsed
                left = sum(len(shards[i]) for i in todo) - videos - quarantined
                logger.info(f"infer: {done}/{len(todo)} shards, {videos} videos labelled, {quarantined} quarantined, "
                            f"{rate:.3g} videos/s, ETA {_duration(left / rate) if rate else '?'}")
    run_seconds = time.perf_counter() - run_start
    summary = _tally(out, len(shards))
    if summary["inputs"] != len(inputs):
        raise RuntimeError(f"shards account for {summary['inputs']} inputs, there are {len(inputs)}")
    summary.update(status="done", params=params, out=str(out), model=source.card(), labels=len(labels),
                   shards=len(shards), shards_written=len(todo), shards_skipped=len(shards) - len(todo),
                   workers=workers, gpu=job.gpu, batch_size=job.batch_size, run_seconds=run_seconds, **busy,
                   seconds=time.perf_counter() - start,
                   videos_per_s=(videos + quarantined) / run_seconds if todo and run_seconds > 0 else None)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    logger.info(f"infer: {summary['predictions']} videos labelled, {summary['quarantined']} quarantined, in "
                f"{summary['seconds']:.1f} s -> {out}")
    if summary["quarantined"]:
        first = pq.read_table(str(out / QUARANTINE_FILE)).to_pylist()[0]
        logger.warning(f"infer: {summary['quarantined']} video(s) quarantined, listed in {out / QUARANTINE_FILE}; "
                       f"first: {first['error']}")
    return summary


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _tally(out: Path, num_shards: int) -> dict:
    """Counts from the shard files themselves (fresh and resumed alike); merges the quarantine lists."""
    predictions = sum(pq.read_metadata(str(prediction_file(out, i))).num_rows for i in range(num_shards))
    merged = merge_quarantine(out, num_shards)
    return {"inputs": predictions + merged.num_rows, "predictions": predictions, "quarantined": merged.num_rows}


def read_predictions(out: str | Path) -> pa.Table:
    """Every prediction row under OUT, in input order."""
    return pa.concat_tables([pq.read_table(str(p)) for p in sorted(Path(out).glob("predictions-*.parquet"))])
