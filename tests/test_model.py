import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alt_core.adapter import ALTAdapter
from alt_core.alignment import EntityAligner, soft_gradient_shares
from alt_core.backbone import load_backbone
from alt_core.config import ALTConfig
from alt_core.corpus import build_corpus
from alt_core.errors import ConfigError
from alt_core.model import ALTModel
from alt_core.synthetic.synth import clip_seed, render_clip, sample_clip_spec, split_classes, synth_entities
from alt_core.tome import FrameTokens
from alt_core.training import build_optimizer
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


def test_query_contributions_decompose_the_logit_and_order_the_explanation(micro_backbone, micro_corpus):
    model = make_model(micro_backbone, micro_corpus).eval()
    torch.manual_seed(1)
    torch.nn.init.normal_(model.adapter.proj.weight)  # trained-looking queries: their shares differ
    with torch.no_grad():
        out = model(random_clip())
        classes = model.class_embeddings  # (C, D)
        rest = out.video - out.query_shares.sum(1)  # (B, D): z without its queries' shares
        for c in range(len(LABELS)):
            target = classes[c].expand(2, -1)
            by_query = model.query_contributions(out, target).sum(1)  # (B,)
            by_rest = model.logit_scale.exp() * (rest @ classes[c]) / out.video.norm(dim=-1)
            torch.testing.assert_close(by_query + by_rest, out.logits[:, c])
        for item in range(2):
            explanation = model.explain(out, item)
            contributions = [e.contribution for e in explanation]
            assert contributions == sorted(contributions, reverse=True) and len(set(contributions)) > 1
            top = model.query_contributions(out, classes[out.logits.argmax(-1)]).max(-1).values[item]
            assert contributions[0] == pytest.approx(float(top))


def test_argmax_assignment_in_eval_matches_similarity():
    torch.manual_seed(0)
    regions = torch.nn.functional.normalize(torch.randn(1, 2, 5, 8), dim=-1)
    entities = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    aligner = EntityAligner(num_queries=2).eval()
    a = aligner(regions, torch.ones(1, 2, 5), torch.rand(1, 2, 5, 2), entities)
    assert torch.equal(a.region_entity, (regions @ entities.T).argmax(-1))


def test_straight_through_sends_gradient_to_entities_no_region_took():
    # Forward, a region counts only the entity it took; backward, the straight-through estimator passes the
    # softmax's gradient to every entity's similarity. A detached argmax one-hot would leave the others at zero.
    torch.manual_seed(0)
    regions = F.normalize(torch.randn(1, 2, 3, 8), dim=-1).requires_grad_(True)  # a trainable tower's tokens
    entities = F.normalize(torch.randn(40, 8), dim=-1).requires_grad_(True)
    aligner = EntityAligner(num_queries=3, similarity_temperature=0.5).train()
    a = aligner(regions, torch.ones(1, 2, 3), torch.rand(1, 2, 3, 2), entities)
    a.query_score.sum().backward()
    untaken = sorted(set(range(40)) - set(a.region_entity.flatten().tolist()))
    assert untaken, "every entity was taken; pick another seed"
    assert entities.grad[untaken].abs().sum() > 0


