"""Clip shards: the format the decode stage writes, and every way of reading it (splits, few-shot
subsets, data hash, batches for the model). Train, evaluate, tune and serve read shards through here.

A clips directory holds Parquet shards `shard-*.parquet`, one row per (video, view):
  video_id, path, label, split, view, and either
  frames: uint8 bytes of shape (T, H, W, 3), or
  tokens: float16 bytes of shape (T, 1 + R, D) (CLS then regions, joint space) + sizes: float16 (T, R)
  + positions: float16 (T, R, 2), the regions' centroids (x, y) in [0, 1].
The shapes, the producing backbone and the format version live in each shard's metadata, so rows stay plain bytes
and any Parquet reader (Ray Data included) can stream them. `quarantine.parquet` beside the
shards lists every input that failed, with path, stage and error.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch

from alt_core.errors import ALTError
from alt_core.tome import FrameTokens


class ClipDataError(ALTError):
    """A clips directory that cannot be used as asked; the message says what to decode or pass."""

QUARANTINE_FILE = "quarantine.parquet"
CLIP_COLUMNS = ("video_id", "path", "label", "split", "view")
PAYLOAD_COLUMNS = {"frames": ("frames",), "tokens": ("tokens", "sizes", "positions")}
# 2: token shards carry region positions. Token shards of an older version are refused (they lack what the
# adapter reads); frame shards of any version read the same.
FORMAT_VERSION = 2


@dataclass
class ClipFormat:
    """Shapes and provenance of a clips directory (from shard metadata)."""

    kind: str  # "frames" | "tokens"
    shape: tuple[int, ...]  # frames: (T, H, W, 3); tokens: (T, 1 + R, D)
    backbone: str | None = None
    tome_r: int = 0

    @property
    def payload(self) -> tuple[str, ...]:
        """The columns that hold a row's frames or tokens."""
        return PAYLOAD_COLUMNS[self.kind]

    def to_meta(self) -> dict[str, str]:
        return {"alt_clips": json.dumps({"kind": self.kind, "shape": list(self.shape), "backbone": self.backbone,
                                         "tome_r": self.tome_r, "version": FORMAT_VERSION})}

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> ClipFormat:
        meta = schema.metadata or {}
        if b"alt_clips" not in meta:
            raise ClipDataError("not an ALT clips shard: metadata 'alt_clips' is missing; write it with `alt decode`")
        raw = json.loads(meta[b"alt_clips"])
        version = raw.get("version", 1)
        if raw["kind"] == "tokens" and version < FORMAT_VERSION:
            raise ClipDataError(f"these tokens were cached in clip format {version}, which has no region positions "
                                f"(format {FORMAT_VERSION} has); decode the videos again with `alt decode "
                                "--cache-tokens` into a new --out directory")
        return cls(raw["kind"], tuple(raw["shape"]), raw.get("backbone"), raw.get("tome_r", 0))


def clip_schema(fmt: ClipFormat) -> pa.Schema:
    fields = [pa.field(c, pa.int32() if c == "view" else pa.string()) for c in CLIP_COLUMNS]
    fields += [pa.field(c, pa.binary()) for c in fmt.payload]
    return pa.schema(fields, metadata=fmt.to_meta())


def write_shard(path: str | Path, rows: list[dict], fmt: ClipFormat) -> None:
    """rows: dicts with CLIP_COLUMNS and numpy arrays under frames, or tokens + sizes."""
    schema = clip_schema(fmt)
    columns = {}
    for field in schema:
        values = [r[field.name] for r in rows]
        if field.type == pa.binary():
            values = [np.ascontiguousarray(v).tobytes() for v in values]
        columns[field.name] = pa.array(values, type=field.type)
    tmp = Path(str(path) + ".tmp")
    pq.write_table(pa.table(columns, schema=schema), str(tmp))
    tmp.replace(path)  # a shard exists whole or not at all, so resume can trust it


def shard_paths(directory: str | Path) -> list[Path]:
    return sorted(Path(directory).glob("shard-*.parquet"))


def existing_shards(directory: str | Path) -> list[Path]:
    """The shard files of a clips directory; none is a user error."""
    shards = shard_paths(directory)
    if not shards:
        raise ClipDataError(f"no clip shards in {directory}; produce them with `alt decode`")
    return shards


def read_format(directory: str | Path) -> ClipFormat:
    first = existing_shards(directory)[0]
    try:
        return ClipFormat.from_schema(pq.read_schema(str(first)))
    except pa.ArrowException as err:
        raise ClipDataError(f"{first} is not a readable clip shard ({err}); decode the videos again") from err


def _split_table(directory: str | Path, splits: Iterable[str], columns: list[str]) -> pa.Table:
    """Some columns of the rows of some splits, read from the shards without their payload."""
    try:
        dataset = pads.dataset([str(p) for p in existing_shards(directory)], format="parquet")
        return dataset.to_table(columns=columns, filter=pads.field("split").isin(list(splits)))
    except pa.ArrowException as err:
        raise ClipDataError(f"the clip shards in {directory} cannot be read ({err}); decode the videos again") \
            from err


