"""The offline entity corpus: (unit, description) pairs embedded once with the CLIP text tower.

Sources (docs/method.md, "Entity corpus"), merged and de-duplicated by unit:
- "labels": content phrases taken from the action label names;
- "builtin": generic entities (body parts, common scenes, objects);
- JSONL files of {"unit", "description", "labels"}, e.g. written offline by an LLM.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from alt_core.config import ENTITY_TEMPLATES
from alt_core.errors import ALTError

if TYPE_CHECKING:  # the backbone (open_clip) is only needed to embed, not to read a corpus
    from alt_core.backbone import Backbone

BUILTIN_ENTITIES: tuple[tuple[str, str], ...] = (
    ("hand", "a human hand"), ("arm", "a human arm"), ("leg", "a human leg"), ("foot", "a human foot"),
    ("head", "a human head"), ("face", "a human face"), ("finger", "human fingers"), ("torso", "a human torso"),
    ("person", "a person"), ("ball", "a ball"), ("table", "a table"), ("chair", "a chair"),
    ("car", "a car"), ("bicycle", "a bicycle"), ("water", "water"), ("grass", "a green grass field"),
    ("sand", "a sandy desert"), ("road", "a grey road"), ("sky", "the sky"), ("night", "a dark night sky"),
    ("kitchen", "a kitchen"), ("gym", "a gym"), ("stage", "a stage"), ("field", "a sports field"),
    ("snow", "snow"), ("wall", "a brick wall"), ("floor", "a wooden floor"), ("tiles", "a tiled floor"),
)
STOP_WORDS = frozenset("a an the of on in at to with and or from by for into onto another its his her".split())
SOURCE_NAMES = ("labels", "builtin")


class CorpusError(ALTError):
    """A corpus source that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Entity:
    unit: str
    description: str
    source: str
    labels: tuple[str, ...] = ()


def label_entities(labels: Iterable[str]) -> list[Entity]:
    """Content words and adjacent content-word pairs of each label name, e.g. "moving left"."""
    found: dict[str, set[str]] = {}
    for label in labels:
        words = [w for w in re.findall(r"[a-z0-9]+", label.lower()) if w not in STOP_WORDS]
        for phrase in words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]:
            found.setdefault(phrase, set()).add(label)
    return [Entity(p, p, "labels", tuple(sorted(ls))) for p, ls in sorted(found.items())]


def builtin_entities() -> list[Entity]:
    return [Entity(u, d, "builtin") for u, d in BUILTIN_ENTITIES]


def read_jsonl_entities(path: str | Path) -> list[Entity]:
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"entity file {path} does not exist")
    entities = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            unit = str(row["unit"]).strip()
            description = str(row.get("description") or unit).strip()
            labels = row.get("labels") or []
            if not unit or not isinstance(labels, list):
                raise ValueError("'unit' must be non-empty and 'labels' a list")
        except (json.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as err:
            raise CorpusError(f"{path}:{lineno}: malformed entity line ({err}); expected "
                              '{"unit": ..., "description": ..., "labels": [...]}') from err
        entities.append(Entity(unit, description, str(path.name), tuple(sorted(map(str, labels)))))
    return entities


def gather_entities(labels: Sequence[str], sources: Sequence[str]) -> list[Entity]:
    """Entities from the named sources, de-duplicated by unit (first source wins, labels merged)."""
    merged: dict[str, Entity] = {}
    for source in sources:
        if source == "labels":
            batch = label_entities(labels)
        elif source == "builtin":
            batch = builtin_entities()
        else:
            batch = read_jsonl_entities(source)
        for ent in batch:
            key = ent.unit.lower()
            if key in merged:
                old = merged[key]
                merged[key] = Entity(old.unit, old.description, old.source,
                                     tuple(sorted(set(old.labels) | set(ent.labels))))
            else:
                merged[key] = ent
    if not merged:
        raise CorpusError("no entities: name at least one source (labels, builtin or a JSONL file)")
    return sorted(merged.values(), key=lambda e: e.unit.lower())


@dataclass
class EntityCorpus:
    entities: list[Entity]
    embeddings: torch.Tensor  # (K, D) L2-normalised
    backbone: str
    templates: tuple[str, ...] = ENTITY_TEMPLATES
    content_hash: str = field(default="")

    def __post_init__(self) -> None:
        if not self.content_hash:
            self.content_hash = corpus_hash(self.entities, self.backbone, self.templates)

    def __len__(self) -> int:
        return len(self.entities)

    def save(self, path: str | Path) -> None:
        table = pa.table({
            "unit": [e.unit for e in self.entities],
            "description": [e.description for e in self.entities],
            "source": [e.source for e in self.entities],
            "labels": [list(e.labels) for e in self.entities],
            "embedding": pa.array(self.embeddings.float().tolist(), type=pa.list_(pa.float32())),
        })
        meta = {"backbone": self.backbone, "templates": json.dumps(list(self.templates)),
                "content_hash": self.content_hash}
        pq.write_table(table.replace_schema_metadata(meta), str(path))

    @classmethod
    def load(cls, path: str | Path) -> EntityCorpus:
        path = Path(path)
        if not path.is_file():
            raise CorpusError(f"corpus file {path} does not exist; build one with `alt corpus build`")
        try:
            table = pq.read_table(str(path))
            meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
            cols = table.to_pydict()
            entities = [Entity(u, d, s, tuple(ls)) for u, d, s, ls in
                        zip(cols["unit"], cols["description"], cols["source"], cols["labels"], strict=True)]
            return cls(entities, torch.tensor(cols["embedding"], dtype=torch.float32), meta["backbone"],
                       tuple(json.loads(meta["templates"])), meta["content_hash"])
        except (pa.ArrowException, KeyError, ValueError) as err:
            raise CorpusError(f"{path} is not a corpus written by `alt corpus build` ({type(err).__name__}: "
                              f"{str(err)[:160]}); build it again") from err


def corpus_hash(entities: Sequence[Entity], backbone: str, templates: Sequence[str]) -> str:
    """Identity of a corpus: its entities, the backbone that embedded them and the templates."""
    payload = json.dumps({"entities": [[e.unit, e.description, e.source, list(e.labels)] for e in entities],
                          "backbone": backbone, "templates": list(templates)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_corpus(backbone: Backbone, labels: Sequence[str], sources: Sequence[str] = SOURCE_NAMES) -> EntityCorpus:
    """Gather and embed in one process (the Ray Data stage shards the embedding step)."""
    entities = gather_entities(labels, sources)
    embeddings = backbone.embed_text([e.description for e in entities])
    return EntityCorpus(entities, embeddings, backbone.spec.id)
