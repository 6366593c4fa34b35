"""SynthActions: procedural action videos of coloured shapes, written as H.264 mp4 plus manifests.

Classes are "{shape} {motion}" compositions drawn with the same renderer that pretrains the backbone
(alt_core.synthetic.scenes), so the entities are known and only the motion has to be learned. `split_classes`
holds out some compositions as novel classes (every shape and motion still seen in training) to
measure zero-shot transfer to unseen pairs. Everything derives from seeds: same seed, same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import math
import platform
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from alt_core.errors import ConfigError
from alt_core.synthetic.scenes import (
    BACKGROUNDS,
    COLORS,
    OUTLINE_RGB,
    OUTLINE_SCALE,
    SHAPES,
    SceneObject,
    draw_object,
    render_background,
    sample_angle,
    shape_mask,
)

MOTIONS: tuple[str, ...] = (
    "moving left",
    "moving right",
    "moving up",
    "moving down",
    "bouncing",
    "spinning",
    "growing",
    "shrinking",
    "orbiting",
    "chasing another shape",
    "colliding with another shape",
)
# Motions that need a second, moving partner shape.
PAIR_MOTIONS: frozenset[str] = frozenset({"chasing another shape", "colliding with another shape"})
# Image y grows downwards, so "up" is -y.
_TRANSLATIONS: dict[str, tuple[float, float]] = {
    "moving left": (-1.0, 0.0),
    "moving right": (1.0, 0.0),
    "moving up": (0.0, -1.0),
    "moving down": (0.0, 1.0),
}
# Rotationally symmetric shapes get an orientation dot in every clip, so "spinning" is visible on
# them without the dot itself giving the class away.
_MARKED_SHAPES = frozenset({"circle", "ring"})
# Outline drawn exactly as alt_core.synthetic.scenes.render_scene does, so shapes look as in pretraining.
FPS = 8


def all_classes() -> list[str]:
    """Every "{shape} {motion}" class, shape-major."""
    return [f"{shape} {motion}" for shape in SHAPES for motion in MOTIONS]


def parse_class(label: str) -> tuple[str, str]:
    """(shape, motion) of a class name; ValueError naming the valid classes if unknown."""
    shape, _, motion = label.partition(" ")
    if shape not in SHAPES or motion not in MOTIONS:
        raise ConfigError(f"unknown class {label!r}; valid classes: {all_classes()}")
    return shape, motion


def class_slug(label: str) -> str:
    return label.replace(" ", "_")


def split_classes() -> tuple[list[str], list[str]]:
    """(seen, novel): shape i holds out motions (2i) % M and (2i + 5) % M.

    Each motion is held out for at most two of the eight shapes and each shape keeps M - 2 motions,
    so the novel classes are new compositions of shapes and motions that training has seen.
    """
    m = len(MOTIONS)
    held = {(i, (2 * i) % m) for i in range(len(SHAPES))} | {(i, (2 * i + 5) % m) for i in range(len(SHAPES))}
    seen, novel = [], []
    for i, shape in enumerate(SHAPES):
        for j, motion in enumerate(MOTIONS):
            (novel if (i, j) in held else seen).append(f"{shape} {motion}")
    return seen, novel


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one clip; trajectories are drawn from `seed` at render time."""

    label: str
    shape: str
    motion: str
    color: str
    background: str
    seed: int
    frames: int = 16
    size: int = 64
    partner_shape: str | None = None  # only for PAIR_MOTIONS
    partner_color: str | None = None
    distractor_shape: str | None = None  # a static or slowly drifting bystander, never the actor's shape
    distractor_color: str | None = None

    def objects(self) -> set[tuple[str, str]]:
        """(colour, shape) of every object drawn: actor, partner, distractor."""
        pairs = {(self.color, self.shape)}
        if self.partner_shape:
            pairs.add((self.partner_color, self.partner_shape))
        if self.distractor_shape:
            pairs.add((self.distractor_color, self.distractor_shape))
        return pairs

    def key_object(self) -> tuple[str, str]:
        """(colour, shape) of the object the class names: the actor."""
        return self.color, self.shape


