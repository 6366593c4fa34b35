"""One-off prediction on a video file: top-k labels and the entities that explain them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from alt_core.alignment import EntityExplanation
from alt_core.model import ALTModel
from alt_core.picture import ExplanationPicture, explanation_picture
from alt_core.video import load_views


@dataclass
class Prediction:
    path: str
    labels: list[str]  # top-k, best first
    scores: list[float]  # softmax probabilities
    entities: list[EntityExplanation]
    picture: ExplanationPicture | None = field(default=None, repr=False)  # first view's, when asked for

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "picture"}

    def text(self) -> str:
        lines = [f"{self.path}"]
        lines += [f"  {i + 1}. {label:<40} {score:.3f}" for i, (label, score) in
                  enumerate(zip(self.labels, self.scores, strict=True))]
        if self.entities:
            lines.append("  aligned entities (score, frames):")
            lines += [f"    - {e.unit:<24} {e.score:+.3f}  frames {e.frames}" for e in self.entities]
        return "\n".join(lines)


@torch.no_grad()
def predict_views(model: ALTModel, views: torch.Tensor, path: str, top_k: int = 5, picture: bool = False) -> Prediction:
    """views (V, T, 3, H, W) uint8 of one video; labels from all views, entities (and the explanation picture)
    from the first view."""
    out = model.forward_views(views[None].to(model.class_embeddings.device))
    probs = out.logits[0].softmax(-1)
    k = min(top_k, len(model.labels))
    top = probs.topk(k)
    prediction = Prediction(path, [model.labels[i] for i in top.indices.tolist()],
                            [round(float(p), 4) for p in top.values], model.explain(out))
    if picture:
        if out.alignment is None:
            raise ValueError(f"a {model.config.adapter} model aligns no entities, so it has no explanation picture")
        prediction.picture = explanation_picture(views[0], out.alignment, 0, prediction.entities, prediction.labels,
                                                 prediction.scores)
    return prediction


def predict_video(model: ALTModel, path: str | Path, top_k: int = 5, clips: int = 1, crops: int = 1,
                  picture: bool = False) -> Prediction:
    views = load_views(path, model.config.num_frames, model.backbone.image_size, clips, crops)
    return predict_views(model, views, str(path), top_k, picture)
