"""OpenVINO IR (.xml + .bin) from the ONNX hub with openvino's converter, verified with
the OpenVINO CPU runtime against ONNX Runtime on real images (same top-1)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from slimfg.card import ModelCard
from slimfg.config import ExportConfig
from slimfg.errors import SlimfgError, check_stop
from slimfg.exporters.common import ExportInputs, ExportResult, compare, ort_runner, write_sidecar
from slimfg.exporters.onnx import RTOL, export_onnx, read_metadata
from slimfg.io import temp_dir


def openvino_runner(xml: str | Path, threads: int | None = None, precision: str = "f32"):
    """numpy batch -> logits through an OpenVINO CPU compiled model.

    OpenVINO's CPU plugin silently runs fp32 models in bf16 on CPUs that support it
    (this one does: max logit difference 0.9 against ONNX Runtime), so the precision is
    pinned to f32 unless asked otherwise.
    """
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    return lambda x: compiled(x)[0]


def export_openvino(model: nn.Module, card: ModelCard, out: Path, inputs: ExportInputs,
                    cfg: ExportConfig) -> ExportResult:  # fmt: skip
    try:
        import openvino as ov
    except ImportError:
        raise SlimfgError("--format openvino needs OpenVINO: pip install 'slimfg[openvino]'") from None
    if out.suffix != ".xml":
        raise SlimfgError(f"OpenVINO IR path must end in .xml (the .bin goes beside it), got {out}")
    x = inputs.verify[: cfg.verify_images]
    with temp_dir(out) as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(model, card, onnx_path, x)
        xml = Path(tmp) / out.name
        ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
        check = compare(openvino_runner(xml)(x.numpy()), ort_runner(onnx_path)(x.numpy()))
        check["reference"] = "onnxruntime"
        if (
            check["max_abs_diff"] > 10 * RTOL * max(check["logit_range"], 1.0)
            or check["top1_agreement"] < 1.0
        ):
            raise SlimfgError(
                f"OpenVINO IR does not match ONNX Runtime (max diff {check['max_abs_diff']:.2e}, "
                f"top-1 agreement {check['top1_agreement']:.1%})"
            )
        # .bin first, .xml last: the .xml is the entry point, so a kill never leaves an
        # .xml that points at a missing or partial .bin.
        check_stop()  # a SIGTERM that only set the flag (errors.request_stop): no finished IR
        os.replace(xml.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(xml, out)
        result = ExportResult(
            out, "openvino", out.stat().st_size + out.with_suffix(".bin").stat().st_size, check
        )
        write_sidecar(out, read_metadata(onnx_path), result)
    return result
