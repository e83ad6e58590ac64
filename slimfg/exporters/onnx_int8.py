"""ONNX Runtime int8: static QDQ quantisation with per-channel weights, calibrated on real
images, through `onnxruntime.quantization` (pre-processing, then `quantize_static`).

Verified against the fp32 ONNX model: top-1 agreement on the verification images, and
val top-1 of both on DATA's val split, so the accuracy cost is printed and stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch import nn

from slimfg.card import ModelCard
from slimfg.config import ExportConfig
from slimfg.errors import SlimfgError
from slimfg.exporters.common import ExportInputs, ExportResult, check_int8, compare, ort_runner
from slimfg.exporters.onnx import export_onnx, read_metadata, set_metadata
from slimfg.io import atomic_path, temp_dir

TENSORRT_QDQ = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}


def quantize(fp32: Path, out: Path, calib: np.ndarray, batch: int = 16, tensorrt: bool = False) -> None:
    """Static QDQ int8 (uint8 activations, int8 per-channel weights, MinMax calibration).

    `tensorrt`: the graph TensorRT's ONNX parser accepts: int8 activations, zero points 0
    (symmetric activations and weights) and biases left in float (TensorRT rejects uint8
    activations, non-zero zero points and int32 DequantizeLinear)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(calib, max(1, len(calib) // batch)))

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {"input": np.ascontiguousarray(x)}

    prep = out.with_name(out.stem + "_prep.onnx")
    quant_pre_process(str(fp32), str(prep))
    quantize_static(
        str(prep),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options=TENSORRT_QDQ if tensorrt else {},
    )
    prep.unlink()


def export_int8(model: nn.Module, card: ModelCard, out: Path, inputs: ExportInputs,
                cfg: ExportConfig, tensorrt: bool = False) -> ExportResult:  # fmt: skip
    import onnx

    if inputs.calib is None:
        raise SlimfgError("--format onnx-int8 needs --calib DATA (real images to calibrate on)")
    calib_x, verify_x = inputs.calib, inputs.verify[: cfg.verify_images]
    with temp_dir(out) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, card, fp32, verify_x)
        with atomic_path(out) as tmp_out:
            quantize(fp32, Path(tmp) / "int8.onnx", calib_x.numpy(), tensorrt=tensorrt)
            proto = onnx.load(str(Path(tmp) / "int8.onnx"))
            onnx.save(proto, str(tmp_out))
            run_fp32, run_int8 = ort_runner(fp32), ort_runner(tmp_out)
            check = compare(run_int8(verify_x.numpy()), run_fp32(verify_x.numpy()))
            check["reference"] = "onnx fp32"
            check_int8(check, run_int8, run_fp32, inputs, cfg)
            props = read_metadata(fp32)
            scheme = {"format": "QDQ", "activations": "uint8", "weights": "int8 per-channel"}
            if tensorrt:
                scheme = {**scheme, "activations": "int8 symmetric", "bias": "float", "for": "tensorrt"}
            props["quantization"] = json.dumps({**scheme, "calibration": "minmax"})
            set_metadata(proto, {**props, "verification": json.dumps(check)})
            onnx.save(proto, str(tmp_out))
    return ExportResult(out, "onnx-int8", out.stat().st_size, check)
