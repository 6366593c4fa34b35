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
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch
from ray.data import ActorPoolStrategy

from alt_core.clips import QUARANTINE_FILE, ClipFormat, tokens_to_arrays, write_shard
from alt_core.corpus import backbone_id
from alt_core.manifest import ManifestRow, read_manifest
from alt_core.model import FrameTokens
from alt_core.video import open_video, read_frames, resize_crops, test_clip_indices, train_indices

SUMMARY_FILE = "decode.json"
QUARANTINE_SCHEMA = pa.schema([("path", pa.string()), ("stage", pa.string()), ("error", pa.string())])


@dataclass(frozen=True)
class DecodeSpec:
    """What determines a shard's contents; a resumed run must match the one that wrote the shards."""

    frames: int = 8
    clips: int = 1
    crops: int = 1
    size: int = 64
    train_clips: int = 1
    seed: int = 0
    cache_tokens: bool = False
    backbone: str | None = None
    pretrained: str | None = None
    tome_r: int = 0

    def views(self, split: str) -> int:
        return self.train_clips if split == "train" else self.clips * self.crops


def video_id(path: str) -> str:
    """A stable 12-hex id of a manifest path (also seeds its training-clip sampling)."""
    return hashlib.sha1(path.encode()).hexdigest()[:12]


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
    wanted = sorted({i for clip in clips for i in clip})  # each frame decoded once, however many views use it
    position = {frame: k for k, frame in enumerate(wanted)}
    cropped = resize_crops(read_frames(reader, row.path, wanted), spec.size, crops)  # (crops, U, 3, S, S)
    views = [cropped[:, [position[i] for i in clip]] for clip in clips]  # each (crops, T, 3, S, S)
    return torch.cat(views)


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
        rows = []
        for v in range(len(views)):
            joined, sizes = tokens_to_arrays(tokens, v)  # (T, 1 + R, D), (T, R) float16
            rows.append({**base, "view": v, "tokens": joined, "sizes": sizes})
        return rows

    @torch.inference_mode()
    def encode(self, views: torch.Tensor) -> FrameTokens:
        """The frozen image tower with ToMe: uint8 (V, T, 3, S, S) -> FrameTokens (V, T, ...)."""
        v, t = views.shape[:2]
        out = self.encoder(self.backbone.normalize_pixels(views.flatten(0, 1)))
        r = out.regions.shape[1]
        return FrameTokens(out.frame.view(v, t, -1), out.regions.view(v, t, r, -1), out.sizes.view(v, t, r))


def clip_format(spec: DecodeSpec) -> ClipFormat:
    """The shards' format; loads the backbone once here so bad names, weights, sizes or r fail early."""
    if not spec.cache_tokens:
        return ClipFormat("frames", (spec.frames, spec.size, spec.size, 3))
    if not spec.backbone:
        raise ValueError("caching tokens needs a backbone; pass --backbone NAME (and --pretrained FILE)")
    from alt_core.backbone import load_backbone
    from alt_core.tome import RegionEncoder

    backbone = load_backbone(spec.backbone, spec.pretrained)
    if spec.size != backbone.image_size:
        raise ValueError(f"--size {spec.size} differs from backbone {spec.backbone}'s input size "
                         f"{backbone.image_size}; pass --size {backbone.image_size} to cache tokens")
    regions = RegionEncoder(backbone.clip.visual, spec.tome_r).num_regions
    return ClipFormat("tokens", (spec.frames, 1 + regions, backbone.embed_dim), backbone_id(backbone.spec), spec.tome_r)


def _check_resume(out: Path, params: dict) -> None:
    """Refuse to mix shards of different inputs or parameters in one directory."""
    summary = out / SUMMARY_FILE
    if summary.is_file() and json.loads(summary.read_text()).get("params") != params:
        raise ValueError(f"{out} holds shards decoded from other inputs or parameters (see {summary}); "
                         "use a new --out directory or delete this one")


