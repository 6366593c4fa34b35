"""The results tables: ALT, its learned-query ablation, the temporal baseline and zero-shot CLIP on the two
generated datasets, SynthActions and SynthObjects, with the shipped alt-tiny (writes results/*.json, then
RESULTS.md from them).

Stages (the test split and the novel videos are never used for a choice; every run keeps its best validation
epoch):
1. design: ALT's adapter variants (DESIGN_VARIANTS), SynthActions data seed 0, training seed 0, supervised and
   4-shot, validation top-1 only;
2. tune: every method's own search with `alt tune` on SynthActions data seed 0 (tune_spaces/protocol.yaml for
   supervised training, tune_spaces/fewshot.yaml for few-shot on the 4-shot list), the same trials each; the
   chosen settings train that method's runs on both datasets;
3. protocols, per dataset, 2 data seeds x 3 training seeds:
   - supervised: train on the seen classes' train split, top-1 on their test split;
   - zero-shot, novel-only: the supervised checkpoints against the novel class names on the novel videos,
     beside the reference of knowing one factor of the class (SynthActions: the shape; SynthObjects: the scene);
   - generalized zero-shot: the same checkpoints against all class names, on the seen test videos and on the
     novel videos: seen top-1, novel top-1 and their harmonic mean;
   - few-shot K = 2, 4, 8: train on the dataset's fewshot_K.csv lists with the chosen step budget, validated on
     at most K videos per class, top-1 on the seen test split;
   - explanations (ALT): entity precision, all-top-3, object recall and faithfulness (alt_core/synthetic/
     grounding.py) on the seen test split;
   - methods: ALT, ALT with learned queries (the ablation: same adapter and tokens), the temporal transformer,
     zero-shot CLIP (meanpool, no training), and (SynthActions) ALT with the last image block trained from
     pixels, with the share of the similarity's gradient its straight-through estimator passes;
   - mean +- std over runs and the binomial standard error of one test set; paired margins with verdicts;
4. training videos per class: ALT also trained on 8 and 16 videos per class of SynthActions data seed 0, their
   validation top-1 beside the whole split's.

Every finished run is a JSON file under results/runs/ (committed), every search one under results/tuning/; a
rerun reuses them, and `--render-only` rebuilds RESULTS.md from results/ alone. Throughput, search and serving
figures come from results/throughput.json (measured here when missing), results/tune_bench.json (bench/tune.py)
and results/serve_bench.json (bench/serve_load.py); the region check from results/regions_*.json
(bench/regions.py).

Usage: python bench/results.py [--datasets actions,objects] [--data-seeds 2] [--train-seeds 3] [--render-only]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.dataset as pads
import torch

from bench.machine import report, run_main, torch_machine
from pipelines.environment import set_defaults

set_defaults()  # before Ray, MLflow and huggingface_hub are imported

from alt_core.alignment import soft_gradient_shares
from alt_core.checkpoint import load_checkpoint
from alt_core.clips import clip_batches, existing_shards, read_format
from alt_core.config import FEW_SHOT_SCHEDULE, SYNTH_VIDEOS_PER_CLASS, ALTConfig, BackboneSpec, DecodeSpec, TrainConfig
from alt_core.manifest import read_labels
from alt_core.synthetic import objects, synth
from alt_core.synthetic.dataset import generate_dataset
from alt_core.synthetic.grounding import explanation_figures
from alt_core.training import score_videos, topk_accuracy
from pipelines.console import ensure_ray, setup_logging
from pipelines.corpus import build_corpus_dataset
from pipelines.decode import decode_manifest
from pipelines.train import TrainJob, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
METHODS: dict[str, dict] = {  # ALTConfig overrides of each trained method
    "alt": {}, "alt-learned": {"queries": "learned"}, "temporal": {"adapter": "temporal"},
}
NAMES = {"alt": "ALT", "alt-learned": "ALT, learned queries (ablation)", "temporal": "temporal transformer",
         "meanpool": "zero-shot CLIP (no training)", "alt-unfrozen": "ALT, last image block trained (pixels)"}
# ALT's adapter variants (how the alignment reaches the queries; docs/method.md, "Adapter"), chosen on validation
DESIGN_VARIANTS: dict[str, dict] = {
    "alt-plain": {"alignment_bias": False, "query_trajectory": False, "region_positions": False},
    "alt-bias": {"alignment_bias": True, "query_trajectory": False, "region_positions": False},
    "alt-trajectory": {"alignment_bias": False, "query_trajectory": True, "region_positions": False},
    "alt-positions": {"alignment_bias": False, "query_trajectory": False, "region_positions": True},
    "alt-all": {"alignment_bias": True, "query_trajectory": True, "region_positions": True},
}
DESIGN_SHOTS = 4
# the settings the design variants are compared at (the CLI's defaults before the per-method search)
DESIGN_HYPER = {"lr": 1e-3, "weight_decay": 0.05, "epochs": 12}
SHOTS = (2, 4, 8)
FEW_SHOT_STEPS = 300  # the design variants' few-shot budget, whatever K (the search chooses the others')
FEW_SHOT_EPOCHS = FEW_SHOT_SCHEDULE["epochs"]  # validation (best epoch) once per epoch
SEARCH_SPACES = {"supervised": ROOT / "tune_spaces" / "protocol.yaml",
                 "few-shot": ROOT / "tune_spaces" / "fewshot.yaml"}
TUNE_SHOTS = 4
OLD_TEMPERATURES = (0.01, 1.0)  # the saturated estimator the Gumbel measurement compares against


@dataclass(frozen=True)
class Dataset:
    """A generated dataset of the protocol: its `alt data synth --variant`, its run-name prefix, and the class
    factor whose knowledge alone gives the zero-shot reference."""

    variant: str
    title: str
    prefix: str
    reference_factor: str

    def factor(self, label: str) -> str:
        if self.variant == "actions":
            return synth.parse_class(label)[0]  # the shape
        return objects.parse_class(label)[2]  # the scene

    def reference(self, novel: list[str]) -> float:
        """Top-1 of knowing only the factor and guessing among the novel classes that share it."""
        return statistics.mean(1 / sum(self.factor(n) == self.factor(label) for n in novel) for label in novel)


DATASETS = {"actions": Dataset("actions", "SynthActions", "", "shape"),
            "objects": Dataset("objects", "SynthObjects", "objects-", "scene")}


def weights_digest() -> str | None:
    """The shipped alt-tiny's weights, as corpora, token caches and checkpoints name them."""
    return BackboneSpec("alt-tiny").digest()


def prepare(out: Path, dataset: Dataset, data_seed: int, videos_per_class: int, pixels: bool = False) -> dict:
    """Generate one dataset, its corpus and its cached tokens (and frames when `pixels`), under a directory
    named after the backbone weights, so new weights never reuse stale tokens. Idempotent."""
    root = out / f"alt-tiny-{weights_digest()}" / f"{dataset.prefix}data{data_seed}"
    data = root / "synth"
    summary = generate_dataset(data, dataset.variant, seed=data_seed, videos_per_class=videos_per_class, frames=16,
                               size=64)
    corpus = build_corpus_dataset(data / "labels_seen.txt", ["labels", str(data / "entities.jsonl")],
                                  "alt-tiny", None, root / "corpus.parquet")
    spec = DecodeSpec(frames=8, clips=2, crops=1, size=64, train_clips=2, seed=data_seed)
    tokens = decode_manifest(data / "manifest.parquet", root / "tokens",
                             replace(spec, cache_tokens=True, backbone="alt-tiny", tome_r=8))
    prep = {"root": root, "data": data, "synth": summary, "corpus": corpus, "tokens": tokens, "seed": data_seed,
            "dataset": dataset}
    if pixels:
        prep["pixels"] = decode_manifest(data / "manifest.parquet", root / "pixels", spec)
    return prep


def split_logits(model, clips_dir: Path, split: str, labels: list[str]) -> tuple[dict, dict]:
    """View-averaged logits of every video of a split against `labels`, in this process."""
    index = {label: i for i, label in enumerate(labels)}
    fmt = read_format(clips_dir)
    dataset = pads.dataset([str(p) for p in existing_shards(clips_dir)], format="parquet")
    batches = (b.to_pydict() for b in dataset.to_batches(columns=["video_id", "label", *fmt.payload], batch_size=64,
                                                          filter=pads.field("split") == split))
    scores = score_videos(model, clip_batches(batches, fmt, index), model.class_embeddings.device)
    return scores.mean_logits(), scores.targets


def accuracy(logits: dict, targets: dict, columns: list[int]) -> float:
    """Top-1 with the label set restricted to `columns` (targets index the full label set)."""
    position = {c: i for i, c in enumerate(columns)}
    restricted = {vid: row[columns] for vid, row in logits.items()}
    return topk_accuracy(restricted, {vid: position[t] for vid, t in targets.items()}, ks=(1,))["top1"]


