"""SynthObjects: an actor interacts with a small key object in a scene, among distractor objects of other kinds.

A class is an interaction x key object x scene ("circle chasing a red star on a sandy desert"), as Kinetics
classes differ by their objects and scenes (playing guitar vs violin, surfing vs skiing): the actor (a white
circle) and its motion are alike across classes that share an interaction, the key object is a few patches of a
64 px frame, and two distractor objects of other kinds sit in every clip, so the frame as a whole says little
about which object takes part. The novel classes are unseen triples whose every pair (interaction and object,
interaction and scene, object and scene) is seen in training. The words are ones alt-tiny was pretrained on:
colour + shape objects, "chasing" and "colliding with" a named partner, "orbiting", and the scene phrases
(docs/method.md, "SynthObjects").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alt_core.synthetic.scenes import BACKGROUNDS, OUTLINE_SCALE, sample_angle
from alt_core.synthetic.synth import Track, bystander_track, fit_inside, render_tracks

ACTOR: tuple[str, str] = ("white", "circle")
OBJECT_KINDS: tuple[tuple[str, str], ...] = (
    ("red", "star"), ("blue", "square"), ("yellow", "triangle"),
    ("green", "cross"), ("purple", "diamond"), ("orange", "hexagon"),
)
INTERACTIONS: tuple[str, ...] = ("chasing", "colliding with", "orbiting")
SCENES: tuple[str, ...] = ("grass", "sand", "water", "brick")
OBJECT_RADIUS = (0.1, 0.12)  # of the image side: 15-18 px across at 64 px with the outline, a few 8-px patches
ACTOR_RADIUS = (0.09, 0.11)
PLACES = 64  # candidate places of a distractor; the one farthest from every other shape's path wins
DISTRACTORS = 2


def class_name(interaction: str, kind: tuple[str, str], scene: str) -> str:
    color, shape = kind
    return f"{ACTOR[1]} {interaction} a {color} {shape} on {BACKGROUNDS[scene]}"


def _triples() -> list[tuple[int, int, int]]:
    return [(i, k, s) for i in range(len(INTERACTIONS)) for k in range(len(OBJECT_KINDS)) for s in range(len(SCENES))]


def _is_novel(i: int, k: int, s: int) -> bool:
    """16 of the 72 triples: each interaction, object and scene stays seen, and so does every pair of them."""
    return (i + k + 2 * s) % 9 in (0, 4)


def split_classes() -> tuple[list[str], list[str]]:
    """(seen, novel) class names, interaction-major."""
    seen, novel = [], []
    for i, k, s in _triples():
        (novel if _is_novel(i, k, s) else seen).append(class_name(INTERACTIONS[i], OBJECT_KINDS[k], SCENES[s]))
    return seen, novel


def parse_class(label: str) -> tuple[str, tuple[str, str], str]:
    """(interaction, key object, scene) of a class name."""
    for i, k, s in _triples():
        if class_name(INTERACTIONS[i], OBJECT_KINDS[k], SCENES[s]) == label:
            return INTERACTIONS[i], OBJECT_KINDS[k], SCENES[s]
    raise ValueError(f"unknown SynthObjects class {label!r}")


@dataclass(frozen=True)
class ObjectClipSpec:
    """Everything that determines one clip; trajectories are drawn from `seed` at render time."""

    label: str
    interaction: str
    key_color: str
    key_shape: str
    background: str
    distractors: tuple[tuple[str, str], ...]  # (colour, shape) of each bystander, kinds other than the key's
    seed: int
    frames: int = 16
    size: int = 64

    def objects(self) -> set[tuple[str, str]]:
        """(colour, shape) of every object drawn: actor, key object, distractors."""
        return {ACTOR, (self.key_color, self.key_shape), *self.distractors}

    def key_object(self) -> tuple[str, str]:
        """(colour, shape) of the object the class names."""
        return self.key_color, self.key_shape


def sample_clip_spec(label: str, seed: int, frames: int = 16, size: int = 64) -> ObjectClipSpec:
    """Random bystanders and their order for one clip of `label`."""
    interaction, kind, scene = parse_class(label)
    rng = np.random.default_rng([seed, 0])
    others = [o for o in OBJECT_KINDS if o != kind]
    picked = rng.choice(len(others), size=DISTRACTORS, replace=False)
    return ObjectClipSpec(label, interaction, kind[0], kind[1], scene, tuple(others[int(i)] for i in picked), seed,
                          frames, size)


def clip_tracks(spec: ObjectClipSpec) -> dict[str, list[Track]]:
    """The clip's shapes over time by role: "actor", "key" and "distractors"."""
    rng = np.random.default_rng([spec.seed, 1])
    t = np.linspace(0.0, 1.0, spec.frames)  # (T,)
    ones = np.ones_like(t)
    r_actor, r_key = rng.uniform(*ACTOR_RADIUS), rng.uniform(*OBJECT_RADIUS)
    contact = (r_actor + r_key) * OUTLINE_SCALE
    cx, cy = rng.uniform(0.35, 0.65, 2)
    heading = rng.uniform(0, 2 * np.pi)
    d, n = np.array([np.cos(heading), np.sin(heading)]), np.array([-np.sin(heading), np.cos(heading)])
    if spec.interaction == "chasing":
        # both ride one wavy path; the actor keeps a fixed path distance behind the fleeing key object
        length = rng.uniform(0.5, 0.6)
        lag = (contact + rng.uniform(0.03, 0.06)) / length
        amp, freq, phase = rng.uniform(0.03, 0.08), rng.uniform(0.5, 1.2), rng.uniform(0, 2 * np.pi)

        def path(u: np.ndarray) -> np.ndarray:  # (T,) -> (T, 2)
            wave = amp * np.sin(2 * np.pi * freq * u + phase)
            return np.array([cx, cy]) + np.outer(length * (u - 0.5), d) + np.outer(wave, n)

        u = t * (1.0 - lag)
        actor, key = path(u), path(u + lag)
    elif spec.interaction == "colliding with":
        # the gap shrinks to outline contact at t_hit, then both bounce apart more slowly
        start, t_hit, restitution = rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.6), rng.uniform(0.6, 0.9)
        speed = (start - contact) / t_hit
        gap = np.where(t < t_hit, start - speed * t, contact + restitution * speed * (t - t_hit))
        share = rng.uniform(0.55, 0.75)  # the actor covers most of the gap: it is the one that moves
        actor = np.array([cx, cy]) - np.outer(share * gap, d)
        key = np.array([cx, cy]) + np.outer((1 - share) * gap, d)
    elif spec.interaction == "orbiting":
        # the key object stays; the actor circles it once, at a little more than touching distance
        orbit = contact + rng.uniform(0.03, 0.06)
        theta = rng.uniform(0, 2 * np.pi) + rng.choice([-1.0, 1.0]) * 2 * np.pi * rng.uniform(0.8, 1.0) * t
        key = np.array([cx, cy]) * ones[:, None]
        actor = key + orbit * np.stack([np.cos(theta), np.sin(theta)], -1)
    else:
        raise ValueError(f"unknown interaction {spec.interaction!r}; choose one of {INTERACTIONS}")
    tracks = {
        "key": [Track(spec.key_shape, spec.key_color, key[:, 0], key[:, 1], r_key * ones,
                      sample_angle(spec.key_shape, rng) * ones)],
        "actor": [Track(ACTOR[1], ACTOR[0], actor[:, 0], actor[:, 1], r_actor * ones,
                        sample_angle(ACTOR[1], rng) * ones)],
    }
    fit_inside(tracks["key"] + tracks["actor"])
    moving = tracks["key"] + tracks["actor"]
    tracks["distractors"] = []
    for color, shape in spec.distractors:
        tracks["distractors"].append(bystander_track(spec.frames, shape, color, moving + tracks["distractors"], rng,
                                                     OBJECT_RADIUS, PLACES))
    return tracks


