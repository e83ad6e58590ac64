"""Where ONNX Runtime spends a CNN's time, by kind of op, against the MACs of each op.

Exports every MODEL (a slimfg .safetensors; an .onnx file is used as it is) and runs it
under ONNX Runtime's profiler on random input at --batch. Kernel time is summed over
depthwise convolutions, other convolutions and everything else, next to their MACs. A
least-squares fit over every conv node, time = a * MACs + b * activation elements (its
input plus its output), gives b / a: how many MACs one activation element costs on this
CPU. MACs alone do not price a depthwise conv, which reads and writes a whole feature map
for 9 MACs per element; that is why a pruned model whose MACs sit in early, wide maps gets
less speed-up than its MACs ratio promises (docs/method.md, "Where the latency goes").

ONNX Runtime's CPU provider may run convs in a blocked layout (NCHWc) whose channel
counts are padded to the SIMD width, so MACs here are counted from the shapes the kernels
ran on and can exceed slimfg's count.

Usage: python benchmarks/op_latency.py MODEL [MODEL ...] [--batch 32] [--runs 20] [--out FILE]
       python benchmarks/op_latency.py --quick
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _common import RESULTS, machine, write_json
from prune_latency import quick_model

from slimfg import artifact
from slimfg.exporters import export_onnx


def profile(path: Path, batch: int, runs: int, trace_dir: str) -> list[dict]:
    """One row per node: op, median kernel microseconds over `runs` (the first 3 dropped),
    MACs and activation elements for a conv (0 otherwise), and whether it is depthwise."""
    options = ort.SessionOptions()
    options.enable_profiling, options.profile_file_prefix = True, str(Path(trace_dir) / "ort")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shape = [batch, *session.get_inputs()[0].shape[1:]]
    x = {session.get_inputs()[0].name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    for _ in range(runs + 3):
        session.run(None, x)
    trace = Path(session.end_profiling())
    times, args = defaultdict(list), {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["name"]].append(event["dur"])
            args[event["name"]] = event["args"]
    trace.unlink()
    rows = []
    for name, durations in times.items():
        op = args[name]["op_name"]
        us = float(np.median(durations[3:] or durations))
        row = {"op": op, "us": us, "macs": 0, "elems": 0, "dw": False}
        if "Conv" in op:
            x_shape, w_shape = [next(iter(d.values())) for d in args[name]["input_type_shape"][:2]]
            y_shape = next(iter(args[name]["output_type_shape"][0].values()))
            row["macs"] = int(np.prod(w_shape)) * y_shape[2] * y_shape[3] * y_shape[0]
            row["elems"] = int(np.prod(x_shape) + np.prod(y_shape))
            row["dw"] = w_shape[1] == 1 and w_shape[0] > 1
        rows.append(row)
    return rows


def summary(rows: list[dict], batch: int) -> dict:
    convs = [r for r in rows if r["macs"]]
    a = np.array([[r["macs"], r["elems"]] for r in convs], dtype=float)
    y = np.array([r["us"] for r in convs])
    (per_mac, per_elem), *_ = np.linalg.lstsq(a, y, rcond=None)

    def ms(some: list[dict]) -> float:
        return round(sum(r["us"] for r in some) / 1e3, 2)

    dw = [r for r in convs if r["dw"]]
    return {
        "ms": ms(rows),
        "dw_conv_ms": ms(dw),
        "other_conv_ms": ms([r for r in convs if not r["dw"]]),
        "rest_ms": ms([r for r in rows if not r["macs"]]),
        "macs_per_image": sum(r["macs"] for r in convs) // batch,
        "dw_macs_per_image": sum(r["macs"] for r in dw) // batch,
        "elem_cost_in_macs": round(float(per_elem / per_mac), 1),
        "conv_nodes": len(convs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="slimfg .safetensors or .onnx files")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: a generated lite0 at 96 px")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.models, args.batch, args.runs = [quick_model(Path(tmp))], 2, 3
        elif not args.models:
            parser.error("MODEL is required (or --quick)")
        doc = {"machine": f"{machine()}, onnxruntime {ort.__version__} CPU", "batch": args.batch,
               "runs": args.runs, "models": {}}  # fmt: skip
        for i, model in enumerate(args.models):
            path = Path(model)
            if path.suffix != ".onnx":
                net, card = artifact.load(model)
                path = Path(tmp) / f"{i}.onnx"
                export_onnx(net, card, path, torch.randn(2, 3, card.size, card.size))
            doc["models"][model] = summary(profile(path, args.batch, args.runs, tmp), args.batch)
            print(model, doc["models"][model])
    write_json(Path(args.out or RESULTS / f"op_latency{'_quick' if args.quick else ''}.json"), doc)


if __name__ == "__main__":
    main()