EXPLANATION_KEYS = ("entity_precision", "all_top_precision", "object_recall", "faithfulness", "faithfulness_se",
                    "uncheckable_units")
EXPLANATION_VERSION = 2  # 2: entities ordered by their query's contribution to the predicted class's logit


def explained(model, prep: dict, clips_dir: Path) -> dict:
    """ALT's explanation figures on the seen test split (alt_core/synthetic/grounding.py), with their version."""
    model.set_labels(read_labels(prep["data"] / "labels_seen.txt"))
    figures = explanation_figures(model, clips_dir)
    return {k: figures[k] for k in EXPLANATION_KEYS} | {"explanation_version": EXPLANATION_VERSION}


def explanations_stale(row: dict) -> bool:
    """A row whose explanation figures an older explanation method computed."""
    return "object_recall" in row and row.get("explanation_version") != EXPLANATION_VERSION


def protocols(model, prep: dict, clips_dir: Path, shots: int | None) -> dict:
    """Every protocol's top-1 for one trained model; zero-shot ones and explanations only for supervised runs."""
    seen, novel = read_labels(prep["data"] / "labels_seen.txt"), read_labels(prep["data"] / "labels_novel.txt")
    labels = seen + novel
    model.set_labels(labels)
    seen_cols, novel_cols, every = list(range(len(seen))), list(range(len(seen), len(labels))), list(range(len(labels)))
    test = split_logits(model, clips_dir, "test", labels)
    row = {"test_top1": accuracy(*test, seen_cols), "test_videos": len(test[0])}
    if shots is None:
        held = split_logits(model, clips_dir, "novel", labels)
        row |= {"zero_shot_top1": accuracy(*held, novel_cols), "novel_videos": len(held[0]),
                "gzsl_seen": accuracy(*test, every), "gzsl_novel": accuracy(*held, every)}
        row["gzsl_hm"] = harmonic(row["gzsl_seen"], row["gzsl_novel"])
        if model.aligner is not None and read_format(clips_dir).kind == "tokens":
            row |= explained(model, prep, clips_dir)
    return row


def harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b else 0.0


def run_one(prep: dict, method: str, seed: int, shots: int | None, hyper: dict, data: str = "tokens",
            unfreeze: int = 0, per_class: int | None = None, variant: str | None = None, test: bool = True) -> dict:
    """Train one run (the CLI's settings, the method's overrides and its chosen hyperparameters `hyper`: lr,
    weight_decay, epochs, and steps for few-shot) and score it; the row is kept in results/runs/, so a rerun
    reuses finished runs unless the backbone weights, model or training settings changed. `per_class`: train on
    that many videos per class of the train split (the videos-per-class sweep). `variant`: one of ALT's design
    variants (DESIGN_VARIANTS), scored on validation only (`test=False`): designs are chosen without the test
    split."""
    name = (f"{prep['dataset'].prefix}{variant or method}-data{prep['seed']}-seed{seed}"
            + (f"-shots{shots}" if shots else "") + (f"-train{per_class}" if per_class else ""))
    schedule = replace(TrainConfig(seed=seed, shots=per_class), **hyper)
    if shots:
        schedule = replace(schedule, shots_file=str(prep["data"] / f"fewshot_{shots}.csv"))
    model = ALTConfig(**METHODS.get(method, {}), **DESIGN_VARIANTS.get(variant, {}), unfreeze_last_blocks=unfreeze)
    settings = json.loads(json.dumps({"weights": weights_digest(), "model": model.to_dict(),  # as the row stores it
                                      "train": schedule.to_dict() | {"shots_file": shots and f"fewshot_{shots}.csv"}}))
    row_file = RESULTS / "runs" / f"{name}.json"
    run_dir = prep["root"] / "runs" / name
    if row_file.exists():
        row = json.loads(row_file.read_text())
        if {k: row.get(k) for k in settings} == settings:
            if not explanations_stale(row):
                return row
            if Path(row["checkpoint"]).exists():  # only the explanation figures are out of date
                row |= explained(load_checkpoint(row["checkpoint"]), prep, prep["root"] / data)
                row_file.write_text(json.dumps(row, indent=1) + "\n")
                return row
        shutil.rmtree(run_dir, ignore_errors=True)  # trained with other settings: start afresh, never resume it
    start = time.time()
    summary = train(TrainJob(data=str(prep["root"] / data), corpus=str(prep["root"] / "corpus.parquet"),
                             out=str(run_dir), labels=str(prep["data"] / "labels_seen.txt"), run_name=name,
                             model=model, train=schedule, resume=(run_dir / "ray").exists()))
    row = {"name": name, "dataset": prep["dataset"].variant, "method": method, "variant": variant,
           "data_seed": prep["seed"], "seed": seed, "shots": shots, "train_per_class": per_class, **settings,
           "epochs": schedule.epochs, "steps": schedule.steps, "val_top1": summary["best"]["val_top1"],
           "best_epoch": summary["best"]["epoch"], "train_acc": summary["history"][-1]["train_acc"],
           "checkpoint": summary["checkpoint"], "train_seconds": time.time() - start}
    if test:
        row |= protocols(load_checkpoint(summary["checkpoint"]), prep, prep["root"] / data, shots)
    row["wall_seconds"] = time.time() - start
    row_file.parent.mkdir(parents=True, exist_ok=True)
    row_file.write_text(json.dumps(row, indent=1) + "\n")
    report(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()
                                   if k.endswith(("top1", "hm", "precision", "recall"))))
    return row


def tuned(prep: dict, method: str, protocol: str, few_shot_steps: int) -> dict:
    """One method's search on validation with `alt tune` (tune_spaces/protocol.yaml for supervised training,
    tune_spaces/fewshot.yaml for few-shot, on the TUNE_SHOTS-shot list): the same trials for every method. The
    record (results/tuning/) names the chosen settings; a rerun reuses it while the weights, model and space
    are the same, and resumes an unfinished search."""
    from pipelines.tune import SearchOptions, tune_search

    space = SEARCH_SPACES[protocol]
    model = ALTConfig(**METHODS[method])
    key = json.loads(json.dumps({"weights": weights_digest(), "model": model.to_dict(), "space": space.read_text()}))
    record_file = RESULTS / "tuning" / f"{method}-{protocol}.json"
    if record_file.exists() and json.loads(record_file.read_text())["key"] == key:
        return json.loads(record_file.read_text())
    schedule = TrainConfig(seed=0)
    if protocol == "few-shot":
        schedule = replace(schedule, shots_file=str(prep["data"] / f"fewshot_{TUNE_SHOTS}.csv"),
                           epochs=FEW_SHOT_EPOCHS, steps=few_shot_steps)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    out = prep["root"] / "tune" / f"{method}-{protocol}-{digest}"  # another model or space: another search
    summary = tune_search(TrainJob(data=str(prep["root"] / "tokens"), corpus=str(prep["root"] / "corpus.parquet"),
                                   out=str(out), labels=str(prep["data"] / "labels_seen.txt"), model=model,
                                   train=schedule),
                          SearchOptions(space=str(space), concurrent=2, scheduler="asha", resume=out.exists()))
    record = {"method": method, "protocol": protocol, "key": key, "space": str(space.relative_to(ROOT)),
              "dataset": prep["dataset"].variant, "data_seed": prep["seed"], "chosen": summary["best"]["config"],
              "best_val_top1": summary["best"]["best_val_top1"], "trial_epochs": summary["trial_epochs"],
              "seconds": summary.get("seconds"),
              "trials": [{k: t[k] for k in ("config", "best_val_top1", "epochs", "stop_reason")}
                         for t in summary["trials"]]}
    record_file.parent.mkdir(parents=True, exist_ok=True)
    record_file.write_text(json.dumps(record, indent=1) + "\n")
    report(f"tuned {method} ({protocol}): {record['chosen']}, val top-1 {record['best_val_top1']:.3f}")
    return record


def untuned_hyper(protocol: str, few_shot_steps: int) -> dict:
    """Without a search (`--no-search`): every method at the CLI's defaults, few-shot at its fixed budget."""
    return DESIGN_HYPER | ({"epochs": FEW_SHOT_EPOCHS, "steps": few_shot_steps} if protocol == "few-shot" else {})


def rows_of_results() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((RESULTS / "runs").glob("*.json"))]


def rows_of_weights(weights: str) -> list[dict]:
    """The committed rows trained on these backbone weights: the ones a page of them renders."""
    return [r for r in rows_of_results() if r["weights"] == weights]


def chosen_hyper(record: dict, protocol: str) -> dict:
    """The training settings a search chose, completed with its protocol's fixed epochs."""
    return record["chosen"] | ({"epochs": FEW_SHOT_EPOCHS} if protocol == "few-shot" else {})


