"""The one prediction function (`alt_core.predict.predict_batch`) and what the Serve model deployment returns
with it, in process: no Ray, no server."""

from __future__ import annotations

import asyncio
import json

import pytest

from alt_core.checkpoint import save_checkpoint
from alt_core.predict import VideoRequest, predict_batch
from deploy.app import ALTModelServer, ServeSettings
from tests.helpers import LABELS, make_model, random_clip

OTHER_LABELS = ["hexagon orbiting", "cross shrinking", "circle moving left"]


def test_a_batch_predicts_each_video_as_it_would_alone(micro_backbone, micro_corpus):
    """Videos of one batch differ in view count, label set, top-k and what they ask for; each gets what it
    would get alone (the views of one video are averaged, its entities come from its own first view)."""
    model = make_model(micro_backbone, micro_corpus).eval()
    videos = [VideoRequest(random_clip(2, seed=1), "a", top_k=3),
              VideoRequest(random_clip(1, seed=2), "b", labels=OTHER_LABELS, top_k=2, explain=False),
              VideoRequest(random_clip(3, seed=3), "c", picture=True)]
    together = predict_batch(model, videos)
    alone = [predict_batch(model, [video])[0] for video in videos]
    for batched, single in zip(together, alone, strict=True):  # equal up to float rounding of a larger matmul
        assert batched.name == single.name and batched.labels == single.labels
        assert batched.scores == pytest.approx(single.scores, abs=1e-4)
        assert [(e.unit, e.frames) for e in batched.entities] == [(e.unit, e.frames) for e in single.entities]
        assert [e.score for e in batched.entities] == pytest.approx([e.score for e in single.entities], abs=1e-4)
    assert [len(p.labels) for p in together] == [3, 2, len(LABELS)]
    assert set(together[1].labels) <= set(OTHER_LABELS) and together[1].entities == []
    assert together[0].entities and together[2].picture is not None and together[0].picture is None
    first_view = predict_batch(model, [VideoRequest(videos[2].views[:1], "c")])[0]
    assert together[2].entities == first_view.entities  # the explanation is the first view's
    assert together[2].scores != first_view.scores  # while the labels average all three views


def test_the_model_deployment_names_a_checkpoint_directory_without_its_path(tmp_path, micro_backbone, micro_corpus):
    """`alt serve --checkpoint DIR`: the replica's model card and its predictions name the directory, never
    where it is (the class Serve runs, built here in process)."""
    directory = save_checkpoint(make_model(micro_backbone, micro_corpus), tmp_path / "my-checkpoint")
    replica = ALTModelServer.func_or_class(ServeSettings(model=str(directory.resolve()), watch_s=0).to_dict())
    card = asyncio.run(replica.info())["model"]
    result = replica.forward(replica.loaded, [VideoRequest(random_clip(1), "upload", top_k=2, picture=True)])[0]
    assert card["name"] == "my-checkpoint" and card["version"] is None and result["model"] == card
    result.pop("picture")
    assert str(tmp_path) not in json.dumps(card) + json.dumps(result)
