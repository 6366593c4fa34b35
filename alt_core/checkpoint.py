"""The checkpoint format: a directory loadable without Ray, nothing pickled.

- `model.safetensors`: every tensor except the frozen backbone (named by the config instead);
- `config.json`: the `ALTConfig`, the entity table, provenance, and the format version;
- `labels.txt`: one class name per line, in logit order.
Training adds its optimizer state beside them (`train_state.py`); loading ignores it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from alt_core.backbone import load_backbone
from alt_core.config import ALTConfig, BackboneSpec
from alt_core.corpus import Entity, EntityCorpus
from alt_core.errors import ALTError
from alt_core.model import ALTModel

FORMAT_VERSION = 1
FILES = ("model.safetensors", "config.json", "labels.txt")


class CheckpointError(ALTError):
    """A directory that is not a usable checkpoint; the message says what is missing."""


def save_checkpoint(model: ALTModel, directory: str | Path, provenance: dict | None = None) -> Path:
    """Write the three files; `provenance` (how the model was made: epoch, seed, data...) goes into config.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.checkpoint_state().items()}
    save_file(tensors, str(directory / "model.safetensors"))
    config = {
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "backbone_id": model.backbone.spec.id,  # with its weights digest: new weights make it unloadable, not wrong
        "entities": [[e.unit, e.description, e.source, list(e.labels)] for e in model.entities],
        "provenance": provenance or {},
    }
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    (directory / "labels.txt").write_text("\n".join(model.labels) + "\n")
    return directory


def read_config(directory: str | Path) -> dict:
    """config.json of a checkpoint directory, after checking that all its files are there."""
    directory = Path(directory)
    for name in FILES:
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory} is not a checkpoint: {name} is missing")
    return json.loads((directory / "config.json").read_text())


def checkpoint_labels(directory: str | Path) -> list[str]:
    """The label set a checkpoint was trained on, in logit order."""
    read_config(directory)
    return (Path(directory) / "labels.txt").read_text().splitlines()


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> ALTModel:
    """Rebuild the model: backbone from its name, everything else from the files."""
    directory = Path(directory)
    raw = read_config(directory)
    config = ALTConfig.from_dict(raw["model"])
    now = BackboneSpec(config.backbone, config.pretrained).id
    if raw.get("backbone_id", now) != now:
        raise CheckpointError(f"{directory} was trained on backbone {raw['backbone_id']}, whose weights are now "
                              f"{now}: its adapter would read features it never saw; train it again (corpus and "
                              "tokens too)")
    tensors = load_file(str(directory / "model.safetensors"))
    entities = [Entity(u, d, s, tuple(ls)) for u, d, s, ls in raw["entities"]]
    corpus = EntityCorpus(entities, tensors["entity_embeddings"], config.backbone, content_hash=config.corpus_hash)
    backbone = load_backbone(config.backbone, config.pretrained, device=device)
    model = ALTModel(config, backbone, corpus, checkpoint_labels(directory)).to(device)
    restore_state(model, directory, tensors)
    return model.eval()


def restore_state(model: ALTModel, directory: str | Path, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Load a checkpoint's tensors into an existing model of the same config (training resumes this way)."""
    directory = Path(directory)
    tensors = tensors if tensors is not None else load_file(str(directory / "model.safetensors"))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.startswith(("backbone.", "encoder."))]
    if missing or unexpected:
        raise CheckpointError(f"{directory} does not match its config: missing {missing}, unexpected {unexpected}")
