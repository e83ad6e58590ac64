"""`slimfg bench`: every model x format side by side on this machine.

For each slimfg artifact and each export format available here it exports (verified),
then measures file size, params, MACs, top-1 on DATA's val split and latency p50/p90 at
batch 1 and 32. Latency is paired: all variants run in one process, alternating every
round, so drifts of a shared machine hit them alike. Writes bench.json and a PNG of
accuracy (or size) against latency.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from slimfg import artifact, data
from slimfg.config import ExportConfig
from slimfg.errors import SlimfgError, unknown_name
from slimfg.exporters import EXPORTERS, SUFFIX, uses_int8
from slimfg.exporters.common import accuracy, check_writable, eval_batches, inputs_from_data, ort_runner
from slimfg.exporters.executorch import executorch_runner
from slimfg.exporters.openvino import openvino_runner
from slimfg.exporters.tflite import tflite_runner
from slimfg.io import atomic_path, write_text
from slimfg.pruning.graph import count, example_input

log = logging.getLogger("slimfg")


def timed_run(run: Callable, batch: np.ndarray) -> float:
    t0 = time.perf_counter()
    run(batch)
    return time.perf_counter() - t0


def latency(runners: dict[str, Callable], batch: int, size: int, rounds: int = 20, warmup: int = 3) -> dict:
    """Seconds per run (median, p90) for each runner, alternating runners every round."""
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    for run in runners.values():
        for _ in range(warmup):
            timed_run(run, x)
    times = {name: [] for name in runners}
    for r in range(rounds):
        for name in list(runners) if r % 2 == 0 else reversed(list(runners)):
            times[name].append(timed_run(runners[name], x))
    return {
        name: {"median_s": statistics.median(t), "p90_s": float(np.percentile(t, 90)), "rounds": rounds}
        for name, t in times.items()
    }


def paired_latency(paths: dict[str, Path], batch: int, size: int, rounds: int = 20, warmup: int = 3) -> dict:
    """`latency` for ONNX files in ONNX Runtime (CPU)."""
    return latency({name: ort_runner(p) for name, p in paths.items()}, batch, size, rounds, warmup)


def runner_for(fmt: str, path: Path) -> Callable:
    if fmt == "openvino":
        return openvino_runner(path)
    if fmt.startswith("executorch"):
        return executorch_runner(path)
    if fmt.startswith("tflite"):
        return tflite_runner(path)
    return ort_runner(path)


def available_formats() -> list[str]:
    """Formats this machine can export and run for benchmarking (no TensorRT on CPU)."""
    import importlib.util

    found = ["onnx", "onnx-int8"]
    if importlib.util.find_spec("openvino") is not None:
        found.append("openvino")
    if importlib.util.find_spec("executorch") is not None:
        found += ["executorch", "executorch-int8"]
    if importlib.util.find_spec("litert_torch") is not None:
        found += ["tflite", "tflite-int8"]
    return found


def bench(
    models: list[str],
    formats: list[str],
    data_dir: str | None = None,
    out_dir: str = "runs/bench",
    rounds: int = 20,
    batches: tuple[int, ...] = (1, 32),
) -> list[dict]:
    """Export every model to every format, measure, write bench.json + bench.png; returns rows."""
    for fmt in formats:
        if fmt not in available_formats():
            if fmt in EXPORTERS:
                raise SlimfgError(f"format {fmt} cannot be benchmarked on this machine")
            raise unknown_name("format", fmt, available_formats())
    out = check_writable(Path(out_dir) / "bench.json").parent
    # The bench reports int8 agreement instead of failing on it.
    cfg = ExportConfig(data=data_dir, calib=data_dir or str(data.SAMPLE), min_agreement=0.0, verify_images=64)
    rows, runners, size = [], {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for i, model_path in enumerate(models):
            model, card = artifact.load(model_path)
            if size not in (None, card.size):
                raise SlimfgError(
                    f"models take different input sizes ({size}, {card.size} px); bench one size at a time"
                )
            size = card.size
            counts = count(model, example_input(size))
            for fmt in formats:
                path = Path(tmp) / f"{i}_{fmt}{SUFFIX[fmt]}"
                inputs = inputs_from_data(card, cfg, uses_int8(fmt, cfg))
                result = EXPORTERS[fmt](model, card, path, inputs, cfg)
                name = f"{Path(model_path).stem} {fmt}"
                runners[name] = runner_for(fmt, path)
                row = {"name": name, "model": str(model_path), "format": fmt, "bytes": result.bytes, **counts,
                       "pruned": bool(card.pruning), "verification": result.verification}  # fmt: skip
                if data_dir:
                    row["top1"] = accuracy(runners[name], eval_batches(card, data_dir))["top1"]
                rows.append(row)
                log.info("exported and verified %s", name)
        for batch in batches:
            log.info("latency at batch %d (%d paired rounds)", batch, rounds)
            timing = latency(runners, batch, size, rounds)
            for row in rows:
                row[f"b{batch}_p50_s"] = timing[row["name"]]["median_s"]
                row[f"b{batch}_p90_s"] = timing[row["name"]]["p90_s"]
    write_text(out / "bench.json", json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    plot(rows, out / "bench.png", max(batches))
    return rows


def machine() -> dict:
    import os
    import platform

    import onnxruntime

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "onnxruntime": onnxruntime.__version__}  # fmt: skip


def table(rows: list[dict]) -> str:
    """The bench rows as a fixed-width text table (sizes in MB, counts in millions, ms)."""
    lines = [f"{'model / format':<30}{'MB':>7}{'params M':>9}{'MACs M':>8}{'top-1':>7}"
             f"{'b1 p50':>8}{'b1 p90':>8}{'b32 p50':>9}{'b32 p90':>9}   (latency in ms)"]  # fmt: skip
    for r in rows:
        top1 = f"{r['top1']:7.4f}" if "top1" in r else f"{'-':>7}"
        lines.append(
            f"{r['name'][:29]:<30}{r['bytes'] / 1e6:7.2f}{r['params'] / 1e6:9.2f}{r['macs'] / 1e6:8.1f}{top1}"
            + "".join(
                f"{r[k] * 1e3:8.2f}" if k.startswith("b1_") else f"{r[k] * 1e3:9.1f}"
                for k in ("b1_p50_s", "b1_p90_s", "b32_p50_s", "b32_p90_s")
                if k in r
            )  # fmt: skip
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, batch: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y_key, y_label = (
        ("top1", "val top-1") if all("top1" in r for r in rows) else ("bytes", "file size (bytes)")
    )
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in rows:
        ax.scatter(r[f"b{batch}_p50_s"] * 1e3, r[y_key], marker="o" if r["format"] == "onnx" else "s")
        ax.annotate(r["name"], (r[f"b{batch}_p50_s"] * 1e3, r[y_key]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    ax.set_xlabel(f"latency at batch {batch}, p50 (ms)")
    ax.set_ylabel(y_label)
    ax.set_title("accuracy vs latency" if y_key == "top1" else "size vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
