"""Shared fixtures: tiny random-init backbone, a small corpus, and the test environment."""

import os
import sys

from pipelines.environment import set_defaults

set_defaults()  # the `alt` command's environment, before Ray, MLflow or huggingface_hub are imported

import pytest  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from alt_core.backbone import load_backbone  # noqa: E402
from alt_core.config import DecodeSpec  # noqa: E402
from alt_core.corpus import build_corpus  # noqa: E402
from alt_core.synthetic.dataset import generate_dataset  # noqa: E402
from pipelines.console import address_own_cluster  # noqa: E402
from pipelines.corpus import build_corpus_dataset  # noqa: E402
from pipelines.decode import decode_manifest  # noqa: E402
from tests.helpers import LABELS, SEEN, free_port  # noqa: E402

if "PYTEST_XDIST_WORKER" in os.environ:  # make check: one test process per core, one torch thread each
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def micro_weights(tmp_path_factory) -> str:
    """Random-init alt-micro weights in a file, so checkpoints can name and reload them."""
    torch.manual_seed(0)
    clip = load_backbone("alt-micro", random_init=True).clip
    path = tmp_path_factory.mktemp("weights") / "alt-micro.safetensors"
    save_file(clip.state_dict(), str(path))
    return str(path)


@pytest.fixture(scope="session")
def micro_backbone(micro_weights):
    return load_backbone("alt-micro", pretrained=micro_weights)


@pytest.fixture(scope="session")
def micro_corpus(micro_backbone):
    return build_corpus(micro_backbone, LABELS, ["labels", "builtin"])


@pytest.fixture(scope="module")
def local_ray():
    """A private 2-CPU Ray for one test module, stopped after it (modules opt in with usefixtures).

    With its dashboard (on a free port): Ray Train's placement-group cleaner asks the state API whether a
    controller died, and without it a trial Tune stopped would keep its CPUs reserved forever; its workers know
    their own cluster's address (`address_own_cluster`), as other sessions' Rays may run beside it."""
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_port=free_port(), log_to_driver=False,
             runtime_env={"worker_process_setup_hook": address_own_cluster})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tune_workspace(tmp_path_factory, local_ray) -> dict:
    """6 seen classes x 8 videos (4 train, 2 val, 2 test) as alt-tiny region tokens, their corpus, and a sqlite
    tracking URI: what a search trains on (tests.helpers.search_job)."""
    root = tmp_path_factory.mktemp("tune")
    synth = root / "synth"
    generate_dataset(synth, seed=3, classes=SEEN, videos_per_class=8, frames=16, size=64, workers=1, fewshot=())
    build_corpus_dataset(synth / "labels_seen.txt", ["labels", str(synth / "entities.jsonl")], "alt-tiny", None,
                         root / "corpus.parquet")
    decode_manifest(synth / "manifest.parquet", root / "tokens", workers=2,
                    spec=DecodeSpec(clips=1, train_clips=1, cache_tokens=True, backbone="alt-tiny"))
    return {"root": root, "data": str(root / "tokens"), "corpus": str(root / "corpus.parquet"),
            "tracking_uri": f"sqlite:///{root / 'registry.db'}"}


@pytest.fixture(autouse=True)
def _ray_only_when_marked(request):
    """A test that starts Ray says so with the `ray` marker, so that `make check` (which deselects them) holds
    every other test and needs no cluster: an unmarked test that leaves Ray running fails."""
    yield
    if request.node.get_closest_marker("ray") is None:
        assert not ray.is_initialized(), f"{request.node.nodeid} started Ray: mark it @pytest.mark.ray"


_exit_status: list[int] = []


def pytest_sessionfinish(session, exitstatus) -> None:
    """Stop a Ray that a test left running while the interpreter is still whole, and remember the verdict."""
    if ray.is_initialized():
        ray.shutdown()
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """Leave with pytest's own exit status once every report is written, skipping interpreter finalization.

    CI saw `make test` fail with a segmentation fault *after* "199 passed" was printed: native threads of the
    libraries under test (Ray's core worker, torch, decord) crashing while Python tore its modules down. That
    teardown checks nothing, so it is skipped; the exit status is exactly the one pytest computed."""
    if _exit_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[0])
