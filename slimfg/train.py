"""The phase-schedule job: one epoch per schedule letter, a fresh optimizer per phase
(a run of the same letter, `ttt`, shares one).

`set_phase` picks what a letter trains; `train()` owns the loop, the checkpoints and the
artifact, on the engine's `train_one_epoch` and `evaluate`. Each epoch is seeded from
(seed, epoch), so `--resume` after a kill replays exactly.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from slimfg import artifact, attention, data, models
from slimfg.card import ModelCard
from slimfg.config import ANCHOR_IMAGES, ATTENTION_PHASES, BN_PHASES, TrainConfig
from slimfg.engine import (
    evaluate,
    init_distributed,
    lr_scheduler,
    make_optimizer,
    resolve_amp,
    shard,
    train_one_epoch,
)
from slimfg.errors import SlimfgError
from slimfg.io import write_text
from slimfg.pruning.graph import example_input
from slimfg.pruning.pruner import check_prunable, drop_plan
from slimfg.pruning.repair import anchor_bn

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
    if phase not in BN_PHASES:
        for bn in bns:
            bn.eval()
    return chosen


# ---------------------------------------------------------------- the run
def initial_model(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, dict | None]:
    """The starting network and its pruning record: a slimfg artifact given as --weights
    (e.g. a pruned model to fine-tune) keeps its architecture and pruning record."""
    if not artifact.is_artifact(cfg.weights):
        return models.build(cfg.arch, num_classes, cfg.weights), None
    model, card = artifact.load(cfg.weights)
    if card.arch != cfg.arch or card.num_classes != num_classes:
        raise SlimfgError(
            f"--weights {cfg.weights} is a {card.arch} model for {card.num_classes} classes, "
            f"not {cfg.arch} for {num_classes}"
        )
    return model, card.pruning


OPTIM = "optimizer."  # checkpoint tensors of the optimizer's state (the rest: the model's)


def _optim_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state (Adam's moments, SGD's momentum) as flat tensors."""
    return {
        f"{OPTIM}{i}.{k}": torch.as_tensor(v)
        for i, st in optimizer.state_dict()["state"].items()
        for k, v in st.items()
    }


