"""ALT and its baselines behind one config field (`adapter`: alt | meanpool | temporal), and ALT's query
ablation behind another (`queries`: entities | learned).

docs/method.md, "Classifier and loss" and "Baselines".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alt_core.adapter import ALTAdapter, TemporalAdapter, cosine_logits
from alt_core.alignment import Alignment, EntityAligner, EntityExplanation, explain
from alt_core.backbone import Backbone
from alt_core.config import ALTConfig
from alt_core.corpus import Entity, EntityCorpus
from alt_core.errors import ConfigError
from alt_core.tome import FrameTokens, RegionEncoder


@dataclass
class ALTOutput:
    logits: torch.Tensor  # (B, C)
    video: torch.Tensor  # (B, D) video embedding z
    alignment: Alignment | None = None
    query_shares: torch.Tensor | None = None  # (B, Nq, D) each query's additive share of z (ALT's adapter)


class ALTModel(nn.Module):
    """Backbone with ToMe regions, then alignment + adapter (or a baseline), then cosine logits against the
    class text embeddings."""

    def __init__(self, config: ALTConfig, backbone: Backbone, corpus: EntityCorpus, labels: list[str]):
        super().__init__()
        self.config = config
        self.backbone = backbone
        backbone.freeze(config.unfreeze_last_blocks)
        self.encoder = RegionEncoder(backbone.clip.visual, config.tome_r)
        self.entities: list[Entity] = list(corpus.entities)
        self.register_buffer("entity_embeddings", corpus.embeddings.float().clone())  # (K, D)
        self.labels: list[str] = []
        self.register_buffer("class_embeddings", torch.zeros(0, backbone.embed_dim))  # (C, D)
        self.set_labels(labels)
        init_scale = float(backbone.clip.logit_scale.detach()) if hasattr(backbone.clip, "logit_scale") else 0.0
        self.logit_scale = nn.Parameter(torch.tensor(init_scale if init_scale > 0 else math.log(1 / 0.07)))
        d = backbone.embed_dim
        self.aligner = self.adapter = None
        self.learned_queries = None
        if config.adapter == "alt":
            self.adapter = ALTAdapter(d, config.width, config.depth, config.heads, config.max_frames,
                                      config.alignment_bias, config.query_trajectory, config.region_positions)
            if config.queries == "entities":
                self.aligner = EntityAligner(config.num_queries, config.similarity_temperature, config.gumbel_tau)
            else:  # the ablation: same adapter and tokens, free query vectors on the unit sphere like entities
                self.learned_queries = nn.Parameter(F.normalize(torch.randn(config.num_queries, d), dim=-1))
        elif config.adapter == "temporal":
            self.adapter = TemporalAdapter(d, config.width, config.depth, config.heads, config.max_frames)

    def train(self, mode: bool = True) -> ALTModel:
        super().train(mode)
        self.backbone.train(mode)  # again after `encoder`, which shares the image tower: frozen parts stay in eval
        return self

    def set_labels(self, labels: list[str]) -> None:
        """Swap the label set (zero-shot): only the class matrix changes."""
        self.class_embeddings = self.class_matrix(labels)
        self.labels = list(labels)

    def class_matrix(self, labels: list[str]) -> torch.Tensor:
        """Class embeddings of a label set: the text tower on the prompted names, L2-normalised: (C, D)."""
        if not labels:
            raise ConfigError("the label set is empty; pass at least one class name")
        return self.backbone.embed_text(list(labels), self.config.class_templates).to(self.class_embeddings.device)

    def encode_frames(self, pixels: torch.Tensor) -> FrameTokens:
        """uint8 pixels (B, T, 3, H, W) -> frame and region tokens."""
        b, t = pixels.shape[:2]
        x = self.backbone.normalize_pixels(pixels.flatten(0, 1))
        trainable = any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
            out = self.encoder(x)
        return FrameTokens.of_frames(out, b, t)

    def forward(self, pixels: torch.Tensor | None = None, tokens: FrameTokens | None = None,
                drop_queries: torch.Tensor | None = None) -> ALTOutput:
        """Logits from uint8 pixels (B, T, 3, H, W) or from cached `FrameTokens` (same result). `drop_queries`
        (B, Nq) bool removes those aligned queries from the adapter (deletion tests of explanations)."""
        video, alignment, shares = self.embed(pixels, tokens, drop_queries)
        return ALTOutput(self.logits(video), video, alignment, shares)

    def logits(self, video: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """s * cos(z, c_j) against the model's label set or another class matrix: (B, C)."""
        return cosine_logits(video, self.class_embeddings if classes is None else classes, self.logit_scale)

    def embed(self, pixels: torch.Tensor | None = None, tokens: FrameTokens | None = None,
              drop_queries: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, Alignment | None, torch.Tensor | None]:
        """The video embedding z (B, D) and, for ALT, the alignment and each query's share of z (B, Nq, D):
        everything before a label set."""
        if (pixels is None) == (tokens is None):
            raise ValueError("pass exactly one of pixels or tokens")
        tokens = tokens if tokens is not None else self.encode_frames(pixels)
        frame = tokens.frame.float()
        alignment = shares = None
        if self.config.adapter == "meanpool":
            video = frame.mean(1)
        elif self.config.adapter == "temporal":
            video = self.adapter(frame)
        elif self.learned_queries is not None:
            b, n = frame.shape[0], self.config.num_queries
            query_emb = self.learned_queries.expand(b, -1, -1)  # (B, Nq, D)
            ones = torch.ones(b, n, device=frame.device)
            video, shares = self.adapter(query_emb, ones, ones.bool(), frame, tokens.regions.float(),
                                         tokens.positions.float())
        else:
            regions = tokens.regions.float()
            alignment = self.aligner(regions, tokens.sizes.float(), tokens.positions.float(), self.entity_embeddings)
            alignment.patch_region = tokens.patch_region
            if drop_queries is not None:
                alignment.query_valid = alignment.query_valid & ~drop_queries
            query_emb = self.entity_embeddings[alignment.query_index]  # (B, Nq, D)
            video, shares = self.adapter(query_emb, alignment.query_score, alignment.query_valid, frame, regions,
                                         tokens.positions.float(), alignment.trajectory, alignment.query_regions)
        return video, alignment, shares

    def forward_views(self, pixels: torch.Tensor) -> ALTOutput:
        """Test-time views (B, V, T, 3, H, W): logits averaged over views. No alignment: an explanation is of one
        view (`predict_batch` explains each video's first)."""
        b, v = pixels.shape[:2]
        out = self(pixels.flatten(0, 1))
        return ALTOutput(out.logits.view(b, v, -1).mean(1), out.video.view(b, v, -1).mean(1))

    def loss(self, output: ALTOutput, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.logits, targets, label_smoothing=self.config.label_smoothing)

    def query_contributions(self, output: ALTOutput, target: torch.Tensor) -> torch.Tensor:
        """Each aligned query's contribution to the logit of a target class, per video: s * <share_q, c> / |z|.
        The logit is exactly the sum of these and the rest of z's; masked slots give 0.

        target (B, D) one class embedding per video -> (B, Nq)."""
        if output.query_shares is None:
            raise ValueError("this output has no query shares: only ALT's adapter makes them")
        norm = output.video.float().norm(dim=-1, keepdim=True).clamp(min=1e-12)  # (B, 1)
        shares = output.query_shares.float()
        return self.logit_scale.exp() * torch.einsum("bqd,bd->bq", shares, target.float()) / norm

    def explain(self, output: ALTOutput, item: int = 0, target: torch.Tensor | None = None
                ) -> list[EntityExplanation]:
        """The entities behind one video's prediction, the one that adds most to the `target` class's logit
        (D,) first (default: the top class of `output.logits`)."""
        if output.alignment is None:
            return []
        if target is None:
            target = self.class_embeddings[output.logits[item].argmax()]
        contributions = self.query_contributions(
            ALTOutput(output.logits[item:item + 1], output.video[item:item + 1], None,
                      output.query_shares[item:item + 1]), target[None])[0].detach()  # (Nq,)
        return explain(output.alignment, [e.unit for e in self.entities],
                       [e.description for e in self.entities], contributions, item)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: everything but the frozen backbone, which its config names."""
        state = self.state_dict()
        keep = {k for k in state if not k.startswith(("backbone.", "encoder."))}
        keep |= {f"backbone.{n}" for n, p in self.backbone.named_parameters() if p.requires_grad}
        return {k: state[k] for k in sorted(keep)}