def clip_seed(seed: int, label: str, index: int) -> int:
    """A 63-bit seed from (dataset seed, class, index): independent of worker count and class order."""
    digest = hashlib.sha256(f"{seed}/{label}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_clip_spec(label: str, seed: int, frames: int = 16, size: int = 64) -> ClipSpec:
    """Random appearance for one clip of `label`: colours, background, partner and 0-1 distractor."""
    shape, motion = parse_class(label)
    rng = np.random.default_rng([seed, 0])
    colors = list(COLORS)
    color = str(rng.choice(colors))
    other_colors = [c for c in colors if c != color]
    other_shapes = [s for s in SHAPES if s != shape]
    partner_shape = partner_color = distractor_shape = distractor_color = None
    if motion in PAIR_MOTIONS:
        partner_shape, partner_color = str(rng.choice(other_shapes)), str(rng.choice(other_colors))
    if rng.random() < 0.5:
        distractor_shape = str(rng.choice([s for s in other_shapes if s != partner_shape]))
        distractor_color = str(rng.choice(other_colors))
    return ClipSpec(label, shape, motion, color, str(rng.choice(list(BACKGROUNDS))), seed, frames, size,
                    partner_shape, partner_color, distractor_shape, distractor_color)


@dataclass
class Track:
    """One shape over time; x, y, radius, angle are (T,) arrays in image-side fractions / radians."""

    shape: str
    color: str
    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    angle: np.ndarray

    def at(self, i: int) -> SceneObject:
        return SceneObject(self.color, self.shape, float(self.x[i]), float(self.y[i]),
                           float(self.radius[i]), float(self.angle[i]))


def _moving_tracks(spec: ClipSpec, rng: np.random.Generator) -> list[Track]:
    """Actor (and partner for PAIR_MOTIONS) trajectories; actor is last so it is drawn on top."""
    t = np.linspace(0.0, 1.0, spec.frames)  # (T,)
    ones = np.ones_like(t)
    cx, cy = rng.uniform(0.3, 0.7, 2)
    angle = sample_angle(spec.shape, rng) * ones
    sign = rng.choice([-1.0, 1.0])
    motion = spec.motion
    partner = None
    if motion in _TRANSLATIONS:
        ux, uy = _TRANSLATIONS[motion]
        along = rng.uniform(0.45, 0.6) * (t - 0.5)  # >= 0.45 of the side end to end
        across = rng.uniform(-0.06, 0.06) * (t - 0.5)
        x, y = cx + ux * along - uy * across, cy + uy * along + ux * across
        radius = rng.uniform(0.09, 0.13) * ones
    elif motion == "bouncing":
        height, bounces = rng.uniform(0.4, 0.55), rng.uniform(1.5, 2.5)
        floor = rng.uniform(0.75, 0.85)
        y = floor - height * np.abs(np.sin(np.pi * bounces * t + rng.uniform(0, np.pi)))
        x = cx + rng.uniform(-0.2, 0.2) * (t - 0.5)
        radius = rng.uniform(0.08, 0.12) * ones
    elif motion == "spinning":
        # 180-360 degrees: at 16 frames at most 24 degrees a frame, below every shape's symmetry/2.
        angle = angle + sign * rng.uniform(np.pi, 2 * np.pi) * t
        x, y = cx + rng.uniform(-0.03, 0.03) * t, cy + rng.uniform(-0.03, 0.03) * t
        radius = rng.uniform(0.13, 0.18) * ones
    elif motion in ("growing", "shrinking"):
        grow = t if motion == "growing" else 1.0 - t
        radius = rng.uniform(0.07, 0.09) * rng.uniform(1.8, 2.4) ** grow  # geometric: even visual rate
        x, y = cx + rng.uniform(-0.03, 0.03) * t, cy + rng.uniform(-0.03, 0.03) * t
    elif motion == "orbiting":
        orbit = rng.uniform(0.2, 0.28)
        theta = rng.uniform(0, 2 * np.pi) + sign * 2 * np.pi * rng.uniform(0.8, 1.0) * t
        x, y = cx + orbit * np.cos(theta), cy + orbit * np.sin(theta)
        radius = rng.uniform(0.08, 0.11) * ones
    elif motion == "chasing another shape":
        # Both ride one wavy path p(u); the actor is a fixed path distance `lag` behind the partner.
        r, r_partner = rng.uniform(0.07, 0.09, 2)
        length = rng.uniform(0.62, 0.72)
        lag = ((r + r_partner) * OUTLINE_SCALE + rng.uniform(0.04, 0.08)) / length
        heading = rng.uniform(0, 2 * np.pi)
        d, n = np.array([np.cos(heading), np.sin(heading)]), np.array([-np.sin(heading), np.cos(heading)])
        amp, freq, phase = rng.uniform(0.04, 0.1), rng.uniform(0.5, 1.2), rng.uniform(0, 2 * np.pi)

        def path(u: np.ndarray) -> np.ndarray:  # (T,) -> (T, 2)
            wave = amp * np.sin(2 * np.pi * freq * u + phase)
            return np.array([cx, cy]) + np.outer(length * (u - 0.5), d) + np.outer(wave, n)

        u = t * (1.0 - lag)
        (x, y), (px, py) = path(u).T, path(u + lag).T
        radius = r * ones
        partner = (px, py, r_partner * ones)
    elif motion == "colliding with another shape":
        # Distance shrinks linearly to outline contact at t_hit, then grows again more slowly.
        r, r_partner = rng.uniform(0.08, 0.11, 2)
        contact = (r + r_partner) * OUTLINE_SCALE
        start, t_hit, restitution = rng.uniform(0.55, 0.7), rng.uniform(0.45, 0.6), rng.uniform(0.6, 0.9)
        speed = (start - contact) / t_hit
        dist = np.where(t < t_hit, start - speed * t, contact + restitution * speed * (t - t_hit))
        heading = rng.uniform(0, 2 * np.pi)
        share = rng.uniform(0.4, 0.6)  # the actor's part of the gap, as if masses differed
        x, y = cx - share * dist * np.cos(heading), cy - share * dist * np.sin(heading)
        px, py = cx + (1 - share) * dist * np.cos(heading), cy + (1 - share) * dist * np.sin(heading)
        radius = r * ones
        partner = (px, py, r_partner * ones)
    else:
        raise ValueError(f"unknown motion {motion!r}; choose one of {MOTIONS}")
    tracks = [Track(spec.shape, spec.color, x, y, radius, angle)]
    if partner is not None:
        if spec.partner_shape is None or spec.partner_color is None:
            raise ValueError(f"{motion!r} needs partner_shape and partner_color in the ClipSpec")
        px, py, pr = partner
        tracks.insert(0, Track(spec.partner_shape, spec.partner_color, px, py, pr,
                                sample_angle(spec.partner_shape, rng) * ones))
    fit_inside(tracks)
    return tracks


def fit_inside(tracks: list[Track], pad: float = 0.01) -> None:
    """Shift all tracks together (never scale) so every outlined shape stays inside the frame."""
    for axis in ("x", "y"):
        reach = [(getattr(tr, axis), tr.radius * OUTLINE_SCALE) for tr in tracks]
        lo = min(float((pos - r).min()) for pos, r in reach) - pad
        hi = max(float((pos + r).max()) for pos, r in reach) + pad
        if hi - lo > 1.0:
            shift = 0.5 - (lo + hi) / 2
        else:
            shift = -lo if lo < 0 else min(0.0, 1.0 - hi)
        for tr in tracks:
            setattr(tr, axis, getattr(tr, axis) + shift)


def bystander_track(frames: int, shape: str, color: str, moving: list[Track], rng: np.random.Generator,
                    radius_range: tuple[float, float] = (0.07, 0.1), places: int = 16) -> Track:
    """A bystander placed, of `places` candidates, farthest from the other shapes' paths; static or slowly
    drifting."""
    t = np.linspace(0.0, 1.0, frames)  # (T,)
    radius = rng.uniform(*radius_range)
    candidates = rng.uniform(0.15, 0.85, (places, 2))
    path = np.concatenate([np.stack([tr.x, tr.y], -1) for tr in moving])  # (N*T, 2)
    clearance = np.linalg.norm(candidates[:, None] - path[None], axis=-1).min(1)  # (places,)
    x0, y0 = candidates[int(clearance.argmax())]
    drift = rng.uniform(-0.08, 0.08, 2) if rng.random() < 0.5 else np.zeros(2)
    return Track(shape, color, x0 + drift[0] * t, y0 + drift[1] * t, radius * np.ones_like(t),
                 sample_angle(shape, rng) * np.ones_like(t))


def draw_shape(img: np.ndarray, obj: SceneObject) -> None:
    """Paint one outlined shape (plus orientation dot for symmetric shapes) onto img (H, W, 3) in place."""
    mask, _ = draw_object(img, obj)
    if obj.shape in _MARKED_SHAPES:
        dot = SceneObject(obj.color, "circle", obj.x + 0.75 * obj.radius * math.cos(obj.angle),
                          obj.y + 0.75 * obj.radius * math.sin(obj.angle), 0.22 * obj.radius)
        img[shape_mask(dot, img.shape[0]) & mask] = OUTLINE_RGB


def render_tracks(tracks: list[Track], background: str, frames: int, size: int, seed: int) -> np.ndarray:
    """(T, H, W, 3) uint8: the textured background, then the tracks' shapes in list order (last on top)."""
    canvas = render_background(background, size, seed)  # (H, W, 3)
    video = np.empty((frames, size, size, 3), dtype=np.uint8)  # (T, H, W, 3)
    for i in range(frames):
        video[i] = canvas
        for track in tracks:
            draw_shape(video[i], track.at(i))
    return video


def clip_tracks(spec: ClipSpec) -> list[Track]:
    """Every shape of the clip over time, in drawing order: distractor behind, partner, actor on top."""
    if spec.shape not in SHAPES or spec.motion not in MOTIONS:
        raise ValueError(f"unknown shape/motion {spec.shape!r}/{spec.motion!r}")
    rng = np.random.default_rng([spec.seed, 1])
    tracks = _moving_tracks(spec, rng)
    if spec.distractor_shape is not None:
        if spec.distractor_color is None:
            raise ValueError("a ClipSpec with distractor_shape needs distractor_color")
        tracks.insert(0, bystander_track(spec.frames, spec.distractor_shape, spec.distractor_color, tracks, rng))
    return tracks


def render_clip(spec: ClipSpec) -> np.ndarray:
    """The clip as (T, H, W, 3) uint8."""
    return render_tracks(clip_tracks(spec), spec.background, spec.frames, spec.size, spec.seed)


@functools.cache
def x264_options() -> dict[str, str]:
    """Encoder options that make the bytes a function of the frames alone.

    One thread removes scheduling from the output. On an AVX-512 VM x264's default asm still gave
    ~3% of repeated encodes different bytes (measured: 20 of 600), while asm capped at AVX2 gave 600
    of 600 identical and the same bytes as pure C (asm=0), so the cap applies where the CPU has AVX2.
    """
    options = {"threads": "1", "crf": "18"}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux: keep x264's own choice
        return options
    flags = {f for line in cpuinfo if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    if platform.machine() == "x86_64" and "avx2" in flags:
        options["x264-params"] = "asm=AVX2"
    return options


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = FPS) -> None:
    """H.264/yuv420p mp4 from (T, H, W, 3) uint8, byte-reproducible (see x264_options)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even height and width, got {height}x{width}")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options=x264_options())
        stream.thread_count = 1
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush delayed frames


def vocabulary() -> dict:
    return {"motions": list(MOTIONS), "shapes": list(SHAPES)}


MOTION_CUES: dict[str, tuple[str, ...]] = {
    "moving left": ("on the right", "on the left"), "moving right": ("on the left", "on the right"),
    "moving up": ("at the bottom", "at the top"), "moving down": ("at the top", "at the bottom"),
    "bouncing": ("at the bottom",), "orbiting": ("in the center",), "growing": ("small", "large"),
    "shrinking": ("large", "small"),
}


def synth_entities(labels: list[str]) -> list[dict]:
    """The entity file an LLM would write for these classes ("what visual entities identify a {label}
    video?"): the shape in every colour, its sizes, the positions its motion passes, and the scenes."""
    by_unit: dict[str, dict] = {}

    def add(unit: str, description: str, label: str) -> None:
        by_unit.setdefault(unit, {"unit": unit, "description": description, "labels": []})["labels"].append(label)

    for label in labels:
        shape, motion = parse_class(label)
        for color in COLORS:
            add(f"{color} {shape}", f"a {color} {shape}", label)
        for cue in MOTION_CUES.get(motion, ()):
            unit = f"{cue} {shape}" if cue in ("small", "large") else f"a {shape} {cue}"
            add(unit, unit if cue not in ("small", "large") else f"a {cue} {shape}", label)
        for name, description in BACKGROUNDS.items():
            add(name, description, label)
    return sorted(by_unit.values(), key=lambda e: e["unit"])
