import numpy as np
import pytest

from alt_core import video
from alt_core.synthetic.synth import render_clip, sample_clip_spec, write_mp4
from alt_core.video import (
    VideoDecodeError,
    load_views,
    open_video,
    read_frames,
    resize_crops,
    segment_indices,
    train_indices,
)


def test_segment_sampling_covers_the_video():
    assert segment_indices(16, 4, 0.5) == [2, 6, 10, 14]
    views = video.test_clip_indices(30, 5, 3)
    assert len(views) == 3 and all(len(v) == 5 for v in views)
    assert all(0 <= i < 30 for v in views for i in v)
    idx = train_indices(40, 8, np.random.default_rng(0))
    assert all(5 * k <= i < 5 * (k + 1) for k, i in enumerate(idx))
    assert segment_indices(3, 8, 0.5) == sorted(segment_indices(3, 8, 0.5))  # short videos repeat frames


def test_resize_and_crops_shapes():
    frames = np.zeros((4, 48, 96, 3), dtype=np.uint8)
    frames[:, :, :32] = 255  # left third white: the first of three crops sees it
    crops = resize_crops(frames, 32, crops=3)
    assert crops.shape == (3, 4, 3, 32, 32)
    assert crops[0].float().mean() > crops[2].float().mean()


def test_decode_reads_exactly_the_sampled_frames(tmp_path):
    clip = render_clip(sample_clip_spec("star spinning", seed=1, frames=12, size=64))
    write_mp4(tmp_path / "v.mp4", clip)
    reader = open_video(tmp_path / "v.mp4")
    assert len(reader) == 12
    frames = read_frames(reader, tmp_path / "v.mp4", [0, 5, 11])
    assert frames.shape == (3, 64, 64, 3)
    assert np.abs(frames.astype(int) - clip[[0, 5, 11]].astype(int)).mean() < 6  # lossy codec, same content
    assert load_views(tmp_path / "v.mp4", num_frames=4, size=32, clips=2, crops=3).shape == (6, 4, 3, 32, 32)


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 40])
def test_bad_files_raise_decode_error(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        reader = open_video(path)
        read_frames(reader, path, [0, 1])


def test_missing_file_raises_decode_error(tmp_path):
    with pytest.raises(VideoDecodeError, match="no such file"):
        open_video(tmp_path / "missing.mp4")
