"""A node lost in the middle of a stage, on a simulated multi-node cluster (`ray.cluster_utils.Cluster`): a
one-CPU head and three one-CPU worker nodes. Each test removes the worker node that is doing the work while the
stage runs, checks what the stage promises (nothing lost, nothing twice; the same corpus; training resumed from
its checkpoint on the surviving capacity), and adds a fresh node back for the next test.

The node is a real raylet with its own worker processes; removing it kills them, as losing a machine would.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import ray
import torch
from ray.cluster_utils import Cluster

from alt_core.checkpoint import save_checkpoint
from alt_core.clips import read_quarantine
from alt_core.config import ALTConfig, DecodeSpec, TrainConfig
from alt_core.corpus import EntityCorpus
from alt_core.manifest import read_manifest, video_id
from alt_core.synthetic.dataset import generate_dataset
from alt_core.synthetic.synth import split_classes
from pipelines import tracking
from pipelines.corpus import build_corpus_dataset
from pipelines.decode import decode_manifest
from pipelines.infer import infer, read_predictions
from pipelines.jobs import InferJob, TrainJob
from pipelines.train import train
from tests.helpers import make_model

pytestmark = pytest.mark.ray
logger = logging.getLogger("alt.tests.node_loss")
WORKER_NODES = 3
SEEN = split_classes()[0][:4]


@pytest.fixture(scope="module")
def cluster(monkeypatch_module):
    if ray.is_initialized():  # a Ray left over by another module would hide the cluster
        ray.shutdown()
    tmp = tempfile.mkdtemp(prefix="altray", dir="/tmp")  # short: Ray's socket paths live under it
    monkeypatch_module.setenv("RAY_TMPDIR", tmp)
    sim = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(WORKER_NODES):
            sim.add_node(num_cpus=1)
        sim.wait_for_nodes()
        ray.init(address=sim.address, log_to_driver=False)
        yield sim
    finally:
        ray.shutdown()
        sim.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture
def full_cluster(cluster):
    """Three live worker nodes before the test; the removed one is replaced after it."""
    yield cluster
    while len(cluster.worker_nodes) < WORKER_NODES:
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()


def node_processes(node) -> list[psutil.Process]:
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    return raylet.children(recursive=True)


def node_running(cluster: Cluster, marker: str):
    """The worker node one of whose processes has `marker` in its name or command line (None: none yet)."""
    for node in list(cluster.worker_nodes):
        try:
            for process in node_processes(node):
                if marker in process.name() or marker in " ".join(process.cmdline()):
                    return node
        except psutil.Error:
            continue
    return None


def remove_when(cluster: Cluster, ready: Callable[[], object], log: list[str], what: str) -> threading.Thread:
    """In the background: once `ready()` names a node, remove that node and note it (with what was done)."""

    def run():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            node = ready()
            if node is not None:
                done = what()
                cluster.remove_node(node)
                log.append(f"removed node {node.node_id[:8]} ({done})")
                logger.warning(log[-1])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, seed=2, classes=SEEN, videos_per_class=10, frames=32, size=96, workers=1,
                           fewshot=())
    return root


def test_decode_survives_a_lost_node_and_accounts_for_every_video(full_cluster, synth, tmp_path):
    bad = synth / "manifest_bad.csv"  # one row whose file is missing: it must end in the quarantine
    bad.write_text((synth / "manifest.csv").read_text() + f"videos/missing.mp4,{SEEN[0]},test\n")
    out, total = tmp_path / "clips", len(read_manifest(bad))
    spec = DecodeSpec(frames=8, size=64, clips=2, crops=3, train_clips=2)
    log: list[str] = []

    def decoding_node():  # a node whose decoder has written a shard while others remain
        return node_running(full_cluster, "ShardDecoder") if list(out.glob("shard-*.parquet")) else None

    remover = remove_when(full_cluster, decoding_node, log,
                          lambda: f"{len(list(out.glob('shard-*.parquet')))} of {total} shards written")
    try:
        summary = decode_manifest(bad, out, spec, shard_size=1, workers=WORKER_NODES)
        outcome = "completed"
    except Exception as err:  # the stage may fail instead; then the same command must complete it
        outcome = f"failed ({type(err).__name__}); rerun"
        summary = decode_manifest(bad, out, spec, shard_size=1, workers=WORKER_NODES)
    remover.join(timeout=10)
    assert log, "the node was never removed: the stage finished first"
    logger.warning(f"decode: {outcome}: {summary['inputs']} inputs = {summary['videos_ok']} decoded + "
                   f"{summary['quarantined']} quarantined")
    assert len(full_cluster.worker_nodes) == WORKER_NODES - 1
    decoded = []
    for shard in sorted(out.glob("shard-*.parquet")):
        table = pq.read_table(str(shard), columns=["video_id", "view"]).to_pylist()
        decoded += [row["video_id"] for row in table if row["view"] == 0]
    quarantined = [video_id(row["path"]) for row in read_quarantine(out)]
    expected = [video_id(row.path) for row in read_manifest(bad)]
    assert len(decoded) + len(quarantined) == total == summary["inputs"]  # none lost
    assert sorted(decoded + quarantined) == sorted(expected)  # every id once: none twice, none foreign
    assert [Path(row["path"]).name for row in read_quarantine(out)] == ["missing.mp4"]


def test_corpus_rebuilt_after_a_lost_node_equals_an_undisturbed_build(full_cluster, micro_weights, tmp_path):
    entities = tmp_path / "entities.jsonl"  # enough entities that the embedding runs for a while
    entities.write_text("".join(f'{{"unit": "thing {i}", "description": "a small thing number {i}"}}\n'
                                for i in range(6000)))
    sources = ["builtin", str(entities)]
    undisturbed = build_corpus_dataset(None, sources, "alt-micro", micro_weights, tmp_path / "calm.parquet",
                                       batch_size=16, num_actors=WORKER_NODES)
    log: list[str] = []
    out = tmp_path / "disturbed.parquet"
    remover = remove_when(full_cluster, lambda: node_running(full_cluster, "EmbedActor"), log,
                          lambda: f"corpus file written: {out.exists()}")
    try:
        disturbed = build_corpus_dataset(None, sources, "alt-micro", micro_weights, out, batch_size=16,
                                         num_actors=WORKER_NODES)
        outcome = "completed"
    except Exception as err:
        outcome = f"failed ({type(err).__name__}); rerun"
        disturbed = build_corpus_dataset(None, sources, "alt-micro", micro_weights, out, batch_size=16,
                                         num_actors=WORKER_NODES)
    remover.join(timeout=10)
    assert log and "written: False" in log[0], log
    logger.warning(f"corpus: {outcome}: {disturbed['entities']} entities, hash {disturbed['content_hash']}")
    assert disturbed["content_hash"] == undisturbed["content_hash"]
    calm, rebuilt = EntityCorpus.load(tmp_path / "calm.parquet"), EntityCorpus.load(out)
    assert [e.unit for e in rebuilt.entities] == [e.unit for e in calm.entities]
    assert torch.equal(rebuilt.embeddings, calm.embeddings)  # the hash names the inputs; the vectors must match too


def test_training_resumes_from_its_checkpoint_when_a_workers_node_is_lost(full_cluster, synth, micro_weights,
                                                                         micro_backbone, tmp_path):
    from alt_core.corpus import build_corpus

    build_corpus(micro_backbone, SEEN, ["labels", "builtin"]).save(tmp_path / "corpus.parquet")
    spec = DecodeSpec(frames=4, clips=1, size=32, train_clips=1, cache_tokens=True, backbone="alt-micro",
                      pretrained=micro_weights, tome_r=1)
    decode_manifest(synth / "manifest.parquet", tmp_path / "tokens", spec, workers=2)
    out = tmp_path / "run"
    model = ALTConfig(backbone="alt-micro", pretrained=micro_weights, width=32, heads=2, num_queries=4, depth=1)
    job = TrainJob(data=str(tmp_path / "tokens"), corpus=str(tmp_path / "corpus.parquet"), out=str(out), model=model,
                   train=TrainConfig(epochs=12, batch_size=4, lr=3e-3), workers=2, max_failures=1)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summary=train(job)), daemon=True)
    thread.start()
    snapshot = out / "ray" / "train" / "checkpoint_manager_snapshot.json"
    log: list[str] = []

    def a_workers_node():  # once the controller registered a checkpoint: a worker node running a training worker
        if not (snapshot.is_file() and json.loads(snapshot.read_text()).get("latest_checkpoint_result")):
            return None
        pids = {int(p.read_text()) for p in (out / "workers").glob("rank*.pid")}
        return next((n for n in full_cluster.worker_nodes if pids & {p.pid for p in node_processes(n)}), None)

    remover = remove_when(full_cluster, a_workers_node, log, lambda: "after a checkpoint")
    thread.join(timeout=420)
    remover.join(timeout=10)
    assert log, "the node was never removed"
    assert "summary" in result, "training did not complete on the surviving nodes"
    run = tracking.run_summary(result["summary"]["tracking_uri"], result["summary"]["run_id"])
    resumed = [int(v) for v in run["history"]["resumed_from_epoch"]]
    logger.warning(f"train: {log[0]}; attempts resumed from epochs {sorted(set(resumed))}")
    assert resumed[0] == 0 and max(resumed) > 0  # the new worker group started from a saved epoch, not afresh
    assert run["status"] == "FINISHED" and result["summary"]["history"][-1]["epoch"] == 12


def test_infer_survives_a_lost_node_and_labels_every_video_once(full_cluster, synth, micro_backbone,
                                                               micro_corpus, tmp_path):
    bad = synth / "manifest_infer.csv"  # one row whose file is missing: it must end in the quarantine
    bad.write_text((synth / "manifest.csv").read_text() + f"videos/missing.mp4,{SEEN[0]},test\n")
    checkpoint = save_checkpoint(make_model(micro_backbone, micro_corpus), tmp_path / "ckpt")
    out, total = tmp_path / "predictions", len(read_manifest(bad))
    job = InferJob(out=str(out), model=str(checkpoint), manifest=str(bad), clips=2, shard_size=1,
                   workers=WORKER_NODES)
    log: list[str] = []

    def predicting_node():  # a node whose model replica has written a shard while others remain
        return node_running(full_cluster, "ShardPredictor") if list(out.glob("predictions-*.parquet")) else None

    remover = remove_when(full_cluster, predicting_node, log,
                          lambda: f"{len(list(out.glob('predictions-*.parquet')))} of {total} shards written")
    try:
        summary = infer(job)
        outcome = "completed"
    except Exception as err:  # the stage may fail instead; then the same command must complete it
        outcome = f"failed ({type(err).__name__}); rerun"
        summary = infer(job)
    remover.join(timeout=10)
    assert log, "the node was never removed: the stage finished first"
    logger.warning(f"infer: {outcome}: {summary['inputs']} inputs = {summary['predictions']} labelled + "
                   f"{summary['quarantined']} quarantined")
    labelled = [row["path"] for row in read_predictions(out).to_pylist()]
    quarantined = [row["path"] for row in pq.read_table(str(out / "quarantine.parquet")).to_pylist()]
    assert len(labelled) + len(quarantined) == total == summary["inputs"]  # none lost
    assert sorted(labelled + quarantined) == sorted(row.path for row in read_manifest(bad))  # none twice
    assert [Path(p).name for p in quarantined] == ["missing.mp4"]
