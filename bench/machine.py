"""What every benchmark prints about the machine it ran on."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown cpu"


def torch_machine(device: str | None = None) -> str:
    """OS, CPUs and torch threads, or the GPU: what a training or inference figure ran on (`device`: the one
    it ran on; default the GPU when there is one)."""
    import torch  # here, not at module import: the decode and synth benchmarks never need it

    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), no GPU")


def report(*parts: object) -> None:
    """Print a benchmark figure on the terminal, also after `alt`'s console setup moved library output to a
    log file (pipelines.console)."""
    from pipelines.console import out

    print(*parts, file=out(), flush=True)


def run_main(main: Callable[[], None]) -> None:
    """A benchmark's entry point: a crash is shown on the terminal, not only in the log file that the libraries'
    output went to once Ray started."""
    from pipelines.console import report_crash

    try:
        main()
    except Exception:
        report_crash()
        sys.exit(1)
