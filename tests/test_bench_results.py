"""bench/results.py: the page it renders from the committed raw results, and what a crash of its long runs shows."""

import json


def test_the_committed_results_render_every_dataset_they_name():
    from bench.results import DATASETS, RESULTS, render, rows_of_weights

    meta = json.loads((RESULTS / "meta.json").read_text())
    page = render(rows_of_weights(meta["weights"]), meta)
    assert all(f"## {DATASETS[name].title}" in page for name in meta["datasets"])


def test_a_run_of_synthobjects_alone_renders_its_section_and_no_synthactions_one():
    from bench.results import RESULTS, dataset_of, render, rows_of_weights

    meta = json.loads((RESULTS / "meta.json").read_text())
    meta["datasets"] = {"objects": meta["datasets"]["objects"]}  # as `--datasets objects` records it
    rows = [r for r in rows_of_weights(meta["weights"]) if dataset_of(r) == "objects"]
    page = render(rows, meta)
    assert "## SynthObjects" in page and "| ALT |" in page
    assert "## SynthActions" not in page


def test_a_benchmark_crash_reaches_the_terminal_after_its_output_went_to_the_log_file(tmp_path):
    """Once Ray starts, stderr is the log file: a crash of a long protocol run must still show where it ran."""
    import os
    import subprocess
    import sys

    script = ("from bench.machine import run_main\n"
              "from pipelines.console import capture_library_output, setup_logging\n"
              "def main():\n"
              "    setup_logging(); capture_library_output()\n"
              "    raise RuntimeError('the protocol broke here')\n"
              "run_main(main)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ALT_LOG_DIR": str(tmp_path)})
    assert done.returncode == 1
    assert "RuntimeError: the protocol broke here" in done.stderr and "library logs:" in done.stderr
    assert "the protocol broke here" in next(tmp_path.glob("alt-*.log")).read_text()  # kept in the log too
