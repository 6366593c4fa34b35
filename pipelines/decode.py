"""Ray Data stage: decode a manifest's videos into clip shards (frames or cached region tokens).

The manifest is dealt in a seeded random order into shards of `shard_size` videos (so shards mix
classes); each shard is one batch for a pool of decoder actors, which write `shard-{i:05d}.parquet`
(alt_core.clips format) and `quarantine-{i:05d}.parquet` (inputs that failed, with the error). A
shard file is written last and atomically, so its presence means the shard is done: a rerun skips it
(resume). Every video either yields rows or a quarantine row — inputs = videos written +
quarantined, checked at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch
from ray.data import ActorPoolStrategy
from tqdm import tqdm

from alt_core.clips import QUARANTINE_FILE, ClipFormat, read_quarantine, tokens_to_arrays, write_shard
from alt_core.config import DecodeSpec
from alt_core.errors import ALTError, ConfigError
from alt_core.manifest import ManifestError, ManifestRow, read_manifest, video_id
from alt_core.tome import FrameTokens
from alt_core.video import decode_clips, open_video, test_clip_indices, train_indices
from pipelines.console import console, ensure_ray

logger = logging.getLogger(__name__)

SUMMARY_FILE = "decode.json"
QUARANTINE_SCHEMA = pa.schema([("path", pa.string()), ("stage", pa.string()), ("error", pa.string())])


def shard_file(out: Path, index: int) -> Path:
    return out / f"shard-{index:05d}.parquet"


def quarantine_file(out: Path, index: int) -> Path:
    return out / f"quarantine-{index:05d}.parquet"


def sample_views(row: ManifestRow, spec: DecodeSpec) -> torch.Tensor:
    """Decode only the sampled frames of one video: uint8 (V, T, 3, size, size), V = spec.views(split).

    Train: `train_clips` random TSN clips (rng from seed and video id), centre crop.
    Other splits: `clips` evenly spread temporal views x `crops` spatial crops, clip-major.
    """
    reader = open_video(row.path)
    total = len(reader)
    if row.split == "train":
        rng = np.random.default_rng([spec.seed, int(video_id(row.path), 16)])
        clips, crops = [train_indices(total, spec.frames, rng) for _ in range(spec.train_clips)], 1
    else:
        clips, crops = test_clip_indices(total, spec.frames, spec.clips), spec.crops
    return decode_clips(reader, row.path, clips, spec.size, crops)


class ShardDecoder:
    """Decodes one shard per call. Runs as a Ray actor (the backbone loads once) or as a plain object."""

    def __init__(self, out: str, spec: DecodeSpec, fmt: ClipFormat):
        self.out, self.spec, self.fmt = Path(out), spec, fmt
        self.backbone = self.encoder = None
        if spec.cache_tokens:
            from alt_core.backbone import load_backbone
            from alt_core.tome import RegionEncoder

            self.backbone = load_backbone(spec.backbone, spec.pretrained)
            self.encoder = RegionEncoder(self.backbone.clip.visual, spec.tome_r).eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        """batch: columns shard, paths, labels, splits (one row per shard) -> per-shard counts."""
        results = [self.decode_shard(int(i), [ManifestRow(str(p), str(lb), str(s)) for p, lb, s in
                                              zip(paths, labels, splits, strict=True)])
                   for i, paths, labels, splits in zip(batch["shard"], batch["paths"], batch["labels"],
                                                       batch["splits"], strict=True)]
        return {key: [r[key] for r in results] for key in results[0]}

    def decode_shard(self, index: int, rows: list[ManifestRow]) -> dict:
        start = time.perf_counter()
        out_rows, quarantine = [], []
        for row in rows:
            try:
                out_rows += self.video_rows(row)
            except Exception as err:  # any failure of one video quarantines it, not the shard
                quarantine.append({"path": row.path, "stage": "decode", "error": f"{type(err).__name__}: {err}"})
        # quarantine first, shard last: an existing shard file implies its quarantine file exists
        pq.write_table(pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA), str(quarantine_file(self.out,
                                                                                                         index)))
        write_shard(shard_file(self.out, index), out_rows, self.fmt)
        return {"shard": index, "videos": len(rows) - len(quarantine), "rows": len(out_rows),
                "quarantined": len(quarantine), "errors": json.dumps([q["error"] for q in quarantine]),
                "seconds": time.perf_counter() - start}

    def video_rows(self, row: ManifestRow) -> list[dict]:
        views = sample_views(row, self.spec)  # (V, T, 3, S, S) uint8
        expected = (self.spec.views(row.split), self.spec.frames, 3, self.spec.size, self.spec.size)
        if tuple(views.shape) != expected:
            raise ValueError(f"sampled views have shape {tuple(views.shape)}, expected {expected}")
        base = {"video_id": video_id(row.path), "path": row.path, "label": row.label, "split": row.split}
        if not self.spec.cache_tokens:
            frames = views.permute(0, 1, 3, 4, 2).numpy()  # (V, T, S, S, 3)
            return [{**base, "view": v, "frames": frames[v]} for v in range(len(frames))]
        tokens = self.encode(views)
        return [{**base, "view": v, **tokens_to_arrays(tokens, v)} for v in range(len(views))]

    @torch.inference_mode()
    def encode(self, views: torch.Tensor) -> FrameTokens:
        """The frozen image tower with ToMe: uint8 (V, T, 3, S, S) -> FrameTokens (V, T, ...)."""
        v, t = views.shape[:2]
        out = self.encoder(self.backbone.normalize_pixels(views.flatten(0, 1)))
        return FrameTokens.of_frames(out, v, t)


def clip_format(spec: DecodeSpec) -> ClipFormat:
    """The shards' format; loads the backbone once here so bad names, weights, sizes or r fail early."""
    if not spec.cache_tokens:
        return ClipFormat("frames", (spec.frames, spec.size, spec.size, 3))
    from alt_core.backbone import load_backbone
    from alt_core.tome import RegionEncoder

    backbone = load_backbone(spec.backbone, spec.pretrained)
    if spec.size != backbone.image_size:
        raise ConfigError(f"--size {spec.size} differs from backbone {spec.backbone}'s input size "
                          f"{backbone.image_size}; pass --size {backbone.image_size} to cache tokens")
    regions = RegionEncoder(backbone.clip.visual, spec.tome_r).num_regions
    return ClipFormat("tokens", (spec.frames, 1 + regions, backbone.embed_dim), backbone.spec.id, spec.tome_r)


