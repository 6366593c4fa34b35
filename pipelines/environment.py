"""The process environment of the `alt` command, written once.

The CLI entry point (`pipelines.cli.main`) and the tests' conftest call `set_defaults()` first, before Ray,
MLflow or huggingface_hub are imported; importing any module of this project changes nothing. Ray started by
the command inherits these, so its workers and Serve replicas see them too. Processes that never run `alt`
(a cluster node's `ray start`) get theirs from the image: deploy/kuberay/Dockerfile sets the ones they need.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULTS = {
    "HF_HUB_OFFLINE": "1",  # model hubs are unreachable offline: a hub tag fails at once, not after ~45 s of retries
    "MLFLOW_DISABLE_TELEMETRY": "true",  # else MLflow looks up a telemetry host
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # else `mlflow server` spawns ~9 processes
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "TUNE_GLOBAL_CHECKPOINT_S": "2",  # save a search's state often: `alt tune --resume` loses little
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's legacy reporter honours verbose=0; our own lines report progress
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",  # worker start-up on a busy 2-core machine can take minutes
}
# A Ray started here binds 127.0.0.1. Not for a job driver on a cluster (RAY_ADDRESS set by `ray job submit`):
# it keeps Ray's own address choice, so multi-node clusters still see each other.
LOCAL_RAY_DEFAULTS = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def defaults(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The defaults that apply in an environment."""
    return DEFAULTS | ({} if "RAY_ADDRESS" in environ else LOCAL_RAY_DEFAULTS)


def set_defaults() -> None:
    """Set every default the environment does not set already (a value the user exported wins)."""
    for key, value in defaults().items():
        os.environ.setdefault(key, value)
