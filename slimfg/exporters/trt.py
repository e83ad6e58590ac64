"""TensorRT engines from the ONNX hub: `trt` (TensorRT 10/11, data-centre GPUs and
Jetson) and `trt-rtx` (TensorRT for RTX), through one code path where the APIs agree.

TensorRT 10 and 11 differ in how precision is chosen (NVIDIA's migration guide):
- TensorRT 10: fp16 through `BuilderFlag.FP16` on a weakly typed network;
- TensorRT 11 (and TensorRT-RTX): strongly typed, so fp16 comes from an ONNX converted
  to mixed precision first (ModelOpt AutoCast).
int8 is explicit quantisation: the onnx-int8 exporter's Q/DQ graph in the form TensorRT
accepts (int8 activations, zero points 0, float biases), built strongly typed. The
optimisation profile covers the dynamic batch (min, opt, max).
Verification: with a CUDA GPU the engine runs against ONNX Runtime. TensorRT-RTX builds
engines ahead of time without a GPU; there, the successful parse and build is the check,
and the engine runs only where a GPU TensorRT-RTX supports is present.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimfg.card import ModelCard
from slimfg.config import ExportConfig
from slimfg.errors import SlimfgError
from slimfg.exporters.common import ExportInputs, ExportResult, compare, ort_runner, write_sidecar
from slimfg.exporters.onnx import export_onnx, read_metadata
from slimfg.exporters.onnx_int8 import export_int8
from slimfg.io import atomic_path, temp_dir

INSTALL = "pip install 'slimfg[trt]' on a machine with an NVIDIA GPU and CUDA"
INSTALL_RTX = "pip install 'slimfg[trt-rtx]'"


def require_tensorrt(fmt: str = "trt"):
    """The TensorRT module for `fmt`, or a one-line error saying what is missing (checked
    before any work). TensorRT-RTX needs no GPU to build."""
    if fmt == "trt-rtx":
        try:
            import tensorrt_rtx_bindings as trt
        except ImportError:
            raise SlimfgError(f"--format trt-rtx needs TensorRT for RTX: {INSTALL_RTX}") from None
        return trt
    try:
        import tensorrt as trt
    except ImportError:
        raise SlimfgError(f"--format trt needs TensorRT and an NVIDIA GPU: {INSTALL}") from None
    if not torch.cuda.is_available():
        raise SlimfgError(f"--format trt needs an NVIDIA GPU with CUDA, and none is visible: {INSTALL}")
    return trt


def strongly_typed_only(trt) -> bool:
    """TensorRT 11 and TensorRT-RTX (versions 1.x) have no weakly typed networks."""
    major = int(trt.__version__.split(".")[0])
    return major >= 11 or trt.__name__.startswith("tensorrt_rtx")


def build_engine(
    trt, onnx_path: Path, size: int, batch: tuple[int, int, int], fp16: bool, typed: bool
) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if typed or strongly_typed_only(trt):  # the flag is accepted where it is the only mode
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SlimfgError(f"TensorRT cannot parse the ONNX model: {errors[:300]}")
    config = builder.create_builder_config()
    if fp16 and not flags:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    lo, opt, hi = batch
    profile.set_shape("input", (lo, 3, size, size), (opt, 3, size, size), (hi, 3, size, size))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise SlimfgError("TensorRT failed to build an engine (see the TensorRT log above)")
    return bytes(engine)


def to_mixed_precision(onnx_path: Path) -> Path:
    """TensorRT 11 fp16: an fp16 ONNX (fp32 I/O) by ModelOpt AutoCast."""
    try:
        import modelopt.onnx.autocast as autocast
    except ImportError:
        raise SlimfgError(
            "--fp16 with TensorRT 11 needs ModelOpt: pip install nvidia-modelopt[onnx]"
        ) from None
    import onnx

    out = onnx_path.with_name("fp16.onnx")
    onnx.save(autocast.convert_to_mixed_precision(onnx_path=str(onnx_path), low_precision_type="fp16",
                                                  keep_io_types=True), str(out))  # fmt: skip
    return out


def trt_runner(engine_bytes: bytes, trt=None):
    """numpy batch -> logits through a TensorRT engine (torch CUDA tensors as buffers)."""
    if trt is None:
        import tensorrt as trt

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise SlimfgError("this GPU cannot run the engine (see the TensorRT log above)")
    context = engine.create_execution_context()

    def run(x: np.ndarray) -> np.ndarray:
        inp = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda()
        context.set_input_shape("input", tuple(inp.shape))
        out = torch.empty(tuple(context.get_tensor_shape("logits")), dtype=torch.float32, device="cuda")
        context.set_tensor_address("input", inp.data_ptr())
        context.set_tensor_address("logits", out.data_ptr())
        stream = torch.cuda.current_stream()
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return out.cpu().numpy()

    return run


def export_trt(model: nn.Module, card: ModelCard, out: Path, inputs: ExportInputs,
               cfg: ExportConfig, fmt: str = "trt") -> ExportResult:  # fmt: skip
    trt = require_tensorrt(fmt)
    x = inputs.verify[: cfg.verify_images]
    with temp_dir(out) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_onnx(model, card, fp32, x)
        source, typed = fp32, False
        if cfg.int8:
            source, typed = Path(tmp) / "int8.onnx", True
            export_int8(model, card, source, inputs, cfg, tensorrt=True)
        elif cfg.fp16 and strongly_typed_only(trt):
            source, typed = to_mixed_precision(fp32), True
        t0 = time.perf_counter()
        engine = build_engine(trt, source, card.size, cfg.batch, cfg.fp16, typed)
        check = {"build_s": round(time.perf_counter() - t0, 2), "reference": "onnxruntime fp32"}
        check["precision"] = "int8" if cfg.int8 else "fp16" if cfg.fp16 else "fp32"
        if torch.cuda.is_available():
            check.update(compare(trt_runner(engine, trt)(x.numpy()), ort_runner(fp32)(x.numpy())))
            if check["top1_agreement"] < cfg.min_agreement:
                raise SlimfgError(
                    f"TensorRT engine agrees with ONNX Runtime on only {check['top1_agreement']:.1%}"
                )
        else:  # trt-rtx without a GPU: parsed and built is what can be checked here
            check["ran"] = "no: no CUDA GPU here; the engine was parsed and built"
        with atomic_path(out) as tmp_out:
            tmp_out.write_bytes(engine)
        result = ExportResult(out, fmt, len(engine), check)
        write_sidecar(out, read_metadata(fp32), result)
    return result
