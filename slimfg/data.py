"""Datasets, transforms and loaders, with a bad-image policy that never crashes an epoch.

DATA is an ImageFolder root with `train/` and `val/` (optional `test/`) splits, one
ImageFolder plus `val_split` (fixed seed), or a torchvision fine-grained dataset name.
Files that are not readable images are skipped and counted: unreadable headers are
dropped when the dataset is indexed, files that fail to decode are dropped from their
batch by `collate` and counted by the trainer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms as T

from slimfg.errors import SlimfgError, stoppable, unknown_name
from slimfg.runtime import MAX_PIXELS

log = logging.getLogger("slimfg")

SAMPLE = Path(__file__).parent / "samples" / "flowers10"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif")

# torchvision fine-grained datasets: name -> (class, train kwargs, val kwargs, test kwargs)
TORCHVISION_DATASETS = {
    "Flowers102": ("Flowers102", {"split": "train"}, {"split": "val"}, {"split": "test"}),
    "OxfordIIITPet": ("OxfordIIITPet", {"split": "trainval"}, {"split": "test"}, None),
    "StanfordCars": ("StanfordCars", {"split": "train"}, {"split": "test"}, None),
    "FGVCAircraft": ("FGVCAircraft", {"split": "train"}, {"split": "val"}, {"split": "test"}),
    "Food101": ("Food101", {"split": "train"}, {"split": "test"}, None),
    "DTD": ("DTD", {"split": "train"}, {"split": "val"}, {"split": "test"}),
}


@dataclass
class Splits:
    train: Dataset | None
    val: Dataset
    test: Dataset | None
    classes: list[str]
    fingerprint: str
    skipped: int  # unreadable files dropped while indexing


def transforms(pre: dict, train: bool, crop_scale: float = 0.08) -> T.Compose:
    """The arch's own preprocessing: random-resized crop + flip to train, resize + centre crop to eval.

    `crop_scale` is the smallest share of the image area a training crop may cover
    (0.08 is the ImageNet recipe; larger values give milder augmentation)."""
    interp = T.InterpolationMode(pre["interpolation"])
    size = pre["size"]
    norm = [T.ToTensor(), T.Normalize(pre["mean"], pre["std"])]
    if train:
        crop = T.RandomResizedCrop(size, scale=(crop_scale, 1.0), interpolation=interp)
        return T.Compose([crop, T.RandomHorizontalFlip(), *norm])
    resize = round(size / pre["crop_pct"])
    return T.Compose([T.Resize(resize, interpolation=interp), T.CenterCrop(size), *norm])


def _readable(path: Path) -> bool:
    """Header check only (cheap): PIL identifies the format without decoding pixels.
    An image over the pixel limit (runtime.MAX_PIXELS, PIL's decompression-bomb limit)
    counts as unreadable: decoding it could take gigabytes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below instead
            with Image.open(path) as img:
                return img.width * img.height <= MAX_PIXELS
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return False


class ImageFiles(Dataset):
    """An ImageFolder split: class folders of images; unreadable files are dropped."""

    def __init__(self, root: Path, classes: list[str]) -> None:
        self.root, self.classes = root, classes
        self.samples: list[tuple[Path, int]] = []
        self.skipped = 0
        for label, name in enumerate(classes):
            folder = root / name
            if not folder.is_dir():
                raise SlimfgError(f"class folder {name!r} missing from split {root}")
            files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
            good = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and _readable(p)]
            self.skipped += len(files) - len(good)
            for p in files:
                if p not in good:
                    log.warning("skipping unreadable file (or one over %d pixels) %s", MAX_PIXELS, p)
            if not good:
                raise SlimfgError(f"class folder {folder} has no readable images")
            self.samples += [(p, label) for p in good]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # corrupt pixel data
            log.warning("skipping image that fails to decode: %s", path)
            return None
        return img, label


def collate(batch):
    """Default collation minus the images that failed to decode; returns (x, y, n_skipped)."""
    good = [b for b in batch if b is not None]
    if not good:
        return None, None, len(batch)
    x, y = torch.utils.data.default_collate(good)
    return x, y, len(batch) - len(good)


