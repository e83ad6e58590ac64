"""`slimfg eval`: accuracy of a saved artifact on a dataset split."""

from __future__ import annotations

from slimfg import artifact, data
from slimfg.errors import SlimfgError
from slimfg.train import class_labels, evaluate, resolve_device


def evaluate_artifact(
    path: str, data_dir: str, split: str = "val", batch_size: int = 64, workers: int = 2, device: str = "auto"
) -> dict:
    """Top-1/top-5 and per-class accuracy of the artifact at `path` on DATA's `split`."""
    model, meta = artifact.load(path)
    splits = data.load(data_dir)
    dataset = splits.val if split == "val" else splits.test
    if dataset is None:
        raise SlimfgError(f"{data_dir} has no {split}/ split")
    labels = class_labels(data_dir, splits.classes)
    if len(labels) != meta["num_classes"]:
        raise SlimfgError(
            f"{data_dir} has {len(labels)} classes but the model was trained on {meta['num_classes']}"
        )
    dev = resolve_device(device)
    loader = data.loader(dataset, meta["preprocessing"], False, batch_size, workers)
    result = evaluate(model.to(dev), loader, dev, num_classes=meta["num_classes"])
    return {**result, "split": split, "classes": labels, "model": str(path)}
