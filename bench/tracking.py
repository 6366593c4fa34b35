"""Tracking under concurrent writers: the MLflow store of a search, written by its trials at once.

--writers processes (16: the trials of a search running together) start together; each creates a run, logs
--steps metric steps (the 4 metrics of a training epoch per step in one `log_batch` call, what `alt train`'s
`mlflow.log_metrics` sends) and one artifact (a 256 KiB file, like a checkpoint's plots), then ends its run. The
same load goes to two stores:

- `server`: an MLflow tracking server on PostgreSQL (the team setup of deploy/kuberay/mlflow.yaml, started
  here by pipelines.tracking_server: a throwaway PostgreSQL cluster and `mlflow server` on 127.0.0.1), artifacts
  proxied by the server;
- `sqlite`: one SQLite file that every writer opens itself (the single-machine default), on local disk, which
  flatters it: on a cluster the file sits on a network file system.

Per store: errors (MLflow calls that raised, the first message kept), lost metric values (sent minus what the
store holds afterwards, read back run by run), lost artifacts, and the wall time from the common start to the
last writer's end. A writer does not retry: a failed call is an error, and its values are lost.

Usage: python bench/tracking.py [--writers 16] [--steps 200]
Goal: 0 errors and 0 lost through the server. Writes results/tracking_bench.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from bench.machine import cpu_model, report, run_main
from pipelines.environment import set_defaults

set_defaults()  # before MLflow is imported

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipelines.console import setup_logging
from pipelines.tracking_server import local_postgres, mlflow_server, postgres_bin_dir

RESULTS = Path(__file__).resolve().parents[1] / "results"
METRICS = ("train_loss", "train_acc", "val_loss", "val_top1")
ARTIFACT_BYTES = 256 * 1024


def writer(uri: str, experiment: str, index: int, steps: int, artifact: str, start, results) -> None:
    """One trial's tracking: a run, `steps` metric steps and one artifact; every failed call is counted."""
    client = MlflowClient(uri)
    errors: list[str] = []

    def attempt(call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any failure of the store is what we count
            errors.append(f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}")
            return None

    start.wait()  # every writer has imported MLflow and is ready: they start together
    run = attempt(client.create_run, experiment, run_name=f"writer-{index}")
    if run is not None:
        for step in range(steps):
            now = int(time.time() * 1000)
            attempt(client.log_batch, run.info.run_id,
                    metrics=[Metric(key, 1.0 / (step + 1) + i, now, step) for i, key in enumerate(METRICS)])
        attempt(client.log_artifact, run.info.run_id, artifact)
        attempt(client.set_terminated, run.info.run_id)
    results.put({"writer": index, "run_id": run.info.run_id if run else None, "errors": errors,
                 "end": time.time()})


def load(name: str, uri: str, writers: int, steps: int, scratch: Path) -> dict:
    """Run the writers against one store; read back what it holds."""
    client = MlflowClient(uri)
    experiment = client.create_experiment(
        f"bench-{name}", artifact_location=None if uri.startswith("http") else (scratch / f"{name}-artifacts").as_uri())
    artifact = scratch / "plots.bin"
    artifact.write_bytes(os.urandom(ARTIFACT_BYTES))
    context = mp.get_context("spawn")
    start, results = context.Barrier(writers + 1), context.Queue()
    processes = [context.Process(target=writer, args=(uri, experiment, i, steps, str(artifact), start, results))
                 for i in range(writers)]
    for process in processes:
        process.start()
    start.wait(timeout=600)
    began = time.time()
    outcomes = [results.get(timeout=1800) for _ in processes]
    for process in processes:
        process.join()
    stored = artifacts = 0
    for outcome in outcomes:
        if outcome["run_id"] is None:
            continue
        stored += sum(len(client.get_metric_history(outcome["run_id"], key)) for key in METRICS)
        artifacts += sum(f.file_size == ARTIFACT_BYTES for f in client.list_artifacts(outcome["run_id"]))
    errors = [e for outcome in outcomes for e in outcome["errors"]]
    sent = writers * steps * len(METRICS)
    return {"store": name, "writers": writers, "metric_values_sent": sent, "metric_values_stored": stored,
            "lost": sent - stored, "artifacts_lost": writers - artifacts, "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "runs_failed_to_start": sum(o["run_id"] is None for o in outcomes),
            "wall_s": round(max(o["end"] for o in outcomes) - began, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--server-workers", type=int, default=4, help="`mlflow server --workers` (mlflow.yaml: 4)")
    args = parser.parse_args()
    setup_logging()  # MLflow's and the writers' logs go to the log file
    os.environ.update(MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true")
    postgres = subprocess.run([str(postgres_bin_dir() / "postgres"), "--version"], capture_output=True,
                              text=True).stdout.strip()
    machine = f"{platform.platform()} | {cpu_model()} | {os.cpu_count()} CPUs"
    report(f"{args.writers} writers x {args.steps} steps x {len(METRICS)} metrics + 1 artifact of "
           f"{ARTIFACT_BYTES // 1024} KiB each; MLflow {mlflow.__version__}, {postgres}; machine: {machine}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tracking-bench-") as tmp:
        scratch = Path(tmp)
        with local_postgres() as database, mlflow_server(database.address, scratch / "server-artifacts",
                                                         scratch / "mlflow.log", workers=args.server_workers) as server:
            rows.append(load("server", server.address, args.writers, args.steps, scratch)
                        | {"backend": f"mlflow server ({args.server_workers} workers) on {postgres}"})
        rows.append(load("sqlite", f"sqlite:///{scratch / 'mlflow.db'}", args.writers, args.steps, scratch)
                    | {"backend": "one SQLite file on local disk, opened by every writer"})
    report(f"{'store':<8} {'errors':>7} {'lost':>6} {'of':>7} {'artifacts lost':>15} {'wall s':>8}")
    for row in rows:
        report(f"{row['store']:<8} {row['errors']:>7} {row['lost']:>6} {row['metric_values_sent']:>7} "
               f"{row['artifacts_lost']:>15} {row['wall_s']:>8}" + (f"   first error: {row['first_error']}"
                                                                     if row["first_error"] else ""))
    met = rows[0]["errors"] == rows[0]["lost"] == rows[0]["artifacts_lost"] == 0
    report(f"goal (server: 0 errors, 0 lost): {'met' if met else 'NOT met'}")
    (RESULTS / "tracking_bench.json").write_text(json.dumps(
        {"machine": machine, "mlflow": mlflow.__version__, "postgres": postgres, "writers": args.writers,
         "steps": args.steps, "metrics_per_step": len(METRICS), "artifact_bytes": ARTIFACT_BYTES, "stores": rows},
        indent=1) + "\n")


if __name__ == "__main__":
    run_main(main)