def zero_shot_clip(prep: dict) -> dict:
    """Meanpool with no training: the frame embeddings' mean against the class names."""
    from alt_core.backbone import load_backbone
    from alt_core.corpus import EntityCorpus
    from alt_core.model import ALTModel

    name = f"{prep['dataset'].prefix}meanpool-data{prep['seed']}"
    row_file = RESULTS / "runs" / f"{name}.json"
    if row_file.exists() and json.loads(row_file.read_text())["weights"] == weights_digest():
        return json.loads(row_file.read_text())
    start = time.time()
    model = ALTModel(ALTConfig(adapter="meanpool", tome_r=8), load_backbone("alt-tiny"),
                     EntityCorpus.load(prep["root"] / "corpus.parquet"), read_labels(prep["data"] / "labels_seen.txt"))
    row = {"name": name, "dataset": prep["dataset"].variant, "method": "meanpool", "data_seed": prep["seed"],
           "seed": None, "shots": None, "weights": weights_digest()}
    row |= protocols(model.eval(), prep, prep["root"] / "tokens", None)
    row["wall_seconds"] = time.time() - start
    row_file.parent.mkdir(parents=True, exist_ok=True)
    row_file.write_text(json.dumps(row, indent=1) + "\n")
    return row


def gumbel_gradient(prep: dict, row: dict, batches: int = 4) -> dict:
    """The share of the similarity's gradient the straight-through estimator passes, per region, in a trained
    run (the pixels run when there is one): its checkpoint on train clips of its data, at its temperatures and
    at OLD_TEMPERATURES (results/gumbel.json; kept while the run is the same)."""
    path = RESULTS / "gumbel.json"
    if path.exists() and json.loads(path.read_text())["run"] == {k: row[k] for k in ("name", "model", "train")}:
        return json.loads(path.read_text())
    model = load_checkpoint(row["checkpoint"])
    if not any(p.requires_grad for p in model.encoder.parameters()):  # a frozen-tower run: the probe needs the
        model.encoder.requires_grad_(True)  # similarity's gradient, which a trainable tower asks for; no step is taken
    fmt = read_format(prep["root"] / "pixels")
    index = {label: i for i, label in enumerate(model.labels)}
    table = pads.dataset([str(p) for p in existing_shards(prep["root"] / "pixels")], format="parquet").to_table(
        columns=["video_id", "label", *fmt.payload], filter=pads.field("split") == "train")
    clips = list(clip_batches(iter([table.slice(32 * i, 32).to_pydict() for i in range(batches)]), fmt, index))
    measured = {}
    for name, (temperature, tau) in (("chosen", (model.config.similarity_temperature, model.config.gumbel_tau)),
                                      ("saturated", OLD_TEMPERATURES)):
        model.aligner.similarity_temperature, model.aligner.gumbel_tau = temperature, tau
        shares = []
        for i, batch in enumerate(clips):
            torch.manual_seed(i)
            shares.append(soft_gradient_shares(model.aligner, lambda b=batch: model.loss(model.train()(b.pixels),
                                                                                           b.targets)))
            model.zero_grad()
        shares = torch.cat(shares)
        measured[name] = {"similarity_temperature": temperature, "gumbel_tau": tau,
                          "median_share": float(shares.median()), "regions_over_10pct": float((shares > 0.1).float()
                                                                                                .mean()),
                          "regions": len(shares)}
    result = {"run": {k: row[k] for k in ("name", "model", "train")}, "clips": 32 * batches, **measured}
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def throughput(prep: dict) -> dict:
    """ALT training clips/s from cached tokens vs pixels, end to end and per step. Speed does not depend on the
    weights, so it is measured once and kept in results/throughput.json (delete the file to measure again)."""
    from train_throughput import measure

    path = RESULTS / "throughput.json"
    if path.exists():
        return json.loads(path.read_text())
    speed = {}
    for data in ("tokens", "pixels"):  # two epochs each; the rate is the second epoch's (the first warms up)
        job = TrainJob(data=str(prep["root"] / data), corpus=str(prep["root"] / "corpus.parquet"),
                       out=str(prep["root"] / "runs" / f"speed-{data}"),
                       labels=str(prep["data"] / "labels_seen.txt"), train=TrainConfig(epochs=2))
        speed[data] = train(replace(job, resume=Path(job.out, "ray").exists()))["metrics"]["train_clips_per_s"]
    speed["steps"] = [measure("alt-tiny", steps=8), measure("ViT-B-16", batch=8, steps=2)]
    speed["machine"] = torch_machine()
    path.write_text(json.dumps(speed, indent=1) + "\n")
    return speed


# ---------------------------------------------------------------------------------------------- rendering


def cell(values: list[float], n: int | None = None) -> str:
    """mean +- std over runs, and the binomial standard error of one test set of n videos at that mean."""
    if not values:
        return "-"
    mean = statistics.mean(values)
    text = f"{mean:.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")
    return text + (f" (se {math.sqrt(mean * (1 - mean) / n):.3f})" if n else "")


def dataset_of(row: dict) -> str:
    """A row's dataset; rows written before SynthObjects existed carry none and are SynthActions runs."""
    return row.get("dataset", "actions")


def select(rows: list[dict], dataset: str, method: str, shots: int | None = None) -> list[dict]:
    """The runs of one dataset, method and shot count on the whole train split (design and sweep runs left out)."""
    return sorted((r for r in rows if dataset_of(r) == dataset and r["method"] == method
                   and r["shots"] == shots and r.get("train_per_class") is None and r.get("variant") is None),
                  key=lambda r: (r["data_seed"], r["seed"] or 0))


def mean_of(rows: list[dict], dataset: str, method: str, key: str, shots: int | None = None) -> float:
    values = [r[key] for r in select(rows, dataset, method, shots) if key in r]
    return statistics.mean(values) if values else float("nan")


def judged(mean: float, se: float, runs: int) -> dict:
    """A margin with its verdict: a win or a loss beyond 2 standard errors, else no clear difference."""
    verdict = "win" if mean > 2 * se else "loss" if mean < -2 * se else "no clear difference"
    return {"mean": mean, "se": se, "runs": runs, "verdict": verdict}


def paired(rows: list[dict], dataset: str, a: str, b: str, key: str, shots: int | None = None) -> dict | None:
    """Mean difference a - b over runs with the same data and training seed, its standard error, and whether
    it is a win (more than 2 standard errors)."""
    other = {(r["data_seed"], r["seed"]): r[key] for r in select(rows, dataset, b, shots)}
    diffs = [r[key] - other[(r["data_seed"], r["seed"])] for r in select(rows, dataset, a, shots)
             if (r["data_seed"], r["seed"]) in other]
    if len(diffs) < 2:
        return None
    return judged(statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs)), len(diffs))


def single_run_margin(rows: list[dict], dataset: str, a: str, b: str, key: str,
                      shots: int | None = None) -> dict | None:
    """With one run of each (no paired differences to take): a - b, with the standard error of two test sets
    of n videos (binomial). It leaves out how much a training seed moves a figure, so it is weaker evidence."""
    videos = {"test_top1": "test_videos", "zero_shot_top1": "novel_videos"}.get(key)
    ra, rb = select(rows, dataset, a, shots), select(rows, dataset, b, shots)
    if videos is None or len(ra) != 1 or len(rb) != 1 or key not in ra[0] or key not in rb[0]:
        return None
    x, y = ra[0][key], rb[0][key]
    return judged(x - y, math.sqrt((x * (1 - x) + y * (1 - y)) / ra[0][videos]), 1)


def margin(rows: list[dict], dataset: str, a: str, b: str, key: str, shots: int | None = None) -> dict | None:
    """Paired over runs when there are 2 or more, else the margin of single runs."""
    return paired(rows, dataset, a, b, key, shots) or single_run_margin(rows, dataset, a, b, key, shots)


PAIRED_FIGURES = (("zero_shot_top1", None, "zero-shot top-1, novel-only"), ("gzsl_hm", None, "GZSL HM"),
                  ("test_top1", None, "supervised top-1"), *(("test_top1", k, f"{k}-shot top-1") for k in SHOTS))


