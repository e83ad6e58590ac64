import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from slimfg import artifact, data, models
from slimfg.card import ModelCard
from slimfg.cli import main
from slimfg.config import FORMAT_SUFFIX, ExportConfig
from slimfg.errors import SlimfgError
from slimfg.exporters import EXPORTERS, export_onnx
from slimfg.exporters.onnx import read_metadata
from slimfg.pipeline import export_artifact as export
from slimfg.runtime import Predictor, preprocess

SAMPLE_IMAGES = sorted((data.SAMPLE / "val").glob("*/*.jpg"))[::8]  # one per class


def test_onnx_export_verified_with_metadata(tmp_path):
    torch.manual_seed(0)
    model = models.build("resnet18", 4, "none").eval()
    card = ModelCard(arch="resnet18", num_classes=4, classes=list("abcd"),
                     preprocessing=models.preprocessing("resnet18", 48))  # fmt: skip
    result = export_onnx(model, card, tmp_path / "m.onnx", torch.randn(3, 3, 48, 48))
    v = result.verification
    assert v["max_abs_diff"] <= 1e-4 * v["logit_range"] and v["top1_agreement"] == 1.0
    proto = onnx.load(tmp_path / "m.onnx")
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"]) == list("abcd") and json.loads(props["preprocessing"])["size"] == 48
    assert json.loads(props["verification"])["top1_agreement"] == 1.0
    assert proto.opset_import[0].version >= 17
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": torch.randn(5, 3, 48, 48).numpy()})[0].shape == (5, 4)  # dynamic batch
    assert set(EXPORTERS) == set(FORMAT_SUFFIX) == {
        "onnx", "onnx-int8", "trt", "trt-rtx", "openvino",
        "executorch", "executorch-int8", "tflite", "tflite-int8",
    }  # fmt: skip


def test_static_batch(imagenet_lite0, tmp_path):
    result = export(str(imagenet_lite0), "onnx", str(tmp_path / "s.onnx"), ExportConfig(static_batch=4))
    shape = onnx.load(result.path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in shape] == [4, 3, 96, 96]


def test_failed_verification_writes_nothing(tmp_path):
    class Flaky(torch.nn.Module):
        """Random noise in the output: ONNX Runtime and PyTorch draw different numbers."""

        def forward(self, x):
            return x.mean((2, 3)) + torch.rand_like(x.mean((2, 3)))

    card = ModelCard(arch="x", num_classes=3, classes=["a", "b", "c"], preprocessing={})
    with pytest.raises(SlimfgError, match="does not match PyTorch"):
        export_onnx(Flaky(), card, tmp_path / "m.onnx", torch.randn(4, 3, 8, 8))
    assert list(tmp_path.iterdir()) == []


def test_int8_export_verified(imagenet_lite0, lite0_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    # ImageNet classes on flower photos are low-confidence calls, so int8 may flip a few.
    options = ExportConfig(calib=str(data.SAMPLE), calib_images=64, min_agreement=0.75)
    v = export(str(imagenet_lite0), "onnx-int8", str(out), options).verification
    assert v["top1_agreement"] >= 0.75 and v["calib_images"] == 64
    assert 0 <= v["val_top1"] <= 1 and v["reference"] == "onnx fp32"
    proto = onnx.load(out)
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    props = read_metadata(out)
    assert json.loads(props["quantization"])["format"] == "QDQ" and "classes" in props
    assert out.stat().st_size < 0.4 * lite0_onnx.stat().st_size  # int8 weights
    assert [p.name for p in tmp_path.iterdir()] == ["q.onnx"]  # no temp files left


def test_openvino_export_verified(imagenet_lite0, tmp_path):
    pytest.importorskip("openvino")
    out = tmp_path / "m.xml"
    v = export(str(imagenet_lite0), "openvino", str(out)).verification
    assert v["top1_agreement"] == 1.0 and v["reference"] == "onnxruntime"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml", "m.xml.json"]
    side = json.loads((tmp_path / "m.xml.json").read_text())
    assert side["classes"][0] == "imagenet-0" and side["export"]["format"] == "openvino"


def _tensorrt_with_cuda() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_tensorrt_with_cuda(), reason="TensorRT and a GPU are present: the build test runs")
def test_trt_error_path(imagenet_lite0, tmp_path):
    result = CliRunner().invoke(
        main, ["export", str(imagenet_lite0), "--format", "trt", "--out", str(tmp_path / "m.engine")]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "slimfg[trt]" in lines[0] and "GPU" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not _tensorrt_with_cuda(), reason="needs tensorrt and a CUDA GPU")
