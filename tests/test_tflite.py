"""--format tflite / tflite-int8 (issue 16): LiteRT models verified in LiteRT's own
interpreter. litert-torch cannot share an environment with executorch, so these tests
run in `.venv-litert` (`make test` builds it); in the main environment only the
missing-extra error runs."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from slimfg import artifact
from slimfg.config import ExportConfig
from slimfg.data import SAMPLE
from slimfg.exporters.common import real_images
from slimfg.pipeline import export_artifact as export

HAS_LITERT = importlib.util.find_spec("litert_torch") is not None
needs_litert = pytest.mark.skipif(not HAS_LITERT, reason="runs in .venv-litert (slimfg[litert])")


@needs_litert
def test_fp32_model_matches_pytorch_at_any_batch(imagenet_lite0, tmp_path):
    from slimfg.exporters.tflite import tflite_runner

    out = tmp_path / "m.tflite"
    v = export(str(imagenet_lite0), "tflite", str(out)).verification
    assert v["top1_agreement"] == 1.0 and v["max_abs_diff"] <= 1e-4 * v["logit_range"]
    assert v["reference"] == "pytorch fp32" and v["images"] == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "m.tflite.json"]
    side = json.loads((tmp_path / "m.tflite.json").read_text())
    assert side["classes"][0] == "imagenet-0" and side["export"]["format"] == "tflite"
    model, card = artifact.load(imagenet_lite0)
    x, _ = real_images(card, None, 5)
    run = tflite_runner(out)
    with torch.no_grad():
        want = model(x).numpy()
    for n in (1, 5, 1):  # converted at batch 1, resized at run time
        assert np.abs(run(x[:n].numpy()) - want[:n]).max() <= 1e-4 * np.ptp(want)


@needs_litert
def test_int8_model_is_fully_integer_and_agrees_with_fp32(imagenet_lite0, lite0_onnx, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    out = tmp_path / "q.tflite"
    options = ExportConfig(calib=str(SAMPLE), calib_images=64, min_agreement=0.75, int8=True)
    result = export(str(imagenet_lite0), "tflite", str(out), options)
    v = result.verification
    assert result.format == "tflite-int8" and v["calib_images"] == 64
    assert v["top1_agreement"] >= 0.75 and 0 <= v["val_top1"] <= 1
    interpreter = Interpreter(model_path=str(out))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert result.bytes < 0.4 * lite0_onnx.stat().st_size  # int8 weights (fp32: as large as the ONNX)


@pytest.mark.skipif(HAS_LITERT, reason="LiteRT is installed here")
def test_missing_extra_is_one_line(imagenet_lite0, tmp_path):
    args = ["export", str(imagenet_lite0), "--format", "tflite", "--out", str(tmp_path / "m.tflite")]
    proc = subprocess.run([sys.executable, "-m", "slimfg", *args], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --format tflite needs LiteRT: pip install 'slimfg[litert]' (in an environment without "
        "slimfg[executorch])"
    ]
    assert list(tmp_path.iterdir()) == []
