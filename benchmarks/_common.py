"""Helpers the benchmark scripts share: a per-class subset of a dataset, and results I/O."""

from __future__ import annotations

import json
import os
import platform
import random
from pathlib import Path

import torch

from slimfg.io import atomic_path, write_text

RESULTS = Path(__file__).parent / "results"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def subset(src: str | Path, dst: str | Path, per_class: int | None, seed: int = 0,
           eval_per_class: int | None = None) -> Path:  # fmt: skip
    """A class-folder copy of `src` made of symlinks: `per_class` random train images per
    class (all if None) and `eval_per_class` of val/test (all if None)."""
    src, dst = Path(src), Path(dst)
    for split in ("train", "val", "test"):
        if not (src / split).is_dir():
            continue
        limit = per_class if split == "train" else eval_per_class
        for class_dir in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if limit is not None:
                files = random.Random(f"{seed}/{class_dir.name}").sample(files, min(limit, len(files)))
            out = dst / split / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for f in files:
                os.symlink(f.resolve(), out / f.name)
    names = src / "class_names.json"
    if names.is_file():
        (dst / "class_names.json").write_text(names.read_text())
    return dst


def machine() -> str:
    threads = torch.get_num_threads()
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads"


def write_json(path: str | Path, doc: dict) -> None:
    write_text(path, json.dumps(doc, indent=2) + "\n")


def line_plot(lines: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, title: str,
              path: str | Path) -> None:  # fmt: skip
    """One PNG with a marked line per label, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, points in lines.items():
        ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