def render_clip(spec: ObjectClipSpec) -> np.ndarray:
    """The clip as (T, H, W, 3) uint8: distractors behind, then the key object, the actor on top."""
    tracks = clip_tracks(spec)
    return render_tracks(tracks["distractors"] + tracks["key"] + tracks["actor"], spec.background, spec.frames,
                         spec.size, spec.seed)


def object_entities(labels: list[str]) -> list[dict]:
    """The entity file an LLM would write for these classes ("what visual entities identify a {label} video?"):
    the key object, the actor and the scene of each."""
    by_unit: dict[str, dict] = {}

    def add(unit: str, description: str, label: str) -> None:
        by_unit.setdefault(unit, {"unit": unit, "description": description, "labels": []})["labels"].append(label)

    for label in labels:
        _, (color, shape), scene = parse_class(label)
        add(f"{color} {shape}", f"a {color} {shape}", label)
        add(f"{ACTOR[0]} {ACTOR[1]}", f"a {ACTOR[0]} {ACTOR[1]}", label)
        add(scene, BACKGROUNDS[scene], label)
    return sorted(by_unit.values(), key=lambda e: e["unit"])


def vocabulary() -> dict:
    return {"actor": list(ACTOR), "objects": [list(o) for o in OBJECT_KINDS], "interactions": list(INTERACTIONS),
            "scenes": list(SCENES)}
