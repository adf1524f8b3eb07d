"""Two-process CPU runs for the tests: :func:`launch` starts this file under ``torch.distributed.run
--nproc_per_node 2`` (gloo); each rank writes ``<out>/<mode>-rank<r>.json`` for the test to compare.

- ``shard_map``: :func:`cxr_irgen.eval.evaluate.shard_map` over 7 items; which items each rank computed and the gathered list.
- ``train``: the shared trainer on the tiny MLP of ``test_training_loop`` (warmup, cosine, EMA, dropout, grad_accum 2) for
  4 steps, then a second run resumed from that run's step-2 checkpoint; each rank's final weights and losses.
- ``nan``: the loss becomes NaN on rank 1 only; what each rank raised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def launch(mode: str, out: Path, timeout: int = 300) -> list[dict]:
    """Run ``mode`` on two CPU processes; the two ranks' JSON payloads."""
    out.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(Path(__file__)), mode, str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"{mode}-rank{rank}.json").read_text()) for rank in (0, 1)]


def _main(mode: str, out: Path) -> None:
    rank = int(os.environ["RANK"])

    def write(payload: dict) -> None:
        (out / f"{mode}-rank{rank}.json").write_text(json.dumps(payload))

    if mode == "shard_map":
        from accelerate import PartialState

        from cxr_irgen.eval.evaluate import shard_map

        state = PartialState(cpu=True)  # PartialState() alone ignores ACCELERATE_USE_CPU and runs one process per rank
        seen: list[int] = []
        gathered = shard_map(lambda idx: seen.extend(idx) or [[i, rank] for i in idx], 7, 2, "t", state)
        write({"seen": seen, "gathered": gathered})
        state.wait_for_everyone()
        return
    from test_training_loop import SCHEDULE, mse, run

    from cxr_irgen.errors import UserError
    from cxr_irgen.utils.checkpoint import checkpoint_path

    if mode == "train":
        straight, first = run(out / "straight", max_steps=4, keep_checkpoints=0, **SCHEDULE)
        resumed, second = run(out / "resumed", max_steps=4, resume=str(checkpoint_path(out / "straight", 2)), **SCHEDULE)
        as_lists = lambda model: {k: v.tolist() for k, v in model.state_dict().items()}  # noqa: E731
        write({"straight": as_lists(straight), "resumed": as_lists(resumed), "losses": first.losses, "resumed_losses": second.losses})
    elif mode == "nan":
        calls = []

        def nan_on_rank_1(model, batch):
            calls.append(1)
            return mse(model, batch) * (float("nan") if rank == 1 and len(calls) == 3 else 1.0)

        try:
            run(out / "nan", loss_fn=nan_on_rank_1)
            write({"error": None})
        except UserError as err:
            write({"error": str(err)})


if __name__ == "__main__":
    from cxr_irgen.utils.device import close_process_group

    try:
        _main(sys.argv[1], Path(sys.argv[2]))
    finally:
        close_process_group()
