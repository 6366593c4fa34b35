"""Ray Tune stage (`alt tune`): search query count, adapter depth and other settings, crown a champion.

Every trial is one Ray Train run of the training code of `alt train` (`pipelines.train.build_trainer`
with Tune's `TuneReportCallback`), reporting validation top-1 per epoch; ASHA stops weak trials on it,
never on test data. The search writes one MLflow parent run with a child run per trial, registers the
best trial's best epoch as a new version of model `alt`, and gives it the alias `champion` only when it
beats the current champion on the same validation data (otherwise `challenger`). `OUT/tune.json` lists
every trial and the decision.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
import uuid
from dataclasses import dataclass, fields, replace
from pathlib import Path

import ray
import yaml
from ray import tune
from ray.train import Checkpoint
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from alt_core.clips import data_hash
from alt_core.config import ALTConfig, TrainConfig
from alt_core.errors import ALTError, ConfigError
from alt_core.training import METRIC
from pipelines import tracking
from pipelines.console import ensure_ray
from pipelines.inputs import check_inputs
from pipelines.jobs import SearchOptions, TrainJob
from pipelines.train import publish_checkpoint, training_datasets

logger = logging.getLogger(__name__)
SEARCH_FILE, RESULTS_FILE, PROGRESS_FILE = "search.json", "tune.json", "trials.jsonl"
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
SPACE_KEYS = ("metric", "mode", "num_samples", "max_t", "grace_period", "reduction_factor", "space")
METRICS = (METRIC,)  # validation top-1, the score the champion decision uses; never test data
# Settings a search may vary; the backbone, ToMe r and frames come with the decoded clips, epochs is max_t, and
# the training videos are the job's (`steps`, a few-shot step budget, may vary).
SEARCHABLE = tuple(f.name for f in fields(ALTConfig) if f.metadata.get("cli") and f.name not in
                   ("backbone", "pretrained", "tome_r", "num_frames")) + tuple(
    f.name for f in fields(TrainConfig) if f.name not in ("epochs", "shots", "shots_file"))


@dataclass(frozen=True)
class SearchSpace:
    """A search space file (tune_spaces/*.yaml), checked before anything starts."""

    path: str
    params: dict  # name -> {distribution: values}
    metric: str = METRIC
    mode: str = "max"
    num_samples: int = 1
    max_t: int = 12
    grace_period: int = 1
    reduction_factor: int = 2

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        path = Path(path)

        def fail(key: str, problem: str) -> None:
            raise ConfigError(f"{path}: {key}: {problem}")

        if not path.is_file():
            raise ConfigError(f"search space file {path} does not exist; see tune_spaces/ for examples")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
        if not isinstance(raw, dict):
            fail("(top level)", f"expected a mapping with keys {', '.join(SPACE_KEYS)}")
        for key in raw:
            if key not in SPACE_KEYS:
                fail(key, f"unknown key; allowed: {', '.join(SPACE_KEYS)}")
        if raw.get("metric", METRIC) not in METRICS:
            fail("metric", f"{raw['metric']!r} is not allowed; searches rank on validation data: {', '.join(METRICS)}")
        if raw.get("mode", "max") != "max":
            fail("mode", "accuracy is maximised: use max")
        for key in ("num_samples", "max_t", "grace_period", "reduction_factor"):
            value = raw.get(key, getattr(cls, key))
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(key, f"must be an integer >= 1, got {value!r}")
        if raw.get("grace_period", cls.grace_period) > raw.get("max_t", cls.max_t):
            fail("grace_period", "must not exceed max_t")
        if raw.get("reduction_factor", cls.reduction_factor) < 2:
            fail("reduction_factor", "must be >= 2")
        space = raw.get("space")
        if not isinstance(space, dict) or not space:
            fail("space", "a non-empty mapping of setting -> {distribution: values} is required")
        for name, dist in space.items():
            _check_param(path, name, dist)
        return cls(str(path), space, **{k: raw[k] for k in SPACE_KEYS if k in raw and k != "space"})

    def param_space(self) -> dict:
        """Ray Tune's param_space."""
        out = {}
        for name, dist in self.params.items():
            (kind, values), = dist.items()
            out[name] = {"grid": tune.grid_search, "choice": tune.choice}[kind](values) \
                if kind in ("grid", "choice") else getattr(tune, kind)(*values)
        return out

    def grid_points(self) -> int:
        return math.prod(len(d["grid"]) for d in self.params.values() if "grid" in d)

    def values(self, name: str) -> list:
        """The values a setting takes in this space: a grid's or choice's, a range's bounds; [] if not searched."""
        if name not in self.params:
            return []
        (kind, values), = self.params[name].items()
        return [values[0], values[1] - 1] if kind == "randint" else list(values)


def _check_param(path: Path, name: str, dist) -> None:
    def fail(problem: str) -> None:
        raise ConfigError(f"{path}: space.{name}: {problem}")

    if name not in SEARCHABLE:
        fail(f"not a setting a search can vary; searchable: {', '.join(SEARCHABLE)}")
    if not isinstance(dist, dict) or len(dist) != 1:
        fail(f"expected one distribution, e.g. {{choice: [4, 8]}}; distributions: {', '.join(DISTRIBUTIONS)}")
    (kind, values), = dist.items()
    if kind not in DISTRIBUTIONS:
        fail(f"unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
    if not isinstance(values, list) or not values:
        fail(f"{kind} needs a non-empty list")
    if kind in ("grid", "choice"):
        for value in values:
            _check_value(path, name, value)
        return
    if len(values) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        fail(f"{kind} needs [min, max]")
    low, high = values
    if low > high or (kind == "randint" and low == high):
        fail(f"min {low} must be below max {high}")
    if kind == "loguniform" and low <= 0:
        fail(f"loguniform needs min > 0, got {low}")
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        fail("randint needs integer bounds")
    for value in (low, high - 1 if kind == "randint" else high):
        _check_value(path, name, value)


def _check_value(path: Path, name: str, value) -> None:
    """A value the settings dataclasses accept on their own (combinations are checked per trial)."""
    cls = ALTConfig if name in {f.name for f in fields(ALTConfig)} else TrainConfig
    base = {"heads": 1} if name == "width" else {"width": value * ALTConfig.heads} if name == "heads" else {}
    try:
        cls(**base, **{name: value})
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{path}: space.{name}: value {value!r} is not allowed ({err})") from err


def trial_job(job: TrainJob, params: dict, trial_id: str, max_t: int) -> TrainJob:
    """The search's job with one trial's settings, its own run directory and `max_t` epochs."""
    model = replace(job.model, **{k: v for k, v in params.items() if k in {f.name for f in fields(ALTConfig)}})
    schedule = replace(job.train, epochs=max_t,
                       **{k: v for k, v in params.items() if k in {f.name for f in fields(TrainConfig)}})
    return replace(job, model=model, train=schedule, out=str(Path(job.out) / "trials" / trial_id),
                   run_name=f"trial-{trial_id}", resume=True)


def run_trial(params: dict, job: TrainJob, datasets: dict, labels: list[str], fmt, max_t: int, tags: dict) -> None:
    """Tune's function trainable: a trial is one Ray Train run; epochs reach Tune via TuneReportCallback."""
    from pipelines.train import build_trainer

    trial_id = tune.get_context().get_trial_id()
    trainer = build_trainer(trial_job(job, params, trial_id, max_t), datasets, labels, fmt,
                            callbacks=[TuneReportCallback()], tags=tags | {"trial_id": trial_id})
    result = trainer.fit()
    if result.error:
        raise result.error


class TrialProgress(tune.Callback):
    """One console line per finished trial, and a line in OUT/trials.jsonl (operators and tests follow it)."""

    def __init__(self, path: Path, max_t: int):
        self.path, self.max_t = path, max_t

    def _record(self, trial, status: str) -> None:
        result = trial.last_result or {}
        row = {"trial_id": trial.trial_id, "status": status, "epochs": result.get("epoch", 0),
               METRIC: result.get(METRIC), "config": trial.config}
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        score = f"{row[METRIC]:.3f}" if row[METRIC] is not None else "-"
        logger.info(f"tune: trial {trial.trial_id} {status} after {row['epochs']}/{self.max_t} epochs, "
                    f"last val top-1 {score}, {_short(trial.config)}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(trial, "failed")


def _short(config: dict) -> str:
    return ", ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(config.items()))


def fitting_concurrency(requested: int, workers: int, gpu: bool) -> int:
    """Trials that fit at once: each holds `workers` CPUs (or GPUs) for its Train workers; trial drivers
    and Train controllers take none, and the datasets are materialized before any trial starts, so no data
    stage waits for a CPU a trial holds (the hang of a full 2-CPU machine)."""
    resources = ray.cluster_resources()
    capacity = int(resources.get("GPU" if gpu else "CPU", 0) // workers)
    if capacity < 1:
        raise ALTError(f"a trial needs {workers} {'GPU' if gpu else 'CPU'}(s) for its workers and the cluster has "
                       f"{resources.get('GPU' if gpu else 'CPU', 0):g}; lower --workers-per-trial")
    if requested > capacity:
        logger.warning(f"tune: --concurrent {requested} does not fit: {capacity} trial(s) of {workers} worker(s) fit "
                       f"in this cluster's {resources.get('GPU' if gpu else 'CPU', 0):g} "
                       f"{'GPU' if gpu else 'CPU'}s; running {capacity} at a time")
    return min(requested, capacity)


def tune_search(job: TrainJob, options: SearchOptions) -> dict:
    """Run (or resume) a search; returns the summary also written to OUT/tune.json."""
    space = SearchSpace.load(options.space)
    out = Path(job.out).resolve()
    job = replace(job, out=str(out), workers=options.workers_per_trial, gpu=options.gpu)
    job = replace(job, tracking_uri=job.mlflow_uri())
    experiment = out / "tune"
    if options.resume and (out / RESULTS_FILE).is_file():  # finished: report it, register nothing twice
        summary = json.loads((out / RESULTS_FILE).read_text())
        logger.info(f"tune: search {summary['search_id']} in {out} finished already")
        logger.info(trials_table(summary["trials"]))
        logger.info(decision_line(summary["decision"]))
        return summary
    inputs = check_inputs(job, num_queries=space.values("num_queries"))  # every user error, before Ray starts
    job = replace(job, model=inputs.model)
    labels, fmt, train_videos = inputs.labels, inputs.fmt, inputs.train_videos
    record = _previous_search(out, options)
    ensure_ray()
    concurrent = fitting_concurrency(options.concurrent, options.workers_per_trial, options.gpu)
    datasets = training_datasets(job, inputs)
    search = record or _new_search(out, options, job)
    tags = {"mlflow.parentRunId": search["parent_run_id"], "search_id": search["search_id"]}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, job=job, datasets=datasets, labels=labels, fmt=fmt, max_t=space.max_t,
                             tags=tags),
        {"cpu": 0, "memory": 1})  # the trial driver holds nothing; its Train workers hold the CPUs
    samples = options.trials or space.num_samples
    logger.info(f"tune: {samples * max(space.grid_points(), 1)} trial(s) of up to {space.max_t} epochs "
                f"({options.scheduler}, {concurrent} at a time, {options.workers_per_trial} worker(s) each) on "
                f"{train_videos} videos x {len(labels)} classes; search {search['search_id']} in {out}")
    start = time.time()
    if options.resume and tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        scheduler = ASHAScheduler(time_attr="epoch", max_t=space.max_t, grace_period=space.grace_period,
                                  reduction_factor=space.reduction_factor) if options.scheduler == "asha" \
            else FIFOScheduler()
        tuner = tune.Tuner(
            trainable, param_space=space.param_space(),
            tune_config=tune.TuneConfig(metric=space.metric, mode="max", scheduler=scheduler, num_samples=samples,
                                        max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=0,
                                      callbacks=[TrialProgress(out / PROGRESS_FILE, space.max_t)]))
    grid = fit_keeping_ctrl_c(tuner)
    summary = summarise(job, space, options, search, grid, labels)
    summary["seconds"] = round(time.time() - start, 1)
    (out / RESULTS_FILE).write_text(json.dumps(summary, indent=1, default=str))
    tracking.log_search(job.mlflow_uri(), search["parent_run_id"], summary, space.max_t, out / RESULTS_FILE)
    logger.info(trials_table(summary["trials"]))
    logger.info(decision_line(summary["decision"]))
    return summary


def fit_keeping_ctrl_c(tuner: tune.Tuner):
    """`tuner.fit()`, with the process's Ctrl-C handler given back afterwards: Tune installs its own (Ctrl-C
    stops the experiment) and leaves it in place, so a caller that goes on serving could not be stopped."""
    if threading.current_thread() is not threading.main_thread():
        return tuner.fit()
    previous = signal.getsignal(signal.SIGINT)
    try:
        return tuner.fit()
    finally:
        signal.signal(signal.SIGINT, previous)


def _previous_search(out: Path, options: SearchOptions) -> dict | None:
    """The identity (id, MLflow parent run) of the search in OUT that --resume continues; None for a new one."""
    path = out / SEARCH_FILE
    if not path.is_file():
        return None
    if not options.resume:
        raise ALTError(f"{out} holds a search already: pass --resume to continue it or choose another --out")
    record = json.loads(path.read_text())
    if Path(record["space"]).resolve() != Path(options.space).resolve():
        raise ConfigError(f"{out} is a search over {record['space']}; resume it with --space {record['space']}")
    return record


def _new_search(out: Path, options: SearchOptions, job: TrainJob) -> dict:
    """A new search's identity: an id and its MLflow parent run, recorded for --resume."""
    out.mkdir(parents=True, exist_ok=True)
    search_id = uuid.uuid4().hex[:8]
    parent = tracking.start_search_run(job.mlflow_uri(), out / "mlartifacts", f"search-{search_id}",
                                       {"space": options.space, "scheduler": options.scheduler,
                                        "concurrent": options.concurrent, "trials": options.trials,
                                        "workers_per_trial": options.workers_per_trial, "data": job.data,
                                        "corpus": job.corpus}, {"search_id": search_id})
    record = {"search_id": search_id, "parent_run_id": parent, "space": options.space}
    (out / SEARCH_FILE).write_text(json.dumps(record, indent=1))
    return record


def summarise(job: TrainJob, space: SearchSpace, options: SearchOptions, search: dict, grid, labels: list[str]) -> dict:
    """Every trial's outcome, the MLflow bookkeeping of its child run, and the champion decision."""
    trials = []
    for result in grid:
        history = result.metrics_dataframe.to_dict("records") if result.metrics_dataframe is not None else []
        history = [row for row in history if row.get(METRIC) is not None]
        trial_id = result.metrics.get("trial_id") or Path(result.path).name
        # the best epoch whose checkpoint Ray Train kept (ties go to the later epoch, as its retention does)
        kept = [row for row in history if isinstance(row.get(CHECKPOINT_PATH_KEY), str)
                and Path(row[CHECKPOINT_PATH_KEY]).is_dir()]
        best = max(kept, key=lambda row: (row[METRIC], row["epoch"]), default=None)
        reason = "failed" if result.error else "completed" if (history and history[-1]["epoch"] >= space.max_t) \
            else f"stopped by {'ASHA' if options.scheduler == 'asha' else 'the scheduler'}"
        run_id = tracking.trial_run_id(job.mlflow_uri(), search["search_id"], trial_id)
        if run_id:
            tracking.close_trial_run(job.mlflow_uri(), run_id, reason)
        trials.append({
            "trial_id": trial_id, "config": result.config, "epochs": len(history), "stop_reason": reason,
            "best_val_top1": best[METRIC] if best else None, "best_epoch": best["epoch"] if best else None,
            "checkpoint": best[CHECKPOINT_PATH_KEY] if best else None, "run_id": run_id,
            "seconds": result.metrics.get("time_total_s"),
            "history": [{k: row[k] for k in ("epoch", METRIC, "train_loss", "train_acc")} for row in history],
            "error": str(result.error).splitlines()[0] if result.error else None})
    ranked = sorted((t for t in trials if t["best_val_top1"] is not None), key=lambda t: -t["best_val_top1"])
    if not ranked:
        raise ALTError(f"no trial of search {search['search_id']} reported a validation score; see {job.out}/tune")
    decision = crown(job, ranked[0], search, labels)
    return {"search_id": search["search_id"], "space": space.path, "scheduler": options.scheduler,
            "max_t": space.max_t, "trial_epochs": sum(t["epochs"] for t in trials), "trials": trials,
            "best": {k: ranked[0][k] for k in ("trial_id", "config", "best_val_top1", "best_epoch")},
            "decision": decision}


def crown(job: TrainJob, best: dict, search: dict, labels: list[str]) -> dict:
    """Register the best trial's best epoch; it becomes `champion` only if it beats the current champion on
    the same validation data, otherwise `challenger`."""
    val_hash = data_hash(job.data, ["val"])
    tags = {"data_hash": val_hash, "corpus_hash": job.model.corpus_hash, "search_id": search["search_id"],
            "trial_id": best["trial_id"], METRIC: str(best["best_val_top1"])}
    final = Path(job.out) / "best_checkpoint"
    version, _ = publish_checkpoint(job, Checkpoint(best["checkpoint"]), final, best["run_id"], best["history"],
                                    labels, tags=tags)
    return tracking.crown(job.mlflow_uri(), version, best["best_val_top1"], val_hash) | {"checkpoint": str(final)}


def trials_table(trials: list[dict]) -> str:
    keys = sorted({k for t in trials for k in t["config"]})
    head = f"{'trial':<10}" + "".join(f"{k:>14}" for k in keys) + f"{'epochs':>8}{'best val':>10}  stop reason"
    rows = [head]
    for t in sorted(trials, key=lambda t: -(t["best_val_top1"] or -1)):
        cells = "".join(f"{t['config'][k]:>14.3g}" if isinstance(t["config"][k], float) else f"{t['config'][k]:>14}"
                        for k in keys)
        score = f"{t['best_val_top1']:.3f}" if t["best_val_top1"] is not None else "-"
        rows.append(f"{t['trial_id']:<10}{cells}{t['epochs']:>8}{score:>10}  {t['stop_reason']}")
    return "\n".join(rows)


def decision_line(decision: dict) -> str:
    previous = "no champion before" if decision["champion_version"] is None else \
        f"champion v{decision['champion_version']} scored {decision['champion_score']:.3f}"
    return (f"tune: registered alt v{decision['version']} (val top-1 {decision['score']:.3f}) as "
            f"{decision['alias']}: {decision['reason']}; {previous}")
