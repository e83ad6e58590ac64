"""ExecuTorch program (.pte) with the XNNPACK delegate, straight from the PyTorch module.

PyTorch's own edge runtime (phones, embedded Linux): `torch.export` with a dynamic batch
(1..MAX_BATCH), lowered to XNNPACK. `int8` is PT2E static quantisation with XNNPACK's
quantizer (symmetric int8, per-channel weights), calibrated on real training images.
The program is verified in ExecuTorch's own runtime on real images: fp32 against
PyTorch (the ONNX bar), int8 by its top-1 agreement with fp32 (and val top-1 when there
is a val split). A .pte has no metadata slot, so classes and preprocessing travel in the
`<file>.pte.json` sidecar, written before the .pte (the entry point comes last).
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
from slimfg.io import atomic_path

INSTALL = "pip install 'slimfg[executorch]'"
# The program's memory is planned for the largest batch, so the bound is kept modest.
MAX_BATCH = 32


def require_executorch() -> None:
    """One-line error, before any work, when ExecuTorch is not installed."""
    try:
        import executorch  # noqa: F401
    except ImportError:
        raise SlimfgError(f"--format executorch needs ExecuTorch: {INSTALL}") from None


def executorch_runner(path: str | Path):
    """numpy batch -> logits through ExecuTorch's Python runtime (XNNPACK on this CPU);
    batches over MAX_BATCH run in pieces."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(Path(path)).load_method("forward")

    def run(x: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return np.concatenate([method.execute([piece])[0].numpy() for piece in x.split(MAX_BATCH)])

    return run


def _exported(model: nn.Module, x: torch.Tensor):
    # Traced at the largest batch: ExecuTorch sized its input buffer for 15 images when
    # traced at 2 (then any batch over 15 failed to load), and for 32 when traced at 32.
    example = x[torch.arange(MAX_BATCH) % len(x)]
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def _quantized(model: nn.Module, x: torch.Tensor, calib: torch.Tensor):
    """PT2E: trace, insert observers, run the calibration images, convert to int8 Q/DQ."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(_exported(model, x).module(), quantizer)
    with torch.no_grad():
        for batch in calib.split(16):
            prepared(batch)
    return _exported(convert_pt2e(prepared), x)


def to_program(model: nn.Module, x: torch.Tensor, calib: torch.Tensor | None = None) -> bytes:
    """The serialised ExecuTorch program of `model` (int8 when `calib` is given)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model = model.eval().cpu()
    try:
        program = _quantized(model, x, calib) if calib is not None else _exported(model, x)
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        return lowered.to_executorch().buffer
    except Exception as e:  # torch.export / lowering failures are long; one line is enough
        raise SlimfgError(f"cannot export to ExecuTorch: {str(e).strip().splitlines()[0][:200]}") from None


def export_executorch(model: nn.Module, card: ModelCard, out: Path, inputs: ExportInputs,
                      cfg: ExportConfig, int8: bool = False) -> ExportResult:  # fmt: skip
    require_executorch()
    fmt = "executorch-int8" if int8 else "executorch"
    x = inputs.verify[: cfg.verify_images]
    buffer = to_program(model, x, inputs.calib if int8 else None)
    with torch.no_grad():
        want = model.eval().cpu()(x).numpy()
    with atomic_path(out) as tmp:
        tmp.write_bytes(buffer)
        run = executorch_runner(tmp)
        check = compare(run(x.numpy()), want)
        check["reference"] = "pytorch fp32"
        if not int8:
            require_match(check, "ExecuTorch program does not match PyTorch", RTOL)
        props = onnx_metadata(card)
        props["max_batch"] = str(MAX_BATCH)
        if int8:
            check_int8(check, run, torch_runner(model), inputs, cfg, "int8 program")
            scheme = {"format": "PT2E XNNPACK", "activations": "int8", "weights": "int8 per-channel"}
            props["quantization"] = json.dumps({**scheme, "calibration": "minmax"})
        result = ExportResult(out, fmt, len(buffer), check)
        write_sidecar(out, props, result)  # the sidecar first: the .pte is the entry point
    return result
