"""Clip pretraining pieces (captions, held-out pairs, temporal head) and explanation precision."""

import numpy as np
import pytest
import torch

from alt_core.backbone import load_backbone
from alt_core.config import PretrainConfig
from alt_core.synthetic.dataset import generate_dataset
from alt_core.synthetic.grounding import clip_spec_of
from alt_core.synthetic.motion import (
    ClipCaption,
    TemporalHead,
    class_separation,
    load_motion_head,
    motion_probe,
    render_clip_batch,
    sample_clip_caption,
)
from alt_core.synthetic.pretrain import evaluate_backbone, pretrain
from alt_core.synthetic.synth import ClipSpec, render_clip, split_classes
from alt_core.video import open_video, read_frames


def test_pretraining_clips_never_show_a_held_out_pair():
    seen, novel = split_classes()
    batch = render_clip_batch(np.random.default_rng(0), 200, frames=4, size=32)
    assert batch.videos.shape == (200, 4, 32, 32, 3) and batch.videos.dtype == np.uint8
    labels = {spec.label for spec in batch.specs}
    assert labels <= set(seen) and not labels & set(novel) and len(labels) > 50


def test_clip_captions_are_true_and_bind_partner_and_motion():
    spec = ClipSpec("circle chasing another shape", "circle", "chasing another shape", "red", "sand", 0,
                    partner_shape="square", partner_color="blue")
    caption = ClipCaption("chasing another shape", "circle", "red", "sand", "blue square")
    assert caption.text() == "a red circle chasing a blue square on a sandy desert" and caption.describes(spec)
    assert not ClipCaption("chasing another shape", "circle", partner="red square").describes(spec)
    assert not ClipCaption("orbiting", "circle").describes(spec)
    assert ClipCaption("orbiting", "circle", bare=True).text() == "circle orbiting"  # as ALT prompts class names
    rng = np.random.default_rng(1)
    batch = render_clip_batch(rng, 64, frames=4, size=32)
    assert all(sample_clip_caption(rng, spec).describes(spec) for spec in batch.specs)


def test_temporal_head_sees_frame_order():
    torch.manual_seed(0)
    head = TemporalHead(dim=16, frames=6).eval()
    frames = torch.nn.functional.normalize(torch.randn(2, 6, 16), dim=-1)
    out = head(frames)
    assert out.shape == (2, 16) and torch.allclose(out.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(out, head(frames.flip(1)), atol=1e-4)  # moving left is not moving right


def test_clip_pretraining_trains_the_text_tower_on_motion_words_and_ships_the_head(tmp_path):
    cfg = PretrainConfig(arch="alt-micro", steps=3, batch_size=8, clip_batch_size=6, clip_frames=4, warmup_steps=1,
                         save_every_s=1e9)
    before = class_separation(load_backbone("alt-micro", random_init=True))
    card = pretrain(tmp_path, cfg)
    weights = tmp_path / "alt-micro.safetensors"
    head = load_motion_head(weights)
    assert head is not None and head.frames == 4
    assert {"clip_contrast", "motion", "class"} <= set(card_history(tmp_path))
    probe = card["probe"]
    assert 0.0 <= probe["motion_top1"] <= 1.0 and probe["motion_clips"] == 352
    assert probe["same_shape_class_cosine"] != before["same_shape_class_cosine"]
    assert evaluate_backbone(str(weights), "alt-micro") == probe  # fixed seeds: `alt backbone eval` reproduces the card
    assert "motion of a clip" in (tmp_path / "alt-micro.md").read_text()


def card_history(directory) -> dict:
    import json

    return json.loads((directory / "state" / "state.json").read_text())["meta"]["history"][-1]


def test_motion_probe_is_at_chance_for_a_random_head():
    backbone = load_backbone("alt-micro", random_init=True)
    torch.manual_seed(0)
    result = motion_probe(backbone, TemporalHead(backbone.embed_dim, 4), num_clips=64)
    assert result["motion_top1"] < 0.4 and result["motion_clips"] == 64


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("grounding")
    labels = ["circle chasing another shape", "star spinning"]
    generate_dataset(out, seed=3, classes=labels, videos_per_class=3, frames=8, size=32, workers=1, fewshot=())
    return out


def test_clip_spec_of_a_video_renders_that_video(synth_dir):
    paths = sorted(synth_dir.glob("videos/*/*.mp4"))
    for path, other in zip(paths, paths[1:] + paths[:1], strict=True):
        decoded = read_frames(open_video(path), path, list(range(8))).astype(int)  # (T, H, W, 3)
        error = np.abs(decoded - render_clip(clip_spec_of(path))).mean()  # H.264 (crf 18, 4:2:0) at 32 px
        assert error < 15 and error < 0.5 * np.abs(decoded - render_clip(clip_spec_of(other))).mean()
