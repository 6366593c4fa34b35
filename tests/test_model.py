import pytest
import torch

from alt_core.alignment import EntityAligner
from alt_core.model import ALTConfig
from tests.helpers import LABELS, make_model, random_clip


@pytest.mark.parametrize("adapter", ["alt", "meanpool", "temporal"])
def test_shapes_through_every_adapter(micro_backbone, micro_corpus, adapter):
    model = make_model(micro_backbone, micro_corpus, adapter).eval()
    pixels = random_clip()
    tokens = model.encode_frames(pixels)
    r = model.encoder.num_regions
    assert tokens.frame.shape == (2, 4, 32)
    assert tokens.regions.shape == (2, 4, r, 32) and tokens.sizes.shape == (2, 4, r)
    out = model(pixels)
    assert out.logits.shape == (2, len(LABELS)) and out.video.shape == (2, 32)
    assert (out.alignment is not None) == (adapter == "alt")
    views = model.forward_views(random_clip(batch=6).view(2, 3, 4, 3, 32, 32))
    assert views.logits.shape == (2, len(LABELS))


def test_alignment_shapes_and_explanation(micro_backbone, micro_corpus):
    model = make_model(micro_backbone, micro_corpus).eval()
    out = model(random_clip())
    a = out.alignment
    assert a.query_index.shape == a.query_score.shape == (2, 4)
    assert a.region_entity.shape == (2, 4, model.encoder.num_regions)
    assert a.frames_found.shape == (2, 4, 4)
    assert (a.query_score[:, :-1] >= a.query_score[:, 1:]).all()  # strongest first
    explanation = model.explain(out)
    assert len(explanation) == 4
    assert explanation[0].unit in {e.unit for e in micro_corpus.entities}
    assert all(0 <= f < 4 for e in explanation for f in e.frames)


def test_argmax_assignment_in_eval_matches_similarity():
    torch.manual_seed(0)
    regions = torch.nn.functional.normalize(torch.randn(1, 2, 5, 8), dim=-1)
    entities = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    aligner = EntityAligner(num_queries=2).eval()
    a = aligner(regions, torch.ones(1, 2, 5), entities)
    assert torch.equal(a.region_entity, (regions @ entities.T).argmax(-1))


def test_gradients_reach_similarity_through_straight_through():
    torch.manual_seed(0)
    regions = torch.nn.functional.normalize(torch.randn(2, 3, 5, 8), dim=-1).requires_grad_(True)
    entities = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1)
    aligner = EntityAligner(num_queries=3).train()
    a = aligner(regions, torch.ones(2, 3, 5), entities)
    assert a.region_entity.shape == (2, 3, 5)
    a.query_score.sum().backward()
    assert regions.grad is not None and regions.grad.abs().sum() > 0
    # the hard one-hot alone has no gradient: the straight-through estimator is what carries it
    hard = torch.nn.functional.one_hot((regions @ entities.T).argmax(-1), 10).float()
    assert not hard.requires_grad


def test_gradients_reach_adapter_when_training(micro_backbone, micro_corpus):
    model = make_model(micro_backbone, micro_corpus).train()
    loss = model.loss(model(random_clip()), torch.tensor([0, 1]))
    loss.backward()
    assert model.adapter.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())  # backbone frozen by default


def test_unfreeze_last_blocks(micro_backbone, micro_corpus):
    model = make_model(micro_backbone, micro_corpus, unfreeze_last_blocks=1).train()
    model(random_clip()).logits.sum().backward()
    blocks = model.backbone.clip.visual.transformer.resblocks
    assert blocks[-1].mlp.c_fc.weight.grad is not None
    assert blocks[0].mlp.c_fc.weight.grad is None
    micro_backbone.freeze()  # the session fixture is shared
    for p in micro_backbone.parameters():
        p.grad = None


def test_untrained_adapters_equal_meanpool(micro_backbone, micro_corpus):
    pixels = random_clip()
    with torch.no_grad():
        ref = make_model(micro_backbone, micro_corpus, "meanpool").eval()(pixels).logits
        for adapter in ("alt", "temporal"):
            out = make_model(micro_backbone, micro_corpus, adapter).eval()(pixels).logits
            torch.testing.assert_close(out, ref)


def test_label_swap_changes_only_class_matrix(micro_backbone, micro_corpus):
    model = make_model(micro_backbone, micro_corpus).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = random_clip()
    with torch.no_grad():
        video_before = model(pixels).video
        model.set_labels(["hexagon orbiting", "cross shrinking"])
        out = model(pixels)
    after = model.state_dict()
    changed = {k for k in before if before[k].shape != after[k].shape or not torch.equal(before[k], after[k])}
    assert changed == {"class_embeddings"}
    assert out.logits.shape == (2, 2)
    torch.testing.assert_close(out.video, video_before)


def test_pixels_and_cached_tokens_give_equal_logits(micro_backbone, micro_corpus):
    model = make_model(micro_backbone, micro_corpus).eval()
    pixels = random_clip()
    with torch.no_grad():
        direct = model(pixels).logits
        cached = model(tokens=model.encode_frames(pixels)).logits
    torch.testing.assert_close(direct, cached, atol=0, rtol=0)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="unknown adapter"):
        ALTConfig(adapter="lstm")
    with pytest.raises(ValueError, match="unknown config keys"):
        ALTConfig.from_dict({"adapterr": "alt"})
