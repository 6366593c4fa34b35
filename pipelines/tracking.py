"""MLflow tracking for training runs: sqlite store by default, rank 0 only, registry model `alt`."""

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


def start_run(tracking_uri: str, artifact_root: str | Path, run_name: str, params: dict,
              run_id: str | None = None) -> str:
    """Start a run (or reopen `run_id` after a restart) and return its id."""
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=Path(artifact_root).resolve().as_uri())
    else:
        experiment_id = experiment.experiment_id
    if run_id:
        mlflow.start_run(run_id=run_id)
    else:
        mlflow.start_run(experiment_id=experiment_id, run_name=run_name)
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
    return mlflow.active_run().info.run_id


def log_epoch(metrics: dict[str, float], epoch: int) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}, step=epoch)


def curves_png(history: list[dict], path: Path) -> Path:
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    for key in ("train_acc", "val_top1"):
        ax_acc.plot(epochs, [h[key] for h in history], marker="o", label=key)
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
    ax.set(xlabel="predicted", ylabel="true", title="validation confusion matrix")
    if len(labels) <= 40:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def finish_run(checkpoint_dir: str | Path, history: list[dict], matrix: np.ndarray, labels: list[str]) -> int:
    """Log the checkpoint and plots, register a model version, end the run; returns the version."""
    run_id = mlflow.active_run().info.run_id
    mlflow.log_artifacts(str(checkpoint_dir), artifact_path="checkpoint")
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(curves_png(history, Path(tmp) / "curves.png")), artifact_path="plots")
        mlflow.log_artifact(str(confusion_png(matrix, labels, Path(tmp) / "confusion.png")), artifact_path="plots")
    # The checkpoint directory is our model format (loadable without MLflow): register its artifact URI.
    client = MlflowClient()
    if not client.search_registered_models(filter_string=f"name = '{REGISTERED_MODEL}'"):
        client.create_registered_model(REGISTERED_MODEL, description="ALT video action recognizer checkpoints")
    version = client.create_model_version(REGISTERED_MODEL, source=mlflow.get_artifact_uri("checkpoint"),
                                          run_id=run_id)
    mlflow.end_run()
    return int(version.version)


def run_summary(tracking_uri: str, run_id: str) -> dict:
    """Metrics and artifact paths of a run, for tests and reports."""
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    artifacts = [a.path for a in client.list_artifacts(run_id, "checkpoint")]
    return {"metrics": run.data.metrics, "params": run.data.params, "status": run.info.status,
            "checkpoint_artifacts": artifacts,
            "history": {k: [m.value for m in client.get_metric_history(run_id, k)] for k in run.data.metrics}}
