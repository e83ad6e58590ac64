"""The examples run as a user runs them and deliver what their docstrings promise."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_own_model_example(tmp_path):
    """A custom CNN, the user's own loop training attention + head, slimfg.prune with
    attention-taylor, refit, ONNX export: the Predictor agrees with PyTorch on every val image."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "own_model.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["predictor_top1_agreement"] == 1.0 and report["val_images"] == 80
    assert report["macs"][1] < 0.5 * report["macs"][0] and report["params"][1] < 0.5 * report["params"][0]
    assert report["val_top1"]["dense"] > 0.2  # 10 classes: well above chance (0.1)
    assert (tmp_path / "tinynet.onnx").stat().st_size > 0
