"""The whole default path on one dataset, as a user runs it with no flags but the image size:
`slimfg train DATA`, `slimfg prune MODEL --keep 0.6 --data DATA`, `slimfg export` to ONNX
and ONNX Runtime int8. One table: val and test top-1 of the dense, pruned and int8 models,
params and MACs, wall time per stage. Selection (keep-best, int8 calibration) uses train
and val only; test is never looked at before the end.

Writes benchmarks/results/defaults_<dataset>.json after every stage and keeps the models
in runs/defaults/<dataset>/; a stage whose output exists is not run again, and keeps the
seconds an earlier run wrote to the same JSON (rerun with --fresh to start over). `make
results` renders one docs/results.md section per file.

Usage: python benchmarks/defaults.py DATA [--image-size 160] [--keep 0.6] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from _common import RESULTS, machine, write_json

from slimfg import artifact
from slimfg.config import ExportConfig, PruneConfig, TrainConfig
from slimfg.evaluate import evaluate_artifact
from slimfg.exporters.common import accuracy, eval_batches, ort_runner
from slimfg.pipeline import export_artifact, prune_artifact
from slimfg.train import train

log = logging.getLogger("slimfg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="class-folder dataset with train/ val/ test/")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--keep", type=float, default=0.6)
    parser.add_argument("--runs", default="runs/defaults", help="folder for the models")
    parser.add_argument("--fresh", action="store_true", help="delete this dataset's earlier models first")
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke run: the bundled sample, 64 px, 2 epochs"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    train_options = {}
    if args.quick:
        from slimfg.data import SAMPLE

        args.data, args.image_size = str(SAMPLE), 64
        train_options = {"schedule": "fa", "workers": 0}  # and one fine-tune epoch below
    if not args.data:
        parser.error("DATA is required (or --quick)")
    name = "quick" if args.quick else Path(args.data).name
    run = Path(args.runs) / name
    if args.fresh or args.quick:
        shutil.rmtree(run, ignore_errors=True)
    out = Path(args.out or RESULTS / f"defaults_{name}.json")
    has_test = (Path(args.data) / "test").is_dir()
    doc = {"machine": machine(), "data": args.data, "image_size": args.image_size, "keep": args.keep,
           "commands": [f"slimfg train {args.data} --image-size {args.image_size} --out {run}",
                        f"slimfg prune {run}/model.safetensors --keep {args.keep} --data {args.data} "
                        f"--out {run}/pruned.safetensors",
                        f"slimfg export {run}/pruned.safetensors --format onnx-int8 --data {args.data} "
                        f"--calib {args.data}"],
           "seconds": {}, "rows": {}}  # fmt: skip
    if out.is_file() and not args.fresh:  # a stage that runs again drops its earlier seconds
        earlier = json.loads(out.read_text()).get("seconds", {})
        doc["seconds"] = {k: earlier[k] for k in ("train", "prune") if k in earlier}

    def timed(stage: str, fn):
        doc["seconds"].pop(stage, None)
        t0 = time.perf_counter()
        result = fn()
        doc["seconds"][stage] = round(time.perf_counter() - t0, 1)
        write_json(out, doc)
        return result

    def scores(path: Path) -> dict:
        row = {"val_top1": evaluate_artifact(str(path), args.data)["top1"]}
        if has_test:
            row["test_top1"] = evaluate_artifact(str(path), args.data, "test")["top1"]
        return row

    dense = run / "model.safetensors"
    if not dense.is_file():
        cfg = TrainConfig(data=args.data, out=str(run), image_size=args.image_size, **train_options)
        timed("train", lambda: train(cfg))
    card = artifact.read_card(dense)
    doc["train"] = {"schedule": card.train["schedule"], "kept_epoch": card.train.get("kept_epoch")}
    pruned = run / "pruned.safetensors"
    if not pruned.is_file():
        quick = {"finetune": "t", "workers": 0} if args.quick else {}
        cfg = PruneConfig(model=str(dense), out=str(pruned), keep=args.keep, data=args.data, **quick)
        timed("prune", lambda: prune_artifact(cfg))
    report = artifact.read_card(pruned).pruning["report"]
    doc["prune"] = {"refit_val_top1": report["pruned_val_top1"], "kept_epoch": report["kept_epoch"],
                    "stages": report.get("stages")}  # fmt: skip
    for kind, path in (("dense", dense), ("pruned", pruned)):
        doc["rows"][kind] = {"kind": kind, **scores(path), **report["before" if kind == "dense" else "after"]}
    write_json(out, doc)
    int8 = run / "pruned_int8.onnx"
    export = ExportConfig(data=args.data, calib=args.data, min_agreement=0.0)
    timed("export_onnx", lambda: export_artifact(str(pruned), "onnx", str(run / "pruned.onnx"), export))
    timed("export_int8", lambda: export_artifact(str(pruned), "onnx-int8", str(int8), export))
    run_int8, pruned_card = ort_runner(int8), artifact.read_card(pruned)
    doc["rows"]["int8"] = {
        "kind": "pruned, ONNX Runtime int8",
        "val_top1": accuracy(run_int8, eval_batches(pruned_card, args.data))["top1"],
        **({"test_top1": accuracy(run_int8, eval_batches(pruned_card, args.data, split="test"))["top1"]}
           if has_test else {}),
        "macs": doc["rows"]["pruned"]["macs"], "params": doc["rows"]["pruned"]["params"],
    }  # fmt: skip
    write_json(out, doc)
    print(f"{'model':28}{'val top-1':>10}{'test top-1':>11}{'MACs M':>9}{'params M':>9}")
    for row in doc["rows"].values():
        test = f"{row['test_top1']:11.4f}" if "test_top1" in row else f"{'-':>11}"
        print(
            f"{row['kind']:28}{row['val_top1']:10.4f}{test}{row['macs'] / 1e6:9.1f}{row['params'] / 1e6:9.2f}"
        )
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in doc["seconds"].items()))


if __name__ == "__main__":
    main()
