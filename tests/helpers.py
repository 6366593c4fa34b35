"""Small builders shared by tests."""

import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from alt_core.config import ALTConfig, TrainConfig
from alt_core.model import ALTModel
from alt_core.synthetic.synth import split_classes
from pipelines.jobs import TrainJob
from pipelines.tracking_server import free_port as free_port  # where the servers we start take theirs

KUBERAY = Path(__file__).resolve().parents[1] / "deploy" / "kuberay"
LABELS = ["circle moving left", "square spinning", "star bouncing", "ring growing"]
# two shapes x three motions: the shape words are known to alt-tiny, the motions have to be learned, so a
# trained adapter pulls away from an untrained one within an epoch or two
SEEN = [c for shape in ("circle", "square") for c in split_classes()[0] if c.startswith(shape)][::3][:6]
SPACE = {"metric": "val_top1", "mode": "max", "num_samples": 1, "max_t": 3, "grace_period": 1,
         "reduction_factor": 2}


def write_space(path: Path, space: dict, **overrides) -> Path:
    path.write_text(yaml.safe_dump(SPACE | overrides | {"space": space}))
    return path


def make_model(backbone, corpus, adapter: str = "alt", **overrides) -> ALTModel:
    torch.manual_seed(0)
    cfg = dict(backbone="alt-micro", pretrained=backbone.spec.pretrained, adapter=adapter,
               num_queries=4, depth=1, width=32, heads=2, tome_r=2,
               num_frames=4)
    cfg.update(overrides)
    return ALTModel(ALTConfig(**cfg), backbone, corpus, LABELS)


def random_clip(batch: int = 2, frames: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, frames, 3, size, size), dtype=torch.uint8, generator=g)


def write_weights(path, backbone, retrained: bool = False) -> str:
    """Save a backbone's weights to `path`; `retrained` writes other weights (a changed logit scale) under the
    same name, as a new release or a retrained file would."""
    state = backbone.clip.state_dict()
    if retrained:
        state["logit_scale"] = state["logit_scale"] + 1.0
    save_file(state, str(path))
    return str(path)


def search_job(ws: dict, out: str) -> TrainJob:
    """The training job of a search on `tune_workspace`'s data (conftest.py), writing under its root."""
    return TrainJob(data=ws["data"], corpus=ws["corpus"], out=str(ws["root"] / out), tracking_uri=ws["tracking_uri"],
                    train=TrainConfig(batch_size=6))


def require(available: bool, reason: str) -> None:
    """A program or file from outside the repository that a test needs: where it is missing, the test is skipped
    with the reason, except in CI (CI=true), whose .ci/run provides it: there its absence fails the test."""
    if not available:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(reason)


def kuberay_documents() -> list[tuple[str, dict]]:
    """(file name, document) for every document of every manifest in deploy/kuberay/."""
    return [(path.name, doc) for path in sorted(KUBERAY.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def mlflow_server_command() -> list[str]:
    """The tracking server's command line in deploy/kuberay/mlflow.yaml."""
    deployment = next(doc for _, doc in kuberay_documents() if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return [*container["command"], *container["args"]]


def cluster_tracking_uri() -> str:
    """The tracking URI the RayService's model replicas load the champion from (deploy/kuberay/rayservice.yaml)."""
    service = next(doc for _, doc in kuberay_documents() if doc["kind"] == "RayService")
    return yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]["tracking_uri"]