def test_trt_engine_builds_and_matches(imagenet_lite0, tmp_path):
    v = export(str(imagenet_lite0), "trt", str(tmp_path / "m.engine")).verification
    assert v["top1_agreement"] == 1.0 and v["max_abs_diff"] <= 1e-3 * v["logit_range"]


@pytest.mark.parametrize(
    "case",
    ["unknown format", "int8 without calib", "unwritable path", "not slimfg", "missing model"],
)
def test_export_bad_input(case, imagenet_lite0, tmp_path):
    model, out, extra = str(imagenet_lite0), tmp_path / "out.onnx", []
    if case == "unknown format":
        extra, fragment = ["--format", "onxx"], "did you mean 'onnx'"
    elif case == "int8 without calib":
        extra, fragment = ["--format", "onnx-int8"], "--calib"
    elif case == "unwritable path":
        (tmp_path / "file").write_text("x")
        out, fragment = tmp_path / "file" / "out.onnx", "not a writable folder"
    elif case == "not slimfg":
        model = str(tmp_path / "x.safetensors")
        (tmp_path / "x.safetensors").write_bytes(b"not a model")
        fragment = "x.safetensors"
    else:
        model, fragment = str(tmp_path / "nope.safetensors"), "not found"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(main, ["export", model, "--out", str(out), *extra])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_preprocess_matches_training_transform():
    pre = models.preprocessing("tf_efficientnet_lite0", 96)
    for path in SAMPLE_IMAGES[:4]:
        with Image.open(path) as img:
            want = data.transforms(pre, train=False)(img.convert("RGB")).numpy()
            got = preprocess(img, pre)
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-5


def test_predictor_top5_matches_pytorch(imagenet_lite0, lite0_onnx):
    model, card = artifact.load(imagenet_lite0)
    transform = data.transforms(card.preprocessing, train=False)
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in SAMPLE_IMAGES])
    with torch.no_grad():
        want = model.eval()(x).softmax(1).topk(5, dim=1)
    got = Predictor(lite0_onnx).predict_batch(SAMPLE_IMAGES, k=5)
    for row, idx, probs in zip(got, want.indices, want.values, strict=True):
        assert [label for label, _ in row] == [card.classes[i] for i in idx]
        assert np.allclose([p for _, p in row], probs.numpy(), atol=1e-4)


def test_predict_cli_never_imports_torch(lite0_onnx):
    from tests.test_layout import cli_code, run_without_torch

    proc = run_without_torch(cli_code("predict", str(lite0_onnx), str(SAMPLE_IMAGES[0]), "--top-k", "2"))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("torch-free"), proc.stderr[-2000:]
    assert proc.stdout.count("%") == 2  # two labels with their probabilities


