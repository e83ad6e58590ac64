"""Exporters registry: format -> function(model, meta, out, options) -> ExportResult.

ONNX is the hub: int8, TensorRT and OpenVINO all start from the verified ONNX graph.
Optional runtimes (tensorrt, openvino) are imported lazily inside their exporter, so a
missing one is a one-line error naming the extra to install. `export()` is the entry
the CLI calls: it checks the inputs before any work and writes nothing on failure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from slimfg.errors import SlimfgError, unknown_name
from slimfg.exporters.common import ExportResult, check_writable, real_images
from slimfg.exporters.onnx import export_onnx
from slimfg.exporters.onnx_int8 import export_int8
from slimfg.exporters.openvino import export_openvino
from slimfg.exporters.trt import export_trt

log = logging.getLogger("slimfg")


@dataclass
class ExportOptions:
    data: str | None = None  # real images to verify on (val split); the bundled sample if None
    calib: str | None = None  # int8 calibration images (train split)
    calib_images: int = 256
    verify_images: int = 32
    static_batch: int | None = None
    fp16: bool = False  # trt
    int8: bool = False  # trt
    batch: tuple[int, int, int] = (1, 8, 32)  # trt optimisation profile (min, opt, max)
    min_agreement: float = 0.9  # int8 / trt top-1 agreement below this fails the export


def _onnx(model, meta, out: Path, options: ExportOptions) -> ExportResult:
    x, _ = real_images(meta, options.data, max(options.verify_images, options.static_batch or 0))
    return export_onnx(model, meta, out, x, options.static_batch)


EXPORTERS = {"onnx": _onnx, "onnx-int8": export_int8, "trt": export_trt, "openvino": export_openvino}
SUFFIX = {"onnx": ".onnx", "onnx-int8": ".onnx", "trt": ".engine", "openvino": ".xml"}


def export(model_path: str, fmt: str, out: str, options: ExportOptions | None = None) -> ExportResult:
    """Export the slimfg artifact at `model_path` to `fmt` at `out`, verified."""
    from slimfg import artifact

    options = options or ExportOptions()
    if fmt not in EXPORTERS:
        raise unknown_name("format", fmt, list(EXPORTERS))
    if fmt == "onnx-int8" and not options.calib:
        raise SlimfgError("--format onnx-int8 needs --calib DATA (real images to calibrate on)")
    if fmt == "trt":
        from slimfg.exporters.trt import require_tensorrt

        require_tensorrt()
        if options.int8 and not options.calib:
            raise SlimfgError("--int8 needs --calib DATA (real images to calibrate on)")
    out_path = check_writable(out)
    model, meta = artifact.load(model_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result = EXPORTERS[fmt](model, meta, out_path, options)
    log.info("wrote %s (%s, %.1f MB)", result.path, fmt, result.bytes / 1e6)
    return result


__all__ = ["EXPORTERS", "ExportOptions", "ExportResult", "export", "export_onnx"]
