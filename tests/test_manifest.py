"""Manifests: CSV, Parquet and mmaction2 lists resolve to the same rows; bad inputs name file and line."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alt_core.clips import few_shot_ids, few_shot_validation_ids
from alt_core.manifest import ManifestError, ManifestRow, read_labels, read_manifest

LABELS = ["circle bouncing", "square spinning", "star growing"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "labels.txt").write_text("circle bouncing\n\nsquare spinning\n  star growing  \n\n")
    return tmp_path


def expected(root: Path) -> list[ManifestRow]:
    return [ManifestRow(str(root / "videos" / "a.mp4"), "circle bouncing", "train"),
            ManifestRow("/abs/b.mp4", "star growing", "test")]


def test_read_labels_skips_blank_lines_and_strips(data_dir: Path) -> None:
    assert read_labels(data_dir / "labels.txt") == LABELS


def test_read_labels_rejects_duplicates_missing_and_empty(tmp_path: Path) -> None:
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(ManifestError, match=r"dup.txt:3: duplicate class 'a'"):
        read_labels(tmp_path / "dup.txt")
    with pytest.raises(ManifestError, match="does not exist"):
        read_labels(tmp_path / "nope.txt")
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(ManifestError, match="no class names"):
        read_labels(tmp_path / "blank.txt")


def test_csv_and_parquet_give_the_same_rows(data_dir: Path) -> None:
    (data_dir / "m.csv").write_text("path,label,split\n"
                                    "videos/a.mp4,circle bouncing,train\n/abs/b.mp4,star growing,test\n")
    pq.write_table(pa.table({"path": ["videos/a.mp4", "/abs/b.mp4"], "label": ["circle bouncing", "star growing"],
                             "split": ["train", "test"]}), data_dir / "m.parquet")
    assert read_manifest(data_dir / "m.csv") == expected(data_dir)
    assert read_manifest(data_dir / "m.parquet") == expected(data_dir)


def test_relative_paths_resolve_against_the_manifest_not_the_cwd(data_dir: Path, monkeypatch) -> None:
    sub = data_dir / "lists"
    sub.mkdir()
    (sub / "m.csv").write_text("path,label\n../videos/a.mp4,x\n")
    monkeypatch.chdir("/")
    assert read_manifest(sub / "m.csv") == [ManifestRow(str(data_dir / "videos" / "a.mp4"), "x", "test")]


def test_missing_split_column_uses_default_split(data_dir: Path) -> None:
    (data_dir / "m.csv").write_text("path,label\na.mp4,x\n")
    assert read_manifest(data_dir / "m.csv")[0].split == "test"
    assert read_manifest(data_dir / "m.csv", default_split="train")[0].split == "train"


def test_mmaction2_list_with_sibling_labels_or_explicit_file(data_dir: Path) -> None:
    (data_dir / "train_list.txt").write_text("videos/a.mp4 0\n\n/abs/b.mp4   2\n")
    rows = read_manifest(data_dir / "train_list.txt", default_split="train")
    assert rows == [ManifestRow(str(data_dir / "videos" / "a.mp4"), "circle bouncing", "train"),
                    ManifestRow("/abs/b.mp4", "star growing", "train")]
    other = data_dir / "classes.txt"
    other.write_text("zero\none\ntwo\n")
    assert [r.label for r in read_manifest(data_dir / "train_list.txt", labels_file=other)] == ["zero", "two"]


@pytest.mark.parametrize("line, message", [
    ("videos/a.mp4 3", r"list.txt:2: label index 3 is outside 0..2"),
    ("videos/a.mp4 -1", r"list.txt:2: label index -1 is outside"),
    ("videos/a.mp4 two", r"list.txt:2: expected 'relative/path.mp4 label_index'"),
    ("videos/a.mp4 1 2", r"list.txt:2: expected"),
])
def test_mmaction2_bad_lines_name_file_and_line(data_dir: Path, line: str, message: str) -> None:
    (data_dir / "list.txt").write_text(f"videos/ok.mp4 1\n{line}\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(data_dir / "list.txt")


def test_mmaction2_without_labels_file_says_how_to_fix(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("a.mp4 0\n")
    with pytest.raises(ManifestError, match="needs a label set: put labels.txt beside it or pass labels_file"):
        read_manifest(tmp_path / "list.txt")


def test_missing_file_missing_columns_empty_values_and_no_rows(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest .*nope.csv does not exist"):
        read_manifest(tmp_path / "nope.csv")
    (tmp_path / "cols.csv").write_text("video,label\na.mp4,x\n")
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['path'\]"):
        read_manifest(tmp_path / "cols.csv")
    pq.write_table(pa.table({"path": ["a.mp4"]}), tmp_path / "cols.parquet")
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['label'\]"):
        read_manifest(tmp_path / "cols.parquet")
    (tmp_path / "empty_label.csv").write_text("path,label\na.mp4,x\nb.mp4,\n")
    with pytest.raises(ManifestError, match=r"empty_label.csv:3: empty path or label"):
        read_manifest(tmp_path / "empty_label.csv")
    (tmp_path / "header_only.csv").write_text("path,label\n")
    with pytest.raises(ManifestError, match="has no rows"):
        read_manifest(tmp_path / "header_only.csv")


def test_few_shot_runs_validate_on_as_many_videos_per_class_as_they_train_on():
    train_rows = [(f"train-{label}{i}", label) for label in "ab" for i in range(6)]
    val_rows = [(f"val-{label}{i}", label) for label in "ab" for i in range(5)]
    for shots in (1, 2, 4):
        chosen = few_shot_validation_ids(train_rows, few_shot_ids(train_rows, shots), val_rows)
        assert sorted(label for vid, label in val_rows if vid in chosen) == ["a"] * shots + ["b"] * shots
    assert len(few_shot_validation_ids(train_rows, {"train-a0", "train-a1", "train-b0"}, val_rows)) == 4


def test_a_filtered_scan_with_empty_batches_yields_only_the_rows_it_holds(tmp_path):
    """pyarrow's filtered `to_batches` yields empty batches for row groups with no match; scoring a split must
    skip them, not fail on them."""
    import numpy as np
    import pyarrow.dataset as pads

    from alt_core.clips import ClipFormat, clip_batches, write_shard

    fmt = ClipFormat("tokens", (2, 3, 4), "alt-micro", 1)
    rows = [{"video_id": f"{split}-{i}", "path": f"/v/{split}-{i}.mp4", "label": "a", "split": split, "view": 0,
             "tokens": np.zeros((2, 3, 4), np.float16), "sizes": np.ones((2, 2), np.float16),
             "positions": np.zeros((2, 2, 2), np.float16)} for split in ("train", "test") for i in range(3)]
    write_shard(tmp_path / "shard-00000.parquet", rows, fmt)
    scan = pads.dataset(str(tmp_path / "shard-00000.parquet")).to_batches(
        columns=["video_id", "label", *fmt.payload], batch_size=1, filter=pads.field("split") == "test")
    batches = [b.to_pydict() for b in scan]
    assert any(not b["video_id"] for b in batches)  # the case this guards: empty batches do come
    ids = [v for batch in clip_batches(iter(batches), fmt, {"a": 0}) for v in batch.video_ids]
    assert ids == ["test-0", "test-1", "test-2"]
