"""The `alt` command line, run as a user would (subprocess), on a generated clip."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from alt_core.checkpoint import save_checkpoint
from alt_core.synthetic.synth import render_clip, sample_clip_spec, write_mp4
from tests.helpers import make_model

ALT = [sys.executable, "-m", "pipelines.cli"]


def run_alt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ALT, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def checkpoint_and_clip(tmp_path_factory, micro_backbone, micro_corpus):
    root = tmp_path_factory.mktemp("cli")
    save_checkpoint(make_model(micro_backbone, micro_corpus), root / "ckpt")
    clip = root / "clip.mp4"
    write_mp4(clip, render_clip(sample_clip_spec("circle moving left", seed=3, frames=16, size=64)))
    return root / "ckpt", clip


def test_help_lists_the_verbs():
    result = run_alt("--help")
    assert result.returncode == 0
    for verb in ("flops", "predict", "decode", "train", "eval", "demo", "backbone", "data", "corpus"):
        assert verb in result.stdout, verb


def test_predict_prints_topk_and_entities_and_writes_the_picture(tmp_path, checkpoint_and_clip):
    ckpt, clip = checkpoint_and_clip
    picture = tmp_path / "pictures" / "why.png"
    result = run_alt("predict", str(clip), "--checkpoint", str(ckpt), "--top-k", "3", "--explain", str(picture))
    assert result.returncode == 0, result.stderr
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.width > 4 * 32  # a strip of the model's 4 frames
    assert f"explanation picture: {picture}" in result.stdout
    lines = result.stdout.splitlines()
    ranked = [line for line in lines if line.strip()[:2] in {"1.", "2.", "3."}]
    assert len(ranked) == 3
    assert "aligned entities" in result.stdout
    assert any(line.strip().startswith("- ") and "frames [" in line for line in lines)


def test_predict_on_text_file_is_one_clear_error(tmp_path, checkpoint_and_clip):
    ckpt, _ = checkpoint_and_clip
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    result = run_alt("predict", str(fake), "--checkpoint", str(ckpt))
    assert result.returncode != 0
    err = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and "notes.mp4" in err[0], result.stderr
    assert "Traceback" not in result.stderr


def test_explain_to_a_non_png_path_is_one_clear_error(tmp_path, checkpoint_and_clip):
    ckpt, clip = checkpoint_and_clip
    result = run_alt("predict", str(clip), "--checkpoint", str(ckpt), "--explain", str(tmp_path / "why.jpg"))
    assert result.returncode == 2 and result.stderr.startswith("error: --explain") and ".png" in result.stderr


def test_missing_checkpoint_is_one_clear_error(tmp_path, checkpoint_and_clip):
    _, clip = checkpoint_and_clip
    (tmp_path / "nope").mkdir()
    result = run_alt("predict", str(clip), "--checkpoint", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "model.safetensors is missing" in result.stderr


def test_flops_command_reports_vit_b16_at_70_gflops_for_two_frames():
    result = run_alt("flops", "--backbone", "ViT-B-16", "--frames", "2", "--views", "1")  # 2 frames: 8 cost 4x
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("backbone "))
    gflops = float(row.split()[1])
    assert abs(gflops - 70.2) / 70.2 < 0.01, row  # 35.1 a frame (tests/test_flops.py), 281 for 8
    for part in ("alignment", "adapter", "total"):
        assert any(line.startswith(part) for line in result.stdout.splitlines())


@pytest.mark.parametrize(("args", "message"), [
    (("flops", "--width", "30", "--heads", "4"), "width 30 is not divisible by heads 4"),
    (("flops", "--adapter", "lstm"), "unknown adapter 'lstm'"),
    (("decode", "--manifest", "/nonexistent/m.csv", "--out", "/tmp/x", "--frames", "0"), "frames must be >= 1"),
    (("eval", "--checkpoint", "/nonexistent/ckpt", "--data", "/tmp"), "/nonexistent/ckpt: no such directory"),
])
def test_settings_errors_are_one_line_from_the_dataclass(args, message):
    result = run_alt(*args)
    assert result.returncode == 2, result.stderr
    err = [line for line in result.stderr.splitlines() if line.strip()]
    assert err == [f"error: {message}"] or (len(err) == 1 and message in err[0]), result.stderr


def test_settings_defaults_come_from_the_dataclasses():
    from alt_core.config import FEW_SHOT_SCHEDULE, ALTConfig, TrainConfig

    help_text = " ".join(run_alt("train", "--help").stdout.replace("│", " ").split())  # rich draws a box
    for name, value in (("--num-queries", ALTConfig.num_queries), ("--depth", ALTConfig.depth),
                        ("--width", ALTConfig.width)):
        assert f"{name}" in help_text and f"[default: {value}]" in help_text, name
    for name in ("epochs", "lr"):  # defaults that depend on the protocol: the help states both
        assert f"default {getattr(TrainConfig, name):g}, few-shot {FEW_SHOT_SCHEDULE[name]:g}" in help_text, name
    assert f"few-shot {FEW_SHOT_SCHEDULE['steps']}" in help_text
    assert "--tome-r" not in help_text  # training reads ToMe r and the frame count from the decoded clips


def test_the_schedule_defaults_are_alts_searched_values_for_each_protocol():
    from alt_core.config import FEW_SHOT_SCHEDULE, TrainConfig
    from bench.results import FEW_SHOT_EPOCHS, RESULTS

    unset = dict.fromkeys(FEW_SHOT_SCHEDULE)  # what the CLI passes for options left out
    supervised, few_shot = TrainConfig.for_protocol(**unset), TrainConfig.for_protocol(**unset, shots_file="k.csv")
    assert supervised == TrainConfig()
    assert TrainConfig.for_protocol(**unset, shots=4).steps == FEW_SHOT_SCHEDULE["steps"]
    assert {k: getattr(few_shot, k) for k in FEW_SHOT_SCHEDULE} == FEW_SHOT_SCHEDULE
    assert TrainConfig.for_protocol(**unset | {"lr": 0.01}, shots=2).lr == 0.01  # given explicitly: it wins
    for protocol, config in (("supervised", supervised), ("few-shot", few_shot)):  # bench/results.py's search
        chosen = json.loads((RESULTS / "tuning" / f"alt-{protocol}.json").read_text())["chosen"]
        chosen |= {"epochs": FEW_SHOT_EPOCHS} if protocol == "few-shot" else {}
        assert {k: getattr(config, k) for k in chosen} == chosen, protocol
