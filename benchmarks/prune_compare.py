"""Same keep, same fine-tune budget: attention importance vs torch-pruning's criteria.

Prunes MODEL (a slimfg artifact trained with attention) with each importance, fine-tunes
each with the same schedule on DATA, and prints val top-1, params and MACs per criterion.
A criterion whose pruned model already exists in --out-dir is read back, not rerun.

Usage: python benchmarks/prune_compare.py MODEL DATA [--keep 0.6] [--finetune ttt]
       [--importances attention,magnitude,bn] [--out-dir runs/prune_compare]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from slimfg import artifact
from slimfg.config import parse_lr
from slimfg.prune import prune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--keep", type=float, default=0.6)
    parser.add_argument("--finetune", default="ttt")
    parser.add_argument("--lr", default="t=3e-4")
    parser.add_argument("--importances", default="attention,magnitude,bn")
    parser.add_argument("--out-dir", default="runs/prune_compare")
    parser.add_argument("--out", default="benchmarks/results/prune_compare.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = {}
    for importance in args.importances.split(","):
        t0 = time.perf_counter()
        path = Path(args.out_dir) / f"{importance}.safetensors"
        if path.exists():
            report = artifact.read_meta(path)["pruning"]["report"]
            rows[importance] = {
                **report["after"],
                "before_val_top1": report["before"]["val_top1"],
                "reused": True,
            }
            continue
        report = prune(
            args.model,
            str(path),
            keep=args.keep,
            importance=importance,
            data_dir=args.data,
            finetune=args.finetune,
            train_options={"lr": parse_lr(args.lr)},
            latency=False,
        )
        rows[importance] = {**report["after"], "before_val_top1": report["before"]["val_top1"],
                            "seconds": round(time.perf_counter() - t0)}  # fmt: skip
    result = {"model": args.model, "keep": args.keep, "finetune": args.finetune, "lr": args.lr, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'importance':12}{'val top-1':>10}{'dense':>8}{'params':>10}{'MACs':>12}")
    for name, row in rows.items():
        print(
            f"{name:12}{row['val_top1']:10.4f}{row['before_val_top1']:8.4f}{row['params']:10,d}{row['macs']:12,d}"
        )


if __name__ == "__main__":
    main()
