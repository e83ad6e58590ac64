"""--format trt-rtx and the TensorRT-ready int8 graph (issue 16). TensorRT for RTX parses
ONNX and builds engines ahead of time without a GPU, so every graph slimfg hands to
TensorRT is checked here by TensorRT's own parser and builder."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from slimfg import artifact
from slimfg.config import ExportConfig
from slimfg.data import SAMPLE
from slimfg.errors import SlimfgError
from slimfg.exporters.common import real_images
from slimfg.exporters.onnx_int8 import quantize
from slimfg.pipeline import export_artifact as export

trt = pytest.importorskip("tensorrt_rtx_bindings")
from slimfg.exporters.trt import build_engine  # noqa: E402


def test_fp32_engine_builds_without_a_gpu(imagenet_lite0, tmp_path):
    result = export(str(imagenet_lite0), "trt-rtx", str(tmp_path / "m.engine"))
    assert result.format == "trt-rtx" and result.bytes > 1e6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]
    side = json.loads((tmp_path / "m.engine.json").read_text())
    assert side["classes"][0] == "imagenet-0" and side["export"]["verification"]["precision"] == "fp32"
    if not torch.cuda.is_available():
        assert side["export"]["verification"]["ran"].startswith("no: no CUDA GPU")


def test_cli_prints_the_build_when_there_is_no_gpu_to_run_it(imagenet_lite0, tmp_path):
    from click.testing import CliRunner

    from slimfg.cli import main

    out = tmp_path / "m.engine"
    result = CliRunner().invoke(
        main, ["export", str(imagenet_lite0), "--format", "trt-rtx", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    if not torch.cuda.is_available():
        assert "built in" in result.output and "not run: no CUDA GPU" in result.output
    assert out.is_file()


def test_int8_graph_follows_tensorrt_rules_and_builds(lite0_onnx, imagenet_lite0, tmp_path):
    _, card = artifact.load(imagenet_lite0)
    calib, _ = real_images(card, None, 32, split="train")
    graphs = {"ort": tmp_path / "ort.onnx", "trt": tmp_path / "trt.onnx"}
    quantize(lite0_onnx, graphs["ort"], calib.numpy())
    quantize(lite0_onnx, graphs["trt"], calib.numpy(), tensorrt=True)
    proto = onnx.load(graphs["trt"])
    inits = {i.name: i for i in proto.graph.initializer}
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert dq and all(
        inits[n.input[0]].data_type != onnx.TensorProto.INT32 for n in dq if n.input[0] in inits
    )
    zero_points = [numpy_helper.to_array(inits[n.input[2]]) for n in dq if len(n.input) > 2]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    # TensorRT's parser takes this graph and builds it; it rejects ONNX Runtime's uint8 one
    assert build_engine(trt, graphs["trt"], 96, (1, 8, 32), fp16=False, typed=True)
    with pytest.raises(SlimfgError, match="cannot parse|failed to build"):
        build_engine(trt, graphs["ort"], 96, (1, 8, 32), fp16=False, typed=True)


def test_int8_engine_export(imagenet_lite0, tmp_path):
    cfg = ExportConfig(calib=str(SAMPLE), calib_images=32, min_agreement=0.75, int8=True)
    result = export(str(imagenet_lite0), "trt-rtx", str(tmp_path / "q.engine"), cfg)
    assert result.verification["precision"] == "int8"
    side = json.loads((tmp_path / "q.engine.json").read_text())
    assert side["classes"][0] == "imagenet-0"


def test_missing_extra_is_one_line(imagenet_lite0, tmp_path):
    args = ["export", str(imagenet_lite0), "--format", "trt-rtx", "--out", str(tmp_path / "m.engine")]
    hide = "import sys; sys.modules['tensorrt_rtx_bindings'] = None"
    code = f"{hide}; from slimfg.cli import main; main({args!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    want = "error: --format trt-rtx needs TensorRT for RTX: pip install 'slimfg[trt-rtx]'"
    assert proc.stderr.strip().splitlines() == [want]
    assert list(tmp_path.iterdir()) == []
