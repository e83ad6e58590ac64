"""Transfer learning methods at one epoch budget: head-only, full fine-tune, BN-only,
attention `out`, attention `full`, the authors' schedule (arXiv 1906.04950), and
attention trained with the head (phase `j`).

All run through `slimfg train` with lite0 and the bundled ImageNet weights, the same
image size, batch, seed and training subset; every method spends the same number of
epochs (the authors' 10-letter schedule `fafbaabafa` is cut to the budget). Records val
top-1/top-5 per epoch, wall time, trainable params, and test top-1 at the end.
Writes benchmarks/results/transfer.json and transfer.png (accuracy vs epoch).

Default run (~25 min on 2 CPU cores): 15 train images per class, all val/test images,
128 px, 5 epochs; each phase at the lr the seeded sweep (transfer_sweep.py) found best,
cosine lr decay, random crops of at least 35% of the image.

Usage: python benchmarks/transfer.py DATA [--per-class 15] [--image-size 128] [--epochs 5]
       [--methods head,full,bn,attention,attention-full,authors,attention-joint] [--lr a=1e-2]
       [--lr-decay cosine] [--crop-scale 0.35] [--keep-best] [--quick]
       (a custom method is NAME=SCHEDULE/ATTENTION, e.g. --methods ab=fabab/out)
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from _common import RESULTS, line_plot, machine, subset, write_json

from slimfg import artifact
from slimfg.config import TrainConfig, parse_lr
from slimfg.evaluate import evaluate_artifact
from slimfg.train import train

AUTHORS = "fafbaabafa"
HEAD_PHASES = "tj"  # phases that train the classifier head along with the backbone
# Each phase's lr at its best in a 3-seed sweep on this budget (docs/results.md,
# transfer_sweep_h100.json), with cosine decay and random crops of at least 35% area.
TUNED_LR = "f=3e-3,a=1e-2,b=1e-3,t=2e-3,s=1e-2,j=5e-3"
log = logging.getLogger("slimfg")


def methods(epochs: int) -> dict[str, dict]:
    rest = epochs - 1
    return {
        "head": {"schedule": "f" * epochs, "attention": "none"},
        "full": {"schedule": "f" + "t" * rest, "attention": "none"},
        "bn": {"schedule": "f" + "b" * rest, "attention": "none"},
        "attention": {"schedule": "f" + "a" * rest, "attention": "out"},
        "attention-full": {"schedule": "f" + "a" * rest, "attention": "full"},
        "authors": {"schedule": AUTHORS[:epochs], "attention": "out"},
        # attention and the head trained together (phase j) after one head epoch
        "attention-joint": {"schedule": "f" + "j" * rest, "attention": "out"},
    }


def method(name: str, epochs: int) -> dict:
    """A named method, or a custom one written NAME=SCHEDULE/ATTENTION (e.g. ab=fabab/out)."""
    if "=" in name:
        schedule, mode = name.split("=", 1)[1].split("/")
        return {"schedule": schedule, "attention": mode}
    return methods(epochs)[name]


def plot(results: dict, path: Path) -> None:
    lines = {f"{name} ({r['schedule']})": [(h["epoch"], h["val_top1"]) for h in r["history"]]
             for name, r in results.items()}  # fmt: skip
    line_plot(lines, "epoch", "val top-1", "transfer methods at the same epoch budget", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="class-folder dataset with train/ val/ [test/]")
    parser.add_argument("--per-class", type=int, default=15, help="train images per class (0 = all)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--methods", default=",".join(methods(5)))
    parser.add_argument("--lr", default=TUNED_LR, help="per-phase lr (slimfg train --lr syntax)")
    parser.add_argument("--lr-decay", default="cosine", help="none or cosine (see slimfg train --help)")
    parser.add_argument("--crop-scale", type=float, default=0.35, help="smallest random-crop area")
    parser.add_argument("--keep-best", action="store_true", help="end each run with its best epoch by val")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: bundled sample, 2 epochs, 64 px")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("slimfg").setLevel(logging.INFO)
    if args.quick:
        from slimfg.data import SAMPLE

        args.data, args.per_class, args.image_size, args.epochs = str(SAMPLE), 4, 64, 2
    if not args.data:
        parser.error("DATA is required (or --quick)")
    out = Path(args.out or (RESULTS / ("transfer_quick.json" if args.quick else "transfer.json")))
    lr = parse_lr(args.lr)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(args.data, Path(tmp) / "data", args.per_class or None)
        for name in args.methods.split(","):
            spec = method(name, args.epochs)
            name = name.split("=")[0]
            t0 = time.perf_counter()
            cfg = TrainConfig(data=str(data), out=str(Path(tmp) / name), image_size=args.image_size,
                              lr=lr, lr_decay=args.lr_decay, crop_scale=args.crop_scale,
                              keep_best=args.keep_best, **spec)  # fmt: skip
            model = train(cfg)
            meta = artifact.read_meta(model)
            history = meta["train"]["history"]
            has_test = (Path(args.data) / "test").is_dir()
            test = evaluate_artifact(str(model), str(data), "test")["top1"] if has_test else None
            results[name] = {
                **spec,
                "history": history,
                "final_val_top1": history[-1]["val_top1"],
                "kept_epoch": meta["train"].get("kept_epoch"),
                "test_top1": test,
                # params each phase trains; the backbone-side phases (a, b, t) are what a method adds
                "params_by_phase": {h["phase"]: h["trainable_params"] for h in history},
                "seconds": round(time.perf_counter() - t0, 1),
            }
            # what a method trains besides the head: phases t and j train the head too
            phases = results[name]["params_by_phase"]
            results[name]["trainable_params"] = max(
                [v - (phases["f"] if k in HEAD_PHASES and "f" in phases else 0)
                 for k, v in phases.items() if k != "f"] or [phases["f"]]
            )  # fmt: skip
            logging.getLogger("slimfg").info(
                "%s: val top-1 %.4f, test %s", name, history[-1]["val_top1"], test
            )
    doc = {"machine": machine(), "data": args.data, "per_class": args.per_class,
           "image_size": args.image_size, "epochs": args.epochs, "lr": lr,
           "lr_decay": args.lr_decay, "crop_scale": args.crop_scale, "keep_best": args.keep_best,
           "results": results}  # fmt: skip
    write_json(out, doc)
    plot(results, out.with_suffix(".png"))
    print(f"{'method':16}{'schedule':>12}{'trains':>12}{'val top-1':>11}{'test top-1':>12}{'seconds':>9}")
    for name, r in results.items():
        test = f"{r['test_top1']:12.4f}" if r["test_top1"] is not None else f"{'-':>12}"
        print(f"{name:16}{r['schedule']:>12}{r['trainable_params']:>12,}{r['final_val_top1']:11.4f}{test}"
              f"{r['seconds']:9.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
