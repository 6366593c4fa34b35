"""CLIP backbones: any open_clip model by name, plus the project's own tiny architectures.

Our architectures live as small JSON files in `alt_core/configs/` (open_clip style): an
`open_clip` model config, an optional `stem` ("patch" or "conv") and a description. Packaged
weights, when shipped, live in `alt_core/weights/<name>.safetensors`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from alt_core.config import CONFIG_DIR, ENTITY_TEMPLATES, WEIGHTS_DIR, BackboneSpec
from alt_core.errors import ALTError


class BackboneError(ALTError):
    """A backbone name or weights source that cannot be used; the message says how to fix it."""


class ConvStem(nn.Module):
    """Early-convolution stem: three stride-2 3x3 convs then a stride-1 3x3 conv.

    Replaces the ViT patchify layer with the same token grid (patch size 8), which makes tiny
    ViTs learn far faster on small images (Xiao et al., "Early convolutions help transformers see better").
    """

    def __init__(self, width: int, patch_size: int):
        super().__init__()
        if patch_size != 8:
            raise BackboneError(f"the conv stem needs patch_size 8 (three stride-2 convs), got {patch_size}")
        chans = [3, width // 4, width // 2, width]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU()]
        layers.append(nn.Conv2d(width, width, 3, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, width, H/8, W/8)


def builtin_configs() -> dict[str, dict]:
    """The project's own architectures, by name (file stem)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(CONFIG_DIR.glob("*.json"))}


def input_size(name: str) -> int:
    """A backbone's image input size, read from its architecture config without building it (what a driver
    needs to plan decoding before workers load the model)."""
    builtin = builtin_configs()
    cfg = builtin[name]["open_clip"] if name in builtin else open_clip.get_model_config(name)
    if cfg is None:
        raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(builtin))} or an open_clip "
                            "model name")
    size = cfg["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, tuple | list) else size)


def _packaged_weights(name: str) -> Path | None:
    path = WEIGHTS_DIR / f"{name}.safetensors"
    return path if path.exists() else None


class Backbone(nn.Module):
    """An open_clip CLIP model with its tokenizer and pixel statistics."""

    def __init__(self, clip: nn.Module, tokenizer, spec: BackboneSpec):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.spec = spec
        visual = clip.visual
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        self.embed_dim = int(clip.text_projection.shape[1]) if clip.text_projection is not None else visual.output_dim
        mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        self.register_buffer("pixel_mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(3, 1, 1), persistent=False)

    def normalize_pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) -> float normalised with the backbone's statistics."""
        return (frames.float() / 255.0 - self.pixel_mean) / self.pixel_std

    def encode_phrases(self, phrases: Sequence[str], templates: Sequence[str] = ENTITY_TEMPLATES) -> torch.Tensor:
        """L2-normalised text embeddings averaged over prompt templates, with gradients: (P, D)."""
        device = self.pixel_mean.device
        prompts = [t.format(p) for p in phrases for t in templates]
        emb = F.normalize(self.clip.encode_text(self.tokenizer(prompts).to(device)).float(), dim=-1)
        return F.normalize(emb.view(len(phrases), len(templates), -1).mean(1), dim=-1)

    @torch.no_grad()
    def embed_text(self, phrases: Sequence[str], templates: Sequence[str] = ENTITY_TEMPLATES,
                   batch_size: int = 256) -> torch.Tensor:
        """`encode_phrases` without gradients, in batches: (P, D)."""
        chunks = [self.encode_phrases(phrases[i:i + batch_size], templates)
                  for i in range(0, len(phrases), batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)

    def freeze(self, unfreeze_last_blocks: int = 0) -> None:
        """Freeze both towers; optionally unfreeze the last k image blocks and the image head."""
        self.clip.requires_grad_(False)
        if unfreeze_last_blocks > 0:
            visual = self.clip.visual
            for block in visual.transformer.resblocks[-unfreeze_last_blocks:]:
                block.requires_grad_(True)
            visual.ln_post.requires_grad_(True)
            visual.proj.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        """Frozen parts stay in eval mode whatever the mode: BatchNorm keeps its running statistics, so
        pixels give the same tokens in training as the decode stage cached."""
        super().train(mode)
        for module in self.clip.modules():
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()
        return self


def _load_builtin(name: str, cfg: dict, pretrained: str | None, random_init: bool) -> nn.Module:
    clip = open_clip.model.CLIP(**cfg["open_clip"])
    if cfg.get("stem", "patch") == "conv":
        vcfg = cfg["open_clip"]["vision_cfg"]
        clip.visual.conv1 = ConvStem(vcfg["width"], vcfg["patch_size"])
    if random_init:
        return clip
    weights = Path(pretrained) if pretrained else _packaged_weights(name)
    if pretrained and not weights.is_file():
        raise BackboneError(
            f"weights file {pretrained!r} for backbone {name!r} does not exist; pass a local .safetensors file "
            f"written by `alt backbone pretrain`, or omit --pretrained to use the packaged weights")
    if weights is not None:
        state = load_file(str(weights))
        clip.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return clip


def load_backbone(name: str, pretrained: str | None = None, device: str | torch.device = "cpu",
                  random_init: bool = False) -> Backbone:
    """Build a backbone by name with weights from a tag, a local file, packaged weights, or random init.

    `pretrained=None` means: packaged weights for our own architectures (random init when none are
    shipped or `random_init`), random init for open_clip's.
    """
    builtin = builtin_configs()
    if name in builtin:
        clip = _load_builtin(name, builtin[name], pretrained, random_init)
        tokenizer = open_clip.tokenizer.SimpleTokenizer(
            context_length=builtin[name]["open_clip"]["text_cfg"]["context_length"])
    elif name in open_clip.list_models():
        if pretrained and not os.path.isfile(pretrained) and os.path.sep in pretrained:
            raise BackboneError(f"weights file {pretrained!r} does not exist; check the path")
        try:
            if pretrained is None:  # random init is what was asked for: silence open_clip's warning
                logging.disable(logging.WARNING)
            clip = open_clip.create_model(name, pretrained=pretrained)
        except RuntimeError as err:
            raise BackboneError(
                f"could not load weights {pretrained!r} for {name!r} (model hubs are unreachable offline); "
                f"download the checkpoint elsewhere and pass its local path: --pretrained /path/to/weights.bin"
            ) from err
        finally:
            logging.disable(logging.NOTSET)
        tokenizer = open_clip.get_tokenizer(name)
    else:
        known = ", ".join(sorted(builtin)) + ", or any of open_clip.list_models() such as ViT-B-16"
        raise BackboneError(f"unknown backbone {name!r}; choose one of {known}")
    clip = clip.to(device).eval()
    backbone = Backbone(clip, tokenizer, BackboneSpec(name, pretrained))
    backbone.freeze()
    return backbone
