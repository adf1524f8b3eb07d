"""What every benchmark's final JSON line carries: the machine, the exact command, peak memory, and timing helpers.

The machine this project is developed on has 2 CPU cores shared with other jobs, so timings are
noisy: benchmarks alternate ours and the reference (``alternate``) and keep each one's best round.
"""

from __future__ import annotations

import os
import resource
import shlex
import sys
import time
from typing import Callable


def machine() -> dict:
    """CPU count, 1-minute load average (a load above the core count means a shared, loaded machine), torch/CUDA/GPU."""
    import torch

    info = {"cpu_count": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__}
    info["loaded"] = info["load_avg_1min"] > (os.cpu_count() or 1)
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    return info


def command() -> str:
    """The command line that produced this result."""
    return shlex.join(["python", *sys.argv])


def peak_rss_mb() -> float:
    """Peak resident memory of this process (children separately: see ``peak_children_rss_mb``)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def alternate(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best wall time in seconds of each function over ``rounds`` rounds, the functions alternating within a round."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def result(benchmark: str, ours: dict, reference: dict, ratio: float, ratio_means: str, **extra) -> dict:
    """The final JSON object: ours, the reference, their ratio (what it means), the machine, the command."""
    return {"benchmark": benchmark, "ours": ours, "reference": reference, "ratio": round(ratio, 3), "ratio_means": ratio_means,
            **extra, "machine": machine(), "command": command()}
