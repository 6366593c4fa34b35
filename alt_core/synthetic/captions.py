"""Scene sampling, captions and the "does this caption describe that image" relation.

Used by alt-tiny pretraining (multi-positive contrastive loss) and its zero-shot probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alt_core.synthetic.scenes import BACKGROUNDS, COLORS, SHAPES, Scene, SceneObject, render_scene, sample_angle

SMALL_RADIUS, LARGE_RADIUS = 0.16, 0.22


def object_phrase(color: str, shape: str) -> str:
    return f"{color} {shape}"


OBJECT_PHRASES: tuple[str, ...] = tuple(object_phrase(c, s) for c in COLORS for s in SHAPES)
BACKGROUND_PHRASES: tuple[str, ...] = tuple(BACKGROUNDS.values())
ENTITY_PHRASES: tuple[str, ...] = OBJECT_PHRASES + BACKGROUND_PHRASES


def positions_of(obj: SceneObject) -> set[str]:
    """Position words that truly describe an object's centre."""
    words = set()
    if obj.x < 0.4:
        words.add("on the left")
    if obj.x > 0.6:
        words.add("on the right")
    if obj.y < 0.4:
        words.add("at the top")
    if obj.y > 0.6:
        words.add("at the bottom")
    if 0.35 <= obj.x <= 0.65 and 0.35 <= obj.y <= 0.65:
        words.add("in the center")
    return words


def size_of(obj: SceneObject) -> str | None:
    if obj.radius < SMALL_RADIUS:
        return "small"
    if obj.radius > LARGE_RADIUS:
        return "large"
    return None


@dataclass(frozen=True)
class ObjectClaim:
    """What a caption says about one object; None means "not mentioned"."""

    color: str | None
    shape: str | None
    position: str | None = None
    size: str | None = None

    def holds_for(self, obj: SceneObject) -> bool:
        return ((self.color is None or self.color == obj.color)
                and (self.shape is None or self.shape == obj.shape)
                and (self.position is None or self.position in positions_of(obj))
                and (self.size is None or self.size == size_of(obj)))

    def text(self) -> str:
        words = [w for w in (self.size, self.color, self.shape or "shape") if w]
        phrase = ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
        return f"{phrase} {self.position}" if self.position else phrase


@dataclass(frozen=True)
class Caption:
    objects: tuple[ObjectClaim, ...]
    background: str | None

    def describes(self, scene: Scene) -> bool:
        """True when every claim holds, each object claim matched by a distinct object."""
        if self.background is not None and self.background != scene.background:
            return False
        if len(self.objects) == 2:
            a, b = self.objects
            objs = scene.objects
            return any(a.holds_for(objs[i]) and b.holds_for(objs[j])
                       for i in range(len(objs)) for j in range(len(objs)) if i != j)
        return all(any(c.holds_for(o) for o in scene.objects) for c in self.objects)

    def text(self) -> str:
        parts = " and ".join(c.text() for c in self.objects)
        bg = BACKGROUNDS[self.background] if self.background else None
        if parts and bg:
            return f"{parts} on {bg}"
        return parts or bg or ""


def sample_scene(rng: np.random.Generator, num_objects: int) -> Scene:
    """A random background with `num_objects` distinct, mostly non-overlapping shapes."""
    scene = Scene(background=str(rng.choice(list(BACKGROUNDS))), texture_seed=int(rng.integers(1 << 31)))
    taken: set[tuple[str, str]] = set()
    while len(scene.objects) < num_objects:
        color, shape = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))
        radius = float(rng.uniform(0.12, 0.27))
        x, y = rng.uniform(radius, 1 - radius, size=2)
        clear = all(np.hypot(x - o.x, y - o.y) > 0.9 * (radius + o.radius) for o in scene.objects)
        if (color, shape) in taken or not clear:
            continue
        taken.add((color, shape))
        scene.objects.append(SceneObject(color, shape, float(x), float(y), radius, sample_angle(shape, rng)))
    return scene


def sample_caption(rng: np.random.Generator, scene: Scene) -> Caption:
    """A true caption of varying detail: background only, one or two objects, with attributes."""
    if not scene.objects or rng.random() < 0.1:
        return Caption((), scene.background)
    count = 2 if len(scene.objects) >= 2 and rng.random() < 0.5 else 1
    chosen = rng.choice(len(scene.objects), size=count, replace=False)
    claims = []
    for i in chosen:
        obj = scene.objects[int(i)]
        mode = rng.random()
        color = obj.color if mode > 0.1 else None
        shape = obj.shape if mode < 0.1 or mode > 0.2 else None
        position = str(rng.choice(sorted(positions_of(obj)))) if positions_of(obj) and rng.random() < 0.5 else None
        size = size_of(obj) if rng.random() < 0.4 else None
        claims.append(ObjectClaim(color, shape, position, size))
    background = scene.background if rng.random() < 0.5 else None
    return Caption(tuple(claims), background)


PATCH_IGNORE = -100


def patch_targets(masks: np.ndarray, scene: Scene, grid: int, min_cover: float = 0.5) -> np.ndarray:
    """Entity index per patch (grid*grid,): the object covering at least `min_cover` of it,
    the background where no object touches it, PATCH_IGNORE otherwise."""
    size = masks.shape[-1]
    cell = size // grid
    target = np.full(grid * grid, len(OBJECT_PHRASES) + list(BACKGROUNDS).index(scene.background))
    if len(masks):
        cover = masks.reshape(len(masks), grid, cell, grid, cell).mean(axis=(2, 4)).reshape(len(masks), -1)
        target[cover.sum(0) > 0] = PATCH_IGNORE
        for i, obj in enumerate(scene.objects):
            target[cover[i] >= min_cover] = OBJECT_PHRASES.index(object_phrase(obj.color, obj.shape))
    return target


@dataclass
class SceneBatch:
    images: np.ndarray  # (B, H, W, 3) uint8
    scenes: list[Scene]
    patch_targets: np.ndarray  # (B, grid*grid) entity index or PATCH_IGNORE


def render_batch(rng: np.random.Generator, batch: int, size: int, grid: int,
                 object_counts: tuple[float, float, float] = (0.1, 0.45, 0.45)) -> SceneBatch:
    counts = rng.choice(3, size=batch, p=object_counts)
    scenes = [sample_scene(rng, int(n)) for n in counts]
    images, targets = [], []
    for scene in scenes:
        img, masks = render_scene(scene, size)
        images.append(img)
        targets.append(patch_targets(masks, scene, grid))
    return SceneBatch(np.stack(images), scenes, np.stack(targets))
