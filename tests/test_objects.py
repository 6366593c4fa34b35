"""SynthObjects (`alt data synth --variant objects`): classes, determinism, and ground truth that matches what is
drawn."""

from pathlib import Path

import numpy as np
import pytest

from alt_core.errors import ConfigError
from alt_core.synthetic import objects
from alt_core.synthetic.dataset import clip_spec_of, generate_dataset
from alt_core.synthetic.scenes import COLORS, shape_mask
from alt_core.synthetic.synth import clip_seed
from alt_core.video import open_video, read_frames

SEEN, NOVEL = objects.split_classes()


def test_novel_classes_are_unseen_triples_of_seen_pairs():
    assert len(SEEN) == 56 and len(NOVEL) == 16 and not set(SEEN) & set(NOVEL)
    seen = [objects.parse_class(label) for label in SEEN]
    for interaction, kind, scene in map(objects.parse_class, NOVEL):
        assert any(i == interaction and k == kind for i, k, _ in seen)
        assert any(i == interaction and s == scene for i, _, s in seen)
        assert any(k == kind and s == scene for _, k, s in seen)


@pytest.mark.parametrize("label", [SEEN[0], SEEN[25], SEEN[-1], NOVEL[3]])
def test_the_key_objects_pixels_are_where_its_track_says(label):
    spec = objects.sample_clip_spec(label, clip_seed(0, label, 7))
    assert spec.key_object() not in spec.distractors and len(set(spec.distractors)) == objects.DISTRACTORS
    tracks = objects.clip_tracks(spec)
    video = objects.render_clip(spec)  # (T, H, W, 3)
    key_rgb = np.array(COLORS[spec.key_color])
    for i in range(spec.frames):
        mask = shape_mask(tracks["key"][0].at(i), spec.size)
        on_key = np.all(video[i] == key_rgb, axis=-1)
        assert mask.sum() > 20  # a few 8-px patches
        assert (on_key & mask).sum() >= 0.95 * mask.sum()  # drawn where the track is, not covered
        assert (on_key & ~mask).sum() == 0  # and nowhere else: no other object has its colour


def test_generation_is_deterministic_and_specs_come_back_from_paths(tmp_path: Path):
    classes = [SEEN[1], NOVEL[0]]
    for name in ("a", "b"):
        generate_dataset(tmp_path / name, "objects", seed=5, classes=classes, videos_per_class=2, frames=8, size=32,
                         workers=1, fewshot=())
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 8
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    paths = sorted((tmp_path / "a").glob("videos/*/*.mp4"))
    for path, other in zip(paths, paths[1:] + paths[:1], strict=True):
        decoded = read_frames(open_video(path), path, list(range(8))).astype(int)  # (T, H, W, 3)
        error = np.abs(decoded - objects.render_clip(clip_spec_of(path))).mean()
        assert error < 15 and error < 0.5 * np.abs(decoded - objects.render_clip(clip_spec_of(other))).mean()
    entities = (tmp_path / "a" / "entities.jsonl").read_text()
    assert '"unit": "white circle"' in entities and NOVEL[0] not in entities  # the seen classes' entities only


def test_unknown_variant_or_class_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown dataset variant 'shapes'; choose one of actions, objects"):
        generate_dataset(tmp_path, "shapes")
    with pytest.raises(ConfigError, match="valid classes: .*circle orbiting a red star"):
        generate_dataset(tmp_path, "objects", classes=["circle juggling a red star on a brick wall"], workers=1)
