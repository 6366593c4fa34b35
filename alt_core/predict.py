"""Prediction: test-time views of a batch of videos -> top-k labels, the entities that explain them, and the
explanation picture. The one implementation behind `alt predict`, the Serve model deployment and batch
inference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alt_core.alignment import EntityExplanation
from alt_core.config import DEFAULT_TOP_K
from alt_core.model import ALTModel
from alt_core.picture import ExplanationPicture, explanation_picture
from alt_core.video import load_views

SCORE_DIGITS = 4  # scores and alignment scores are rounded to this many digits wherever they are shown


@dataclass
class VideoRequest:
    """One video of a batch: its test-time views and what to return for it."""

    views: torch.Tensor  # (V, T, 3, H, W) uint8: V temporal clips x spatial crops, logits averaged over them
    name: str = "<video>"  # the file or upload name, carried into the prediction
    labels: Sequence[str] | None = None  # open vocabulary: score these names; None: the model's own labels
    top_k: int = DEFAULT_TOP_K  # at most the number of labels
    explain: bool = True  # return the aligned entities
    picture: bool = False  # draw the explanation picture (first view; needs a model that aligns entities)


@dataclass
class Prediction:
    name: str
    labels: list[str]  # top-k, best first
    scores: list[float]  # softmax probabilities, rounded to SCORE_DIGITS
    entities: list[EntityExplanation]  # from the first view; empty unless asked for or for a model without them
    picture: ExplanationPicture | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """The JSON form every caller returns: the HTTP API, `alt predict --json` and batch inference."""
        return {"predictions": [{"label": label, "score": score}
                                for label, score in zip(self.labels, self.scores, strict=True)],
                "entities": [{"unit": e.unit, "description": e.description,
                              "contribution": round(e.contribution, SCORE_DIGITS),
                              "score": round(e.score, SCORE_DIGITS), "frames": e.frames} for e in self.entities]}

    def text(self) -> str:
        lines = [self.name]
        lines += [f"  {i + 1}. {label:<40} {score:.3f}" for i, (label, score) in
                  enumerate(zip(self.labels, self.scores, strict=True))]
        if self.entities:
            lines.append("  aligned entities (contribution to the top label's logit, alignment score, frames):")
            lines += [f"    - {e.unit:<24} {e.contribution:+.2f}  {e.score:+.3f}  frames {e.frames}"
                      for e in self.entities]
        return "\n".join(lines)


@torch.inference_mode()
def predict_batch(model: ALTModel, videos: Sequence[VideoRequest],
                  class_matrix: Callable[[Sequence[str]], torch.Tensor] | None = None) -> list[Prediction]:
    """Predictions for a batch of videos in one forward pass over all their views.

    Videos may differ in view count and label set. `class_matrix` maps a label set to its class embeddings
    (C, D) (default: the model's text tower; a server passes its cache). On a GPU the forward runs under bf16
    autocast (the model keeps its alignment in fp32); logits are computed in fp32."""
    if not videos:
        return []
    class_matrix = class_matrix or model.class_matrix
    device = next(model.parameters()).device
    pixels = torch.cat([video.views for video in videos]).to(device)  # (sum V, T, 3, H, W)
    with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        out = model(pixels=pixels)
    predictions, first = [], 0  # `first`: the batch index of a video's first view
    for video in videos:
        embeddings = out.video[first:first + len(video.views)].float()
        names = list(video.labels) if video.labels is not None else model.labels
        classes = class_matrix(names) if video.labels is not None else None
        probs = model.logits(embeddings, classes).mean(0).softmax(-1)  # views averaged
        top = probs.topk(min(video.top_k, len(names)))
        labels, scores = [names[i] for i in top.indices.tolist()], [round(float(p), SCORE_DIGITS) for p in top.values]
        target = (classes if classes is not None else model.class_embeddings)[top.indices[0]]
        entities = model.explain(out, first, target)  # the first view's, for the top label
        picture = None
        if video.picture and out.alignment is not None:
            picture = explanation_picture(video.views[0], out.alignment, first, entities, labels, scores)
        prediction = Prediction(video.name, labels, scores, entities if video.explain else [], picture)
        predictions.append(prediction)
        first += len(video.views)
    return predictions


def predict_video(model: ALTModel, path: str | Path, top_k: int = DEFAULT_TOP_K, clips: int = 1, crops: int = 1,
                  picture: bool = False) -> Prediction:
    """Decode one video file's test-time views and predict it."""
    views = load_views(path, model.config.num_frames, model.backbone.image_size, clips, crops)
    return predict_batch(model, [VideoRequest(views, str(path), top_k=top_k, picture=picture)])[0]