def split_rows(directory: str | Path, split: str) -> list[tuple[str, str]]:
    """(video_id, label) of every row of one split."""
    table = _split_table(directory, [split], ["video_id", "label"])
    return list(zip(table["video_id"].to_pylist(), table["label"].to_pylist(), strict=True))


def data_hash(directory: str | Path, splits: Iterable[str]) -> str:
    """Identity of the rows of some splits: video ids, labels and views (stable across machines), so results
    on "the same validation data" can be checked to be on the same data."""
    table = _split_table(directory, splits, ["video_id", "label", "view"])
    rows = sorted(zip(*(table[c].to_pylist() for c in ("video_id", "label", "view")), strict=True))
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def few_shot_ids(video_labels: Iterable[tuple[str, str]], shots: int) -> set[str]:
    """K videos per class, ranked by a hash of the video id: the same subset whatever the training seed, on
    every machine, and nested (the 2-shot videos are among the 4-shot ones)."""
    by_class: dict[str, list[str]] = defaultdict(list)
    for vid, label in sorted(set(video_labels)):
        by_class[label].append(vid)
    chosen = set()
    for vids in by_class.values():
        ranked = sorted(vids, key=lambda v: hashlib.sha1(v.encode()).hexdigest())
        chosen.update(ranked[:shots])
    return chosen


def few_shot_validation_ids(train_rows: Iterable[tuple[str, str]], train_ids: set[str],
                            val_rows: Iterable[tuple[str, str]]) -> set[str]:
    """The validation videos of a few-shot run: as many per class as its training set has (the most of any
    class), so its best epoch is chosen with no more labels than it trains on (`few_shot_ids` order)."""
    shots = max(Counter(label for vid, label in set(train_rows) if vid in train_ids).values())
    return few_shot_ids(val_rows, shots)


def frames_from_bytes(values: list[bytes], fmt: ClipFormat) -> torch.Tensor:
    """-> uint8 (B, T, 3, H, W) for the model."""
    arr = np.stack([np.frombuffer(v, dtype=np.uint8).reshape(fmt.shape) for v in values])
    return torch.from_numpy(arr).permute(0, 1, 4, 2, 3).contiguous()


def tokens_from_columns(columns: dict, fmt: ClipFormat) -> FrameTokens:
    """The token payload columns of some rows (lists of bytes) -> float32 `FrameTokens`."""
    t, n, d = fmt.shape

    def stack(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.frombuffer(v, dtype=np.float16).reshape(shape)
                                          for v in columns[name]])).float()

    tok = stack("tokens", (t, n, d))
    return FrameTokens(frame=tok[:, :, 0], regions=tok[:, :, 1:], sizes=stack("sizes", (t, n - 1)),
                       positions=stack("positions", (t, n - 1, 2)))


def tokens_to_arrays(tokens: FrameTokens, item: int) -> dict[str, np.ndarray]:
    """One clip of `FrameTokens` -> the float16 payload of a shard row: tokens (T, 1 + R, D), sizes (T, R),
    positions (T, R, 2)."""
    joined = torch.cat([tokens.frame[item][:, None], tokens.regions[item]], dim=1)
    return {"tokens": joined.half().cpu().numpy(), "sizes": tokens.sizes[item].half().cpu().numpy(),
            "positions": tokens.positions[item].half().cpu().numpy()}


def read_quarantine(directory: str | Path) -> list[dict]:
    path = Path(directory) / QUARANTINE_FILE
    return pq.read_table(str(path)).to_pylist() if path.exists() else []


@dataclass
class ClipBatch:
    """A batch as the model takes it: pixels or cached tokens, plus targets and ids."""

    targets: torch.Tensor  # (B,) class index
    video_ids: list[str]
    pixels: torch.Tensor | None = None  # (B, T, 3, H, W) uint8
    tokens: FrameTokens | None = None

    def to(self, device: torch.device | str) -> ClipBatch:
        tokens = self.tokens.to(device) if self.tokens is not None else None
        pixels = self.pixels.to(device) if self.pixels is not None else None
        return ClipBatch(self.targets.to(device), self.video_ids, pixels, tokens)


def to_clip_batch(columns: dict, fmt: ClipFormat, label_index: dict[str, int]) -> ClipBatch:
    """Columns of a shard batch (lists/arrays of values) -> a ClipBatch; labels outside the set raise."""
    missing = sorted({str(label) for label in columns["label"]} - set(label_index))
    if missing:
        raise ClipDataError(f"labels {missing[:5]} are not in the label set; pass the matching --labels file")
    targets = torch.tensor([label_index[str(label)] for label in columns["label"]])
    ids = [str(v) for v in columns["video_id"]]
    if fmt.kind == "frames":
        return ClipBatch(targets, ids, pixels=frames_from_bytes(list(columns["frames"]), fmt))
    return ClipBatch(targets, ids, tokens=tokens_from_columns(columns, fmt))


def clip_batches(batches: Iterator[dict], fmt: ClipFormat, label_index: dict[str, int]) -> Iterator[ClipBatch]:
    """Shard batches -> ClipBatches; empty ones (a filtered Parquet scan yields them) are skipped."""
    for columns in batches:
        if len(columns["video_id"]):
            yield to_clip_batch(columns, fmt, label_index)
