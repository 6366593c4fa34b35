import json

import pytest
import torch
from safetensors.torch import load_file

from alt_core.backbone import load_backbone
from alt_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from alt_core.config import BackboneSpec
from tests.helpers import make_model, random_clip, write_weights


def test_round_trip_is_bit_exact(tmp_path, micro_backbone, micro_corpus):
    model = make_model(micro_backbone, micro_corpus).eval()
    with torch.no_grad():  # make the trained part non-trivial so the test can fail
        for p in model.adapter.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_checkpoint(model, tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"model.safetensors", "config.json", "labels.txt"}
    loaded = load_checkpoint(tmp_path / "ckpt")
    saved = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    for key, value in model.checkpoint_state().items():
        assert torch.equal(saved[key], value), key
        assert torch.equal(loaded.state_dict()[key], value), key
    pixels = random_clip()
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, loaded(pixels).logits)
    assert loaded.labels == model.labels
    assert [e.unit for e in loaded.entities] == [e.unit for e in model.entities]


def test_checkpoint_is_not_pickled(tmp_path, micro_backbone, micro_corpus):
    save_checkpoint(make_model(micro_backbone, micro_corpus), tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["model"]["backbone"] == "alt-micro"
    assert not any(p.suffix in {".pt", ".pkl", ".bin"} for p in (tmp_path / "c").iterdir())


def test_missing_file_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(tmp_path)


def test_changed_backbone_weights_make_a_checkpoint_unloadable(tmp_path, micro_backbone, micro_corpus):
    """A checkpoint names its backbone's weights by digest: retrained or newly shipped weights under the
    same file name must fail to load, not silently feed the adapter features it never saw."""
    weights = tmp_path / "w.safetensors"
    write_weights(weights, micro_backbone)
    backbone = load_backbone("alt-micro", pretrained=str(weights))
    model = make_model(backbone, micro_corpus)
    save_checkpoint(model, tmp_path / "ckpt")
    assert load_checkpoint(tmp_path / "ckpt").backbone.spec.id == backbone.spec.id
    write_weights(weights, micro_backbone, retrained=True)
    with pytest.raises(CheckpointError, match="whose weights are now"):
        load_checkpoint(tmp_path / "ckpt")


def test_backbone_id_names_the_weights_by_digest_and_parses_back(tmp_path, micro_backbone):
    weights = tmp_path / "w.safetensors"
    write_weights(weights, micro_backbone)
    spec = BackboneSpec("alt-micro", str(weights))
    before = spec.id
    assert before.endswith(f"@{spec.digest()}") and BackboneSpec.parse(before) == spec
    write_weights(weights, micro_backbone, retrained=True)
    assert spec.id != before and BackboneSpec.parse(spec.id) == spec
    assert BackboneSpec("ViT-B-16", "openai").id == "ViT-B-16:openai"  # a hub tag: no file to digest
