"""Entity-to-region alignment and query selection (docs/method.md, "Alignment").

Each region takes one entity of the corpus: a straight-through Gumbel-softmax one-hot while
training with a trainable image tower (so gradients reach the region-entity similarity), the argmax
otherwise: with a frozen tower nothing upstream of the similarity trains, and sampling would only add
noise to the queries. A video's
queries are the entities with the highest alignment score, aggregated over its frames and
regions weighted by region size. Only entities that some region took can be queries; when fewer
than N_q were taken, the empty slots are marked invalid and the adapter masks them out. Where and when
each query's entity was found (the regions that took it, and per frame the share of the frame they cover
and their centroid) goes to the adapter with the query.
Similarity and assignment run in fp32 even under autocast: bf16 rounding flips the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Alignment:
    query_index: torch.Tensor  # (B, Nq) entity index of each query, strongest first
    query_score: torch.Tensor  # (B, Nq) aggregated alignment score (differentiable in training); 0 when invalid
    query_valid: torch.Tensor  # (B, Nq) bool: a region took this entity (False: an empty, masked slot)
    region_entity: torch.Tensor  # (B, T, R) entity assigned to each region
    query_regions: torch.Tensor  # (B, Nq, T, R) bool: the regions that took the query's entity
    trajectory: torch.Tensor  # (B, Nq, T, 3) per frame: share of the frame those regions cover, their centroid x, y
    patch_region: torch.Tensor | None = None  # (B, T, P) region holding each patch; known when run from pixels

    @property
    def frames_found(self) -> torch.Tensor:
        """(B, Nq, T) bool: frames where a region took the query's entity."""
        return self.query_regions.any(-1)

    def patch_entity(self, item: int) -> torch.Tensor | None:
        """(T, P) the entity each patch's region took, for one video: what the explanation picture tints."""
        if self.patch_region is None:
            return None
        return self.region_entity[item].gather(1, self.patch_region[item])


@dataclass
class EntityExplanation:
    """Why a prediction was made: an entity, how much its query adds to the predicted class's logit, how
    strongly it aligned, and where."""

    unit: str
    description: str
    entity: int  # its index in the corpus
    contribution: float  # to the predicted class's logit (logit units; the explanation's order)
    score: float  # alignment score
    frames: list[int]


class EntityAligner(nn.Module):
    """Regions -> entities -> the video's queries (docs/method.md, "Alignment").

    `gradient_paths`: when a dict, a training forward stores the similarity as it enters the soft assignment
    ("assign") and the score ("score"), with their gradients kept, so the share of the similarity's gradient
    that flows through the straight-through estimator can be measured (`soft_gradient_shares`)."""

    def __init__(self, num_queries: int, similarity_temperature: float = 0.01, gumbel_tau: float = 1.0):
        super().__init__()
        self.num_queries = num_queries
        self.similarity_temperature = similarity_temperature
        self.gumbel_tau = gumbel_tau
        self.gradient_paths: dict[str, torch.Tensor] | None = None

    def forward(self, regions: torch.Tensor, sizes: torch.Tensor, positions: torch.Tensor,
                entities: torch.Tensor) -> Alignment:
        # regions (B, T, R, D) normalised, sizes (B, T, R), positions (B, T, R, 2), entities (K, D) normalised
        num_entities = entities.shape[0]
        if num_entities < self.num_queries:
            raise ValueError(f"the corpus has {num_entities} entities, fewer than {self.num_queries} queries")
        with torch.autocast(regions.device.type, enabled=False):
            similarity = regions.float() @ entities.float().T  # (B, T, R, K)
            to_assign, to_score = similarity.view_as(similarity), similarity.view_as(similarity)
            if self.gradient_paths is not None and similarity.requires_grad:
                for name, path in (("assign", to_assign), ("score", to_score)):
                    path.retain_grad()
                    self.gradient_paths[name] = path
            logits = to_assign / self.similarity_temperature
            if self.training and regions.requires_grad:
                assign = F.gumbel_softmax(logits, tau=self.gumbel_tau, hard=True)  # straight-through one-hot
            else:
                assign = F.one_hot(logits.argmax(-1), num_entities).float()
            sizes = sizes.float()
            weight = sizes / sizes.sum(dim=(1, 2), keepdim=True)  # (B, T, R)
            score = torch.einsum("btr,btrk->bk", weight, assign * to_score)  # (B, K)
        region_entity = assign.detach().argmax(-1)  # (B, T, R)
        taken = F.one_hot(region_entity.flatten(1), num_entities).amax(1).bool()  # (B, K) some region took it
        ranking = score.detach().masked_fill(~taken, -torch.inf)
        query_index = ranking.topk(self.num_queries, dim=-1).indices  # (B, Nq): taken entities first
        query_valid = taken.gather(1, query_index)
        query_score = score.gather(1, query_index) * query_valid
        found = region_entity[:, None] == query_index[:, :, None, None]  # (B, Nq, T, R)
        return Alignment(query_index, query_score, query_valid, region_entity, found,
                         trajectory(found, sizes, positions.float()))


