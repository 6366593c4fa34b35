"""The results table: ALT, its learned-query ablation, the temporal baseline and zero-shot CLIP on SynthActions
with the shipped alt-tiny (writes results/*.json, then RESULTS.md from them).

Protocols (the test split and the novel videos are never used for a choice; every run keeps its best
validation epoch):
- supervised: train on the 72 seen classes' train split, top-1 on their test split (72-way);
- zero-shot, novel-only: the supervised checkpoints scored against the 16 novel class names on the novel
  videos (16-way), beside the shape-only reference (2 motions per shape: 0.50);
- generalized zero-shot: the same checkpoints against all 88 class names, on the seen test videos and on
  the novel videos: seen top-1, novel top-1 and their harmonic mean;
- few-shot K = 2, 4, 8: train on SynthActions' fewshot_K.csv lists with a fixed number of optimizer steps,
  top-1 on the seen test split;
- explanation precision (ALT): the fraction of seen test clips whose top-3 entities are all in the clip;
- methods: ALT, ALT with learned queries (the ablation: same adapter and tokens), the temporal transformer,
  zero-shot CLIP (meanpool, no training), and ALT with the last image block trained from pixels;
- 2 data seeds x 3 training seeds; mean +- std over runs and the binomial standard error of one test set;
- training videos per class: ALT also trained on 8 and 16 videos per class of data seed 0's train split, their
  validation top-1 beside the whole split's, so the size used is justified on validation data.

Every finished run is a JSON file under results/runs/ (committed); a rerun reuses them, and
`--render-only` rebuilds RESULTS.md from results/ alone. Throughput, search and serving figures come from
results/throughput.json (measured here when missing), results/tune_bench.json (bench/tune.py) and
results/serve_bench.json (bench/serve_load.py).

Usage: python bench/results.py [--data-seeds 2] [--train-seeds 3] [--videos-sweep 8,16] [--render-only]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.dataset as pads

from bench.machine import report, torch_machine
from pipelines.environment import set_defaults

set_defaults()  # before Ray, MLflow and huggingface_hub are imported

from alt_core.checkpoint import load_checkpoint
from alt_core.clips import clip_batches, existing_shards, read_format
from alt_core.config import ALTConfig, BackboneSpec, DecodeSpec, TrainConfig
from alt_core.manifest import read_labels
from alt_core.synthetic.grounding import explanation_precision
from alt_core.synthetic.synth import generate_synth_actions
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
SHOTS = (2, 4, 8)
FEW_SHOT_STEPS, FEW_SHOT_EPOCHS = 300, 5  # one step budget whatever K; validation (best epoch) every 60 steps


def weights_digest() -> str | None:
    """The shipped alt-tiny's weights, as corpora, token caches and checkpoints name them."""
    return BackboneSpec("alt-tiny").digest()


GOALS = {"supervised": 0.90, "zero_shot": 0.85, "gzsl_hm": 0.70, "shots4": 0.60, "explanation_precision": 0.90}


def prepare(out: Path, data_seed: int, videos_per_class: int, train_clips: int, pixels: bool = False) -> dict:
    """Generate one SynthActions set, its corpus and its cached tokens (and frames when `pixels`), under a
    directory named after the backbone weights, so new weights never reuse stale tokens. Idempotent."""
    root = out / f"alt-tiny-{weights_digest()}" / f"data{data_seed}"
    data = root / "synth"
    synth = generate_synth_actions(data, seed=data_seed, videos_per_class=videos_per_class, frames=16, size=64)
    all_labels = read_labels(data / "labels_seen.txt") + read_labels(data / "labels_novel.txt")
    (root / "labels_all.txt").write_text("".join(f"{label}\n" for label in all_labels))
    corpus = build_corpus_dataset(data / "labels_seen.txt", ["labels", str(data / "entities.jsonl")],
                                  "alt-tiny", None, root / "corpus.parquet")
    spec = DecodeSpec(frames=8, clips=2, crops=1, size=64, train_clips=train_clips, seed=data_seed)
    tokens = decode_manifest(data / "manifest.parquet", root / "tokens",
                             replace(spec, cache_tokens=True, backbone="alt-tiny", tome_r=8))
    prep = {"root": root, "data": data, "synth": synth, "corpus": corpus, "tokens": tokens, "seed": data_seed}
    if pixels:
        prep["pixels"] = decode_manifest(data / "manifest.parquet", root / "pixels", spec)
    return prep


