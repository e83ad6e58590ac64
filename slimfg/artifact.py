"""The pickle-free model artifact: one .safetensors file, weights + one JSON document.

Tensors are the (folded) network's state dict; the header metadata key "slimfg" holds
arch, classes, preprocessing, attention scores, pruning record, metrics and provenance.
`load` rebuilds the architecture by name and loads the tensors: no pickle, no training
code. Every write is atomic (temp file + os.replace).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import slimfg
from slimfg.errors import SlimfgError

FORMAT = "slimfg"
FORMAT_VERSION = 1


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path next to `path`; rename it into place only if the body succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Atomically write tensors + a JSON metadata document as safetensors."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={FORMAT: json.dumps(meta)})


def read_meta(path: str | Path) -> dict:
    """The JSON metadata of a slimfg file; one-line error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise SlimfgError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception:
        raise SlimfgError(f"{path} is not a slimfg artifact (not a safetensors file, or truncated)") from None
    if FORMAT not in header:
        raise SlimfgError(f"{path} is not a slimfg artifact (no slimfg metadata)")
    return json.loads(header[FORMAT])


def read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    meta = read_meta(path)
    try:
        tensors = load_file(str(path))
    except Exception:
        raise SlimfgError(f"{path} is truncated or corrupt (tensors unreadable)") from None
    return tensors, meta


def provenance() -> dict:
    return {
        "slimfg": slimfg.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def save(path: str | Path, model: nn.Module, meta: dict) -> None:
    """Save a plain (attention-folded) model with its metadata."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    meta.setdefault("provenance", {}).update(provenance())
    write(path, model.state_dict(), meta)


def is_artifact(path: str | Path) -> bool:
    try:
        return read_meta(path).get("format") == FORMAT
    except SlimfgError:
        return False


def load(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the network named in the metadata, replay its pruning record, load its tensors.

    No unpickling anywhere: tensors come from safetensors, the rest from JSON.
    """
    from slimfg.models import build

    tensors, meta = read(path)
    if meta.get("format") != FORMAT or "arch" not in meta:
        raise SlimfgError(f"{path} is a training checkpoint or foreign file, not a slimfg model")
    model = build(meta["arch"], meta["num_classes"], weights="none")
    if meta.get("pruning"):
        from slimfg.prune import replay

        replay(model, meta["pruning"], meta["preprocessing"]["size"])
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError:
        raise SlimfgError(
            f"{path} does not match its arch {meta['arch']!r} (tensor names or shapes differ)"
        ) from None
    return model.eval(), meta
