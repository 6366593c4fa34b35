"""ASHA against the full grid: the same search space, data and concurrency, in one run (`alt tune` twice).

Data: the results table's SynthActions set and alt-tiny tokens (bench/results.py prepares them, or reuses
them). Space: tune_spaces/tiny.yaml (query count x adapter depth, 8 trials of up to 12 epochs). The grid
runs every trial to max_t under FIFO; ASHA stops weak trials on validation top-1. For each: trial-epochs,
wall time, the best validation top-1, the test top-1 of its registered best checkpoint, and the search's
overhead (wall time minus the trials' own time divided by the concurrency). Writes results/tune_bench.json,
which bench/results.py renders into RESULTS.md.

Usage: python bench/tune.py [--out runs/results] [--concurrent 2]
Goal: ASHA within 1 point of the grid's best validation top-1 with at most 50% of its trial-epochs.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bench.machine import report, run_main, torch_machine
from pipelines.environment import set_defaults

set_defaults()  # before Ray, MLflow and huggingface_hub are imported

from bench.results import RESULTS, ROOT, prepare, weights_digest
from pipelines.console import ensure_ray, setup_logging
from pipelines.evaluate import evaluate
from pipelines.jobs import SearchOptions, TrainJob
from pipelines.tune import tune_search

SPACE = ROOT / "tune_spaces" / "tiny.yaml"


def search(out: Path, prep: dict, scheduler: str, concurrent: int) -> dict:
    """One search into a fresh directory with its own registry; its champion scored on the test split."""
    directory = out / "tune_bench" / scheduler
    shutil.rmtree(directory, ignore_errors=True)
    job = TrainJob(data=str(prep["root"] / "tokens"), corpus=str(prep["root"] / "corpus.parquet"), out=str(directory),
                   labels=str(prep["data"] / "labels_seen.txt"))
    summary = tune_search(job, SearchOptions(space=str(SPACE), scheduler=scheduler, concurrent=concurrent))
    trial_seconds = sum(t["seconds"] or 0.0 for t in summary["trials"])
    test = evaluate(summary["decision"]["checkpoint"], prep["root"] / "tokens", splits=("test",))["top1"]
    return {"scheduler": scheduler, "trials": len(summary["trials"]), "trial_epochs": summary["trial_epochs"],
            "wall_seconds": summary["seconds"], "best_val_top1": summary["best"]["best_val_top1"],
            "best_config": summary["best"]["config"], "champion_test_top1": test,
            "stopped_early": sum(t["stop_reason"] == "stopped by ASHA" for t in summary["trials"]),
            "overhead_seconds": summary["seconds"] - trial_seconds / concurrent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "results"))
    parser.add_argument("--concurrent", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    setup_logging()
    ensure_ray()
    prep = prepare(out, 0, videos_per_class=40, train_clips=2)
    rows = [search(out, prep, "fifo", args.concurrent), search(out, prep, "asha", args.concurrent)]
    grid, asha = rows
    verdict = {"epochs_fraction": asha["trial_epochs"] / grid["trial_epochs"],
               "val_gap_points": 100 * (grid["best_val_top1"] - asha["best_val_top1"])}
    verdict["met"] = verdict["epochs_fraction"] <= 0.5 and verdict["val_gap_points"] <= 1.0
    summary = {"space": str(SPACE.relative_to(ROOT)), "concurrent": args.concurrent, "machine": torch_machine(),
              "data": f"SynthActions seed 0, {prep['synth']['splits']} videos, alt-tiny tokens (weights sha256 "
                       f"{weights_digest()})", "rows": rows,
              "verdict": verdict}
    (RESULTS / "tune_bench.json").write_text(json.dumps(summary, indent=1) + "\n")
    report(f"machine: {summary['machine']} | data: {summary['data']} | space {summary['space']}, "
          f"{args.concurrent} trials at a time")
    for row in rows:
        report(f"{row['scheduler']:<5} {row['trials']} trials, {row['trial_epochs']:3d} trial-epochs, "
              f"{row['wall_seconds']:6.0f} s wall ({row['overhead_seconds']:.0f} s overhead), "
              f"{row['stopped_early']} stopped early; best val top-1 {row['best_val_top1']:.3f} "
              f"({row['best_config']}), its test top-1 {row['champion_test_top1']:.3f}")
    report(f"ASHA used {100 * verdict['epochs_fraction']:.0f}% of the grid's trial-epochs and found a configuration "
           f"{verdict['val_gap_points']:.1f} points below the grid's best: "
           f"goal {'met' if verdict['met'] else 'not met'}")


if __name__ == "__main__":
    run_main(main)