def split_logits(model, clips_dir: Path, split: str, labels: list[str]) -> tuple[dict, dict]:
    """View-averaged logits of every video of a split against `labels`, in this process."""
    index = {label: i for i, label in enumerate(labels)}
    fmt = read_format(clips_dir)
    payload = ["frames"] if fmt.kind == "frames" else ["tokens", "sizes"]
    dataset = pads.dataset([str(p) for p in existing_shards(clips_dir)], format="parquet")
    batches = (b.to_pydict() for b in dataset.to_batches(columns=["video_id", "label", *payload], batch_size=64,
                                                          filter=pads.field("split") == split))
    scores = score_videos(model, clip_batches(batches, fmt, index), model.class_embeddings.device)
    return scores.mean_logits(), scores.targets


def accuracy(logits: dict, targets: dict, columns: list[int]) -> float:
    """Top-1 with the label set restricted to `columns` (targets index the full label set)."""
    position = {c: i for i, c in enumerate(columns)}
    restricted = {vid: row[columns] for vid, row in logits.items()}
    return topk_accuracy(restricted, {vid: position[t] for vid, t in targets.items()}, ks=(1,))["top1"]


def protocols(model, prep: dict, clips_dir: Path, shots: int | None) -> dict:
    """Every protocol's top-1 for one trained model; zero-shot ones only for supervised runs."""
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
            model.set_labels(seen)
            row |= {k: v for k, v in explanation_precision(model, clips_dir).items() if k.endswith("precision")}
    return row


def harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b else 0.0


def run_one(prep: dict, method: str, seed: int, shots: int | None, epochs: int, few_shot_steps: int = FEW_SHOT_STEPS,
            data: str = "tokens", unfreeze: int = 0, per_class: int | None = None) -> dict:
    """Train one run (the CLI's settings, plus the method's overrides) and score it; the row is kept in
    results/runs/, so a rerun reuses finished runs unless the backbone weights, epochs or steps changed.
    `per_class`: train on that many videos per class of the train split, with the full schedule (the
    videos-per-class sweep)."""
    name = (f"{method}-data{prep['seed']}-seed{seed}" + (f"-shots{shots}" if shots else "")
            + (f"-train{per_class}" if per_class else ""))
    schedule = TrainConfig(seed=seed, epochs=epochs)
    if shots:
        schedule = replace(schedule, shots_file=str(prep["data"] / f"fewshot_{shots}.csv"), steps=few_shot_steps,
                           epochs=FEW_SHOT_EPOCHS)
    if per_class:
        schedule = replace(schedule, shots=per_class)
    row_file = RESULTS / "runs" / f"{name}.json"
    run_dir = prep["root"] / "runs" / name
    if row_file.exists():
        row = json.loads(row_file.read_text())
        if (row["weights"], row["epochs"], row["steps"]) == (weights_digest(), schedule.epochs, schedule.steps):
            return row
        shutil.rmtree(run_dir, ignore_errors=True)  # trained with other settings: start afresh, never resume it
    start = time.time()
    summary = train(TrainJob(data=str(prep["root"] / data), corpus=str(prep["root"] / "corpus.parquet"),
                             out=str(run_dir), labels=str(prep["data"] / "labels_seen.txt"), run_name=name,
                             model=ALTConfig(**METHODS.get(method, {}), unfreeze_last_blocks=unfreeze),
                             train=schedule, resume=(run_dir / "ray").exists()))
    row = {"name": name, "method": method, "data_seed": prep["seed"], "seed": seed, "shots": shots,
           "train_per_class": per_class, "weights": weights_digest(), "epochs": schedule.epochs,
           "steps": schedule.steps,
           "val_top1": summary["best"]["val_top1"], "best_epoch": summary["best"]["epoch"],
           "train_acc": summary["history"][-1]["train_acc"], "train_seconds": time.time() - start}
    row |= protocols(load_checkpoint(summary["checkpoint"]), prep, prep["root"] / data, shots)
    row["wall_seconds"] = time.time() - start
    row_file.parent.mkdir(parents=True, exist_ok=True)
    row_file.write_text(json.dumps(row, indent=1) + "\n")
    report(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k.endswith(("top1", "hm", "precision"))))
    return row


