"""Entity-to-region alignment and query selection (DESIGN §2C).

Each region takes one entity of the corpus: a straight-through Gumbel-softmax one-hot while
training (so gradients reach the region-entity similarity), the argmax at inference. A video's
queries are the entities with the highest alignment score, aggregated over its frames and
regions weighted by region size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Alignment:
    query_index: torch.Tensor  # (B, Nq) entity index of each query
    query_score: torch.Tensor  # (B, Nq) aggregated alignment score (differentiable in training)
    region_entity: torch.Tensor  # (B, T, R) entity assigned to each region
    frames_found: torch.Tensor  # (B, Nq, T) bool: frames where a region took the query's entity


@dataclass
class EntityExplanation:
    """Why a prediction was made: an entity, how strongly it aligned, and where."""

    unit: str
    description: str
    score: float
    frames: list[int]


class EntityAligner(nn.Module):
    def __init__(self, num_queries: int, similarity_temperature: float = 0.01, gumbel_tau: float = 1.0):
        super().__init__()
        self.num_queries = num_queries
        self.similarity_temperature = similarity_temperature
        self.gumbel_tau = gumbel_tau

    def forward(self, regions: torch.Tensor, sizes: torch.Tensor, entities: torch.Tensor) -> Alignment:
        # regions (B, T, R, D) normalised, sizes (B, T, R), entities (K, D) normalised
        if entities.shape[0] < self.num_queries:
            raise ValueError(f"the corpus has {entities.shape[0]} entities, fewer than {self.num_queries} queries")
        similarity = regions @ entities.T  # (B, T, R, K)
        logits = similarity / self.similarity_temperature
        if self.training:
            assign = F.gumbel_softmax(logits, tau=self.gumbel_tau, hard=True)  # straight-through one-hot
        else:
            assign = F.one_hot(logits.argmax(-1), entities.shape[0]).to(similarity.dtype)
        weight = sizes / sizes.sum(dim=(1, 2), keepdim=True)  # (B, T, R)
        score = torch.einsum("btr,btrk->bk", weight, assign * similarity)  # (B, K)
        top_score, top_index = score.detach().topk(self.num_queries, dim=-1)  # (B, Nq)
        query_score = score.gather(1, top_index)
        region_entity = assign.argmax(-1)  # (B, T, R)
        found = region_entity[:, None] == top_index[:, :, None, None]  # (B, Nq, T, R)
        return Alignment(top_index, query_score, region_entity, found.any(-1))


def explain(alignment: Alignment, units: list[str], descriptions: list[str], item: int = 0) -> list[EntityExplanation]:
    """The explanation record of one video in a batch, strongest entity first."""
    out = []
    for q in range(alignment.query_index.shape[1]):
        k = int(alignment.query_index[item, q])
        frames = alignment.frames_found[item, q].nonzero().flatten().tolist()
        out.append(EntityExplanation(units[k], descriptions[k], float(alignment.query_score[item, q]), frames))
    return out
