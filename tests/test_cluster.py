"""Both Ray Data stages beyond one local node: a two-node cluster, and a job submitted to a `ray start` head.

Each test isolates its Ray from other Ray users of this machine: the two-node cluster records its
address under a private RAY_TMPDIR (not /tmp/ray, where a bare `ray.init()` elsewhere would find it),
and the `ray start` head runs in its own process group and temp dir and is stopped by killing that
group — `ray stop` would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.job_submission import JobStatus, JobSubmissionClient

from alt_core.clips import read_quarantine
from alt_core.config import DecodeSpec
from alt_core.corpus import EntityCorpus
from alt_core.synthetic.dataset import generate_dataset
from alt_core.synthetic.synth import all_classes
from pipelines.corpus import build_corpus_dataset
from pipelines.decode import decode_manifest
from tests.helpers import free_port

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
CLASSES = all_classes()[:2]
SPEC_ARGS = {"frames": 4, "size": 32, "clips": 1, "train_clips": 1}
SPEC = DecodeSpec(**SPEC_ARGS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """4 small videos plus a row whose file is missing; returns the manifest."""
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, seed=1, classes=CLASSES, videos_per_class=2, frames=8, size=32, workers=1,
                           fewshot=())
    manifest = root / "manifest_missing.csv"
    manifest.write_text((root / "manifest.csv").read_text() + f"videos/missing.mp4,{CLASSES[0]},test\n")
    return manifest


@pytest.fixture
def private_ray_tmp(monkeypatch):
    if ray.is_initialized():  # a Ray left over by another module would hide the cluster
        ray.shutdown()
    tmp = tempfile.mkdtemp(prefix="altray", dir="/tmp")  # short: Ray's socket paths live under it
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def check_decoded(out: Path, summary: dict) -> None:
    assert (summary["inputs"], summary["videos_ok"], summary["quarantined"]) == (5, 4, 1)
    assert summary["rows"] == 4  # one view per video (train: one clip; others: 1 clip x 1 crop)
    assert json.loads((out / "decode.json").read_text())["rows"] == 4
    assert [Path(q["path"]).name for q in read_quarantine(out)] == ["missing.mp4"]


def test_both_stages_on_a_two_node_cluster(dataset: Path, tmp_path: Path, micro_weights: str,
                                           private_ray_tmp: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        assert sum(node["Alive"] for node in ray.nodes()) == 2
        # pools of 2 one-CPU actors on two one-CPU nodes: one actor per node
        corpus = build_corpus_dataset(None, ["builtin"], "alt-micro", micro_weights, tmp_path / "corpus.parquet",
                                      batch_size=8, num_actors=2)
        assert not corpus["skipped"] and len(EntityCorpus.load(tmp_path / "corpus.parquet")) == corpus["entities"]
        summary = decode_manifest(dataset, tmp_path / "clips", SPEC, shard_size=2, workers=2)
        check_decoded(tmp_path / "clips", summary)
        assert summary["shards_written"] == 3
    finally:
        ray.shutdown()
        cluster.shutdown()


def stop_group(pgid: int, grace_s: float = 10.0) -> None:
    """SIGTERM the head's process group, then SIGKILL whatever is left after the grace period."""
    try:
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            time.sleep(0.5)
            os.killpg(pgid, 0)  # raises once the group is empty
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_decode_as_a_submitted_job(dataset: Path, tmp_path: Path, private_ray_tmp: str) -> None:
    dashboard = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray_cli, "start", "--head", f"--port={free_port()}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         f"--temp-dir={private_ray_tmp}", "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = head.communicate(timeout=180)
        assert head.returncode == 0, log[-3000:]
        client = JobSubmissionClient(f"http://127.0.0.1:{dashboard}")
        out = tmp_path / "clips"
        script = ("import json; from alt_core.config import DecodeSpec; from pipelines.decode import decode_manifest; "
                  f"spec = DecodeSpec(**{SPEC_ARGS!r}); "
                  f"print('SUMMARY', json.dumps(decode_manifest({str(dataset)!r}, {str(out)!r}, spec, shard_size=2, "
                  "workers=1)))")
        job = client.submit_job(entrypoint=f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} "
                                           f"-c {shlex.quote(script)}")
        deadline = time.monotonic() + 240
        while not (status := client.get_job_status(job)).is_terminal():
            if time.monotonic() > deadline:
                client.stop_job(job)
                pytest.fail(f"job {job} still {status} after 240 s:\n{client.get_job_logs(job)[-3000:]}")
            time.sleep(1)
        logs = client.get_job_logs(job)
        assert status == JobStatus.SUCCEEDED, logs[-3000:]
        summary = json.loads(next(line for line in logs.splitlines() if line.startswith("SUMMARY "))[8:])
        check_decoded(out, summary)
    finally:
        stop_group(head.pid)
