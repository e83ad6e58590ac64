"""ONNX Runtime CPU latency of dense vs pruned models, for several channel roundings.

Pruning leaves odd channel counts unless rounded; CPU kernels (oneDNN / MLAS) are
fastest on multiples of 8 or 16. This script prunes MODEL at --keep with each
--round-to value (no fine-tune: latency does not depend on the weight values), exports
every variant to ONNX, and times all of them against the dense model with paired runs
in one process (the variants alternate every round). Speed-up is dense/pruned latency;
"ideal" is dense MACs / pruned MACs; efficiency = speed-up / ideal.

Variants ending in `_stem` leave the stem stage (convs above 1/4 of the input
resolution) unpruned (`slimfg prune --protect-stem`; off by default).

Usage: python benchmarks/prune_latency.py MODEL [--keep 0.6] [--keep-residual K] [--round-to 1,8,16]
       [--protect-stem 0,1]
       python benchmarks/prune_latency.py --quick
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch

from slimfg import artifact, attention, models
from slimfg.bench import paired_latency
from slimfg.card import ModelCard
from slimfg.exporters import export_onnx
from slimfg.pruning.graph import count, example_input
from slimfg.pruning.pruner import prune


def quick_model(tmp: Path) -> str:
    """lite0 with the bundled ImageNet weights, a 10-class head and attention scores of 1."""
    model = attention.attach(models.build(models.DEFAULT_ARCH, 10, "imagenet"), "out")
    scores = {k: v.tolist() for k, v in attention.scores(model).items()}
    card = ModelCard(arch=models.DEFAULT_ARCH, num_classes=10, classes=[str(i) for i in range(10)],
                     preprocessing=models.preprocessing(models.DEFAULT_ARCH, 96),
                     attention={"mode": "out", "scores": scores})  # fmt: skip
    artifact.save(tmp / "quick.safetensors", attention.fold(model), card)
    return str(tmp / "quick.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--keep", type=float, default=0.6)
    parser.add_argument("--keep-residual", type=float, default=None, help="default: slimfg prune's")
    parser.add_argument("--round-to", default="1,8,16")
    parser.add_argument("--importance", default="attention")
    parser.add_argument("--protect-stem", default="0,1", help="0 = prune the stem stage too, 1 = leave it")
    parser.add_argument("--rounds-b1", type=int, default=60)
    parser.add_argument("--rounds-b32", type=int, default=12)
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: a generated lite0 at 96 px")
    args = parser.parse_args()
    quick_dir = tempfile.TemporaryDirectory()  # lives until the end of main()
    if args.quick:
        args.model = quick_model(Path(quick_dir.name))
        args.rounds_b1, args.rounds_b32, args.round_to = 2, 2, "16"
    elif not args.model:
        parser.error("MODEL is required (or --quick)")
    args.out = args.out or f"benchmarks/results/prune_latency{'_quick' if args.quick else ''}.json"

    dense, card = artifact.load(args.model)
    size = card.size
    x = torch.randn(2, 3, size, size)
    dense_count = count(dense, example_input(size))
    rows = {"dense": {**dense_count, "round_to": None}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"dense": Path(tmp) / "dense.onnx"}
        export_onnx(dense, card, paths["dense"], x)
        for r in [int(v) for v in args.round_to.split(",")]:
            for protect in [bool(int(v)) for v in args.protect_stem.split(",")]:
                model, _ = artifact.load(args.model)
                prune(model, example_input(size), keep=args.keep, importance=args.importance,
                      round_to=r if r > 1 else None, protect_stem=protect, keep_residual=args.keep_residual,
                      scores=(card.attention or {}).get("scores"))  # fmt: skip
                name = f"keep{args.keep}_round{r}" + ("_stem" if protect else "")
                paths[name] = Path(tmp) / f"{name}.onnx"
                export_onnx(model, card, paths[name], x)
                rows[name] = {**count(model, example_input(size)), "round_to": r, "protect_stem": protect}
        b1 = paired_latency(paths, 1, size, rounds=args.rounds_b1)
        b32 = paired_latency(paths, 32, size, rounds=args.rounds_b32)
    for name, row in rows.items():
        row["latency_b1_ms"] = round(b1[name]["median_s"] * 1e3, 2)
        row["latency_b32_ms"] = round(b32[name]["median_s"] * 1e3, 1)
        row["macs_ratio"] = round(row["macs"] / dense_count["macs"], 4)
        row["speedup_b32"] = round(b32["dense"]["median_s"] / b32[name]["median_s"], 3)
        row["speedup_b1"] = round(b1["dense"]["median_s"] / b1[name]["median_s"], 3)
        row["efficiency_b32"] = round(row["speedup_b32"] * row["macs_ratio"], 3)
    result = {
        "model": args.model,
        "image_size": size,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, onnxruntime CPU",
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    header = ("variant", "MACs x", "b1 ms", "b32 ms", "speedup32", "ideal", "eff", "b1 x")
    print(f"{header[0]:22}" + "".join(f"{h:>10}" for h in header[1:]))
    for name, row in rows.items():
        values = (row["macs_ratio"], row["latency_b1_ms"], row["latency_b32_ms"], row["speedup_b32"],
                  1 / row["macs_ratio"], row["efficiency_b32"], row["speedup_b1"])  # fmt: skip
        print(f"{name:22}" + "".join(f"{v:10.3f}" for v in values))


if __name__ == "__main__":
    main()
