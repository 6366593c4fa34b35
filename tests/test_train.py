"""Ray Train stage, MLflow tracking and evaluation on a small real SynthActions set (no mocks)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import ray
import torch

from alt_core.backbone import load_backbone
from alt_core.checkpoint import load_checkpoint, read_config
from alt_core.clips import ClipDataError, ClipFormat
from alt_core.config import ALTConfig, BackboneSpec, DecodeSpec, TrainConfig
from alt_core.corpus import CorpusError, build_corpus
from alt_core.errors import ALTError
from alt_core.manifest import read_manifest, video_id
from alt_core.synthetic.dataset import generate_dataset
from alt_core.synthetic.synth import split_classes
from pipelines import tracking
from pipelines.decode import decode_manifest
from pipelines.evaluate import evaluate
from pipelines.inputs import check_inputs, model_config
from pipelines.jobs import TrainJob
from pipelines.train import epoch_batches, train, training_datasets
from tests.helpers import write_weights

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]
SEEN = split_classes()[0][:4]
NOVEL = [c for c in split_classes()[1] if c.split()[0] in {s.split()[0] for s in SEEN}][:2]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, micro_backbone, micro_weights) -> dict:
    root = tmp_path_factory.mktemp("train")
    generate_dataset(root / "synth", seed=0, classes=SEEN + NOVEL, videos_per_class=5, frames=8, size=32,
                           workers=1, fewshot=(2,))
    corpus = build_corpus(micro_backbone, SEEN, ["labels", "builtin"])
    corpus.save(root / "corpus.parquet")
    spec = DecodeSpec(frames=4, clips=2, size=32, train_clips=1)
    decode_manifest(root / "synth" / "manifest.parquet", root / "pixels", spec, workers=1)
    decode_manifest(root / "synth" / "manifest.parquet", root / "tokens", workers=1,
                    spec=replace(spec, cache_tokens=True, backbone="alt-micro", pretrained=micro_weights, tome_r=1))
    return {"root": root, "corpus": str(root / "corpus.parquet"), "weights": micro_weights}


def job(ws: dict, data: str, out: Path, schedule: dict | None = None, **overrides) -> TrainJob:
    model = ALTConfig(backbone="alt-micro", pretrained=ws["weights"], width=32, heads=2, num_queries=4, depth=1)
    return TrainJob(data=str(ws["root"] / data), corpus=ws["corpus"], out=str(out), model=model,
                    train=TrainConfig(**dict(epochs=2, batch_size=4, lr=3e-3) | (schedule or {})), **overrides)


def test_train_tracks_checkpoints_and_evaluates(workspace):
    out = workspace["root"] / "run_tokens"
    summary = train(job(workspace, "tokens", out, labels=str(workspace["root"] / "synth" / "labels_seen.txt")))
    model = load_checkpoint(summary["checkpoint"])  # plain directory, no Ray needed
    assert model.labels == SEEN and model.config.tome_r == 1
    run = tracking.run_summary(summary["tracking_uri"], summary["run_id"])
    assert run["status"] == "FINISHED"
    assert len(run["history"]["train_loss"]) == 2 and "val_top1" in run["metrics"]
    assert run["history"]["lr"] == pytest.approx([3e-3, 1.5e-3])  # cosine decay from the peak, per epoch
    assert {"checkpoint/model.safetensors", "checkpoint/config.json"} <= set(run["checkpoint_artifacts"])
    assert summary["model_version"] >= 1
    history = [row["val_top1"] for row in summary["history"]]
    provenance = read_config(summary["checkpoint"])["provenance"]  # the kept checkpoint: the best validation epoch
    assert provenance["epoch"] == summary["best"]["epoch"] and history[provenance["epoch"] - 1] == max(history)
    report = evaluate(summary["checkpoint"], workspace["root"] / "tokens", splits=("test",))
    assert report["protocol"] == "supervised" and report["views_per_video"] == 2 and report["videos"] == 4
    assert 0.0 <= report["top1"] <= report["top5"] <= 1.0 and len(report["data_hash"]) == 16
    novel = workspace["root"] / "synth" / "labels_novel.txt"
    zero = evaluate(summary["checkpoint"], workspace["root"] / "tokens", labels=novel, splits=("novel",))
    assert zero["protocol"] == "zero-shot" and zero["labels"] == len(NOVEL) and zero["videos"] == 5 * len(NOVEL)


def test_same_seed_same_result_and_few_shot(workspace):
    # 8 few-shot clips make 2 batches of 4 a pass: a budget of 3 steps needs a second pass
    first = train(job(workspace, "tokens", workspace["root"] / "seed_a", {"shots": 2, "epochs": 1, "steps": 3}))
    second = train(job(workspace, "tokens", workspace["root"] / "seed_b", {"shots": 2, "epochs": 1, "steps": 3}))
    assert first["train_videos"] == 2 * len(SEEN)
    assert [row["train_steps"] for row in first["history"]] == [3]
    a, b = load_checkpoint(first["checkpoint"]), load_checkpoint(second["checkpoint"])
    for key, value in a.checkpoint_state().items():
        assert torch.equal(value, b.checkpoint_state()[key]), key
    report = evaluate(first["checkpoint"], workspace["root"] / "tokens")
    assert report["protocol"] == "few-shot-2" and report["seed"] == 0


def test_a_step_budget_is_spread_over_the_epochs_and_passes_as_often_as_needed():
    shard = ray.data.range(10)  # 3 batches of 4 a pass
    schedule = TrainConfig(epochs=3, steps=11, batch_size=4)
    counts = [len(list(epoch_batches(shard, schedule, epoch))) for epoch in range(3)]
    assert counts == [3, 3, 5]  # 11 // 3 per epoch, the remainder in the last
    every_pass = TrainConfig(epochs=3, batch_size=4)
    assert [len(list(epoch_batches(shard, every_pass, epoch))) for epoch in range(3)] == [3, 3, 3]


def test_few_shot_subsets_ignore_the_training_seed_and_follow_a_list(workspace):
    root = workspace["root"]
    listed = {video_id(row.path) for row in read_manifest(root / "synth" / "fewshot_2.csv")}
    subsets = []
    for schedule in ({"shots": 2, "seed": 0}, {"shots": 2, "seed": 7}, {"shots_file": str(root / "synth" /
                                                                                          "fewshot_2.csv")}):
        few_shot = job(workspace, "tokens", root / "unused", schedule)
        inputs = check_inputs(few_shot)
        subsets.append({row["video_id"] for row in training_datasets(few_shot, inputs)["train"].iter_rows()})
        assert inputs.train_videos == 2 * len(SEEN)
    assert subsets[0] == subsets[1] and subsets[2] == listed
    with pytest.raises(ALTError, match="not in the train split"):
        check_inputs(job(workspace, "tokens", root / "unused", {"shots_file": str(root / "synth" / "manifest.csv")}))


def test_existing_run_needs_resume_and_resume_continues_it(workspace):
    out = workspace["root"] / "run_tokens"
    with pytest.raises(ALTError, match="--resume"):
        train(job(workspace, "tokens", out))
    first = json.loads((out / "train.json").read_text())
    resumed = train(job(workspace, "tokens", out, {"epochs": 3}, resume=True,
                        labels=str(workspace["root"] / "synth" / "labels_seen.txt")))
    assert resumed["run_id"] == first["run_id"] and [row["epoch"] for row in resumed["history"]] == [1, 2, 3]
    run = tracking.run_summary(resumed["tracking_uri"], resumed["run_id"])
    assert [int(v) for v in run["history"]["resumed_from_epoch"]] == [0, 2]  # epoch 3 ran on the restored state


def test_tokens_or_corpus_of_other_weights_are_refused(workspace, tmp_path, micro_backbone):
    """Tokens and corpus name the weights they were made with (by digest): once the weights file changes,
    training on them fails with what to redo, instead of reading stale features."""
    weights = tmp_path / "w.safetensors"
    write_weights(weights, micro_backbone)
    corpus = build_corpus(load_backbone("alt-micro", pretrained=str(weights)), SEEN, ["labels"])
    fmt = ClipFormat("tokens", (4, 8, 32), BackboneSpec("alt-micro", str(weights)).id, 1)
    stale = job(workspace, "tokens", tmp_path / "run")
    stale = replace(stale, model=replace(stale.model, pretrained=str(weights)))
    assert model_config(stale, fmt, corpus).pretrained == str(weights.resolve())  # same weights: accepted
    write_weights(weights, micro_backbone, retrained=True)
    with pytest.raises(ClipDataError, match="decode the videos again"):
        model_config(stale, fmt, corpus)
    fresh = replace(fmt, backbone=BackboneSpec("alt-micro", str(weights)).id)  # re-decoded, corpus not rebuilt
    with pytest.raises(CorpusError, match="rebuild the corpus"):
        model_config(stale, fresh, corpus)


def test_asking_for_other_weights_than_the_tokens_were_cached_with_is_refused(workspace, tmp_path, micro_backbone):
    """`alt train --pretrained A` on tokens cached with weights B must not train on B's features silently; with
    no --backbone/--pretrained the tokens say which weights the run uses."""
    other = tmp_path / "other.safetensors"
    write_weights(other, micro_backbone, retrained=True)
    corpus = build_corpus(load_backbone("alt-micro", pretrained=workspace["weights"]), SEEN, ["labels"])
    fmt = ClipFormat("tokens", (4, 8, 32), BackboneSpec("alt-micro", workspace["weights"]).id, 1)
    asked = job(workspace, "tokens", tmp_path / "run")
    assert model_config(asked, fmt, corpus).pretrained == str(Path(workspace["weights"]).resolve())
    with pytest.raises(ClipDataError, match="were cached with alt-micro.*not the alt-micro.*drop --backbone"):
        model_config(replace(asked, model=replace(asked.model, pretrained=str(other))), fmt, corpus)
    defaults = replace(asked, model=replace(asked.model, backbone=ALTConfig().backbone, pretrained=None))
    assert model_config(defaults, fmt, corpus).backbone == "alt-micro"  # not asked: the tokens decide
