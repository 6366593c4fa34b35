"""Batch inference (`alt infer`): the same answers as `alt predict`, every input accounted for, resumable,
refusing to mix models or label sets in one output, and pinned to one model version while the alias moves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from alt_core.checkpoint import load_checkpoint, save_checkpoint
from alt_core.errors import ALTError
from alt_core.predict import predict_video
from alt_core.synthetic.synth import render_clip, sample_clip_spec, write_mp4
from pipelines import tracking
from pipelines.infer import QUARANTINE_FILE, infer, prediction_file, read_predictions
from pipelines.jobs import InferJob
from tests.helpers import LABELS, make_model

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> dict:
    """Twelve good clips and four bad inputs of different kinds, in one manifest."""
    root = tmp_path_factory.mktemp("archive")
    videos = root / "videos"
    videos.mkdir()
    good = []
    for i in range(12):
        label = LABELS[i % len(LABELS)]
        path = videos / f"clip{i:02d}.mp4"
        write_mp4(path, render_clip(sample_clip_spec(label, seed=i, frames=12, size=64)))
        good.append((path, label))
    truncated = videos / "truncated.mp4"
    truncated.write_bytes(good[0][0].read_bytes()[:300])
    text = videos / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    empty = videos / "empty.mp4"
    empty.write_bytes(b"")
    bad = [truncated, text, empty, videos / "missing.mp4"]
    rows = [(p, label) for p, label in good] + [(p, LABELS[0]) for p in bad]
    rows.insert(5, rows.pop())  # a bad input in the middle of a shard, not only at the end
    manifest = root / "manifest.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    return {"root": root, "manifest": manifest, "good": [str(p) for p, _ in good], "bad": [str(p) for p in bad],
            "order": [str(p) for p, _ in rows]}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, micro_backbone, micro_corpus) -> list[Path]:
    root = tmp_path_factory.mktemp("ckpt")
    out = []
    for seed in (0, 1):
        model = make_model(micro_backbone, micro_corpus)
        model.logit_scale.data += seed  # two distinguishable models
        out.append(save_checkpoint(model, root / f"ckpt{seed}"))
    return out


def test_infer_agrees_with_predict_and_accounts_for_every_input(archive, checkpoints, tmp_path):
    out = tmp_path / "predictions"
    summary = infer(InferJob(out=str(out), model=str(checkpoints[0]), manifest=str(archive["manifest"]), top_k=3,
                             clips=2, workers=2, batch_size=3, shard_size=5))
    assert summary["inputs"] == len(archive["order"]) == summary["predictions"] + summary["quarantined"]
    assert summary["predictions"] == len(archive["good"]) and summary["shards"] == 4
    quarantine = pq.read_table(str(out / QUARANTINE_FILE)).to_pylist()
    assert sorted(q["path"] for q in quarantine) == sorted(archive["bad"])
    assert all(q["stage"] == "decode" and q["error"] for q in quarantine)
    table = read_predictions(out).to_pylist()
    assert [r["path"] for r in table] == [p for p in archive["order"] if p in archive["good"]]  # input order
    model = load_checkpoint(checkpoints[0])
    for row in table:
        expected = predict_video(model, row["path"], top_k=3, clips=2)
        assert row["labels"] == expected.labels
        assert row["scores"] == pytest.approx(expected.scores, abs=1e-5)
        assert row["entities"] == expected.to_dict()["entities"]
        assert row["model_name"] == checkpoints[0].name and row["model_version"] is None
        assert row["label"] in LABELS and row["decode_ms"] > 0 and row["predict_ms"] > 0


def test_open_vocabulary_directory_input_and_refusals(archive, checkpoints, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("star spinning\ncircle growing\n")
    out = tmp_path / "open"
    job = InferJob(out=str(out), model=str(checkpoints[0]), videos=str(archive["root"] / "videos"),
                   labels=str(labels), top_k=5, explain=False)
    summary = infer(job)
    assert summary["inputs"] == len(archive["good"]) + 3  # the directory holds every file but the missing one
    rows = read_predictions(out).to_pylist()
    assert {label for r in rows for label in r["labels"]} <= {"star spinning", "circle growing"}
    assert all(len(r["labels"]) == 2 and r["entities"] is None and r["label"] is None for r in rows)
    other = tmp_path / "other.txt"
    other.write_text("star spinning\n")
    with pytest.raises(ALTError, match="label set"):
        infer(InferJob(**{**job.to_dict(), "labels": str(other)}))
    with pytest.raises(ALTError, match="model"):
        infer(InferJob(**{**job.to_dict(), "model": str(checkpoints[1])}))
    again = infer(job)  # the same command: nothing left to do, the same counts
    assert again["shards_written"] == 0 and again["predictions"] == summary["predictions"]


def test_resume_after_an_interrupted_run_writes_each_video_once(archive, checkpoints, tmp_path):
    out = tmp_path / "resumed"
    command = [str(Path(sys.executable).parent / "alt"), "infer", "--out", str(out), "--model", str(checkpoints[0]),
               "--manifest", str(archive["manifest"]), "--shard-size", "1", "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own Ray, as a user's run has
    first = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("predictions-*.parquet"))) < 3:
        assert first.poll() is None, first.stderr.read()
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # as a lost driver would stop: no cleanup
    first.wait()
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("predictions-*.parquet")}
    assert 3 <= len(written) < len(archive["order"]), "the run was not interrupted mid-way"
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("predictions-*.parquet") if p.name in written} == written
    paths = [r["path"] for r in read_predictions(out).to_pylist()]
    quarantined = [q["path"] for q in pq.read_table(str(out / QUARANTINE_FILE)).to_pylist()]
    assert sorted(paths + quarantined) == sorted(archive["order"])  # each input exactly once
    assert "infer:" in second.stderr and "already done" in second.stderr


def test_an_alias_moved_mid_run_does_not_mix_versions(archive, checkpoints, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    versions = []
    for checkpoint in checkpoints:
        run = client.create_run(tracking.experiment_id(uri, tmp_path / "artifacts"))
        client.log_artifacts(run.info.run_id, str(checkpoint), "checkpoint")
        versions.append(tracking.register_version(client, run.info.run_id, "checkpoint"))
    client.set_registered_model_alias("alt", "champion", str(versions[0]))
    out = tmp_path / "pinned"
    job = InferJob(out=str(out), model="models:/alt@champion", tracking_uri=uri, manifest=str(archive["manifest"]),
                   shard_size=1)
    moved = threading.Event()

    def move_alias_after_the_first_shard():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not prediction_file(out, 0).exists():
            time.sleep(0.02)
        client.set_registered_model_alias("alt", "champion", str(versions[1]))
        moved.set()

    mover = threading.Thread(target=move_alias_after_the_first_shard, daemon=True)
    mover.start()
    summary = infer(job)
    mover.join(timeout=10)
    assert moved.is_set() and summary["shards_written"] == len(archive["order"])
    rows = read_predictions(out).to_pylist()
    assert {(r["model_version"], r["model_alias"]) for r in rows} == {(versions[0], "champion")}
    assert summary["params"]["model"] == f"models:/alt/{versions[0]}"
    with pytest.raises(ALTError, match=f"models:/alt/{versions[0]}"):  # the alias now names another version
        infer(job)
