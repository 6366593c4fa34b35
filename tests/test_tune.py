"""The tune stage: space-file validation, an ASHA search that crowns a champion, a worse search that only sets
`challenger`, and a search whose driver is killed and resumed. Real Ray, Ray Train, Ray Tune and MLflow
(sqlite) on SynthActions with alt-tiny's cached tokens."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from alt_core.checkpoint import load_checkpoint
from alt_core.errors import ConfigError
from alt_core.registry import resolve_model
from pipelines.jobs import SearchOptions
from pipelines.tune import PROGRESS_FILE, SearchSpace, tune_search
from tests.helpers import SEEN, search_job, write_space

REPO = Path(__file__).resolve().parents[1]

@pytest.mark.parametrize(("overrides", "space", "message"), [
    ({"schedule": "asha"}, {"depth": {"grid": [1]}}, "schedule: unknown key; allowed: metric"),
    ({}, {"depth": {"normal": [1, 2]}}, "space.depth: unknown distribution 'normal'; use one of grid"),
    ({}, {"num_queries": {"choice": []}}, "space.num_queries: choice needs a non-empty list"),
    ({}, {"dropout": {"grid": [0.1]}}, "space.dropout: not a setting a search can vary; searchable: adapter"),
    ({}, {"lr": {"loguniform": [3.0e-3, 1.0e-4]}}, "space.lr: min 0.003 must be below max 0.0001"),
    ({"metric": "test_top1"}, {"depth": {"grid": [1]}}, "metric: 'test_top1' is not allowed; searches rank on"),
    ({}, {"depth": {"grid": [1, -2]}}, "space.depth: value -2 is not allowed (depth must be >= 0"),
])
def test_invalid_space_files_name_the_file_and_key(tmp_path: Path, overrides: dict, space: dict, message: str):
    path = write_space(tmp_path / "bad.yaml", space, **overrides)
    with pytest.raises(ConfigError) as err:
        SearchSpace.load(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_alt_tune_refuses_an_invalid_space_in_one_line_before_starting(tmp_path: Path):
    path = write_space(tmp_path / "bad.yaml", {"depth": {"normal": [1, 2]}})
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "tune", "--space", str(path), "--data",
                             str(tmp_path), "--corpus", str(tmp_path / "c.parquet"), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}: space.depth: unknown distribution 'normal'")
    assert not (tmp_path / "o").exists()  # validated before anything started


def test_space_files_in_the_repository_are_valid():
    for path in sorted((REPO / "tune_spaces").glob("*.yaml")):
        space = SearchSpace.load(path)
        assert space.params and space.grid_points() >= 2, path


@pytest.mark.ray
def test_asha_search_crowns_a_champion_and_a_worse_search_a_challenger(tune_workspace):
    root = tune_workspace["root"]
    # lr 1e-6 keeps alt-tiny's zero-shot accuracy (a third of these 12 validation videos); lr 0.3 wrecks the
    # adapter in one epoch. Run one trial at a time in grid order (each wrecked trial after a sound one), so ASHA
    # meets the wrecked ones below its cutoff, whatever order concurrent trials would report in on a busy machine.
    space = write_space(root / "space.yaml", {"num_queries": {"grid": [2, 8]}, "lr": {"grid": [1.0e-6, 0.3]}})
    ctrl_c = signal.getsignal(signal.SIGINT)
    summary = tune_search(search_job(tune_workspace, "search1"), SearchOptions(space=str(space), concurrent=1))
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # Tune's own handler is gone: Ctrl-C stops a caller again

    trials = summary["trials"]
    assert len(trials) == 4 and all(t["stop_reason"] != "failed" for t in trials)
    assert any(t["stop_reason"] == "stopped by ASHA" and t["epochs"] < 3 for t in trials), trials
    assert summary["trial_epochs"] == sum(t["epochs"] for t in trials) < 4 * 3
    best = max(trials, key=lambda t: t["best_val_top1"])
    assert summary["best"]["best_val_top1"] == best["best_val_top1"]
    model = load_checkpoint(summary["decision"]["checkpoint"])  # a plain directory: no Ray needed
    assert model.config.num_queries == best["config"]["num_queries"] and model.labels == sorted(SEEN)
    decision = summary["decision"]
    assert (decision["alias"], decision["champion_version"]) == ("champion", None)

    client = MlflowClient(tune_workspace["tracking_uri"])
    champion = client.get_model_version_by_alias("alt", "champion")
    assert int(champion.version) == decision["version"]
    assert {"data_hash", "corpus_hash", "search_id"} <= set(champion.tags)
    assert champion.tags["search_id"] == summary["search_id"]
    parent = client.search_runs([client.get_experiment_by_name("alt").experiment_id],
                                filter_string=f"tags.search_id = '{summary['search_id']}'")
    children = [r for r in parent if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 4 and {r.data.tags["stop_reason"] for r in children} >= {"stopped by ASHA"}
    assert all(r.info.status == "FINISHED" for r in parent)
    parent_run = next(r for r in parent if not r.data.tags.get("mlflow.parentRunId"))
    assert {a.path for a in client.list_artifacts(parent_run.info.run_id, "plots")} == {"plots/grid.png",
                                                                                      "plots/curves.png"}
    assert json.loads((root / "search1" / "tune.json").read_text())["decision"]["alias"] == "champion"

    worse = write_space(root / "worse.yaml", {"lr": {"grid": [1.0e-7]}, "num_queries": {"grid": [2]}})
    second = tune_search(search_job(tune_workspace, "search2"), SearchOptions(space=str(worse), concurrent=1))
    assert second["best"]["best_val_top1"] <= summary["best"]["best_val_top1"]
    assert second["decision"]["alias"] == "challenger" and second["decision"]["champion_version"] == decision["version"]
    assert int(client.get_model_version_by_alias("alt", "champion").version) == decision["version"]
    assert int(client.get_model_version_by_alias("alt", "challenger").version) == second["decision"]["version"]
    local = resolve_model("models:/alt@champion", tune_workspace["tracking_uri"]).directory
    assert load_checkpoint(local).config.num_queries == best["config"]["num_queries"]
    # one cached copy per version: the alias and the pinned version share it, the challenger has its own
    assert resolve_model(f"models:/alt/{decision['version']}", tune_workspace["tracking_uri"]).directory == local
    assert resolve_model("models:/alt@challenger", tune_workspace["tracking_uri"]).directory != local
    versions = len(client.search_model_versions("name = 'alt'"))
    resumed = tune_search(search_job(tune_workspace, "search2"),
                          SearchOptions(space=str(worse), concurrent=1, resume=True))
    assert resumed["decision"] == second["decision"]  # a finished search is reported, not crowned again
    assert len(client.search_model_versions("name = 'alt'")) == versions


@pytest.mark.ray
def test_killed_search_driver_resumes_without_rerunning_finished_trials(tune_workspace, tmp_path):
    space = write_space(tmp_path / "space.yaml", {"num_queries": {"grid": [2, 4]}}, max_t=2)
    out = tune_workspace["root"] / "search_killed"
    ray_tmp = tempfile.mkdtemp(prefix="altray", dir="/tmp")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": ray_tmp}
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "tune", "--space", str(space), "--data", tune_workspace["data"],
         "--corpus", tune_workspace["corpus"], "--out", str(out), "--scheduler", "fifo", "--concurrent", "1",
         "--tracking-uri", tune_workspace["tracking_uri"]],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not ((out / PROGRESS_FILE).is_file() and (out / PROGRESS_FILE).read_text().count("\n") >= 1):
            assert driver.poll() is None and time.time() < deadline, "no trial finished"
            time.sleep(0.5)
        time.sleep(3)  # Tune saves its experiment state every 2 s (TUNE_GLOBAL_CHECKPOINT_S)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and every Ray process it started (same session)
        driver.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    finished = [json.loads(line)["trial_id"] for line in (out / PROGRESS_FILE).read_text().splitlines()]
    assert len(finished) == 1, "the driver was to be killed after the first of the two trials"
    epochs_before = {t: (out / "trials" / t / "progress.jsonl").read_text() for t in finished}

    summary = tune_search(search_job(tune_workspace, "search_killed"),
                          SearchOptions(space=str(space), scheduler="fifo", concurrent=1, resume=True))
    assert len(summary["trials"]) == 2 and all(t["stop_reason"] == "completed" for t in summary["trials"])
    for trial in finished:  # not rerun: the same epoch lines, and one MLflow run per trial
        assert (out / "trials" / trial / "progress.jsonl").read_text() == epochs_before[trial]
    client = MlflowClient(tune_workspace["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("alt").experiment_id],
                              filter_string=f"tags.search_id = '{summary['search_id']}'")
    per_trial = [r.data.tags.get("trial_id") for r in runs if r.data.tags.get("trial_id")]
    assert sorted(per_trial) == sorted(t["trial_id"] for t in summary["trials"])
