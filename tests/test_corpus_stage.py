"""The corpus Ray Data stage: sharded embedding in entity order, provenance, idempotent rebuilds."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from alt_core.backbone import BackboneError
from alt_core.config import ENTITY_TEMPLATES, BackboneSpec
from alt_core.corpus import CorpusError, EntityCorpus, corpus_hash, gather_entities
from pipelines.corpus import build_corpus_dataset
from tests.helpers import LABELS, write_weights

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{name}\n" for name in LABELS))
    jsonl = tmp_path / "llm.jsonl"
    jsonl.write_text(json.dumps({"unit": "yo-yo", "description": "a spinning yo-yo", "labels": ["square spinning"]})
                     + "\n\n" + json.dumps({"unit": "hand", "description": "an open palm", "labels": ["ring growing"]})
                     + "\n")
    return labels, jsonl


def test_build_skip_force_and_change(inputs, tmp_path: Path, micro_weights: str, micro_backbone) -> None:
    labels, jsonl = inputs
    out = tmp_path / "sub" / "corpus.parquet"
    sources = ["builtin", "labels", str(jsonl)]
    args = dict(labels_file=labels, sources=sources, backbone="alt-micro", pretrained=micro_weights, out=out,
                batch_size=7, num_actors=2)  # several batches over two actors: order must be restored
    first = build_corpus_dataset(**args)

    entities = gather_entities(LABELS, sources)
    assert first["skipped"] is False and first["entities"] == len(entities)
    backbone_id = BackboneSpec("alt-micro", micro_weights).id
    assert backbone_id.startswith(f"alt-micro:{micro_weights}@")  # the weights' digest is part of the id
    assert first["content_hash"] == corpus_hash(entities, backbone_id, ENTITY_TEMPLATES)
    table = pq.read_table(out)
    assert table.column_names == ["unit", "description", "source", "labels", "embedding"]
    meta = table.schema.metadata
    assert meta[b"content_hash"].decode() == first["content_hash"]
    assert meta[b"backbone"].decode() == backbone_id
    assert json.loads(meta[b"templates"]) == list(ENTITY_TEMPLATES)

    corpus = EntityCorpus.load(out)
    assert corpus.entities == entities
    hand = next(e for e in corpus.entities if e.unit == "hand")
    assert hand.source == "builtin" and hand.labels == ("ring growing",)  # de-duplicated, labels merged
    assert next(e for e in corpus.entities if e.unit == "yo-yo").source == "llm.jsonl"
    expected = micro_backbone.embed_text([e.description for e in entities])
    torch.testing.assert_close(corpus.embeddings, expected, atol=1e-5, rtol=1e-5)

    mtime = out.stat().st_mtime_ns
    again = build_corpus_dataset(**args)
    assert again["skipped"] is True and again["content_hash"] == first["content_hash"]
    assert out.stat().st_mtime_ns == mtime

    forced = build_corpus_dataset(**args, force=True)
    assert forced["skipped"] is False and forced["content_hash"] == first["content_hash"]
    torch.testing.assert_close(EntityCorpus.load(out).embeddings, corpus.embeddings, atol=1e-6, rtol=0)

    changed = build_corpus_dataset(**{**args, "sources": ["builtin", "labels"]})
    assert changed["skipped"] is False and changed["content_hash"] != first["content_hash"]
    assert changed["entities"] == len(entities) - 1 and stored_units(out) == sorted(
        e.unit for e in gather_entities(LABELS, ["builtin", "labels"]))


def stored_units(path: Path) -> list[str]:
    return pq.read_table(path, columns=["unit"])["unit"].to_pylist()


def test_malformed_jsonl_names_file_and_line(inputs, tmp_path: Path, micro_weights: str) -> None:
    labels, _ = inputs
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"unit": "cup", "labels": []}\n{"unit": "lid", "labels": \n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: malformed entity line"):
        build_corpus_dataset(labels, ["builtin", str(bad)], "alt-micro", micro_weights, tmp_path / "c.parquet")
    assert not (tmp_path / "c.parquet").exists()


def test_labels_source_needs_a_labels_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="needs a label file"):
        build_corpus_dataset(None, ["labels"], "alt-micro", None, tmp_path / "c.parquet")


def test_bad_backbone_fails_in_the_driver_with_the_loaders_message(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="unknown backbone 'alt-nope'"):
        build_corpus_dataset(None, ["builtin"], "alt-nope", None, tmp_path / "c.parquet")
    with pytest.raises(BackboneError, match="does not exist"):
        build_corpus_dataset(None, ["builtin"], "alt-micro", str(tmp_path / "none.safetensors"), tmp_path / "c.parquet")


def test_new_weights_under_the_same_path_rebuild_the_corpus(inputs, tmp_path: Path, micro_backbone) -> None:
    """A retrained (or newly shipped) weights file keeps its name; the corpus must not be skipped as up to date."""
    labels, _ = inputs
    weights = tmp_path / "w.safetensors"
    write_weights(weights, micro_backbone)
    args = dict(labels_file=labels, sources=["labels"], backbone="alt-micro", pretrained=str(weights),
                out=tmp_path / "corpus.parquet")
    first = build_corpus_dataset(**args)
    assert build_corpus_dataset(**args)["skipped"] is True
    write_weights(weights, micro_backbone, retrained=True)
    again = build_corpus_dataset(**args)
    assert again["skipped"] is False and again["content_hash"] != first["content_hash"]
    assert EntityCorpus.load(args["out"]).backbone == BackboneSpec("alt-micro", str(weights)).id