def previous_params(out: Path, summary_file: str = SUMMARY_FILE) -> dict | None:
    """The parameters of the run that wrote `out` (its summary file: decode's, or infer's), if any: a rerun
    resumes it."""
    summary = out / summary_file
    return json.loads(summary.read_text()).get("params") if summary.is_file() else None


def _check_resume(out: Path, params: dict) -> None:
    """Refuse to mix shards of different inputs or parameters in one directory."""
    previous = previous_params(out)
    if previous is not None and previous != params:
        raise ALTError(f"{out} holds shards decoded from other inputs or parameters (see {out / SUMMARY_FILE}); "
                       "use a new --out directory or delete this one")


def default_workers() -> int:
    """One decoder per CPU of the cluster (this machine's when no cluster runs yet)."""
    cpus = ray.cluster_resources().get("CPU") if ray.is_initialized() else os.cpu_count()
    return max(1, int(cpus or 1))


def default_shard_size(videos: int, workers: int) -> int:
    """About four shards per worker, so the pool stays full to the end, and at most 64 videos a shard."""
    return max(1, min(64, math.ceil(videos / (4 * workers))))


def decode_manifest(manifest: str | Path, out: str | Path, spec: DecodeSpec = DecodeSpec(), *,
                    shard_size: int | None = None, workers: int | None = None,
                    splits: Sequence[str] | None = None, labels_file: str | Path | None = None,
                    default_split: str = "test") -> dict:
    """Decode every video of `manifest` into clip shards under `out`; resumable; returns the summary.

    workers / shard_size: default to one decoder per CPU and ~4 shards per decoder.
    labels_file / default_split: for mmaction2 lists (see alt_core.manifest.read_manifest).
    splits: keep only these splits (None: all).
    """
    start = time.perf_counter()
    if (shard_size is not None and shard_size < 1) or (workers is not None and workers < 1):
        raise ConfigError("--shard-size and --workers must be >= 1")
    manifest, out = Path(manifest).absolute(), Path(out).absolute()
    rows = read_manifest(manifest, labels_file, default_split)
    if splits is not None:
        keep = set(splits)
        rows = [r for r in rows if r.split in keep]
        if not rows:
            raise ManifestError(f"manifest {manifest} has no rows in splits {list(splits)}")
    fmt = clip_format(spec)
    ensure_ray()
    workers = workers or default_workers()
    # a rerun keeps the shard size that wrote the existing shards, whatever the cluster's size is now
    shard_size = shard_size or (previous_params(out) or {}).get("shard_size") or default_shard_size(len(rows),
                                                                                                     workers)
    rows_hash = hashlib.sha1(json.dumps([asdict(r) for r in rows]).encode()).hexdigest()[:16]
    params = {**spec.identity(), "backbone_id": fmt.backbone, "manifest": str(manifest), "rows_hash": rows_hash,
              "shard_size": shard_size}
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, params)
    (out / SUMMARY_FILE).write_text(json.dumps({"status": "running", "params": params}, indent=1) + "\n")

    # Deal videos to shards in a seeded random order, so every shard mixes classes: training reads shards
    # through a bounded shuffle buffer, and a class-sorted manifest would feed it one class at a time.
    rows = [rows[i] for i in np.random.default_rng(spec.seed).permutation(len(rows))]
    shards = [rows[i:i + shard_size] for i in range(0, len(rows), shard_size)]
    todo = [i for i in range(len(shards)) if not (shard_file(out, i).is_file() and quarantine_file(out, i).is_file())]
    logger.info(f"decode: {len(rows)} videos in {len(shards)} shards ({len(shards) - len(todo)} already done), "
                f"{min(workers, max(len(todo), 1))} decoder(s), {fmt.kind} into {out}")
    decode_start, worker_seconds = time.perf_counter(), 0.0
    if todo:
        items = [{"shard": i, "paths": [r.path for r in shards[i]], "labels": [r.label for r in shards[i]],
                  "splits": [r.split for r in shards[i]]} for i in todo]
        ds = ray.data.from_items(items).map_batches(
            ShardDecoder, fn_constructor_kwargs={"out": str(out), "spec": spec, "fmt": fmt},
            compute=ActorPoolStrategy(size=min(workers, len(todo))), batch_size=1)
        with tqdm(total=len(todo), desc="decode", unit="shard", file=console(), disable=not console().isatty(),
                  leave=False) as bar:
            for result in ds.iter_rows():
                worker_seconds += result["seconds"]
                bar.update()
                logger.debug(f"decode: shard {result['shard']}: {result['videos']} videos, {result['rows']} rows, "
                             f"{result['quarantined']} quarantined {json.loads(result['errors'])[:1]}")
    decode_seconds = time.perf_counter() - decode_start

    summary = _tally(out, len(shards))
    if summary["inputs"] != len(rows):
        raise RuntimeError(f"shards account for {summary['inputs']} inputs, the manifest has {len(rows)}")
    summary.update(manifest=str(manifest), out=str(out), shards=len(shards), shards_written=len(todo),
                   shards_skipped=len(shards) - len(todo), workers=workers, params=params, format=asdict(fmt),
                   decode_seconds=decode_seconds, worker_seconds=worker_seconds, seconds=time.perf_counter() - start,
                   videos_per_s=summary["videos_ok"] / decode_seconds if todo and decode_seconds > 0 else None)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    logger.info(f"decode: {summary['videos_ok']} videos -> {summary['rows']} rows, {summary['quarantined']} "
                f"quarantined, in {summary['seconds']:.1f} s")
    if summary["quarantined"]:
        first = read_quarantine(out)[0]
        logger.warning(f"decode: {summary['quarantined']} video(s) quarantined, listed in {out / QUARANTINE_FILE}; "
                       f"first: {first['error']}")
    return summary


def _tally(out: Path, num_shards: int) -> dict:
    """Counts from the shard files themselves (fresh and resumed alike); merges the quarantine lists."""
    rows = videos = 0
    for i in range(num_shards):
        views = pq.read_table(str(shard_file(out, i)), columns=["view"])["view"].to_numpy()
        rows += len(views)
        videos += int((views == 0).sum())  # each decoded video writes exactly one view 0
    merged = merge_quarantine(out, num_shards)
    return {"inputs": videos + merged.num_rows, "videos_ok": videos, "quarantined": merged.num_rows, "rows": rows}


def merge_quarantine(out: Path, num_shards: int) -> pa.Table:
    """The shards' quarantine lists as one table, also written to OUT/quarantine.parquet (decode and infer)."""
    parts = [pq.read_table(str(quarantine_file(out, i))) for i in range(num_shards)]
    merged = pa.concat_tables(parts) if parts else QUARANTINE_SCHEMA.empty_table()
    write_table(out / QUARANTINE_FILE, merged)
    return merged


def write_table(path: Path, table: pa.Table) -> None:
    """A file exists whole or not at all, so a resumed run can trust it."""
    tmp = Path(str(path) + ".tmp")
    pq.write_table(table, str(tmp))
    os.replace(tmp, path)
