"""`alt demo`: the whole lifecycle on the embedded default, small enough for a laptop.

SynthActions videos -> entity corpus (Ray Data) -> cached region tokens (Ray Data) -> ALT training
(Ray Train, tracked in MLflow) -> supervised and zero-shot evaluation -> one prediction with its
aligned entities.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import ray

from alt_core.checkpoint import load_checkpoint
from alt_core.manifest import read_manifest
from alt_core.predict import predict_video
from alt_core.synth import generate_synth_actions, split_classes
from pipelines.corpus import build_corpus_dataset
from pipelines.decode import decode_manifest
from pipelines.evaluate import evaluate
from pipelines.train import TrainOptions, train


def demo_classes(num_seen: int = 8) -> list[str]:
    """A few seen classes plus every novel class that shares their shapes (the zero-shot split)."""
    seen, novel = split_classes()
    chosen = seen[:num_seen]
    shapes = {label.split()[0] for label in chosen}
    return chosen + [label for label in novel if label.split()[0] in shapes]


def run_demo(out: str | Path, videos_per_class: int = 6, epochs: int = 4, seed: int = 0, log=print) -> dict:
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "train", ignore_errors=True)  # a demo run trains afresh; data and corpus are reused
    start = time.time()
    data = out / "synth"
    log(f"[1/6] generating SynthActions into {data}")
    synth = generate_synth_actions(data, seed=seed, classes=demo_classes(), videos_per_class=videos_per_class,
                                   frames=16, size=64, fewshot=())
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    log("[2/6] building the entity corpus (Ray Data, CLIP text tower)")
    corpus = build_corpus_dataset(data / "labels_seen.txt", ["builtin", "labels", str(data / "entities.jsonl")],
                                  "alt-tiny", None, out / "corpus.parquet")
    log(f"      {corpus['entities']} entities, hash {corpus['content_hash']}")
    log("[3/6] decoding videos and caching frozen-backbone region tokens (Ray Data)")
    decoded = decode_manifest(data / "manifest.parquet", out / "clips", frames=8, clips=2, crops=1, size=64,
                              cache_tokens=True, backbone="alt-tiny", seed=seed, progress=False)
    log(f"      {decoded['videos_ok']} videos, {decoded['rows']} rows, {decoded['quarantined']} quarantined")
    log("[4/6] training ALT (Ray Train, MLflow tracking)")
    trained = train(TrainOptions(data=str(out / "clips"), corpus=str(out / "corpus.parquet"), out=str(out / "train"),
                                 labels=str(data / "labels_seen.txt"), epochs=epochs, seed=seed, resume=False))
    checkpoint = trained["checkpoint"]
    log("[5/6] evaluating: supervised (test split) and zero-shot (novel classes)")
    supervised = evaluate(checkpoint, out / "clips", splits=("test",), out=out / "eval_supervised.json")
    zero_shot = evaluate(checkpoint, out / "clips", labels=data / "labels_novel.txt", splits=("novel",),
                         out=out / "eval_zero_shot.json")
    log(f"      supervised top-1 {supervised['top1']:.3f}, zero-shot top-1 {zero_shot['top1']:.3f}")
    log("[6/6] predicting one test video")
    video = next(row.path for row in read_manifest(data / "manifest.parquet") if row.split == "test")
    prediction = predict_video(load_checkpoint(checkpoint), video, top_k=3)
    log(prediction.text())
    summary = {"synth": synth["videos"], "corpus": corpus["content_hash"], "decode": decoded,
               "checkpoint": checkpoint, "supervised": supervised, "zero_shot": zero_shot,
               "mlflow": trained["tracking_uri"], "seconds": round(time.time() - start, 1)}
    (out / "demo.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"done in {summary['seconds']} s; MLflow store {trained['tracking_uri']}")
    return summary