def _load_optim(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        i, k = key[len(OPTIM) :].split(".", 1)
        state.setdefault(int(i), {})[k] = v
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def _restore(run: Path, model: nn.Module, cfg: TrainConfig) -> tuple[int, list[dict], dict]:
    """Load the last complete epoch's checkpoint; returns (epochs done, history, the
    optimizer's state tensors)."""
    ckpt = run / "checkpoint.safetensors"
    if not ckpt.is_file():
        raise SlimfgError(f"--resume: no checkpoint in {run}")
    tensors, meta = artifact.read(ckpt)
    saved = {k: v for k, v in meta["config"].items() if k not in ("resume", "workers", "device")}
    mine = {k: v for k, v in asdict(cfg).items() if k in saved}
    diff = sorted(k for k in saved if json.dumps(saved[k]) != json.dumps(mine[k]))
    if diff:
        raise SlimfgError(f"--resume with a different config than the run in {run}: {', '.join(diff)}")
    optim = {k: v for k, v in tensors.items() if k.startswith(OPTIM)}
    models.load_state(model, {k: v for k, v in tensors.items() if not k.startswith(OPTIM)})
    return meta["epoch"], meta["history"], optim


def _jsonl(history: list[dict]) -> str:
    return "".join(json.dumps(h) + "\n" for h in history)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _write_best(run: Path, best: tuple) -> None:
    """The best state so far, so that `--resume` keeps competing against it."""
    meta = {"kind": "best", "val_top1": best[0], "epoch": best[1], "weights": best[3]}
    artifact.write(run / "best.safetensors", best[2], meta)


def _read_best(run: Path) -> tuple | None:
    if not (run / "best.safetensors").is_file():
        return None
    tensors, meta = artifact.read(run / "best.safetensors")
    return meta["val_top1"], meta["epoch"], tensors, meta.get("weights", "trained")


def _average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights and BatchNorm statistics (`--ema`), or None."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train(cfg: TrainConfig) -> Path:
    """Train `cfg.arch` on `cfg.data` with the phase schedule; returns the artifact path."""
    cfg.validate()
    rank, world, device = init_distributed(cfg.device)
    amp = resolve_amp(device, cfg.amp)  # refuses fp16 on CPU before any work
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
    if pruning is None and not cfg.resume:  # refused now rather than after training
        check_prunable(model, example_input(pre["size"]), cfg.arch)
    if cfg.attention != "none":
        head = model.get_submodule(models.classifier_name(model))
        attention.attach(model, cfg.attention, cfg.attention_init, exclude=(head,))
    start, history, optim_state = _restore(run, model, cfg) if cfg.resume else (0, [], {})
    model.to(device)
    teacher = None
    if cfg.distill > 0:
        t_model, t_card = artifact.load(cfg.teacher)
        if t_card.num_classes != len(splits.classes):
            raise SlimfgError(
                f"--teacher {cfg.teacher} predicts {t_card.num_classes} classes, the data has "
                f"{len(splits.classes)}"
            )
        teacher = (t_model.eval().requires_grad_(False).to(device), cfg.distill, cfg.distill_temperature)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    main = rank == 0
    if main:
        run.mkdir(parents=True, exist_ok=True)
        write_text(run / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        if cfg.resume:  # the checkpoint's epochs, in case a kill left metrics one ahead
            write_text(run / "metrics.jsonl", _jsonl(history))
        log.info(
            "train %s on %s: %d classes, %d train / %d val images, %d px, schedule %s, %s",
            cfg.arch, cfg.data, len(splits.classes), len(splits.train), len(splits.val),
            pre["size"], cfg.schedule, device,
        )  # fmt: skip

    val_loader = data.loader(shard(splits.val, rank, world), pre, False, cfg.batch_size, cfg.workers)
    # with --keep-best: (val top-1, epoch, weights, "trained" or "ema") of the best state so far
    best = None
    if cfg.keep_best:
        best = _read_best(run) if cfg.resume else None
        if best is None:  # the starting weights compete too (epoch 0 = before training)
            top1 = evaluate(model, val_loader, device, amp, show=main)["top1"]
            best = (top1, start, _state(model), "trained")
            if main:
                log.info("val top-1 before training: %.4f", best[0])
                _write_best(run, best)
    ema = _average(model, cfg.ema)  # after --resume, it starts again from the restored weights
    per_rank_batch = max(1, cfg.batch_size // world)
    optimizer = None
    for epoch in range(start, len(cfg.schedule)):
        phase = cfg.schedule[epoch]
        seed = cfg.seed * 1000 + epoch
        same_phase = epoch > 0 and cfg.schedule[epoch - 1] == phase
        if cfg.anchor_bn and phase in BN_PHASES and (epoch == 0 or cfg.schedule[epoch - 1] not in BN_PHASES):
            sample = data.sample_batches(splits.train, pre, ANCHOR_IMAGES, cfg.batch_size, cfg.seed)
            anchor_bn(model, [(x.to(device), y) for x, y in sample])  # no_grad inside
            if main:
                log.info(
                    "BatchNorm statistics anchored on %d training images before phase %s",
                    ANCHOR_IMAGES,
                    phase,
                )
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
        # One optimizer per phase: restarting Adam every epoch of a long `t` run (the
        # prune fine-tune) threw the model off at each restart (docs/method.md).
        if optimizer is None or not same_phase:
            optimizer = make_optimizer(params, cfg.optimizer, cfg.lr[phase], cfg.weight_decay)
            if same_phase and optim_state:  # --resume in the middle of a phase
                _load_optim(optimizer, optim_state)
        scheduler = lr_scheduler(
            optimizer, cfg.lr_decay, epoch, len(cfg.schedule), len(train_loader), cfg.warmup
        )
        reg = cfg.reg if phase in ATTENTION_PHASES else "none"
        if reg == "prune" and not set(ATTENTION_PHASES) & set(cfg.schedule[:epoch]):
            reg = "none"  # attention still at its init value: no ranking to plan from yet
        t0 = time.perf_counter()
        targets = None
        if reg == "prune":  # re-planned every epoch from the attention as it stands
            targets = drop_plan(model, cfg.reg_keep, example_input(pre["size"]), cfg.reg_round_to)
            if main:
                log.info(
                    "prune regulariser: %d channels in %d convs (keep %.2f), mean |a| %.3f",
                    sum(len(v) for v in targets.values()), len(targets), cfg.reg_keep,
                    attention.regulariser(model, "prune", targets).item(),
                )  # fmt: skip
        loss, correct, seen, skipped = train_one_epoch(
            net, train_loader, optimizer, device, amp, reg, cfg.reg_lambda, scaler, main, teacher, targets,
            scheduler, (lambda: ema.update_parameters(model)) if ema is not None else None,
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
        candidates = [(record["val_top1"], model, "trained")]
        if ema is not None:
            record["val_top1_ema"] = evaluate(ema.module, val_loader, device, amp, show=main)["top1"]
            candidates.append((record["val_top1_ema"], ema.module, "ema"))
        history.append(record)
        for top1, weights, name in candidates:
            if best is not None and top1 > best[0]:  # a later state must do strictly better
                best = (top1, epoch + 1, _state(weights), name)
                if main:
                    _write_best(run, best)
        if main:
            log.info(
                "epoch %d/%d [%s] loss %.4f train %.3f val top-1 %.3f top-5 %.3f (%.0f img/s, %.0f s)",
                epoch + 1, len(cfg.schedule), phase, record["loss"], record["train_acc"],
                record["val_top1"], record["val_top5"], record["images_per_s"], record["seconds"],
            )  # fmt: skip
            if ema is not None:
                log.info("epoch %d: val top-1 of the weight average %.3f", epoch + 1, record["val_top1_ema"])
            # Metrics first, then the checkpoint, both atomic: once a checkpoint exists its
            # epochs are in metrics.jsonl. A kill between the two leaves metrics one epoch
            # ahead; `--resume` rewrites them from the checkpoint's history.
            write_text(run / "metrics.jsonl", _jsonl(history))
            artifact.write(
                run / "checkpoint.safetensors",
                # the optimizer's state only where the next epoch continues this phase
                {
                    **model.state_dict(),
                    **(_optim_tensors(optimizer) if cfg.schedule[epoch + 1 : epoch + 2] == phase else {}),
                },
                {"kind": "checkpoint", "epoch": epoch + 1, "history": history, "config": asdict(cfg)},
            )
        if cfg.stop_at is not None and max(top1 for top1, _, _ in candidates) >= cfg.stop_at:
            if main and epoch + 1 < len(cfg.schedule):
                log.info("val top-1 reached %.4f: stopping after epoch %d", cfg.stop_at, epoch + 1)
            break

    kept_epoch = history[-1]["epoch"] if history else len(cfg.schedule)
    kept_weights = "trained"
    if best is not None and (best[1] != kept_epoch or best[3] != "trained"):
        models.load_state(model, best[2])
        kept_epoch, kept_weights = best[1], best[3]
        log.info(
            "kept the %s weights of epoch %d (val top-1 %.4f), the best on the val split",
            "averaged" if kept_weights == "ema" else "trained", kept_epoch, best[0],
        )  # fmt: skip
    if main:
        metrics = dict(history[kept_epoch - 1]) if kept_epoch else {"epoch": 0}
        if best is not None:
            metrics["val_top1"] = best[0]  # the kept weights' own (the average's, with --ema)
        card = ModelCard(
            arch=cfg.arch,
            num_classes=len(splits.classes),
            classes=data.class_labels(cfg.data, splits.classes),
            preprocessing=pre,
            pruning=pruning,
            metrics=metrics if history else {},
            train={
                "schedule": cfg.schedule,
                "weights": cfg.weights,
                "history": history,
                "kept_epoch": kept_epoch,
                "kept_weights": kept_weights,
            },
            provenance={"data": str(cfg.data), "data_fingerprint": splits.fingerprint},
        )
        if cfg.attention != "none":
            card.attention = {
                "mode": cfg.attention,
                "scores": {k: [round(v, 6) for v in s.tolist()] for k, s in attention.scores(model).items()},
            }
        attention.fold(model)
        artifact.save(final, model.cpu(), card)
        log.info("wrote %s", final)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final