def trajectory(found: torch.Tensor, sizes: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Where and when each query's entity was found: per frame, the share of the frame covered by the regions
    that took it and their size-weighted centroid (0, 0 where it was not found).

    found (B, Nq, T, R) bool, sizes (B, T, R), positions (B, T, R, 2) -> (B, Nq, T, 3)."""
    covered = found * sizes[:, None]  # (B, Nq, T, R) patches of each found region
    share = covered.sum(-1) / sizes.sum(-1)[:, None]  # (B, Nq, T)
    centroid = torch.einsum("bqtr,btrc->bqtc", covered, positions) / covered.sum(-1, keepdim=True).clamp(min=1e-6)
    return torch.cat([share[..., None], centroid], dim=-1)


def soft_gradient_shares(aligner: EntityAligner, loss_fn) -> torch.Tensor:
    """Per region, the share of the similarity's gradient that flows through the soft assignment (the
    straight-through Gumbel estimator) rather than through the score it weights: |g_assign| / (|g_assign| +
    |g_score|), norms over the entities. (B * T * R,)

    `loss_fn()` runs a training forward through `aligner` with a trainable tower and returns the loss. A share
    near 0 is a saturated softmax: that region's assignment passes no gradient and it learns only through the
    score."""
    aligner.gradient_paths = {}
    try:
        loss_fn().backward()
        paths = aligner.gradient_paths
        if set(paths) != {"assign", "score"}:
            raise ValueError("the forward ran no training-time assignment: train mode and a trainable tower needed")
        g_assign, g_score = (paths[name].grad.norm(dim=-1).flatten() for name in ("assign", "score"))
    finally:
        aligner.gradient_paths = None
    return g_assign / (g_assign + g_score).clamp(min=1e-30)


def explain(alignment: Alignment, units: list[str], descriptions: list[str], contributions: torch.Tensor,
            item: int = 0) -> list[EntityExplanation]:
    """The explanation record of one video in a batch: the entities its regions took, the one whose query adds
    most to the predicted class first. contributions (Nq,): each query slot's, for this video."""
    out = []
    for q in explanation_slots(alignment, contributions, item):
        k = int(alignment.query_index[item, q])
        frames = alignment.frames_found[item, q].nonzero().flatten().tolist()
        out.append(EntityExplanation(units[k], descriptions[k], k, float(contributions[q]),
                                     float(alignment.query_score[item, q]), frames))
    return out


def explanation_slots(alignment: Alignment, contributions: torch.Tensor, item: int = 0) -> list[int]:
    """The valid query slots of one video, largest contribution first: the explanation's order."""
    valid = alignment.query_valid[item].nonzero().flatten().tolist()
    return sorted(valid, key=lambda q: -float(contributions[q]))
