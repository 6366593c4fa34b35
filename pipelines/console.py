"""What the console shows: our progress (one line per stage, bars on a terminal), warnings and results.

Ray's and MLflow's own logs go to a log file (and Ray's session logs under /tmp/ray) unless `--verbose`;
a failure still prints its cause, and the log file's path.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

OUR_LOGGERS = ("alt_core", "pipelines", "deploy")
_state = {"verbose": False, "log_file": None}


def setup_logging(verbose: bool = False) -> Path:
    """Our loggers print to stderr; everything else goes to a log file (and to stderr too with `verbose`)."""
    log_dir = Path(os.environ.get("ALT_LOG_DIR", Path(tempfile.gettempdir()) / f"alt-logs-{os.getuid()}"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"alt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    _state.update(verbose=verbose, log_file=log_file)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    for name in OUR_LOGGERS:
        ours = logging.getLogger(name)
        ours.setLevel(logging.DEBUG if verbose else logging.INFO)
        ours.addHandler(console)
        ours.propagate = False
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(file_handler)
    if verbose:
        root.addHandler(console)
    logging.captureWarnings(True)  # library warnings.warn() calls go to the file too
    for name in ("mlflow", "alembic"):  # they install their own stderr handlers
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return log_file


def log_file() -> Path | None:
    return _state["log_file"]


def ensure_ray(**kwargs) -> None:
    """Start (or join, with RAY_ADDRESS) Ray once, quietly unless verbose: its logs stay in its session files."""
    import ray

    if ray.is_initialized():
        return
    verbose = _state["verbose"]
    ray.init(log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.ERROR, **kwargs)
    quiet_ray_data(verbose)


def quiet_ray_data(verbose: bool = False) -> None:
    """Ray Data prints plans and progress bars to the console; ours are enough unless verbose."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = verbose
    if not verbose:
        for handler in logging.getLogger("ray.data").handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.ERROR)
