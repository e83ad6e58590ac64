"""Phase-schedule trainer: one epoch per schedule letter (f/a/b/t), fresh optimizer each.

Read top to bottom like torchvision's reference script: `set_phase`, `train_one_epoch`,
`evaluate`, then `train()` which owns the loop, the checkpoints and the artifact.
Each epoch is seeded from (seed, epoch), so `--resume` after a kill replays exactly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Subset
from tqdm import tqdm

from slimfg import artifact, attention, data, models
from slimfg.config import ATTENTION_PHASES, TrainConfig
from slimfg.errors import SlimfgError, check_stop

log = logging.getLogger("slimfg")


# ---------------------------------------------------------------- phases
def set_phase(model: nn.Module, phase: str) -> list[nn.Parameter]:
    """Freeze all but the phase's parameters; BN runs in eval mode outside `b`/`t`.

    With BN in eval mode the attention scale (applied to the kernel, before BN) is not
    normalised away by batch statistics; in train mode it would be.
    """
    head = model.get_submodule(models.classifier_name(model))
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    chosen = {
        "f": list(head.parameters()),
        "a": attention.parameters(model),
        "b": [p for bn in bns for p in (bn.weight, bn.bias) if p is not None],
        "t": list(model.parameters()),
        "s": attention.parameters(model) + [bn.bias for bn in bns if bn.bias is not None],
        "j": attention.parameters(model) + list(head.parameters()),
    }[phase]
    ids = {id(p) for p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    model.train()
    if phase not in "bt":
        for bn in bns:
            bn.eval()
    return chosen


def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def lr_scheduler(optimizer, decay: str, epoch: int, epochs: int, steps: int, warmup: float = 0.0):
    """The lr factor for each batch of `epoch`, placed on one curve over the whole run
    (every epoch has a fresh optimizer): a linear warm-up over the first `warmup`
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
    """Mixed precision on CUDA only (bf16 by default); CPU trains in fp32."""
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


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
                    targets=None, scheduler=None):  # fmt: skip
    """One pass over `loader`; returns loss, accuracy, images seen, images skipped.

    `teacher` is (model, alpha, temperature) for knowledge distillation, or None;
    `targets` the channels the `prune` regulariser pulls to zero; `scheduler`, if
    given, steps after every optimizer step.
    """
    inner = model.module if hasattr(model, "module") else model
    total_loss, correct, seen, skipped = 0.0, 0, 0, 0
    for x, y, n_bad in tqdm(loader, desc="train", leave=False, disable=None if show else True):
        check_stop()
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
    for x, y, n_bad in tqdm(loader, desc="eval", leave=False, disable=None if show else True):
        check_stop()
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


def class_labels(root: str, classes: list[str]) -> list[str]:
    """Human-readable names from `class_names.json` next to the splits, if present."""
    names_file = Path(root).expanduser() / "class_names.json"
    if names_file.is_file():
        names = json.loads(names_file.read_text())
        return [names.get(c, c) for c in classes]
    return classes


# ---------------------------------------------------------------- the run
def initial_model(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, dict | None]:
    """The starting network and its pruning record: a slimfg artifact given as --weights
    (e.g. a pruned model to fine-tune) keeps its architecture and pruning record."""
    if not artifact.is_artifact(cfg.weights):
        return models.build(cfg.arch, num_classes, cfg.weights), None
    model, meta = artifact.load(cfg.weights)
    if meta["arch"] != cfg.arch or meta["num_classes"] != num_classes:
        raise SlimfgError(
            f"--weights {cfg.weights} is a {meta['arch']} model for {meta['num_classes']} classes, "
            f"not {cfg.arch} for {num_classes}"
        )
    return model, meta.get("pruning")


def _restore(run: Path, model: nn.Module, cfg: TrainConfig) -> tuple[int, list[dict]]:
    """Load the last complete epoch's checkpoint; returns (epochs done, history)."""
    ckpt = run / "checkpoint.safetensors"
    if not ckpt.is_file():
        raise SlimfgError(f"--resume: no checkpoint in {run}")
    tensors, meta = artifact.read(ckpt)
    saved = {k: v for k, v in meta["config"].items() if k not in ("resume", "workers", "device")}
    mine = {k: v for k, v in asdict(cfg).items() if k in saved}
    diff = sorted(k for k in saved if json.dumps(saved[k]) != json.dumps(mine[k]))
    if diff:
        raise SlimfgError(f"--resume with a different config than the run in {run}: {', '.join(diff)}")
    model.load_state_dict(tensors)
    return meta["epoch"], meta["history"]


