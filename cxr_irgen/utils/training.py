"""One training loop for every stage (vision backbone, language autoencoder, prior).

The caller builds the trainable module and a ``loss_fn(model, batch) -> scalar``; this
loop owns the rest: HF Accelerate (CPU, one GPU, ``accelerate launch``), mixed precision,
gradient accumulation, AdamW + warmup schedule, optional EMA, a seeded resumable sampler
(a resumed run sees exactly the batches an uninterrupted one would), atomic checkpoints,
NaN/inf detection on any rank (every rank stops), progress bar and TensorBoard scalars.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cxr_irgen.errors import UserError
from cxr_irgen.utils.checkpoint import list_checkpoints, load_checkpoint, resolve_resume, save_checkpoint

log = logging.getLogger(__name__)


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation, sharded by rank, that can start mid-epoch.

    Batch ``b`` of epoch ``e`` is the same whatever run produced it, which is what makes
    a resumed run identical to an uninterrupted one.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, batch_size: int = 1):
        per_rank = n // world
        if per_rank < batch_size:
            raise UserError(f"dataset has {n} items: too few for batch_size={batch_size} on {world} process(es); lower trainer.batch_size")
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.num_batches = per_rank // batch_size
        self.batch_size = batch_size
        self.epoch, self.start_batch = 0, 0

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g)[self.rank :: self.world]
        order = order[: self.num_batches * self.batch_size]
        return iter(order[self.start_batch * self.batch_size :].tolist())

    def __len__(self) -> int:
        return (self.num_batches - self.start_batch) * self.batch_size


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "constant":
            return 1.0
        if schedule == "linear":
            return 1.0 - progress
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        raise UserError(f"trainer.lr_schedule={schedule!r}: use constant, linear or cosine")

    return fn


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)
    checkpoint: Path | None = None


def make_accelerator(trainer_cfg, seed: int):
    """An Accelerator for the trainer config; seeds every process (offset by rank)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(
        mixed_precision=str(trainer_cfg.mixed_precision),
        gradient_accumulation_steps=int(trainer_cfg.grad_accum),
        step_scheduler_with_optimizer=False,
    )
    set_seed(seed + accelerator.process_index)
    return accelerator


def train(
    accelerator,
    model: torch.nn.Module,
    dataset: Dataset,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    trainer_cfg,
    run_dir: Path,
    seed: int,
    collate_fn: Callable | None = None,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model``'s parameters that require grad for ``trainer_cfg.max_steps`` optimizer steps.

    ``on_epoch(epoch)`` is called before each pass over the data (also a resumed partial one), so
    datasets whose items depend on the epoch (reference choice) can follow the sampler.
    """
    from tqdm.auto import tqdm

    cfg = trainer_cfg
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", True)))  # denormal floats stall CPU training (benchmarks/demo_stalls.py)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError("nothing to train: every parameter of the model is frozen")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=bool(cfg.get("fused_adamw", False)) or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.lr_schedule, cfg.warmup_steps, cfg.max_steps))
    ema = None
    if cfg.ema_decay:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=float(cfg.ema_decay))
    model, optimizer = accelerator.prepare(model, optimizer)

    sampler = ResumableSampler(len(dataset), seed, accelerator.process_index, accelerator.num_processes, cfg.batch_size)
    # The loader draws its base seed from its own generator, not the global RNG (which a resumed run restores).
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers, collate_fn=collate_fn,
                        drop_last=True, generator=torch.Generator().manual_seed(seed), pin_memory=bool(cfg.get("pin_memory", False)) and torch.cuda.is_available(),
                        persistent_workers=bool(cfg.get("persistent_workers", False)) and cfg.num_workers > 0)

    step = 0
    ckpt = resolve_resume(cfg.resume, run_dir)
    if ckpt is not None:
        step = load_checkpoint(accelerator, ckpt, model, optimizer, scheduler, ema)["step"]
        log.info("resumed from %s at step %d", ckpt, step)
    micro = step * cfg.grad_accum
    sampler.set_position(micro // sampler.num_batches, micro % sampler.num_batches)

    writer = None
    if accelerator.is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
    result = TrainResult(step=step, checkpoint=ckpt)
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=not accelerator.is_main_process, dynamic_ncols=True)
    model.train()
    while step < cfg.max_steps:
        if on_epoch is not None:
            on_epoch(sampler.epoch)
        for batch in loader:
            with accelerator.accumulate(model):
                loss = loss_fn(model, to_device(batch, accelerator.device))
                losses = accelerator.gather(loss.detach().float().reshape(1))  # every rank sees every rank's loss
                if not torch.isfinite(losses).all():
                    last = list_checkpoints(run_dir)
                    raise UserError(
                        f"loss became {losses[~torch.isfinite(losses)][0].item()} at step {step}; stopped without saving. Last good checkpoint: "
                        f"{last[-1] if last else 'none'}. Lower trainer.lr, use mixed_precision=no or bf16, then resume=latest"
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            if ema is not None:
                ema.step(params)
            step += 1
            value = losses.mean().item()
            result.losses.append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if writer is not None and step % cfg.log_every == 0:
                writer.add_scalar("train/loss", value, step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
            if on_step is not None:
                on_step(step, model)
            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
                result.checkpoint = save_checkpoint(accelerator, run_dir, step, model, optimizer, scheduler, ema, cfg.keep_checkpoints)
            if step >= cfg.max_steps:
                break
        sampler.set_position(sampler.epoch + 1, 0)
    bar.close()
    if writer is not None:
        writer.close()
    if ema is not None:
        ema.copy_to(params)
    result.step = step
    return result
