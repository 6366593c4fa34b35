"""Video decoding (decord, behind this one small interface), frame sampling and transforms.

A video is a file path or, for uploads, bytes decoded from memory (nothing is written or opened by name).
Test-time loading probes the container first (PyAV) so that images, audio-only files and tiny frames are
refused with a clear message, and caps the decoded resolution at MAX_SCALE x the model's input size: a 4K
upload is decoded small, while videos at training-data sizes decode exactly as the decode stage did.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alt_core.errors import ALTError


class VideoDecodeError(ALTError):
    """A video that cannot be decoded; the message names the file and the cause."""


MAX_SCALE = 4  # decode at most this many times the model's input size (short side)
MIN_SIDE = 16  # smaller frames carry nothing a model can use
VideoSource = str | Path | bytes
_silenced = {"depth": 0, "saved": -1}
_silenced_lock = threading.Lock()


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """FFmpeg and decord print to fd 2 from C; our own exception carries the cause instead. Descriptor 2 is
    process-wide, so concurrent decoders (server threads) share one redirection, counted."""
    with _silenced_lock:
        if _silenced["depth"] == 0:
            sys.stderr.flush()
            _silenced["saved"] = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _silenced["depth"] += 1
    try:
        yield
    finally:
        with _silenced_lock:
            _silenced["depth"] -= 1
            if _silenced["depth"] == 0:
                os.dup2(_silenced["saved"], 2)
                os.close(_silenced["saved"])


def _decord_errors() -> tuple[type[BaseException], ...]:
    import decord

    return (RuntimeError, decord.DECORDError)


def _source(source: VideoSource, name: str | None) -> tuple[str, str | io.BytesIO]:
    """(name for messages, what decoders open) after the empty/missing checks."""
    if isinstance(source, bytes):
        name = name or "<upload>"
        if not source:
            raise VideoDecodeError(f"{name}: empty upload")
        return name, io.BytesIO(source)
    path = Path(source)
    if not path.is_file():
        raise VideoDecodeError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file")
    return name or str(path), str(path)


def probe_video(source: VideoSource, name: str | None = None) -> tuple[int, int]:
    """(width, height) of a container's first video stream, read from its headers (PyAV); images, audio-only
    files and frames under MIN_SIDE pixels raise VideoDecodeError."""
    import av

    name, handle = _source(source, name)
    try:
        with _native_stderr_silenced(), av.open(handle) as container:
            fmt = container.format.name
            if fmt.endswith("_pipe") or fmt in ("image2", "gif"):
                raise VideoDecodeError(f"{name}: an image ({fmt}), not a video")
            if not container.streams.video:
                raise VideoDecodeError(f"{name}: no video stream (audio only?)")
            width, height = container.streams.video[0].codec_context.width, container.streams.video[0].height
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"{name}: cannot open as video ({_first_line(err)})") from err
    if min(width, height) < MIN_SIDE:
        raise VideoDecodeError(f"{name}: frames of {width}x{height} are too small (at least {MIN_SIDE} pixels a side)")
    return width, height


def open_video(source: VideoSource, name: str | None = None, max_short_side: int | None = None):
    """A decord VideoReader over a path or bytes; missing, empty, truncated or non-video inputs raise
    VideoDecodeError. With `max_short_side`, the container is probed first and larger frames are decoded at
    that short side (FFmpeg scales while decoding)."""
    from decord import VideoReader, cpu

    size = {}
    if max_short_side:
        width, height = probe_video(source, name)
        scale = max_short_side / min(width, height)
        if scale < 1:
            size = {"width": max(MIN_SIDE, round(width * scale)), "height": max(MIN_SIDE, round(height * scale))}
    name, handle = _source(source, name)
    try:
        with _native_stderr_silenced():
            reader = VideoReader(handle, ctx=cpu(0), num_threads=1, **size)
    except _decord_errors() as err:
        raise VideoDecodeError(f"{name}: cannot open as video ({_first_line(err)})") from err
    if len(reader) == 0:
        raise VideoDecodeError(f"{name}: video has no frames")
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


def load_views(source: VideoSource, num_frames: int, size: int, clips: int = 1, crops: int = 1,
               name: str | None = None) -> torch.Tensor:
    """Test-time views of one video (a path or uploaded bytes): (clips * crops, T, 3, size, size) uint8, each
    frame decoded once however many views use it."""
    reader = open_video(source, name, max_short_side=MAX_SCALE * size)
    name = name or (str(source) if not isinstance(source, bytes) else "<upload>")
    return decode_clips(reader, name, test_clip_indices(len(reader), num_frames, clips), size, crops)


def decode_clips(reader, name: str, clips: list[list[int]], size: int, crops: int = 1) -> torch.Tensor:
    """Views of the given clips (frame indices each): (len(clips) * crops, T, 3, size, size) uint8, clip-major.
    Each frame is decoded once however many views use it."""
    wanted = sorted({i for clip in clips for i in clip})
    position = {frame: k for k, frame in enumerate(wanted)}
    cropped = resize_crops(read_frames(reader, name, wanted), size, crops)  # (crops, U, 3, S, S)
    return torch.cat([cropped[:, [position[i] for i in clip]] for clip in clips])