def zero_shot_clip(prep: dict) -> dict:
    """Meanpool with no training: the frame embeddings' mean against the class names."""
    from alt_core.backbone import load_backbone
    from alt_core.corpus import EntityCorpus
    from alt_core.model import ALTModel

    name = f"meanpool-data{prep['seed']}"
    row_file = RESULTS / "runs" / f"{name}.json"
    if row_file.exists() and json.loads(row_file.read_text())["weights"] == weights_digest():
        return json.loads(row_file.read_text())
    start = time.time()
    model = ALTModel(ALTConfig(adapter="meanpool", tome_r=8), load_backbone("alt-tiny"),
                     EntityCorpus.load(prep["root"] / "corpus.parquet"), read_labels(prep["data"] / "labels_seen.txt"))
    row = {"name": name, "method": "meanpool", "data_seed": prep["seed"], "seed": None, "shots": None,
           "weights": weights_digest()} | protocols(model.eval(), prep, prep["root"] / "tokens", None)
    row["wall_seconds"] = time.time() - start
    row_file.parent.mkdir(parents=True, exist_ok=True)
    row_file.write_text(json.dumps(row, indent=1) + "\n")
    return row


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


def select(rows: list[dict], method: str, shots: int | None = None) -> list[dict]:
    """The runs of one method and shot count on the whole train split (sweep runs left out)."""
    return sorted((r for r in rows if r["method"] == method and r["shots"] == shots
                   and r.get("train_per_class") is None),
                  key=lambda r: (r["data_seed"], r["seed"] or 0))


def paired(rows: list[dict], a: str, b: str, key: str, shots: int | None = None) -> dict | None:
    """Mean difference a - b over runs with the same data and training seed, its standard error, and whether
    it is a win (more than 2 standard errors)."""
    other = {(r["data_seed"], r["seed"]): r[key] for r in select(rows, b, shots)}
    diffs = [r[key] - other[(r["data_seed"], r["seed"])] for r in select(rows, a, shots)
             if (r["data_seed"], r["seed"]) in other]
    if len(diffs) < 2:
        return None
    mean, se = statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    verdict = "win" if mean > 2 * se else "loss" if mean < -2 * se else "no clear difference"
    return {"mean": mean, "se": se, "runs": len(diffs), "verdict": verdict}


