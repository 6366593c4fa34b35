"""The `alt` verbs with their defaults on a data seed RESULTS.md never used, against its ALT figures.

RESULTS.md's figures are only worth quoting if a user gets them: this runs, as a user would and with no option
beyond the paths, `alt data synth --seed S`, `alt corpus build` (the dataset's label phrases and entities, as
the protocol builds it), `alt decode --cache-tokens`, `alt train` (supervised), `alt eval` on the test split
and, with the novel class names, on the novel videos (zero-shot), then `alt train --shots-file fewshot_4.csv`
and its `alt eval`. Each figure is set beside the mean and std of ALT's runs of that protocol in results/runs/
(results/fresh_seed.json; bench/results.py renders it). A finished step is not redone (each verb's printed
result is kept beside its output), so a rerun after the protocol changed only compares again.

Usage: python bench/fresh_seed.py [--dataset actions|objects] [--seed 7] [--shots 4] [--out runs/fresh]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

from bench.machine import report, torch_machine
from pipelines.environment import set_defaults

set_defaults()

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def alt(out: Path, step: str, *args: str | Path) -> dict:
    """One `alt` verb; its printed result is kept as `step`.json (a rerun takes it from there) and the rest of
    its output goes to `step`.log."""
    result = out / f"{step}.json"
    if not result.exists():
        out.mkdir(parents=True, exist_ok=True)
        with (out / f"{step}.log").open("w") as log:
            done = subprocess.run([str(Path(sys.executable).parent / "alt"), *map(str, args)], stdout=subprocess.PIPE,
                                  stderr=log, text=True)
        if done.returncode:
            sys.exit(f"`alt {' '.join(map(str, args))}` failed: {out / f'{step}.log'}")
        text = done.stdout
        result.write_text(text[text.rfind("\n{") + 1:])  # the result is the last thing printed
    return json.loads(result.read_text())


def run_verbs(out: Path, dataset: str, seed: int, shots: int) -> dict:
    """The verbs with their defaults; returns the test, zero-shot and few-shot top-1, each with its videos."""
    synth, corpus, tokens = out / "synth", out / "corpus.parquet", out / "tokens"
    alt(out, "synth", "data", "synth", "--out", synth, "--variant", dataset, "--seed", seed)
    alt(out, "corpus", "corpus", "build", "--labels", synth / "labels_seen.txt", "--source", "labels",
        "--source", synth / "entities.jsonl", "--out", corpus)
    alt(out, "decode", "decode", "--manifest", synth / "manifest.parquet", "--out", tokens, "--cache-tokens",
        "--backbone", "alt-tiny")
    supervised = alt(out, "train", "train", "--data", tokens, "--corpus", corpus, "--out", out / "supervised")
    test = alt(out, "eval-test", "eval", "--model", supervised["checkpoint"], "--data", tokens)
    zero_shot = alt(out, "eval-zero-shot", "eval", "--model", supervised["checkpoint"], "--data", tokens,
                    "--labels", synth / "labels_novel.txt", "--split", "novel")
    few = alt(out, f"train-shots{shots}", "train", "--data", tokens, "--corpus", corpus, "--out",
              out / f"shots{shots}", "--shots-file", synth / f"fewshot_{shots}.csv")
    few_test = alt(out, f"eval-shots{shots}", "eval", "--model", few["checkpoint"], "--data", tokens)
    return {name: (report["top1"], report["videos"])
            for name, report in (("supervised", test), ("zero_shot", zero_shot), ("few_shot", few_test))}


def protocol_figures(dataset: str, shots: int) -> dict[str, list[float]]:
    """ALT's figures in results/runs/ of the weights RESULTS.md names, per protocol (the rows its tables show)."""
    from bench.results import rows_of_weights, select

    rows = rows_of_weights(json.loads((RESULTS / "meta.json").read_text())["weights"])
    supervised = select(rows, dataset, "alt")
    return {"supervised": [r["test_top1"] for r in supervised],
            "zero_shot": [r["zero_shot_top1"] for r in supervised],
            "few_shot": [r["test_top1"] for r in select(rows, dataset, "alt", shots)]}


def compare(fresh: dict, table: dict[str, list[float]]) -> dict:
    """Each fresh figure against the table's mean: within 2 of the larger of the runs' std and one test set's
    binomial se (two data seeds say little about the spread between data seeds; a test set's se says at least
    how far one draw of it moves a figure)."""
    out = {}
    for name, values in table.items():
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        figure, videos = fresh[name]
        se = math.sqrt(mean * (1 - mean) / videos)
        out[name] = {"fresh": figure, "videos": videos, "mean": mean, "std": std, "se": se, "runs": len(values),
                     "within": abs(figure - mean) <= 2 * max(std, se)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["actions", "objects"], default="actions")
    parser.add_argument("--seed", type=int, default=7, help="a data seed the protocol never used (it uses 0 and 1)")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "runs" / "fresh"))
    args = parser.parse_args()
    if args.seed in (0, 1):
        parser.error("--seed 0 and 1 are the protocol's data seeds; take another")
    out = Path(args.out).resolve() / f"{args.dataset}-seed{args.seed}"
    fresh = run_verbs(out, args.dataset, args.seed, args.shots)
    result = {"dataset": args.dataset, "data_seed": args.seed, "shots": args.shots, "machine": torch_machine(),
              "command": " ".join(["python bench/fresh_seed.py", *sys.argv[1:]]),
              "figures": compare(fresh, protocol_figures(args.dataset, args.shots))}
    (RESULTS / "fresh_seed.json").write_text(json.dumps(result, indent=1) + "\n")
    for name, f in result["figures"].items():
        report(f"{name}: fresh data seed {args.seed} {f['fresh']:.3f}; RESULTS.md {f['mean']:.3f} +- {f['std']:.3f} "
               f"({f['runs']} runs; se of one test set {f['se']:.3f}): "
               f"{'within' if f['within'] else 'outside'} 2 x max(std, se)")


if __name__ == "__main__":
    main()