def render(rows: list[dict], meta: dict) -> str:
    hyper = meta["hyper"]
    sup, few = hyper["alt"]["supervised"], hyper["alt"]["few-shot"]
    lines = [
        "# Results", "",
        f"Generated by `{meta['command']}` from the raw per-run results in `results/` "
        "(`python bench/results.py --render-only` rebuilds this file from them alone).", "",
        f"- **Backbone**: `alt-tiny` (frozen; weights sha256 {meta['weights']}), ToMe r=8 (64 patches -> 48 "
        "regions), 8 frames per view; region tokens cached by `alt decode --cache-tokens`. "
        f"`alt backbone eval --backbone alt-tiny --json`: {meta['backbone_eval']}.",
        "- **Corpus**: each dataset's label phrases + its `entities.jsonl` (entities the backbone knows; the builtin "
        "generic entities are for real backbones).",
        f"- **Training**: the CLI's defaults (`alt train` with no options: {sup['epochs']} epochs, AdamW peak lr "
        f"{sup['lr']:g} with cosine decay, weight decay {sup['weight_decay']:g}, batch 32, label smoothing 0.1, "
        "adapter width 128, depth 2, 8 queries; 2 random TSN clips per train video), " + (
            "except that each method's learning rate and weight decay (few-shot: learning rate and step budget) "
            "come from its own search on validation (section 'Hyperparameters chosen on validation'; ALT's are the "
            "CLI's defaults)." if meta["tuning"] else
            "the same for every method: **no per-method search ran for this page** (`--no-search`; "
            "tune_spaces/protocol.yaml and fewshot.yaml hold the searches the full protocol runs).") +
        f" Training seeds "
        f"{meta['train_seeds']}; each run keeps its best validation epoch. Few-shot: `alt train --shots-file "
        f"fewshot_K.csv --steps {few['steps']} --epochs {few['epochs']} --lr {few['lr']:g}` for ALT (the same "
        "optimizer steps for every K; the lists are fixed by the data, not by the training seed), validated on at "
        "most K videos per class.",
        "- **Protocols**: test views = 2 temporal clips x 1 crop, logits averaged. Zero-shot (novel-only): the "
        "supervised checkpoints against the novel class names on the novel videos. Generalized zero-shot: against "
        "all names, on the seen test videos and the novel videos; HM = harmonic mean.",
        "- **Error bars**: mean ± std over runs (data seeds x training seeds); (se) = binomial standard error of "
        "one test set at that accuracy; paired margins: same data and training seed, a win or loss beyond 2 "
        "standard errors of the paired differences.",
        f"- **Machine**: {meta['machine']}. Runtime: the {len(rows)} runs' wall times sum to "
        f"{sum(r['wall_seconds'] for r in rows) / 3600:.1f} h, the searches' to "
        f"{sum(t['seconds'] or 0 for t in meta['tuning']) / 3600:.1f} h, plus data preparation "
        f"({meta['prepare_seconds'] / 60:.0f} min in the invocation that wrote this page; generating and decoding "
        "the data from scratch takes some minutes more per data seed). A rerun reuses finished runs and searches.",
    ]
    for name in meta["datasets"]:
        lines += dataset_section(rows, meta, DATASETS[name])
    lines += explanation_section(rows, meta)
    lines += design_section(rows)
    lines += tuning_section(meta["tuning"])
    lines += gumbel_section(meta.get("gumbel"))
    lines += ["", *meta.get("notes", [])]
    lines += throughput_section(meta["throughput"])
    lines += videos_sweep(rows, meta)
    lines += error_breakdown(meta)
    lines += fresh_seed_section()
    lines += side_benchmarks()
    return "\n".join(lines) + "\n"


def dataset_section(rows: list[dict], meta: dict, dataset: Dataset) -> list[str]:
    """One dataset's tables: supervised and zero-shot, few-shot, goals, paired margins."""
    info = meta["datasets"][dataset.variant]
    n_test, n_novel = info["test_videos"], info["novel_videos"]
    methods = [m for m in ("alt", "alt-learned", "temporal", "meanpool", "alt-unfrozen")
               if select(rows, dataset.variant, m)]
    lines = ["", f"## {dataset.title}", "",
             f"Data seeds {info['data_seeds']}: per seed {info['synth']['seen_classes']} seen classes (splits "
             f"{info['synth']['splits']}), {info['synth']['novel_classes']} novel classes; "
             f"{info['videos_per_class']} videos per class; corpus of {info['corpus_entities']} entities. "
             f"{info['description']}", "",
             "| method | supervised top-1 | zero-shot top-1, novel-only "
             f"({dataset.reference_factor}-only ref. {info['reference']:.3f}) | GZSL seen | GZSL novel | GZSL HM "
             "| runs |", "|---|---|---|---|---|---|---|"]
    for m in methods:
        runs = select(rows, dataset.variant, m)
        name = NAMES[m] + (f", {runs[0]['epochs']} epochs" if m == "alt-unfrozen" else "")
        col = {k: [r[k] for r in runs if k in r] for k in ("test_top1", "zero_shot_top1", "gzsl_seen", "gzsl_novel",
                                                           "gzsl_hm")}
        lines.append(f"| {name} | {cell(col['test_top1'], n_test)} | {cell(col['zero_shot_top1'], n_novel)} | "
                     f"{cell(col['gzsl_seen'], n_test)} | {cell(col['gzsl_novel'], n_novel)} | {cell(col['gzsl_hm'])} "
                     f"| {len(runs)} |")
    few_data = sorted({r["data_seed"] for m in METHODS for k in SHOTS for r in select(rows, dataset.variant, m, k)})
    lines += ["", f"Few-shot (seen test split; the lists `fewshot_K.csv` of data seeds {few_data}, one list per K "
              "and data seed, so the spread below is over training seeds on those lists):", "",
              "| method | " + " | ".join(f"{k}-shot top-1" for k in SHOTS) + " | runs keeping their last epoch |",
              "|---|" + "---|" * (len(SHOTS) + 1)]
    for m in METHODS:
        runs = [r for k in SHOTS for r in select(rows, dataset.variant, m, k)]
        last = sum(r["best_epoch"] == r["epochs"] for r in runs)
        lines.append(f"| {NAMES[m]} | " + " | ".join(cell([r["test_top1"] for r in select(rows, dataset.variant, m,
                                                                                              k)], n_test)
                                                      for k in SHOTS) + f" | {last} of {len(runs)} |")
    zs = [r["test_top1"] for r in select(rows, dataset.variant, "meanpool")]
    lines.append(f"| {NAMES['meanpool']} (0 shots) | " + " | ".join(cell(zs, n_test) for _ in SHOTS) + " | |")
    lines += goals_table(rows, dataset)
    lines += ["", "Margins, ALT minus the control, in points (paired over runs with the same data and training "
              "seed; with one run of each, runs = 1 and the se is that of two test sets):", "",
              "| ALT minus | figure | margin | se | runs | verdict |", "|---|---|---|---|---|---|"]
    for other in ("temporal", "alt-learned"):
        for key, shots, title in PAIRED_FIGURES:
            p = margin(rows, dataset.variant, "alt", other, key, shots)
            if p:
                lines.append(f"| {NAMES[other]} | {title} | {100 * p['mean']:+.1f} | {100 * p['se']:.1f} | "
                             f"{p['runs']} | {p['verdict']} |")
    return lines


def goals_table(rows: list[dict], dataset: Dataset) -> list[str]:
    """The issue goals, each computed from the rows: absolute figures and margins against the controls."""
    d = dataset.variant

    def against(other: str, key: str, shots: int | None = None) -> dict:
        return margin(rows, d, "alt", other, key, shots) or {"mean": float("nan"), "se": float("nan"),
                                                             "verdict": "-"}

    rows_out = []
    if d == "actions":
        for title, key, shots, goal in (("supervised top-1", "test_top1", None, 0.90),
                                        ("zero-shot top-1, novel-only", "zero_shot_top1", None, 0.85),
                                        ("GZSL HM", "gzsl_hm", None, 0.70), ("4-shot top-1", "test_top1", 4, 0.60)):
            value = mean_of(rows, d, "alt", key, shots)
            rows_out.append((f"ALT {title} >= {goal:.2f}", f"{value:.3f}", value >= goal))
        m = against("temporal", "test_top1", 4)
        rows_out.append(("ALT 4-shot within 2 points of the temporal transformer",
                         f"{100 * m['mean']:+.1f} points", m["mean"] >= -0.02))  # nan (no runs): not met
        for title, key in (("supervised", "test_top1"), ("zero-shot", "zero_shot_top1")):
            m = against("temporal", key)
            rows_out.append((f"ALT no loss beyond 2 se against the temporal transformer, {title}",
                             f"{100 * m['mean']:+.1f} (se {100 * m['se']:.1f})", m["verdict"] != "loss"))
        wins = [t for key, shots, t in PAIRED_FIGURES if (against("alt-learned", key, shots))["verdict"] == "win"]
        rows_out.append(("ALT ahead of its learned-query ablation beyond 2 se on a protocol",
                         ", ".join(wins) or "on none", bool(wins)))
    else:
        for key, shots, title in (("zero_shot_top1", None, "novel-only zero-shot"), ("test_top1", 4, "4-shot")):
            m = against("temporal", key, shots)
            rows_out.append((f"ALT ahead of the temporal transformer beyond 2 se, {title}",
                             f"{100 * m['mean']:+.1f} (se {100 * m['se']:.1f})", m["verdict"] == "win"))
        m = against("alt-learned", "zero_shot_top1")
        rows_out.append(("ALT ahead of its learned-query ablation beyond 2 se, novel-only zero-shot",
                         f"{100 * m['mean']:+.1f} (se {100 * m['se']:.1f})", m["verdict"] == "win"))
    for title, key, goal in (("object recall", "object_recall", 0.90), ("entity precision", "entity_precision", 0.90)):
        value = mean_of(rows, d, "alt", key)
        rows_out.append((f"ALT {title} >= {goal:.2f}", f"{value:.3f}", value >= goal))
    runs = [r for r in select(rows, d, "alt") if "faithfulness" in r]
    beyond = [r["faithfulness"] > 2 * r["faithfulness_se"] for r in runs]
    rows_out.append(("faithfulness: removing the top entity lowers the logit more than a random one, beyond 2 se",
                     f"{sum(beyond)} of {len(runs)} runs", bool(runs) and all(beyond)))
    return ["", "Goals:", "", "| goal | measured | |", "|---|---|---|"] + [
        f"| {goal} | {value} | **{'met' if met else 'not met'}** |" for goal, value, met in rows_out]


