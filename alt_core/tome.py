"""Region-aware frame embeddings: open_clip's ViT with token merging (ToMe) in every block
(docs/method.md, "Region-aware frame embeddings").

ToMe (Bolya et al., ICLR 2023) merges similar tokens by bipartite soft matching after each
attention layer. Merged tokens behave as regions: after L blocks a frame has R = N - sum_l r_l of
them, each with a size (how many patches it covers). As in ToMe, a block merges
r_l = min(r, (tokens - 1) // 2) pairs, so set A always has r_l tokens besides CLS (`merge_schedule`).
open_clip has no ToMe, so `ToMeBlock` re-runs the weights of an open_clip `ResidualAttentionBlock`
with proportional attention and a merge step.
At r = 0 the output equals open_clip's own forward.
As ToMe's source tracking, the encoder follows every patch through the merges (`patch_region`), so a
region can be drawn as the patches it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class RegionTokens:
    """Frame and region embeddings in the joint space, L2-normalised."""

    frame: torch.Tensor  # (B, D) the CLS token
    regions: torch.Tensor  # (B, R, D)
    sizes: torch.Tensor  # (B, R) patches covered by each region
    positions: torch.Tensor  # (B, R, 2) centroid (x, y) of each region's patches, in [0, 1] of the image side
    patch_region: torch.Tensor  # (B, P) long: the region each patch was merged into (row-major patch grid)


@dataclass
class FrameTokens:
    """Region tokens of every frame of a clip: what the frozen image tower produces, and what the decode
    stage caches so that training never touches pixels again."""

    frame: torch.Tensor  # (B, T, D)
    regions: torch.Tensor  # (B, T, R, D)
    sizes: torch.Tensor  # (B, T, R)
    positions: torch.Tensor  # (B, T, R, 2) region centroids (x, y) in [0, 1]
    patch_region: torch.Tensor | None = None  # (B, T, P) from pixels; cached tokens do not keep it

    @classmethod
    def of_frames(cls, out: RegionTokens, clips: int, frames: int) -> FrameTokens:
        """Regroup the tokens of clips x frames images (the encoder's output) by clip."""
        def per_clip(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(clips, frames, *t.shape[1:])

        return cls(per_clip(out.frame), per_clip(out.regions), per_clip(out.sizes), per_clip(out.positions),
                   per_clip(out.patch_region))

    def to(self, device: torch.device | str) -> FrameTokens:
        return FrameTokens(*(None if t is None else t.to(device) for t in
                             (self.frame, self.regions, self.sizes, self.positions, self.patch_region)))


def region_centroids(patch_region: torch.Tensor, grid: tuple[int, int], num_regions: int) -> torch.Tensor:
    """Where each region is: the mean (x, y) of the patch centres it holds, in [0, 1] of the image side.

    patch_region (B, P) long, row-major over a grid of (rows, cols) patches -> (B, R, 2)."""
    rows, cols = grid
    y, x = torch.meshgrid((torch.arange(rows, device=patch_region.device) + 0.5) / rows,
                          (torch.arange(cols, device=patch_region.device) + 0.5) / cols, indexing="ij")
    centres = torch.stack([x.flatten(), y.flatten()], -1).expand(patch_region.shape[0], -1, -1)  # (B, P, 2)
    index = patch_region[..., None].expand(-1, -1, 2)
    total = torch.zeros(patch_region.shape[0], num_regions, 2, device=patch_region.device).scatter_add_(1, index,
                                                                                                        centres)
    count = torch.zeros(patch_region.shape[0], num_regions, device=patch_region.device).scatter_add_(
        1, patch_region, torch.ones_like(patch_region, dtype=torch.float))
    return total / count.clamp(min=1)[..., None]


def clamped_r(r: int, tokens: int) -> int:
    """Pairs a block can merge: at most the non-CLS tokens of set A ((tokens - 1) // 2)."""
    return min(r, (tokens - 1) // 2)


def merge_schedule(num_patches: int, layers: int, r: int) -> list[int]:
    """Pairs merged by each block for a frame of CLS + `num_patches` tokens."""
    schedule, tokens = [], 1 + num_patches
    for _ in range(layers):
        schedule.append(clamped_r(r, tokens))
        tokens -= schedule[-1]
    return schedule


class BipartiteMerge(nn.Module):
    """Bipartite soft matching: merge the r most similar (A, B) token pairs, weighted by size.

    Token 0 (CLS) sits in set A and is never merged; r is clamped to the other tokens of A.
    """

    def __init__(self, r: int):
        super().__init__()
        self.r = r

    def forward(self, x: torch.Tensor, size: torch.Tensor,
                keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """-> merged tokens, their sizes, and where each input token went (B, N) (None: nothing merged)."""
        # x (B, N, C), size (B, N, 1), keys (B, N, Ck): attention keys averaged over heads
        r = clamped_r(self.r, x.shape[1])
        if r == 0:
            return x, size, None
        metric = F.normalize(keys, dim=-1)
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)  # (B, Na, Nb) cosine
        scores[:, 0, :] = -torch.inf  # protect CLS
        best_score, best_dst = scores.max(dim=-1)  # (B, Na)
        order = best_score.argsort(dim=-1, descending=True)
        src_idx = order[:, :r]  # (B, r) A tokens that merge; CLS scores -inf, so it sorts last
        keep_idx = order[:, r:].sort(dim=-1).values  # (B, Na - r) A tokens kept, CLS first
        dst_idx = best_dst.gather(1, src_idx)  # (B, r)

        def merge(values: torch.Tensor) -> torch.Tensor:
            a, dst = values[:, ::2], values[:, 1::2]
            width = values.shape[-1]
            kept = a.gather(1, keep_idx[..., None].expand(-1, -1, width))
            moved = a.gather(1, src_idx[..., None].expand(-1, -1, width))
            dst = dst.scatter_add(1, dst_idx[..., None].expand(-1, -1, width), moved)
            return torch.cat([kept, dst], dim=1)

        merged_size = merge(size)
        return merge(x * size) / merged_size, merged_size, self.destinations(x.shape[1], keep_idx, src_idx, dst_idx)

    @staticmethod
    def destinations(n: int, keep_idx: torch.Tensor, src_idx: torch.Tensor, dst_idx: torch.Tensor) -> torch.Tensor:
        """Output position of every input token (B, N): kept A tokens first, then B tokens, which also receive
        the merged A tokens."""
        b, kept = keep_idx.shape
        a_to = torch.empty(b, (n + 1) // 2, dtype=torch.long, device=keep_idx.device)
        a_to.scatter_(1, keep_idx, torch.arange(kept, device=keep_idx.device).expand(b, -1))
        a_to.scatter_(1, src_idx, kept + dst_idx)
        b_to = kept + torch.arange(n // 2, device=keep_idx.device).expand(b, -1)
        out = torch.empty(b, n, dtype=torch.long, device=keep_idx.device)
        out[:, ::2], out[:, 1::2] = a_to, b_to
        return out


class ToMeBlock(nn.Module):
    """One open_clip residual block run with proportional attention, followed by a merge."""

    def __init__(self, block: nn.Module, r: int):
        super().__init__()
        if not isinstance(getattr(block, "attn", None), nn.MultiheadAttention):
            raise ValueError("ToMe supports open_clip's default ResidualAttentionBlock (nn.MultiheadAttention) only")
        self.block = block
        self.merge = BipartiteMerge(r)

    def forward(self, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        blk, attn = self.block, self.block.attn
        b, n, c = x.shape
        h = attn.num_heads
        q, k, v = F.linear(blk.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.view(b, n, h, c // h).transpose(1, 2) for t in (q, k, v))  # (B, H, N, C/H)
        bias = None
        if self.merge.r > 0:  # proportional attention: a token of size s counts s times
            bias = size.log().view(b, 1, 1, n).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(b, n, c)
        x = x + blk.ls_1(attn.out_proj(out))
        x, size, moved_to = self.merge(x, size, k.mean(dim=1))
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
        return x, size, moved_to


class RegionEncoder(nn.Module):
    """open_clip's image tower with ToMe; returns frame and region embeddings in the joint space."""

    def __init__(self, visual: nn.Module, r: int = 0):
        super().__init__()
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "final_ln_after_pool", False):
            raise ValueError("region tokens need a ViT with token pooling (no attentional pooler)")
        if r < 0:
            raise ValueError(f"ToMe r must be >= 0, got {r}")
        self.visual = visual
        self.r = r
        self.grid = tuple(visual.grid_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.schedule = merge_schedule(self.num_patches, len(visual.transformer.resblocks), r)
        self.num_regions = self.num_patches - sum(self.schedule)
        self.blocks = nn.ModuleList(ToMeBlock(blk, r) for blk in visual.transformer.resblocks)

    def forward(self, images: torch.Tensor) -> RegionTokens:
        # images (B, 3, H, W), normalised
        x = self.visual._embeds(images)  # (B, 1 + N, W)
        size = torch.ones(x.shape[0], x.shape[1], 1, device=x.device, dtype=x.dtype)
        token_of_patch = torch.arange(1, x.shape[1], device=x.device).expand(x.shape[0], -1)  # (B, P); 0 is CLS
        for block in self.blocks:
            x, size, moved_to = block(x, size)
            if moved_to is not None:
                token_of_patch = moved_to.gather(1, token_of_patch)
        x = self.visual.ln_post(x) @ self.visual.proj  # (B, 1 + R, D)
        x = F.normalize(x, dim=-1)
        patch_region = token_of_patch - 1
        return RegionTokens(frame=x[:, 0], regions=x[:, 1:], sizes=size[:, 1:, 0],
                            positions=region_centroids(patch_region, self.grid, x.shape[1] - 1),
                            patch_region=patch_region)