def render(rows: list[dict], meta: dict) -> str:
    speed = meta["throughput"]
    n_test, n_novel = meta["test_videos"], meta["novel_videos"]
    methods = [m for m in ("alt", "alt-learned", "temporal", "meanpool", "alt-unfrozen") if select(rows, m)]
    lines = [
        "# Results", "",
        f"Generated by `{meta['command']}` from the raw per-run results in `results/` "
        "(`python bench/results.py --render-only` rebuilds this file from them alone).", "",
        f"- **Data**: SynthActions, data seeds {meta['data_seeds']}: per seed {meta['synth']['seen_classes']} seen "
        f"classes (splits {meta['synth']['splits']}), {meta['synth']['novel_classes']} novel classes (held-out "
        f"shape x motion compositions, 2 per shape). {meta['videos_per_class']} videos per class "
        f"({meta['train_per_class']} train); {meta['videos_choice']}",
        f"- **Backbone**: `alt-tiny` (frozen; weights sha256 {meta['weights']}), ToMe r=8 (64 patches -> 48 "
        "regions), 8 frames per view; region tokens cached by `alt decode --cache-tokens`. "
        f"`alt backbone eval --backbone alt-tiny --json`: {meta['backbone_eval']}.",
        f"- **Corpus**: the label phrases + SynthActions' `entities.jsonl` (entities the backbone knows; the "
        f"builtin generic entities are for real backbones): {meta['corpus_entities']} entities.",
        f"- **Training**: the CLI's defaults: {meta['epochs']} epochs, AdamW peak lr 1e-3 with cosine decay, weight "
        "decay 0.05, batch 32, label smoothing 0.1, adapter width 128, depth 2, 8 queries; 2 random TSN clips per "
        f"train video; training seeds {meta['train_seeds']}; each run keeps its best validation epoch. Few-shot: "
        f"`--shots-file fewshot_K.csv --steps {meta['few_shot_steps']} --epochs {FEW_SHOT_EPOCHS}` (the same "
        "optimizer steps for every K; the lists are fixed by the data, not by the training seed).",
        "- **Protocols**: test views = 2 temporal clips x 1 crop, logits averaged. Zero-shot (novel-only): the "
        "supervised checkpoints against the 16 novel class names on the novel videos. Generalized zero-shot: "
        "against all 88 names, on the seen test videos and the novel videos; HM = harmonic mean.",
        f"- **Error bars**: mean ± std over runs (data seeds x training seeds); (se) = binomial standard error of "
        f"one test set at that accuracy ({n_test} seen test videos, {n_novel} novel videos per data seed).",
        f"- **Machine**: {meta['machine']}. Runtime: the {len(rows)} runs' wall times sum to "
        f"{sum(r['wall_seconds'] for r in rows) / 3600:.1f} h, plus data preparation "
        f"({meta['prepare_seconds'] / 60:.0f} min in the invocation that wrote this page; generating and decoding "
        "the data from scratch takes a few minutes more). A rerun reuses finished runs. By these runs' mean wall "
        f"times, the full default protocol (`python bench/results.py`: 2 data seeds x 3 training seeds, few-shot "
        f"on both data seeds, 1 ALT run from pixels, the videos-per-class sweep) takes about "
        f"{full_protocol_hours(rows):.1f} h on this machine.",
        "", "## Supervised and zero-shot", "",
        "| method | supervised top-1 (72-way) | zero-shot top-1, novel-only (16-way; shape-only ref. 0.500) "
        "| GZSL seen | GZSL novel | GZSL HM | explanation precision | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        sup = select(rows, m)
        name = NAMES[m] + (f", {sup[0]['epochs']} epochs" if m == "alt-unfrozen" else "")
        col = {k: [r[k] for r in sup if k in r] for k in ("test_top1", "zero_shot_top1", "gzsl_seen", "gzsl_novel",
                                                          "gzsl_hm", "explanation_precision")}
        lines.append(f"| {name} | {cell(col['test_top1'], n_test)} | {cell(col['zero_shot_top1'], n_novel)} | "
                     f"{cell(col['gzsl_seen'], n_test)} | {cell(col['gzsl_novel'], n_novel)} | {cell(col['gzsl_hm'])} "
                     f"| {cell(col['explanation_precision'], n_test)} | {len(sup)} |")
    lines += ["", "## Few-shot (seen test split, 72-way)", "",
              "| method | " + " | ".join(f"{k}-shot top-1" for k in SHOTS) + " |", "|---|" + "---|" * len(SHOTS)]
    for m in ("alt", "alt-learned", "temporal"):
        lines.append(f"| {NAMES[m]} | " + " | ".join(cell([r["test_top1"] for r in select(rows, m, k)], n_test)
                                                      for k in SHOTS) + " |")
    zs = [r["test_top1"] for r in select(rows, "meanpool")]
    lines.append(f"| {NAMES['meanpool']} (0 shots) | " + " | ".join(cell(zs, n_test) for _ in SHOTS) + " |")
    lines += reading(rows, meta)
    lines += throughput_section(speed)
    lines += videos_sweep(rows, meta)
    lines += error_breakdown(meta)
    lines += side_benchmarks()
    return "\n".join(lines) + "\n"


def full_protocol_hours(rows: list[dict], data_seeds: int = 2, train_seeds: int = 3, unfrozen_seeds: int = 1) -> float:
    """The trained runs of the default invocation, each timed at its kind's mean wall time here (the
    videos-per-class sweep at its own)."""
    kinds = [(select(rows, m, shots), data_seeds * train_seeds) for m in METHODS for shots in (None, *SHOTS)]
    kinds.append((select(rows, "alt-unfrozen"), unfrozen_seeds))
    seconds = sum(statistics.mean(r["wall_seconds"] for r in kind) * runs for kind, runs in kinds if kind)
    return (seconds + sum(r["wall_seconds"] for r in rows if r.get("train_per_class"))) / 3600


def reading(rows: list[dict], meta: dict) -> list[str]:
    """Goals and margins, every figure computed from the rows."""
    def mean(method: str, key: str, shots: int | None = None) -> float:
        values = [r[key] for r in select(rows, method, shots) if key in r]
        return statistics.mean(values) if values else float("nan")

    figures = {"supervised": mean("alt", "test_top1"), "zero_shot": mean("alt", "zero_shot_top1"),
               "gzsl_hm": mean("alt", "gzsl_hm"), "shots4": mean("alt", "test_top1", 4),
               "explanation_precision": mean("alt", "explanation_precision")}
    titles = {"supervised": "supervised top-1", "zero_shot": "zero-shot top-1 (novel-only)",
              "gzsl_hm": "generalized zero-shot HM", "shots4": "4-shot top-1",
              "explanation_precision": "explanation precision"}
    lines = ["", "## Against the goals (ALT, shipped alt-tiny, frozen, cached tokens)", "",
             "| figure | ALT | goal | |", "|---|---|---|---|"]
    for key, goal in GOALS.items():
        lines.append(f"| {titles[key]} | {figures[key]:.3f} | >= {goal:.2f} | "
                     f"**{'met' if figures[key] >= goal else 'not met'}** |")
    lines += ["", "## Does entity alignment help? Paired margins (same data and training seed)", "",
              "A win is a mean margin above 2 standard errors of the paired differences; a loss the same below 0.", "",
              "| ALT minus | figure | margin (points) | se (points) | runs | verdict |", "|---|---|---|---|---|---|"]
    for other in ("temporal", "alt-learned"):
        for key, shots, title in (("zero_shot_top1", None, "zero-shot top-1"), ("gzsl_hm", None, "GZSL HM"),
                                  ("test_top1", None, "supervised top-1"),
                                  *(("test_top1", k, f"{k}-shot top-1") for k in SHOTS)):
            p = paired(rows, "alt", other, key, shots)
            if p:
                lines.append(f"| {NAMES[other]} | {title} | {100 * p['mean']:+.1f} | {100 * p['se']:.1f} | "
                             f"{p['runs']} | {p['verdict']} |")
    lines += ["", *meta.get("notes", [])]
    return lines


def videos_sweep(rows: list[dict], meta: dict) -> list[str]:
    """ALT's validation top-1 against the training videos per class (data seed 0, training seed 0)."""
    sweep = sorted((r for r in rows if r["method"] == "alt" and r["data_seed"] == 0 and r["seed"] == 0
                    and r["shots"] is None), key=lambda r: r.get("train_per_class") or meta["train_per_class"])
    if len(sweep) < 2:
        return []
    lines = ["## Training videos per class (ALT, chosen on validation)", "",
             "Subsets of data seed 0's train split (the same videos for every training seed), trained with the full "
             "schedule; validation top-1 of the kept epoch. The test split plays no part.", "",
             "| train videos per class | validation top-1 | best epoch | wall s |", "|---|---|---|---|"]
    for r in sweep:
        lines.append(f"| {r.get('train_per_class') or meta['train_per_class']} | {r['val_top1']:.3f} | "
                     f"{r['best_epoch']} | {r['wall_seconds']:.0f} |")
    best = max(sweep, key=lambda r: r["val_top1"])
    if best is sweep[-1]:
        lines += ["", f"The whole split ({meta['train_per_class']} per class) is best on validation, so the tables "
                      "above use it; validation still rising at the largest size says more videos would help."]
    else:
        lines += ["", f"{best['train_per_class']} per class is best on validation, by "
                      f"{best['val_top1'] - sweep[-1]['val_top1']:.3f}; the tables above use the whole split."]
    return lines + [""]


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
    if (RESULTS / "serve_bench.json").is_file():
        serve = json.loads((RESULTS / "serve_bench.json").read_text())
        batched, unbatched = serve["batched"], serve["unbatched"]
        lines += ["## Serving under load (`python bench/serve_load.py`)", "",
                  f"alt-tiny with an ALT adapter (72 labels), real SynthActions clips uploaded over HTTP on 127.0.0.1 "
                  f"by {serve['concurrency']} concurrent clients; deploy/serve.yaml with at most 2 model replicas; "
                  f"machine: {serve['machine']}.", "",
                  "| run | requests | errors | lost | req/s | p50 ms | p95 ms | p99 ms | batch sizes |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, row in (("batched (max_batch_size 8)", batched), ("max_batch_size 1", unbatched)):
            lines.append(f"| {name} | {row['requests']} | {row['errors']} | {row['lost']} | {row['throughput']:.1f} | "
                         f"{row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['p99_ms']:.0f} | {row['batch_sizes']} |")
        ratio_http = batched["throughput"] / unbatched["throughput"]
        ratio_model = serve["handle_batched_per_s"] / serve["handle_unbatched_per_s"]
        single = serve["http_p50_ms"] / serve["in_process_p50_ms"]
        lines += ["", f"- Batched / unbatched: {ratio_http:.2f}x over HTTP; the model deployment alone "
                  f"{serve['handle_batched_per_s']:.1f} vs {serve['handle_unbatched_per_s']:.1f} clips/s = "
                  f"{ratio_model:.2f}x (goal >= 2x: **{'met' if ratio_model >= 2 else 'not met'}**).",
                  f"- Single request: HTTP p50 {serve['http_p50_ms']:.1f} ms against "
                  f"{serve['in_process_p50_ms']:.1f} ms for decode + forward in one process = {single:.2f}x "
                  f"(goal <= 1.3x: **{'met' if single <= 1.3 else 'not met'}**).",
                  f"- Autoscaling: the model deployment reached {serve['max_replicas_seen']} replicas "
                  f"{serve['scaled_up_after_s']:.1f} s into the load; back to 1 replica "
                  + (f"{serve['scaled_down_after_load_s']:.1f} s after it ended." if serve["scaled_down_after_load_s"]
                     is not None else "not within 120 s after it ended."),
                  "- On a CPU a one-thread forward is compute bound (a batch saves little of the per-clip work that "
                  "separate calls do), so waiting to fill a batch does not pay for itself here, and the 0.25-CPU "
                  "ingress's decoding keeps batches small; dynamic batching is for GPUs, where a batch costs about "
                  "what one clip costs. The single-request overhead is the multipart parse, the hop between the two "
                  "deployments' processes and their CPU shares on 2 cores.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "results"), help="work directory (data, tokens, runs)")
    parser.add_argument("--data-seeds", type=int, default=2)
    parser.add_argument("--train-seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--videos-per-class", type=int, default=40)
    parser.add_argument("--few-shot-steps", type=int, default=FEW_SHOT_STEPS)
    parser.add_argument("--few-shot-data-seeds", type=int, default=2, help="run few-shot on the first N data seeds")
    parser.add_argument("--unfrozen-seeds", type=int, default=1,
                        help="training seeds of ALT with the last image block trained from pixels (data seed 0)")
    parser.add_argument("--unfrozen-epochs", type=int, default=None,
                        help="epochs of those runs (default: --epochs, as the frozen runs; from pixels an epoch "
                             "costs ~4x one from tokens on 2 CPUs)")
    parser.add_argument("--videos-sweep", type=lambda text: [int(k) for k in text.split(",") if k], default=[8, 16],
                        help="also train ALT on these videos per class of data seed 0's train split (comma list; "
                             "empty: none) to show on validation whether the full split is enough")
    parser.add_argument("--render-only", action="store_true", help="rebuild RESULTS.md from results/ alone")
    args = parser.parse_args()
    meta_file = RESULTS / "meta.json"
    if not args.render_only:
        out = Path(args.out).resolve()
        setup_logging()
        ensure_ray()
        start = time.time()
        preps = [prepare(out, d, args.videos_per_class, train_clips=2) for d in range(args.data_seeds)]
        if args.unfrozen_seeds:
            preps[0] = prepare(out, 0, args.videos_per_class, train_clips=2, pixels=True)
        prepare_seconds = time.time() - start
        for prep in preps:
            zero_shot_clip(prep)
            shots_here = [k for k in SHOTS if prep["seed"] < args.few_shot_data_seeds
                          and (prep["data"] / f"fewshot_{k}.csv").exists()]
            for method in METHODS:
                for seed in range(args.train_seeds):
                    for shots in (None, *shots_here):
                        run_one(prep, method, seed, shots, args.epochs, args.few_shot_steps)
        for per_class in args.videos_sweep:
            run_one(preps[0], "alt", 0, None, args.epochs, per_class=per_class)
        unfrozen_epochs = args.unfrozen_epochs or args.epochs
        for seed in range(args.unfrozen_seeds):
            run_one(preps[0], "alt-unfrozen", seed, None, unfrozen_epochs, data="pixels", unfreeze=1)
        meta = collect_meta(preps, args, throughput(preps[0]), prepare_seconds)
        meta_file.write_text(json.dumps(meta, indent=1) + "\n")
    meta = json.loads(meta_file.read_text())
    rows = [json.loads(p.read_text()) for p in sorted((RESULTS / "runs").glob("*.json"))]
    rows = [r for r in rows if r["weights"] == meta["weights"]]
    table = render(rows, meta)
    (ROOT / "RESULTS.md").write_text(table)
    report(table)


def collect_meta(preps: list[dict], args, speed: dict, prepare_seconds: float) -> dict:
    """What the page states about data, backbone, protocol and machine (results/meta.json)."""
    from alt_core.synthetic.pretrain import evaluate_backbone

    synth = preps[0]["synth"]
    probe = evaluate_backbone(None, "alt-tiny")
    keys = ("single_object_top1", "background_top1", "two_object_both_in_top2", "region_to_entity_top1",
            "motion_top1", "same_shape_class_cosine")
    return {
        "command": " ".join(["python bench/results.py", *sys.argv[1:]]),
        "weights": weights_digest(), "data_seeds": [p["seed"] for p in preps],
        "train_seeds": list(range(args.train_seeds)), "epochs": args.epochs, "few_shot_steps": args.few_shot_steps,
        "synth": {k: synth[k] for k in ("seen_classes", "novel_classes", "splits")},
        "videos_per_class": args.videos_per_class, "train_per_class": synth["splits"]["train"] // synth["seen_classes"],
        "videos_choice": ("the training videos per class were checked on validation (section 'Training videos "
                          "per class' below)." if args.videos_sweep else
                          "no validation sweep of the training videos per class was run (--videos-sweep '')."),
        "test_videos": synth["splits"]["test"], "novel_videos": synth["splits"]["novel"],
        "corpus_entities": preps[0]["corpus"]["entities"],
        "backbone_eval": ", ".join(f"{k} {probe[k]}" for k in keys if k in probe),
        "machine": torch_machine(), "prepare_seconds": prepare_seconds, "throughput": speed,
        "notes": json.loads(meta_notes.read_text()) if (meta_notes := RESULTS / "notes.json").exists() else [],
    }


if __name__ == "__main__":
    main()
