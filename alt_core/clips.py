"""The decoded-clip format shared by the decode stage and training (DESIGN §4).

A clips directory holds Parquet shards `shard-*.parquet`, one row per (video, view):
  video_id, path, label, split, view, and either
  frames: uint8 bytes of shape (T, H, W, 3), or
  tokens: float16 bytes of shape (T, 1 + R, D) (CLS then regions, joint space) + sizes: float16 (T, R).
The shapes and the producing backbone live in each shard's metadata, so rows stay plain bytes
and any Parquet reader (Ray Data included) can stream them. `quarantine.parquet` beside the
shards lists every input that failed, with path, stage and error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from alt_core.model import FrameTokens

QUARANTINE_FILE = "quarantine.parquet"
CLIP_COLUMNS = ("video_id", "path", "label", "split", "view")


@dataclass
class ClipFormat:
    """Shapes and provenance of a clips directory (from shard metadata)."""

    kind: str  # "frames" | "tokens"
    shape: tuple[int, ...]  # frames: (T, H, W, 3); tokens: (T, 1 + R, D)
    backbone: str | None = None
    tome_r: int = 0

    def to_meta(self) -> dict[str, str]:
        return {"alt_clips": json.dumps({"kind": self.kind, "shape": list(self.shape), "backbone": self.backbone,
                                         "tome_r": self.tome_r})}

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> ClipFormat:
        meta = schema.metadata or {}
        if b"alt_clips" not in meta:
            raise ValueError("not an ALT clips shard: metadata 'alt_clips' is missing; write it with `alt decode`")
        raw = json.loads(meta[b"alt_clips"])
        return cls(raw["kind"], tuple(raw["shape"]), raw.get("backbone"), raw.get("tome_r", 0))


def clip_schema(fmt: ClipFormat) -> pa.Schema:
    fields = [pa.field(c, pa.int32() if c == "view" else pa.string()) for c in CLIP_COLUMNS]
    if fmt.kind == "frames":
        fields.append(pa.field("frames", pa.binary()))
    else:
        fields += [pa.field("tokens", pa.binary()), pa.field("sizes", pa.binary())]
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


def read_format(directory: str | Path) -> ClipFormat:
    shards = shard_paths(directory)
    if not shards:
        raise FileNotFoundError(f"no clip shards in {directory}; produce them with `alt decode`")
    return ClipFormat.from_schema(pq.read_schema(str(shards[0])))


def frames_from_bytes(values: list[bytes], fmt: ClipFormat) -> torch.Tensor:
    """-> uint8 (B, T, 3, H, W) for the model."""
    arr = np.stack([np.frombuffer(v, dtype=np.uint8).reshape(fmt.shape) for v in values])
    return torch.from_numpy(arr).permute(0, 1, 4, 2, 3).contiguous()


def tokens_from_bytes(tokens: list[bytes], sizes: list[bytes], fmt: ClipFormat) -> FrameTokens:
    t, n, d = fmt.shape
    tok = torch.from_numpy(np.stack([np.frombuffer(v, dtype=np.float16).reshape(t, n, d) for v in tokens]))
    siz = torch.from_numpy(np.stack([np.frombuffer(v, dtype=np.float16).reshape(t, n - 1) for v in sizes]))
    return FrameTokens(frame=tok[:, :, 0].float(), regions=tok[:, :, 1:].float(), sizes=siz.float())


def tokens_to_arrays(tokens: FrameTokens, item: int) -> tuple[np.ndarray, np.ndarray]:
    """One clip of `FrameTokens` -> float16 arrays (T, 1 + R, D) and (T, R) for a shard row."""
    joined = torch.cat([tokens.frame[item][:, None], tokens.regions[item]], dim=1)
    return joined.half().cpu().numpy(), tokens.sizes[item].half().cpu().numpy()


def read_quarantine(directory: str | Path) -> list[dict]:
    path = Path(directory) / QUARANTINE_FILE
    return pq.read_table(str(path)).to_pylist() if path.exists() else []
