"""Video adapters: ALT's entity-query decoder and the temporal-transformer baseline (docs/method.md, "Adapter").

Both end in a zero-initialised projection added to the mean frame embedding, so an untrained
adapter is exactly the CLIP mean-pool classifier and training starts from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(d_in: int, d_out: int, hidden: int | None = None) -> nn.Sequential:
    hidden = hidden or d_out
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class Attention(nn.Module):
    """Multi-head attention (q from x, k/v from context) on PyTorch's fused kernel."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"adapter width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q, self.kv, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, Nq, d), context (B, Nk, d), key_mask (B, Nk) bool: False keys are not attended to
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)  # (B, H, Nq, d/H)
        k, v = self.kv(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        mask = key_mask[:, None, None, :] if key_mask is not None else None  # (B, 1, 1, Nk)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, Nq, d/H)
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

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, N, d), context (B, Nk, d), mask (B, N) bool: tokens of x that others may attend to
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, mask)
        if self.cross:
            x = x + self.cross_attn(self.norm_q(x), self.norm_kv(context))
        return x + self.ffn(self.norm_ffn(x))


class AttentionPool(nn.Module):
    """Weighted mean of tokens, weights from a learned scoring vector; masked tokens get weight 0."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, N, d), mask (B, N) bool
        x = self.norm(x)
        score = self.score(x)  # (B, N, 1)
        if mask is not None:
            score = score.masked_fill(~mask[..., None], -torch.inf)
        return (score.softmax(dim=1) * x).sum(1)  # (B, d)


class ALTAdapter(nn.Module):
    """Entity text embeddings as queries reading the video's frame and region tokens."""

    def __init__(self, embed_dim: int, width: int, depth: int, heads: int, max_frames: int):
        super().__init__()
        self.max_frames = max_frames
        self.query_mlp = mlp(embed_dim, width)
        self.query_score = nn.Linear(1, width)  # how strongly the entity was found
        self.token_mlp = mlp(embed_dim, width)
        self.temporal_pos = nn.Parameter(torch.zeros(max_frames, width))
        self.temporal_conv = nn.Conv1d(width, width, kernel_size=3, padding=1, groups=width)
        self.layers = nn.ModuleList(Block(width, heads, cross=True) for _ in range(depth))
        self.pool = AttentionPool(width)
        self.proj = nn.Linear(width, embed_dim)
        nn.init.trunc_normal_(self.temporal_pos, std=0.02)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, entity_emb: torch.Tensor, entity_score: torch.Tensor, query_valid: torch.Tensor,
                frame: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        # entity_emb (B, Nq, D), entity_score (B, Nq), query_valid (B, Nq) bool, frame (B, T, D), regions (B, T, R, D)
        t = frame.shape[1]
        if t > self.max_frames:
            raise ValueError(f"{t} frames exceed the adapter's max_frames={self.max_frames}")
        queries = self.query_mlp(entity_emb) + self.query_score(entity_score[..., None])  # (B, Nq, d)
        tokens = self.token_mlp(torch.cat([frame[:, :, None], regions], dim=2))  # (B, T, 1+R, d)
        motion = self.temporal_conv(tokens[:, :, 0].transpose(1, 2)).transpose(1, 2)  # (B, T, d)
        tokens = torch.cat([tokens[:, :, :1] + motion[:, :, None], tokens[:, :, 1:]], dim=2)
        tokens = tokens + self.temporal_pos[:t, None]  # (B, T, 1+R, d)
        context = tokens.flatten(1, 2)  # (B, T*(1+R), d)
        for layer in self.layers:
            queries = layer(queries, context, query_valid)
        return self.proj(self.pool(queries, query_valid)) + frame.mean(1)  # (B, D)


class TemporalAdapter(nn.Module):
    """Baseline: a temporal transformer over frame embeddings, no entity queries."""

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

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        # frame (B, T, D)
        t = frame.shape[1]
        if t > self.max_frames:
            raise ValueError(f"{t} frames exceed the adapter's max_frames={self.max_frames}")
        x = self.inp(frame) + self.temporal_pos[:t]  # (B, T, d)
        for layer in self.layers:
            x = layer(x)
        return self.proj(self.pool(x)) + frame.mean(1)


def cosine_logits(video: torch.Tensor, classes: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """s * cos(z, c_j): (B, D) x (C, D) -> (B, C)."""
    return log_scale.exp() * F.normalize(video, dim=-1) @ classes.T
