"""The pickle-free model artifact: one .safetensors file, weights + one JSON document.

Tensors are the (folded) network's state dict; the header metadata key "slimfg" holds
the ModelCard (arch, classes, preprocessing, attention scores, pruning record, metrics,
provenance). `load` rebuilds the architecture by name, replays the pruning record and
loads the tensors: no pickle, no training code. Every write is atomic.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from slimfg import __version__, models
from slimfg.card import ModelCard
from slimfg.errors import SlimfgError
from slimfg.io import atomic_path
from slimfg.pruning.graph import example_input, replay

FORMAT = "slimfg"
FORMAT_VERSION = 1


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


def read_card(path: str | Path) -> ModelCard:
    """The ModelCard of a slimfg model file, without loading its tensors."""
    meta = read_meta(path)
    if meta.get("format") != FORMAT or "arch" not in meta or "num_classes" not in meta:
        raise SlimfgError(f"{path} is a training checkpoint or foreign file, not a slimfg model")
    return ModelCard.from_dict(meta)


def provenance() -> dict:
    return {"slimfg": __version__, "torch": torch.__version__, "python": platform.python_version()}


def save(path: str | Path, model: nn.Module, card: ModelCard) -> None:
    """Save a plain (attention-folded) model with its card."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **card.to_dict()}
    meta["provenance"] = {**meta["provenance"], **provenance()}
    write(path, model.state_dict(), meta)


def is_artifact(path: str | Path) -> bool:
    try:
        return read_meta(path).get("format") == FORMAT
    except SlimfgError:
        return False


def load(path: str | Path) -> tuple[nn.Module, ModelCard]:
    """Rebuild the network named in the card, replay its pruning record, load its tensors.

    No unpickling anywhere: tensors come from safetensors, the rest from JSON.
    """
    card = read_card(path)
    tensors = read(path)[0]
    model = models.build(card.arch, card.num_classes, weights="none")
    if card.pruning:
        replay(model, card.pruning, example_input(card.size))
    try:
        models.load_state(model, tensors)
    except RuntimeError:
        raise SlimfgError(
            f"{path} does not match its arch {card.arch!r} (tensor names or shapes differ)"
        ) from None
    return model.eval(), card
