"""PyTorch -> ONNX (opset 18, dynamic batch), simplified, verified against PyTorch.

The consumer-facing metadata (classes, preprocessing, arch, pruning summary and the
verification numbers) travels in the model's `metadata_props`, so an app needs nothing
but the .onnx file. ONNX is the hub every other exporter starts from.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from slimfg import __version__
from slimfg.card import ModelCard
from slimfg.errors import SlimfgError
from slimfg.exporters.common import ExportResult, compare, ort_runner, require_match
from slimfg.io import atomic_path

log = logging.getLogger("slimfg")
# The dynamo exporter emits opset 18 natively; asking it for 17 goes through the ONNX
# version converter, which has no Pad adapter and silently produced a wrong lite0
# graph (max logit error 37) in our tests.
OPSET = 18
# Verification bar: max |ORT - PyTorch| <= RTOL x the logit range, and the same top-1.
RTOL = 1e-4


def onnx_metadata(card: ModelCard) -> dict[str, str]:
    pruning = card.pruning or {}
    report = pruning.get("report") or {}
    summary = {k: pruning[k] for k in ("keep", "importance", "round_to") if k in pruning}
    for key in ("params", "macs"):
        if key in report.get("after", {}):
            summary[f"{key}_ratio"] = round(report["after"][key] / report["before"][key], 4)
    return {
        "slimfg_version": __version__,
        "arch": card.arch,
        "classes": json.dumps(card.classes),
        "preprocessing": json.dumps(card.preprocessing),
        "pruning": json.dumps(summary),
    }


def set_metadata(proto, props: dict[str, str]) -> None:
    """Replace `proto.metadata_props` with `props`."""
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)


def read_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def to_proto(model: nn.Module, card: ModelCard, inputs: torch.Tensor, static_batch: int | None = None):
    """The simplified, checked ONNX graph of `model` (dynamic batch unless `static_batch`)."""
    import onnx
    import onnxslim

    # An example batch of 2, not 1: with 1, torch.export cannot tell a batch that broadcasts
    # from one that does not, and guards the dynamic batch to <= 2 where a feature map is 2
    # pixels wide (convnext at 64 px).
    example = inputs[:1].expand(static_batch or 2, -1, -1, -1)
    dynamic = None if static_batch else ({0: torch.export.Dim("batch", min=1, max=1024)},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model.eval().cpu(),
                (example.contiguous(),),
                dynamo=True,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=dynamic,
                verbose=False,
            )
        except Exception as e:  # torch.export refuses the model: report, do not write
            raise SlimfgError(f"cannot export {card.arch} to ONNX: {str(e).splitlines()[0][:200]}") from None
    proto = onnxslim.slim(program.model_proto)
    set_metadata(proto, onnx_metadata(card))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(
    model: nn.Module, card: ModelCard, path: str | Path, inputs: torch.Tensor, static_batch: int | None = None
) -> ExportResult:
    """Export, simplify with onnxslim, check, and compare with PyTorch on `inputs` (real
    images); the numbers are stored in the file's metadata under `verification`."""
    import onnx

    path = Path(path)
    proto = to_proto(model, card, inputs, static_batch)
    if static_batch:
        inputs = inputs[:static_batch]
        if len(inputs) < static_batch:
            raise SlimfgError(
                f"need {static_batch} verification images for --static-batch, got {len(inputs)}"
            )
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
        got = ort_runner(tmp)(inputs.numpy())
        with torch.no_grad():
            want = model.eval().cpu()(inputs).numpy()
        check = compare(got, want)
        require_match(check, "ONNX export does not match PyTorch", RTOL)
        check["reference"] = "pytorch"
        props = {p.key: p.value for p in proto.metadata_props}
        set_metadata(proto, {**props, "verification": json.dumps(check)})
        onnx.save(proto, str(tmp))
    return ExportResult(path, "onnx", path.stat().st_size, check)
