import pytest
import torch
import torch.nn.functional as F

from alt_core.backbone import load_backbone
from alt_core.tome import BipartiteMerge, RegionEncoder


@pytest.mark.parametrize("name", ["alt-micro", "alt-tiny", "ViT-B-16"])
def test_r0_equals_open_clip_forward(name):
    torch.manual_seed(0)
    backbone = load_backbone(name, random_init=name.startswith("alt-"))
    visual = backbone.clip.visual
    images = torch.randn(2, 3, backbone.image_size, backbone.image_size)
    with torch.no_grad():
        visual.output_tokens = True
        pooled, tokens = visual(images)
        visual.output_tokens = False
        out = RegionEncoder(visual, r=0)(images)
    torch.testing.assert_close(out.frame, F.normalize(pooled, dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.regions, F.normalize(tokens @ visual.proj, dim=-1), atol=1e-5, rtol=1e-5)
    assert torch.equal(out.sizes, torch.ones_like(out.sizes))


@pytest.mark.parametrize("r", [0, 1, 3, 5])
def test_region_count_is_n_minus_l_times_r(micro_backbone, r):
    encoder = RegionEncoder(micro_backbone.clip.visual, r=r)
    n, layers = encoder.num_patches, len(encoder.blocks)
    with torch.no_grad():
        out = encoder(torch.randn(3, 3, 32, 32))
    assert out.regions.shape[1] == n - layers * r == encoder.num_regions
    # every patch is covered by exactly one region
    torch.testing.assert_close(out.sizes.sum(-1), torch.full((3,), float(n)))


def test_negative_r_is_rejected(micro_backbone):
    with pytest.raises(ValueError, match="r must be >= 0"):
        RegionEncoder(micro_backbone.clip.visual, r=-1)


def test_merge_preserves_size_weighted_mean_and_cls():
    torch.manual_seed(0)
    x = torch.randn(2, 11, 6)
    size = torch.rand(2, 11, 1) + 0.5
    keys = torch.randn(2, 11, 4)
    merged, merged_size, _ = BipartiteMerge(r=3)(x, size, keys)
    assert merged.shape == (2, 8, 6) and merged_size.shape == (2, 8, 1)
    torch.testing.assert_close((merged * merged_size).sum(1), (x * size).sum(1))
    torch.testing.assert_close(merged_size.sum(1), size.sum(1))
    torch.testing.assert_close(merged[:, 0], x[:, 0])  # CLS untouched
    torch.testing.assert_close(merged_size[:, 0], size[:, 0])


def test_merge_joins_the_most_similar_pair():
    x = torch.arange(5, dtype=torch.float32).view(1, 5, 1).repeat(1, 1, 2)
    keys = torch.tensor([[[1.0, 0], [0, 1], [0.1, 1], [1, 0.05], [-1, 0]]])  # token 2 ~ token 1 (A/B pair)
    merged, size, moved_to = BipartiteMerge(r=1)(x, torch.ones(1, 5, 1), keys)
    # A = tokens 0, 2, 4; B = tokens 1, 3. Token 2 merges into token 1 -> value (1 + 2) / 2
    assert sorted(size.flatten().tolist()) == [1.0, 1.0, 1.0, 2.0]
    assert 1.5 in merged[0, :, 0].tolist()
    assert moved_to[0, 2] == moved_to[0, 1] and len(set(moved_to[0].tolist())) == 4  # tokens 1, 2 share a slot
    assert merged[0, moved_to[0, 2], 0] == 1.5


def test_proportional_attention_uses_sizes(micro_backbone):
    # A token repeated k times (unmerged) must equal one token of size k under proportional attention.
    block = RegionEncoder(micro_backbone.clip.visual, r=1).blocks[0]
    torch.manual_seed(0)
    x = torch.randn(1, 4, 48)
    dup = torch.cat([x, x[:, 3:4]], dim=1)
    block.merge.r = 0
    with torch.no_grad():
        ref, _, _ = block(dup, torch.ones(1, 5, 1))
        block.merge.r = 1  # enables the log(size) bias; merge then joins the two identical tokens
        out, size, _ = block(x, torch.tensor([[[1.0], [1.0], [1.0], [2.0]]]))
    torch.testing.assert_close(out[0, 0], ref[0, 0], atol=1e-5, rtol=1e-5)


def test_merge_never_takes_cls_when_set_a_runs_short():
    torch.manual_seed(0)
    x, keys = torch.randn(2, 9, 6), torch.randn(2, 9, 4)  # CLS + 8 tokens: A holds CLS + 4, B holds 4
    merged, size, _ = BipartiteMerge(r=6)(x, torch.ones(2, 9, 1), keys)
    assert merged.shape[1] == 9 - 4  # clamped to the 4 non-CLS tokens of A
    torch.testing.assert_close(merged[:, 0], x[:, 0])
    assert torch.equal(size[:, 0], torch.ones(2, 1))


@pytest.mark.parametrize(("name", "r"), [("alt-micro", 6), ("alt-tiny", 22), ("alt-tiny", 40), ("ViT-B-16", 16)])
def test_large_r_keeps_cls_and_reports_the_real_region_count(name, r):
    torch.manual_seed(0)
    backbone = load_backbone(name, random_init=name.startswith("alt-"))
    encoder = RegionEncoder(backbone.clip.visual, r=r)
    with torch.no_grad():
        out = encoder(torch.randn(2, 3, backbone.image_size, backbone.image_size))
    assert out.regions.shape[1] == encoder.num_regions == encoder.num_patches - sum(encoder.schedule)
    assert all(step <= r for step in encoder.schedule) and sum(encoder.schedule) < encoder.num_patches
    # total size is conserved, so regions covering exactly N patches means CLS (size 1) was never merged
    torch.testing.assert_close(out.sizes.sum(-1), torch.full((2,), float(encoder.num_patches)))
    assert_patch_map_matches_sizes(out)


def assert_patch_map_matches_sizes(out):
    """The tracked patch -> region map holds each region's patches: their count is the region's size."""
    regions = out.regions.shape[1]
    assert out.patch_region.min() >= 0 and out.patch_region.max() < regions
    counts = torch.stack([torch.bincount(row, minlength=regions) for row in out.patch_region])
    torch.testing.assert_close(counts.float(), out.sizes)


@pytest.mark.parametrize("r", [0, 2, 5])
def test_patch_map_follows_every_merge(micro_backbone, r):
    torch.manual_seed(r)
    encoder = RegionEncoder(micro_backbone.clip.visual, r=r)
    with torch.no_grad():
        out = encoder(torch.randn(3, 3, 32, 32))
    assert out.patch_region.shape == (3, encoder.num_patches)
    assert_patch_map_matches_sizes(out)
    if r == 0:
        assert torch.equal(out.patch_region[0], torch.arange(encoder.num_patches))