def explanation_section(rows: list[dict], meta: dict) -> list[str]:
    """ALT's explanation figures on both datasets (alt_core/synthetic/grounding.py), seen test split, top 3."""
    lines = ["", "## Explanations (ALT, seen test split, top-3 entities of the first view)", "",
             "An explanation lists the entities the adapter read as queries, the one whose query adds most to the "
             "predicted class's logit first (docs/method.md, 'Explanations'). Entity precision counts only units "
             "that can be checked against the clip (backgrounds; one shape, "
             "optionally one colour); all-top-3: all three checkable and in the clip; object recall: the key object "
             "(SynthObjects) or the actor's shape (SynthActions) among them; faithfulness: the predicted class's "
             "logit drop when the first entity's query is removed minus the drop when a random other valid query is "
             "(mean over clips, per run; in logit units).", "",
             "| dataset | entity precision | all-top-3 | object recall | faithfulness | runs | units left out |",
             "|---|---|---|---|---|---|---|"]
    for name in meta["datasets"]:
        runs = [r for r in select(rows, name, "alt") if r.get("explanation_version") == EXPLANATION_VERSION]
        if not runs:
            lines.append(f"| {DATASETS[name].title} | no run scored with the current explanation method "
                         f"(version {EXPLANATION_VERSION}) yet: rerun bench/results.py | | | | 0 | |")
            continue
        n = meta["datasets"][name]["test_videos"]
        faith = cell([r["faithfulness"] for r in runs]) + f" (se of one run {runs[0]['faithfulness_se']:.3f})"
        left_out = runs[0]["uncheckable_units"]
        lines.append(f"| {DATASETS[name].title} | {cell([r['entity_precision'] for r in runs])} | "
                     f"{cell([r['all_top_precision'] for r in runs], n)} | "
                     f"{cell([r['object_recall'] for r in runs], n)} | {faith} | {len(runs)} | "
                     f"{len(left_out)}: {', '.join(left_out[:12])}{', ...' if len(left_out) > 12 else ''} |")
    return lines


def design_section(rows: list[dict]) -> list[str]:
    """ALT's adapter variants on validation, and the kept one's test figures."""
    scores: dict[tuple[str, str], dict] = {}
    for r in rows:
        if r.get("variant"):
            scores.setdefault((dataset_of(r), r["variant"]), {})["few" if r["shots"] else "sup"] = \
                r["val_top1"]
    if not scores:
        return []
    kept = next((v for v, settings in DESIGN_VARIANTS.items()
                 if all(ALTConfig().to_dict()[k] == value for k, value in settings.items())), None)
    lines = ["", "## ALT's design, chosen on validation (data seed 0, training seed 0)", "",
             f"Each variant at lr {DESIGN_HYPER['lr']:g}, weight decay {DESIGN_HYPER['weight_decay']:g}; supervised: "
             f"validation top-1 (all validation videos); {DESIGN_SHOTS}-shot: validation top-1 on {DESIGN_SHOTS} "
             "videos per class. Every variant contains the temporal transformer (docs/method.md, 'Adapter').", "",
             "| dataset | variant | alignment bias | trajectory in the query | region positions | supervised val | "
             f"{DESIGN_SHOTS}-shot val | |", "|---|---|---|---|---|---|---|---|"]
    for (dataset, name), score in scores.items():
        settings = DESIGN_VARIANTS[name]
        flags = " | ".join("yes" if settings[k] else "no" for k in ("alignment_bias", "query_trajectory",
                                                                   "region_positions"))
        lines.append(f"| {DATASETS[dataset].title} | {name} | {flags} | {score.get('sup', float('nan')):.3f} | "
                     f"{score.get('few', float('nan')):.3f} | {'**kept**' if name == kept else ''} |")
    for dataset in dict.fromkeys(d for d, _ in scores):
        alt = [r for r in select(rows, dataset, "alt") if r["data_seed"] == 0 and r["seed"] == 0]
        if kept and alt:
            lines += ["", f"The kept variant ({kept}, the default) in the {DATASETS[dataset].title} protocol, data "
                          f"seed 0, training seed 0: supervised test top-1 {alt[0]['test_top1']:.3f}, novel-only "
                          f"zero-shot "
                          f"{alt[0]['zero_shot_top1']:.3f}, GZSL HM {alt[0]['gzsl_hm']:.3f}."]
    return lines


def tuning_section(records: list[dict]) -> list[str]:
    """Each method's search and what it chose."""
    if not records:
        return []
    lines = ["", "## Hyperparameters chosen on validation (`alt tune`, SynthActions data seed 0)", "",
             "The same space and trial budget for every method, ASHA on validation top-1; the chosen settings train "
             "that method on both datasets.", "",
             "| method | protocol | space | trials | trial-epochs | chosen | best val top-1 | search h |",
             "|---|---|---|---|---|---|---|---|"]
    for t in records:
        chosen = ", ".join(f"{k} {v:g}" for k, v in sorted(t["chosen"].items()))
        lines.append(f"| {NAMES[t['method']]} | {t['protocol']} | `{t['space']}` | {len(t['trials'])} | "
                     f"{t['trial_epochs']} | {chosen} | {t['best_val_top1']:.3f} | {(t['seconds'] or 0) / 3600:.2f} |")
    return lines


def gumbel_section(gumbel: dict | None) -> list[str]:
    if not gumbel:
        return []
    lines = ["", "## The straight-through Gumbel estimator", "",
             f"Per region, the share of the similarity's gradient that flows through the soft assignment rather than "
             f"the score it weights (`alt_core.alignment.soft_gradient_shares`), on {gumbel['clips']} train clips "
             f"through the trained checkpoint of `{gumbel['run']['name']}` (a run on cached tokens has a frozen tower: "
             "it is opened for this measurement only, as a pixels run's last block is):", "",
             "| temperatures | similarity T | Gumbel tau | median share | regions above 10% |", "|---|---|---|---|---|"]
    for name in ("saturated", "chosen"):
        g = gumbel[name]
        lines.append(f"| {'before (saturated)' if name == 'saturated' else 'the defaults'} | "
                     f"{g['similarity_temperature']:g} | {g['gumbel_tau']:g} | {g['median_share']:.3g} | "
                     f"{g['regions_over_10pct']:.3f} |")
    return lines


def videos_sweep(rows: list[dict], meta: dict) -> list[str]:
    """ALT's validation top-1 against the training videos per class (data seed 0, training seed 0)."""
    if "actions" not in meta["datasets"]:  # a run of other datasets only (`--datasets objects`)
        return []
    train_per_class = meta["datasets"]["actions"]["train_per_class"]
    sweep = sorted((r for r in rows if dataset_of(r) == "actions" and r["method"] == "alt"
                    and r["data_seed"] == 0 and r["seed"] == 0 and r["shots"] is None and r.get("variant") is None),
                   key=lambda r: r.get("train_per_class") or train_per_class)
    if len(sweep) < 2:
        return []
    lines = ["## Training videos per class (ALT, chosen on validation)", "",
             "Subsets of data seed 0's train split (the same videos for every training seed), trained with the full "
             "schedule; validation top-1 of the kept epoch. The test split plays no part.", "",
             "| train videos per class | validation top-1 | best epoch | wall s |", "|---|---|---|---|"]
    for r in sweep:
        lines.append(f"| {r.get('train_per_class') or train_per_class} | {r['val_top1']:.3f} | "
                     f"{r['best_epoch']} | {r['wall_seconds']:.0f} |")
    best = max(sweep, key=lambda r: r["val_top1"])
    if best is sweep[-1]:
        lines += ["", f"The whole split ({train_per_class} per class) is best on validation, so the tables "
                      "above use it; validation still rising at the largest size says more videos would help."]
    else:
        lines += ["", f"{best['train_per_class']} per class is best on validation, by "
                      f"{best['val_top1'] - sweep[-1]['val_top1']:.3f}; the tables above use the whole split."]
    return lines + [""]


