"""What the console shows: our progress (one line per stage, bars on a terminal), warnings and results.

The `alt` command calls `setup_logging`; until then (library use, tests) nothing here changes where output
goes. Without `--verbose`, the libraries' own output goes to a log file once a stage starts Ray: their
loggers, Ray's forwarded warnings (printed through sys.stdout and sys.stderr) and what Ray's C++ core and
FFmpeg write to file descriptors 1 and 2. Our messages and results keep duplicates of the terminal's
streams. A failure still prints its cause, and the log file's path.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TextIO

OUR_LOGGERS = ("alt_core", "pipelines", "deploy")
_state: dict = {"verbose": False, "log_file": None, "console": None, "out": None, "captured": False}


def console() -> TextIO:
    """Where our messages go: the terminal's stderr."""
    return _state["console"] or sys.stderr


def out() -> TextIO:
    """Where command results go: the terminal's stdout."""
    return _state["out"] or sys.stdout


def log_file() -> Path | None:
    return _state["log_file"]


def report_crash() -> None:
    """A bug's traceback on the console, where it is seen (stderr may be the log file by now) and in the log,
    and where that log is."""
    traceback.print_exc(file=console())
    if _state["captured"]:
        traceback.print_exc()  # into the log file too, beside what led to it
    if log_file():
        print(f"(library logs: {log_file()})", file=console())


def setup_logging(verbose: bool = False) -> Path:
    """Our loggers print to the console; every other logger writes to a log file (and to the console too with
    `verbose`)."""
    log_dir = Path(os.environ.get("ALT_LOG_DIR", Path(tempfile.gettempdir()) / f"alt-logs-{os.getuid()}"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"alt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    sys.stdout.flush()
    sys.stderr.flush()
    _state.update(verbose=verbose, log_file=log_file, console=os.fdopen(os.dup(2), "w", buffering=1),
                  out=os.fdopen(os.dup(1), "w", buffering=1))
    if not verbose:
        os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"  # MLflow's loggers then propagate to the log file
    handler = logging.StreamHandler(console())
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in OUR_LOGGERS:
        ours = logging.getLogger(name)
        ours.setLevel(logging.DEBUG if verbose else logging.INFO)
        ours.addHandler(handler)
        ours.propagate = False
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(file_handler)
    if verbose:
        root.addHandler(handler)
    logging.captureWarnings(True)  # library warnings.warn() calls go to the file too
    return log_file


def capture_library_output() -> None:
    """Send the process's stdout and stderr (Python's and the file descriptors) to the log file, once, when
    `setup_logging` ran without verbose; our console and results streams are unaffected."""
    if _state["log_file"] is None or _state["verbose"] or _state["captured"]:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    log_stream = open(_state["log_file"], "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
    os.dup2(log_stream.fileno(), 1)
    os.dup2(log_stream.fileno(), 2)
    sys.stdout = sys.stderr = log_stream
    _state["captured"] = True


def ensure_ray(**kwargs) -> None:
    """Start (or join, with RAY_ADDRESS) Ray once, quietly unless verbose: its logs stay in its session files."""
    import ray

    if ray.is_initialized():
        return
    capture_library_output()
    verbose = _state["verbose"]
    if "RAY_ADDRESS" not in os.environ:  # a Ray of our own, maybe beside others on this machine
        kwargs.setdefault("runtime_env", {"worker_process_setup_hook": address_own_cluster})
    ray.init(log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.ERROR, **kwargs)
    quiet_ray_data(verbose)


def address_own_cluster() -> None:
    """Ray worker setup: name the worker's own cluster in RAY_ADDRESS. Ray Train's placement-group cleaner asks
    the state API about a run's controller without an address; where other Ray instances run on the machine
    (other users, other sessions) it finds several and fails, and the CPUs of a search's finished trials stay
    reserved: the stage after the search then waits for them forever."""
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


def quiet_ray_data(verbose: bool = False) -> None:
    """Ray Data prints plans and progress bars to the console; ours are enough unless verbose."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = verbose
    if not verbose:
        for handler in logging.getLogger("ray.data").handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.ERROR)
