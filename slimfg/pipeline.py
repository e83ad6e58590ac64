"""Path-based jobs the CLI runs, built from the stages: prune + repair + fine-tune a saved
model (`prune_artifact`), export one (`export_artifact`), and the offline `demo`.

Each job reads artifacts and dataset folders, calls the object-level stages
(`pruning.pruner.prune`, `pruning.repair`, `train.train`, `exporters.export`) and
writes artifacts atomically.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from slimfg import artifact, data
from slimfg.bench import available_formats, paired_latency, table
from slimfg.bench import bench as run_bench
from slimfg.card import ModelCard
from slimfg.config import (
    ATTENTION_PHASES,
    LATER_STAGE_LR,
    MIN_MACS,
    STAGE_CALIB_IMAGES,
    STAGE_MACS,
    STAGED_REPAIR_DROP,
    ExportConfig,
    PruneConfig,
    TrainConfig,
    default_finetune,
    default_global,
)
from slimfg.errors import SlimfgError
from slimfg.evaluate import evaluate_model
from slimfg.exporters import EXPORTERS, SUFFIX, check_format, uses_int8
from slimfg.exporters.common import ExportResult, check_writable, inputs_from_data
from slimfg.exporters.onnx import export_onnx
from slimfg.io import temp_dir
from slimfg.pruning.graph import count, example_input, weights_bytes
from slimfg.pruning.importance import GRADIENT_IMPORTANCES, card_scores
from slimfg.pruning.pruner import prune, pruned_copy
from slimfg.pruning.repair import anchor_bn, bn_input_stats, match_bn, recalibrate_bn, refit
from slimfg.search import keep_for, latency_cost, macs_cost, write_frontier
from slimfg.train import train

log = logging.getLogger("slimfg")


def ort_latency(dense: nn.Module, pruned: nn.Module, card: ModelCard) -> dict:
    """ONNX Runtime CPU latency (median seconds) at batch 1 and 32, paired runs."""
    x = torch.randn(2, 3, card.size, card.size)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"dense": Path(tmp) / "dense.onnx", "pruned": Path(tmp) / "pruned.onnx"}
        export_onnx(dense, replace(card, pruning=None), paths["dense"], x)
        export_onnx(pruned, card, paths["pruned"], x)
        return {
            "latency_b1_s": paired_latency(paths, 1, card.size, rounds=30),
            "latency_b32_s": paired_latency(paths, 32, card.size, rounds=6),
        }


def prune_artifact(cfg: PruneConfig) -> dict:
    """Prune the artifact `cfg.model`, repair it, optionally fine-tune it on `cfg.data`,
    save it to `cfg.out`; returns the report (before / after / pruned_val_top1).

    `cfg.importance` None picks `attention-taylor` when there is data to take gradients
    on, else `attention` (docs/method.md). A budget instead of `cfg.keep`: `target_macs` /
    `target_latency` solve the keep first; `max_drop` prunes in stages (`_progressive`).
    """
    cfg.validate()  # before the slow evaluation below
    out = Path(cfg.out)
    importance = cfg.importance or ("attention-taylor" if cfg.data else "attention")
    if (cfg.stages or 1) > 1 and importance == "attention":
        raise SlimfgError(f"--stages {cfg.stages} needs a ranking the pruned model can recompute "
                          "(attention-taylor, magnitude, ...), not --importance attention")  # fmt: skip
    if cfg.global_pruning is None:
        cfg = replace(cfg, global_pruning=default_global(importance, cfg.target_latency))
    model, card = artifact.load(cfg.model)
    if card.pruning:
        raise SlimfgError(f"{cfg.model} is already pruned; prune the unpruned model instead")
    x0 = example_input(card.size)
    if importance == "attention":
        card_scores(model, card)  # one-line error for a model trained without attention
    splits = data.load(cfg.data) if cfg.data else None
    train_split, has_test = (splits.train, splits.test is not None) if splits else (None, False)
    if splits and cfg.finetune is None:  # the default budget: about FINETUNE_STEPS steps
        finetune = "t" if cfg.quick else default_finetune(len(train_split), cfg.batch_size)
        cfg = replace(cfg, finetune=finetune)
        log.info("fine-tune: %d epochs of %d images (--finetune to change)", len(finetune), len(train_split))

    def measure(m: nn.Module, m_card: ModelCard) -> dict:
        """Size, and accuracy on val (what fine-tuning selects on) and test (what it does not)."""
        result = {**count(m, x0), "weights_bytes": weights_bytes(m)}
        if cfg.data:
            val = evaluate_model(m, m_card, cfg.data)
            result["val_top1"], result["val_images"] = val["top1"], val["images"]
        if has_test:
            result["test_top1"] = evaluate_model(m, m_card, cfg.data, "test")["top1"]
        return result

    before = measure(model, card)
    search, stages = None, None
    if cfg.max_drop is not None:
        model, card, search = _progressive(model, card, cfg, before, train_split, importance)
    else:
        keep = cfg.keep
        if cfg.target_macs is not None or cfg.target_latency is not None:
            keep, search = _solve_keep(model, card, cfg, before)
        model, card, stages = _cut_in_stages(model, card, cfg, keep, train_split, importance, before)
    pruned_val_top1 = None
    # A --max-drop stage has recovered already: a second recovery of the chosen stage added
    # nothing on cub50 and flowers102 and took a third of the run (docs/method.md).
    recover = bool(cfg.schedule) and cfg.max_drop is None
    if cfg.data and recover:  # what fine-tuning starts from
        pruned_val_top1 = evaluate_model(model, card, cfg.data)["top1"]
        log.info("val top-1 after pruning, before fine-tuning: %.4f", pruned_val_top1)
    if recover:
        final = _later_stage(cfg) if stages and stages["count"] > 1 else cfg
        model, card = _finetune(model, card, final, out.with_name(out.stem + "_finetune"))
    after = measure(model, card)
    if cfg.latency:
        dense, _ = artifact.load(cfg.model)
        for key, value in ort_latency(dense, model, card).items():
            before[key], after[key] = value["dense"]["median_s"], value["pruned"]["median_s"]
    report = {
        "before": before,
        "after": after,
        "pruned_val_top1": pruned_val_top1,
        "finetune": cfg.schedule,
        "kept_epoch": card.train.get("kept_epoch") if cfg.schedule else None,
        "kept_weights": card.train.get("kept_weights") if cfg.schedule else None,
    }
    if search is not None:
        report["search"] = search
    if stages is not None:
        report["stages"] = stages
    card.pruning = {**card.pruning, "report": report}
    artifact.save(out, model, card)
    if cfg.max_drop is not None:
        final = {"val_top1": after["val_top1"], "test_top1": after.get("test_top1"),
                 "dense_test_top1": before.get("test_top1"),
                 "macs_ratio": after["macs"] / before["macs"]}  # fmt: skip
        write_frontier(out.with_name(out.stem + "_frontier"), {**search, "final": final, "complete": True})
    for key in ("params", "macs"):
        log.info("%s: %d -> %d (%.3fx)", key, before[key], after[key], after[key] / before[key])
    if cfg.data:
        log.info("val top-1: %.4f -> %.4f", before["val_top1"], after["val_top1"])
    return report


def _cut(model: nn.Module, card: ModelCard, cfg: PruneConfig, keep: float, train_split, importance: str,
         calib_images: int, macs_budget: float | None = None) -> ModelCard:  # fmt: skip
    """Prune `model` in place to `keep` of its channels and repair it (`cfg.bn_stats`) on
    `calib_images` of `train_split`; returns its card with the pruning record, appended to
    the card's own for a later stage of progressive pruning (replay runs them in order).
    `macs_budget`: what a --global cut fits in (`prune`), from `_budget`."""
    x0 = example_input(card.size)
    dense_stats, dense_model, calib = None, None, None
    gradients = importance in GRADIENT_IMPORTANCES
    if train_split is not None and keep < 1.0 and (gradients or cfg.bn_stats in ("match", "refit")):
        calib = data.sample_batches(train_split, card.preprocessing, calib_images)
        if cfg.bn_stats == "match":
            dense_stats = bn_input_stats(model, data.batch_images(calib))
        elif cfg.bn_stats == "refit":
            dense_model = copy.deepcopy(model)
    t0 = time.perf_counter()
    result = prune(
        model, x0, keep=keep, importance=importance, calib=calib if gradients else None,
        keep_residual=cfg.keep_residual, round_to=cfg.round_to, global_pruning=cfg.global_pruning,
        protect_stem=cfg.protect_stem, scores=(card.attention or {}).get("scores"), macs_budget=macs_budget,
    )  # fmt: skip
    record = result.record()
    if card.pruning:
        stages = card.pruning.get("stages", [card.pruning["keep"]])
        record.update(history=card.pruning["history"] + record["history"], stages=[*stages, keep])
    card = replace(card, pruning=record)
    log.info("pruned to keep %.3f with %s importance in %.1f s", keep, importance, time.perf_counter() - t0)
    if dense_stats is not None:
        match_bn(model, dense_stats, result.kept, data.batch_images(calib))
    elif dense_model is not None:
        t0 = time.perf_counter()
        done = refit(model, dense_model, calib, result.kept)
        anchor_bn(model, calib)  # so that fine-tuning's batch statistics agree with the refit
        log.info("refitted %d layers in %.1f s", len(done), time.perf_counter() - t0)
    elif train_split is not None and cfg.bn_stats == "recal" and cfg.bn_batches and keep < 1.0:
        loader = data.loader(train_split, card.preprocessing, True, 32, 2)
        recalibrate_bn(model, itertools.islice(loader, cfg.bn_batches))
    return card


def default_stages(repair_drop: float) -> int:
    """How many stages the default prune cuts in, from what one cut's repair loses of val
    top-1: 1 within STAGED_REPAIR_DROP, else 2. (Three stages, one per 5 points, measured no
    better than two on cub50 and took longer: docs/method.md.)"""
    return 1 if repair_drop <= STAGED_REPAIR_DROP else 2


def _cut_in_stages(model: nn.Module, card: ModelCard, cfg: PruneConfig, keep: float, train_split,
                   importance: str, before: dict) -> tuple[nn.Module, ModelCard, dict | None]:  # fmt: skip
    """Cut `model` to `keep` and repair it, in one stage or several (`cfg.stages`; None:
    `default_stages` of what the one cut's repair loses of val top-1). N stages cut to the
    MACs the one cut aims at (`--target-macs`, else the per-layer cut's at `keep`, which a
    --global cut spends) to the powers 1/N, 2/N, ..., 1: each is repaired, and all but the
    last fine-tuned here (the final fine-tune follows in `prune_artifact`); stages after the
    first at LATER_STAGE_LR of the lr. Returns the model, its card and a record of the
    stages (None when there was no choice to make: no data, no fine-tune, a
    --target-latency, or the card's attention scores as the ranking, which a later cut of
    the pruned model cannot use)."""
    can_stage = cfg.data and cfg.schedule and cfg.target_latency is None and importance != "attention"
    if not can_stage or cfg.stages == 1:
        card = _cut(model, card, cfg, keep, train_split, importance, cfg.calib_images,
                    _budget(cfg, before, cfg.target_macs))  # fmt: skip
        return model, card, None
    x0, cost = example_input(card.size), macs_cost(before["macs"], card.size)
    aim = cfg.target_macs
    if aim is None:
        aim = cost(pruned_copy(model, x0, keep, **_shape_options(cfg)))
    one = copy.deepcopy(model)
    one_card = _cut(one, card, cfg, keep, train_split, importance, cfg.calib_images,
                    _budget(cfg, before, aim))  # fmt: skip
    macs = cost(one)
    repaired = evaluate_model(one, one_card, cfg.data)["top1"]
    one_cut = {"keep": keep, "macs_ratio": macs, "repaired_val_top1": repaired}
    drop = before["val_top1"] - repaired
    count_ = cfg.stages or default_stages(drop)
    record = {"one_cut": one_cut, "macs_target": aim, "repair_drop": drop,
              "max_repair_drop": STAGED_REPAIR_DROP, "count": count_}  # fmt: skip
    if count_ == 1:
        log.info("one cut: its repair loses %.1f points of val top-1 (stages above %.0f)", 100 * drop,
                 100 * STAGED_REPAIR_DROP)  # fmt: skip
        return one, one_card, record
    del one
    log.info("%d stages: one cut's repair loses %.1f points of val top-1 (%.3fx MACs)", count_, 100 * drop,
             macs)  # fmt: skip
    rows = []
    for stage in range(1, count_ + 1):
        ratio = aim ** (stage / count_)
        stage_keep, _ = keep_for(model, x0, cost, ratio, **_shape_options(cfg))
        card = _cut(model, card, cfg, stage_keep, train_split, importance, cfg.calib_images,
                    _budget(cfg, before, ratio))  # fmt: skip
        row = {"keep": stage_keep, "macs_ratio": cost(model),
               "repaired_val_top1": evaluate_model(model, card, cfg.data)["top1"]}  # fmt: skip
        if stage < count_:
            with temp_dir(Path(cfg.out)) as tmp:  # the run of a stage before the last is not kept
                stage_cfg = cfg if stage == 1 else _later_stage(cfg)
                model, card = _finetune(model, card, stage_cfg, Path(tmp) / f"stage{stage}")
            row.update(val_top1=evaluate_model(model, card, cfg.data)["top1"],
                       kept_epoch=card.train.get("kept_epoch"))  # fmt: skip
            log.info("stage %d: %.3fx MACs, val top-1 %.4f", stage, row["macs_ratio"], row["val_top1"])
        rows.append(row)
    return model, card, {**record, "later_stage_lr": LATER_STAGE_LR, "stages": rows}


def _budget(cfg: PruneConfig, before: dict, ratio: float | None) -> float | None:
    """The MACs a --global cut to `ratio` of the dense model fits in (None: the per-layer
    cut's at the keep). Without it every cut to a target would land at the per-layer cut's
    MACs, which rounding to `round_to` channels leaves below the target, and a second stage
    below the first's shortfall: cub50's two-stage default ended at 0.41-0.43x where the
    per-layer cut is 0.445x."""
    return ratio * before["macs"] if cfg.global_pruning and ratio is not None else None


def _later_stage(cfg: PruneConfig) -> PruneConfig:
    """The fine-tune of a stage after the first: LATER_STAGE_LR of every lr."""
    return replace(cfg, lr={phase: lr * LATER_STAGE_LR for phase, lr in cfg.lr.items()})


def _shape_options(cfg: PruneConfig) -> dict:
    """The prune options that, with keep, set the channel counts (what `keep_for` bisects on)."""
    return dict(keep_residual=cfg.keep_residual, round_to=cfg.round_to, protect_stem=cfg.protect_stem)


def _solve_keep(model: nn.Module, card: ModelCard, cfg: PruneConfig, before: dict) -> tuple[float, dict]:
    """The keep that meets --target-macs or --target-latency, and how it was found."""
    if cfg.target_macs is not None:
        target, what = cfg.target_macs, "macs_ratio"
        cost = macs_cost(before["macs"], card.size)
    else:
        target, what = cfg.target_latency / 1e3, "latency_s"
        cost = latency_cost(card, cfg.runtime, cfg.batch, cfg.data)
    t0 = time.perf_counter()
    keep, probes = keep_for(model, example_input(card.size), cost, target, **_shape_options(cfg))
    log.info("keep %.4f meets %s <= %.4g (%d probes, %.0f s)", keep, what, target, len(probes),
             time.perf_counter() - t0)  # fmt: skip
    search = {"target": {what: target}, "keep": keep, "probes": probes}
    if what == "latency_s":
        search.update(runtime=cfg.runtime, batch=cfg.batch)
    return keep, search


def _progressive(model: nn.Module, card: ModelCard, cfg: PruneConfig, before: dict, train_split,
                 importance: str) -> tuple[nn.Module, ModelCard, dict]:  # fmt: skip
    """--max-drop: cut to STAGE_MACS of the last stage's MACs, repair, fine-tune (distilled
    from the unpruned model) until val top-1 is back within `max_drop` points of the
    unpruned model or `cfg.finetune` (the default budget) is spent; stage after stage while
    the stages end within budget, down to MIN_MACS. Returns the last stage within budget
    (the first stage if none is) and the frontier, which is also written next to --out
    after every stage (`complete` false until the end)."""
    x0, floor = example_input(card.size), before["val_top1"] - cfg.max_drop / 100
    calib_images = min(cfg.calib_images, 64 if cfg.quick else STAGE_CALIB_IMAGES)
    macs_ratio = macs_cost(before["macs"], card.size)
    timing = latency_cost(card, cfg.runtime, cfg.batch, cfg.data)
    dense = {"stage": 0, "keep": 1.0, "macs_ratio": 1.0, "params": before["params"],
             "val_top1": before["val_top1"], "latency_s": timing(model)}  # fmt: skip
    frontier = {"max_drop": cfg.max_drop, "floor_val_top1": floor, "runtime": cfg.runtime,
                "batch": cfg.batch, "stage_finetune": cfg.schedule, "chosen": None,
                "complete": False, "points": [dense]}  # fmt: skip
    # The budget is held on val: how finely val can tell top-1 apart bounds what it means.
    n, p = before["val_images"], before["val_top1"]
    se = math.sqrt(p * (1 - p) / max(n, 1))
    frontier["val_images"], frontier["val_top1_se"] = n, se
    if cfg.max_drop / 100 < 2 * se:
        log.warning(
            "val holds %d images: a top-1 measured on it has a standard error of %.1f points, so a "
            "%.1f-point budget is chosen on noise of its size; test may land further off",
            n, 100 * se, cfg.max_drop,
        )  # fmt: skip
    path = Path(cfg.out).with_name(Path(cfg.out).stem + "_frontier")
    chosen = (model, card)
    with temp_dir(Path(cfg.out)) as tmp:
        for stage in itertools.count(1):
            target = frontier["points"][frontier["chosen"] or 0]["macs_ratio"] * STAGE_MACS
            if target < MIN_MACS:
                break
            t0 = time.perf_counter()
            try:
                # 5 halvings (to 1/32): the stage target is a step size, not a budget
                keep, _ = keep_for(chosen[0], x0, macs_ratio, target, steps=5, **_shape_options(cfg))
            except SlimfgError:
                break  # the channel rounding cannot cut this model any further
            trial = copy.deepcopy(chosen[0])
            trial_card = _cut(trial, chosen[1], cfg, keep, train_split, importance, calib_images,
                              _budget(cfg, before, target))  # fmt: skip
            repaired = evaluate_model(trial, trial_card, cfg.data)["top1"]
            trial, trial_card = _finetune(trial, trial_card, cfg, Path(tmp) / f"stage{stage}", floor)
            val = evaluate_model(trial, trial_card, cfg.data)["top1"]
            counts = count(trial, x0)
            frontier["points"].append(
                {"stage": stage, "keep": keep, "macs_ratio": counts["macs"] / before["macs"],
                 "params": counts["params"], "repaired_val_top1": repaired, "val_top1": val,
                 "latency_s": timing(trial), "seconds": round(time.perf_counter() - t0, 1)}
            )  # fmt: skip
            log.info("stage %d: keep %.3f, %.3fx MACs, val top-1 %.4f (floor %.4f)", stage, keep,
                     frontier["points"][-1]["macs_ratio"], val, floor)  # fmt: skip
            within = val >= floor
            if within or frontier["chosen"] is None:  # the first stage is kept even over budget
                chosen, frontier["chosen"] = (trial, trial_card), stage
            write_frontier(path, frontier)
            if not within:
                break
    if frontier["points"][frontier["chosen"] or 0]["val_top1"] < floor:
        log.warning("no stage stayed within %.1f points of val top-1; kept the first", cfg.max_drop)
    return chosen[0], chosen[1], frontier


def _finetune(model: nn.Module, card: ModelCard, cfg: PruneConfig, run: Path,
              stop_at: float | None = None) -> tuple[nn.Module, ModelCard]:  # fmt: skip
    """Fine-tune the pruned model with the phase trainer (its run folder: `run`), ending
    early once val top-1 reaches `stop_at`."""
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with temp_dir(out) as tmp:
        pruned = Path(tmp) / "pruned.safetensors"
        artifact.save(pruned, model, card)
        mode = "out" if set(ATTENTION_PHASES) & set(cfg.schedule) else "none"
        teacher = cfg.teacher or (str(cfg.model) if cfg.distill else None)
        train_cfg = TrainConfig(
            data=cfg.data, out=str(run), arch=card.arch, weights=str(pruned), schedule=cfg.schedule,
            attention=mode, image_size=card.size, batch_size=cfg.batch_size, workers=cfg.workers,
            seed=cfg.seed, lr=cfg.lr, lr_decay=cfg.lr_decay, warmup=cfg.warmup, crop_scale=cfg.crop_scale,
            distill=cfg.distill, teacher=teacher, keep_best=cfg.keep_best, optimizer=cfg.optimizer,
            ema=cfg.ema, stop_at=stop_at,
        )  # fmt: skip
        return artifact.load(train(train_cfg))


def export_artifact(model_path: str, fmt: str, out: str, cfg: ExportConfig | None = None) -> ExportResult:
    """Export the slimfg artifact at `model_path` to `fmt` at `out`, verified on real
    images of `cfg.data` (the bundled sample by default); writes nothing on failure."""
    cfg = cfg or ExportConfig()
    check_format(fmt, cfg, bool(cfg.calib))
    int8 = uses_int8(fmt, cfg)
    out_path = check_writable(out)
    model, card = artifact.load(model_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result = EXPORTERS[fmt](model, card, out_path, inputs_from_data(card, cfg, int8), cfg)
    log.info("wrote %s (%s, %.1f MB)", result.path, fmt, result.bytes / 1e6)
    return result


def default_export_path(model_path: str, fmt: str, int8: bool = False) -> str:
    """Next to the model: .onnx, _int8.onnx, .engine, .xml, .pte, _int8.pte..."""
    int8 = int8 or fmt.endswith("-int8")
    return str(Path(model_path).with_suffix("")) + ("_int8" if int8 else "") + SUFFIX[fmt]


DEMO_MARK = ".slimfg-demo"


def demo_folder(run: Path) -> Path:
    """A folder for the demo to write: new or empty (then marked as the demo's), or one an
    earlier demo made (emptied: every file in it is the demo's). Any other folder is refused,
    never deleted: it may hold a real run."""
    if run.exists() and not run.is_dir():
        raise SlimfgError(f"--out {run} is a file, not a folder")
    if run.is_dir() and any(run.iterdir()):
        if not (run / DEMO_MARK).is_file():
            raise SlimfgError(
                f"--out {run} is not empty and not an earlier demo's folder; choose another --out"
            )
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    (run / DEMO_MARK).write_text("made by `slimfg demo`, which empties this folder when it runs again\n")
    return run


def demo(out: str = "runs/demo", schedule: str = "faaa", image_size: int = 128, keep: float = 0.6,
         rounds: int = 10, echo=print) -> None:  # fmt: skip
    """Offline demo on the bundled Flowers sample with the bundled lite0 ImageNet weights:
    train with attention -> prune + fine-tune -> export ONNX and int8 -> bench."""
    run = demo_folder(Path(out))
    sample = str(data.SAMPLE)
    echo(f"[1/4] train lite0 ({schedule}) on the bundled sample: {sample}")
    dense = train(TrainConfig(data=sample, out=out, schedule=schedule, image_size=image_size))
    echo(f"[2/4] prune to keep {keep}, repair and fine-tune (the default: distilled from the dense model)")
    pruned = run / "pruned.safetensors"
    # The default fine-tune (15 epochs of the 240 images, 120 steps). Three epochs were
    # within 2.5 points of the dense model with 2 threads and lost 3.75 with 1 (docs/method.md).
    prune_artifact(PruneConfig(model=str(dense), out=str(pruned), keep=keep, data=sample, latency=False))
    echo("[3/4] export the pruned model to ONNX and ONNX Runtime int8, verified")
    for fmt, path in (("onnx", run / "pruned.onnx"), ("onnx-int8", run / "pruned_int8.onnx")):
        # min_agreement 0: the demo reports int8's agreement with fp32 instead of failing on it
        export_cfg = ExportConfig(data=sample, calib=sample, min_agreement=0.0)
        v = export_artifact(str(pruned), fmt, str(path), export_cfg).verification
        echo(f"      {path}: top-1 agreement {v['top1_agreement']:.0%} with {v['reference']}")
    echo("[4/4] bench dense vs pruned x formats (top-1 on the sample's val split)")
    formats = [f for f in ("onnx", "onnx-int8", "openvino") if f in available_formats()]
    rows = run_bench([str(dense), str(pruned)], formats, sample, str(run / "bench"), rounds)
    echo(table(rows))
    echo(f"demo: wrote {dense}, {pruned}, ONNX files and {run / 'bench'}/bench.json + bench.png")
