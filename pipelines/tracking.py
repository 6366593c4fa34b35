"""MLflow tracking: a sqlite store by default (one machine) or a tracking server (a team: docs/cluster.md),
one run per training (rank 0 logs), its plots, and the versions of registry model `alt` it registers and
crowns. Reading the registry (loading a model by name) is `alt_core/registry.py`, which needs none of this."""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from alt_core.training import METRIC  # noqa: E402

EXPERIMENT = "alt"
REGISTERED_MODEL = "alt"


def is_tracking_server(tracking_uri: str) -> bool:
    """Whether a tracking URI names an MLflow tracking server rather than a store the client writes itself."""
    return tracking_uri.startswith(("http://", "https://"))


def experiment_id(tracking_uri: str, artifact_root: str | Path) -> str:
    """The `alt` experiment's id, created on first use with its artifacts under `artifact_root`; through a
    tracking server, where the server keeps them instead: it proxies artifacts (`mlflow-artifacts:/`), so its
    clients need no access to its storage."""
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        location = None if is_tracking_server(tracking_uri) else Path(artifact_root).resolve().as_uri()
        return mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    return experiment.experiment_id


def start_run(tracking_uri: str, artifact_root: str | Path, run_name: str, params: dict,
              run_id: str | None = None, tags: dict | None = None) -> str:
    """Start a run (or reopen `run_id` after a restart) and return its id."""
    exp = experiment_id(tracking_uri, artifact_root)
    if run_id:
        mlflow.start_run(run_id=run_id)
    else:
        mlflow.start_run(experiment_id=exp, run_name=run_name, tags=tags)
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
    return mlflow.active_run().info.run_id


def log_epoch(metrics: dict[str, float], epoch: int) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}, step=epoch)


def end_run(status: str = "FINISHED") -> None:
    mlflow.end_run(status=status)


def curves_png(history: list[dict], path: Path, best_epoch: int | None = None) -> Path:
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    for key in ("train_acc", METRIC):
        ax_acc.plot(epochs, [h[key] for h in history], marker="o", label=key)
    if best_epoch is not None:
        ax_acc.axvline(best_epoch, color="grey", linestyle="--", label="kept (best val)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_png(matrix: np.ndarray, labels: list[str], path: Path) -> Path:
    size = max(4.0, 0.18 * len(labels))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xlabel="predicted", ylabel="true", title="validation confusion matrix (kept epoch)")
    if len(labels) <= 40:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def register_version(client: MlflowClient, run_id: str, artifact_path: str, tags: dict | None = None) -> int:
    """A new version of model `alt` whose source is a run's checkpoint directory (our format, loadable without
    MLflow: `register_model` would want an MLmodel file)."""
    if not client.search_registered_models(filter_string=f"name = '{REGISTERED_MODEL}'"):
        client.create_registered_model(REGISTERED_MODEL, description="ALT video action recognizer checkpoints")
    source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    version = client.create_model_version(REGISTERED_MODEL, source=source, run_id=run_id, tags=tags)
    return int(version.version)


def publish_run(tracking_uri: str, run_id: str, checkpoint_dir: str | Path, history: list[dict],
                matrix: list[list[int]], labels: list[str], best_epoch: int, tags: dict | None = None) -> int:
    """Attach the kept checkpoint and the plots to a finished run and register the checkpoint; returns the
    model version."""
    client = MlflowClient(tracking_uri)
    client.log_artifacts(run_id, str(checkpoint_dir), artifact_path="checkpoint")
    client.log_metric(run_id, "best_epoch", best_epoch)
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(run_id, str(curves_png(history, Path(tmp) / "curves.png", best_epoch)), "plots")
        client.log_artifact(run_id, str(confusion_png(np.array(matrix), labels, Path(tmp) / "confusion.png")),
                            "plots")
    return register_version(client, run_id, "checkpoint", tags)


def run_summary(tracking_uri: str, run_id: str) -> dict:
    """Metrics and artifact paths of a run, for tests and reports."""
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    artifacts = [a.path for a in client.list_artifacts(run_id, "checkpoint")]
    return {"metrics": run.data.metrics, "params": run.data.params, "status": run.info.status,
            "tags": run.data.tags, "checkpoint_artifacts": artifacts,
            "history": {k: [m.value for m in client.get_metric_history(run_id, k)] for k in run.data.metrics}}


def start_search_run(tracking_uri: str, artifact_root: str | Path, run_name: str, params: dict, tags: dict) -> str:
    """The parent run of a search; trial runs name it in their `mlflow.parentRunId` tag."""
    client = MlflowClient(tracking_uri)
    run = client.create_run(experiment_id(tracking_uri, artifact_root), run_name=run_name, tags=tags)
    for key, value in params.items():
        client.log_param(run.info.run_id, key, str(value)[:500])
    return run.info.run_id


