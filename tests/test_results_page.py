"""RESULTS.md's renderer on the committed raw results: a protocol run of some datasets only renders theirs."""

import json


def test_a_run_of_synthobjects_alone_renders_its_section_and_no_synthactions_one():
    from bench.results import RESULTS, render, rows_of_results

    meta = json.loads((RESULTS / "meta.json").read_text())
    meta["datasets"] = {"objects": meta["datasets"]["objects"]}  # as `--datasets objects` records it
    rows = [r for r in rows_of_results()
            if r["weights"] == meta["weights"] and r.get("dataset", "actions") == "objects"]
    page = render(rows, meta)
    assert "## SynthObjects" in page and "| ALT |" in page
    assert "## SynthActions" not in page
