"""LiteRT (TensorFlow Lite) flatbuffer from the PyTorch module with litert-torch, verified
in LiteRT's own interpreter (`ai-edge-litert`, no TensorFlow, no torch needed to run it).

Converted at batch 1 (the phone case); the interpreter resizes the batch at run time.
`int8` is PT2E static quantisation with litert-torch's quantizer (symmetric int8,
per-channel weights) calibrated on real training images: a fully integer model whose
input and output are int8 (the runner quantises the image and dequantises the logits
with the scales stored in the file). The fp32 model is held to the ONNX bar against
PyTorch; int8 to its top-1 agreement with PyTorch fp32 (and val top-1 when there is a val
split). Classes and preprocessing travel in the `<file>.tflite.json` sidecar, written
before the .tflite (the entry point comes last).

litert-torch pins typing-extensions below what executorch needs, so the `litert` extra
lives in an environment of its own (`make test` builds `.venv-litert` for its tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimfg.card import ModelCard
from slimfg.config import ExportConfig
from slimfg.errors import SlimfgError
from slimfg.exporters.common import (
    ExportInputs,
    ExportResult,
    check_int8,
    compare,
    require_match,
    torch_runner,
    write_sidecar,
)
from slimfg.exporters.onnx import RTOL, onnx_metadata
from slimfg.io import atomic_path, temp_dir

INSTALL = "pip install 'slimfg[litert]' (in an environment without slimfg[executorch])"


def require_litert() -> None:
    """One-line error, before any work, when litert-torch or the LiteRT interpreter is missing."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError:
        raise SlimfgError(f"--format tflite needs LiteRT: {INSTALL}") from None


def tflite_runner(path: str | Path, threads: int | None = None):
    """numpy batch -> float logits through the LiteRT interpreter (XNNPACK on this CPU)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    shape = [None]

    def run(x: np.ndarray) -> np.ndarray:
        if shape[0] != x.shape:
            interpreter.resize_tensor_input(inp["index"], list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = x.shape
        if inp["dtype"] == np.int8:  # a fully integer model: quantise the image
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.array(y, dtype=np.float32)

    return run


def to_flatbuffer(model: nn.Module, size: int, path: Path, calib: torch.Tensor | None = None) -> None:
    """Convert `model` (int8 when `calib` is given) and write the .tflite to `path`."""
    import litert_torch

    model = model.eval().cpu()
    example = (torch.zeros(1, 3, size, size),)
    try:
        if calib is None:
            edge = litert_torch.convert(model, example)
        else:
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
            quantizer = PT2EQuantizer().set_global(config)
            prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
            with torch.no_grad():
                for image in calib.split(1):  # the graph is traced at batch 1
                    prepared(image)
            converted = convert_pt2e(prepared, fold_quantize=False)
            edge = litert_torch.convert(
                converted, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)
            )
        edge.export(str(path))
    except Exception as e:  # conversion failures are long; one line is enough
        raise SlimfgError(f"cannot convert to LiteRT: {str(e).strip().splitlines()[0][:200]}") from None


def export_tflite(model: nn.Module, card: ModelCard, out: Path, inputs: ExportInputs,
                  cfg: ExportConfig, int8: bool = False) -> ExportResult:  # fmt: skip
    require_litert()
    fmt = "tflite-int8" if int8 else "tflite"
    x = inputs.verify[: cfg.verify_images]
    with torch.no_grad():
        want = model.eval().cpu()(x).numpy()
    with temp_dir(out) as tmp:
        converted = Path(tmp) / out.name
        to_flatbuffer(model, card.size, converted, inputs.calib if int8 else None)
        run = tflite_runner(converted)
        check = compare(run(x.numpy()), want)
        check["reference"] = "pytorch fp32"
        if not int8:
            require_match(check, "LiteRT model does not match PyTorch", RTOL)
        props = onnx_metadata(card)
        if int8:
            check_int8(check, run, torch_runner(model), inputs, cfg)
            scheme = {"format": "PT2E LiteRT", "activations": "int8", "weights": "int8 per-channel",
                      "input_output": "int8 (scales in the file)"}  # fmt: skip
            props["quantization"] = json.dumps({**scheme, "calibration": "minmax"})
        result = ExportResult(out, fmt, converted.stat().st_size, check)
        write_sidecar(out, props, result)  # the sidecar first: the .tflite is the entry point
        with atomic_path(out) as tmp_out:
            converted.replace(tmp_out)
    return result
