"""The real-weights path, end to end: users bring their own CLIP weights (`--backbone ViT-B-32 --pretrained FILE`).

Every other test runs on the project's tiny backbones; this one runs each stage on an open_clip ViT-B-32 at 224 px
whose (random) weights come from a local file saved the way open_clip state dicts are distributed (`torch.save` of
the state dict): corpus build, token caching, training, evaluation, serving and batch inference. Accuracy is not
the point: every stage must take these settings and agree on the backbone id (name, file and weights digest).
Kept small (6 videos of 2 frames): a ViT-B-32 forward is ~3 images/s on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
import torch
from open_clip import create_model
from ray import serve

from alt_core.clips import read_format
from alt_core.config import ALTConfig, BackboneSpec, DecodeSpec, TrainConfig
from alt_core.manifest import read_manifest
from alt_core.synthetic.dataset import generate_dataset
from alt_core.synthetic.synth import split_classes
from pipelines.corpus import build_corpus_dataset
from pipelines.decode import decode_manifest
from pipelines.evaluate import evaluate
from pipelines.infer import infer, read_predictions
from pipelines.jobs import InferJob, TrainJob
from pipelines.serve import deploy, serve_config
from pipelines.train import train
from tests.helpers import free_port

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]
BACKBONE, FRAMES = "ViT-B-32", 2
CLASSES = split_classes()[0][:2]  # 3 videos each: one train, one val, one test
TOKEN = "real-weights-token"


@pytest.fixture(scope="module")
def run(tmp_path_factory, local_ray) -> dict:
    """Weights file, generated clips, corpus, cached tokens and a one-epoch model, all on ViT-B-32."""
    root = tmp_path_factory.mktemp("real_weights")
    torch.manual_seed(0)
    weights = root / "vit_b_32.pt"
    torch.save(create_model(BACKBONE, pretrained=None).state_dict(), weights)
    weights = str(weights)
    generate_dataset(root / "synth", seed=0, classes=CLASSES, videos_per_class=3, frames=8, size=64, workers=1,
                     fewshot=())
    manifest = root / "synth" / "manifest.parquet"
    corpus = build_corpus_dataset(root / "synth" / "labels_seen.txt", ["labels"], BACKBONE, weights,
                                  root / "corpus.parquet")
    decode_manifest(manifest, root / "tokens", workers=1,
                    spec=DecodeSpec(frames=FRAMES, clips=1, train_clips=1, size=224, cache_tokens=True,
                                    backbone=BACKBONE, pretrained=weights))
    model = ALTConfig(backbone=BACKBONE, pretrained=weights, width=32, heads=2, num_queries=4, depth=1)
    trained = train(TrainJob(data=str(root / "tokens"), corpus=corpus["out"], out=str(root / "run"), model=model,
                             train=TrainConfig(epochs=1, batch_size=2)))
    return {"root": root, "weights": weights, "manifest": manifest, "corpus": corpus, "tokens": root / "tokens",
            "checkpoint": trained["checkpoint"], "id": BackboneSpec(BACKBONE, weights).id}


def test_corpus_tokens_and_checkpoint_name_the_same_backbone(run):
    assert run["id"].startswith(f"{BACKBONE}:{run['weights']}@")  # the file and its digest, not just the name
    assert run["corpus"]["backbone"] == run["id"]
    assert pq.read_schema(run["corpus"]["out"]).metadata[b"backbone"].decode() == run["id"]
    fmt = read_format(run["tokens"])
    assert fmt.kind == "tokens" and fmt.backbone == run["id"] and fmt.shape[0] == FRAMES
    config = json.loads((Path(run["checkpoint"]) / "config.json").read_text())
    assert config["backbone_id"] == run["id"]
    assert (config["model"]["backbone"], config["model"]["pretrained"]) == (BACKBONE, run["weights"])


def test_evaluation_scores_every_test_video(run):
    report = evaluate(run["checkpoint"], run["tokens"], splits=("test",))
    test_videos = [row for row in read_manifest(run["manifest"]) if row.split == "test"]
    assert report["videos"] == len(test_videos) == len(CLASSES)
    assert 0.0 <= report["top1"] <= 1.0


def test_serve_answers_a_clip_with_the_checkpoint(run):
    config = serve_config(model=run["checkpoint"], host="127.0.0.1", port=free_port(),
                          env_vars={"ALT_SERVE_TOKEN": TOKEN})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        url = deploy(config)
        card = requests.get(f"{url}/v1/model", headers=auth, timeout=60).json()
        # the card names no backbone id; the input shape it reports is the checkpoint's ViT-B-32 at 224 px
        assert (card["image_size"], card["num_frames"], card["labels"]) == (224, FRAMES, sorted(CLASSES))
        clip = next(row.path for row in read_manifest(run["manifest"]) if row.split == "test")
        with open(clip, "rb") as f:
            answer = requests.post(f"{url}/v1/predict", data=f.read(), timeout=120,
                                   headers=auth | {"Content-Type": "video/mp4"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert {p["label"] for p in body["predictions"]} == set(CLASSES)
        assert body["model"]["name"] == card["name"]
    finally:
        serve.shutdown()


def test_batch_inference_labels_every_video(run, tmp_path):
    summary = infer(InferJob(out=str(tmp_path / "infer"), model=run["checkpoint"], manifest=str(run["manifest"])))
    videos = read_manifest(run["manifest"])
    rows = read_predictions(tmp_path / "infer").to_pylist()
    assert summary["predictions"] == len(rows) == len(videos) and summary["quarantined"] == 0
    assert sorted(r["path"] for r in rows) == sorted(v.path for v in videos)
    assert all(set(r["labels"]) == set(CLASSES) for r in rows)
