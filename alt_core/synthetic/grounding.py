"""Explanation precision on SynthActions: are the entities an explanation names really in the clip?

SynthActions knows every clip's contents (its ClipSpec follows from the data seed, the class and the
index), so an explanation can be checked: an entity is in the clip when it is the clip's background, or
when it names a shape that some object of the clip has (and, if it names a colour, in that colour).
Motion and position words are not checked: alignment matches regions of single frames.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import torch

from alt_core.clips import existing_shards, read_format, tokens_from_columns
from alt_core.model import ALTModel
from alt_core.synthetic.scenes import BACKGROUNDS, COLORS, SHAPES
from alt_core.synthetic.synth import ClipSpec, clip_seed, sample_clip_spec


@functools.cache
def _synth_meta(dataset_dir: Path) -> dict:
    return json.loads((dataset_dir / "synth.json").read_text())


def clip_spec_of(path: str | Path) -> ClipSpec:
    """The spec a SynthActions video was rendered from: data seed from synth.json, class from the folder,
    index from the file name (videos/<class_slug>/<index>.mp4)."""
    path = Path(path)
    meta = _synth_meta(path.parents[2])
    label = path.parent.name.replace("_", " ")
    return sample_clip_spec(label, clip_seed(meta["seed"], label, int(path.stem)), meta["frames"], meta["size"])


def objects_of(spec: ClipSpec) -> set[tuple[str, str]]:
    """(colour, shape) of every object drawn in the clip: actor, partner, distractor."""
    pairs = {(spec.color, spec.shape)}
    if spec.partner_shape:
        pairs.add((spec.partner_color, spec.partner_shape))
    if spec.distractor_shape:
        pairs.add((spec.distractor_color, spec.distractor_shape))
    return pairs


def entity_in_clip(unit: str, spec: ClipSpec) -> bool:
    if unit in BACKGROUNDS:
        return unit == spec.background
    words = set(unit.split())
    shapes, colors = words & set(SHAPES), words & set(COLORS)
    if len(shapes) != 1 or len(colors) > 1:
        return False
    shape = next(iter(shapes))
    return any(s == shape and (not colors or c in colors) for c, s in objects_of(spec))


@torch.no_grad()
def explanation_precision(model: ALTModel, clips_dir: str | Path, split: str = "test", top: int = 3,
                          batch_size: int = 64) -> dict:
    """Fraction of a split's clips (first view) whose top-`top` entities are all in the clip, from cached
    tokens; also the fraction of the named entities that are."""
    fmt = read_format(clips_dir)
    table = pads.dataset([str(s) for s in existing_shards(clips_dir)], format="parquet").to_table(
        columns=["path", *fmt.payload], filter=(pads.field("split") == split) & (pads.field("view") == 0))
    model.eval()
    paths = table["path"].to_pylist()
    clip_hits, entity_hits = [], []
    for start in range(0, len(paths), batch_size):
        chunk = table.slice(start, batch_size)
        tokens = tokens_from_columns(chunk.to_pydict(), fmt)
        out = model(tokens=tokens)
        for item, path in enumerate(paths[start:start + batch_size]):
            spec = clip_spec_of(path)
            found = [entity_in_clip(e.unit, spec) for e in model.explain(out, item)[:top]]
            clip_hits.append(bool(found) and all(found))
            entity_hits += found
    return {"explanation_precision": float(np.mean(clip_hits)), "entity_precision": float(np.mean(entity_hits)),
            "clips": len(clip_hits), "top": top, "split": split}
