"""Procedural scenes: textured backgrounds with coloured shapes.

One renderer serves both the alt-tiny pretraining images and the SynthActions videos, so the
entities the backbone learns are exactly the entities the videos show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 230, 40),
    "green": (40, 190, 60),
    "cyan": (40, 220, 230),
    "blue": (30, 60, 230),
    "purple": (150, 50, 200),
    "white": (250, 250, 250),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star", "ring", "hexagon")
BACKGROUNDS: dict[str, str] = {
    "grass": "a green grass field",
    "sand": "a sandy desert",
    "water": "blue water",
    "brick": "a brick wall",
    "night": "a dark night sky with stars",
    "wood": "a wooden floor",
    "road": "a grey road",
    "tiles": "a checkered tile floor",
}


@dataclass
class SceneObject:
    """One shape; position and radius are fractions of the image side."""

    color: str
    shape: str
    x: float
    y: float
    radius: float
    angle: float = 0.0


@dataclass
class Scene:
    background: str
    objects: list[SceneObject] = field(default_factory=list)
    texture_seed: int = 0


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(coords, coords, indexing="xy")


def render_background(name: str, size: int, seed: int) -> np.ndarray:
    """A textured background, (size, size, 3) uint8; the texture varies with `seed`."""
    rng = np.random.default_rng(seed)
    xs, ys = _grid(size)
    noise = rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    if name == "grass":
        blades = np.sin(xs * 90 + phase + noise * 0.8)
        img = np.stack([40 + 15 * blades, 120 + 35 * blades + 10 * noise, 35 + 10 * noise], -1)
    elif name == "sand":
        dunes = np.sin(ys * 18 + np.sin(xs * 7 + phase) * 2)
        img = np.stack([205 + 20 * dunes, 175 + 18 * dunes, 110 + 10 * noise], -1)
    elif name == "water":
        waves = np.sin(ys * 40 + np.sin(xs * 12 + phase) * 1.5)
        img = np.stack([20 + 10 * waves, 80 + 30 * waves, 170 + 35 * waves], -1)
    elif name == "brick":
        row = np.floor(ys * 8)
        offset = (row % 2) * 0.5 / 4
        mortar = (np.abs(((ys * 8) % 1) - 0.5) > 0.42) | (np.abs(((xs * 4 + offset * 4) % 1) - 0.5) > 0.45)
        brick = np.stack([150 + 12 * noise, 55 + 8 * noise, 40 + 6 * noise], -1)
        img = np.where(mortar[..., None], np.full_like(brick, 185), brick)
    elif name == "night":
        stars = rng.random((size, size)) > 0.985
        img = np.stack([10 + 4 * noise, 12 + 4 * noise, 40 + 8 * noise], -1)
        img[stars] = 230
    elif name == "wood":
        grain = np.sin(ys * 60 + np.sin(xs * 5 + phase) * 3 + noise * 0.3)
        img = np.stack([150 + 25 * grain, 95 + 18 * grain, 50 + 10 * grain], -1)
    elif name == "road":
        img = np.repeat((110 + 12 * noise)[..., None], 3, -1)
        img[np.abs(ys - 0.5) < 0.02] = (230, 220, 120)
    elif name == "tiles":
        check = ((np.floor(xs * 6) + np.floor(ys * 6)) % 2).astype(np.float32)
        img = np.repeat((70 + 120 * check + 5 * noise)[..., None], 3, -1)
    else:
        raise ValueError(f"unknown background {name!r}; choose one of {sorted(BACKGROUNDS)}")
    return np.clip(img, 0, 255).astype(np.uint8)


def shape_mask(obj: SceneObject, size: int) -> np.ndarray:
    """Boolean (size, size) mask of one shape, from its signed distance in the rotated frame."""
    xs, ys = _grid(size)
    cos, sin = np.cos(obj.angle), np.sin(obj.angle)
    u = ((xs - obj.x) * cos + (ys - obj.y) * sin) / obj.radius
    v = (-(xs - obj.x) * sin + (ys - obj.y) * cos) / obj.radius
    r = np.sqrt(u**2 + v**2)
    theta = np.arctan2(v, u)
    if obj.shape == "circle":
        return r <= 1.0
    if obj.shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if obj.shape == "triangle":
        return (v <= 0.6) & (v >= 1.9 * np.abs(u) - 1.0)
    if obj.shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if obj.shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    if obj.shape == "star":
        return r <= 0.45 + 0.55 * (0.5 + 0.5 * np.cos(5 * theta)) ** 3
    if obj.shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if obj.shape == "hexagon":
        hex_r = np.cos(np.pi / 6) / np.cos(((theta + np.pi / 6) % (np.pi / 3)) - np.pi / 6)
        return r <= 0.95 * hex_r
    raise ValueError(f"unknown shape {obj.shape!r}; choose one of {SHAPES}")


def sample_angle(shape: str, rng: np.random.Generator) -> float:
    """A resting orientation. A square turned 45 degrees is a diamond, so those two stay near upright
    (within 20 degrees); every other shape takes any angle."""
    if shape in ("square", "diamond"):
        return float(rng.uniform(-0.35, 0.35))
    return float(rng.uniform(0, 2 * np.pi))


OUTLINE_SCALE = 1.18  # outline radius relative to the shape
OUTLINE_RGB = (15, 15, 15)


def draw_object(img: np.ndarray, obj: SceneObject) -> tuple[np.ndarray, np.ndarray]:
    """Paint one shape with a dark outline onto img (H, W, 3) in place; returns (mask, outline mask)."""
    size = img.shape[0]
    mask = shape_mask(obj, size)
    outline = shape_mask(SceneObject(obj.color, obj.shape, obj.x, obj.y, obj.radius * OUTLINE_SCALE, obj.angle), size)
    img[outline & ~mask] = OUTLINE_RGB
    img[mask] = COLORS[obj.color]
    return mask, outline


def render_scene(scene: Scene, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw a scene; returns the image (H, W, 3) uint8 and visible object masks (N_obj, H, W) bool.

    Later objects occlude earlier ones; each shape gets a dark outline so it stays visible on
    any background.
    """
    img = render_background(scene.background, size, scene.texture_seed).copy()
    masks = np.zeros((len(scene.objects), size, size), dtype=bool)
    for i, obj in enumerate(scene.objects):
        mask, outline = draw_object(img, obj)
        masks[:i] &= ~outline
        masks[i] = mask
    return img, masks
