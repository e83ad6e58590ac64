"""Accuracy vs MACs when pruning: keep fraction x channel importance, same fine-tune budget.

Prunes MODEL (a slimfg artifact trained with attention) at every --keeps value with
every --importances criterion, repairs it (--bn-stats: refits the convs on
--calib-images training images by default, as slimfg prune does), fine-tunes each with the same schedule on
the same training subset (distilled from MODEL), and evaluates on the full val split.
keep 1.0 fine-tunes the unpruned model with the same budget, the fair reference.
Writes benchmarks/results/prune_curve.json and prune_curve.png.

Default run (~42 min on 2 CPU cores: 21 prune + fine-tune rows of ~2 min): 15 train
images per class, fine-tune `t`. The four rankings the first curve used
(`--importances attention,magnitude,bn,random`) take ~34 min.

Usage: python benchmarks/prune_curve.py MODEL DATA [--keeps 1.0,0.8,0.6,0.4,0.3]
       [--importances attention,attention-taylor,magnitude,bn,random] [--finetune t] [--lr t=1e-3]
       [--lr-decay none] [--crop-scale 0.08] [--bn-stats refit] [--calib-images 512] [--per-class 15]
       [--quick]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from _common import RESULTS, line_plot, machine, subset, write_json

from slimfg.config import DEFAULT_LR, PruneConfig, TrainConfig, parse_lr
from slimfg.pipeline import prune_artifact
from slimfg.pruning.pruner import residual_keep
from slimfg.train import train

log = logging.getLogger("slimfg")


def quick_model(tmp: Path) -> tuple[str, str]:
    """A lite0 trained `fa` for one epoch each on the bundled sample at 64 px, and the sample."""
    from slimfg.data import SAMPLE

    cfg = TrainConfig(data=str(SAMPLE), out=str(tmp / "quick"), schedule="fa", image_size=64, workers=0)
    return str(train(cfg)), str(SAMPLE)


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy vs MACs, one line per importance; the keep-1.0 reference starts every line."""
    lines = {
        imp: sorted((r["macs_ratio"], r["val_top1"]) for r in rows if r["importance"] in (imp, "none"))
        for imp in dict.fromkeys(r["importance"] for r in rows if r["importance"] != "none")
    }
    line_plot(lines, "MACs (fraction of the unpruned model)", "val top-1 after fine-tuning",
              "pruning: accuracy vs compute, same fine-tune budget", path)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("data", nargs="?")
    parser.add_argument("--keeps", default="1.0,0.8,0.6,0.4,0.3")
    parser.add_argument("--importances", default="attention,attention-taylor,magnitude,bn,random")
    parser.add_argument("--finetune", default="t")
    parser.add_argument("--lr", default="t=1e-3")
    parser.add_argument("--lr-decay", default="none", help="none or cosine (see slimfg prune --help)")
    parser.add_argument("--crop-scale", type=float, default=0.08, help="smallest random-crop area")
    parser.add_argument("--distill", type=float, default=0.9)
    parser.add_argument("--bn-stats", default="refit", help="repair after pruning (see slimfg prune --help)")
    parser.add_argument("--calib-images", type=int, default=512, help="images for --bn-stats refit/match")
    parser.add_argument(
        "--keep-residual",
        type=float,
        default=None,
        help="share kept in residual groups (default: slimfg prune's, (1 + keep) / 2)",
    )
    parser.add_argument("--per-class", type=int, default=15, help="fine-tune images per class (0 = all)")
    parser.add_argument("--quick", action="store_true", help="CI smoke run on a tiny model and the sample")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    if not args.quick and not (args.model and args.data):
        parser.error("MODEL and DATA are required (or --quick)")
    out = Path(args.out or (RESULTS / ("prune_curve_quick.json" if args.quick else "prune_curve.json")))
    lr = {**DEFAULT_LR, **parse_lr(args.lr)}

    rows = []
    doc = {"machine": machine(), "model": args.model if not args.quick else "quick", "data": args.data,
           "finetune": args.finetune, "lr": lr, "distill": args.distill, "per_class": args.per_class,
           "lr_decay": args.lr_decay, "crop_scale": args.crop_scale, "bn_stats": args.bn_stats,
           "calib_images": args.calib_images, "rows": rows}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.quick:
            args.model, args.data = quick_model(tmp)
            args.keeps, args.importances, args.per_class = "1.0,0.6", "attention,magnitude", 0
            doc["model"], doc["data"] = "quick", args.data
        data = subset(args.data, tmp / "data", args.per_class or None)
        options = {"lr": lr, "lr_decay": args.lr_decay, "crop_scale": args.crop_scale,
                   "distill": args.distill, "workers": 0 if args.quick else 2}  # fmt: skip
        for keep in [float(k) for k in args.keeps.split(",")]:
            for importance in args.importances.split(",") if keep < 1 else ["none"]:
                t0 = time.perf_counter()
                cfg = PruneConfig(
                    model=args.model,
                    out=str(tmp / f"{keep}_{importance}.safetensors"),
                    keep=keep,
                    importance="attention" if importance == "none" else importance,
                    data=str(data),
                    finetune=args.finetune,
                    latency=False,
                    bn_stats=args.bn_stats,
                    calib_images=args.calib_images,
                    stages=1,  # the curve: one cut per keep
                    keep_residual=args.keep_residual,
                    **options,
                )
                report = prune_artifact(cfg)
                before, after = report["before"], report["after"]
                rows.append({
                    "keep": keep, "keep_residual": residual_keep(keep, args.keep_residual),
                    "importance": importance, "macs": after["macs"], "params": after["params"],
                    "macs_ratio": after["macs"] / before["macs"],
                    "params_ratio": after["params"] / before["params"],
                    "val_top1_unpruned": before["val_top1"],
                    "val_top1_no_finetune": report.get("pruned_val_top1"),
                    "val_top1": after["val_top1"], "seconds": round(time.perf_counter() - t0, 1),
                })  # fmt: skip
                log.info("keep %.2f %s: val top-1 %.4f (MACs %.3fx)", keep, importance, after["val_top1"],
                         rows[-1]["macs_ratio"])  # fmt: skip
                write_json(out, doc)  # after every row: a stopped run keeps what it measured
    plot(rows, out.with_suffix(".png"))
    print(f"{'keep':>6} {'importance':17}{'MACs x':>8}{'params x':>10}{'no f-t':>9}{'val top-1':>11}")
    for r in rows:
        no_ft = f"{r['val_top1_no_finetune']:9.4f}" if r["val_top1_no_finetune"] is not None else f"{'-':>9}"
        print(f"{r['keep']:6.2f} {r['importance']:17}{r['macs_ratio']:8.3f}{r['params_ratio']:10.3f}{no_ft}"
              f"{r['val_top1']:11.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
