"""One training loop for every stage (vision backbone, language autoencoder, prior).

The caller builds the trainable module and a ``loss_fn(model, batch) -> scalar``; this
loop owns the rest: HF Accelerate (CPU, one GPU, ``accelerate launch``), mixed precision,
gradient accumulation, AdamW or Adam (``amsgrad``) with per-group learning rates (``group_lr``, groups named by
the model's ``parameter_groups()``) and one learning-rate schedule, optional EMA, a seeded resumable sampler
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


SCHEDULES = ("constant", "linear", "cosine", "step", "noam")


def lr_lambda(schedule: str, warmup: int, total: int, steps_per_epoch: int = 1, step_epochs: int = 1, gamma: float = 1.0) -> Callable[[int], float]:
    """Factor of the base learning rate at optimizer step ``step`` (0-based), after a linear warmup of ``warmup`` steps.

    ``constant`` / ``linear`` / ``cosine`` (to 0 at ``total``); ``step``: × ``gamma`` every ``step_epochs`` epochs of
    ``steps_per_epoch`` optimizer steps (torch StepLR stepped per epoch); ``noam``: ``min(s / warmup, sqrt(warmup / s))``
    with ``s = step + 1``, so the base rate is the peak (Noam's ``factor · d_model^-0.5 · warmup^-0.5``).
    """
    if schedule not in SCHEDULES:
        raise UserError(f"trainer.lr_schedule={schedule!r}: use {', '.join(SCHEDULES)}")
    if schedule == "noam" and warmup < 1:
        raise UserError("trainer.lr_schedule=noam needs trainer.warmup_steps >= 1 (ifcc: 2000)")

    def fn(step: int) -> float:
        if schedule == "noam":
            return min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "step":
            return gamma ** ((step - warmup) // (steps_per_epoch * step_epochs))
        return 1.0

    return fn


def make_optimizer(model: torch.nn.Module, params: list[torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
    """AdamW or Adam over ``params``; those in a group the model names in ``parameter_groups()`` get ``cfg.group_lr[name]``."""
    trainable = {id(p) for p in params}
    named = model.parameter_groups() if hasattr(model, "parameter_groups") else {}
    group_lr = dict(cfg.get("group_lr") or {})
    unknown = set(group_lr) - set(named)
    if unknown:
        raise UserError(f"trainer.group_lr names {sorted(unknown)}, not parameter groups of this model ({', '.join(named) or 'it has none'})")
    groups, seen = [], set()
    for name, members in named.items():
        members = [p for p in members if id(p) in trainable and id(p) not in seen]
        seen.update(id(p) for p in members)
        if members:
            groups.append({"params": members, "lr": float(group_lr.get(name, cfg.lr)), "name": name})
    rest = [p for p in params if id(p) not in seen]
    if rest:
        groups.append({"params": rest, "lr": float(cfg.lr), "name": "rest"})
    kind = str(cfg.get("optimizer", "adamw"))
    if kind not in ("adamw", "adam"):
        raise UserError(f"trainer.optimizer={kind!r}: use adamw or adam")
    optimizer_class = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    return optimizer_class(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, amsgrad=bool(cfg.get("amsgrad", False)),
                           fused=bool(cfg.get("fused_adamw", False)) or None)


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
    on_step: Callable[[int, torch.nn.Module], bool | None] | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model``'s parameters that require grad for ``trainer_cfg.max_steps`` optimizer steps.

    ``on_epoch(epoch)`` is called before each pass over the data (also a resumed partial one), so
    datasets whose items depend on the epoch (reference choice) can follow the sampler.
    ``on_step(step, model)`` runs after each optimizer step; returning True ends training there
    (early stopping), with a checkpoint at that step.
    """
    from cxr_irgen.utils.progress import progress_bar

    cfg = trainer_cfg
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", True)))  # denormal floats stall CPU training (benchmarks/demo_stalls.py)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError("nothing to train: every parameter of the model is frozen")
    optimizer = make_optimizer(model, params, cfg)
    sampler = ResumableSampler(len(dataset), seed, accelerator.process_index, accelerator.num_processes, cfg.batch_size)
    schedule = lr_lambda(cfg.lr_schedule, cfg.warmup_steps, cfg.max_steps, max(1, sampler.num_batches // cfg.grad_accum),
                         int(cfg.get("lr_step_epochs", 1)), float(cfg.get("lr_gamma", 1.0)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    ema = None
    if cfg.ema_decay:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=float(cfg.ema_decay))
    model, optimizer = accelerator.prepare(model, optimizer)

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
    bar = progress_bar(total=cfg.max_steps, initial=step, desc="train", disable=not accelerator.is_main_process, dynamic_ncols=True)
    model.train()
    stop = False
    while step < cfg.max_steps and not stop:
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
            stop = bool(on_step(step, model)) if on_step is not None else False
            if stop or step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
                result.checkpoint = save_checkpoint(accelerator, run_dir, step, model, optimizer, scheduler, ema, cfg.keep_checkpoints)
            if stop or step >= cfg.max_steps:
                break
        sampler.set_position(sampler.epoch + 1, 0)
    bar.close()
    if writer is not None:
        writer.close()
    if ema is not None:
        ema.copy_to(params)
    result.step = step
    return result
