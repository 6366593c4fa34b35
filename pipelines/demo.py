"""`alt demo`: the whole lifecycle on the embedded default, small enough for a laptop.

SynthActions videos -> entity corpus (Ray Data) -> cached region tokens (Ray Data) -> ALT training
(Ray Train, tracked in MLflow) -> supervised and zero-shot evaluation -> one prediction with its
aligned entities.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from alt_core.checkpoint import load_checkpoint
from alt_core.config import DecodeSpec, TrainConfig
from alt_core.manifest import read_manifest
from alt_core.predict import predict_video
from alt_core.synthetic.synth import generate_synth_actions, split_classes
from pipelines.console import ensure_ray
from pipelines.corpus import build_corpus_dataset
from pipelines.decode import decode_manifest
from pipelines.evaluate import evaluate
from pipelines.train import TrainJob, train

logger = logging.getLogger(__name__)


def demo_classes(num_seen: int = 8) -> list[str]:
    """A few seen classes plus every novel class that shares their shapes (the zero-shot split)."""
    seen, novel = split_classes()
    chosen = seen[:num_seen]
    shapes = {label.split()[0] for label in chosen}
    return chosen + [label for label in novel if label.split()[0] in shapes]


def run_demo(out: str | Path, videos_per_class: int = 6, epochs: int = 4, seed: int = 0) -> dict:
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "train", ignore_errors=True)  # a demo run trains afresh; data and corpus are reused
    start = time.time()
    data = out / "synth"
    synth = generate_synth_actions(data, seed=seed, classes=demo_classes(), videos_per_class=videos_per_class,
                                   frames=16, size=64, fewshot=())
    logger.info(f"synth: {synth['videos']} SynthActions videos ({synth['seen_classes']} seen, "
                f"{synth['novel_classes']} novel classes) in {data}")
    ensure_ray()
    corpus = build_corpus_dataset(data / "labels_seen.txt", ["labels", str(data / "entities.jsonl")],
                                  "alt-tiny", None, out / "corpus.parquet")
    decoded = decode_manifest(data / "manifest.parquet", out / "clips",
                              DecodeSpec(cache_tokens=True, backbone="alt-tiny", seed=seed))
    trained = train(TrainJob(data=str(out / "clips"), corpus=str(out / "corpus.parquet"), out=str(out / "train"),
                             labels=str(data / "labels_seen.txt"), train=TrainConfig(epochs=epochs, seed=seed)))
    checkpoint = trained["checkpoint"]
    supervised = evaluate(checkpoint, out / "clips", splits=("test",), out=out / "eval_supervised.json")
    zero_shot = evaluate(checkpoint, out / "clips", labels=data / "labels_novel.txt", splits=("novel",),
                         out=out / "eval_zero_shot.json")
    video = next(row.path for row in read_manifest(data / "manifest.parquet") if row.split == "test")
    prediction = predict_video(load_checkpoint(checkpoint), video, top_k=3)
    logger.info(f"predict: {prediction.text()}")
    summary = {"synth": synth["videos"], "corpus": corpus["content_hash"], "decode": decoded,
               "checkpoint": checkpoint, "supervised": supervised, "zero_shot": zero_shot,
               "mlflow": trained["tracking_uri"], "seconds": round(time.time() - start, 1)}
    (out / "demo.json").write_text(json.dumps(summary, indent=1, default=str))
    logger.info(f"demo: done in {summary['seconds']} s; summary {out / 'demo.json'}, MLflow {trained['tracking_uri']}")
    return summary
