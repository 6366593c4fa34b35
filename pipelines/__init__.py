"""Ray stages of the ALT lifecycle and the `alt` command line."""

import os

# Before Ray, MLflow or huggingface_hub are imported: bind locally, no telemetry, no hub retries.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}.items():
    os.environ.setdefault(_key, _value)
