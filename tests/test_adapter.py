"""ALT's adapter: it contains the temporal baseline, and each way the alignment reaches its queries changes what
they compute (docs/method.md, "Adapter"). Each test fails when its feature is switched off."""

import math

import pytest
import torch
import torch.nn.functional as F

from alt_core.adapter import ALTAdapter, TemporalAdapter
from alt_core.alignment import trajectory

B, NQ, T, R, D = 2, 4, 3, 5, 16


def adapter_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    own = torch.zeros(B, NQ, T, R, dtype=torch.bool)
    for q in range(NQ):  # query q's entity was taken by region q of every frame
        own[:, q, :, q] = True
    return {"query_emb": torch.randn(B, NQ, D, generator=g), "query_score": torch.rand(B, NQ, generator=g),
            "query_valid": torch.ones(B, NQ, dtype=torch.bool), "frame": torch.randn(B, T, D, generator=g),
            "regions": torch.randn(B, T, R, D, generator=g), "positions": torch.rand(B, T, R, 2, generator=g),
            "trajectory": torch.rand(B, NQ, T, 3, generator=g), "query_regions": own}


def make_adapter(**features) -> ALTAdapter:
    torch.manual_seed(0)
    return ALTAdapter(embed_dim=D, width=32, depth=2, heads=2, max_frames=4, **features).eval()


def pooled_queries(adapter: ALTAdapter, inputs: dict) -> torch.Tensor:
    """The queries after the decoder layers (what the pool reads): the query branch before its zero-initialised
    projection, so features show here at initialisation."""
    seen = []
    handle = adapter.layers[-1].register_forward_hook(lambda module, args, out: seen.append(out))
    with torch.no_grad():
        adapter(**inputs)
    handle.remove()
    return seen[-1]


def test_an_untrained_alt_adapter_is_the_temporal_baseline():
    alt, baseline = make_adapter(), TemporalAdapter(D, 32, 2, 2, 4).eval()
    torch.nn.init.normal_(alt.temporal.proj.weight)  # a trained-looking baseline inside ALT
    baseline.encoder.load_state_dict(alt.temporal.state_dict())
    inputs = adapter_inputs()
    with torch.no_grad():
        torch.testing.assert_close(alt(**inputs)[0], baseline(inputs["frame"]))
        torch.nn.init.normal_(alt.proj.weight)  # trained queries add to the baseline
        assert not torch.allclose(alt(**inputs)[0], baseline(inputs["frame"]))


def test_alignment_bias_puts_a_querys_attention_on_its_own_regions_at_initialisation():
    inputs = adapter_inputs()
    own = F.pad(inputs["query_regions"].flatten(2), (T, 0))  # (B, Nq, T + T*R): the frame keys come first

    def mass_on_own_regions(adapter: ALTAdapter) -> torch.Tensor:
        captured = {}
        layer = adapter.layers[0]
        handle = layer.cross_attn.register_forward_pre_hook(lambda module, args: captured.update(args=args))
        with torch.no_grad():
            adapter(**inputs)
        handle.remove()
        x, context, bias = captured["args"]
        attn, h = layer.cross_attn, layer.cross_attn.heads
        q = attn.q(x).view(B, NQ, h, -1).transpose(1, 2)  # (B, H, Nq, d/H)
        k = attn.kv(context)[..., :32].view(B, context.shape[1], h, -1).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if bias is not None:
            logits = logits + bias
        weights = logits.softmax(-1)  # (B, H, Nq, Nk)
        return (weights * own[:, None]).sum(-1)  # (B, H, Nq)

    with_bias = mass_on_own_regions(make_adapter(alignment_bias=True))
    assert (with_bias > 0.5).all()  # more than on every other key together
    without = mass_on_own_regions(make_adapter(alignment_bias=False))
    assert (without < 0.5).all()  # 3 of 18 keys: about their share


@pytest.mark.parametrize("enabled", [True, False])
def test_the_trajectory_of_a_querys_entity_is_part_of_the_query(enabled):
    adapter = make_adapter(query_trajectory=enabled)
    inputs = adapter_inputs()
    reversed_in_time = inputs | {"trajectory": inputs["trajectory"].flip(2)}  # moving left <-> moving right
    changed = not torch.allclose(pooled_queries(adapter, inputs), pooled_queries(adapter, reversed_in_time))
    assert changed == enabled


@pytest.mark.parametrize("enabled", [True, False])
def test_region_tokens_carry_their_positions(enabled):
    adapter = make_adapter(region_positions=enabled)
    inputs = adapter_inputs()
    mirrored = inputs | {"positions": 1 - inputs["positions"]}
    changed = not torch.allclose(pooled_queries(adapter, inputs), pooled_queries(adapter, mirrored))
    assert changed == enabled


def test_trajectory_gives_each_frames_share_and_centroid_of_the_regions_that_took_the_entity():
    found = torch.zeros(1, 1, 2, 3, dtype=torch.bool)
    found[0, 0, 0, [0, 2]] = True  # frame 0: regions 0 and 2; frame 1: none
    sizes = torch.tensor([[[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]]])
    positions = torch.tensor([[[[0.1, 0.2], [0.5, 0.5], [0.9, 0.6]], [[0.3, 0.3], [0.4, 0.4], [0.5, 0.5]]]])
    out = trajectory(found, sizes, positions)  # (1, 1, 2, 3)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([4 / 6, (0.1 + 3 * 0.9) / 4, (0.2 + 3 * 0.6) / 4]))
    torch.testing.assert_close(out[0, 0, 1], torch.zeros(3))
