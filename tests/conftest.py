import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from slimfg import artifact, models
from slimfg.card import ModelCard
from slimfg.data import SAMPLE
from slimfg.pipeline import export_artifact

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs on 2 workers: one thread each,
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # the CLI subprocesses the tests start too

# Modules whose tests share one costly module-scoped fixture: one worker runs each whole.
ONE_WORKER_MODULES = ("tests/test_benchmarks.py",)


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` (what `make test` runs): every test goes to whichever worker is
    free, except that each of ONE_WORKER_MODULES runs on one worker, its tests in a row.
    Done here, by path, because pytest-xdist 3.8's own grouping (the xdist_group mark) does
    nothing under pytest 9.2 (pytest-dev/pytest-xdist#1386)."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path in ONE_WORKER_MODULES else nodeid

    return Scheduler(config, log)


def make_imagefolder(root: Path, classes: int = 3, train: int = 4, val: int = 2, size: int = 48) -> Path:
    """A small real-image dataset cut from the bundled Flowers sample."""
    names = sorted(p.name for p in (SAMPLE / "train").iterdir())[:classes]
    for split, n in (("train", train), ("val", val)):
        for name in names:
            for src in sorted((SAMPLE / split / name).glob("*.jpg"))[:n]:
                dst = root / split / name / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                img = Image.open(src).convert("RGB")
                img.thumbnail((size * 2, size * 2))
                img.save(dst, quality=90)
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return make_imagefolder(tmp_path / "data")


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    """4 classes, 12 train and 8 val images each: enough for accuracy to move between epochs."""
    return make_imagefolder(tmp_path / "small", classes=4, train=12, val=8)


@pytest.fixture(scope="session")
def tiny_data_shared(tmp_path_factory) -> Path:
    """Read-only variant shared by tests that do not modify the dataset."""
    return make_imagefolder(tmp_path_factory.mktemp("shared") / "data")


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "sample"
    shutil.copytree(SAMPLE, dst)
    return dst


def write_bomb_png(path: Path, side: int = 100_000) -> Path:
    """A tiny PNG whose header declares side x side pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="session")
def imagenet_lite0(tmp_path_factory):
    """Lite0 with its real ImageNet head (1000 classes) at 96 px: real, confident predictions."""
    path = tmp_path_factory.mktemp("lite0") / "lite0.safetensors"
    model = models.build("tf_efficientnet_lite0", 1000, "imagenet").eval()
    card = ModelCard(
        arch="tf_efficientnet_lite0",
        num_classes=1000,
        classes=[f"imagenet-{i}" for i in range(1000)],
        preprocessing=models.preprocessing("tf_efficientnet_lite0", 96),
    )
    artifact.save(path, model, card)
    return path


@pytest.fixture(scope="session")
def lite0_onnx(imagenet_lite0):
    out = imagenet_lite0.with_name("lite0.onnx")
    export_artifact(str(imagenet_lite0), "onnx", str(out))
    return out
