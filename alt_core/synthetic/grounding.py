"""Explanation figures on the generated datasets: are the entities an explanation names in the clip, is the
class's key object among them, and do they drive the prediction?

A generated clip's contents follow from its path (`clip_spec_of`), so an explanation can be checked. A unit is
checkable when it names a background (its name or its description), or one shape and at most one colour and
nothing else; motion, position, size and other words are not (alignment matches regions of single frames), and
such units are listed and left out, never counted as right or wrong. Figures over the top-k explained entities
of each clip:
- entity precision: of the checkable units, the share that are in the clip (the background, or a shape some
  object of the clip has, in that colour when one is named; distractors are in the clip);
- all-top-k: the share of clips whose top-k units are all checkable and in the clip;
- object recall: the share of clips with the class's key object (SynthObjects' key object; SynthActions' actor)
  among the top-k units;
- faithfulness: removing the top entity's query (the explanation's first: the one that adds most to the
  predicted class's logit, `ALTModel.query_contributions`) lowers that logit more than removing a random
  other valid query (a deletion test; mean of the paired differences and its standard error).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import torch

from alt_core.alignment import explanation_slots
from alt_core.clips import existing_shards, read_format, tokens_from_columns
from alt_core.model import ALTModel
from alt_core.synthetic.dataset import clip_spec_of
from alt_core.synthetic.scenes import BACKGROUNDS, COLORS, SHAPES

SCENE_NAMES = {**{name: name for name in BACKGROUNDS},
               **{d.removeprefix("a ").removeprefix("an "): name for name, d in BACKGROUNDS.items()}}


def _named(unit: str) -> tuple[str | None, str] | None:
    """(colour or None, shape) that a checkable object unit names; None for anything else."""
    words = unit.split()
    if words and words[0] == "a":
        words = words[1:]
    if len(words) == 1 and words[0] in SHAPES:
        return None, words[0]
    if len(words) == 2 and words[0] in COLORS and words[1] in SHAPES:
        return words[0], words[1]
    return None


def checkable(unit: str) -> bool:
    return unit in SCENE_NAMES or _named(unit) is not None


def names_object(unit: str, obj: tuple[str, str]) -> bool:
    """The unit names this (colour, shape): its shape, and its colour if it names one."""
    named = _named(unit)
    return named is not None and named[1] == obj[1] and named[0] in (None, obj[0])


def entity_in_clip(unit: str, spec) -> bool:
    """A checkable unit is in the clip (`spec` of either generated dataset)."""
    if not checkable(unit):
        raise ValueError(f"{unit!r} cannot be checked against a clip's contents")
    if unit in SCENE_NAMES:
        return SCENE_NAMES[unit] == spec.background
    return any(names_object(unit, obj) for obj in spec.objects())


@torch.no_grad()
def explanation_figures(model: ALTModel, clips_dir: str | Path, split: str = "test", top: int = 3,
                        batch_size: int = 64, seed: int = 0) -> dict:
    """The figures above for the first view of every clip of a split, from cached tokens."""
    fmt = read_format(clips_dir)
    table = pads.dataset([str(s) for s in existing_shards(clips_dir)], format="parquet").to_table(
        columns=["path", *fmt.payload], filter=(pads.field("split") == split) & (pads.field("view") == 0))
    model.eval()
    rng = torch.Generator().manual_seed(seed)
    paths = table["path"].to_pylist()
    all_present, entity_hits, recall, deletion = [], [], [], []
    for start in range(0, len(paths), batch_size):
        tokens = tokens_from_columns(table.slice(start, batch_size).to_pydict(), fmt)
        out = model(tokens=tokens)
        predicted = out.logits.argmax(-1)  # (B,)
        contributions = model.query_contributions(out, model.class_embeddings[predicted])  # (B, Nq)
        valid = out.alignment.query_valid  # (B, Nq)
        top_slot = torch.tensor([(explanation_slots(out.alignment, contributions[i], i) or [0])[0]
                                 for i in range(len(predicted))])  # (B,): the explanation's first entity
        others = valid.clone()
        others[torch.arange(len(top_slot)), top_slot] = False
        random_slot = torch.multinomial(others.float() + 1e-12, 1, generator=rng)[:, 0]  # (B,)
        drops = {}
        for name, slot in (("top", top_slot), ("random", random_slot)):
            dropped = torch.zeros_like(valid)
            dropped[torch.arange(len(slot)), slot] = True
            logits = model(tokens=tokens, drop_queries=dropped).logits
            drops[name] = (out.logits - logits).gather(1, predicted[:, None])[:, 0]  # (B,)
        for item, path in enumerate(paths[start:start + batch_size]):
            spec = clip_spec_of(path)
            units = [e.unit for e in model.explain(out, item)[:top]]
            verdicts = [entity_in_clip(u, spec) for u in units if checkable(u)]
            entity_hits += verdicts
            all_present.append(bool(units) and len(verdicts) == len(units) and all(verdicts))
            recall.append(any(names_object(u, spec.key_object()) for u in units))
            if bool(others[item].any()):
                deletion.append(float(drops["top"][item] - drops["random"][item]))
    units = [e.unit for e in model.entities]
    return {"entity_precision": float(np.mean(entity_hits)), "all_top_precision": float(np.mean(all_present)),
            "object_recall": float(np.mean(recall)), "faithfulness": float(np.mean(deletion)),
            "faithfulness_se": float(np.std(deletion, ddof=1) / math.sqrt(len(deletion))),
            "checked_entities": len(entity_hits), "clips": len(paths), "deletion_clips": len(deletion), "top": top,
            "split": split, "uncheckable_units": sorted(u for u in units if not checkable(u))}
