"""Resumable training state without pickle: tensors in safetensors, the rest in JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def save_optimizer(directory: str | Path, optimizer: torch.optim.Optimizer, meta: dict) -> None:
    """Optimizer tensors to `optimizer.safetensors`; param groups, scalars and `meta` to `state.json`."""
    directory = Path(directory)
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in opt["state"].items():
        for key, value in state.items():
            name = f"{idx}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.detach().contiguous().cpu()
            else:
                scalars[name] = value
    save_file(tensors, str(directory / "optimizer.safetensors"))
    payload = {"meta": meta, "param_groups": opt["param_groups"], "scalars": scalars}
    (directory / "state.json").write_text(json.dumps(payload, indent=1))


def load_optimizer(directory: str | Path, optimizer: torch.optim.Optimizer) -> dict:
    """Restore what `save_optimizer` wrote; returns its meta dict."""
    directory = Path(directory)
    payload = json.loads((directory / "state.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(payload["scalars"].items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": payload["param_groups"]})
    return payload["meta"]


def save_training_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        meta: dict) -> None:
    """Write model + optimizer state atomically (a rename of the whole directory)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              str(tmp / "model.safetensors"))
    save_optimizer(tmp, optimizer, meta)
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        os.replace(directory, old)
        os.replace(tmp, directory)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(tmp, directory)


def load_training_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore what `save_training_state` wrote; returns its meta dict."""
    model.load_state_dict(load_file(str(Path(directory) / "model.safetensors")))
    return load_optimizer(directory, optimizer)
