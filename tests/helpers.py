"""Small builders shared by tests."""

import socket

import torch
from safetensors.torch import save_file

from alt_core.config import ALTConfig
from alt_core.model import ALTModel

LABELS = ["circle moving left", "square spinning", "star bouncing", "ring growing"]


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_weights(path, backbone, retrained: bool = False) -> str:
    """Save a backbone's weights to `path`; `retrained` writes other weights (a changed logit scale) under the
    same name, as a new release or a retrained file would."""
    state = backbone.clip.state_dict()
    if retrained:
        state["logit_scale"] = state["logit_scale"] + 1.0
    save_file(state, str(path))
    return str(path)
