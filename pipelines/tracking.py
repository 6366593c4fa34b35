"""MLflow tracking: a sqlite store by default, one run per training (rank 0 logs), registry model `alt`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

EXPERIMENT = "alt"
REGISTERED_MODEL = "alt"


def default_tracking_uri(out_dir: str | Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


def experiment_id(tracking_uri: str, artifact_root: str | Path) -> str:
    """The `alt` experiment's id, created with its artifacts under `artifact_root` on first use."""
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return mlflow.create_experiment(EXPERIMENT, artifact_location=Path(artifact_root).resolve().as_uri())
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
    for key in ("train_acc", "val_top1"):
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