def fresh_seed_section() -> list[str]:
    """The verbs' defaults on a data seed these runs never used (results/fresh_seed.json, bench/fresh_seed.py)."""
    path = RESULTS / "fresh_seed.json"
    if not path.is_file():
        return []
    fresh = json.loads(path.read_text())
    names = {"supervised": "supervised top-1", "zero_shot": "zero-shot top-1, novel-only",
             "few_shot": f"{fresh['shots']}-shot top-1"}
    lines = [f"## The CLI's defaults on a fresh data seed (`{fresh['command']}`)", "",
             f"{DATASETS[fresh['dataset']].title} data seed {fresh['data_seed']}, which no run above used: `alt data "
             "synth`, `alt corpus build` (the label phrases and `entities.jsonl`), `alt decode --cache-tokens`, "
             f"`alt train`, `alt train --shots-file fewshot_{fresh['shots']}.csv` and `alt eval`, each with no option "
             f"beyond its paths; machine: {fresh['machine']}. Beside them, ALT's runs of this page.", "",
             "| protocol | fresh data seed | this page: mean ± std | runs | se of one test set "
             "| within 2 x max(std, se) |", "|---|---|---|---|---|---|"]
    for key, f in fresh["figures"].items():
        lines.append(f"| {names[key]} | {f['fresh']:.3f} | {f['mean']:.3f} ± {f['std']:.3f} | {f['runs']} | "
                     f"{f['se']:.3f} | {'yes' if f['within'] else '**no**'} |")
    return lines + ["", "The bar is the larger of the runs' std and one test set's binomial se: the runs above span "
                    "at most two data seeds, too few to measure how far another data seed moves a figure, and a test "
                    "set of that size moves it by at least its se.", ""]


def error_breakdown(meta: dict) -> list[str]:
    """Wrong shape or wrong motion (results/errors.json, written by bench/errors.py for these weights)."""
    path = RESULTS / "errors.json"
    errors = json.loads(path.read_text()) if path.is_file() else None
    if errors is None or errors["weights"] != meta["weights"]:
        return []
    pairs = next(iter(errors["methods"].values()))["pair_motion_videos"]
    lines = ["## Where the supervised errors are (`python bench/errors.py`)", "",
             f"{errors['data']}; the supervised checkpoints of training seed 0. A class is a shape and a motion: the "
             "share of videos whose predicted class has the right shape, the right motion, and top-1 on the two pair "
             f"motions (chasing, colliding: actor and partner on screen, only the actor names the class; {pairs} "
             "videos) and on the other nine.", "",
             "| method | top-1 | right shape | right motion | pair motions: top-1 | pair motions: right shape "
             "| other motions: top-1 |", "|---|---|---|---|---|---|---|"]
    for method, row in errors["methods"].items():
        lines.append(f"| {NAMES[method]} | {row['top1']:.3f} | {row['shape_right']:.3f} | {row['motion_right']:.3f} "
                     f"| {row['pair_motion_top1']:.3f} | {row['pair_motion_shape_right']:.3f} "
                     f"| {row['other_motion_top1']:.3f} |")
    return lines + [""]


def throughput_section(speed: dict) -> list[str]:
    ratio = speed["tokens"] / speed["pixels"]
    lines = ["", "## Training throughput: cached region tokens vs pixels (ALT, same model and batch)", "",
             f"End to end through Ray Train (1 worker, batch 32, second epoch, shards read by Ray Data): "
             f"**{speed['tokens']:.1f}** clips/s from cached tokens vs **{speed['pixels']:.1f}** from pixels, "
             f"**{ratio:.1f}x** ({speed['machine']}).", "",
             "Training step alone, in one process (`python bench/train_throughput.py`; batches in memory):", "",
             "| backbone | image | regions / frame | pixels clips/s | tokens clips/s | ratio | FLOP ceiling |",
             "|---|---|---|---|---|---|---|"]
    for row in speed["steps"]:
        lines.append(f"| {row['backbone']} | {row['image_size']}px | {row['regions']} | "
                     f"{row['pixels_clips_per_s']:.1f} | {row['tokens_clips_per_s']:.1f} | "
                     f"**{row['ratio']:.1f}x** | {row['flop_ceiling']:.1f}x |")
    low, high = min(speed["steps"], key=lambda r: r["flop_ceiling"]), max(speed["steps"], key=lambda r: r["ratio"])
    lines += ["", "The ceiling is (frozen tower forward + 3 x trainable forward) / (3 x trainable forward), counted "
              "by `alt_core.flops`: caching removes only the frozen tower's work. With "
              f"`{low['backbone']}` that work is small, so its ceiling is {low['flop_ceiling']:.1f}x and no "
              f"implementation reaches 10x; with {high['backbone']} at {high['image_size']}px the same adapter "
              f"trains {high['ratio']:.0f}x faster from cached tokens. Speed does not depend on the weights, so "
              "this section is measured once (`results/throughput.json`; delete it to measure again).", ""]
    return lines + gpu_throughput_section()


def gpu_throughput_section() -> list[str]:
    """The same step on a GPU (results/throughput_gpu.json, from `bench/train_throughput.py --device cuda`),
    when it was measured: this 2-CPU machine has none."""
    path = RESULTS / "throughput_gpu.json"
    if not path.exists():
        return []
    rows = json.loads(path.read_text())
    lines = [f"The same step on a GPU, {rows[0]['machine']}, under bf16 autocast as `alt train` runs there "
             "(`python bench/train_throughput.py --device cuda --backbone B --batch N --out "
             "results/throughput_gpu.json`; random-init towers, real SynthActions frames):", "",
             "| backbone | image | batch | pixels clips/s | tokens clips/s | ratio | FLOP ceiling |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['backbone']} | {row['image_size']}px | {row['batch']} | "
                     f"{row['pixels_clips_per_s']:.0f} | {row['tokens_clips_per_s']:.0f} | "
                     f"**{row['ratio']:.1f}x** | {row['flop_ceiling']:.1f}x |")
    ceiling = max(r["flop_ceiling"] for r in rows)
    real = sorted((r for r in rows if r["flop_ceiling"] == ceiling), key=lambda r: r["batch"])
    small, large = real[0], real[-1]
    step_ms = [1000 * r["batch"] / r["tokens_clips_per_s"] for r in (small, large)]
    lines += ["", f"On the GPU the gain stays far below the FLOP ceiling. A {small['backbone']} step from tokens "
              f"takes {step_ms[0]:.0f} ms at batch {small['batch']} and {step_ms[1]:.0f} ms at batch "
              f"{large['batch']}: {large['batch'] // small['batch']}x the clips in about the same time, so the step "
              "is bound by a fixed per-step cost (kernel launches, the optimizer over many small tensors; not profiled "
              "here), not by arithmetic. At batch "
              f"{large['batch']} caching tokens trains {large['ratio']:.1f}x faster than from pixels. Measured once "
              "on a GPU machine lent to one session; it is not rerun by `bench/results.py`.", ""]
    return lines


def infer_break_even(bench: dict) -> str:
    """Derived from the measured fixed cost and rates: the archive size from which `alt infer` is 1.5x the loop
    (N / loop = 1.5 (first shard + N / steady))."""
    loop = next(iter(bench["runs"].values()))["videos_per_s"]
    if bench["steady_videos_per_s"] <= 1.5 * loop:
        return ""
    videos = 1.5 * bench["first_shard_s"] / (1 / loop - 1.5 / bench["steady_videos_per_s"])
    return f" (derived: 1.5x from about {videos:.0f} videos)"


