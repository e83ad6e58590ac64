"""What every exporter shares: the result record, the real images it verifies and
calibrates on, ONNX Runtime helpers and the checks that run before anything is written."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from slimfg import data
from slimfg.card import ModelCard
from slimfg.config import ExportConfig
from slimfg.errors import SlimfgError, stoppable
from slimfg.io import write_text
from slimfg.runtime import session_options

log = logging.getLogger("slimfg")


@dataclass
class ExportResult:
    path: Path
    format: str
    bytes: int
    verification: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def check_writable(path: str | Path) -> Path:
    """One-line error before any work if `path` cannot be written (atomic writes need its folder)."""
    path = Path(path)
    parent = path.parent
    while not parent.exists():  # the first existing ancestor decides whether we can create folders
        parent = parent.parent
    if path.is_dir():
        raise SlimfgError(f"{path} is a folder; give a file path")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise SlimfgError(f"cannot write {path}: {parent} is not a writable folder")
    return path


@dataclass
class ExportInputs:
    """The real images an export needs: `verify` to check it against its reference,
    `calib` to calibrate int8, `evaluate` (a callable giving (images, labels) numpy
    batches) to report int8's accuracy next to fp32's."""

    verify: torch.Tensor
    calib: torch.Tensor | None = None
    evaluate: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]] | None = None


def inputs_from_data(card: ModelCard, cfg: ExportConfig, int8: bool) -> ExportInputs:
    """ExportInputs read from the dataset folders of `cfg` (val images verify, train images
    calibrate); `int8` exports also verify and evaluate on --calib when --data is absent."""
    verify_dir = cfg.data or (cfg.calib if int8 else None)
    inputs = ExportInputs(real_images(card, verify_dir, max(cfg.verify_images, cfg.static_batch or 0))[0])
    if int8 and cfg.calib:
        inputs.calib = real_images(card, cfg.calib, cfg.calib_images, split="train")[0]
        inputs.evaluate = lambda: eval_batches(card, verify_dir)
    return inputs


def real_images(card: ModelCard, data_dir: str | None, n: int = 32, split: str = "val", seed: int = 0):
    """`n` preprocessed images (and labels) of DATA's `split`, spread over the whole split;
    the bundled sample when no DATA is given. Returns (x, y) tensors."""
    splits = data.load(str(data_dir or data.SAMPLE))
    dataset = {"val": splits.val, "train": splits.train}[split] or splits.train
    if dataset is None or len(dataset) == 0:
        raise SlimfgError(f"{data_dir} has no images to verify or calibrate with")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    loader = data.loader(Subset(dataset, order.tolist()), card.preprocessing, False, 64, 0)
    xs, ys = zip(*[(x, y) for x, y, _ in stoppable(loader) if x is not None], strict=True)
    return torch.cat(xs), torch.cat(ys)


def eval_batches(card: ModelCard, data_dir: str, batch_size: int = 64, workers: int = 2, split: str = "val"):
    """(images, labels) numpy batches of DATA's `split` with the model's preprocessing."""
    dataset = getattr(data.load(str(data_dir)), split)
    if dataset is None:
        raise SlimfgError(f"{data_dir} has no {split}/ split to measure accuracy on")
    for x, y, _ in stoppable(data.loader(dataset, card.preprocessing, False, batch_size, workers)):
        if x is not None:
            yield x.numpy(), y.numpy()


def accuracy(run, batches) -> dict:
    """Top-1 of `run` (numpy batch -> logits) over (images, labels) batches."""
    hits = seen = 0
    for x, y in batches:
        hits += int((run(x).argmax(1) == y).sum())
        seen += len(y)
    return {"top1": hits / max(seen, 1), "images": seen}


def compare(got: np.ndarray, want: np.ndarray) -> dict:
    """Max abs difference, the reference's logit range and top-1 agreement."""
    return {
        "max_abs_diff": float(np.abs(got - want).max()),
        "logit_range": float(want.max() - want.min()),
        "top1_agreement": float((got.argmax(1) == want.argmax(1)).mean()),
        "images": int(len(want)),
    }


def ort_runner(path: str | Path, threads: int | None = None):
    """numpy batch -> logits through an ONNX Runtime CPU session (see runtime.session_options)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def sidecar(path: Path) -> Path:
    """Formats without a metadata slot (engine, IR) get `<file>.json` next to them."""
    return path.with_name(path.name + ".json")


def write_sidecar(path: Path, meta_props: dict, result: ExportResult) -> None:
    doc = {**{k: _maybe_json(v) for k, v in meta_props.items()}, "export": result.to_json()}
    write_text(sidecar(path), json.dumps(doc, indent=2) + "\n")


def _maybe_json(value: str):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def require_match(check: dict, what: str, rtol: float) -> None:
    """fp32 exports: max abs difference within `rtol` of the logit range and the same top-1."""
    if check["max_abs_diff"] > rtol * max(check["logit_range"], 1.0) or check["top1_agreement"] < 1.0:
        raise SlimfgError(
            f"{what} (max diff {check['max_abs_diff']:.2e}, top-1 agreement {check['top1_agreement']:.1%})"
        )


def check_int8(check: dict, run_int8: Callable, run_fp32: Callable, inputs: ExportInputs,
               cfg: ExportConfig, what: str = "int8 model") -> None:  # fmt: skip
    """int8 exports: val top-1 of both on DATA's val split (when there is one), logged and
    stored in `check`; fails below `cfg.min_agreement` top-1 agreement with fp32."""
    check["calib_images"] = len(inputs.calib)
    if inputs.evaluate is not None:
        check["val_top1_fp32"] = accuracy(run_fp32, inputs.evaluate())["top1"]
        check["val_top1"] = accuracy(run_int8, inputs.evaluate())["top1"]
        log.info(
            "int8: top-1 agreement with fp32 %.1f%%, val top-1 %.4f (fp32 %.4f)",
            100 * check["top1_agreement"], check["val_top1"], check["val_top1_fp32"],
        )  # fmt: skip
    if check["top1_agreement"] < cfg.min_agreement:
        raise SlimfgError(
            f"{what} agrees with fp32 on only {check['top1_agreement']:.1%} of images "
            f"(< {cfg.min_agreement:.0%}); calibrate on more images (--calib-images)"
        )


def torch_runner(model):
    """numpy batch -> logits of a PyTorch module (the fp32 reference)."""

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return run
