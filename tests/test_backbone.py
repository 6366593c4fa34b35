import time

import pytest
import torch
from safetensors.torch import save_file

from alt_core.backbone import WEIGHTS_DIR, BackboneError, load_backbone
from alt_core.synthetic.motion import class_separation, load_motion_head, motion_probe
from alt_core.synthetic.probe import probe_backbone

MOTION_FLOOR = 0.7


def test_packaged_alt_tiny_is_small_fp16_and_trained():
    weights = WEIGHTS_DIR / "alt-tiny.safetensors"
    assert weights.stat().st_size <= 30 * 2**20
    backbone = load_backbone("alt-tiny")  # by name, offline, from the package
    assert backbone.image_size == 64 and backbone.embed_dim == 128
    result = probe_backbone(backbone, num_images=64, seed=123)
    assert result["single_object_top1"] >= 0.85 and result["background_top1"] >= 0.9  # random init: ~0.02


def test_packaged_alt_tiny_knows_motion_words():
    backbone = load_backbone("alt-tiny")
    head = load_motion_head(WEIGHTS_DIR / "alt-tiny.safetensors")
    assert head is not None  # pretrained on clips: its temporal head ships beside the weights
    motion = motion_probe(backbone, head, num_clips=96, seed=321)
    assert motion["motion_top1"] >= MOTION_FLOOR  # chance: 1/11
    assert class_separation(backbone)["same_shape_class_cosine"] <= 0.8  # still-image alt-tiny: 0.934


def test_offline_tag_fails_fast_with_a_clear_message():
    start = time.time()
    with pytest.raises(BackboneError, match="pass its local path"):
        load_backbone("ViT-B-16", pretrained="openai")
    assert time.time() - start < 20


def test_unknown_backbone_and_missing_file(tmp_path):
    with pytest.raises(BackboneError, match="unknown backbone 'ViT-Z-99'"):
        load_backbone("ViT-Z-99")
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone("alt-tiny", pretrained=str(tmp_path / "missing.safetensors"))


def test_local_weights_file_round_trips(tmp_path):
    torch.manual_seed(0)
    source = load_backbone("alt-micro", random_init=True)
    path = tmp_path / "micro.safetensors"
    save_file(source.clip.state_dict(), str(path))
    loaded = load_backbone("alt-micro", pretrained=str(path))
    for key, value in source.clip.state_dict().items():
        assert torch.equal(loaded.clip.state_dict()[key], value)
