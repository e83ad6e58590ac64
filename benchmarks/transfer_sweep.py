"""Seeded lr/recipe sweep of the transfer methods, several runs at a time (made for a GPU).

transfer.py runs each method once; on 15 images per class one run's val top-1 moves by
about a point with the seed, which is the size of the gap it measures. This script runs
a grid of (method, lr, lr decay, crop scale, image size) over several seeds and reports
mean and spread of the final val top-1, so the recipe each method gets in transfer.py is
picked on more than one draw. Same data subset, epochs and `slimfg train` code path as
transfer.py; val only (the test split is left for transfer.py's final numbers).

Each run is its own process (`--procs` at a time, each with `--workers` loader
processes); on one H100 with 16 cores, 7 at a time took about 3 minutes per 30 runs.
On the 2-core CPU a run takes 4-15 minutes: use --only to pick rows.

Usage: python benchmarks/transfer_sweep.py DATA [--only NAME,NAME] [--seeds 0,1,2] [--procs 7]
       [--image-size 128] [--amp none] [--out benchmarks/results/transfer_sweep.json] [--append]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, machine, subset, write_json

COS = {"lr_decay": "cosine", "crop_scale": 0.35}
# name -> TrainConfig fields; lr in `slimfg train --lr` syntax; 5 epochs. "cos" = cosine lr decay,
# "c35" = random crops of at least 35% of the image (the default is 8%).
GRID = {
    "head cos c35": {"schedule": "fffff", "attention": "none", **COS},
    "attention a=1e-2 cos c35": {"schedule": "faaaa", "attention": "out", "lr": "a=1e-2", **COS},
    "joint j=2e-3 cos c35": {"schedule": "fjjjj", "attention": "out", "lr": "j=2e-3", **COS},
    "joint j=3e-3 cos c35": {"schedule": "fjjjj", "attention": "out", "lr": "j=3e-3", **COS},
    "joint j=5e-3 cos c35": {"schedule": "fjjjj", "attention": "out", "lr": "j=5e-3", **COS},
    "joint j=1e-2 cos c35": {"schedule": "fjjjj", "attention": "out", "lr": "j=1e-2", **COS},
    "joint j=2e-2 cos c35": {"schedule": "fjjjj", "attention": "out", "lr": "j=2e-2", **COS},
    "joint j=1e-2 f=1e-2 cos c35": {"schedule": "fjjjj", "attention": "out", "lr": "f=1e-2,j=1e-2", **COS},
    "joint from epoch 1 j=1e-2 cos c35": {"schedule": "jjjjj", "attention": "out", "lr": "j=1e-2", **COS},
    "joint j=1e-2": {"schedule": "fjjjj", "attention": "out", "lr": "j=1e-2"},
    "joint j=3e-3 c35": {"schedule": "fjjjj", "attention": "out", "lr": "j=3e-3", "crop_scale": 0.35},
    "joint j=3e-3 cos": {"schedule": "fjjjj", "attention": "out", "lr": "j=3e-3", "lr_decay": "cosine"},
    "joint j=3e-3 cos c50": {
        "schedule": "fjjjj",
        "attention": "out",
        "lr": "j=3e-3",
        "lr_decay": "cosine",
        "crop_scale": 0.5,
    },  # fmt: skip
    "full t=1e-4": {"schedule": "ftttt", "attention": "none", "lr": "t=1e-4"},
    "full t=3e-4 (slimfg default)": {"schedule": "ftttt", "attention": "none"},
    "full t=1e-3": {"schedule": "ftttt", "attention": "none", "lr": "t=1e-3"},
    "full t=1e-4 cos c35": {"schedule": "ftttt", "attention": "none", "lr": "t=1e-4", **COS},
    "full t=3e-4 cos c35": {"schedule": "ftttt", "attention": "none", **COS},
    "full t=5e-4 cos c35": {"schedule": "ftttt", "attention": "none", "lr": "t=5e-4", **COS},
    "full t=1e-3 cos c35": {"schedule": "ftttt", "attention": "none", "lr": "t=1e-3", **COS},
    "full t=2e-3 cos c35": {"schedule": "ftttt", "attention": "none", "lr": "t=2e-3", **COS},
    "full t=1e-3 cos": {"schedule": "ftttt", "attention": "none", "lr": "t=1e-3", "lr_decay": "cosine"},
}


def run_one(spec: dict) -> dict:
    """One `slimfg train` run in this process; returns its val top-1 per epoch."""
    from slimfg import artifact
    from slimfg.config import TrainConfig, parse_lr
    from slimfg.train import train

    fields = {k: v for k, v in spec["config"].items() if k != "lr"}
    if "lr" in spec["config"]:
        fields["lr"] = parse_lr(spec["config"]["lr"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg = TrainConfig(data=spec["data"], out=f"{tmp}/run", seed=spec["seed"], workers=spec["workers"],
                          amp=spec["amp"], image_size=spec["image_size"], **fields)  # fmt: skip
        history = artifact.read_meta(train(cfg))["train"]["history"]
    name = spec["name"] if spec["image_size"] == 128 else f"{spec['image_size']}px {spec['name']}"
    return {"name": name, "seed": spec["seed"], "val_top1": [h["val_top1"] for h in history],
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def summary(runs: list[dict]) -> dict[str, dict]:
    by_name: dict[str, list[float]] = {}
    for r in runs:
        by_name.setdefault(r["name"], []).append(r["val_top1"][-1])
    rows = {name: {"mean": statistics.mean(v), "std": statistics.pstdev(v), "n": len(v), "final": v}
            for name, v in by_name.items()}  # fmt: skip
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["mean"]))


def main() -> None:
    if sys.argv[1:2] == ["--one"]:  # a child process: one run, its result as JSON on stdout
        print(json.dumps(run_one(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="class-folder dataset with train/ val/")
    parser.add_argument("--per-class", type=int, default=15, help="train images per class (0 = all)")
    parser.add_argument("--only", default="", help="comma-separated grid names to run (default: all)")
    parser.add_argument("--image-size", type=int, default=128, help="rows run at another size are named so")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--procs", type=int, default=1, help="runs at a time")
    parser.add_argument("--workers", type=int, default=3, help="data-loader processes per run")
    parser.add_argument("--amp", default="none", help="none (fp32, as on CPU), bf16 or fp16 on CUDA")
    parser.add_argument("--out", default=str(RESULTS / "transfer_sweep.json"))
    parser.add_argument("--append", action="store_true", help="add these runs to those already in --out")
    parser.add_argument("--epochs", type=int, default=5, help="cut every schedule to this many epochs")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: bundled sample, 2 rows, 2 epochs")
    args = parser.parse_args()
    if args.quick:
        from slimfg.data import SAMPLE

        args.data, args.per_class, args.image_size, args.epochs, args.seeds = str(SAMPLE), 4, 64, 2, "0"
        args.only = args.only or "head cos c35,joint j=5e-3 cos c35"
        args.procs, args.workers = 2, 0
    if not args.data:
        parser.error("DATA is required (or --quick)")
    names = args.only.split(",") if args.only else list(GRID)
    if unknown := [n for n in names if n not in GRID]:
        parser.error(f"--only names {unknown}; the grid has: {', '.join(GRID)}")
    runs: list[dict] = json.loads(Path(args.out).read_text())["runs"] if args.append else []
    with tempfile.TemporaryDirectory() as tmp:
        data = str(subset(args.data, Path(tmp) / "data", args.per_class or None))
        common = {"data": data, "workers": args.workers, "amp": args.amp, "image_size": args.image_size}
        specs = [{"name": n, "config": {**GRID[n], "schedule": GRID[n]["schedule"][: args.epochs]},
                  "seed": int(s), **common}
                 for s in args.seeds.split(",") for n in names]  # fmt: skip
        pending, running, done = list(specs), [], len(runs)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
        while pending or running:
            for p in [p for p in running if p.poll() is not None]:
                running.remove(p)
                out, _ = p.communicate()
                if p.returncode:
                    sys.exit(f"a run failed (exit {p.returncode}); its output is above")
                runs.append(r := json.loads(out.strip().splitlines()[-1]))
                print(f"[{len(runs) - done}/{len(specs)}] {r['name']} seed {r['seed']}: val top-1 "
                      f"{r['val_top1'][-1]:.4f} ({r['seconds']:.0f} s)", flush=True)  # fmt: skip
            if pending and len(running) < args.procs:
                cmd = [sys.executable, __file__, "--one", json.dumps(pending.pop(0))]
                running.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env))
            else:
                time.sleep(0.5)
    doc = {"machine": machine(), "data": args.data, "per_class": args.per_class, "epochs": args.epochs,
           "amp": args.amp, "grid": {n: GRID[n] for n in GRID if any(r["name"].endswith(n) for r in runs)},
           "summary": summary(runs), "runs": runs}  # fmt: skip
    write_json(args.out, doc)
    print(f"{'method':40}{'mean':>8}{'std':>7}{'n':>3}")
    for name, r in doc["summary"].items():
        print(f"{name:40}{100 * r['mean']:8.1f}{100 * r['std']:7.1f}{r['n']:3}")


if __name__ == "__main__":
    main()
