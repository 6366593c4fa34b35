"""The checks of a job's inputs, in the driver: every user error that can be known before work starts is found
here, before Ray starts a worker (or is even imported) — stale tokens, a corpus of other weights or with fewer
entities than queries, labels missing from the data, an unreadable few-shot manifest, shards or corpus, a run
directory in use. Each is one line and exit code 2, with no retries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from alt_core.clips import ClipDataError, ClipFormat, few_shot_ids, few_shot_validation_ids, read_format, split_rows
from alt_core.config import ALTConfig, BackboneSpec
from alt_core.corpus import CorpusError, EntityCorpus
from alt_core.errors import ALTError
from alt_core.manifest import read_labels, read_manifest, video_id
from pipelines.jobs import RUN_NAME, TrainJob


@dataclass
class TrainingInputs:
    """A job's inputs, read and checked in the driver."""

    fmt: ClipFormat
    labels: list[str]
    model: ALTConfig  # the job's model settings completed from the data and the corpus
    train_ids: set[str] | None  # the few-shot subset; None: every train video
    val_ids: set[str] | None  # a few-shot run's validation subset (at most K per class); None: the val split
    train_videos: int


def check_inputs(job: TrainJob, num_queries: Iterable[int] = ()) -> TrainingInputs:
    """Read and check everything a job will use before any worker starts. `num_queries`: further query counts
    the job's trials may use (a search's), each checked against the corpus."""
    fmt = read_format(job.data)
    train_rows = split_rows(job.data, "train")
    if not train_rows:
        raise ClipDataError(f"{job.data} has no rows with split 'train'; decode a manifest with a train split")
    labels = read_labels(job.labels) if job.labels else sorted({label for _, label in train_rows})
    check_labels(job.data, ("train", "val"), labels, job.labels or "the labels of its train split")
    ids = None
    if job.train.shots:
        ids = few_shot_ids(train_rows, job.train.shots)
    elif job.train.shots_file:
        ids = listed_ids(job.train.shots_file, {v for v, _ in train_rows})
    # a few-shot run chooses its epoch with no more labels per class than it trains on
    val_ids = few_shot_validation_ids(train_rows, ids, split_rows(job.data, "val")) if ids is not None else None
    corpus = EntityCorpus.load(job.corpus)
    model = model_config(job, fmt, corpus)
    if model.adapter == "alt" and model.queries == "entities":
        most = max([model.num_queries, *num_queries])
        if len(corpus) < most:
            raise CorpusError(f"corpus {job.corpus} has {len(corpus)} entities, fewer than the {most} queries asked "
                              "for; lower --num-queries or add entities (--source builtin, or an entities .jsonl)")
    if (Path(job.out) / "ray" / RUN_NAME).exists() and not job.resume:
        raise ALTError(f"{Path(job.out) / 'ray' / RUN_NAME} exists: pass --resume to continue that run or choose "
                       "another --out")
    return TrainingInputs(fmt, labels, model, ids, val_ids, len(ids) if ids else len({v for v, _ in train_rows}))


def check_labels(data: str | Path, splits: Iterable[str], labels: list[str], where: str) -> None:
    """Every label in these splits of the data must be in the label set the model scores (`where` names it)."""
    splits = list(splits)
    missing = sorted({label for split in splits for _, label in split_rows(data, split)} - set(labels))
    if missing:
        raise ClipDataError(f"{len(missing)} label(s) of the {' and '.join(splits)} split(s) of {data} are not in "
                            f"{where} (e.g. {missing[0]!r}); pass --labels with the label set the data was made with")


def model_config(job: TrainJob, fmt: ClipFormat, corpus: EntityCorpus) -> ALTConfig:
    """The job's model settings, completed from the data: cached tokens fix the backbone (and its weights),
    ToMe r and frame count they were made with; the corpus must come from the same backbone."""
    config = replace(job.model, num_frames=fmt.shape[0], corpus_hash=corpus.content_hash)
    if fmt.kind == "tokens":
        spec = BackboneSpec.parse(fmt.backbone)
        if spec.id != fmt.backbone:
            raise ClipDataError(f"the tokens in {job.data} were cached with backbone {fmt.backbone}, whose weights "
                                f"are now {spec.id}; decode the videos again with --cache-tokens")
        asked = BackboneSpec(job.model.backbone, job.model.pretrained)  # the defaults: whatever the tokens say
        if (asked.name, asked.pretrained) != (ALTConfig().backbone, None) and asked.id != spec.id:
            raise ClipDataError(f"the tokens in {job.data} were cached with {spec.id}, not the {asked.id} this run "
                                "asks for; drop --backbone/--pretrained to train on them, or decode the videos "
                                "again with these weights and --cache-tokens")
        config = replace(config, backbone=spec.name, pretrained=spec.pretrained, tome_r=fmt.tome_r)
        if config.unfreeze_last_blocks:
            raise ClipDataError("unfreeze_last_blocks trains the image tower, which cached tokens skip; "
                                "decode frames (without --cache-tokens) to train it")
    current = BackboneSpec(config.backbone, config.pretrained).id  # ids carry the weights' digest
    if corpus.backbone != current:
        raise CorpusError(f"corpus {job.corpus} was embedded with {corpus.backbone}, but training uses "
                          f"{current}; rebuild the corpus "
                          f"with --backbone {config.backbone}" + (f" --pretrained {config.pretrained}"
                                                                  if config.pretrained else ""))
    return config


def listed_ids(shots_file: str, train_ids: set[str]) -> set[str]:
    """The video ids of a few-shot list; every listed video must be in the decoded train split."""
    ids = {video_id(row.path) for row in read_manifest(shots_file, default_split="train")}
    missing = len(ids - train_ids)
    if missing:
        raise ClipDataError(f"{missing} of the {len(ids)} videos of {shots_file} are not in the train split of the "
                            "decoded data; decode the manifest the list was made from")
    return ids
