"""Phantom dataset build speed: ``make_phantoms(n=2000, size=256)`` (target: under 2 minutes on 2 cores).

Times the build with 2 drawing processes against the same build in one process (the
obvious implementation), both into temporary folders, and checks that both trees are
identical. Reports wall time, this process's and its children's CPU time, and images per
second. Usage: ``python benchmarks/phantoms.py [--n 2000] [--size 256]``; the last line is JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import common

from cxr_irgen.data.phantoms import chexpert_label_table, make_phantoms


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def _timed_build(root: Path, n: int, size: int, workers: int) -> dict:
    cpu = os.times()
    start = time.perf_counter()
    make_phantoms(root, n=n, seed=0, size=size, workers=workers)
    wall = time.perf_counter() - start
    after = os.times()
    cpu_s = (after.user - cpu.user) + (after.system - cpu.system) + (after.children_user - cpu.children_user) \
        + (after.children_system - cpu.children_system)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu_s, 2), "images_per_s": round(n / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    chexpert_label_table()  # read the real label table once, outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        ours = _timed_build(Path(tmp) / "two_workers", args.n, args.size, workers=2)
        reference = _timed_build(Path(tmp) / "one_process", args.n, args.size, workers=1)
        identical = _digest(Path(tmp) / "two_workers") == _digest(Path(tmp) / "one_process")
    print(json.dumps(common.result(
        "make_phantoms", ours, reference, reference["wall_s"] / ours["wall_s"], "wall-time speed of 2 drawing processes over 1 (identical trees required)",
        peak_memory_mb=common.peak_rss_mb(), n=args.n, size=args.size, identical_trees=identical,
    )))


if __name__ == "__main__":
    main()
