"""Ray Data stage: the offline entity corpus (docs/method.md, "Entity corpus"), embedded by a pool of CLIP
text-tower actors.

Gathering is cheap and runs in the driver; embedding is the expensive part, so the entity rows
go through `map_batches` on actors that each load the backbone once. The file is identified by
`corpus_hash(entities, backbone id, templates)`: rebuilding identical inputs is skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch
from ray.data import ActorPoolStrategy

from alt_core.backbone import load_backbone
from alt_core.config import ENTITY_TEMPLATES, BackboneSpec
from alt_core.corpus import CorpusError, EntityCorpus, corpus_hash, gather_entities
from alt_core.manifest import read_labels
from pipelines.console import ensure_ray

logger = logging.getLogger(__name__)


class EmbedActor:
    """Holds one backbone for its lifetime and embeds batches of entity descriptions."""

    def __init__(self, backbone: str, pretrained: str | None, device: str):
        self.backbone = load_backbone(backbone, pretrained, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        emb = self.backbone.embed_text([str(d) for d in batch["description"]])  # (B, D)
        return {"index": batch["index"], "embedding": emb.float().cpu().numpy()}


def stored_hash(path: str | Path) -> str | None:
    """The content hash in a corpus file's metadata, without reading its embeddings (None: not a corpus)."""
    try:
        meta = pq.read_schema(str(path)).metadata or {}
    except (pa.ArrowInvalid, OSError):
        return None
    value = meta.get(b"content_hash")
    return value.decode() if value else None


def build_corpus_dataset(
    labels_file: str | Path | None,
    sources: Sequence[str],
    backbone: str,
    pretrained: str | None,
    out: str | Path,
    force: bool = False,
    batch_size: int = 64,
    num_actors: int = 1,
    use_gpu: bool = False,
) -> dict:
    """Gather, embed and save the corpus to `out` (Parquet); skip when `out` already holds these inputs.

    sources: "builtin", "labels" (needs `labels_file`) or JSONL paths, merged in order.
    Returns a summary: entities, content_hash, skipped, seconds, out.
    """
    start = time.perf_counter()
    out = Path(out).absolute()
    if "labels" in sources and labels_file is None:
        raise CorpusError("the 'labels' source needs a label file; pass --labels FILE")
    labels = read_labels(labels_file) if labels_file is not None else []
    entities = gather_entities(labels, sources)
    # The id of the backbone load_backbone will build (checked below), from its spec alone: deciding
    # to skip must not cost a weights load.
    expected_id = BackboneSpec(backbone, pretrained).id
    content_hash = corpus_hash(entities, expected_id, ENTITY_TEMPLATES)
    summary = {"entities": len(entities), "content_hash": content_hash, "out": str(out), "backbone": expected_id,
               "sources": list(sources)}
    if out.is_file() and not force and stored_hash(out) == content_hash:
        logger.info(f"corpus: {out} already holds these {len(entities)} entities (hash {content_hash}); skipped")
        return {**summary, "skipped": True, "seconds": time.perf_counter() - start}

    # Load once here too, so a bad name or weights file fails with the loader's message, not in an actor.
    if load_backbone(backbone, pretrained).spec.id != expected_id:
        raise RuntimeError(f"backbone {backbone!r} does not report the id {expected_id!r} the hash was made with")
    ensure_ray()
    rows = [{"index": i, "description": e.description} for i, e in enumerate(entities)]
    ds = ray.data.from_items(rows).map_batches(
        EmbedActor,
        fn_constructor_kwargs={"backbone": backbone, "pretrained": pretrained,
                               "device": "cuda" if use_gpu else "cpu"},
        compute=ActorPoolStrategy(size=num_actors),
        batch_size=batch_size,
        num_gpus=1 if use_gpu else 0,
    )
    order, chunks = [], []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        order.append(batch["index"])
        chunks.append(batch["embedding"])
    index = np.concatenate(order)
    if sorted(index.tolist()) != list(range(len(entities))):
        raise RuntimeError(f"the embedding stage returned {len(index)} rows for {len(entities)} entities")
    embeddings = torch.from_numpy(np.concatenate(chunks)[np.argsort(index)])  # (K, D) in entity order

    corpus = EntityCorpus(entities, embeddings, expected_id, ENTITY_TEMPLATES)
    assert corpus.content_hash == content_hash
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    corpus.save(tmp)
    tmp.replace(out)  # readers never see a half-written corpus
    logger.info(f"corpus: {len(entities)} entities embedded with {expected_id} in "
                f"{time.perf_counter() - start:.1f} s -> {out} (hash {content_hash})")
    return {**summary, "skipped": False, "seconds": time.perf_counter() - start,
            "embedding_dim": int(embeddings.shape[1])}