def serving_section(serve: dict, gpu: bool) -> list[str]:
    """bench/serve_load.py's figures: where a single request's time goes, batched against unbatched per
    concurrency, pinned replicas and the reliability run, with the goals they meet."""
    local, modes = serve["in_process_p50_ms"], serve["modes"]
    lines = [f"## Serving{' on a GPU' if gpu else ''} (`python bench/serve_load.py{' --gpu' if gpu else ''}`)", "",
             f"{serve['backbone']} with an ALT adapter (72 labels); real clips ({serve['clips']}) "
             "uploaded as multipart forms over HTTP on 127.0.0.1 (default top_k, explanations on); one model "
             f"replica unless said otherwise; machine: {serve['machine']}. Modes: `single` "
             "(deploy/serve-single.yaml: one deployment decodes and runs the model) and `split` (deploy/serve.yaml: "
             "an ingress in front of a model deployment). In-process reference: decoding the same clip and "
             f"predicting it (forward, top-5, entities) in the benchmark's process, p50 {local:.1f} ms.", "",
             "Single requests, one at a time (p50 ms; the stages are the server's `timing_ms`; `outside` = the "
             "client's latency minus the handler's total: HTTP, Serve's proxy and its hop to the replica; a bare "
             "`GET /healthz` is that path with no work):", "",
             "| mode | HTTP p50 | / in-process | read upload | decode | wait for batch | forward | hop to model "
             "| handler total | outside | bare GET |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode, result in modes.items():
        single, st = result["single"], result["single"]["stages_p50_ms"]
        lines.append(f"| {mode} | {single['p50_ms']:.1f} | {single['p50_ms'] / local:.2f}x | {st['read']:.1f} | "
                     f"{st['decode']:.1f} | {st['queue']:.1f} | {st['forward']:.1f} | {st['hop']:.1f} | "
                     f"{st['total']:.1f} | {st['outside']:.1f} | {result['bare_p50_ms']:.1f} |")
    best = min(modes, key=lambda m: modes[m]["single"]["p50_ms"])
    single, st = modes[best]["single"], modes[best]["single"]["stages_p50_ms"]
    work = st["decode"] + st["forward"]
    lines += ["", f"In {best} mode a single request costs {single['p50_ms'] - local:.1f} ms more than in-process: "
              f"{st['outside']:.1f} ms outside the handler (a bare GET costs {modes[best]['bare_p50_ms']:.1f} ms of "
              f"that path), {st['read']:.1f} ms reading the upload, {work - local:+.1f} ms in the replica's decode "
              f"+ forward against the same work in-process, {st['total'] - st['read'] - work:.1f} ms in the rest of "
              f"the handler (p50s of separate stages do not add up exactly). A 1.3x goal leaves {0.3 * local:.1f} ms "
              "for all of it, Serve's own HTTP path included."]
    busy = gpu and any("gpu_busy_percent" in row for r in modes.values() for row in r["batched"].values())
    lines += ["", "Concurrent clients, batched (max_batch_size 8, no batch wait) and unbatched (max_batch_size 1), "
              "alternated twice in the same run:", "",
              "| mode | clients | batched req/s | p50 ms | p95 ms | batch sizes | unbatched req/s | p50 ms | p95 ms "
              "| batched / unbatched |" + (" GPU busy batched / unbatched |" if busy else ""),
              "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if busy else "")]
    ratios = {}
    for mode, result in modes.items():
        for clients, b in result["batched"].items():
            u = result["unbatched"][clients]
            ratios[mode, int(clients)] = b["throughput"] / u["throughput"]
            lines.append(f"| {mode} | {clients} | {b['throughput']:.1f} | {b['p50_ms']:.0f} | {b['p95_ms']:.0f} | "
                         f"{b['batch_sizes']} | {u['throughput']:.1f} | {u['p50_ms']:.0f} | {u['p95_ms']:.0f} | "
                         f"{ratios[mode, int(clients)]:.2f}x |"
                         + (f" {b['gpu_busy_percent']:.0f}% / {u['gpu_busy_percent']:.0f}% |" if busy else ""))
    single_ratio = single["p50_ms"] / local
    goals = [(f"single request: HTTP p50 <= 1.3x in-process ({best} mode)", f"{single_ratio:.2f}x",
              single_ratio <= 1.3)]
    if gpu:
        at16 = {m: r for (m, c), r in ratios.items() if c == 16}
        goals += [(f"batched / unbatched >= 2x at 16 clients ({m})", f"{r:.2f}x", r >= 2) for m, r in at16.items()]
    else:
        for mode in modes:
            worst = min(r for (m, _), r in ratios.items() if m == mode)
            goals.append((f"batched / unbatched >= 1.0 at every concurrency ({mode})", f"lowest {worst:.2f}x",
                          worst >= 1.0))
    if "reliability" in serve:
        run, two = serve["reliability"], serve["two_replicas"]
        one = modes[run["mode"]]["batched"][str(two["concurrency"])]
        lines += ["", f"Replicas pinned, {run['mode']} mode, {two['concurrency']} clients: 1 replica "
                  f"{one['throughput']:.1f} req/s, 2 replicas {two['throughput']:.1f} req/s = "
                  f"{two['throughput'] / one['throughput']:.2f}x.", "",
                  f"Reliability, {run['mode']} mode with autoscaling (1 to 2 replicas, upscale_delay_s 2, "
                  f"downscale_delay_s 10): {run['requests']} requests from {run['concurrency']} clients, {run['ok']} "
                  f"ok, {run['errors']} errors, {run['lost']} lost, {run['throughput']:.1f} req/s, p50 "
                  f"{run['p50_ms']:.0f} ms, p99 {run['p99_ms']:.0f} ms; {run['max_replicas_seen']} replicas reached "
                  + (f"{run['scaled_up_after_s']:.1f} s into the load" if run["scaled_up_after_s"] is not None
                     else "never") + ", back to 1 "
                  + (f"{run['scaled_down_after_load_s']:.1f} s after it." if run["scaled_down_after_load_s"]
                     is not None else "not within 120 s after it.")]
        goals += [("0 errors and 0 lost", f"{run['errors']} errors, {run['lost']} lost",
                   run["errors"] == 0 and run["lost"] == 0),
                  ("autoscaling up under load and back down after it", f"up to {run['max_replicas_seen']}, down "
                   + ("yes" if run["scaled_down_after_load_s"] is not None else "no"),
                   run["max_replicas_seen"] >= 2 and run["scaled_down_after_load_s"] is not None)]
    lines += ["", "| goal | measured | |", "|---|---|---|"]
    lines += [f"| {goal} | {measured} | **{'met' if met else 'not met'}** |" for goal, measured, met in goals]
    return lines + [""]


def side_benchmarks() -> list[str]:
    """Sections for the search and serving benchmarks, from their own JSON (bench/tune.py, bench/serve_load.py)."""
    lines = []
    if (RESULTS / "tune_bench.json").is_file():
        tune = json.loads((RESULTS / "tune_bench.json").read_text())
        grid, asha = tune["rows"]
        verdict = tune["verdict"]
        lines += ["## Hyperparameter search: ASHA against the full grid (`python bench/tune.py`)", "",
                  f"Space `{tune['space']}` (query count x adapter depth), {tune['concurrent']} trials at a time, "
                  f"on {tune['data']}; machine: {tune['machine']}.", "",
                  "| scheduler | trials | trial-epochs | wall s | search overhead s | best val top-1 | its config "
                  "| champion's test top-1 |", "|---|---|---|---|---|---|---|---|"]
        for row in (grid, asha):
            lines.append(f"| {'full grid (FIFO)' if row['scheduler'] == 'fifo' else 'ASHA'} | {row['trials']} | "
                         f"{row['trial_epochs']} | {row['wall_seconds']:.0f} | {row['overhead_seconds']:.0f} | "
                         f"{row['best_val_top1']:.3f} | {row['best_config']} | {row['champion_test_top1']:.3f} |")
        lines += ["", f"ASHA spent {100 * verdict['epochs_fraction']:.0f}% of the grid's trial-epochs and its best "
                  f"validation top-1 is {verdict['val_gap_points']:.1f} points below the grid's: goal (within 1 point "
                  f"at <= 50%) **{'met' if verdict['met'] else 'not met'}**. The overhead is wall time minus the "
                  "trials' own time divided by the concurrency. ASHA ranks trials on early validation scores; the "
                  "grid trials' curves (`progress.jsonl` of each trial) show how well an early epoch predicts the "
                  "final ranking on this data.", ""]
    if (RESULTS / "infer_bench.json").is_file():
        bench = json.loads((RESULTS / "infer_bench.json").read_text())
        data = bench["data"]
        lines += ["## Batch inference over an archive (`python bench/infer.py`)", "",
                  f"{data['videos']} Kinetics-style videos ({data['seconds']} s at {data['fps']} fps, "
                  f"{data['width']}x{data['height']}, H.264 one GOP, pixel noise {data['noise']:g}), {data['clips']} "
                  "clip(s) of 8 frames each, labelled by an ALT checkpoint on alt-tiny; machine: "
                  f"{bench['machine']}.", "", "| run | seconds | videos/s |", "|---|---|---|"]
        lines += [f"| {name} | {row['seconds']:.1f} | {row['videos_per_s']:.2f} |"
                  for name, row in bench["runs"].items()]
        ratio = bench["ratio_workers_to_loop"]
        lines += ["", f"Ratio ({bench['workers']} workers / plain loop): **{ratio:.2f}** (goal >= 1.5: "
                  f"**{'met' if ratio >= 1.5 else 'not met'}**). The loop is `alt predict`'s function called per video "
                  f"in one process ({bench['plain_loop_torch']}); `alt infer` includes starting its replicas: its "
                  f"first shard is written {bench['first_shard_s']:.1f} s after the start (Ray Data's start, the "
                  f"replicas loading the model, the first decodes), then it labels {bench['steady_videos_per_s']:.1f} "
                  f"videos/s, {bench['steady_ratio']:.2f}x the loop, so the ratio grows with the archive"
                  + infer_break_even(bench) + ".", ""]
    for name in ("serve_bench.json", "serve_bench_gpu.json"):
        if (RESULTS / name).is_file():
            lines += serving_section(json.loads((RESULTS / name).read_text()), gpu=name.endswith("_gpu.json"))
    if not (RESULTS / "serve_bench_gpu.json").is_file():
        lines += ["GPU serving: not measured yet (no session has had a GPU since the bench was written); "
                  "`python bench/serve_load.py --gpu` writes results/serve_bench_gpu.json, which this page renders.",
                  ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "results"), help="work directory (data, tokens, runs)")
    parser.add_argument("--datasets", type=lambda text: [d for d in text.split(",") if d],
                        default=list(DATASETS), help="comma list of " + ", ".join(DATASETS))
    parser.add_argument("--data-seeds", type=int, default=2)
    parser.add_argument("--train-seeds", type=int, default=3)
    parser.add_argument("--videos-per-class", type=int, default=SYNTH_VIDEOS_PER_CLASS)
    parser.add_argument("--few-shot-steps", type=int, default=FEW_SHOT_STEPS,
                        help="optimizer steps of the design variants' few-shot runs (the search chooses the others')")
    parser.add_argument("--few-shot-data-seeds", type=int, default=2, help="run few-shot on the first N data seeds")
    parser.add_argument("--unfrozen-seeds", type=int, default=1,
                        help="training seeds of ALT with the last image block trained from pixels (SynthActions "
                             "data seed 0)")
    parser.add_argument("--unfrozen-epochs", type=int, default=TrainConfig().epochs,
                        help="epochs of those runs (default: as the frozen runs; from pixels an epoch costs ~4x one "
                             "from tokens on 2 CPUs)")
    parser.add_argument("--videos-sweep", type=lambda text: [int(k) for k in text.split(",") if k], default=[8, 16],
                        help="also train ALT on these videos per class of SynthActions data seed 0's train split "
                             "(comma list; empty: none) to show on validation whether the full split is enough")
    parser.add_argument("--methods", type=lambda text: [m for m in text.split(",") if m], default=list(METHODS),
                        help="comma list of the trained methods to run: " + ", ".join(METHODS))
    parser.add_argument("--shots", type=lambda text: tuple(int(k) for k in text.split(",") if k), default=SHOTS,
                        help="few-shot protocols to run (comma list of K)")
    parser.add_argument("--no-search", action="store_true",
                        help="skip the per-method search: every method trains at the CLI's defaults (DESIGN_HYPER)")
    parser.add_argument("--render-only", action="store_true", help="rebuild RESULTS.md from results/ alone")
    parser.add_argument("--only", choices=["design", "tune"],
                        help="run the stages up to this one only (their runs are reused later)")
    args = parser.parse_args()
    unknown = sorted(set(args.datasets) - set(DATASETS))
    if unknown or not args.datasets:
        parser.error(f"--datasets takes a comma list of {', '.join(DATASETS)}")
    if not args.methods or set(args.methods) - set(METHODS):
        parser.error(f"--methods takes a comma list of {', '.join(METHODS)}")
    meta_file = RESULTS / "meta.json"
    if not args.render_only:
        out = Path(args.out).resolve()
        setup_logging()
        ensure_ray()
        start = time.time()
        actions = [prepare(out, DATASETS["actions"], d, args.videos_per_class, pixels=d == 0)
                   for d in range(args.data_seeds)]
        prepare_seconds = time.time() - start
        design = {"actions": (actions[0], list(DESIGN_VARIANTS))}
        if "objects" in args.datasets:
            design["objects"] = (prepare(out, DATASETS["objects"], 0, args.videos_per_class), list(DESIGN_VARIANTS))
        for prep, variants in design.values():
            for variant in variants:
                for shots in (None, DESIGN_SHOTS):
                    hyper = untuned_hyper("few-shot" if shots else "supervised", args.few_shot_steps)
                    run_one(prep, "alt", 0, shots, hyper, variant=variant, test=False)
        if args.only == "design":
            return
        records = [] if args.no_search else [tuned(actions[0], m, p, args.few_shot_steps)
                                             for m in METHODS for p in SEARCH_SPACES]
        hyper = {(t["method"], t["protocol"]): chosen_hyper(t, t["protocol"]) for t in records} or {
            (m, p): untuned_hyper(p, args.few_shot_steps) for m in METHODS for p in SEARCH_SPACES}
        if args.only == "tune":
            return
        gumbel = None
        for name in args.datasets:
            start = time.time()
            preps = actions if name == "actions" else [prepare(out, DATASETS[name], d, args.videos_per_class)
                                                       for d in range(args.data_seeds)]
            prepare_seconds += time.time() - start
            for prep in preps:
                zero_shot_clip(prep)
                shots_here = [k for k in args.shots if prep["seed"] < args.few_shot_data_seeds
                              and (prep["data"] / f"fewshot_{k}.csv").exists()]
                for method in args.methods:
                    for seed in range(args.train_seeds):
                        for shots in (None, *shots_here):
                            run_one(prep, method, seed, shots, hyper[method, "few-shot" if shots else "supervised"])
            if name != "actions":
                continue
            for per_class in args.videos_sweep:
                run_one(preps[0], "alt", 0, None, hyper["alt", "supervised"], per_class=per_class)
            for seed in range(args.unfrozen_seeds):
                row = run_one(preps[0], "alt-unfrozen", seed, None,
                              hyper["alt", "supervised"] | {"epochs": args.unfrozen_epochs}, data="pixels", unfreeze=1)
                gumbel = gumbel or gumbel_gradient(preps[0], row)
            if gumbel is None and "alt" in args.methods:  # no pixels run: a frozen-tower supervised checkpoint of
                kept = [r for r in select(rows_of_results(), "actions", "alt")  # data seed 0 still on disk, if any
                        if r["data_seed"] == 0 and Path(r["checkpoint"]).exists()]
                gumbel = gumbel_gradient(preps[0], kept[0]) if kept else None
        meta = collect_meta(actions, args, records, hyper, gumbel, throughput(actions[0]), prepare_seconds)
        meta_file.write_text(json.dumps(meta, indent=1) + "\n")
    meta = json.loads(meta_file.read_text())
    table = render(rows_of_weights(meta["weights"]), meta)
    (ROOT / "RESULTS.md").write_text(table)
    report(table)


DESCRIPTIONS = {
    "actions": "A shape performs one of 11 motions; a class is shape x motion, the novel classes are held-out "
               "shape x motion compositions (2 per shape).",
    "objects": "A white circle chases, collides with or orbits a small key object (one of 6 colour-shape kinds) in "
               "one of 4 scenes, with 2 distractor objects of other kinds; a class is interaction x object x scene, "
               "the novel classes are unseen triples of seen pairs (design: docs/method.md, 'SynthObjects').",
}


def collect_meta(actions: list[dict], args, records: list[dict], chosen: dict, gumbel: dict | None, speed: dict,
                 prepare_seconds: float) -> dict:
    """What the page states about data, backbone, protocol and machine (results/meta.json)."""
    from alt_core.synthetic.pretrain import evaluate_backbone

    probe = evaluate_backbone(None, "alt-tiny")
    keys = ("single_object_top1", "background_top1", "two_object_both_in_top2", "region_to_entity_top1",
            "motion_top1", "same_shape_class_cosine")
    datasets = {}
    for name in args.datasets:
        root = Path(args.out).resolve() / f"alt-tiny-{weights_digest()}"
        data = root / f"{DATASETS[name].prefix}data0"
        synth_meta = json.loads((data / "synth" / "synth.json").read_text())
        novel = read_labels(data / "synth" / "labels_novel.txt")
        datasets[name] = {
            "data_seeds": list(range(args.data_seeds)), "videos_per_class": args.videos_per_class,
            "synth": {k: synth_meta[k] for k in ("seen_classes", "novel_classes", "splits")},
            "train_per_class": synth_meta["splits"]["train"] // synth_meta["seen_classes"],
            "test_videos": synth_meta["splits"]["test"], "novel_videos": synth_meta["splits"]["novel"],
            "corpus_entities": len(pads.dataset(str(data / "corpus.parquet")).to_table(columns=["unit"])),
            "reference": DATASETS[name].reference(novel), "description": DESCRIPTIONS[name]}
    hyper = {}
    for (method, protocol), settings in chosen.items():
        hyper.setdefault(method, {})[protocol] = TrainConfig().to_dict() | settings
    return {
        "command": " ".join(["python bench/results.py", *sys.argv[1:]]),
        "weights": weights_digest(), "train_seeds": list(range(args.train_seeds)), "datasets": datasets,
        "tuning": [{k: v for k, v in t.items() if k != "key"} for t in records], "hyper": hyper, "gumbel": gumbel,
        "backbone_eval": ", ".join(f"{k} {probe[k]}" for k in keys if k in probe),
        "machine": torch_machine(), "prepare_seconds": prepare_seconds, "throughput": speed,
        "notes": json.loads(meta_notes.read_text()) if (meta_notes := RESULTS / "notes.json").exists() else [],
    }


if __name__ == "__main__":
    run_main(main)
