"""Ray stages of the ALT lifecycle and the `alt` command line."""

import os

# Before Ray, MLflow or huggingface_hub are imported: no telemetry, no hub retries, and a local Ray
# binds 127.0.0.1. A job driver on a cluster (RAY_ADDRESS set by `ray job submit`) keeps Ray's own
# address choice, so multi-node clusters still see each other.
_defaults = {
    "HF_HUB_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "TUNE_GLOBAL_CHECKPOINT_S": "2",  # save a search's state often: `alt tune --resume` loses little
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's legacy reporter honours verbose=0; our own lines report progress
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",  # worker start-up on a busy 2-core machine can take minutes
}
if "RAY_ADDRESS" not in os.environ:
    _defaults["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
for _key, _value in _defaults.items():
    os.environ.setdefault(_key, _value)
