"""`alt demo`: the whole lifecycle on the embedded default, small enough for a laptop.

SynthActions videos -> entity corpus (Ray Data) -> cached region tokens (Ray Data) -> a small search (Ray
Tune over Ray Train, tracked in MLflow) -> its best trial registered as `models:/alt@champion` ->
supervised and zero-shot evaluation -> the champion served (Ray Serve) -> one real HTTP request with a test
clip -> its labels, entities and explanation picture, and the web page's URL.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import time
import urllib.request
from pathlib import Path

from alt_core.config import DecodeSpec, TrainConfig
from alt_core.manifest import read_manifest
from alt_core.synthetic.dataset import generate_dataset
from alt_core.synthetic.synth import split_classes
from pipelines.console import ensure_ray
from pipelines.corpus import build_corpus_dataset
from pipelines.decode import decode_manifest
from pipelines.evaluate import evaluate
from pipelines.jobs import SearchOptions, TrainJob
from pipelines.serve import DEFAULT_CONFIG, deploy, serve_config, serve_until_ctrl_c, stop_app
from pipelines.tune import tune_search

logger = logging.getLogger(__name__)
DEMO_SPACE = Path(__file__).resolve().parents[1] / "tune_spaces" / "demo.yaml"
# Each trial's optimisation: 240 steps of 16 clips over the space's epochs (about 17 passes over the 14 x 8
# training videos' 2 clips each). Cached tokens make them cheap; a few dozen steps learn the shapes but not
# the motions (validation 0.55 after 28 steps of 32 clips). A budget this short learns at the higher rate of
# the search's grid (tune_spaces/protocol.yaml), not at the protocol's default of 12 full epochs.
DEMO_SCHEDULE = {"batch_size": 16, "steps": 240, "lr": 1e-3}


def demo_classes(shapes: int = 4, motions: int = 2) -> list[str]:
    """A few shapes with a few seen motions each, plus every novel class of those shapes (the zero-shot split):
    the classes differ in shape and in motion, as the full label set does."""
    seen, novel = split_classes()
    chosen_shapes = list(dict.fromkeys(label.split()[0] for label in seen))[:shapes]
    chosen = [label for shape in chosen_shapes for label in [s for s in seen if s.split()[0] == shape][:motions]]
    return chosen + [label for label in novel if label.split()[0] in chosen_shapes]


def run_demo(out: str | Path, videos_per_class: int = 24, seed: int = 0, port: int = 8000,
             keep_serving: bool = False) -> dict:
    """24 videos per class: 14 train, 5 validation and 5 test videos of each seen class (40 test clips), so the
    champion is right and its figures mean something; cached tokens make the extra videos cheap to train on."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stage in ("clips", "tune"):  # a demo decodes and searches afresh (a new alt-tiny must not meet old
        shutil.rmtree(out / stage, ignore_errors=True)  # tokens), and makes its registry anew
    start = time.time()
    data = out / "synth"
    synth = generate_dataset(data, seed=seed, classes=demo_classes(), videos_per_class=videos_per_class,
                                   frames=16, size=64, fewshot=())
    logger.info(f"synth: {synth['videos']} SynthActions videos ({synth['seen_classes']} seen, "
                f"{synth['novel_classes']} novel classes) in {data}")
    ensure_ray()
    corpus = build_corpus_dataset(data / "labels_seen.txt", ["labels", str(data / "entities.jsonl")],
                                  "alt-tiny", None, out / "corpus.parquet")
    decoded = decode_manifest(data / "manifest.parquet", out / "clips",
                              DecodeSpec(cache_tokens=True, backbone="alt-tiny", seed=seed))
    job = TrainJob(data=str(out / "clips"), corpus=str(out / "corpus.parquet"), out=str(out / "tune"),
                   labels=str(data / "labels_seen.txt"), train=TrainConfig(seed=seed, **DEMO_SCHEDULE))
    # FIFO: both trials run every epoch, side by side. ASHA's stops depend on which trial reaches a rung first,
    # and a demo rerun must crown the same champion and print the same figures.
    search = tune_search(job, SearchOptions(space=str(DEMO_SPACE), scheduler="fifo"))
    checkpoint = search["decision"]["checkpoint"]
    supervised = evaluate(checkpoint, out / "clips", splits=("test",), out=out / "eval_supervised.json")
    zero_shot = evaluate(checkpoint, out / "clips", labels=data / "labels_novel.txt", splits=("novel",),
                         out=out / "eval_zero_shot.json")
    tracking_uri = job.mlflow_uri()
    url = deploy(serve_config(DEFAULT_CONFIG, "models:/alt@champion", tracking_uri, port=port))
    logger.info(f"serve: models:/alt@champion (v{search['decision']['version']}) at {url}")
    summary: dict = {}
    try:
        video = next(row.path for row in read_manifest(data / "manifest.parquet") if row.split == "test")
        answer = request_prediction(url, Path(video), out / "explanation.png")
        summary = {"synth": synth["videos"], "corpus": corpus["content_hash"], "decode": decoded,
                   "search": {k: search[k] for k in ("search_id", "best", "decision", "trial_epochs")},
                   "checkpoint": checkpoint, "supervised": supervised, "zero_shot": zero_shot, "mlflow": tracking_uri,
                   "url": url, "request": {"video": video, **answer}, "seconds": round(time.time() - start, 1)}
        (out / "demo.json").write_text(json.dumps(summary, indent=1, default=str))
        logger.info(f"demo: done in {summary['seconds']} s; summary {out / 'demo.json'}, MLflow {tracking_uri}")
        if keep_serving:
            logger.info(f"demo: serving at {url} (web page {url}/) until Ctrl-C")
            serve_until_ctrl_c()
    except KeyboardInterrupt:  # during the request, before serving on
        logger.info("serve: stopping")
    finally:
        stop_app()
    return summary


def request_prediction(url: str, video: Path, picture: Path) -> dict:
    """POST one clip to the running server, as any client would; save its explanation picture."""
    request = urllib.request.Request(f"{url}/v1/predict?picture=true&top_k=3", data=video.read_bytes(),
                                     headers={"Content-Type": "video/mp4"}, method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        body = json.loads(response.read())
    picture.write_bytes(base64.b64decode(body.pop("picture").split(",", 1)[1]))
    ranked = "; ".join(f"{p['label']} {p['score']:.3f}" for p in body["predictions"])
    entities = ", ".join(f"{e['unit']} {e['contribution']:+.2f}" for e in body["entities"][:4])
    logger.info(f"request: POST {url}/v1/predict {video.name} -> {ranked}")
    logger.info(f"request: entities {entities}; explanation picture {picture}; web page {url}/")
    return {"predictions": body["predictions"], "entities": body["entities"], "picture": str(picture)}
