import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from slimfg import data
from slimfg.errors import SlimfgError
from slimfg.runtime import MAX_PIXELS
from tests.conftest import write_bomb_png


def test_imagefolder_splits(tiny_data):
    splits = data.load(tiny_data)
    assert len(splits.classes) == 3 and len(splits.train) == 12 and len(splits.val) == 6
    assert splits.test is None and splits.skipped == 0
    assert splits.fingerprint == data.load(tiny_data).fingerprint


def test_val_split_is_seeded(tiny_data):
    root = tiny_data / "train"
    a = data.load(root, val_split=0.25, seed=1)
    b = data.load(root, val_split=0.25, seed=1)
    assert len(a.val) == 3 and len(a.train) == 9
    assert a.val.indices == b.val.indices


def test_bad_files_are_skipped_and_counted(tiny_data):
    cls = tiny_data / "train" / sorted(p.name for p in (tiny_data / "train").iterdir())[0]
    good = sorted(cls.glob("*.jpg"))[0]
    (cls / "notes.jpg").write_text("this is not an image")
    (cls / "readme.txt").write_text("neither is this")
    # A JPEG cut in half: its header parses, its pixels do not decode.
    (cls / "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    # Headers that declare more pixels than the limit: one past PIL's bomb error, one just over.
    write_bomb_png(cls / "bomb.png")
    write_bomb_png(cls / "big.png", side=int(MAX_PIXELS**0.5) + 1)
    splits = data.load(tiny_data)
    assert splits.skipped == 4  # text files and bombs; the truncated JPEG fails only on decode
    pre = {"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear", "crop_pct": 1.0}
    batches = list(data.loader(splits.train, pre, False, batch_size=64, workers=0))
    x, y, skipped = batches[0]
    assert skipped == 1 and x.shape == (12, 3, 32, 32) and y.shape == (12,)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: shutil.rmtree(root / "val"), "no val/ split"),
        (lambda root: shutil.rmtree(sorted((root / "train").iterdir())[0]), "missing from train"),
        (lambda root: shutil.rmtree(sorted((root / "val").iterdir())[0]), "missing from split"),
        (
            lambda root: [f.unlink() for f in sorted((root / "val").iterdir())[0].glob("*")],
            "no readable images",
        ),
    ],
    ids=["no-val", "class-missing-in-train", "class-missing-in-val", "empty-class"],
)
def test_broken_layouts_fail_before_work(tiny_data, damage, message):
    damage(tiny_data)
    with pytest.raises(SlimfgError, match=message):
        data.load(tiny_data)


def test_one_class_and_missing_dir(tmp_path, tiny_data):
    with pytest.raises(SlimfgError, match="not found"):
        data.load(tmp_path / "nope")
    for split in ("train", "val"):
        for cls in sorted((tiny_data / split).iterdir())[1:]:
            shutil.rmtree(cls)
    with pytest.raises(SlimfgError, match="at least 2 class"):
        data.load(tiny_data)


def test_unknown_dataset_name_suggests():
    with pytest.raises(SlimfgError, match="did you mean 'Flowers102'"):
        data.load("Flowers101")


def test_eval_transform_matches_preprocessing(tiny_data):
    pre = {"size": 40, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "crop_pct": 0.875}
    splits = data.load(tiny_data)
    x, _, _ = next(iter(data.loader(splits.val, pre, False, 4, 0)))
    assert x.shape == (4, 3, 40, 40) and -1.0 <= x.min() and x.max() <= 1.0
    assert torch.isfinite(x).all()


def test_crop_scale_bounds_the_training_crop():
    """A horizontal ramp image: a crop's span of ramp values is the share of the width it kept."""
    pre = {"size": 32, "mean": [0.0] * 3, "std": [1.0] * 3, "interpolation": "bilinear", "crop_pct": 1.0}
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    img = Image.fromarray(np.stack([ramp] * 3, axis=-1))
    torch.manual_seed(0)

    def spans(crop_scale):
        tf = data.transforms(pre, train=True, crop_scale=crop_scale)
        return [float(x.max() - x.min()) for x in (tf(img) for _ in range(30))]

    assert min(spans(1.0)) > 0.95  # the whole width, every time
    assert min(spans(0.08)) < 0.5  # the ImageNet recipe cuts small crops
    assert min(spans(0.5)) > 0.55  # area >= 0.5 at aspect >= 3/4 keeps at least 61% of the width


def test_torchvision_dataset_not_downloaded(tmp_path):
    with pytest.raises(SlimfgError, match="pass --download"):
        data.load("Flowers102", dataset_root=tmp_path)
