"""Dense vs pruned x runtime formats: CPU latency at batch 1 and 32, paired runs.

Every model is exported to every format (ONNX fp32, ONNX Runtime int8, OpenVINO fp32),
verified, and timed in one process with the variants alternating every round
(`slimfg.bench`). Reports medians and p90, the speed-up of each variant over the dense
fp32 ONNX model next to the ideal speed-up (the MACs ratio), the int8 speed-up over the
same model in fp32, and top-1 on DATA's val split.

Usage: python benchmarks/latency.py DENSE PRUNED [--data DIR] [--rounds 20]
       python benchmarks/latency.py --quick      (CI smoke run: lite0 at 96 px, 2 rounds,
                                                  ONNX, int8 and OpenVINO only)
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from slimfg import artifact, models
from slimfg.bench import available_formats, bench
from slimfg.card import ModelCard
from slimfg.io import write_text
from slimfg.pruning.graph import example_input
from slimfg.pruning.pruner import prune

RESULTS = Path(__file__).parent / "results"


def quick_models(tmp: Path) -> list[str]:
    """A dense lite0 (bundled ImageNet weights, 10-class head, 96 px) and its keep-0.6 prune."""
    paths = []
    for name in ("dense", "pruned"):
        model = models.build("tf_efficientnet_lite0", 10, "imagenet")
        card = ModelCard(arch="tf_efficientnet_lite0", num_classes=10, classes=[str(i) for i in range(10)],
                         preprocessing=models.preprocessing("tf_efficientnet_lite0", 96))  # fmt: skip
        if name == "pruned":
            card.pruning = prune(model, example_input(96), keep=0.6, importance="magnitude").record()
        paths.append(str(tmp / f"{name}.safetensors"))
        artifact.save(paths[-1], model, card)
    return paths


def summarise(rows: list[dict]) -> list[dict]:
    """Speed-ups against the first model's fp32 ONNX row, ideal = its MACs / this MACs."""
    base = next(r for r in rows if r["format"] == "onnx")
    fp32 = {r["model"]: r for r in rows if r["format"] == "onnx"}
    for r in rows:
        r["ideal_speedup"] = base["macs"] / r["macs"]
        for b in (1, 32):
            r[f"speedup_b{b}"] = base[f"b{b}_p50_s"] / r[f"b{b}_p50_s"]
            r[f"vs_fp32_b{b}"] = fp32[r["model"]][f"b{b}_p50_s"] / r[f"b{b}_p50_s"]
        r["efficiency_b32"] = r["speedup_b32"] / r["ideal_speedup"]
        if "top1" in r:
            r["top1_drop_vs_fp32"] = fp32[r["model"]]["top1"] - r["top1"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="slimfg artifacts; the first is the dense reference")
    parser.add_argument("--data", help="dataset for top-1 (val) and int8 calibration (train)")
    parser.add_argument(
        "--formats", default=None, help="comma-separated (default: all available; --quick: no ExecuTorch)"
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="CI smoke run on generated models")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("slimfg").setLevel(logging.INFO)

    with tempfile.TemporaryDirectory() as tmp:
        models = quick_models(Path(tmp)) if args.quick else args.models
        if len(models) < 1:
            parser.error("give the dense model (and pruned ones), or --quick")
        rounds = 2 if args.quick else args.rounds
        # --quick leaves out ExecuTorch (3 of its 4.5 minutes here): tests/test_executorch.py
        # exports, verifies and benches it already.
        formats = (
            args.formats.split(",")
            if args.formats
            else [f for f in available_formats() if not (args.quick and f.startswith("executorch"))]
        )
        rows = summarise(bench(models, formats, args.data, str(Path(tmp) / "bench"), rounds))
    out = Path(args.out or (RESULTS / ("latency_quick.json" if args.quick else "latency.json")))
    result = {
        "models": models if not args.quick else "quick",
        "formats": formats,
        "rounds": rounds,
        "rows": rows,
    }
    write_text(out, json.dumps(result, indent=2) + "\n")
    header = ("variant", "b1 ms", "b32 ms", "b32 p90", "speedup", "ideal", "eff", "int8 x", "top-1")
    print(f"{header[0]:34}" + "".join(f"{h:>9}" for h in header[1:]))
    for r in rows:
        values = [r["b1_p50_s"] * 1e3, r["b32_p50_s"] * 1e3, r["b32_p90_s"] * 1e3, r["speedup_b32"],
                  r["ideal_speedup"], r["efficiency_b32"], r["vs_fp32_b32"], r.get("top1", -1)]  # fmt: skip
        print(f"{r['name'][:33]:34}" + "".join(f"{v:9.3f}" for v in values))


if __name__ == "__main__":
    main()
