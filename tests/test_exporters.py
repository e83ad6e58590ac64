import json

import onnx
import onnxruntime as ort
import pytest
import torch

from slimfg import models
from slimfg.errors import SlimfgError
from slimfg.exporters import EXPORTERS, export_onnx


def test_onnx_export_verified_with_metadata(tmp_path):
    torch.manual_seed(0)
    model = models.build("resnet18", 4, "none").eval()
    meta = {
        "arch": "resnet18",
        "classes": list("abcd"),
        "preprocessing": models.preprocessing("resnet18", 48),
    }
    result = export_onnx(model, meta, tmp_path / "m.onnx", torch.randn(3, 3, 48, 48))
    assert result.max_abs_diff <= 1e-4 * result.logit_range and result.top1_agreement == 1.0
    proto = onnx.load(tmp_path / "m.onnx")
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"]) == list("abcd") and json.loads(props["preprocessing"])["size"] == 48
    assert proto.opset_import[0].version >= 17
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": torch.randn(5, 3, 48, 48).numpy()})[0].shape == (5, 4)  # dynamic batch
    assert "onnx" in EXPORTERS


def test_failed_verification_writes_nothing(tmp_path):
    class Flaky(torch.nn.Module):
        """Random noise in the output: ONNX Runtime and PyTorch draw different numbers."""

        def forward(self, x):
            return x.mean((2, 3)) + torch.rand_like(x.mean((2, 3)))

    meta = {"arch": "x", "classes": ["a", "b", "c"], "preprocessing": {}}
    with pytest.raises(SlimfgError, match="does not match PyTorch"):
        export_onnx(Flaky(), meta, tmp_path / "m.onnx", torch.randn(4, 3, 8, 8))
    assert list(tmp_path.iterdir()) == []
