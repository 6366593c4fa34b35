"""The generated datasets (`alt data synth --variant`), written alike: H.264 mp4 per clip, manifests with
train/val/test splits of the seen classes and the novel classes, few-shot lists and the entity file.

- `actions` (SynthActions, alt_core/synthetic/synth.py): a shape performs a motion; classes are shape x motion.
- `objects` (SynthObjects, alt_core/synthetic/objects.py): an actor interacts with a small key object in a
  scene, among distractor objects; classes are interaction x object x scene.

Everything derives from seeds: same variant and seed, same bytes. synth.json records the variant and seed, so
every clip's spec (what it shows) can be recovered from its path (`clip_spec_of`).
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alt_core.config import SYNTH_VIDEOS_PER_CLASS
from alt_core.errors import ConfigError
from alt_core.synthetic import objects, synth

logger = logging.getLogger(__name__)
SPLIT_FRACTIONS = {"val": 0.2, "test": 0.2}  # of each seen class; the rest is train
MANIFEST_COLUMNS = ("path", "label", "split")
META_FILE = "synth.json"


@dataclass(frozen=True)
class Variant:
    """One generated dataset: its classes and how a clip of a class is specified and drawn."""

    name: str
    title: str
    split_classes: Callable[[], tuple[list[str], list[str]]]  # (seen, novel)
    sample_spec: Callable[..., Any]  # (label, clip seed, frames, size) -> a spec with objects(), key_object()
    render: Callable[[Any], np.ndarray]  # spec -> (T, H, W, 3) uint8
    entities: Callable[[list[str]], list[dict]]  # the entity file of the seen classes
    vocabulary: Callable[[], dict]  # what synth.json lists about the classes' words

    def all_classes(self) -> list[str]:
        seen, novel = self.split_classes()
        return seen + novel


VARIANTS: dict[str, Variant] = {
    "actions": Variant("actions", "SynthActions", synth.split_classes, synth.sample_clip_spec, synth.render_clip,
                       synth.synth_entities, synth.vocabulary),
    "objects": Variant("objects", "SynthObjects", objects.split_classes, objects.sample_clip_spec,
                       objects.render_clip, objects.object_entities, objects.vocabulary),
}


def variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ConfigError(f"unknown dataset variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def _render_job(job: tuple[str, Any, str]) -> None:
    """Worker entry point: render one clip and write it (top level so spawned workers can import it)."""
    name, spec, path = job
    synth.write_mp4(path, VARIANTS[name].render(spec))


def _split_sizes(n: int) -> dict[str, int]:
    """Per seen class: ~60/20/20 train/val/test, with a test video from 2 and a val video from 3 videos."""
    test = max(1, int(SPLIT_FRACTIONS["test"] * n + 0.5)) if n >= 2 else 0
    val = max(1, int(SPLIT_FRACTIONS["val"] * n + 0.5)) if n >= 3 else 0
    return {"train": n - val - test, "val": val, "test": test}


def _write_rows(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)


def generate_dataset(
    out_dir: str | Path,
    variant_name: str = "actions",
    seed: int = 0,
    classes: list[str] | None = None,
    videos_per_class: int = SYNTH_VIDEOS_PER_CLASS,
    frames: int = 16,
    size: int = 64,
    workers: int = 2,
    fewshot: tuple[int, ...] = (2, 4, 8),
) -> dict:
    """Write a generated dataset under out_dir and return a summary with throughput.

    Layout: videos/<class_slug>/<index>.mp4, manifest.{parquet,csv} (path, label, split), labels_seen.txt,
    labels_novel.txt, entities.jsonl (corpus source for the seen classes), fewshot_{K}.csv and synth.json.
    Files are overwritten, stale ones are left alone.
    A few-shot K larger than the train videos per class is skipped with a warning (see synth.json).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    chosen = variant(variant_name)
    if videos_per_class < 1 or frames < 2 or size < 16 or size % 2 or workers < 1:
        raise ConfigError("need videos_per_class >= 1, frames >= 2, an even size >= 16 and workers >= 1")
    if any(k < 1 for k in fewshot):
        raise ConfigError(f"few-shot sizes must be positive, got {fewshot}")
    seen_all, novel_all = chosen.split_classes()
    wanted = set(seen_all + novel_all if classes is None else classes)
    if not wanted:
        raise ConfigError("classes is empty; pass None for all classes")
    unknown = sorted(wanted - set(seen_all + novel_all))
    if unknown:
        raise ConfigError(f"unknown {chosen.title} classes {unknown[:3]}; valid classes: {seen_all + novel_all}")
    seen = [c for c in seen_all if c in wanted]
    novel = [c for c in novel_all if c in wanted]

    out = Path(out_dir)
    width = max(3, len(str(videos_per_class - 1)))
    sizes = _split_sizes(videos_per_class)
    seen_splits = ["train"] * sizes["train"] + ["val"] * sizes["val"] + ["test"] * sizes["test"]
    rows: list[tuple[str, str, str]] = []
    jobs: list[tuple[str, Any, str]] = []
    for label in seen + novel:
        (out / "videos" / synth.class_slug(label)).mkdir(parents=True, exist_ok=True)
        for index in range(videos_per_class):
            rel = f"videos/{synth.class_slug(label)}/{index:0{width}d}.mp4"
            rows.append((rel, label, seen_splits[index] if label in seen else "novel"))
            spec = chosen.sample_spec(label, synth.clip_seed(seed, label, index), frames, size)
            jobs.append((chosen.name, spec, str(out / rel)))

    start = time.perf_counter()
    if workers == 1:
        for job in jobs:
            _render_job(job)
    else:
        # spawn: safe when the caller holds threads (torch, Ray); results land on disk, order is irrelevant.
        with mp.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_job, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                pass
    seconds = time.perf_counter() - start

    table = pa.table({name: [r[i] for r in rows] for i, name in enumerate(MANIFEST_COLUMNS)})
    pq.write_table(table, out / "manifest.parquet")
    _write_rows(out / "manifest.csv", rows)
    (out / "labels_seen.txt").write_text("".join(f"{c}\n" for c in seen))
    (out / "labels_novel.txt").write_text("".join(f"{c}\n" for c in novel))
    (out / "entities.jsonl").write_text("".join(json.dumps(e) + "\n" for e in chosen.entities(seen)))

    fewshot_rows: dict[int, int] = {}
    skipped = sorted({k for k in fewshot if k > sizes["train"]})
    if skipped and seen:
        logger.warning(f"few-shot sizes {skipped} exceed the {sizes['train']} train videos per class; "
                       "raise videos_per_class to get them")
    train_by_class = {label: [r for r in rows if r[1] == label and r[2] == "train"] for label in seen}
    for k in sorted(set(fewshot) - set(skipped)):
        shots = [r for label in seen for r in train_by_class[label][:k]]  # first k: nested across k
        _write_rows(out / f"fewshot_{k}.csv", shots)
        fewshot_rows[k] = len(shots)

    split_counts = {s: sum(r[2] == s for r in rows) for s in ("train", "val", "test", "novel")}
    meta = {
        "variant": chosen.name, "seed": seed, "frames": frames, "size": size, "fps": synth.FPS,
        "videos_per_class": videos_per_class, **chosen.vocabulary(), "split_fractions": SPLIT_FRACTIONS,
        "seen_classes": len(seen), "novel_classes": len(novel), "videos": len(rows),
        "splits": split_counts, "fewshot": {str(k): n for k, n in fewshot_rows.items()},
        "fewshot_skipped": skipped, "x264_options": synth.x264_options(), "example_spec": asdict(jobs[0][1]),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return {
        "out_dir": str(out), "variant": chosen.name, "seen_classes": len(seen), "novel_classes": len(novel),
        "videos": len(rows), "splits": split_counts, "fewshot": fewshot_rows, "fewshot_skipped": skipped,
        "workers": workers, "seconds": seconds, "clips_per_s": len(rows) / seconds if seconds > 0 else float("inf"),
    }


@functools.cache
def _dataset_meta(dataset_dir: Path) -> dict:
    return json.loads((dataset_dir / META_FILE).read_text())


def clip_spec_of(path: str | Path) -> Any:
    """The spec a generated video was rendered from: variant and data seed from synth.json, class from the
    folder, index from the file name (videos/<class_slug>/<index>.mp4)."""
    path = Path(path)
    meta = _dataset_meta(path.parents[2])
    label = path.parent.name.replace("_", " ")
    chosen = variant(meta.get("variant", "actions"))
    return chosen.sample_spec(label, synth.clip_seed(meta["seed"], label, int(path.stem)), meta["frames"],
                              meta["size"])