def test_predictor_never_imports_torch(lite0_onnx):
    code = (
        "import sys; from slimfg.runtime import Predictor; "
        f"top = Predictor({str(lite0_onnx)!r}).predict({str(SAMPLE_IMAGES[0])!r}, k=3); "
        "assert len(top) == 3, top; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
        "assert not bad, bad; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_predict_cli(lite0_onnx, imagenet_lite0, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main, ["predict", str(lite0_onnx), str(SAMPLE_IMAGES[0]), "--top-k", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    top = json.loads(result.output)[str(SAMPLE_IMAGES[0])]
    assert len(top) == 2 and top[0]["probability"] >= top[1]["probability"]
    assert top == [
        {"label": lab, "probability": p} for lab, p in Predictor(lite0_onnx).predict(SAMPLE_IMAGES[0], 2)
    ]
    for args, fragment in [
        ([str(imagenet_lite0), str(SAMPLE_IMAGES[0])], "slimfg export"),
        ([str(lite0_onnx), str(tmp_path / "missing.jpg")], "cannot read image"),
    ]:
        result = runner.invoke(main, ["predict", *args])
        assert result.exit_code == 2 and result.output.startswith("error:") and fragment in result.output


def test_bench_table_json_and_plot(imagenet_lite0, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "bench",
            str(imagenet_lite0),
            "--formats",
            "onnx,onnx-int8",
            "--rounds",
            "2",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["format"] for r in rows] == ["onnx", "onnx-int8"]
    for r in rows:
        assert r["b1_p50_s"] > 0 and r["b32_p90_s"] >= r["b32_p50_s"] and r["macs"] > 0
    assert rows[1]["bytes"] < rows[0]["bytes"]
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "lite0 onnx-int8" in result.output


def test_example_app_embeds_the_onnx_model(lite0_onnx):
    proc = subprocess.run(
        [sys.executable, "examples/classify.py", str(lite0_onnx), str(SAMPLE_IMAGES[0])],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    label, _ = Predictor(lite0_onnx).predict(SAMPLE_IMAGES[0], k=1)[0]
    assert proc.stdout.splitlines()[1].split()[-1] == label


def test_predict_refuses_a_decompression_bomb(lite0_onnx, tmp_path):
    from slimfg.runtime import ImageTooLargeError
    from tests.conftest import write_bomb_png

    bomb = write_bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageTooLargeError, match="100000x100000|exceeds limit"):
        Predictor(lite0_onnx).predict(bomb)
    result = CliRunner().invoke(main, ["predict", str(lite0_onnx), str(bomb)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: image too large")


def test_killed_export_leaves_only_hidden_temp_files_that_the_next_run_removes(imagenet_lite0, tmp_path):
    """kill -9 runs no cleanup: what it leaves must be hidden and must not look complete."""
    import os
    import signal
    import time

    out = tmp_path / "exports" / "m_int8.onnx"
    argv = [sys.executable, "-m", "slimfg", "export", str(imagenet_lite0), "--format", "onnx-int8",
            "--out", str(out), "--calib", str(data.SAMPLE)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out.parent.is_dir() and any(out.parent.glob(".*.tmp-*"))):
        assert proc.poll() is None and time.monotonic() < deadline, "export ended before its temp folder"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = list(out.parent.iterdir())
    assert left and all(p.name.startswith(".") for p in left), left
    result = CliRunner().invoke(main, argv[3:])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["m_int8.onnx"]


def test_artifacts_get_the_users_umask_permissions(tmp_path):
    import os

    model = models.build("resnet18", 2, "none")
    card = ModelCard(arch="resnet18", num_classes=2, classes=["a", "b"],
                     preprocessing=models.preprocessing("resnet18", 32))  # fmt: skip
    old = os.umask(0o027)
    try:
        artifact.save(tmp_path / "m.safetensors", model, card)
        export_onnx(model.eval(), card, tmp_path / "m.onnx", torch.randn(2, 3, 32, 32))
    finally:
        os.umask(old)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "m.onnx").stat().st_mode & 0o777 == 0o640


def test_convnext_exports_at_a_small_input_size(tmp_path):
    """At 64 px convnext's last feature map is 2 px wide; traced at batch 1, torch.export
    guarded the dynamic batch to <= 2 and the export failed."""
    model = models.build("convnext_tiny", 3, "none").eval()
    card = ModelCard(arch="convnext_tiny", num_classes=3, classes=list("abc"),
                     preprocessing=models.preprocessing("convnext_tiny", 64))  # fmt: skip
    result = export_onnx(model, card, tmp_path / "c.onnx", torch.randn(5, 3, 64, 64))
    assert result.verification["top1_agreement"] == 1.0
