"""Explanation figures (alt_core/synthetic/grounding.py): what can be checked, and each figure against a
deliberately wrong explanation."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from alt_core.backbone import load_backbone
from alt_core.config import ALTConfig, DecodeSpec
from alt_core.corpus import EntityCorpus, build_corpus
from alt_core.manifest import read_manifest
from alt_core.model import ALTModel
from alt_core.synthetic import objects
from alt_core.synthetic.dataset import generate_dataset
from alt_core.synthetic.grounding import checkable, entity_in_clip, explanation_figures, names_object
from alt_core.synthetic.synth import ClipSpec
from pipelines.decode import ShardDecoder, clip_format


def test_only_units_of_backgrounds_colours_and_shapes_are_checkable():
    assert all(map(checkable, ["sand", "sandy desert", "red star", "a red star", "star", "white circle"]))
    assert not any(map(checkable, ["a circle on the left", "circle orbiting", "shape", "moving left", "small star",
                                   "red", "red blue star", "chasing"]))
    with pytest.raises(ValueError, match="cannot be checked"):
        entity_in_clip("circle orbiting", None)


def test_entity_in_clip_and_key_objects_of_both_datasets():
    actions = ClipSpec("circle chasing another shape", "circle", "chasing another shape", "red", "sand", 0,
                       partner_shape="square", partner_color="blue", distractor_shape="star", distractor_color="green")
    assert entity_in_clip("sand", actions) and not entity_in_clip("grass", actions)
    assert entity_in_clip("red circle", actions) and entity_in_clip("blue square", actions)
    assert entity_in_clip("green star", actions) and not entity_in_clip("red star", actions)
    assert names_object("circle", actions.key_object()) and not names_object("blue circle", actions.key_object())
    label = objects.split_classes()[0][0]
    spec = objects.sample_clip_spec(label, seed=1)
    assert entity_in_clip(" ".join(spec.distractors[0]), spec) and entity_in_clip("white circle", spec)
    assert names_object(f"{spec.key_color} {spec.key_shape}", spec.key_object())
    assert not names_object(" ".join(spec.distractors[0]), spec.key_object())


@pytest.fixture(scope="module")
def objects_tokens(tmp_path_factory) -> tuple[Path, ALTModel]:
    """12 SynthObjects test clips as cached alt-tiny tokens (decoded in process), and an untrained ALT whose
    explanations are alt-tiny's alignment."""
    root = tmp_path_factory.mktemp("objects")
    seen = objects.split_classes()[0][::10]  # 6 classes
    generate_dataset(root / "synth", "objects", seed=2, classes=seen, videos_per_class=10, frames=16, size=64,
                     workers=1, fewshot=())
    spec = DecodeSpec(frames=8, clips=1, cache_tokens=True, backbone="alt-tiny", tome_r=8)
    (root / "tokens").mkdir()
    rows = [r for r in read_manifest(root / "synth" / "manifest.csv") if r.split == "val"]
    ShardDecoder(str(root / "tokens"), spec, clip_format(spec)).decode_shard(0, rows)
    backbone = load_backbone("alt-tiny")
    corpus = build_corpus(backbone, seen, ["labels", str(root / "synth" / "entities.jsonl")])
    torch.manual_seed(0)
    return root / "tokens", ALTModel(ALTConfig(tome_r=8, num_queries=8), backbone, corpus, seen)


def test_precision_and_recall_fall_for_a_wrong_explanation(objects_tokens):
    tokens, model = objects_tokens
    right = explanation_figures(model, tokens, split="val")
    assert right["clips"] == 12 and right["checked_entities"] > 12
    assert right["entity_precision"] >= 0.8 and right["object_recall"] >= 0.6 and right["all_top_precision"] > 0.2
    assert "chasing" in right["uncheckable_units"] and "brick wall" not in right["uncheckable_units"]
    units = [e.unit for e in model.entities]
    shifted = [dataclasses.replace(e, unit=units[(i + 3) % len(units)]) for i, e in enumerate(model.entities)]
    corpus = EntityCorpus(shifted, model.entity_embeddings, model.backbone.spec.id)
    wrong = ALTModel(model.config, model.backbone, corpus, model.labels)  # each entity named as another
    figures = explanation_figures(wrong, tokens, split="val")
    assert figures["entity_precision"] < right["entity_precision"] - 0.2
    assert figures["object_recall"] < right["object_recall"] - 0.2
    assert figures["all_top_precision"] < right["all_top_precision"]


def test_faithfulness_is_zero_when_queries_do_nothing_and_negative_for_a_backwards_explanation(objects_tokens,
                                                                                             monkeypatch):
    tokens, model = objects_tokens
    idle = explanation_figures(model, tokens, split="val")  # untrained: the query branch adds nothing yet
    assert idle["faithfulness"] == 0 and idle["deletion_clips"] > 6
    try:
        torch.nn.init.normal_(model.adapter.proj.weight, std=0.5)  # now the queries move the logits
        active = explanation_figures(model, tokens, split="val")
        assert active["faithfulness"] > 2 * active["faithfulness_se"] > 0
        # a wrong explanation: the entity whose query adds least named first
        monkeypatch.setattr(model, "query_contributions",
                            lambda out, target: -ALTModel.query_contributions(model, out, target))
        backwards = explanation_figures(model, tokens, split="val")
        assert backwards["faithfulness"] < 0
    finally:
        torch.nn.init.zeros_(model.adapter.proj.weight)
    json.dumps(active)  # the figures are plain numbers, lists and strings: they go into results/runs/*.json