def trial_run_id(tracking_uri: str, search_id: str, trial_id: str) -> str | None:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1,
                              filter_string=f"tags.search_id = '{search_id}' and tags.trial_id = '{trial_id}'")
    return runs[0].info.run_id if runs else None


def close_trial_run(tracking_uri: str, run_id: str, stop_reason: str) -> None:
    """Record why a trial ended; a trial ASHA stopped was killed mid-run, so its run is closed here."""
    client = MlflowClient(tracking_uri)
    client.set_tag(run_id, "stop_reason", stop_reason)
    client.set_terminated(run_id, "FAILED" if stop_reason == "failed" else "FINISHED")


def grid_png(trials: list[dict], path: Path) -> Path:
    """Validation top-1 of the best trial per (query count, depth) cell."""
    queries = sorted({t["config"].get("num_queries") for t in trials}, key=str)
    depths = sorted({t["config"].get("depth") for t in trials}, key=str)
    cells = np.full((len(depths), len(queries)), np.nan)
    for t in trials:
        if t["best_val_top1"] is not None:
            i, j = depths.index(t["config"].get("depth")), queries.index(t["config"].get("num_queries"))
            cells[i, j] = np.fmax(cells[i, j], t["best_val_top1"])
    fig, ax = plt.subplots(figsize=(1.2 * len(queries) + 2.5, 1.0 * len(depths) + 1.8))
    image = ax.imshow(cells, cmap="viridis", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(cells):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    ax.set_xticks(range(len(queries)), [str(q) for q in queries])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    ax.set(xlabel="query count N_q", ylabel="adapter depth M", title="best validation top-1 per cell")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def trial_curves_png(trials: list[dict], max_t: int, path: Path) -> Path:
    """Every trial's validation curve; an x marks where ASHA stopped a trial."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in trials:
        epochs = [row["epoch"] for row in t["history"]]
        values = [row[METRIC] for row in t["history"]]
        line, = ax.plot(epochs, values, marker=".", label=t["trial_id"])
        if t["stop_reason"] == "stopped by ASHA" and epochs:
            ax.plot(epochs[-1], values[-1], marker="x", markersize=10, color=line.get_color())
    ax.set(xlabel="epoch", ylabel="validation top-1", xlim=(0.5, max_t + 0.5), ylim=(0, 1.02),
           title="trials (x: stopped by ASHA)")
    if len(trials) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def log_search(tracking_uri: str, parent_run_id: str, summary: dict, max_t: int, results_file: Path) -> None:
    """The parent run's results table, plots and headline metrics; the run ends here."""
    client = MlflowClient(tracking_uri)
    client.log_artifact(parent_run_id, str(results_file))
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "trials.md"
        rows = ["| trial | config | epochs | best val top-1 | stop reason |", "|---|---|---|---|---|"]
        rows += [f"| {t['trial_id']} | {t['config']} | {t['epochs']} | {t['best_val_top1']} | {t['stop_reason']} |"
                 for t in summary["trials"]]
        table.write_text("\n".join(rows) + "\n")
        client.log_artifact(parent_run_id, str(table))
        client.log_artifact(parent_run_id, str(grid_png(summary["trials"], Path(tmp) / "grid.png")), "plots")
        client.log_artifact(parent_run_id, str(trial_curves_png(summary["trials"], max_t, Path(tmp) / "curves.png")),
                            "plots")
    client.log_metric(parent_run_id, "best_val_top1", summary["best"]["best_val_top1"])
    client.log_metric(parent_run_id, "trial_epochs", summary["trial_epochs"])
    client.set_tag(parent_run_id, "decision", summary["decision"]["alias"])
    client.set_terminated(parent_run_id, "FINISHED")


def crown(tracking_uri: str, version: int, score: float, val_hash: str) -> dict:
    """Alias `champion` for a version that beats the current champion on the same validation data (same
    data hash); `challenger` otherwise. Returns the decision with both scores."""
    client = MlflowClient(tracking_uri)
    try:
        current = client.get_model_version_by_alias(REGISTERED_MODEL, "champion")
    except MlflowException:
        current = None
    decision = {"version": version, "score": score, "data_hash": val_hash,
                "champion_version": int(current.version) if current else None,
                "champion_score": float(current.tags.get(METRIC, "nan")) if current else None}
    if current is None:
        alias, reason = "champion", "no champion yet"
    elif current.tags.get("data_hash") != val_hash:
        alias, reason = "challenger", f"the champion was validated on other data ({current.tags.get('data_hash')})"
    elif score > decision["champion_score"]:
        alias, reason = "champion", "it beats the champion on the same validation data"
    else:
        alias, reason = "challenger", "it does not beat the champion on the same validation data"
    client.set_registered_model_alias(REGISTERED_MODEL, alias, str(version))
    return decision | {"alias": alias, "reason": reason}
