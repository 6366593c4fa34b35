"""Compute accounting: FLOPs per view and per video, split by part of the model (`alt flops`).

FLOPs count 2 per multiply-add (torch's FlopCounterMode convention); papers that quote "FLOPs"
usually mean multiply-adds (MACs), so both are reported. Our attention runs through
`scaled_dot_product_attention` (never open_clip's `nn.MultiheadAttention` fast path, which
hides its matmuls), and its CPU kernel gets the same formula torch uses for the GPU kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from alt_core.backbone import load_backbone
from alt_core.config import ALTConfig
from alt_core.corpus import Entity, EntityCorpus
from alt_core.model import ALTModel

_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if _CPU_SDPA not in flop_counter.flop_registry:

    @flop_counter.register_flop_formula(_CPU_SDPA)
    def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


@dataclass
class FlopRow:
    part: str
    flops_per_view: int

    @property
    def gflops(self) -> float:
        return self.flops_per_view / 1e9


@dataclass
class FlopReport:
    config: ALTConfig
    frames: int
    views: int
    rows: list[FlopRow]
    merge_schedule: list[int]  # ToMe pairs merged per block, as clamped
    regions: int  # region tokens per frame after the last block

    @property
    def total_per_view(self) -> int:
        return sum(r.flops_per_view for r in self.rows)

    def table(self) -> str:
        head = f"{'part':<12}{'GFLOPs/view':>14}{'GMACs/view':>13}{'GFLOPs/video':>15}{'GMACs/video':>14}"
        lines = [f"{self.config.backbone} with adapter {self.config.adapter}, {self.frames} frames, "
                 f"{self.views} views, ToMe r={self.config.tome_r} (merged per block: {self.merge_schedule}; "
                 f"{self.regions} regions per frame); FLOPs = 2 x multiply-adds", head]
        for row in [*self.rows, FlopRow("total", self.total_per_view)]:
            f = row.flops_per_view / 1e9
            lines.append(f"{row.part:<12}{f:>14.2f}{f / 2:>13.2f}{f * self.views:>15.2f}{f * self.views / 2:>14.2f}")
        return "\n".join(lines)


def _module_flops(counts: dict[str, dict], prefix: str) -> int:
    return sum(counts.get(prefix, {}).values())


def count_flops(config: ALTConfig, frames: int, views: int = 1, num_classes: int = 400,
                num_entities: int = 1000) -> FlopReport:
    """Count one view (T frames) of a randomly initialised model of this shape; weights don't change FLOPs."""
    backbone = load_backbone(config.backbone, random_init=True) if config.backbone.startswith("alt-") \
        else load_backbone(config.backbone)
    d = backbone.embed_dim
    corpus = EntityCorpus([Entity(f"e{i}", f"e{i}", "flops") for i in range(num_entities)],
                          torch.nn.functional.normalize(torch.randn(num_entities, d), dim=-1), config.backbone)
    model = ALTModel(config, backbone, corpus, ["placeholder"]).eval()
    model.class_embeddings = torch.nn.functional.normalize(torch.randn(num_classes, d), dim=-1)
    size = backbone.image_size
    pixels = torch.randint(0, 256, (1, frames, 3, size, size), dtype=torch.uint8)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(pixels)
    counts = counter.get_flop_counts()
    total = sum(counts["Global"].values())
    tome = sum(_module_flops(counts, f"ALTModel.encoder.blocks.{i}.merge") for i in range(len(model.encoder.blocks)))
    backbone_flops = _module_flops(counts, "ALTModel.encoder") - tome
    align = _module_flops(counts, "ALTModel.aligner")
    adapter = _module_flops(counts, "ALTModel.adapter")
    rows = [FlopRow("backbone", backbone_flops), FlopRow("tome", tome), FlopRow("alignment", align),
            FlopRow("adapter", adapter),
            FlopRow("classifier", total - backbone_flops - tome - align - adapter)]
    return FlopReport(config, frames, views, rows, model.encoder.schedule, model.encoder.num_regions)
