"""Demo training stalls: per-step time of the demo's tiny U-Net `train-vision` next to the denormal
floats in its convolution inputs, parameters, gradients and AdamW state, and the machine's load.

A float32 below 1.18e-38 is denormal; x86 CPUs handle such numbers in microcode, ~10x slower for
element-wise ops and ~100x for a convolution (the probe at the start measures both here). A run whose
weights, gradients or optimizer moments passed through that range would slow down for as long as they
stayed there, so the trainer flushes denormals to zero (``trainer.flush_denormal``, on by default);
``--keep-denormal`` runs the same training without the flush, to see whether any appear. Each 50-step
window prints its rate, its most denormals, the 1-minute load average and the share of CPU time the
hypervisor stole from this virtual machine (``steal`` in /proc/stat), so slow windows can be set against
each; ``--threads 1`` vs ``--threads 2`` shows how a two-thread OpenMP team, which waits for its slower
thread at every barrier, amplifies steal on one of the two CPUs.

    python benchmarks/demo_stalls.py --steps 1000 --keep-denormal   # the demo's vision step, denormals kept

Steps slower than 3x the median are stalls. The last line is one JSON object.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_MININTERVAL", "30")  # before tqdm is imported: a status line every 30 s

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import common
import torch
from omegaconf import OmegaConf
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

ROOT = Path(__file__).resolve().parents[1]
TINY = torch.finfo(torch.float32).tiny


def cpu_times() -> list[int]:
    """The machine's cumulative CPU time fields (user nice system idle iowait irq softirq steal ...) from /proc/stat."""
    with open("/proc/stat") as fh:
        return [int(v) for v in fh.readline().split()[1:]]


def steal_share(before: list[int], after: list[int]) -> float:
    """Share of all CPU time between two :func:`cpu_times` readings that the hypervisor stole."""
    delta = [b - a for a, b in zip(before, after)]
    return delta[7] / max(1, sum(delta[:8]))


def denormals(tensors) -> int:
    return sum(int(((t != 0) & (t.abs() < TINY)).sum()) for t in tensors if t is not None and t.is_floating_point())


def probe() -> dict:
    """ms of a 3x3 convolution and of an AdamW-like update on normal vs denormal inputs, denormals kept."""
    x, w = torch.randn(2, 64, 32, 32), torch.randn(64, 64, 3, 3) * 0.05
    a, b = torch.randn(1_000_000), torch.randn(1_000_000)
    out = {}
    for name, scale in (("normal", 1.0), ("denormal", 1e-39)):
        xs, as_, bs = x * scale, a * scale, b * scale
        for op, fn in (("conv_ms", lambda: torch.nn.functional.conv2d(xs, w, padding=1)), ("update_ms", lambda: as_.mul(0.999).addcmul_(bs, bs, value=1e-3))):
            start = time.perf_counter()
            fn()
            out[f"{name}_{op}"] = round((time.perf_counter() - start) * 1000, 1)
    return out


class StepRecorder:
    """Global optimizer hooks: each step's wall time (post-hook to post-hook) and denormal counts."""

    def __init__(self):
        self.rows, self.last = [], None
        self.window_cpu, self.steal = cpu_times(), []
        self._grads, self._inputs = 0, 0
        self.handles = [register_optimizer_step_pre_hook(self.pre), register_optimizer_step_post_hook(self.post),
                        torch.nn.modules.module.register_module_forward_pre_hook(self.conv_input)]

    def conv_input(self, module, inputs):
        if isinstance(module, torch.nn.Conv2d) and module.training:
            self._inputs += denormals(inputs[:1])

    def pre(self, optimizer, args, kwargs):
        self._grads = denormals(p.grad for g in optimizer.param_groups for p in g["params"])

    def post(self, optimizer, args, kwargs):
        now = time.perf_counter()
        params = [p for g in optimizer.param_groups for p in g["params"]]
        states = [v for p in params for v in optimizer.state[p].values() if torch.is_tensor(v) and v.dim() > 0]
        if self.last is not None:
            self.rows.append({"s": now - self.last, "conv_inputs": self._inputs, "grads": self._grads, "params": denormals(params), "states": denormals(states)})
            if len(self.rows) % 50 == 0:
                chunk = self.rows[-50:]
                cpu = cpu_times()
                self.steal.append(steal_share(self.window_cpu, cpu))
                self.window_cpu = cpu
                print(f"steps {len(self.rows) - 48}-{len(self.rows) + 1}: {len(chunk) / sum(r['s'] for r in chunk):.2f} it/s, most denormals in a step: "
                      + ", ".join(f"{k} {max(r[k] for r in chunk)}" for k in ("conv_inputs", "grads", "params", "states"))
                      + f"; load {os.getloadavg()[0]:.1f}; steal {self.steal[-1]:.0%}", flush=True)
        self._inputs = 0
        self.last = time.perf_counter()  # the counting above is not part of the next step's time

    def close(self):
        for handle in self.handles:
            handle.remove()


def main() -> None:
    from cxr_irgen.cli import run_command

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--keep-denormal", action="store_true", help="trainer.flush_denormal=false")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: unchanged)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    demo = OmegaConf.load(ROOT / "configs" / "demo.yaml")
    probe_ms = probe()
    print(json.dumps({"probe_ms": probe_ms}), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-demo-stalls-") as tmp:
        data = Path(tmp) / "phantoms"
        p = demo.phantoms
        run_command("make-phantoms", [f"out={data}", f"n={p.n}", f"size={p.size}", f"seed={demo.seed}", f"hydra.run.dir={tmp}/make"])
        recorder = StepRecorder()
        overrides = [*demo.vision.overrides, f"trainer.max_steps={args.steps}", f"trainer.flush_denormal={not args.keep_denormal}"]
        start = time.perf_counter()
        try:
            run_command("train-vision", [f"data.root={data}", *overrides, f"hydra.run.dir={tmp}/vision"])
        finally:
            recorder.close()
        wall = time.perf_counter() - start
    rows = recorder.rows
    median = statistics.median(r["s"] for r in rows)
    stalls = [i + 2 for i, r in enumerate(rows) if r["s"] > 3 * median]
    with_denormals = [i + 2 for i, r in enumerate(rows) if r["conv_inputs"] + r["grads"] + r["params"] + r["states"]]
    steps_per_s = len(rows) / sum(r["s"] for r in rows)
    print(json.dumps(common.result(
        "demo_stalls", {"steps_per_s": round(steps_per_s, 2), "median_step_s": round(median, 4), "stall_steps": len(stalls), "flush_denormal": not args.keep_denormal},
        {"note": "run with and without --keep-denormal to compare"}, 1.0, "none: compare the two runs' stall_steps and steps_per_s",
        wall_s=round(wall, 1), steps=len(rows), stalls_first_last=[stalls[:1], stalls[-1:]], steps_with_denormals=len(with_denormals),
        denormals_first_last=[with_denormals[:1], with_denormals[-1:]], probe_ms=probe_ms,
        steal_per_window=[round(v, 3) for v in recorder.steal], overrides=overrides, peak_memory_mb=common.peak_rss_mb(),
    )))


if __name__ == "__main__":
    main()
