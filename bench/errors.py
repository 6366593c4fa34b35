"""Where the supervised errors fall: wrong shape or wrong motion, and on which motions.

Reads the supervised checkpoints that `python bench/results.py` trained (data seed 0, training seed 0, the
shipped alt-tiny) and scores the seen test split of that data seed, 72-way. A class is a shape and a motion,
so every error names the wrong shape, the wrong motion, or both. The pair motions ("chasing another
shape", "colliding with another shape") show two shapes of which only the actor names the class.
Writes results/errors.json, which bench/results.py renders into RESULTS.md.

Usage: python bench/errors.py [--out runs/results]   (after bench/results.py)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.machine import report, torch_machine
from pipelines.environment import set_defaults

set_defaults()  # before Ray, MLflow and huggingface_hub are imported

from alt_core.checkpoint import load_checkpoint
from alt_core.manifest import read_labels
from alt_core.synthetic.synth import PAIR_MOTIONS, parse_class
from bench.results import RESULTS, ROOT, split_logits, weights_digest

METHODS = ("alt", "alt-learned", "temporal")


def breakdown(logits: dict, targets: dict, labels: list[str]) -> dict:
    """Top-1, the share of videos whose predicted class has the right shape / motion, and top-1 on the pair
    motions and on the other motions."""
    rows = []
    for vid, row in logits.items():
        true_shape, true_motion = parse_class(labels[targets[vid]])
        shape, motion = parse_class(labels[int(row.argmax())])
        rows.append((shape == true_shape, motion == true_motion, true_motion in PAIR_MOTIONS))

    def share(selected: list[bool]) -> float:
        return sum(selected) / max(len(selected), 1)

    return {"videos": len(rows), "top1": share([s and m for s, m, _ in rows]),
            "shape_right": share([s for s, _, _ in rows]), "motion_right": share([m for _, m, _ in rows]),
            "pair_motion_top1": share([s and m for s, m, pair in rows if pair]),
            "pair_motion_shape_right": share([s for s, _, pair in rows if pair]),
            "other_motion_top1": share([s and m for s, m, pair in rows if not pair]),
            "pair_motion_videos": sum(pair for _, _, pair in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "results"), help="bench/results.py's work directory")
    args = parser.parse_args()
    root = Path(args.out).resolve() / f"alt-tiny-{weights_digest()}" / "data0"
    labels = read_labels(root / "synth" / "labels_seen.txt")
    result = {"weights": weights_digest(), "data": "SynthActions data seed 0, seen test split (72-way)",
              "machine": torch_machine(), "methods": {}}
    for method in METHODS:
        checkpoint = root / "runs" / f"{method}-data0-seed0" / "checkpoint"
        if not checkpoint.is_dir():
            raise SystemExit(f"{checkpoint} is missing: run `python bench/results.py` first")
        model = load_checkpoint(checkpoint)
        model.set_labels(labels)
        result["methods"][method] = breakdown(*split_logits(model, root / "tokens", "test", labels), labels)
        report(f"{method}: " + ", ".join(f"{k} {v:.3f}" for k, v in result["methods"][method].items()
                                         if isinstance(v, float)))
    (RESULTS / "errors.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
