import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from alt_core.backbone import load_backbone
from alt_core.config import PretrainConfig
from alt_core.errors import ALTError
from alt_core.synthetic.captions import (
    OBJECT_PHRASES,
    PATCH_IGNORE,
    Caption,
    ObjectClaim,
    patch_targets,
    render_batch,
    sample_caption,
)
from alt_core.synthetic.pretrain import multi_positive_loss, pretrain
from alt_core.synthetic.scenes import Scene, SceneObject, render_scene


def test_caption_describes_only_true_scenes():
    scene = Scene("grass", [SceneObject("red", "circle", 0.2, 0.5, 0.15), SceneObject("blue", "star", 0.8, 0.5, 0.25)])
    assert Caption((ObjectClaim("red", "circle", "on the left", "small"),), "grass").describes(scene)
    assert Caption((ObjectClaim("blue", "star"), ObjectClaim("red", "circle")), None).describes(scene)
    assert not Caption((ObjectClaim("red", "circle", "on the right"),), None).describes(scene)
    assert not Caption((ObjectClaim("red", "star"),), None).describes(scene)  # colour and shape must bind
    assert not Caption((), "sand").describes(scene)
    # two claims need two distinct objects
    assert not Caption((ObjectClaim("red", None), ObjectClaim(None, "circle")), None).describes(
        Scene("grass", [SceneObject("red", "circle", 0.5, 0.5, 0.2)]))


def test_sampled_captions_are_true():
    rng = np.random.default_rng(0)
    batch = render_batch(rng, 64, 64, 8)
    for scene in batch.scenes:
        assert sample_caption(rng, scene).describes(scene)


def test_multi_positive_loss_rewards_mass_on_positives():
    logits = torch.tensor([[5.0, 5.0, -5.0], [5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]])
    two_positives = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    assert multi_positive_loss(logits, two_positives) < 0.01  # all mass already on the positives
    assert multi_positive_loss(logits, torch.eye(3, dtype=torch.bool)) > 0.4  # one-hot targets would fight it


def test_patch_targets_mark_objects_background_and_edges():
    scene = Scene("water", [SceneObject("green", "square", 0.45, 0.45, 0.3, 0.0)])
    _, masks = render_scene(scene, 64)
    target = patch_targets(masks, scene, grid=8).reshape(8, 8)
    assert target[4, 4] == OBJECT_PHRASES.index("green square")
    assert target[0, 0] == len(OBJECT_PHRASES) + 2  # water is the third background
    assert (target == PATCH_IGNORE).any()  # partly covered edge patches are not trained on


def test_pretrain_resumes_and_exports(tmp_path):
    cfg = PretrainConfig(arch="alt-micro", steps=4, batch_size=8, warmup_steps=1, save_every_s=1e9)
    first = pretrain(tmp_path, cfg, budget_s=0.0)  # stops at once: state saved at step 0
    assert first["steps"] == 0
    with pytest.raises(ALTError, match="--resume"):
        pretrain(tmp_path, cfg)
    card = pretrain(tmp_path, cfg, resume=True)
    assert card["steps"] == 4
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["meta"]["step"] == 4 and len(state["meta"]["history"]) >= 1
    weights = load_file(str(tmp_path / "alt-micro.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    backbone = load_backbone("alt-micro", pretrained=str(tmp_path / "alt-micro.safetensors"))
    assert backbone.embed_text(["red circle"]).shape == (1, 32)
    text = (tmp_path / "alt-micro.md").read_text()
    assert str(card["probe"]["single_object_top1"]) in text and "steps: 4" in text


def test_squares_and_diamonds_stay_distinguishable():
    rng = np.random.default_rng(0)
    angles = [o.angle for s in render_batch(rng, 200, 64, 8).scenes for o in s.objects
              if o.shape in ("square", "diamond")]
    assert angles and max(abs(a) for a in angles) <= 0.35  # never near 45 degrees, where they coincide


def test_still_weight_scales_the_still_image_terms_against_the_clip_terms(tmp_path):
    cfg = PretrainConfig(arch="alt-micro", steps=1, batch_size=8, clip_batch_size=2, warmup_steps=1,
                         still_weight=3.0, save_every_s=1e9)
    pretrain(tmp_path, cfg)
    row = json.loads((tmp_path / "state" / "state.json").read_text())["meta"]["history"][-1]
    still = row["contrast"] + row["entity"] + row["region"]
    clips = row["clip_contrast"] + row["motion"] + row["class"]
    assert row["loss"] == pytest.approx(3.0 * still + clips, abs=2e-3)
    assert row["loss"] != pytest.approx(still + clips, abs=2e-3)
