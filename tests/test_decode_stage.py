"""The decode Ray Data stage on real SynthActions videos plus one file of each broken kind.

One decode run (module fixture) is shared: its counts, quarantine, views and shapes are checked,
then it is resumed, and its frames are compared with a cached-token run through an ALT model.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from alt_core.clips import frames_from_bytes, read_format, read_quarantine, shard_paths, tokens_from_columns
from alt_core.config import BackboneSpec, DecodeSpec
from alt_core.errors import ALTError, ConfigError
from alt_core.manifest import video_id
from alt_core.synthetic.dataset import generate_dataset
from alt_core.synthetic.synth import all_classes
from pipelines.decode import decode_manifest
from tests.helpers import make_model, write_weights

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]

FRAMES, CLIPS, CROPS, SIZE = 4, 2, 3, 32  # SIZE: alt-micro's input size, so the same run can cache tokens
SPEC = DecodeSpec(frames=FRAMES, clips=CLIPS, crops=CROPS, size=SIZE, train_clips=1)
CLASSES = all_classes()[:4]
BAD = ("truncated", "empty", "garbage_middle", "text", "zero_frames", "missing")


def write_bad_videos(good: Path, bad_dir: Path) -> None:
    """One input of each broken kind (`missing` is deliberately not written)."""
    data = good.read_bytes()
    n = len(data)
    bad_dir.mkdir()
    (bad_dir / "truncated.mp4").write_bytes(data[: n // 2])
    (bad_dir / "empty.mp4").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, n // 3, dtype=np.uint8).tobytes()
    (bad_dir / "garbage_middle.mp4").write_bytes(data[: n // 3] + noise + data[n // 3 + len(noise):])
    (bad_dir / "text.mp4").write_text("this is not a video\n" * 50)
    with av.open(str(bad_dir / "zero_frames.mp4"), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        container.start_encoding()  # header and trailer, no frames
    assert (bad_dir / "zero_frames.mp4").stat().st_size > 0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, seed=0, classes=CLASSES, videos_per_class=3, frames=16, size=64, workers=1,
                           fewshot=())
    with (root / "manifest.csv").open() as f:
        rows = list(csv.reader(f))
    write_bad_videos(root / rows[1][0], root / "bad")
    rows += [[f"bad/{name}.mp4", CLASSES[0], "test"] for name in BAD]
    with (root / "with_bad.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


@pytest.fixture(scope="module")
def frames_run(dataset: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("clips") / "frames"
    summary = decode_manifest(dataset / "with_bad.csv", out, SPEC, shard_size=5, workers=2)
    return out, summary


def read_rows(out: Path) -> list[dict]:
    return [row for shard in shard_paths(out) for row in pq.read_table(shard).to_pylist()]


def test_counts_reconcile_and_bad_inputs_are_quarantined(dataset: Path, frames_run) -> None:
    out, summary = frames_run
    splits = Counter(r["split"] for r in csv.DictReader((dataset / "manifest.csv").open()))
    good = sum(splits.values())
    views = splits["train"] + (good - splits["train"]) * CLIPS * CROPS  # one train clip; clips x crops otherwise
    assert summary["inputs"] == good + len(BAD) == summary["videos_ok"] + summary["quarantined"]
    assert (summary["videos_ok"], summary["quarantined"], summary["rows"]) == (good, len(BAD), views)
    assert summary["shards"] == summary["shards_written"] == 4  # 18 inputs in shards of 5
    assert json.loads((out / "decode.json").read_text())["rows"] == views

    quarantine = read_quarantine(out)
    assert sorted(Path(q["path"]).stem for q in quarantine) == sorted(BAD)
    assert all(q["stage"] == "decode" and q["error"].strip() for q in quarantine)
    assert all(Path(q["path"]).is_absolute() for q in quarantine)


def test_shards_deal_videos_in_a_seeded_random_order(dataset: Path, frames_run) -> None:
    """Training reads shards through a bounded shuffle buffer: shards cut in the order of a class-sorted
    manifest would feed it one class at a time."""
    out, _ = frames_run
    manifest = [str(dataset / r["path"]) for r in csv.DictReader((dataset / "with_bad.csv").open())]
    shard_videos = [list(dict.fromkeys(r["path"] for r in pq.read_table(s).to_pylist())) for s in shard_paths(out)]
    written = [p for videos in shard_videos for p in videos]
    assert written != [p for p in manifest if p in set(written)]  # dealt in a seeded random order
    shard_labels = [{r["label"] for r in pq.read_table(s).to_pylist()} for s in shard_paths(out)]
    mixed = [len(found) >= 2 for found, videos in zip(shard_labels, shard_videos, strict=True) if len(videos) >= 3]
    assert mixed and all(mixed), shard_labels  # (shards with few good videos may hold one class by chance)


def test_views_shapes_and_labels(dataset: Path, frames_run) -> None:
    out, _ = frames_run
    fmt = read_format(out)
    assert (fmt.kind, fmt.shape) == ("frames", (FRAMES, SIZE, SIZE, 3))
    rows = read_rows(out)
    manifest = {str(dataset / r["path"]): r for r in csv.DictReader((dataset / "manifest.csv").open())}
    per_video: dict[str, list[int]] = {}
    for row in rows:
        src = manifest[row["path"]]
        assert (row["label"], row["split"], row["video_id"]) == (src["label"], src["split"], video_id(row["path"]))
        per_video.setdefault(row["path"], []).append(row["view"])
    for path, views in per_video.items():
        n = 1 if manifest[path]["split"] == "train" else CLIPS * CROPS
        assert sorted(views) == list(range(n)), path
    frames = frames_from_bytes([r["frames"] for r in rows], fmt)
    assert frames.shape == (len(rows), FRAMES, 3, SIZE, SIZE) and frames.dtype == torch.uint8
    assert frames.float().std() > 10  # real pictures, not zeros
    # a square 64px frame resized to 32 leaves the crops nowhere to move, but the clips sample other frames
    test_path = next(r["path"] for r in rows if r["split"] == "test")
    views = {r["view"]: r["frames"] for r in rows if r["path"] == test_path}
    assert views[0] == views[1] == views[CROPS - 1] and views[0] != views[CROPS]


def test_resume_skips_done_shards_and_redoes_missing_ones(dataset: Path, frames_run) -> None:
    out, first = frames_run
    kwargs = dict(shard_size=5, workers=2)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*-*.parquet")}
    quarantine = read_quarantine(out)
    again = decode_manifest(dataset / "with_bad.csv", out, SPEC, **kwargs)
    assert (again["shards_written"], again["shards_skipped"]) == (0, 4)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*-*.parquet")} == stamps
    keys = ("inputs", "videos_ok", "quarantined", "rows")
    assert {k: again[k] for k in keys} == {k: first[k] for k in keys}
    assert read_quarantine(out) == quarantine

    before = pq.read_table(out / "shard-00001.parquet")
    (out / "shard-00001.parquet").unlink()  # an interrupted run: this shard never landed
    redo = decode_manifest(dataset / "with_bad.csv", out, SPEC, **kwargs)
    assert (redo["shards_written"], redo["shards_skipped"]) == (1, 3)
    assert {k: redo[k] for k in keys} == {k: first[k] for k in keys}
    assert pq.read_table(out / "shard-00001.parquet").equals(before)  # decoding is deterministic

    with pytest.raises(ALTError, match="other inputs or parameters"):
        decode_manifest(dataset / "with_bad.csv", out, replace(SPEC, frames=FRAMES + 1), **kwargs)


def test_mmaction2_list(dataset: Path, tmp_path: Path) -> None:
    with (dataset / "manifest.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    lists = dataset / "lists"  # relative entries resolve against the list's directory
    lists.mkdir()
    (lists / "labels.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    (lists / "train_list.txt").write_text(
        "".join(f"../{r['path']} {CLASSES.index(r['label'])}\n" for r in rows) + "../missing.mp4 0\n")
    summary = decode_manifest(lists / "train_list.txt", tmp_path / "out", replace(SPEC, clips=1, crops=1),
                              default_split="train", workers=1)
    assert (summary["videos_ok"], summary["quarantined"], summary["rows"]) == (len(rows), 1, len(rows))
    decoded = read_rows(tmp_path / "out")
    assert sorted((r["path"], r["label"]) for r in decoded) == sorted((str(dataset / r["path"]), r["label"])
                                                                      for r in rows)
    assert {r["split"] for r in decoded} == {"train"}


def test_cached_tokens_give_the_logits_of_decoded_frames(dataset: Path, frames_run, micro_weights: str,
                                                         micro_backbone, micro_corpus, tmp_path: Path) -> None:
    frames_out, frames_summary = frames_run
    spec = replace(SPEC, cache_tokens=True, backbone="alt-micro", pretrained=micro_weights, tome_r=1)
    summary = decode_manifest(dataset / "with_bad.csv", tmp_path / "tokens", spec, shard_size=5, workers=2)
    assert {k: summary[k] for k in ("inputs", "videos_ok", "quarantined", "rows")} == \
        {k: frames_summary[k] for k in ("inputs", "videos_ok", "quarantined", "rows")}
    fmt = read_format(tmp_path / "tokens")
    regions = 16 - 2 * 1  # 4x4 patches, 2 blocks merging r=1 each
    assert (fmt.kind, fmt.shape, fmt.tome_r) == ("tokens", (FRAMES, 1 + regions, 32), 1)
    assert fmt.backbone == BackboneSpec("alt-micro", micro_weights).id  # names the weights by digest

    token_rows = {(r["video_id"], r["view"]): r for r in read_rows(tmp_path / "tokens")}
    frame_rows = {(r["video_id"], r["view"]): r for r in read_rows(frames_out)}
    assert token_rows.keys() == frame_rows.keys()
    keys = sorted(frame_rows)
    model = make_model(micro_backbone, micro_corpus, tome_r=1, num_frames=FRAMES).eval()
    with torch.no_grad():
        pixels = frames_from_bytes([frame_rows[k]["frames"] for k in keys], read_format(frames_out))
        tokens = tokens_from_columns({name: [token_rows[k][name] for k in keys] for name in fmt.payload}, fmt)
        from_pixels, from_tokens = model(pixels=pixels), model(tokens=tokens)
    scale = float(model.logit_scale.detach().exp())
    # float16 keeps 11 bits (~5e-4 relative per value): cosines move by < 1e-3, logits by < 1e-3 x scale
    torch.testing.assert_close(from_tokens.logits, from_pixels.logits, atol=1e-3 * scale, rtol=0)
    assert torch.equal(from_tokens.alignment.query_index, from_pixels.alignment.query_index)


def test_resuming_tokens_of_other_weights_is_refused(dataset: Path, micro_backbone, tmp_path: Path) -> None:
    """Shards of tokens name the weights they came from: a retrained file at the same path must not resume
    into them (half the shards would hold features of other weights)."""
    weights = tmp_path / "w.safetensors"
    write_weights(weights, micro_backbone)
    spec = replace(SPEC, cache_tokens=True, backbone="alt-micro", pretrained=str(weights), tome_r=1)
    kwargs = dict(shard_size=5, workers=1, splits=["test"])
    decode_manifest(dataset / "with_bad.csv", tmp_path / "tokens", spec, **kwargs)
    assert decode_manifest(dataset / "with_bad.csv", tmp_path / "tokens", spec, **kwargs)["shards_written"] == 0
    write_weights(weights, micro_backbone, retrained=True)
    with pytest.raises(ALTError, match="other inputs or parameters"):
        decode_manifest(dataset / "with_bad.csv", tmp_path / "tokens", spec, **kwargs)


@pytest.mark.parametrize("overrides, message", [
    ({"backbone": None}, "caching tokens needs a backbone"),
    ({"size": 64}, "--size 64 differs from backbone alt-micro's input size 32"),
    ({"tome_r": -1}, "tome_r must be >= 0"),
])
def test_token_caching_misconfigurations_fail_before_any_work(dataset: Path, tmp_path: Path, micro_weights: str,
                                                              overrides: dict, message: str) -> None:
    kwargs = dict(cache_tokens=True, backbone="alt-micro", pretrained=micro_weights, size=SIZE, tome_r=1)
    with pytest.raises(ConfigError, match=message):
        decode_manifest(dataset / "manifest.csv", tmp_path / "out", DecodeSpec(**{**kwargs, **overrides}))
    assert not (tmp_path / "out").exists()
