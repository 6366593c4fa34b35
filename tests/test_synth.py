"""SynthActions: held-out split, visible motions, reproducible bytes, readable videos, manifests."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from decord import VideoReader, cpu

from alt_core.errors import ConfigError
from alt_core.synthetic.dataset import generate_dataset
from alt_core.synthetic.scenes import COLORS, SHAPES
from alt_core.synthetic.synth import (
    MOTIONS,
    ClipSpec,
    all_classes,
    clip_seed,
    render_clip,
    sample_clip_spec,
    split_classes,
    write_mp4,
)

SEED, VIDEOS, FRAMES, SIZE = 3, 5, 16, 64


def _spec(shape: str, motion: str, seed: int = 0) -> ClipSpec:
    """No distractor and colours absent from the grass texture, so colour masks find exactly the shapes."""
    return ClipSpec(f"{shape} {motion}", shape, motion, "red", "grass", seed, FRAMES, SIZE,
                    partner_shape="hexagon", partner_color="blue")


def _centroids(video: np.ndarray, color: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (x, y) centroid (T, 2) and pixel count (T,) of the pixels painted exactly `color`."""
    mask = (video == np.array(COLORS[color], np.uint8)).all(-1)  # (T, H, W)
    ys, xs = np.mgrid[:SIZE, :SIZE]
    count = mask.sum((1, 2))
    assert (count > 0).all(), f"{color} vanished in some frame"
    return np.stack([(mask * xs).sum((1, 2)), (mask * ys).sum((1, 2))], -1) / count[:, None], count


def test_split_classes_holds_out_compositions_only() -> None:
    seen, novel = split_classes()
    assert (seen, novel) == split_classes()
    assert len(seen) >= 40 and len(novel) >= 10
    assert not set(seen) & set(novel) and sorted(seen + novel) == sorted(all_classes())
    assert len(all_classes()) == len(SHAPES) * len(MOTIONS) and len(MOTIONS) >= 10
    assert {c.split(" ", 1)[0] for c in seen} == set(SHAPES)
    assert {c.split(" ", 1)[1] for c in seen} == set(MOTIONS)


@pytest.mark.parametrize("label", ["circle moving left", "star chasing another shape", "ring spinning"])
def test_render_clip_shape_dtype_and_determinism(label: str) -> None:
    spec = sample_clip_spec(label, clip_seed(0, label, 1), frames=12, size=48)
    video = render_clip(spec)
    assert video.shape == (12, 48, 48, 3) and video.dtype == np.uint8
    np.testing.assert_array_equal(video, render_clip(spec))
    if spec.distractor_shape is not None:
        assert spec.distractor_shape != spec.shape


TRANSLATIONS = [("moving left", 0, -1), ("moving right", 0, 1), ("moving up", 1, -1), ("moving down", 1, 1)]


