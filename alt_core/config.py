"""Settings: what defines a model (`ALTConfig`) and how it is optimised (`TrainConfig`).

One source of truth: the model, training, tuning, checkpoints and the CLI all take these dataclasses
whole. Each field carries its help text; `pipelines/cli.py` turns every field into one command-line
option with the field's default, and the dataclass checks the values, so a default or a bound is
written once. The tune stage sets `num_queries`, `depth` and `lr` through `dataclasses.replace`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from alt_core.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"  # the project's own backbone architectures, one JSON each
WEIGHTS_DIR = Path(__file__).parent / "weights"  # their packaged weights, <name>.safetensors
DIGEST_CHARS = 12  # hex digits of sha256 that name a weights file in backbone ids
ADAPTERS = ("alt", "meanpool", "temporal")
AdapterKind = Literal["alt", "meanpool", "temporal"]
QUERY_KINDS = ("entities", "learned")
QueryKind = Literal["entities", "learned"]
CLASS_TEMPLATES: tuple[str, ...] = ("a video of {}.", "{}", "a photo of {}.")
ENTITY_TEMPLATES: tuple[str, ...] = ("{}", "a photo of {}.", "a video of {}.")
DEFAULT_TOP_K = 5  # labels a prediction returns unless asked otherwise: `alt predict`, the HTTP API, batch inference
SYNTH_VIDEOS_PER_CLASS = 40  # a generated dataset's size in RESULTS.md: 24 train, 8 val, 8 test videos per seen class


def setting(default: Any, help: str, cli: bool = True, flag: str | None = None, protocol: bool = False) -> Any:
    """A settings field: its default, its help text, whether the CLI offers it as an option, the option's
    name when it differs from the field's, and whether its default depends on the protocol (the class's
    `for_protocol` chooses it; the CLI leaves such an option unset until then)."""
    return field(default=default, metadata={"help": help, "cli": cli, "flag": flag, "protocol": protocol})


@dataclass(frozen=True)
class BackboneSpec:
    """What identifies a backbone in corpora, cached tokens and checkpoints: its name and weights."""

    name: str
    pretrained: str | None = None

    def weights_file(self) -> Path | None:
        """The local file the weights come from: the one given, or the packaged one; None for a tag or none."""
        if self.pretrained:
            path = Path(self.pretrained)
            return path.resolve() if path.is_file() else None
        packaged = WEIGHTS_DIR / f"{self.name}.safetensors"
        return packaged if packaged.is_file() else None

    @property
    def id(self) -> str:
        """`name:weights@digest`: a weights file by its absolute path and the start of its sha256, so two
        spellings of one file agree and changed weights (a new packaged release, a retrained file) never
        reuse a corpus, token cache or checkpoint made with the old ones."""
        path, digest = self.weights_file(), self.digest()
        weights = str(path) if self.pretrained and path else self.pretrained
        return f"{self.name}:{weights or 'default'}" + (f"@{digest}" if digest else "")

    def digest(self) -> str | None:
        """The start of the weights file's sha256; None when no local file holds them (a hub tag, or an
        architecture without packaged weights)."""
        path = self.weights_file()
        return _file_digest(str(path), *_stat(path)) if path else None

    @classmethod
    def parse(cls, backbone_id: str) -> BackboneSpec:
        name, _, weights = backbone_id.partition(":")
        head, at, digest = weights.rpartition("@")
        if at and len(digest) == DIGEST_CHARS and all(c in "0123456789abcdef" for c in digest):
            weights = head
        return cls(name, None if weights in ("", "default") else weights)


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 prefix of a file, cached per (path, size, mtime): hashing a large checkpoint once per process."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()[:DIGEST_CHARS]


def builtin_architectures() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


class Settings:
    """Dictionary round trip shared by the settings dataclasses."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        _check(not unknown, f"unknown {cls.__name__} keys {unknown}; known keys: {sorted(names)}")
        return cls(**data)