def _class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _fingerprint(samples: list[tuple[Path, int]], root: Path) -> str:
    h = hashlib.sha256()
    for path, label in samples:
        h.update(f"{path.relative_to(root)}:{label}:{path.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def _torchvision_splits(name: str, root: Path, download: bool) -> Splits:
    cls_name, train_kw, val_kw, test_kw = TORCHVISION_DATASETS[name]
    cls = getattr(torchvision.datasets, cls_name)
    try:
        train, val = cls(root, download=download, **train_kw), cls(root, download=download, **val_kw)
        test = cls(root, download=download, **test_kw) if test_kw else None
    except RuntimeError as e:
        raise SlimfgError(f"{name} not found under {root} ({e}); pass --download to fetch it") from None
    except OSError as e:
        raise SlimfgError(f"could not download {name}: {e}") from None
    classes = list(getattr(train, "classes", [])) or [str(i) for i in range(102)]
    return Splits(train, val, test, classes, f"torchvision:{name}", 0)


def load(
    data: str | Path,
    val_split: float = 0.0,
    seed: int = 0,
    download: bool = False,
    dataset_root: str | Path = "~/.cache/slimfg/datasets",
) -> Splits:
    """Index the dataset (without transforms) and validate it before any work starts."""
    root = Path(str(data)).expanduser()
    if not root.exists() and str(data) in TORCHVISION_DATASETS:
        return _torchvision_splits(str(data), Path(dataset_root).expanduser(), download)
    if not root.exists():
        if str(data)[:1].isupper() and "/" not in str(data):
            raise unknown_name("dataset", str(data), list(TORCHVISION_DATASETS))
        raise SlimfgError(f"data directory not found: {root}")
    if not root.is_dir():
        raise SlimfgError(f"data must be a directory of class folders (or train/ and val/): {root}")

    if (root / "train").is_dir():
        if not (root / "val").is_dir() and not val_split:
            raise SlimfgError(f"{root} has train/ but no val/ split; add val/ or pass --val-split 0.2")
        classes = _class_folders(root / "train")
        for split in ("val", "test"):
            extra = (
                sorted(set(_class_folders(root / split)) - set(classes)) if (root / split).is_dir() else []
            )
            if extra:
                raise SlimfgError(
                    f"{root / split} has class folders missing from train/: {', '.join(extra[:5])}"
                )
        train_files = ImageFiles(root / "train", _check_classes(classes, root / "train"))
        val_files = ImageFiles(root / "val", classes) if (root / "val").is_dir() else None
        test_files = ImageFiles(root / "test", classes) if (root / "test").is_dir() else None
    else:
        if not val_split:
            raise SlimfgError(f"{root} has no train/ and val/ splits; add them or pass --val-split 0.2")
        classes = _check_classes(_class_folders(root), root)
        train_files, val_files, test_files = ImageFiles(root, classes), None, None

    everything = [s for d in (train_files, val_files, test_files) if d for s in d.samples]
    skipped = sum(d.skipped for d in (train_files, val_files, test_files) if d)
    if skipped:
        log.warning("skipped %d unreadable file(s) under %s", skipped, root)
    train: Dataset = train_files
    val: Dataset | None = val_files
    if val is None:
        if not 0 < val_split < 1:
            raise SlimfgError(f"--val-split must be between 0 and 1, got {val_split}")
        order = torch.randperm(len(train_files), generator=torch.Generator().manual_seed(seed)).tolist()
        n_val = max(1, round(len(order) * val_split))
        train, val = Subset(train_files, order[n_val:]), Subset(train_files, order[:n_val])
    return Splits(train, val, test_files, classes, _fingerprint(everything, root), skipped)


def class_labels(root: str | Path, classes: list[str]) -> list[str]:
    """Human-readable names from `class_names.json` next to the splits, if present."""
    names_file = Path(str(root)).expanduser() / "class_names.json"
    if names_file.is_file():
        names = json.loads(names_file.read_text())
        return [names.get(c, c) for c in classes]
    return classes


def _check_classes(classes: list[str], folder: Path) -> list[str]:
    if len(classes) < 2:
        raise SlimfgError(f"need at least 2 class folders in {folder}, found {len(classes)}")
    return classes


def sample_batches(
    dataset, pre: dict, n: int, batch: int = 32, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` images drawn at random (seeded) from `dataset`, unaugmented, as (images, labels)
    batches: calibration data. Random, not the first `n`: an ImageFolder lists its files
    class by class."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = stoppable(loader(Subset(dataset, order[:n]), pre, False, batch, 2))
    return [(x, y) for x, y, _ in batches if x is not None]


def images_of(batch) -> torch.Tensor:
    """The images of an (images, labels, ...) batch, or a bare image tensor itself."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def batch_images(batches) -> torch.Tensor:
    """The images of (images, labels, ...) batches, or of bare image tensors, as one tensor."""
    return torch.cat([images_of(b) for b in batches])


class Transformed(Dataset):
    """Applies a transform on top of a dataset that yields PIL images (or None)."""

    def __init__(self, dataset: Dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        if item is None:
            return None
        img, label = item
        return self.transform(img), label


def loader(
    dataset: Dataset,
    pre: dict,
    train: bool,
    batch_size: int,
    workers: int,
    generator: torch.Generator | None = None,
    sampler=None,
    crop_scale: float = 0.08,
) -> DataLoader:
    return DataLoader(
        Transformed(dataset, transforms(pre, train, crop_scale)),
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
        persistent_workers=False,
        drop_last=False,
    )
