"""--format executorch / executorch-int8 (issue 16): the .pte runs in ExecuTorch's own
runtime and matches PyTorch on real images; int8 is PT2E quantised with XNNPACK's quantizer."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from slimfg import artifact
from slimfg.cli import main
from slimfg.config import ExportConfig
from slimfg.data import SAMPLE
from slimfg.exporters.common import real_images
from slimfg.pipeline import export_artifact as export

pytest.importorskip("executorch")
from slimfg.exporters.executorch import MAX_BATCH, executorch_runner  # noqa: E402


def test_fp32_program_matches_pytorch_at_any_batch(imagenet_lite0, tmp_path):
    out = tmp_path / "m.pte"
    v = export(str(imagenet_lite0), "executorch", str(out)).verification
    assert v["top1_agreement"] == 1.0 and v["max_abs_diff"] <= 1e-4 * v["logit_range"]
    assert v["reference"] == "pytorch fp32" and v["images"] == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pte", "m.pte.json"]
    side = json.loads((tmp_path / "m.pte.json").read_text())
    assert side["classes"][0] == "imagenet-0" and side["export"]["format"] == "executorch"
    assert side["max_batch"] == MAX_BATCH and side["preprocessing"]["size"] == 96
    model, card = artifact.load(imagenet_lite0)
    x, _ = real_images(card, None, 5)
    run = executorch_runner(out)
    with torch.no_grad():
        want = model(x).numpy()
    for n in (1, 5):  # the batch is dynamic, up to MAX_BATCH
        assert np.abs(run(x[:n].numpy()) - want[:n]).max() <= 1e-4 * np.ptp(want)
    assert run(x[[0] * MAX_BATCH].numpy()).shape == (MAX_BATCH, 1000)


def test_int8_program_agrees_with_fp32(imagenet_lite0, lite0_onnx, tmp_path):
    out = tmp_path / "q.pte"
    options = ExportConfig(calib=str(SAMPLE), calib_images=64, min_agreement=0.75, int8=True)
    result = export(str(imagenet_lite0), "executorch", str(out), options)
    v = result.verification
    assert result.format == "executorch-int8" and v["calib_images"] == 64
    assert v["top1_agreement"] >= 0.75 and 0 <= v["val_top1"] <= 1
    quant = json.loads((tmp_path / "q.pte.json").read_text())["quantization"]
    assert quant["activations"] == "int8"
    assert result.bytes < 0.4 * lite0_onnx.stat().st_size  # int8 weights (fp32 .pte: as large as the ONNX)


def test_int8_needs_calibration_images(imagenet_lite0, tmp_path):
    result = CliRunner().invoke(main, ["export", str(imagenet_lite0), "--format", "executorch-int8",
                                       "--out", str(tmp_path / "q.pte")])  # fmt: skip
    assert result.exit_code == 2 and "needs --calib DATA" in result.output
    assert list(tmp_path.iterdir()) == []


def test_missing_extra_is_one_line(imagenet_lite0, tmp_path):
    """Without ExecuTorch installed (hidden from this child process) the export names the extra."""
    args = ["export", str(imagenet_lite0), "--format", "executorch", "--out", str(tmp_path / "m.pte")]
    code = f"import sys; sys.modules['executorch'] = None; from slimfg.cli import main; main({args!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --format executorch needs ExecuTorch: pip install 'slimfg[executorch]'"
    ]
    assert list(tmp_path.iterdir()) == []


def test_bench_times_executorch_next_to_onnx(imagenet_lite0, tmp_path):
    from slimfg.bench import bench

    rows = bench([str(imagenet_lite0)], ["onnx", "executorch"], None, str(tmp_path), rounds=2)
    assert [r["format"] for r in rows] == ["onnx", "executorch"]
    assert all(r["b1_p50_s"] > 0 and r["b32_p50_s"] > 0 for r in rows)
    assert rows[1]["verification"]["top1_agreement"] == 1.0
