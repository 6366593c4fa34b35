"""The explanation picture: what a prediction was built from, drawn on the clip.

The sampled frames of one view sit in a strip. Every patch is tinted with the colour of the entity its ToMe
region took (`Alignment.patch_entity`), for the entities the adapter read as queries; patches whose region
took any other entity stay as they were. The scene is the exception: an entity that took most of the strip's
patches (the background, as a rule) keeps its pixels and is outlined in its colour, so that the objects and the
frames stay readable. Below the strip: a legend of those entities with their alignment scores and the frames
they were found in (the scene's swatch hollow, as its patches are), and the top-k labels as bars.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from alt_core.alignment import Alignment, EntityExplanation

# Tableau's 20 categorical colours: distinct on screen and in print; entities past 20 reuse them
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
           (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
           (219, 219, 141), (158, 218, 229))
TINT = 0.5  # weight of the entity colour in a tinted patch
SCENE_SHARE = 0.5  # an entity that took more than this share of the strip's patches is the scene: outlined
FRAME_PIXELS = 128  # frames are enlarged (nearest neighbour, whole factors) to at least this width
MARGIN, ROW = 10, 22
BACKGROUND, INK = (255, 255, 255), (20, 20, 20)


@dataclass
class ExplanationPicture:
    image: Image.Image
    scale: int  # picture pixels per frame pixel
    origins: list[tuple[int, int]]  # (x, y) of each frame's top-left corner in the picture
    colours: dict[int, tuple[int, int, int]]  # entity index -> tint
    scene: frozenset[int]  # entities drawn outlined, not tinted

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")
        return buffer.getvalue()


def tinted_frame(frame: np.ndarray, patch_entity: np.ndarray, patch_size: int,
                 colours: dict[int, tuple[int, int, int]], outlined: frozenset[int] = frozenset()) -> np.ndarray:
    """frame (H, W, 3) uint8, patch_entity (H/ps, W/ps) -> the frame with each coloured entity's patches tinted,
    except the `outlined` entities': their patches keep their pixels, and their border is drawn in their colour."""
    def pixels(mask: np.ndarray) -> np.ndarray:  # a patch mask at pixel resolution
        return mask.repeat(patch_size, 0).repeat(patch_size, 1)

    colour_of_patch = np.zeros((*patch_entity.shape, 3))
    tinted = np.zeros(patch_entity.shape, dtype=bool)
    for entity, colour in colours.items():
        if entity not in outlined:
            mask = patch_entity == entity
            colour_of_patch[mask], tinted[mask] = colour, True
    weight = TINT * pixels(tinted)[..., None]  # (H, W, 1)
    out = np.rint((1 - weight) * frame + weight * pixels(colour_of_patch)).astype(np.uint8)
    for entity in outlined:
        inside = pixels(patch_entity == entity)
        padded = np.pad(inside, 1, mode="edge")  # the frame's own edge is no border
        border = inside & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
        out[border] = colours[entity]
    return out


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def explanation_picture(frames: torch.Tensor, alignment: Alignment, item: int, entities: list[EntityExplanation],
                        labels: list[str], scores: list[float]) -> ExplanationPicture:
    """frames (T, 3, H, W) uint8: the frames the model saw for video `item` of the alignment's batch;
    `entities`: its explanation (`alt_core.alignment.explain`), in its order."""
    entity_index = [e.entity for e in entities]
    if sorted(entity_index) != sorted(alignment.query_index[item][alignment.query_valid[item]].tolist()):
        raise ValueError("`entities` is not the explanation of this alignment item")
    patch_entity = alignment.patch_entity(item)
    if patch_entity is None:
        raise ValueError("the explanation picture needs an alignment computed from pixels (cached tokens keep no "
                         "patch map)")
    t, _, h, w = frames.shape
    grid = int(round(patch_entity.shape[1] ** 0.5))
    patch_size = h // grid
    colours = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(entity_index)}
    cells = patch_entity.view(t, grid, grid).cpu().numpy()
    scene = frozenset(k for k in entity_index if (cells == k).mean() > SCENE_SHARE)
    scale = max(1, -(-FRAME_PIXELS // w))
    font, small = _font(14), _font(12)
    rows = max(len(entities), len(labels))
    width = max(MARGIN + t * (w * scale + MARGIN), 2 * 360 + 3 * MARGIN)
    height = MARGIN + h * scale + 2 * MARGIN + ROW + rows * ROW + MARGIN
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    origins = []
    for i in range(t):
        pixels = tinted_frame(frames[i].permute(1, 2, 0).cpu().numpy(), cells[i], patch_size, colours, scene)
        origin = (MARGIN + i * (w * scale + MARGIN), MARGIN)
        image.paste(Image.fromarray(pixels).resize((w * scale, h * scale), Image.NEAREST), origin)
        draw.text((origin[0], origin[1] + h * scale + 2), f"frame {i}", fill=INK, font=small)
        origins.append(origin)
    top = MARGIN + h * scale + 2 * MARGIN
    draw.text((MARGIN, top), "entities (logit contribution, alignment score, frames)", fill=INK, font=font)
    column = MARGIN + 360 + MARGIN
    draw.text((column, top), "top labels", fill=INK, font=font)
    for row, entity in enumerate(entities):
        y = top + ROW * (row + 1)
        k = entity_index[row]
        swatch = {"outline": colours[k], "width": 3} if k in scene else {"fill": colours[k]}
        draw.rectangle((MARGIN, y + 2, MARGIN + 14, y + 16), **swatch)
        text = f"{entity.unit}  {entity.contribution:+.2f}  {entity.score:+.3f}  {entity.frames}"
        text += "  (scene: outlined)" if k in scene else ""
        draw.text((MARGIN + 20, y), text, fill=INK, font=small)
    for row, (label, score) in enumerate(zip(labels, scores, strict=True)):
        y = top + ROW * (row + 1)
        draw.rectangle((column, y + 2, column + int(160 * score), y + 16), fill=(70, 130, 180))
        draw.text((column + 166, y), f"{score:.3f}  {label}", fill=INK, font=small)
    return ExplanationPicture(image, scale, origins, colours, scene)
