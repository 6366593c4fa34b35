"""The explanation picture: every patch is tinted with the entity its ToMe region took in the same forward pass."""

import numpy as np
import torch

from alt_core.picture import PALETTE, TINT, explanation_picture, tinted_frame
from alt_core.synthetic.synth import render_clip, sample_clip_spec
from alt_core.video import resize_crops
from tests.helpers import LABELS, make_model


def clip_frames(size: int, frames: int) -> torch.Tensor:
    """A rendered SynthActions clip at the model's scale: (T, 3, S, S) uint8."""
    video = render_clip(sample_clip_spec("star bouncing", seed=5, frames=frames, size=64))  # (T, H, W, 3)
    return resize_crops(video, size)[0]


def test_tinted_cells_match_the_region_to_entity_assignment(micro_backbone, micro_corpus):
    model = make_model(micro_backbone, micro_corpus).eval()
    frames = clip_frames(micro_backbone.image_size, model.config.num_frames)
    with torch.no_grad():
        out = model(pixels=frames[None])
    entities = model.explain(out)
    picture = explanation_picture(frames, out.alignment, 0, entities, LABELS[:2], [0.6, 0.3])
    image = np.asarray(picture.image)
    alignment = out.alignment
    queries = alignment.query_index[0][alignment.query_valid[0]].tolist()  # legend order
    colour_of = {entity: np.array(PALETTE[i]) for i, entity in enumerate(queries)}
    t, _, size, _ = frames.shape
    grid = 4  # alt-micro: 32 px frames, 8 px patches
    patch = size // grid
    seen = set()
    for f in range(t):
        x0, y0 = picture.origins[f]
        for p in range(grid * grid):
            row, col = divmod(p, grid)
            region = int(alignment.patch_region[0, f, p])
            entity = int(alignment.region_entity[0, f, region])
            y, x = row * patch + patch // 2, col * patch + patch // 2  # the patch's centre in the frame
            original = frames[f, :, y, x].numpy().astype(float)
            drawn = image[y0 + y * picture.scale, x0 + x * picture.scale].astype(float)
            if entity in colour_of and entity not in picture.scene:  # the scene keeps its pixels inside
                expected = (1 - TINT) * original + TINT * colour_of[entity]
                seen.add(entity)
            else:
                expected = original
            assert np.abs(drawn - expected).max() <= 1, (f, p, entity, drawn, expected)
    assert len(seen) >= 2, "the clip should show at least two entities for this test to mean anything"
    assert picture.png().startswith(b"\x89PNG")


def test_the_scene_keeps_its_pixels_and_is_outlined_while_objects_are_tinted():
    """A background that took most patches would tint the whole frame: it is outlined instead, so the object
    and the frame stay readable."""
    frame = np.full((32, 32, 3), 100, dtype=np.uint8)
    patch_entity = np.full((4, 4), 7)  # 8 px patches: entity 7 (the scene) everywhere ...
    patch_entity[1, 2] = 3  # ... but one patch, an object
    red, blue = (255, 0, 0), (0, 0, 255)
    drawn = tinted_frame(frame, patch_entity, 8, {7: red, 3: blue}, outlined=frozenset({7}))
    assert (drawn[8:16, 16:24] == np.rint((1 - TINT) * 100 + TINT * np.array(blue))).all()  # the object: tinted
    assert (drawn[8:16, 15] == red).all() and (drawn[16, 16:24] == red).all()  # the scene's border around it
    assert (drawn[0:7, 0:7] == 100).all() and (drawn[:, 0] == 100).all()  # inside and at the frame's edge: as it was
    assert (drawn == red).all(-1).sum() == 4 * 8  # nothing else is drawn on
