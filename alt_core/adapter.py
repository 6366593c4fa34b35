"""Video adapters: ALT's entity-query decoder and the temporal-transformer baseline (docs/method.md, "Adapter").

Both end in zero-initialised projections added to the mean frame embedding, so an untrained adapter is
exactly the CLIP mean-pool classifier and training starts from it. ALT contains the baseline: its queries
read the frames as the baseline's encoder leaves them, and the baseline's output is part of ALT's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def mlp(d_in: int, d_out: int, hidden: int | None = None) -> nn.Sequential:
    hidden = hidden or d_out
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class Attention(nn.Module):
    """Multi-head attention (q from x, k/v from context) on PyTorch's fused kernel; `bias` is a bool mask
    (False keys are not attended to) or an additive float bias, broadcastable to (B, H, Nq, Nk)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"adapter width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q, self.kv, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, Nq, d), context (B, Nk, d)
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)  # (B, H, Nq, d/H)
        k, v = self.kv(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        if bias is not None and bias.dtype != torch.bool:
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, Nq, d/H)
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer layer: self-attention, optional cross-attention, FFN."""

    def __init__(self, dim: int, heads: int, cross: bool):
        super().__init__()
        self.norm_self, self.self_attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.cross = cross
        if cross:
            self.norm_q, self.norm_kv, self.cross_attn = nn.LayerNorm(dim), nn.LayerNorm(dim), Attention(dim, heads)
        self.norm_ffn, self.ffn = nn.LayerNorm(dim), mlp(dim, dim, 4 * dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                cross_bias: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, N, d), context (B, Nk, d), mask (B, N) bool: tokens of x that others may attend to,
        # cross_bias (B, H, N, Nk) added to the cross-attention logits
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, mask[:, None, None, :] if mask is not None else None)
        if self.cross:
            x = x + self.cross_attn(self.norm_q(x), self.norm_kv(context), cross_bias)
        return x + self.ffn(self.norm_ffn(x))


class AttentionPool(nn.Module):
    """Weighted mean of tokens, weights from a learned scoring vector; masked tokens get weight 0."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, N, d), mask (B, N) bool -> (B, d)
        return self.terms(x, mask).sum(1)

    def terms(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Each token's weighted share of the pool: (B, N, d), summing to the pool over N."""
        x = self.norm(x)
        score = self.score(x)  # (B, N, 1)
        if mask is not None:
            score = score.masked_fill(~mask[..., None], -torch.inf)
        return score.softmax(dim=1) * x


class TemporalEncoder(nn.Module):
    """Self-attention across the frame embeddings: the temporal baseline's body, which ALT contains.

    Returns the encoded frames (what ALT's queries read) and the zero-initialised projection of their
    attention pool (the baseline's contribution to the video embedding)."""

    def __init__(self, embed_dim: int, width: int, depth: int, heads: int, max_frames: int):
        super().__init__()
        self.max_frames = max_frames
        self.inp = nn.Linear(embed_dim, width)
        self.temporal_pos = nn.Parameter(torch.zeros(max_frames, width))
        self.layers = nn.ModuleList(Block(width, heads, cross=False) for _ in range(depth))
        self.pool = AttentionPool(width)
        self.proj = nn.Linear(width, embed_dim)
        nn.init.trunc_normal_(self.temporal_pos, std=0.02)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # frame (B, T, D) -> encoded frames (B, T, d), their pool projected (B, D)
        t = frame.shape[1]
        if t > self.max_frames:
            raise ValueError(f"{t} frames exceed the adapter's max_frames={self.max_frames}")
        x = self.inp(frame) + self.temporal_pos[:t]  # (B, T, d)
        for layer in self.layers:
            x = layer(x)
        return x, self.proj(self.pool(x))


class TemporalAdapter(nn.Module):
    """Baseline: a temporal transformer over frame embeddings, no entity queries."""

    def __init__(self, embed_dim: int, width: int, depth: int, heads: int, max_frames: int):
        super().__init__()
        self.encoder = TemporalEncoder(embed_dim, width, depth, heads, max_frames)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        # frame (B, T, D) -> (B, D)
        return frame.mean(1) + self.encoder(frame)[1]


class ALTAdapter(nn.Module):
    """Entity queries reading the video: the encoded frames (the temporal baseline's body) and the regions.

    z = mean frame embedding + the temporal encoder's pooled output (the baseline, whole) + the queries'
    pooled output (zero-initialised): an untrained ALT adapter is the temporal baseline, and what the queries
    add is learned on top (docs/method.md, "Adapter"). The alignment reaches the queries in up to three ways,
    each a setting: `alignment_bias` (a query attends first to the regions that took its entity),
    `query_trajectory` (when and where its entity was found, per frame, is part of the query) and
    `region_positions` (each region token knows its centroid)."""

    def __init__(self, embed_dim: int, width: int, depth: int, heads: int, max_frames: int,
                 alignment_bias: bool = True, query_trajectory: bool = False, region_positions: bool = False):
        super().__init__()
        self.max_frames = max_frames
        self.temporal = TemporalEncoder(embed_dim, width, depth, heads, max_frames)
        self.query_in = nn.Linear(embed_dim, width)
        self.query_score = nn.Linear(1, width)  # how strongly the entity was found
        self.query_trajectory = nn.Linear(3 * max_frames, width) if query_trajectory else None
        self.region_in = nn.Linear(embed_dim, width)
        self.region_time = nn.Parameter(torch.zeros(max_frames, width))
        self.region_position = mlp(2, width) if region_positions else None
        # per head, in units of log(keys): at 1 a query's own regions outweigh all other keys together
        self.own_region_bias = nn.Parameter(torch.ones(heads)) if alignment_bias else None
        self.layers = nn.ModuleList(Block(width, heads, cross=True) for _ in range(depth))
        self.pool = AttentionPool(width)
        self.proj = nn.Linear(width, embed_dim)
        nn.init.trunc_normal_(self.region_time, std=0.02)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, query_emb: torch.Tensor, query_score: torch.Tensor, query_valid: torch.Tensor,
                frame: torch.Tensor, regions: torch.Tensor, positions: torch.Tensor,
                trajectory: torch.Tensor | None = None,
                query_regions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The video embedding z (B, D) and each query's additive share of it (B, Nq, D; 0 for masked slots):
        z = mean frame + temporal pool + proj bias + the shares' sum, so a query's share scored against a
        class is its exact contribution to that class's logit before normalisation (the explanations' order)."""
        # query_emb (B, Nq, D), query_score (B, Nq), query_valid (B, Nq) bool, frame (B, T, D),
        # regions (B, T, R, D), positions (B, T, R, 2); from the alignment (None for learned queries):
        # trajectory (B, Nq, T, 3), query_regions (B, Nq, T, R) bool
        t = regions.shape[1]
        encoded, temporal_out = self.temporal(frame)  # (B, T, d), (B, D)
        queries = self.query_in(query_emb) + self.query_score(query_score[..., None])  # (B, Nq, d)
        if self.query_trajectory is not None and trajectory is not None:
            padded = F.pad(trajectory, (0, 0, 0, self.max_frames - t))  # (B, Nq, max_frames, 3)
            queries = queries + self.query_trajectory(padded.flatten(2))
        tokens = self.region_in(regions) + self.region_time[:t, None]  # (B, T, R, d)
        if self.region_position is not None:
            tokens = tokens + self.region_position(positions)
        context = torch.cat([encoded, tokens.flatten(1, 2)], dim=1)  # (B, T + T*R, d)
        bias = None
        if self.own_region_bias is not None and query_regions is not None:
            own = F.pad(query_regions.flatten(2).float(), (t, 0))  # (B, Nq, T + T*R): frame keys are no one's
            gate = self.own_region_bias * math.log(context.shape[1])  # (H,)
            bias = own[:, None] * gate[None, :, None, None]  # (B, H, Nq, T + T*R)
        for layer in self.layers:
            queries = layer(queries, context, query_valid, bias)
        shares = self.pool.terms(queries, query_valid) @ self.proj.weight.T  # (B, Nq, D)
        return frame.mean(1) + temporal_out + self.proj.bias + shares.sum(1), shares  # (B, D), (B, Nq, D)


def cosine_logits(video: torch.Tensor, classes: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """s * cos(z, c_j): (B, D) x (C, D) -> (B, C)."""
    return log_scale.exp() * F.normalize(video, dim=-1) @ classes.T