def decode_manifest(
    manifest: str | Path,
    out: str | Path,
    frames: int = 8,
    clips: int = 1,
    crops: int = 1,
    size: int = 64,
    train_clips: int = 1,
    seed: int = 0,
    cache_tokens: bool = False,
    backbone: str | None = None,
    pretrained: str | None = None,
    tome_r: int = 0,
    shard_size: int = 64,
    num_workers: int = 2,
    splits: Sequence[str] | None = None,
    progress: bool = True,
    labels_file: str | Path | None = None,
    default_split: str = "test",
) -> dict:
    """Decode every video of `manifest` into clip shards under `out`; resumable; returns the summary.

    labels_file / default_split: for mmaction2 lists (see alt_core.manifest.read_manifest).
    splits: keep only these splits (None: all).
    """
    start = time.perf_counter()
    if min(frames, clips, crops, size, train_clips, shard_size, num_workers) < 1 or tome_r < 0:
        raise ValueError("frames, clips, crops, size, train_clips, shard_size and num_workers must be >= 1, "
                         "tome_r >= 0")
    manifest, out = Path(manifest).absolute(), Path(out).absolute()
    rows = read_manifest(manifest, labels_file, default_split)
    if splits is not None:
        keep = set(splits)
        rows = [r for r in rows if r.split in keep]
        if not rows:
            raise ValueError(f"manifest {manifest} has no rows in splits {list(splits)}")
    spec = DecodeSpec(frames, clips, crops, size, train_clips, seed, cache_tokens, backbone if cache_tokens else None,
                      pretrained if cache_tokens else None, tome_r if cache_tokens else 0)
    rows_hash = hashlib.sha1(json.dumps([asdict(r) for r in rows]).encode()).hexdigest()[:16]
    params = {**asdict(spec), "manifest": str(manifest), "rows_hash": rows_hash, "shard_size": shard_size}
    fmt = clip_format(spec)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, params)
    (out / SUMMARY_FILE).write_text(json.dumps({"status": "running", "params": params}, indent=1) + "\n")

    # Deal videos to shards in a seeded random order, so every shard mixes classes: training reads shards
    # through a bounded shuffle buffer, and a class-sorted manifest would feed it one class at a time.
    rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
    shards = [rows[i:i + shard_size] for i in range(0, len(rows), shard_size)]
    todo = [i for i in range(len(shards)) if not (shard_file(out, i).is_file() and quarantine_file(out, i).is_file())]
    if progress:
        print(f"decode: {len(rows)} videos in {len(shards)} shards, {len(shards) - len(todo)} already done",
              file=sys.stderr, flush=True)
    decode_start, worker_seconds = time.perf_counter(), 0.0
    if todo:
        if not ray.is_initialized():
            ray.init()
        items = [{"shard": i, "paths": [r.path for r in shards[i]], "labels": [r.label for r in shards[i]],
                  "splits": [r.split for r in shards[i]]} for i in todo]
        ds = ray.data.from_items(items).map_batches(
            ShardDecoder, fn_constructor_kwargs={"out": str(out), "spec": spec, "fmt": fmt},
            compute=ActorPoolStrategy(size=min(num_workers, len(todo))), batch_size=1)
        for done, result in enumerate(ds.iter_rows(), start=1):
            worker_seconds += result["seconds"]
            if progress:
                errors = json.loads(result["errors"])
                print(f"decode: shard {result['shard']} done ({done}/{len(todo)}): {result['videos']} videos, "
                      f"{result['rows']} rows, {result['quarantined']} quarantined"
                      + (f" - first error: {errors[0]}" if errors else ""), file=sys.stderr, flush=True)
    decode_seconds = time.perf_counter() - decode_start

    summary = _tally(out, len(shards))
    if summary["inputs"] != len(rows):
        raise RuntimeError(f"shards account for {summary['inputs']} inputs, the manifest has {len(rows)}")
    summary.update(manifest=str(manifest), out=str(out), shards=len(shards), shards_written=len(todo),
                   shards_skipped=len(shards) - len(todo), params=params, format=asdict(fmt),
                   decode_seconds=decode_seconds, worker_seconds=worker_seconds, seconds=time.perf_counter() - start,
                   videos_per_s=summary["videos_ok"] / decode_seconds if todo and decode_seconds > 0 else None)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    if progress:
        print(f"decode: {summary['videos_ok']} videos -> {summary['rows']} rows, {summary['quarantined']} "
              f"quarantined, in {summary['seconds']:.1f}s; summary in {out / SUMMARY_FILE}", file=sys.stderr,
              flush=True)
    return summary


def _tally(out: Path, num_shards: int) -> dict:
    """Counts from the shard files themselves (fresh and resumed alike); merges the quarantine lists."""
    rows = videos = 0
    quarantine = []
    for i in range(num_shards):
        views = pq.read_table(str(shard_file(out, i)), columns=["view"])["view"].to_numpy()
        rows += len(views)
        videos += int((views == 0).sum())  # each decoded video writes exactly one view 0
        quarantine.append(pq.read_table(str(quarantine_file(out, i))))
    merged = pa.concat_tables(quarantine) if quarantine else QUARANTINE_SCHEMA.empty_table()
    tmp = out / (QUARANTINE_FILE + ".tmp")
    pq.write_table(merged, str(tmp))
    os.replace(tmp, out / QUARANTINE_FILE)
    return {"inputs": videos + merged.num_rows, "videos_ok": videos, "quarantined": merged.num_rows, "rows": rows}
