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
}
if "RAY_ADDRESS" not in os.environ:
    _defaults["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
for _key, _value in _defaults.items():
    os.environ.setdefault(_key, _value)
