"""Exporters registry: format -> function(model, card, out, inputs, config) -> ExportResult.

ONNX is the hub: int8, TensorRT and OpenVINO all start from the verified ONNX graph.
Optional runtimes (tensorrt, openvino) are imported lazily inside their exporter, so a
missing one is a one-line error naming the extra to install. `export()` is the
object-level entry (a model, its card, real images); `pipeline.export_artifact` wraps it
for a saved artifact and dataset folders.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from slimfg.card import ModelCard
from slimfg.config import FORMAT_SUFFIX, ExportConfig
from slimfg.data import batch_images
from slimfg.errors import SlimfgError, unknown_name
from slimfg.exporters.common import ExportInputs, ExportResult, check_writable
from slimfg.exporters.executorch import export_executorch, require_executorch
from slimfg.exporters.onnx import export_onnx
from slimfg.exporters.onnx_int8 import export_int8
from slimfg.exporters.openvino import export_openvino
from slimfg.exporters.tflite import export_tflite, require_litert
from slimfg.exporters.trt import export_trt, require_tensorrt

log = logging.getLogger("slimfg")


def _onnx(model, card, out: Path, inputs: ExportInputs, cfg: ExportConfig) -> ExportResult:
    return export_onnx(model, card, out, inputs.verify, cfg.static_batch)


def _executorch(model, card, out: Path, inputs: ExportInputs, cfg: ExportConfig) -> ExportResult:
    return export_executorch(model, card, out, inputs, cfg, int8=cfg.int8)


def _executorch_int8(model, card, out: Path, inputs: ExportInputs, cfg: ExportConfig) -> ExportResult:
    return export_executorch(model, card, out, inputs, cfg, int8=True)


def _tflite(model, card, out: Path, inputs: ExportInputs, cfg: ExportConfig) -> ExportResult:
    return export_tflite(model, card, out, inputs, cfg, int8=cfg.int8)


def _tflite_int8(model, card, out: Path, inputs: ExportInputs, cfg: ExportConfig) -> ExportResult:
    return export_tflite(model, card, out, inputs, cfg, int8=True)


def _trt_rtx(model, card, out: Path, inputs: ExportInputs, cfg: ExportConfig) -> ExportResult:
    return export_trt(model, card, out, inputs, cfg, fmt="trt-rtx")


EXPORTERS = {
    "onnx": _onnx,
    "onnx-int8": export_int8,
    "trt": export_trt,
    "trt-rtx": _trt_rtx,
    "openvino": export_openvino,
    "executorch": _executorch,
    "executorch-int8": _executorch_int8,
    "tflite": _tflite,
    "tflite-int8": _tflite_int8,
}
SUFFIX = FORMAT_SUFFIX


def uses_int8(fmt: str, cfg: ExportConfig) -> bool:
    return fmt.endswith("-int8") or (fmt in ("trt", "trt-rtx", "executorch", "tflite") and cfg.int8)


def check_format(fmt: str, cfg: ExportConfig, has_calib: bool) -> None:
    """One-line errors for what an export of `fmt` lacks, before any work."""
    if fmt not in EXPORTERS:
        raise unknown_name("format", fmt, list(EXPORTERS))
    int8 = uses_int8(fmt, cfg)
    if fmt.startswith("executorch"):
        require_executorch()
        if cfg.static_batch:
            raise SlimfgError("--static-batch: ExecuTorch programs take any batch of 1 to 32")
    if fmt.startswith("tflite"):
        require_litert()
        if cfg.static_batch:
            raise SlimfgError(
                "--static-batch: LiteRT models are converted at batch 1 and resized at run time"
            )
    if int8 and not has_calib:
        flag = " --int8" if cfg.int8 else ""
        raise SlimfgError(f"--format {fmt}{flag} needs --calib DATA (real images to calibrate on)")
    if fmt in ("trt", "trt-rtx"):
        require_tensorrt(fmt)


def export(
    model: nn.Module,
    path: str | Path,
    *,
    format: str = "onnx",
    example_inputs: torch.Tensor,
    card: ModelCard,
    calib: Iterable | torch.Tensor | None = None,
    config: ExportConfig | None = None,
) -> ExportResult:
    """Export `model` to `format` at `path`, verified on `example_inputs` (real images).

    `card` supplies the classes and preprocessing that travel in the file's metadata;
    `calib` (images, or (images, labels) batches) calibrates the int8 formats.
    """
    cfg = config or ExportConfig()
    calib_x = None
    if calib is not None:
        calib_x = calib if isinstance(calib, torch.Tensor) else batch_images(calib)
    check_format(format, cfg, calib_x is not None)
    out = check_writable(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = ExportInputs(verify=example_inputs, calib=calib_x)
    result = EXPORTERS[format](model.eval(), card, out, inputs, cfg)
    log.info("wrote %s (%s, %.1f MB)", result.path, format, result.bytes / 1e6)
    return result


__all__ = ["EXPORTERS", "SUFFIX", "ExportResult", "export", "export_onnx"]
