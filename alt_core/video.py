"""Video decoding (decord, behind this one small interface), frame sampling and transforms."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alt_core.errors import ALTError


class VideoDecodeError(ALTError):
    """A video that cannot be decoded; the message names the file and the cause."""


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """FFmpeg and decord print to fd 2 from C; our own exception carries the cause instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _decord_errors() -> tuple[type[BaseException], ...]:
    import decord

    return (RuntimeError, decord.DECORDError)


def open_video(path: str | Path):
    """A decord VideoReader; missing, empty, truncated or non-video files raise VideoDecodeError."""
    from decord import VideoReader, cpu

    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file")
    try:
        with _native_stderr_silenced():
            reader = VideoReader(str(path), ctx=cpu(0), num_threads=1)
    except _decord_errors() as err:
        raise VideoDecodeError(f"{path}: cannot open as video ({_first_line(err)})") from err
    if len(reader) == 0:
        raise VideoDecodeError(f"{path}: video has no frames")
    return reader


def read_frames(reader, path: str | Path, indices: list[int]) -> np.ndarray:
    """Decode exactly the frames at `indices`: (T, H, W, 3) uint8."""
    try:
        with _native_stderr_silenced():
            frames = reader.get_batch(indices).asnumpy()
    except _decord_errors() as err:
        raise VideoDecodeError(f"{path}: decoding failed ({_first_line(err)})") from err
    if frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[-1] != 3:
        raise VideoDecodeError(f"{path}: decoded frames have shape {frames.shape}, expected ({len(indices)}, H, W, 3)")
    return frames


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def segment_indices(num_total: int, num_frames: int, offset: float) -> list[int]:
    """One frame from each of `num_frames` equal segments, at relative `offset` in [0, 1) of the segment."""
    seg = num_total / num_frames
    return [min(num_total - 1, int(seg * i + seg * offset)) for i in range(num_frames)]


def train_indices(num_total: int, num_frames: int, rng: np.random.Generator) -> list[int]:
    """TSN-style training sampling: a random frame in each segment."""
    seg = num_total / num_frames
    return [min(num_total - 1, int(seg * i + rng.uniform(0, seg))) for i in range(num_frames)]


def test_clip_indices(num_total: int, num_frames: int, num_clips: int) -> list[list[int]]:
    """`num_clips` temporal views, each one frame per segment, at evenly spread offsets."""
    return [segment_indices(num_total, num_frames, (c + 0.5) / num_clips) for c in range(num_clips)]


def resize_crops(frames: np.ndarray, size: int, crops: int = 1) -> torch.Tensor:
    """Resize the short side to `size`, then take `crops` square crops along the long side.

    frames (T, H, W, 3) uint8 -> (crops, T, 3, size, size) uint8. One crop is the centre; three
    are start, centre and end (the usual 3-crop test protocol).
    """
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    span_h, span_w = new_h - size, new_w - size
    positions = [0.5] if crops == 1 else np.linspace(0, 1, crops).tolist()
    out = []
    for p in positions:
        top, left = (round(span_h * p), round(span_w * 0.5)) if span_h > span_w else (round(span_h * 0.5),
                                                                                      round(span_w * p))
        out.append(x[:, :, top:top + size, left:left + size])
    return torch.stack(out)


def load_views(path: str | Path, num_frames: int, size: int, clips: int = 1, crops: int = 1) -> torch.Tensor:
    """Test-time views of one video: (clips * crops, T, 3, size, size) uint8."""
    reader = open_video(path)
    views = []
    for indices in test_clip_indices(len(reader), num_frames, clips):
        views.append(resize_crops(read_frames(reader, path, indices), size, crops))
    return torch.cat(views)
