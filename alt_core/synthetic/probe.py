"""Zero-shot probe of a backbone on freshly generated held-out scenes (`alt backbone eval`)."""

from __future__ import annotations

import numpy as np
import torch

from alt_core.backbone import Backbone
from alt_core.synthetic.captions import (
    ENTITY_PHRASES,
    OBJECT_PHRASES,
    PATCH_IGNORE,
    SceneBatch,
    object_phrase,
    render_batch,
)
from alt_core.synthetic.scenes import BACKGROUNDS
from alt_core.tome import RegionEncoder

PROBE_SEED = 10_007  # pretraining draws from other seeds; these scenes are never trained on


@torch.no_grad()
def encode_scenes(backbone: Backbone, batch: SceneBatch, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Global image embeddings (B, D) and patch-token embeddings (B, N, D), both L2-normalised."""
    encoder = RegionEncoder(backbone.clip.visual, r=0).eval()
    device = backbone.pixel_mean.device
    frames, patches = [], []
    for start in range(0, len(batch.images), chunk):
        pixels = torch.from_numpy(batch.images[start:start + chunk]).permute(0, 3, 1, 2).to(device)
        out = encoder(backbone.normalize_pixels(pixels))
        frames.append(out.frame)
        patches.append(out.regions)
    return torch.cat(frames), torch.cat(patches)


@torch.no_grad()
def probe_backbone(backbone: Backbone, num_images: int = 512, seed: int = PROBE_SEED) -> dict[str, float]:
    """Single-object, background, two-object and region->entity zero-shot accuracies."""
    rng = np.random.default_rng(seed)
    backbone.eval()
    grid = backbone.clip.visual.grid_size[0]
    text = backbone.embed_text(ENTITY_PHRASES)  # (K, D)
    objects, backgrounds = text[: len(OBJECT_PHRASES)], text[len(OBJECT_PHRASES):]

    single = render_batch(rng, num_images, backbone.image_size, grid, object_counts=(0, 1, 0))
    frame, patch = encode_scenes(backbone, single)
    truth = torch.tensor([OBJECT_PHRASES.index(object_phrase(s.objects[0].color, s.objects[0].shape))
                          for s in single.scenes])
    single_acc = ((frame @ objects.T).argmax(-1).cpu() == truth).float().mean().item()
    bg_truth = torch.tensor([list(BACKGROUNDS).index(s.background) for s in single.scenes])
    bg_acc = ((frame @ backgrounds.T).argmax(-1).cpu() == bg_truth).float().mean().item()

    targets = torch.from_numpy(single.patch_targets)  # (B, N)
    on_object = (targets != PATCH_IGNORE) & (targets < len(OBJECT_PHRASES))
    region_pred = (patch @ text.T).argmax(-1).cpu()
    region_acc = (region_pred[on_object] == targets[on_object]).float().mean().item()

    double = render_batch(rng, num_images, backbone.image_size, grid, object_counts=(0, 0, 1))
    frame2, _ = encode_scenes(backbone, double)
    top2 = (frame2 @ objects.T).topk(2, dim=-1).indices.cpu()
    hits = [
        {OBJECT_PHRASES.index(object_phrase(o.color, o.shape)) for o in s.objects} == set(top2[i].tolist())
        for i, s in enumerate(double.scenes)
    ]
    return {
        "single_object_top1": round(single_acc, 4),
        "background_top1": round(bg_acc, 4),
        "two_object_both_in_top2": round(float(np.mean(hits)), 4),
        "region_to_entity_top1": round(region_acc, 4),
        "num_images": num_images,
        "seed": seed,
    }

