"""The checkpoint format: a directory loadable without Ray, nothing pickled.

- `model.safetensors`: every tensor except the frozen backbone (named by the config instead);
- `config.json`: the `ALTConfig`, the entity table, provenance, and the format version;
- `labels.txt`: one class name per line, in logit order.
Training adds its optimizer state beside them (`train_state.py`); loading ignores it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from alt_core.backbone import load_backbone
from alt_core.config import ALTConfig, BackboneSpec
from alt_core.corpus import Entity, EntityCorpus
from alt_core.errors import ALTError
from alt_core.model import ALTModel

FORMAT_VERSION = 1
FILES = ("model.safetensors", "config.json", "labels.txt")
CONFIG_KEYS = ("model", "entities")


class CheckpointError(ALTError):
    """A directory that is not a usable checkpoint: which one (`where`), and what is wrong with it."""

    def __init__(self, where: str | Path, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = str(where), problem


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


def _cause(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _damaged(name: str, err: Exception) -> str:
    return f"{name} is truncated or corrupt ({_cause(err)}); copy or download the checkpoint again"


def read_config(directory: str | Path) -> dict:
    """config.json of a checkpoint directory, after checking that all its files are there."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(directory, "no such directory; pass a checkpoint directory, or a registry URI such as "
                                         "models:/alt@champion with --tracking-uri")
    for name in FILES:
        if not (directory / name).is_file():
            raise CheckpointError(directory, f"{name} is missing, so this is not a checkpoint directory")
    try:
        raw = json.loads((directory / "config.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(directory, _damaged("config.json", err)) from err
    missing = [key for key in CONFIG_KEYS if key not in (raw if isinstance(raw, dict) else {})]
    if missing:
        raise CheckpointError(directory, f"config.json lacks {missing}; it was not written by save_checkpoint")
    return raw


def checkpoint_labels(directory: str | Path) -> list[str]:
    """The label set a checkpoint was trained on, in logit order."""
    read_config(directory)
    try:
        labels = (Path(directory) / "labels.txt").read_text().splitlines()
    except UnicodeDecodeError as err:
        raise CheckpointError(directory, _damaged("labels.txt", err)) from err
    if not labels or not all(label.strip() for label in labels):
        raise CheckpointError(directory, "labels.txt is empty or has blank lines; copy the checkpoint again")
    return labels


def read_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """model.safetensors of a checkpoint directory."""
    try:
        return load_file(str(Path(directory) / "model.safetensors"))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(directory, _damaged("model.safetensors", err)) from err


class CheckpointContents(NamedTuple):
    config: ALTConfig
    raw: dict  # config.json as written: the model settings, backbone id, entity table and provenance
    labels: list[str]
    tensors: dict[str, torch.Tensor]


def check_checkpoint(directory: str | Path) -> CheckpointContents:
    """Read the three files and check that they agree with each other and with the backbone's weights now,
    without building the model. A driver runs this before it starts the workers that load the checkpoint."""
    directory = Path(directory)
    raw, labels, tensors = read_config(directory), checkpoint_labels(directory), read_tensors(directory)
    try:
        config = ALTConfig.from_dict(raw["model"])
    except (ALTError, TypeError) as err:
        raise CheckpointError(directory, f"config.json holds settings this version cannot use ({err})") from err
    now = BackboneSpec(config.backbone, config.pretrained).id
    if raw.get("backbone_id", now) != now:
        raise CheckpointError(directory, f"trained on backbone {raw['backbone_id']}, whose weights are now {now}: "
                                         "its adapter would read features it never saw; train it again (corpus "
                                         "and tokens too)")
    classes = tensors.get("class_embeddings")
    if classes is None or classes.shape[0] != len(labels):
        saved = "no class matrix" if classes is None else f"{classes.shape[0]} classes"
        raise CheckpointError(directory, f"labels.txt has {len(labels)} names but model.safetensors holds {saved}: "
                                         "one of them is truncated or from another checkpoint")
    entities = tensors.get("entity_embeddings")
    if entities is None or entities.shape[0] != len(raw["entities"]):
        raise CheckpointError(directory, f"config.json lists {len(raw['entities'])} entities but model.safetensors "
                                         "holds another count: one of them is from another checkpoint")
    return CheckpointContents(config, raw, labels, tensors)


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> ALTModel:
    """Rebuild the model: backbone from its name, everything else from the files."""
    config, raw, labels, tensors = check_checkpoint(directory)
    entities = [Entity(u, d, s, tuple(ls)) for u, d, s, ls in raw["entities"]]
    corpus = EntityCorpus(entities, tensors["entity_embeddings"], config.backbone, content_hash=config.corpus_hash)
    backbone = load_backbone(config.backbone, config.pretrained, device=device)
    model = ALTModel(config, backbone, corpus, labels).to(device)
    restore_state(model, directory, tensors)
    return model.eval()


def restore_state(model: ALTModel, directory: str | Path, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Load a checkpoint's tensors into an existing model of the same config (training resumes this way)."""
    directory = Path(directory)
    tensors = tensors if tensors is not None else read_tensors(directory)
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as err:  # a tensor of another shape
        raise CheckpointError(directory, f"model.safetensors does not match config.json ({_cause(err)})") from err
    missing = [k for k in missing if not k.startswith(("backbone.", "encoder."))]
    if missing or unexpected:
        raise CheckpointError(directory, f"model.safetensors does not match config.json: missing {missing}, "
                                         f"unexpected {unexpected}")
