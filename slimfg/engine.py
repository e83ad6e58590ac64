"""The training engine, free of any job: optimizers and lr schedules, devices and mixed
precision, data-parallel setup, one training epoch and evaluation.

Read top to bottom like torchvision's reference script; `train.py` (the phase-schedule
job) and `evaluate.py` build on it.
"""

from __future__ import annotations

import contextlib
import math
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Subset
from tqdm import tqdm

from slimfg import attention
from slimfg.errors import SlimfgError, stoppable


# ---------------------------------------------------------------- optimizers
def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def lr_scheduler(optimizer, decay: str, epoch: int, epochs: int, steps: int, warmup: float = 0.0):
    """The lr factor for each batch of `epoch`, placed on one curve over the whole run
    (the scheduler is rebuilt every epoch): a linear warm-up over the first `warmup`
    fraction of the run's batches, then `cosine` falls from 1 to 0 at the run's end and
    `none` stays at 1. Returns None when the factor is always 1."""
    if decay == "none" and not warmup:
        return None
    total = epochs * max(steps, 1)

    def factor(step: int) -> float:
        t = (epoch * max(steps, 1) + step) / total  # position in the run, 0 -> 1
        ramp = min(1.0, (t + 1 / total) / warmup) if warmup else 1.0
        return ramp * (0.5 * (1 + math.cos(math.pi * t)) if decay == "cosine" else 1.0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------- devices
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SlimfgError(f"--device {name} asked for but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SlimfgError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None


def autocast(device: torch.device, amp: str):
    """Mixed precision: `amp` as `resolve_amp` returns it ("none", "bf16" or "fp16")."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def resolve_amp(device: torch.device, amp: str) -> str:
    """`--amp` on `device`: auto is bf16 on CUDA and fp32 on CPU; bf16 on CPU is opt-in
    (about 1.4x faster training where the CPU has bf16 instructions); fp16 is CUDA only."""
    if amp == "auto":
        return "bf16" if device.type == "cuda" else "none"
    if amp == "fp16" and device.type != "cuda":
        raise SlimfgError("--amp fp16 needs a CUDA device; use --amp bf16 on CPU")
    return amp


def init_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); gloo on CPU, nccl on GPU when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, resolve_device(device_name)
    # One GPU per process, or every process on CPU: a backend must be the same on all ranks.
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    gpus = torch.cuda.device_count()
    if device_name.startswith("cuda") and gpus < per_node:
        raise SlimfgError(f"--device {device_name} with {per_node} processes per node needs as many GPUs; "
                          f"{gpus} found")  # fmt: skip
    cuda = device_name in ("auto", "cuda") and gpus >= per_node
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    return dist.get_rank(), world, torch.device(f"cuda:{local}" if cuda else "cpu")


# ---------------------------------------------------------------- epochs
def distill_loss(logits, teacher_logits, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target loss: T^2 * KL(teacher || student) at temperature T."""
    t = temperature
    return nn.functional.kl_div(
        nn.functional.log_softmax(logits.float() / t, 1),
        nn.functional.log_softmax(teacher_logits.float() / t, 1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def train_one_epoch(model, loader, optimizer, device, amp, reg, reg_lambda, scaler, show, teacher=None,
                    targets=None, scheduler=None, after_step=None):  # fmt: skip
    """One pass over `loader`; returns loss, accuracy, images seen, images skipped.

    `teacher` is (model, alpha, temperature) for knowledge distillation, or None;
    `targets` the channels the `prune` regulariser pulls to zero; `scheduler`, if
    given, steps after every optimizer step, and so does `after_step()` (the weight average).
    """
    inner = model.module if hasattr(model, "module") else model
    total_loss, correct, seen, skipped = 0.0, 0, 0, 0
    for x, y, n_bad in stoppable(tqdm(loader, desc="train", leave=False, disable=None if show else True)):
        skipped += n_bad
        if x is None:
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            if teacher is not None:
                t_model, alpha, temperature = teacher
                with torch.no_grad():
                    t_logits = t_model(x)
                loss = (1 - alpha) * loss + alpha * distill_loss(logits, t_logits, temperature)
        if reg != "none":
            loss = loss + reg_lambda * attention.regulariser(inner, reg, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return total_loss, correct, seen, skipped


@torch.no_grad()
def evaluate(model, loader, device, amp="none", num_classes=None, show=True) -> dict:
    """Top-1/top-5 accuracy, mean loss and per-class hits; all-reduced under torchrun."""
    model.eval()
    n_cls = num_classes or 0
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top1, top5, count
    per_class = torch.zeros(2, max(n_cls, 1), dtype=torch.float64)  # hits, counts
    skipped = 0
    for x, y, n_bad in stoppable(tqdm(loader, desc="eval", leave=False, disable=None if show else True)):
        skipped += n_bad
        if x is None:
            continue
        x, y = x.to(device), y.to(device)
        with autocast(device, amp):
            logits = model(x).float()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit1 = (top5[:, 0] == y).cpu()
        sums += torch.tensor(
            [
                nn.functional.cross_entropy(logits, y, reduction="sum").item(),
                hit1.sum().item(),
                (top5 == y[:, None]).any(1).sum().item(),
                len(y),
            ],
            dtype=torch.float64,
        )
        if n_cls:
            per_class[0].index_add_(0, y.cpu(), hit1.double())
            per_class[1].index_add_(0, y.cpu(), torch.ones(len(y), dtype=torch.float64))
    if dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(per_class)
    n = max(sums[3].item(), 1)
    result = {
        "top1": sums[1].item() / n,
        "top5": sums[2].item() / n,
        "loss": sums[0].item() / n,
        "images": int(sums[3].item()),
        "skipped": skipped,
    }
    if n_cls:
        result["per_class"] = (per_class[0] / per_class[1].clamp(min=1)).tolist()
    return result


def shard(dataset, rank: int, world: int):
    """This rank's share of an evaluation set (no padding, so counts stay exact)."""
    return dataset if world == 1 else Subset(dataset, list(range(rank, len(dataset), world)))