@dataclass
class ALTConfig(Settings):
    """The model: backbone, ToMe, alignment and adapter (docs/method.md)."""

    backbone: str = setting("alt-tiny", "image/text backbone: alt-tiny, alt-micro or an open_clip model name")
    pretrained: str | None = setting(None, "local weights file (default: packaged weights for alt-*, "
                                           "random init for open_clip models)")
    adapter: AdapterKind = setting("alt", "alt (entity queries) | temporal (baseline) | meanpool (zero-shot CLIP)")
    num_queries: int = setting(8, "entity queries N_q read by the adapter")
    queries: QueryKind = setting("entities", "ALT's queries: entities (aligned entity text embeddings, the method) | "
                                             "learned (free query vectors: the ablation)")
    depth: int = setting(2, "adapter decoder layers M")
    width: int = setting(128, "adapter width d")
    heads: int = setting(4, "adapter attention heads (must divide the width)")
    tome_r: int = setting(0, "ToMe: token pairs merged per block (clamped per block)")
    num_frames: int = setting(8, "frames per view", flag="--frames")
    max_frames: int = setting(32, "longest clip the temporal position embedding covers")
    similarity_temperature: float = setting(0.01, "temperature of the region-entity similarity: sets how often the "
                                                  "training-time Gumbel sample differs from the argmax")
    gumbel_tau: float = setting(10.0, "Gumbel-softmax temperature of the training-time assignment: with the "
                                      "similarity temperature, how far its soft relaxation (the gradient) spreads")
    alignment_bias: bool = setting(True, "ALT: a query attends first to the regions that took its entity")
    # the two below are off: neither won on validation (RESULTS.md, "ALT's design, chosen on validation")
    query_trajectory: bool = setting(False, "ALT: when and where a query's entity was found (per frame: share of "
                                            "the frame, centroid) is part of the query")
    region_positions: bool = setting(False, "ALT: region tokens carry their centroid")
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy loss")
    unfreeze_last_blocks: int = setting(0, "also train the image tower's last k blocks (needs pixel clips)")
    class_templates: tuple[str, ...] = setting(CLASS_TEMPLATES, "prompt templates of class names", cli=False)
    corpus_hash: str = setting("", "content hash of the entity corpus the model was built with", cli=False)

    def __post_init__(self) -> None:
        self.class_templates = tuple(self.class_templates)
        _check(self.adapter in ADAPTERS, f"unknown adapter {self.adapter!r}; choose one of {', '.join(ADAPTERS)}")
        _check(self.queries in QUERY_KINDS, f"unknown queries {self.queries!r}; choose one of {', '.join(QUERY_KINDS)}")
        for name in ("num_queries", "width", "heads", "num_frames", "max_frames"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("depth", "tome_r", "unfreeze_last_blocks"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _check(self.width % self.heads == 0, f"width {self.width} is not divisible by heads {self.heads}")
        _check(self.num_frames <= self.max_frames,
               f"num_frames {self.num_frames} exceeds max_frames {self.max_frames}; raise max_frames")
        _check(self.similarity_temperature > 0 and self.gumbel_tau > 0, "temperatures must be > 0")
        _check(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


# A few-shot run's schedule unless told otherwise, as `TrainConfig.for_protocol` (the CLI) applies it; the
# supervised one is TrainConfig's defaults. Both are ALT's values from the per-method search behind RESULTS.md
# (tune_spaces/protocol.yaml and fewshot.yaml, run by bench/results.py).
FEW_SHOT_SCHEDULE = {"epochs": 5, "lr": 3e-3, "steps": 900}


@dataclass
class TrainConfig(Settings):
    """How the adapter is optimised; the defaults are the settings behind RESULTS.md (few-shot runs:
    FEW_SHOT_SCHEDULE, through `for_protocol`)."""

    epochs: int = setting(12, "epochs (the cosine learning-rate schedule spans them); default 12, "
                          f"few-shot {FEW_SHOT_SCHEDULE['epochs']}",
                          protocol=True)
    lr: float = setting(3e-4, "peak learning rate (AdamW, cosine decay per epoch); default 0.0003, "
                        f"few-shot {FEW_SHOT_SCHEDULE['lr']:g}",
                        protocol=True)
    weight_decay: float = setting(0.05, "AdamW weight decay on weight matrices")
    batch_size: int = setting(32, "clips per optimizer step and worker")
    shots: int | None = setting(None, "few-shot: train on K videos per class (a fixed subset, whatever the seed)")
    shots_file: str | None = setting(None, "few-shot: train on the videos listed in this manifest (path,label), "
                                           "e.g. SynthActions' fewshot_K.csv")
    steps: int | None = setting(None, "optimizer steps in all, spread evenly over the epochs (few-shot: one step "
                                      "budget whatever K); default: one pass over the train split per epoch, "
                                      f"few-shot {FEW_SHOT_SCHEDULE['steps']}", protocol=True)
    seed: int = setting(0, "seed of initialisation, sampling and shuffling")

    @classmethod
    def for_protocol(cls, **given: Any) -> TrainConfig:
        """A config from options where a schedule field left None takes its protocol's value: FEW_SHOT_SCHEDULE
        for a few-shot run (`shots` or `shots_file`), the defaults otherwise."""
        few_shot = given.get("shots") is not None or given.get("shots_file") is not None
        chosen = {k: v for k, v in given.items() if not (v is None and k in FEW_SHOT_SCHEDULE)}
        return cls(**(FEW_SHOT_SCHEDULE | chosen if few_shot else chosen))

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.shots is None or self.shots >= 1, f"shots must be >= 1, got {self.shots}")
        _check(self.shots is None or self.shots_file is None, "pass --shots or --shots-file, not both")
        _check(self.steps is None or self.steps >= self.epochs,
               f"steps must be at least one per epoch ({self.epochs}), got {self.steps}")


@dataclass(frozen=True)
class DecodeSpec(Settings):
    """What determines a shard's contents; a resumed run must match the one that wrote the shards. The
    defaults are the settings behind RESULTS.md."""

    frames: int = setting(8, "frames sampled per view")
    clips: int = setting(2, "temporal views of every non-train video")
    crops: int = setting(1, "spatial crops of every non-train video (1 = centre, 3 = start/centre/end)")
    size: int = setting(64, "frame side after resize and crop (the backbone's input size for --cache-tokens)")
    train_clips: int = setting(2, "random TSN clips per train video, decoded once, one row each")
    seed: int = setting(0, "seed of shard order and training-clip sampling")
    cache_tokens: bool = setting(False, "store the frozen backbone's region tokens instead of frames")
    backbone: str | None = setting(None, "backbone for --cache-tokens")
    pretrained: str | None = setting(None, "its local weights file (default: packaged weights for alt-*)")
    tome_r: int = setting(8, "ToMe token pairs merged per block, for --cache-tokens")

    def __post_init__(self) -> None:
        for name in ("frames", "clips", "crops", "size", "train_clips"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(self.tome_r >= 0, f"tome_r must be >= 0, got {self.tome_r}")
        _check(not self.cache_tokens or bool(self.backbone),
               "caching tokens needs a backbone; pass --backbone NAME (and --pretrained FILE)")

    def views(self, split: str) -> int:
        return self.train_clips if split == "train" else self.clips * self.crops

    def identity(self) -> dict:
        """The fields that shape the shards: backbone fields only matter when tokens are cached."""
        fields = self.to_dict()
        if not self.cache_tokens:
            fields.update(backbone=None, pretrained=None, tome_r=0)
        return fields


@dataclass
class PretrainConfig(Settings):
    """Contrastive pretraining of a tiny backbone on generated scenes (`alt backbone pretrain`)."""

    arch: str = setting("alt-tiny", "one of the project's own architectures (alt_core/configs)")
    steps: int = setting(3000, "optimizer steps in total (a resumed run continues to this count)")
    batch_size: int = setting(256, "generated still scenes per step")
    clip_batch_size: int = setting(48, "generated clips with motion captions per step (0: still images only)")
    clip_frames: int = setting(8, "frames per pretraining clip (TSN-sampled of 16, as the decode stage samples)")
    still_weight: float = setting(1.0, "weight of the still-image terms (contrast, entity, region) against the clip "
                                       "terms: raise it to hold the still-image probe while motion is learned")
    init: str = setting("", "weights to start from: empty for random init, 'packaged' for the shipped weights of "
                            "ARCH, or a .safetensors file")
    lr: float = setting(1e-3, "peak learning rate (warmup, then cosine decay)")
    weight_decay: float = setting(0.05, "AdamW weight decay on weight matrices")
    warmup_steps: int = setting(100, "linear warmup steps")
    seed: int = setting(0, "seed of initialisation and of the generated scenes")
    device: str = setting("cpu", "cpu | cuda")
    save_every_s: float = setting(120.0, "seconds between resumable state saves")

    def __post_init__(self) -> None:
        _check(self.arch in builtin_architectures(),
               f"pretraining supports the project's own architectures {builtin_architectures()}, not {self.arch!r}")
        _check(min(self.steps, self.batch_size, self.clip_frames) >= 1 and self.clip_batch_size >= 0 and self.lr > 0
               and self.still_weight > 0,
               "steps, batch_size and clip_frames must be >= 1, clip_batch_size >= 0, lr > 0, still_weight > 0")