def test_frozen_tokens_take_the_argmax_in_training_too():
    # Nothing upstream of a frozen tower's similarity trains, so training-time sampling would only be noise.
    regions = F.normalize(torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    entities = F.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    aligner = EntityAligner(num_queries=3).train()
    runs = []
    for seed in range(3):
        torch.manual_seed(seed)
        runs.append(aligner(regions, torch.ones(2, 3, 5), torch.rand(2, 3, 5, 2), entities).region_entity)
    assert all(torch.equal(r, (regions @ entities.T).argmax(-1)) for r in runs)


def test_learned_queries_ablation_reads_the_same_tokens_without_alignment(micro_backbone, micro_corpus):
    model = make_model(micro_backbone, micro_corpus, queries="learned").train()
    assert model.aligner is None and model.learned_queries.shape == (4, 32)
    out = model(random_clip())
    assert out.alignment is None and model.explain(out) == []
    model.loss(out, torch.tensor([0, 1])).backward()
    assert model.adapter.proj.weight.grad.abs().sum() > 0
    model.adapter.proj.weight.data.normal_()  # a trained projection: the queries now matter
    model.zero_grad()
    model.loss(model(random_clip()), torch.tensor([0, 1])).backward()
    assert model.learned_queries.grad.abs().sum() > 0
    assert "learned_queries" in model.checkpoint_state()


def test_only_entities_some_region_took_become_queries(micro_backbone, micro_corpus):
    model = make_model(micro_backbone, micro_corpus).eval()  # 4 queries
    entities = model.entity_embeddings
    taken = [2, 5]
    regions = entities[[2, 5, 2]][None, None].expand(2, 4, 3, -1).clone()  # (B, T, R, D): regions are entities 2, 5
    frame = F.normalize(torch.randn(2, 4, entities.shape[1]), dim=-1)
    out = model(tokens=FrameTokens(frame, regions, torch.ones(2, 4, 3), torch.rand(2, 4, 3, 2)))
    a = out.alignment
    assert a.query_valid.tolist() == [[True, True, False, False]] * 2
    assert set(a.query_index[:, :2].flatten().tolist()) == set(taken)
    explanation = model.explain(out)
    assert sorted(e.unit for e in explanation) == sorted(model.entities[k].unit for k in taken)
    assert all(e.frames == [0, 1, 2, 3] for e in explanation)


def test_masked_query_slots_do_not_change_the_video_embedding():
    torch.manual_seed(0)
    adapter = ALTAdapter(embed_dim=16, width=32, depth=2, heads=2, max_frames=4)
    torch.nn.init.normal_(adapter.proj.weight)  # a trained-looking adapter, not the zero-init identity
    entity_emb, score = torch.randn(2, 4, 16), torch.rand(2, 4)
    valid = torch.tensor([[True, True, False, False], [True, False, False, False]])
    frame, regions, positions = torch.randn(2, 3, 16), torch.randn(2, 3, 5, 16), torch.rand(2, 3, 5, 2)
    trajectory, own = torch.rand(2, 4, 3, 3), torch.rand(2, 4, 3, 5) > 0.5
    with torch.no_grad():
        ref, ref_shares = adapter(entity_emb, score, valid, frame, regions, positions, trajectory, own)
        other, other_trajectory, other_own = entity_emb.clone(), trajectory.clone(), own.clone()
        other[~valid] = torch.randn(int((~valid).sum()), 16)
        other_trajectory[~valid] = torch.rand(int((~valid).sum()), 3, 3)
        other_own[~valid] = ~own[~valid]
        out, shares = adapter(other, score, valid, frame, regions, positions, other_trajectory, other_own)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(shares, ref_shares)
    assert (shares[~valid] == 0).all() and (shares[valid] != 0).any(-1).all()


def test_alignment_is_computed_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    regions = F.normalize(torch.randn(2, 8, 48, 32), dim=-1)
    entities = F.normalize(torch.randn(300, 32), dim=-1)
    aligner = EntityAligner(num_queries=8).eval()
    positions = torch.rand(2, 8, 48, 2)
    ref = aligner(regions, torch.ones(2, 8, 48), positions, entities)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = aligner(regions, torch.ones(2, 8, 48), positions, entities)
    assert torch.equal(mixed.region_entity, ref.region_entity)
    assert torch.equal(mixed.query_index, ref.query_index)


def test_weight_decay_skips_scales_norms_biases_and_position_embeddings(micro_backbone, micro_corpus):
    model = make_model(micro_backbone, micro_corpus, unfreeze_last_blocks=1)
    try:
        optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
        params = dict(model.named_parameters())
        names = {id(p): n for n, p in params.items()}
        grouped = {names[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
        assert set(grouped) == {n for n, p in params.items() if p.requires_grad}
        decayed = {n for n, wd in grouped.items() if wd > 0}
        assert decayed and all(params[n].ndim >= 2 for n in decayed)
        assert {"logit_scale", "adapter.temporal.temporal_pos", "adapter.region_time", "adapter.proj.bias",
                "adapter.pool.norm.weight"}.isdisjoint(decayed)
        assert "adapter.proj.weight" in decayed and "backbone.clip.visual.proj" in decayed
    finally:
        micro_backbone.freeze()  # the session fixture is shared


@pytest.fixture(scope="module")
def conv_stem_model():
    """alt-tiny's architecture (conv stem with BatchNorm), random init: BatchNorm statistics matter here."""
    torch.manual_seed(0)
    backbone = load_backbone("alt-tiny", random_init=True)
    corpus = build_corpus(backbone, LABELS, ["labels"])
    config = ALTConfig(backbone="alt-tiny", num_queries=4, depth=1, width=32, heads=2, tome_r=4, num_frames=4)
    return ALTModel(config, backbone, corpus, LABELS)


def test_frozen_backbone_stays_in_eval_mode_while_training(conv_stem_model):
    model = conv_stem_model
    pixels = random_clip(size=64)
    with torch.no_grad():
        cached = model.eval().encode_frames(pixels)  # as the decode stage caches tokens
    model.train()
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and model.adapter.training
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    torch.manual_seed(1)
    from_pixels = model(pixels)
    torch.manual_seed(1)  # same Gumbel noise for both paths
    from_tokens = model(tokens=cached)
    torch.testing.assert_close(from_pixels.logits, from_tokens.logits)
    optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.05)
    model.loss(from_pixels, torch.tensor([0, 1])).backward()
    optimizer.step()
    for m, (mean, var) in zip(norms, stats, strict=True):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)


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
        for adapter, queries in (("alt", "entities"), ("alt", "learned"), ("temporal", "entities")):
            out = make_model(micro_backbone, micro_corpus, adapter, queries=queries).eval()(pixels).logits
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
    with pytest.raises(ConfigError, match="unknown adapter"):
        ALTConfig(adapter="lstm")
    with pytest.raises(ConfigError, match="unknown queries"):
        ALTConfig(queries="random")
    with pytest.raises(ConfigError, match="unknown ALTConfig keys"):
        ALTConfig.from_dict({"adapterr": "alt"})


def test_the_straight_through_estimator_passes_gradient_at_the_default_temperatures(tmp_path):
    # With alt-tiny's trained features, similarity / 0.01 at tau 1 saturates: almost every region's soft
    # assignment is one-hot and passes no gradient. The default temperatures keep it alive on most regions
    # (docs/method.md, "Alignment").
    torch.manual_seed(0)
    backbone = load_backbone("alt-tiny")
    labels = split_classes()[0][::9]  # 8 seen classes
    entities = tmp_path / "entities.jsonl"
    entities.write_text("".join(json.dumps(e) + "\n" for e in synth_entities(labels)))
    corpus = build_corpus(backbone, labels, ["labels", str(entities)])
    clips = [render_clip(sample_clip_spec(label, clip_seed(0, label, 0)))[::2] for label in labels]
    pixels = torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3)  # (8, 8, 3, 64, 64)
    targets = torch.arange(len(labels))
    model = ALTModel(ALTConfig(unfreeze_last_blocks=1, tome_r=8), backbone, corpus, labels).train()
    torch.nn.init.normal_(model.adapter.proj.weight, std=0.02)  # the queries matter, as after some training

    def median_share(similarity_temperature: float, gumbel_tau: float) -> float:
        model.aligner.similarity_temperature, model.aligner.gumbel_tau = similarity_temperature, gumbel_tau
        torch.manual_seed(0)
        shares = soft_gradient_shares(model.aligner, lambda: model.loss(model(pixels), targets))
        model.zero_grad()
        return float(shares.median())

    defaults = ALTConfig()
    assert median_share(defaults.similarity_temperature, defaults.gumbel_tau) > 0.1
    assert median_share(0.01, 1.0) < 1e-3