@pytest.mark.parametrize(("motion", "axis", "sign"), TRANSLATIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_translation_moves_the_actor(motion: str, axis: int, sign: int, seed: int) -> None:
    xy, _ = _centroids(render_clip(_spec("square", motion, seed)), "red")
    assert sign * (xy[-1, axis] - xy[0, axis]) >= 0.4 * SIZE
    assert abs(xy[-1, 1 - axis] - xy[0, 1 - axis]) < 0.1 * SIZE


@pytest.mark.parametrize("shape", ["square", "circle", "ring", "hexagon"])
@pytest.mark.parametrize("seed", [0, 1])
def test_spinning_rotates_in_place(shape: str, seed: int) -> None:
    """Symmetric shapes spin visibly too, through their orientation dot."""
    video = render_clip(_spec(shape, "spinning", seed))
    xy, count = _centroids(video, "red")
    assert np.abs(xy - xy[0]).max() < 0.1 * SIZE
    red = (video == np.array(COLORS["red"], np.uint8)).all(-1)  # (T, H, W)
    changed = (red[1:] != red[:-1]).sum((1, 2))  # (T-1,): every step turns, not just start vs end
    assert changed.min() > 0.02 * count[0]


@pytest.mark.parametrize(("motion", "grows"), [("growing", True), ("shrinking", False)])
def test_growing_and_shrinking_change_area(motion: str, grows: bool) -> None:
    _, count = _centroids(render_clip(_spec("diamond", motion)), "red")
    ratio = count[-1] / count[0] if grows else count[0] / count[-1]
    assert ratio >= 1.6**2 * 0.9  # radius ratio >= 1.6, area goes with its square


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orbiting_goes_around_a_centre(seed: int) -> None:
    xy, _ = _centroids(render_clip(_spec("triangle", "orbiting", seed)), "red")
    rel = xy - (xy.max(0) + xy.min(0)) / 2
    sweep = np.abs(np.diff(np.unwrap(np.arctan2(rel[:, 1], rel[:, 0])))).sum()
    assert sweep >= 1.4 * np.pi


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bouncing_goes_up_and_down(seed: int) -> None:
    xy, _ = _centroids(render_clip(_spec("star", "bouncing", seed)), "red")
    y = xy[:, 1]
    assert y.max() - y.min() >= 0.3 * SIZE
    turns = np.count_nonzero(np.diff(np.sign(np.diff(y))) != 0)
    assert turns >= 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chasing_actor_follows_partner_path(seed: int) -> None:
    video = render_clip(_spec("cross", "chasing another shape", seed))
    actor, _ = _centroids(video, "red")
    partner, _ = _centroids(video, "blue")
    assert np.linalg.norm(actor[-1] - actor[0]) >= 0.3 * SIZE
    assert np.linalg.norm(partner[-1] - partner[0]) >= 0.3 * SIZE
    # The actor ends where the partner has been, and is behind it all along.
    assert np.linalg.norm(partner - actor[-1], axis=-1).min() < 0.06 * SIZE
    assert np.linalg.norm(partner - actor, axis=-1).min() > 0.15 * SIZE


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_colliding_approach_then_rebound(seed: int) -> None:
    video = render_clip(_spec("circle", "colliding with another shape", seed))
    actor, _ = _centroids(video, "red")
    partner, _ = _centroids(video, "blue")
    gap = np.linalg.norm(actor - partner, axis=-1)  # (T,)
    hit = int(gap.argmin())
    assert 0 < hit < FRAMES - 1
    assert gap[0] - gap[hit] >= 0.2 * SIZE and gap[-1] - gap[hit] >= 0.05 * SIZE


def test_write_mp4_is_byte_identical(tmp_path: Path) -> None:
    """Many writes: the AVX-512 asm that x264_options avoids diverged in ~3% of encodes."""
    video = render_clip(_spec("hexagon", "moving right"))
    outputs = set()
    for i in range(30):
        write_mp4(tmp_path / f"{i}.mp4", video)
        outputs.add((tmp_path / f"{i}.mp4").read_bytes())
    assert len(outputs) == 1


def _subset() -> list[str]:
    seen, novel = split_classes()
    return [seen[0], next(c for c in seen if c.endswith("another shape")), novel[0]]


def _generate(out: Path, workers: int) -> dict:
    return generate_dataset(out, seed=SEED, classes=_subset(), videos_per_class=VIDEOS, frames=FRAMES,
                                  size=SIZE, workers=workers, fewshot=(1, 2, 4))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_a")
    return out, _generate(out, workers=2)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_same_seed_same_bytes_whatever_the_workers(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    out_a, _ = dataset
    _generate(tmp_path, workers=1)
    for name in ("manifest.csv", "labels_seen.txt", "labels_novel.txt", "fewshot_2.csv", "synth.json"):
        assert (out_a / name).read_bytes() == (tmp_path / name).read_bytes(), name
    assert pq.read_table(out_a / "manifest.parquet").equals(pq.read_table(tmp_path / "manifest.parquet"))
    videos = sorted(p.relative_to(out_a) for p in out_a.rglob("*.mp4"))
    assert len(videos) == 3 * VIDEOS
    for rel in videos:
        assert (out_a / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_manifest_columns_and_splits(dataset: tuple[Path, dict]) -> None:
    out, summary = dataset
    rows = _read_csv(out / "manifest.csv")
    assert list(rows[0]) == ["path", "label", "split"]
    assert pq.read_table(out / "manifest.parquet").to_pylist() == rows
    seen, novel = split_classes()
    labels_seen = (out / "labels_seen.txt").read_text().splitlines()
    labels_novel = (out / "labels_novel.txt").read_text().splitlines()
    assert labels_seen == [c for c in seen if c in _subset()] and len(labels_seen) == 2
    assert labels_novel == [c for c in novel if c in _subset()] and len(labels_novel) == 1
    for row in rows:
        assert not Path(row["path"]).is_absolute() and "\\" not in row["path"]
        assert (out / row["path"]).is_file()
        assert (row["split"] == "novel") == (row["label"] in labels_novel)
    for label in labels_seen:
        counts = Counter(r["split"] for r in rows if r["label"] == label)
        assert counts == {"train": 3, "val": 1, "test": 1}
    assert summary["videos"] == len(rows) == 3 * VIDEOS and summary["fewshot_skipped"] == [4]
    meta = json.loads((out / "synth.json").read_text())
    assert meta["seed"] == SEED and meta["videos"] == len(rows) and meta["fewshot_skipped"] == [4]


def test_fewshot_files_have_k_train_rows_per_seen_class(dataset: tuple[Path, dict]) -> None:
    out, _ = dataset
    train = {r["path"] for r in _read_csv(out / "manifest.csv") if r["split"] == "train"}
    labels_seen = (out / "labels_seen.txt").read_text().splitlines()
    previous: set[str] = set()
    for k in (1, 2):
        rows = _read_csv(out / f"fewshot_{k}.csv")
        assert Counter(r["label"] for r in rows) == {label: k for label in labels_seen}
        assert all(r["split"] == "train" and r["path"] in train for r in rows)
        paths = {r["path"] for r in rows}
        assert previous <= paths  # nested: the 2-shot set extends the 1-shot set
        previous = paths
    assert not (out / "fewshot_4.csv").exists()


def test_decord_reads_every_video(dataset: tuple[Path, dict]) -> None:
    out, _ = dataset
    rows = _read_csv(out / "manifest.csv")
    for row in rows:
        reader = VideoReader(str(out / row["path"]), ctx=cpu(0))
        assert len(reader) == FRAMES
        assert reader.get_batch(list(range(FRAMES))).asnumpy().shape == (FRAMES, SIZE, SIZE, 3)
    # The decoded file shows the clip its (seed, class, index) renders, up to compression.
    row = rows[0]
    index = int(Path(row["path"]).stem)
    expected = render_clip(sample_clip_spec(row["label"], clip_seed(SEED, row["label"], index), FRAMES, SIZE))
    decoded = VideoReader(str(out / row["path"]), ctx=cpu(0)).get_batch(list(range(FRAMES))).asnumpy()
    assert np.abs(decoded.astype(np.int16) - expected).mean() < 15


def test_unknown_class_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid classes: .*circle moving left"):
        generate_dataset(tmp_path, classes=["circle moonwalking"], workers=1)
