"""`slimfg eval`: accuracy of a model on a dataset split."""

from __future__ import annotations

from torch import nn

from slimfg import artifact, data
from slimfg.card import ModelCard
from slimfg.engine import evaluate, resolve_device
from slimfg.errors import SlimfgError


def evaluate_model(model: nn.Module, card: ModelCard, data_dir: str, split: str = "val", batch_size: int = 64,
                   workers: int = 2, device: str = "auto") -> dict:  # fmt: skip
    """Top-1/top-5 and per-class accuracy of `model` on DATA's `split`, with the card's preprocessing.

    The model runs on `device` and is moved back to where it was: callers such as
    `prune` go on to change it with CPU tensors."""
    splits = data.load(data_dir)
    dataset = splits.val if split == "val" else splits.test
    if dataset is None:
        raise SlimfgError(f"{data_dir} has no {split}/ split")
    labels = data.class_labels(data_dir, splits.classes)
    if len(labels) != card.num_classes:
        raise SlimfgError(f"{data_dir} has {len(labels)} classes but the model has {card.num_classes}")
    dev = resolve_device(device)
    loader = data.loader(dataset, card.preprocessing, False, batch_size, workers)
    home = next(model.parameters()).device
    result = evaluate(model.to(dev), loader, dev, num_classes=card.num_classes)
    model.to(home)
    return {**result, "split": split, "classes": labels}


def evaluate_artifact(path: str, data_dir: str, split: str = "val", batch_size: int = 64,
                      workers: int = 2, device: str = "auto") -> dict:  # fmt: skip
    model, card = artifact.load(path)
    return {**evaluate_model(model, card, data_dir, split, batch_size, workers, device), "model": str(path)}
