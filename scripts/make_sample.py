"""Cut the bundled offline sample (slimfg/samples/flowers10) from Oxford Flowers-102.

Usage: python scripts/make_sample.py ../shared/data/flowers102 slimfg/samples/flowers10

Picks the 10 classes with the most val+test images, takes 24 train images per class
from `train/` and 8 val images per class from `val/` then `test/`, resizes the shorter
side to 160 px (bicubic) and stores JPEG quality 80. Deterministic: files are taken
in sorted order.
"""

import json
import shutil
import sys
from pathlib import Path

from PIL import Image

N_CLASSES, N_TRAIN, N_VAL, SIZE = 10, 24, 8, 160


def _copy(src: Path, dst: Path) -> None:
    img = Image.open(src).convert("RGB")
    scale = SIZE / min(img.size)
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    dst.parent.mkdir(parents=True, exist_ok=True)
    img.save(dst, quality=80)


def main(src_root: str, dst_root: str) -> None:
    src, dst = Path(src_root), Path(dst_root)
    classes = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())

    def held_out(c: str) -> list[Path]:
        return sorted((src / "val" / c).glob("*.jpg")) + sorted((src / "test" / c).glob("*.jpg"))

    chosen = sorted(sorted(classes, key=lambda c: (-len(held_out(c)), c))[:N_CLASSES])
    if dst.exists():
        shutil.rmtree(dst)
    names = json.loads((src / "class_names.json").read_text())
    for c in chosen:
        for f in sorted((src / "train" / c).glob("*.jpg"))[:N_TRAIN]:
            _copy(f, dst / "train" / c / f.name)
        for f in held_out(c)[:N_VAL]:
            _copy(f, dst / "val" / c / f.name)
    (dst / "class_names.json").write_text(json.dumps({c: names[c] for c in chosen}, indent=1) + "\n")
    print("classes:", ", ".join(chosen))


if __name__ == "__main__":
    main(*sys.argv[1:3])