def train(cfg: TrainConfig) -> Path:
    """Train `cfg.arch` on `cfg.data` with the phase schedule; returns the artifact path."""
    cfg.validate()
    rank, world, device = init_distributed(cfg.device)
    run = Path(cfg.out)
    final = run / "model.safetensors"
    if not cfg.resume and (final.exists() or (run / "checkpoint.safetensors").exists()):
        raise SlimfgError(f"{run} already holds a run; pass --resume or choose another --out")

    splits = data.load(cfg.data, cfg.val_split, cfg.seed, cfg.download)
    if splits.train is None:
        raise SlimfgError(f"{cfg.data} has no training split")
    pre = models.preprocessing(cfg.arch, cfg.image_size)
    torch.manual_seed(cfg.seed)
    model, pruning = initial_model(cfg, len(splits.classes))
    if cfg.attention != "none":
        attention.attach(model, cfg.attention, cfg.attention_init)
    start, history = _restore(run, model, cfg) if cfg.resume else (0, [])
    model.to(device)
    teacher = None
    if cfg.distill > 0:
        t_model, t_meta = artifact.load(cfg.teacher)
        if t_meta["num_classes"] != len(splits.classes):
            raise SlimfgError(
                f"--teacher {cfg.teacher} predicts {t_meta['num_classes']} classes, the data has "
                f"{len(splits.classes)}"
            )
        teacher = (t_model.eval().requires_grad_(False).to(device), cfg.distill, cfg.distill_temperature)
    amp = "none" if device.type != "cuda" else ("bf16" if cfg.amp == "auto" else cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    main = rank == 0
    if main:
        run.mkdir(parents=True, exist_ok=True)
        artifact.write_text(run / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        log.info(
            "train %s on %s: %d classes, %d train / %d val images, %d px, schedule %s, %s",
            cfg.arch, cfg.data, len(splits.classes), len(splits.train), len(splits.val),
            pre["size"], cfg.schedule, device,
        )  # fmt: skip

    val_loader = data.loader(shard(splits.val, rank, world), pre, False, cfg.batch_size, cfg.workers)
    per_rank_batch = max(1, cfg.batch_size // world)
    for epoch in range(start, len(cfg.schedule)):
        phase = cfg.schedule[epoch]
        seed = cfg.seed * 1000 + epoch
        torch.manual_seed(seed)
        params = set_phase(model, phase)
        net = model
        if world > 1:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        sampler = None
        if world > 1:
            sampler = torch.utils.data.DistributedSampler(splits.train, world, rank, shuffle=True, seed=seed)
        train_loader = data.loader(
            splits.train, pre, True, per_rank_batch, cfg.workers,
            generator=torch.Generator().manual_seed(seed), sampler=sampler, crop_scale=cfg.crop_scale,
        )  # fmt: skip
        optimizer = make_optimizer(params, cfg.optimizer, cfg.lr[phase], cfg.weight_decay)
        scheduler = lr_scheduler(
            optimizer, cfg.lr_decay, epoch, len(cfg.schedule), len(train_loader), cfg.warmup
        )
        reg = cfg.reg if phase in ATTENTION_PHASES else "none"
        if reg == "prune" and not set(ATTENTION_PHASES) & set(cfg.schedule[:epoch]):
            reg = "none"  # attention still at its init value: no ranking to plan from yet
        t0 = time.perf_counter()
        targets = None
        if reg == "prune":  # re-planned every epoch from the attention as it stands
            from slimfg.prune import drop_plan

            targets = drop_plan(model, cfg.reg_keep, pre["size"], cfg.reg_round_to)
            if main:
                log.info(
                    "prune regulariser: %d channels in %d convs (keep %.2f), mean |a| %.3f",
                    sum(len(v) for v in targets.values()), len(targets), cfg.reg_keep,
                    attention.regulariser(model, "prune", targets).item(),
                )  # fmt: skip
        loss, correct, seen, skipped = train_one_epoch(
            net, train_loader, optimizer, device, amp, reg, cfg.reg_lambda, scaler, main, teacher, targets,
            scheduler,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        if world > 1:
            totals = torch.tensor([loss, correct, seen, skipped], dtype=torch.float64)
            dist.all_reduce(totals)
            loss, correct, seen, skipped = totals.tolist()
        del net
        val = evaluate(model, val_loader, device, amp, show=main)
        record = {
            "epoch": epoch + 1,
            "phase": phase,
            "loss": loss / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "images_per_s": seen / seconds,
            "seconds": round(time.perf_counter() - t0, 2),
            "trainable_params": sum(p.numel() for p in params),
            "lr": cfg.lr[phase],
            "skipped_images": int(skipped + val["skipped"]),
        }
        history.append(record)
        if main:
            log.info(
                "epoch %d/%d [%s] loss %.4f train %.3f val top-1 %.3f top-5 %.3f (%.0f img/s, %.0f s)",
                epoch + 1, len(cfg.schedule), phase, record["loss"], record["train_acc"],
                record["val_top1"], record["val_top5"], record["images_per_s"], record["seconds"],
            )  # fmt: skip
            # Checkpoint first, then the metrics derived from it: both atomic, so a kill
            # at any point leaves the last complete epoch and matching metrics.
            artifact.write(
                run / "checkpoint.safetensors",
                model.state_dict(),
                {"kind": "checkpoint", "epoch": epoch + 1, "history": history, "config": asdict(cfg)},
            )
            artifact.write_text(run / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))

    if main:
        meta = {
            "arch": cfg.arch,
            "num_classes": len(splits.classes),
            "classes": class_labels(cfg.data, splits.classes),
            "preprocessing": pre,
            "attention": None,
            "pruning": pruning,
            "metrics": history[-1] if history else {},
            "train": {"schedule": cfg.schedule, "weights": cfg.weights, "history": history},
            "provenance": {"data": str(cfg.data), "data_fingerprint": splits.fingerprint},
        }
        if cfg.attention != "none":
            meta["attention"] = {
                "mode": cfg.attention,
                "scores": {k: [round(v, 6) for v in s.tolist()] for k, s in attention.scores(model).items()},
            }
        attention.fold(model)
        artifact.save(final, model.cpu(), meta)
        log.info("wrote %s", final)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final
