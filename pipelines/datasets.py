"""Clip shards as Ray datasets: the one place the stages turn `alt_core.clips` shards into Ray Data."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import ray
from ray.data.expressions import col

from alt_core.clips import existing_shards


def clip_dataset(data: str | Path, splits: Iterable[str], video_ids: set[str] | None = None) -> ray.data.Dataset:
    """A lazy Ray dataset of some splits' rows, optionally limited to some videos (few-shot)."""
    ds = ray.data.read_parquet([str(p.resolve()) for p in existing_shards(data)])
    ds = ds.filter(expr=col("split").is_in(list(splits)))
    if video_ids is not None:
        ds = ds.filter(expr=col("video_id").is_in(sorted(video_ids)))
    return ds
